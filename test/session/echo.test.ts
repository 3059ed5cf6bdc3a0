import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

const reply = 'Our menu today has a tomato soup, a roast chicken with potatoes, a mushroom risotto and an apple tart for dessert, and on Sundays a roast.';
const menuAgent = () => ({ text: reply });

/** The caller asks, then the line carries only the agent's echo until the reply is done. */
async function echoedReply(call: CallHarness, delayMs: number, lossDb: number): Promise<void> {
  await call.say('what is on the menu', 600);
  await call.silenceUntil((e) => e.type === 'response.audio.started');
  for (let i = 0; i < 400 && !call.of('response.done').length; i++) await call.echo(20, delayMs, lossDb);
}

describe('echo on the line', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  for (const [delayMs, lossDb] of [[60, 15], [200, 25]] as const) {
    it(`the agent's own voice (${lossDb} dB down, ${delayMs} ms late) neither stops it nor becomes a caller turn`, async () => {
      call = new CallHarness({ agent: menuAgent, loudAgent: true });
      await echoedReply(call, delayMs, lossDb);
      expect(call.of('response.interrupted')).toHaveLength(0);
      expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: reply });
      expect(call.of('audio.clear')).toHaveLength(0);
      // Whatever the VAD took for speech was given no words of the caller's and no answer.
      expect(call.of('transcript.final').filter((e) => e.turn > 1 && e.text !== '')).toHaveLength(0);
      expect(call.llmRequests).toHaveLength(1);
    });
  }

  it('the caller talking over the echo still interrupts the agent', async () => {
    call = new CallHarness({ agent: menuAgent, loudAgent: true });
    await call.say('what is on the menu', 600);
    await call.silenceUntil((e) => e.type === 'response.audio.started');
    await call.echo(1500, 120, 20);
    expect(call.of('response.interrupted')).toHaveLength(0);
    // Loud caller speech (the scripted frames are at full scale, far above the echo).
    const loud = new Int16Array(320).map((_, i) => ((i * 7919) % 2001) * 8 - 8000);
    for (let t = 0; t < 400; t += 20) {
      call.push(0.9, 'stop please', loud.slice());
      await call.wait(20);
    }
    expect(call.of('response.interrupted')).toHaveLength(1);
  });
});
