import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Writable } from 'node:stream';
import { CallHarness } from './harness.js';

describe('inbound overload', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('drops frames beyond 5 s of backlog with one warning per second, not one per frame', async () => {
    const lines: { msg: string; dropped?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as { msg: string; dropped?: number });
        done();
      },
    });
    call = new CallHarness({ logger: pino({ level: 'warn' }, sink) });
    // 8 s of audio at once, faster than the VAD can take it (a stalled event loop catching up).
    for (let i = 0; i < 400; i++) call.push(0.05);
    await call.wait(500);
    for (let i = 0; i < 400; i++) call.push(0.05);
    await call.wait(600);
    for (let i = 0; i < 400; i++) call.push(0.05);
    await call.wait(20);
    await new Promise((resolve) => setImmediate(resolve));

    // 250 frames (5 s) taken each time the backlog was empty; the rest dropped.
    expect(call.vad.processed).toBe(750);
    const warnings = lines.filter((l) => l.msg.startsWith('inbound audio backlog full'));
    // The first drop at once; the 149 + 150 after it within the second, then the next one, in the next warning.
    expect(warnings.map((w) => w.dropped)).toEqual([1, 300]);
  });
});
