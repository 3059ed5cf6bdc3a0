import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

describe("the agent's own voice", () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('speaks each language with the voice its agent file names, and the TTS default where it names none', async () => {
    call = new CallHarness({ voices: { en: 'en-GB', es: 'es-ES' }, agent: () => ({ text: 'Of course.' }) });
    call.session.submitText('hello', 'en');
    await call.wait(2000);
    call.session.submitText('hola', 'es-ES');
    await call.wait(2000);
    call.session.submitText('bonjour', 'fr');
    await call.wait(2000);
    expect(call.tts.voices).toEqual(['en-GB', 'es-ES', undefined]);
  });
});
