import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { FRAME_SAMPLES } from '../src/audio/format.js';
import { VoiceService } from '../src/service.js';

/**
 * A call that falls hopelessly behind real time drops caller frames; the log says so in one summary line
 * per interval (with how many were dropped), not one warning per 20 ms frame.
 */
const lines: Record<string, unknown>[] = [];
let service: VoiceService;

beforeAll(async () => {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const config = mergeConfig(DEFAULT_CONFIG, { store: { path: ':memory:' } });
  service = new VoiceService(config, pino({ level: 'info' }, sink));
  await service.load();
});
afterAll(async () => {
  await service?.close();
});

describe('overload warnings are rate-limited', () => {
  it('a burst of 1000 frames beyond the backlog gives one warning, and the count reaches the log', async () => {
    const session = service.openSession('test', { event: () => {}, audio: () => {} });
    // Far more than the 5 s backlog, all at once: the VAD cannot keep up, most frames are dropped.
    for (let i = 0; i < 1250; i++) session.pushAudio({ samples: new Int16Array(FRAME_SAMPLES), timestampMs: performance.now(), seq: i });
    const warnings = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('inbound audio backlog full'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ callId: session.callId, droppedFrames: 1 });
    await service.closeSession(session, 'test');
    const closed = lines.find((l) => l.msg === 'session closed' && l.callId === session.callId);
    // The frames dropped after the warning are counted where the call ends.
    expect(closed?.droppedFrames).toBe(1250 - 250 - 1);
  });
});
