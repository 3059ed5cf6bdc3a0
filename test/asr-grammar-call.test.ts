/**
 * A call on the embedded default with grammar decoding: the caller switches language mid-call and hears
 * replies in each language (the language per turn follows the caller), and a call whose language is fixed
 * by the `?language=` query stays in it. Spanish needs ../shared/models/pocketsphinx-es.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthesize, voicesFor, type Voice } from '../loadtest/voices.js';
import { acousticModel, DEFAULT_SPANISH_MODEL_DIR, modelPresent } from '../src/providers/asr/pocketsphinx/grammar.js';
import { TestDevice } from './helpers/device.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const spanishModel = modelPresent(acousticModel('es', process.env.POCKETSPHINX_ES_DIR ?? DEFAULT_SPANISH_MODEL_DIR));

function voice(language: string): Voice {
  const all = voicesFor(language);
  return all.find((v) => v.engine === 'pico') ?? all[0];
}

describe.skipIf(!spanishModel)('a call that switches language (grammar ASR, en + es)', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });

  async function turn(device: TestDevice, pcm: Int16Array): Promise<{ final: Record<string, unknown>; reply: string }> {
    const since = performance.now();
    await device.stream(pcm);
    const done = await device.silenceUntil((e) => e.type === 'response.done' && e.status === 'completed', 20_000, since);
    await device.silence(300);
    const final = device.eventsOf('transcript.final', since).find((e) => e.turn === done.turn) ?? {};
    return { final, reply: String(done.text) };
  }

  it('answers each turn in the language the caller spoke', async () => {
    const device = new TestDevice(server.wsUrl);
    await device.connect();
    try {
      const english = await turn(device, await synthesize('what time is it', voice('en')));
      expect(english.final.language).toBe('en');
      expect(english.reply).toMatch(/^It is /);
      const spanish = await turn(device, await synthesize('que hora es', voice('es')));
      console.log(`[asr-grammar-call] es: ${JSON.stringify(spanish.final.text)} → ${JSON.stringify(spanish.reply)}`);
      expect(spanish.final.language).toBe('es');
      expect(spanish.reply).toMatch(/^Son las /);
      const back = await turn(device, await synthesize('what can you do', voice('en')));
      expect(back.final.language).toBe('en');
    } finally {
      await device.close();
    }
  }, 120_000);

  it('keeps the language fixed by the call', async () => {
    const device = new TestDevice(`${server.wsUrl}?language=es`);
    await device.connect();
    try {
      const spanish = await turn(device, await synthesize('que hora es', voice('es')));
      expect(spanish.final.language).toBe('es');
      expect(spanish.reply).toMatch(/^Son las /);
    } finally {
      await device.close();
    }
  }, 60_000);
});
