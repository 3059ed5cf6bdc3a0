import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

describe('keypad turns', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('gathers digits until a pause of dtmfTimeoutMs, then answers them as one turn', async () => {
    call = new CallHarness();
    for (const digit of ['4', '2', '7']) {
      call.session.pushDtmf(digit);
      await call.wait(300);
    }
    expect(call.of('dtmf.received').map((e) => e.digit)).toEqual(['4', '2', '7']);
    await call.wait(call.config.turn.dtmfTimeoutMs - 400);
    expect(call.of('transcript.final')).toHaveLength(0); // the last digit is only 1.4 s old

    await call.wait(200);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['DTMF: 4 2 7']);
    expect(call.llmRequests[0].at(-1)).toMatchObject({ role: 'user', content: 'DTMF: 4 2 7', input: { source: 'keypad' } });
    await call.wait(2_000);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: 'You said DTMF: 4 2 7. Anything else?' });
  });

  it('ends the entry at once on #, and ignores what is not a key', async () => {
    call = new CallHarness();
    for (const digit of ['1', 'x', '9', '#']) call.session.pushDtmf(digit);
    await call.wait(20);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['DTMF: 1 9']);
    await call.wait(call.config.turn.dtmfTimeoutMs * 2);
    expect(call.of('transcript.final')).toHaveLength(1);
  });
});
