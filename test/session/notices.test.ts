import { afterEach, describe, expect, it } from 'vitest';
import type { RecordingTap } from '../../src/session/ports.js';
import { CallHarness } from './harness.js';

/** What the session told the recorder (the audio itself is not looked at). */
class TapLog implements RecordingTap {
  callerFrames = 0;
  agentFrames = 0;
  readonly consents: boolean[] = [];
  caller(): void {
    this.callerFrames++;
  }
  agent(): void {
    this.agentFrames++;
  }
  sensitive(): void {}
  consent(given: boolean): void {
    this.consents.push(given);
  }
}

describe('service lines', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('says the consent line first, and answers a "no" with the refused line, not the model', async () => {
    const tap = new TapLog();
    call = new CallHarness({ recording: tap, config: { recording: { enabled: true } } });
    await call.silenceUntil((e) => e.type === 'response.done');
    const consentLine = call.config.recording.consentLine.en;
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: consentLine });
    expect(tap.agentFrames).toBe(consentLine.split(/\s+/).length * 5);
    // A service line is on the record but not in the agent's conversation.
    expect(call.session.history).toHaveLength(1);
    expect(call.session.transcript.map((t) => t.text)).toEqual([consentLine]);

    await call.say('no', 300);
    await call.silenceUntil((e) => e.type === 'response.done' && e.text === call.config.recording.refusedLine.en);
    expect(tap.consents).toEqual([false]);
    // The model's reply (prepared during the pause) is never heard, and the answer stays off its conversation.
    expect(call.of('response.done').map((e) => e.text)).toEqual([call.config.recording.consentLine.en, call.config.recording.refusedLine.en]);
    expect(call.session.history).toHaveLength(1);
  });

  it('lets the recording go on when the first turn is anything else, and answers it', async () => {
    const tap = new TapLog();
    call = new CallHarness({ recording: tap, config: { recording: { enabled: true } } });
    await call.silenceUntil((e) => e.type === 'response.done');
    await call.say('what time is it', 600);
    await call.silenceUntil((e) => e.type === 'response.done' && e.turn === 1);
    expect(tap.consents).toEqual([true]);
    expect(call.llmRequests).toHaveLength(1);
    expect(tap.callerFrames).toBeGreaterThan(0);
  });

  it('hangs up only once the goodbye has played', async () => {
    call = new CallHarness();
    const start = call.clock.now();
    let ended = false;
    const done = call.session.endWithNotice('We are closing now, goodbye.').then(() => (ended = true));
    await call.wait(300);
    expect(ended).toBe(false);
    expect(call.of('call.action')).toHaveLength(0);
    await call.wait(1_000);
    await done;
    const hangupAt = call.timeOf((e) => e.type === 'call.action' && e.action === 'hangup')!;
    // Five words, 500 ms of audio: not when the last frame left (40 ms ahead of playout) but when it has played.
    expect(hangupAt - start).toBe(500);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: 'We are closing now, goodbye.' });
  });
});
