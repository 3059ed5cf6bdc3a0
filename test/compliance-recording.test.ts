/**
 * Call recordings: the consent line first, the caller's refusal honoured (nothing kept), both sides in stereo
 * Ogg Opus (caller left, agent right) served to the owning key only and audited, paused while a sensitive
 * answer is collected. Real speech (flite or Pico) through the real VAD, recogniser and TTS.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import opus from '@discordjs/opus';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES, rmsDbfs } from '../src/audio/format.js';
import { DEFAULT_CONFIG } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { readOggPages } from '../src/recording/ogg.js';
import { CallRecorder } from '../src/recording/recorder.js';
import { Sealer } from '../src/privacy/seal.js';
import { randomBytes } from 'node:crypto';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { speak } from './helpers/speech.js';
import { SpeakingCaller } from './helpers/text-caller.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));


/** Per 20 ms of the recording: the level of the left (caller) and right (agent) channel, dBFS. */
function levels(file: Buffer): { left: number; right: number }[] {
  const pages = readOggPages(file);
  expect(pages.every((p) => p.crcOk)).toBe(true);
  const head = pages[0].packets[0];
  expect(head.toString('ascii', 0, 8)).toBe('OpusHead');
  expect(head[9]).toBe(2);
  expect(pages[1].packets[0].toString('ascii', 0, 8)).toBe('OpusTags');
  expect(pages[pages.length - 1].type & 0x04).toBe(0x04);
  const decoder = new opus.OpusEncoder(16_000, 2);
  const out: { left: number; right: number }[] = [];
  for (const page of pages.slice(2)) {
    for (const packet of page.packets) {
      const pcm = decoder.decode(packet);
      const stereo = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.byteLength / 2);
      const left = new Int16Array(stereo.length / 2);
      const right = new Int16Array(stereo.length / 2);
      for (let i = 0; i < left.length; i++) {
        left[i] = stereo[2 * i];
        right[i] = stereo[2 * i + 1];
      }
      out.push({ left: rmsDbfs(left), right: rmsDbfs(right) });
    }
  }
  return out;
}

