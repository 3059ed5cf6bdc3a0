/**
 * A burst of SIP messages over UDP while the event loop is busy (every caller hanging up at once, a trunk
 * re-sending INVITEs) waits in the socket's kernel receive buffer. Linux's default buffer holds ~166 short
 * datagrams and drops the rest, each drop costing its sender a retransmission; `sip.udpReceiveBufferBytes` asks
 * for a larger one, capped by net.core.rmem_max, and the transport says so when it got less.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../src/config.js';
import { networkList } from '../src/core/networks.js';
import { SipTransport } from '../src/transports/sip/transport.js';
import { until } from './helpers/until.js';

const BURST = 600;

/** The kernel's cap on a socket's receive buffer (Linux), or undefined elsewhere. */
function rmemMax(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return undefined;
  }
}

/** A SIP transport on loopback counting the requests it hands up, and the warnings it logs. */
async function transport(receiveBufferBytes: number) {
  const warnings: string[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        const entry = JSON.parse(line) as { level: number; msg: string };
        if (entry.level === 40) warnings.push(entry.msg);
      },
    },
  );
  let requests = 0;
  const t = new SipTransport({
    host: '127.0.0.1',
    port: 0,
    receiveBufferBytes,
    allow: networkList(['127.0.0.0/8'], 'allow'),
    limits: { maxMessageBytes: 16 * 1024, maxHeaders: 128 },
    log,
    handler: { onRequest: () => void requests++, onResponse: () => undefined, callsOn: () => [] },
  });
  const port = await t.listen();
  return { t, port, warnings, requests: () => requests };
}

/**
 * BURST OPTIONS sent by another process while this one's event loop is blocked (execFileSync): they all reach the
 * kernel before the transport reads any, as when the loop is busy with hundreds of calls' audio.
 */
function burst(port: number): void {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    let left = ${BURST};
    for (let i = 0; i < ${BURST}; i++) {
      const m = 'OPTIONS sip:agent@127.0.0.1:${port} SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK' + i +
        '\\r\\nFrom: <sip:p@127.0.0.1>;tag=1\\r\\nTo: <sip:agent@127.0.0.1>\\r\\nCall-ID: burst-' + i + '\\r\\nCSeq: 1 OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n';
      s.send(m, ${port}, '127.0.0.1', () => { if (--left === 0) s.close(); });
    }`;
  execFileSync(process.execPath, ['-e', script], { timeout: 20_000 });
}

/** Requests handed up once the transport has read what the kernel kept. */
async function settled(count: () => number): Promise<number> {
  let last = -1;
  await until('the transport to read the burst', () => {
    const now = count();
    const done = now === last || now === BURST;
    last = now;
    return done;
  }, 10_000, 200);
  return count();
}

describe('SIP over UDP: a burst while the event loop is busy', () => {
  it('asks for a 4 MiB receive buffer by default', () => {
    expect(DEFAULT_CONFIG.sip.udpReceiveBufferBytes).toBe(4 * 1024 * 1024);
  });

  it('keeps every message of the burst with the default buffer where the kernel grants it, and warns where it does not', async () => {
    const wanted = DEFAULT_CONFIG.sip.udpReceiveBufferBytes;
    const { t, port, warnings, requests } = await transport(wanted);
    try {
      burst(port);
      const got = await settled(requests);
      const cap = rmemMax();
      if (cap === undefined || cap >= wanted) {
        expect(got).toBe(BURST);
        expect(warnings).toEqual([]);
      } else {
        // A machine whose net.core.rmem_max is below the setting: the operator is told what to raise.
        expect(warnings.some((w) => /raise net\.core\.rmem_max/.test(w))).toBe(true);
      }
    } finally {
      await t.close();
    }
  }, 30_000);

  it('drops part of the same burst with a small buffer (what Linux gives by default)', async () => {
    const { t, port, requests } = await transport(65_536);
    try {
      burst(port);
      const got = await settled(requests);
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThan(BURST);
    } finally {
      await t.close();
    }
  }, 30_000);
});
