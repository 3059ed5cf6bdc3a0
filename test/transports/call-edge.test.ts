/**
 * The call edge every transport stands on: admission and its race with a caller who leaves, 20 ms framing,
 * barge-in reaching the sink before the wire, hanging up only after the last words have played, and a
 * close that cascades whatever fails. The session is a real one on a fake clock (test/session/harness.ts);
 * the service's admission is replaced by one that hands out such sessions.
 */
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { FRAME_SAMPLES } from '../../src/audio/format.js';
import type { Handover } from '../../src/integration/handover.js';
import { LimitError } from '../../src/limits/limits.js';
import type { SessionEvent } from '../../src/session/events.js';
import type { OutboundFrame } from '../../src/session/output-pacer.js';
import type { Session, SessionOutput } from '../../src/session/session.js';
import { CallEdge, type AudioSink, type CallAdmission, type CallWire } from '../../src/transports/kit/call-edge.js';
import { CallHarness } from '../session/harness.js';

const silent = pino({ level: 'silent' });

/** Admits calls onto harness sessions; records what it was asked. `gate` holds admission open (a slow database). */
class HarnessAdmission implements CallAdmission {
  harness: CallHarness | null = null;
  readonly opened: { transport: string; keyId: string | undefined }[] = [];
  readonly closed: { callId: string; transport: string; reason: string | undefined }[] = [];
  gate: Promise<void> = Promise.resolve();
  refuse: Error | null = null;
  failClose = false;

  async openSession(transport: string, output: SessionOutput, options: Parameters<CallAdmission['openSession']>[2] = {}): Promise<Session> {
    this.opened.push({ transport, keyId: options.keyId });
    await this.gate;
    if (this.refuse) throw this.refuse;
    this.harness = new CallHarness({ forward: output });
    return this.harness.session;
  }

  async closeSession(session: Session, transport: string, reason?: string): Promise<void> {
    this.closed.push({ callId: session.callId, transport, reason });
    await session.close();
    if (this.failClose) throw new Error('the call record could not be written');
  }
}

/** A transport's wire and outbound queue, noting the order things reach it. */
class RecordingWire implements CallWire, AudioSink {
  readonly log: string[] = [];
  readonly frames: OutboundFrame[] = [];
  readonly ended: { action: string; handover: Handover | null; atMs: number }[] = [];
  queued = 0;
  tailMs = 0;

