/**
 * ASR-server mode latency overhead vs in-process: the same real speech, streamed in real time (20 ms frames),
 * through (a) the embedded PocketSphinx in this process and (b) the `vllm-realtime` client talking to a separate
 * `asr-server` process on 127.0.0.1 (same PocketSphinx behind vLLM's realtime protocol). Reports finalize()
 * latency — last frame pushed → final transcript — the ASR stage on a turn's critical path.
 *
 *   tsx loadtest/asr-overhead.ts [--runs 10]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FRAME_MS, FRAME_SAMPLES } from '../src/audio/format.js';
import { hashApiKey } from '../src/auth/auth.js';
import { PocketSphinxAsr } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrProvider, AsrStream } from '../src/providers/asr/types.js';
import { VllmRealtimeAsr } from '../src/providers/asr/vllm-realtime/index.js';
import { speak } from '../test/helpers/speech.js';

const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 10;
const KEY = 'bench-key-not-secret';
const PORT = 18000 + Math.floor(Math.random() * 1000);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Streams `pcm` in real time into `stream`, then times finalize(). */
async function once(stream: AsrStream, pcm: Int16Array): Promise<{ ms: number; text: string }> {
  let next = performance.now();
  for (let off = 0; off < pcm.length; off += FRAME_SAMPLES) {
    stream.push(pcm.subarray(off, off + FRAME_SAMPLES));
    next += FRAME_MS;
    const wait = next - performance.now();
    if (wait > 1) await sleep(wait);
  }
  const t0 = performance.now();
  const final = await stream.finalize();
  return { ms: performance.now() - t0, text: final.text };
}

/** Alternates the two paths utterance by utterance, so both see the same machine load. */
async function measure(local: AsrProvider, remote: AsrProvider, utterances: Int16Array[]) {
  // With partials, as a Session always asks for them.
  const a = local.createStream({ language: 'en', onPartial: () => undefined });
  const b = remote.createStream({ language: 'en', onPartial: () => undefined });
  await sleep(500); // connection / decoder ready, as during a call's greeting
  await once(a, utterances[0]); // warm-up, not counted
  await once(b, utterances[0]);
  const out = { local: [] as number[], remote: [] as number[], same: 0 };
  for (let i = 0; i < RUNS; i++) {
    const pcm = utterances[i % utterances.length];
    const x = await once(a, pcm);
    await sleep(200);
    const y = await once(b, pcm);
    await sleep(200);
    out.local.push(x.ms);
    out.remote.push(y.ms);
    if (x.text === y.text) out.same++;
  }
  a.close();
  b.close();
  return out;
}

function stats(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `median ${q(0.5).toFixed(1)} ms, p90 ${q(0.9).toFixed(1)} ms, min ${s[0].toFixed(1)}, max ${s[s.length - 1].toFixed(1)} (n=${s.length})`;
}

async function main(): Promise<void> {
  const utterances = await Promise.all(['What time is it?', 'I would like to book a table for two people.', 'I want to speak to a human please.'].map((t) => speak(t, { padMs: 0 })));
  const dir = await mkdtemp(path.join(tmpdir(), 'asr-bench-'));
  const configFile = path.join(dir, 'asr.json');
  await writeFile(configFile, JSON.stringify({ host: '127.0.0.1', port: PORT, logLevel: 'warn', auth: { apiKeyHashes: [hashApiKey(KEY)] } }));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/asr-server.ts', '--config', configFile], { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${PORT}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      if (i > 120) throw new Error('asr-server did not become ready');
      await sleep(250);
    }
    const local = new PocketSphinxAsr({ spareDecoders: 1 });
    await local.load();
    const remote = new VllmRealtimeAsr({ url: `ws://127.0.0.1:${PORT}/v1/realtime`, model: 'pocketsphinx-en-us', apiKey: KEY, languages: ['en'] });
    await remote.load();
    const r = await measure(local, remote, utterances);
    await local.close();
    const med = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
    const diffs = r.remote.map((v, i) => v - r.local[i]);
    console.log(`in-process PocketSphinx finalize: ${stats(r.local)}`);
    console.log(`asr-server over /v1/realtime:     ${stats(r.remote)}`);
    console.log(`overhead: median of paired differences ${med(diffs).toFixed(1)} ms; difference of medians ${(med(r.remote) - med(r.local)).toFixed(1)} ms`);
    console.log(`same transcripts: ${r.same}/${RUNS}`);
  } finally {
    child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