describe('recorded calls', () => {
  let server: TestServer;
  let dir: string;
  beforeAll(async () => {
    dir = path.join(tmpdir(), `voice-agent-recordings-${randomUUID()}`);
    // Store keys set: the recording is sealed on disk and opened for the owner.
    server = await startTestServer({ recording: { enabled: true, dir }, store: { encryptionKeys: [randomBytes(32).toString('base64')] }, sip: { enabled: false } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('says the consent line first, records both sides in stereo Ogg Opus when the caller goes on, serves it to the owner and audits the read', async () => {
    const caller = new SpeakingCaller(server.wsUrl);
    const callId = await caller.open();
    const consent = await caller.waitFor((e) => e.type === 'response.done');
    expect(consent.text).toBe(DEFAULT_CONFIG.recording.consentLine.en);
    const since = caller.events.length;
    await caller.stream(await speak('I would like to book a table for two people please'));
    await caller.waitFor((e) => e.type === 'response.done', since, 30_000);
    await caller.close();
    // The record is closed and the recording written once the socket has gone.
    const deadline = performance.now() + 10_000;
    let response: Response;
    for (;;) {
      response = await fetch(`${server.httpUrl}/v1/calls/${callId}/recording`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      if (response.status === 200 || performance.now() > deadline) break;
      await sleep(100);
    }
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^audio\/ogg/);
    const file = Buffer.from(await response.arrayBuffer());
    const frames = levels(file);
    // Caller speech on the left, the agent's consent line and reply on the right, at different times.
    const loudLeft = frames.filter((f) => f.left > -40).length;
    const loudRight = frames.filter((f) => f.right > -40).length;
    expect(loudLeft).toBeGreaterThan(40);
    expect(loudRight).toBeGreaterThan(100);
    expect(frames.filter((f) => f.left > -40 && f.right > -40).length).toBeLessThan(Math.min(loudLeft, loudRight) / 2);
    // The consent line comes first: the agent talks before the caller does.
    expect(frames.findIndex((f) => f.right > -40)).toBeLessThan(frames.findIndex((f) => f.left > -40));
    // Linked from the record, and only for the owner; the read is in the audit trail.
    expect((await fetch(`${server.httpUrl}/v1/calls/${callId}/recording`, { headers: { authorization: 'Bearer another-key' } })).status).toBe(401);
    const trail = (await server.server.service.store.auditLog()).filter((e) => e.call_id === callId && e.action === 'read_recording');
    expect(trail.length).toBe(1);
    expect(readdirSync(dir)).toContain(`${callId}.ogg`);
    expect(readFileSync(path.join(dir, `${callId}.ogg`)).includes(Buffer.from('OpusHead'))).toBe(false);
  }, 60_000);

  it('honours a refusal: the agent says so and nothing of the call is kept', async () => {
    const caller = new SpeakingCaller(server.wsUrl);
    const callId = await caller.open();
    await caller.waitFor((e) => e.type === 'response.done');
    const since = caller.events.length;
    caller.text('no');
    const answer = await caller.waitFor((e) => e.type === 'response.done', since);
    expect(answer.text).toBe(DEFAULT_CONFIG.recording.refusedLine.en);
    // The call goes on, unrecorded.
    const later = caller.events.length;
    caller.text('I would like to book a table for two');
    expect(String((await caller.waitFor((e) => e.type === 'response.done', later)).text)).toMatch(/\w/);
    await caller.close();
    await sleep(1000);
    expect((await fetch(`${server.httpUrl}/v1/calls/${callId}/recording`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).status).toBe(404);
    expect(readdirSync(dir).filter((name) => name.startsWith(callId))).toEqual([]);
  }, 60_000);
});

describe('CallRecorder', () => {
  it('records silence while a sensitive answer is collected', async () => {
    const dir = path.join(tmpdir(), `voice-agent-rec-${randomUUID()}`);
    const recorder = new CallRecorder('pause-test', { ...DEFAULT_CONFIG.recording, enabled: true, dir }, silentLogger());
    recorder.consent(true);
    const tone = (n: number) => Int16Array.from({ length: FRAME_SAMPLES }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * (n * FRAME_SAMPLES + i)) / 16_000)));
    let n = 0;
    const feed = async (frames: number) => {
      for (let i = 0; i < frames; i++) {
        recorder.caller(tone(n++));
        await sleep(20);
      }
    };
    await feed(25);
    recorder.sensitive(true);
    await feed(25);
    recorder.sensitive(false);
    await feed(25);
    const saved = await recorder.close();
    expect(saved).not.toBeNull();
    expect(existsSync(`${saved!.file}.part`)).toBe(false);
    const frames = levels(readFileSync(saved!.file));
    const loud = frames.map((f) => f.left > -40);
    // About one second of tone, one second of nothing, one second of tone (timer jitter allowed).
    expect(loud.filter(Boolean).length).toBeGreaterThan(35);
    expect(loud.filter(Boolean).length).toBeLessThan(60);
    // The longest quiet stretch between the first and last tone frame is the pause (a slow timer may drop a frame elsewhere).
    let longest = 0;
    let run = 0;
    for (const on of loud.slice(loud.indexOf(true), loud.lastIndexOf(true))) {
      run = on ? 0 : run + 1;
      longest = Math.max(longest, run);
    }
    expect(longest).toBeGreaterThan(15);
    expect(longest).toBeLessThan(40);
    // The agent side stays silent (the codec's onset transient aside).
    expect(frames.every((f) => f.right < -40)).toBe(true);
  });

  it('keeps nothing on disk until the consent is answered, and keeps the audio of a call that ended before an answer', async () => {
    const dir = path.join(tmpdir(), `voice-agent-rec-${randomUUID()}`);
    const recorder = new CallRecorder('pending-test', { ...DEFAULT_CONFIG.recording, enabled: true, dir }, silentLogger());
    const tone = Int16Array.from({ length: FRAME_SAMPLES }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 300 * i) / 16_000)));
    for (let i = 0; i < 100; i++) {
      recorder.agent(tone);
      await sleep(20);
    }
    // Two encode ticks have passed: still only the Ogg headers in the part file.
    expect(readFileSync(recorder.partFile).length).toBeLessThan(200);
    const saved = await recorder.close();
    const frames = levels(readFileSync(saved!.file));
    expect(frames.filter((f) => f.right > -40).length).toBeGreaterThan(80);
  });

  it('seals the file as it is written when store keys are set: no Ogg on disk, the same audio once opened, tampering detected', async () => {
    const dir = path.join(tmpdir(), `voice-agent-rec-${randomUUID()}`);
    const sealer = new Sealer([randomBytes(32).toString('base64')]);
    const recorder = new CallRecorder('sealed-test', { ...DEFAULT_CONFIG.recording, enabled: true, dir }, silentLogger(), sealer.fileSealer('recording:sealed-test'));
    recorder.consent(true);
    const tone = Int16Array.from({ length: FRAME_SAMPLES }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 300 * i) / 16_000)));
    for (let i = 0; i < 60; i++) {
      recorder.caller(tone);
      await sleep(20);
    }
    const saved = await recorder.close();
    const onDisk = readFileSync(saved!.file);
    expect(onDisk.includes(Buffer.from('OggS'))).toBe(false);
    expect(onDisk.includes(Buffer.from('OpusHead'))).toBe(false);
    const opened = sealer.openFile(onDisk, 'recording:sealed-test');
    expect(levels(opened).filter((f) => f.left > -40).length).toBeGreaterThan(45);
    // Another call's context, or one flipped byte, and it does not open.
    expect(() => sealer.openFile(onDisk, 'recording:another-call')).toThrow();
    const tampered = Buffer.from(onDisk);
    tampered[tampered.length - 5] ^= 1;
    expect(() => sealer.openFile(tampered, 'recording:sealed-test')).toThrow();
  });
});