  event(event: SessionEvent): void {
    this.log.push(`event:${event.type}`);
  }
  agentEnded(action: 'hangup' | 'transfer', handover: Handover | null): void {
    this.log.push(`ended:${action}`);
    this.ended.push({ action, handover, atMs: performance.now() });
  }
  write(frame: OutboundFrame): void {
    this.frames.push(frame);
  }
  clear(): void {
    this.log.push('sink:clear');
  }
  pending(): number {
    return this.queued;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** An admitted call whose agent has said goodbye (the line played on the fake clock) with `queued` still in the sink. */
async function afterGoodbye(wire: RecordingWire, queued: number): Promise<{ admission: HarnessAdmission; edge: CallEdge }> {
  const admission = new HarnessAdmission();
  const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
  await edge.open({ keyId: 'key-a' });
  harness = admission.harness!;
  wire.queued = queued;
  const notice = harness.session.endWithNotice('Goodbye.');
  await harness.wait(1_000);
  await notice;
  return { admission, edge };
}

let harness: CallHarness | null = null;
afterEach(async () => {
  await harness?.session.close();
  harness = null;
});

describe('CallEdge', () => {
  it('admits the call against its key and cuts caller audio of any chunk size into stamped 20 ms frames', async () => {
    const admission = new HarnessAdmission();
    const wire = new RecordingWire();
    const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
    const session = await edge.open({ keyId: 'key-a' });
    harness = admission.harness;
    expect(session).toBe(harness?.session);
    expect(admission.opened).toEqual([{ transport: 'test-wire', keyId: 'key-a' }]);
    // 7 ms, then 50 ms: two whole frames and 17 ms waiting; the second frame starts inside the second chunk.
    expect(edge.pushPcm(new Int16Array(112), 1000)).toBe(0);
    expect(edge.pushPcm(new Int16Array(800), 1007)).toBe(2);
    expect(edge.pushPcm(new Int16Array(FRAME_SAMPLES - 272), 1057)).toBe(1);
  });

  it('closes a session whose caller left during admission, and frees what the transport owned', async () => {
    const admission = new HarnessAdmission();
    let release!: () => void;
    admission.gate = new Promise((resolve) => (release = resolve));
    const wire = new RecordingWire();
    const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
    let freed = 0;
    edge.own({ close: () => freed++ });
    const opening = edge.open({ keyId: 'key-a' });
    let closed = false;
    const closing = edge.close('caller_left').then(() => (closed = true));
    await sleep(20);
    // The close waits for the admission it raced: nothing is freed under a call still being admitted.
    expect(closed).toBe(false);
    expect(freed).toBe(0);
    release();
    expect(await opening).toBeNull();
    await closing;
    harness = admission.harness;
    expect(edge.session).toBeNull();
    expect(admission.closed).toEqual([{ callId: 'call-under-test', transport: 'test-wire', reason: 'caller_left' }]);
    expect(freed).toBe(1);
    // Caller audio after the end goes nowhere; a resource handed over late is freed at once.
    expect(edge.pushPcm(new Int16Array(FRAME_SAMPLES))).toBe(0);
    edge.own({ close: () => freed++ });
    expect(freed).toBe(2);
  });

  it('passes a refusal through untouched, with nothing left open', async () => {
    const admission = new HarnessAdmission();
    admission.refuse = new LimitError('session_limit', 'key-a holds 2 calls, its limit');
    const wire = new RecordingWire();
    const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
    await expect(edge.open({ keyId: 'key-a' })).rejects.toBe(admission.refuse);
    expect(edge.session).toBeNull();
    await edge.close('refused');
    expect(admission.closed).toEqual([]);
  });

  it('tells the sink to clear before the wire hears of a barge-in', async () => {
    const admission = new HarnessAdmission();
    const wire = new RecordingWire();
    const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
    await edge.open({ keyId: 'key-a' });
    harness = admission.harness!;
    await harness.say('tell me a long story', 600);
    await harness.silenceUntil((e) => e.type === 'response.audio.started');
    await harness.say('stop', 400);
    await harness.silence(100);
    expect(harness.of('audio.clear').length).toBeGreaterThan(0);
    const clear = wire.log.indexOf('event:audio.clear');
    expect(wire.log[clear - 1]).toBe('sink:clear');
    expect(wire.frames.length).toBe(harness.audio.length);
  });

  it('ends the call on the wire only after the last words left its queue and the far end played them', async () => {
    const wire = new RecordingWire();
    wire.tailMs = 60;
    await afterGoodbye(wire, 3);
    expect(wire.log).toContain('event:call.action');
    // Still queued here: not ended.
    await sleep(80);
    expect(wire.ended).toEqual([]);
    const drainedAt = performance.now();
    wire.queued = 0;
    await sleep(200);
    expect(wire.ended.map((e) => e.action)).toEqual(['hangup']);
    // Not before the far end's jitter buffer had its tail (timer granularity aside).
    expect(wire.ended[0]!.atMs - drainedAt).toBeGreaterThanOrEqual(wire.tailMs - 5);
  });

  it('can end a call the wire kept after an earlier ending (a refused transfer leaves the caller with the agent)', async () => {
    const wire = new RecordingWire();
    await afterGoodbye(wire, 0);
    await sleep(50);
    expect(wire.ended.map((e) => e.action)).toEqual(['hangup']);
    // The wire did not end the call: the agent's next goodbye must reach it too.
    const again = harness!.session.endWithNotice('Goodbye again.');
    await harness!.wait(1_500);
    await again;
    await sleep(50);
    expect(wire.ended.map((e) => e.action)).toEqual(['hangup', 'hangup']);
  });

  it('does not end a call on the wire that closed while its goodbye played', async () => {
    const wire = new RecordingWire();
    const { edge } = await afterGoodbye(wire, 1);
    await edge.close('caller_hung_up');
    wire.queued = 0;
    await sleep(100);
    expect(wire.ended).toEqual([]);
  });

  it('runs every step of close whatever the one before threw, once', async () => {
    const admission = new HarnessAdmission();
    admission.failClose = true;
    const wire = new RecordingWire();
    const edge = new CallEdge(admission, 'test-wire', wire, wire, silent);
    const freed: string[] = [];
    edge.own({
      close: () => {
        freed.push('decoder');
        throw new Error('already freed');
      },
    });
    edge.own({ close: () => freed.push('encoder') });
    await edge.open({ keyId: 'key-a' });
    harness = admission.harness;
    await expect(edge.close('hangup')).rejects.toThrow('call record');
    await expect(edge.close('again')).rejects.toThrow('call record');
    expect(freed).toEqual(['decoder', 'encoder']);
    expect(admission.closed).toHaveLength(1);
  });
});
