/** A process's (or one of its threads') CPU time and memory from /proc (Linux), for the load scripts. */
import { readFileSync } from 'node:fs';

const CLK_TCK = 100;

/** utime+stime of a process (all its threads), or of one of its threads given `tid`, seconds. */
export function processCpuS(pid: number, tid?: number): number {
  const file = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
  const fields = readFileSync(file, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export function processRssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
