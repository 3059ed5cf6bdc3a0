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

describe('keypad turns with payment data', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('echoes no more than the first six digits of a card number typed on the keypad', async () => {
    call = new CallHarness();
    for (const digit of '4111111111111111#') call.session.pushDtmf(digit);
    await call.wait(1_000);
    expect(call.of('dtmf.received').map((e) => e.digit).join('')).toBe('411111#');
    const final = call.of('transcript.final')[0].text;
    expect(final.replace(/\D/g, '')).not.toContain('4111111111111111');
    // The conversation shows the model the masked number; the digits stay aside for the embedded agent only.
    const user = call.llmRequests[0].at(-1);
    expect(user?.content.replace(/\D/g, '')).not.toContain('4111111111111111');
    expect(user?.secret).toBe('DTMF: 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1');
  });
});
