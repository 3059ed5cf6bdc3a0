import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE, durationMs, rmsDbfs } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';
import { encodeWav } from '../src/audio/wav.js';
import { silentLogger } from '../src/core/logger.js';
import { CompositeTts, createTtsProvider } from '../src/providers/tts/index.js';
import { EspeakTts } from '../src/providers/tts/espeak/index.js';
import { SvoxPicoTts, defaultPicoVoicesDir, findPicoVoices } from '../src/providers/tts/svoxpico/index.js';
import type { TtsOptions, TtsProvider } from '../src/providers/tts/types.js';

interface Synth {
  audio: Int16Array;
  chunks: number;
  firstMs: number;
  wallMs: number;
}

async function synth(tts: TtsProvider, text: string, options: TtsOptions): Promise<Synth> {
  const started = performance.now();
  let firstMs = -1;
  const parts: Int16Array[] = [];
  for await (const chunk of tts.synthesize(text, options)) {
    expect(chunk).toBeInstanceOf(Int16Array);
    if (firstMs < 0 && chunk.length > 0) firstMs = performance.now() - started;
    parts.push(chunk);
  }
  const wallMs = performance.now() - started;
  return { audio: concatPcm(parts), chunks: parts.length, firstMs, wallMs };
}

/** Longest stretch of near-silence (|s| < 100), in ms. */
function longestSilenceMs(samples: Int16Array): number {
  let run = 0;
  let best = 0;
  for (const s of samples) {
    run = Math.abs(s) < 100 ? run + 1 : 0;
    best = Math.max(best, run);
  }
  return durationMs(best);
}

/**
 * Same utterance? Pico randomises phases per run, so samples never match exactly between runs;
 * durations are exact for Pico (±2 % for eSpeak) and loudness is stable. A mixed-up or truncated
 * stream fails both.
 */
function expectSameUtterance(got: Int16Array, want: Int16Array, exactLength: boolean): void {
  if (exactLength) expect(got.length).toBe(want.length);
  else expect(Math.abs(got.length - want.length)).toBeLessThan(want.length * 0.02);
  expect(Math.abs(rmsDbfs(got) - rmsDbfs(want))).toBeLessThan(1.5);
}

function peak(samples: Int16Array): number {
  let max = 0;
  for (const s of samples) max = Math.max(max, Math.abs(s));
  return max;
}

const SENTENCES: Record<string, string> = {
  en: 'Hello, thank you for calling. How can I help you today?',
  fr: 'Bonjour, merci de votre appel. Comment puis-je vous aider?',
  de: 'Guten Tag, danke für Ihren Anruf. Wie kann ich helfen?',
};
const LONG_TEXT =
  'This is a long answer that the caller interrupts. It goes on for several sentences, ' +
  'so that stopping it early is clearly shorter than letting it finish. ' +
  'Here is a third sentence, and then a fourth one with a few more words in it.';

const picoDir = defaultPicoVoicesDir();
const havePico = findPicoVoices(picoDir).length > 0;

interface Case {
  name: string;
  languages: string[];
  make: () => TtsProvider;
  /** Pico's durations are deterministic: concurrent output must be exactly as long as sequential. */
  exactLength: boolean;
}

const cases: Case[] = [
  {
    name: 'svoxpico',
    languages: ['en', 'fr', 'de'],
    make: () => new SvoxPicoTts({ voicesDir: picoDir, logger: silentLogger() }),
    exactLength: true,
  },
  { name: 'espeak', languages: ['en', 'fr'], make: () => new EspeakTts({ logger: silentLogger() }), exactLength: false },
];

for (const c of cases) {
  describe.skipIf(c.name === 'svoxpico' && !havePico)(`TTS ${c.name}`, () => {
    let tts: TtsProvider;

    beforeAll(async () => {
      tts = c.make();
      const started = performance.now();
      await tts.load();
      console.log(`[${c.name}] load ${Math.round(performance.now() - started)} ms, languages: ${tts.languages.join(' ')}`);
    });
    afterAll(async () => {
      await tts?.close?.();
    });

    it('lists its languages', () => {
      for (const lang of c.languages) expect(tts.languages).toContain(lang);
    });

    for (const lang of c.languages) {
      it(`speaks ${lang}: audible, plausible length, fast first chunk`, async () => {
        await synth(tts, SENTENCES[lang], { language: lang }); // first call per language may JIT-compile
        const r = await synth(tts, SENTENCES[lang], { language: lang });
        const seconds = durationMs(r.audio.length) / 1000;
        const rtf = r.wallMs / 1000 / seconds;
        console.log(
          `[${c.name}] ${lang}: first audio ${r.firstMs.toFixed(1)} ms, ${seconds.toFixed(2)} s audio in ` +
            `${r.wallMs.toFixed(1)} ms (RTF ${rtf.toFixed(3)}), ${r.chunks} chunks, ${rmsDbfs(r.audio).toFixed(1)} dBFS RMS`,
        );
        expect(rmsDbfs(r.audio)).toBeGreaterThan(-40);
        expect(seconds).toBeGreaterThan(0.5);
        expect(seconds).toBeLessThan(6);
        expect(r.chunks).toBeGreaterThan(1); // streamed, not one blob
        expect(r.firstMs).toBeLessThan(1000);
        // Pico peaks at 0 dBFS; the -3 dB default gain must leave headroom.
        if (c.name === 'svoxpico') expect(peak(r.audio)).toBeLessThanOrEqual(Math.ceil(32767 * Math.pow(10, -3 / 20)));
      });
    }

    it('stops promptly when the signal aborts', async () => {
      const full = await synth(tts, LONG_TEXT, { language: 'en' });
      const ac = new AbortController();
      let received = 0;
      const started = performance.now();
      let abortedAt = 0;
      for await (const chunk of tts.synthesize(LONG_TEXT, { language: 'en', signal: ac.signal })) {
        received += chunk.length;
        if (!ac.signal.aborted && received >= INTERNAL_SAMPLE_RATE / 10) {
          ac.abort();
          abortedAt = performance.now();
        }
      }
      const afterAbortMs = performance.now() - abortedAt;
      console.log(
        `[${c.name}] abort: ${received} of ${full.audio.length} samples, stream ended ${afterAbortMs.toFixed(1)} ms after abort ` +
          `(${(performance.now() - started).toFixed(1)} ms total)`,
      );
      expect(received).toBeLessThan(full.audio.length / 2);
      expect(afterAbortMs).toBeLessThan(200);

      // Already aborted: nothing at all.
      const pre = new AbortController();
      pre.abort();
      expect((await synth(tts, LONG_TEXT, { language: 'en', signal: pre.signal })).audio.length).toBe(0);

      // The interrupted engine is reusable and clean: the next call gives the full utterance.
      const again = await synth(tts, LONG_TEXT, { language: 'en' });
      expectSameUtterance(again.audio, full.audio, c.exactLength);
    });

    it('runs two synthesize() calls at once correctly', async () => {
      const other = c.languages[1];
      const seqA = await synth(tts, SENTENCES.en, { language: 'en' });
      const seqB = await synth(tts, SENTENCES[other], { language: other });
      const seqA2 = await synth(tts, LONG_TEXT, { language: 'en' });

      const order: string[] = [];
      const tag = async (label: string, it: AsyncIterable<Int16Array>): Promise<Int16Array> => {
        const parts: Int16Array[] = [];
        for await (const chunk of it) {
          order.push(label);
          parts.push(chunk);
        }
        return concatPcm(parts);
      };
      // Same language twice (same voice: needs two engines or correct serialisation) plus another language.
      const [a, a2, b] = await Promise.all([
        tag('a', tts.synthesize(SENTENCES.en, { language: 'en' })),
        tag('a2', tts.synthesize(LONG_TEXT, { language: 'en' })),
        tag('b', tts.synthesize(SENTENCES[other], { language: other })),
      ]);
      console.log(`[${c.name}] concurrent chunk order: ${order.slice(0, 24).join(' ')} …`);
      for (const [got, want] of [
        [a, seqA.audio],
        [a2, seqA2.audio],
        [b, seqB.audio],
      ] as const) {
        expect(rmsDbfs(got)).toBeGreaterThan(-40);
        expectSameUtterance(got, want, c.exactLength);
      }
      if (c.name === 'svoxpico') {
        // Time-sliced: the short clause finishes while the long text is still streaming.
        expect(order.lastIndexOf('a')).toBeLessThan(order.lastIndexOf('a2'));
        expect(order.indexOf('a2')).toBeLessThan(order.lastIndexOf('a'));
      }
    });

    it('reads markup in the text instead of obeying it', async () => {
      // Obeyed, this would be 4 s of silence (both engines parse SSML-like tags).
      const r = await synth(tts, 'Hi <break time="4000ms"/> there & co.', { language: 'en' });
      expect(rmsDbfs(r.audio)).toBeGreaterThan(-40);
      expect(longestSilenceMs(r.audio)).toBeLessThan(1000);
    });

    it('is roughly intelligible (logged by pocketsphinx when installed)', async () => {
      const text = 'Hello, thank you for calling. How can I help you today?';
      const r = await synth(tts, text, { language: 'en' });
      const file = path.join(mkdtempSync(path.join(tmpdir(), 'tts-')), `${c.name}-en.wav`);
      writeFileSync(file, encodeWav(r.audio, INTERNAL_SAMPLE_RATE));
      const run = (cmd: string, args: string[]): string | null => {
        try {
          return execFileSync(cmd, args, { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
        } catch {
          return null;
        }
      };
      // pocketsphinx 5 has `pocketsphinx single`; Debian's 0.8 has pocketsphinx_continuous.
      const heard =
        run('pocketsphinx', ['single', file]) ?? run('pocketsphinx_continuous', ['-infile', file, '-logfn', '/dev/null']);
      console.log(
        `[${c.name}] wrote ${file}; said "${text}"; pocketsphinx heard: ` +
          (heard === null ? '(not installed)' : JSON.stringify(heard.trim().replace(/\s+/g, ' '))),
      );
    });

    it('rejects an unknown language clearly', async () => {
      await expect(synth(tts, 'Qapla', { language: 'tlh' })).rejects.toThrow(/no voice for language 'tlh'/);
    });
  });
}

describe.skipIf(!havePico)('TTS svoxpico specifics', () => {
  let tts: SvoxPicoTts;
  beforeAll(async () => {
    tts = new SvoxPicoTts({ voicesDir: picoDir });
    await tts.load();
  });
  afterAll(async () => {
    await tts?.close();
  });

  it('has the six voices and picks en-US for en, en-GB on request', async () => {
    expect([...tts.voices].sort()).toEqual(['de-DE', 'en-GB', 'en-US', 'es-ES', 'fr-FR', 'it-IT']);
    expect([...tts.languages].sort()).toEqual(['de', 'en', 'es', 'fr', 'it']);
    const us = await synth(tts, 'Good morning.', { language: 'en' });
    const usExplicit = await synth(tts, 'Good morning.', { language: 'en-US' });
    const gb = await synth(tts, 'Good morning.', { language: 'en', voice: 'en-GB' });
    const gbTag = await synth(tts, 'Good morning.', { language: 'en-GB' });
    // Durations are deterministic per voice and differ between the two English voices.
    expect(usExplicit.audio.length).toBe(us.audio.length);
    expect(gbTag.audio.length).toBe(gb.audio.length);
    expect(gb.audio.length).not.toBe(us.audio.length);
    for (const lang of ['es', 'it']) {
      expect(rmsDbfs((await synth(tts, 'Hola. Ciao.', { language: lang })).audio)).toBeGreaterThan(-40);
    }
  });

  it('serialises calls on one engine when the pool is capped, and abort while queued ends quietly', async () => {
    const one = new SvoxPicoTts({ voicesDir: picoDir, maxEnginesPerVoice: 1 });
    await one.load();
    try {
      const alone = await synth(one, SENTENCES.en, { language: 'en' });
      const queued = new AbortController();
      const [a, b, c] = await Promise.all([
        synth(one, SENTENCES.en, { language: 'en' }),
        synth(one, SENTENCES.en, { language: 'en' }),
        synth(one, SENTENCES.en, { language: 'en', signal: queued.signal }),
        Promise.resolve().then(() => queued.abort()),
      ]);
      expectSameUtterance(a.audio, alone.audio, true);
      expectSameUtterance(b.audio, alone.audio, true);
      expect(c.audio.length).toBe(0);
    } finally {
      await one.close();
    }
  });

  it('load() rejects with the directory name when voices are missing', async () => {
    const missing = path.join(tmpdir(), 'no-such-pico-dir');
    await expect(new SvoxPicoTts({ voicesDir: missing }).load()).rejects.toThrow(missing);
    const empty = mkdtempSync(path.join(tmpdir(), 'pico-empty-'));
    await expect(new SvoxPicoTts({ voicesDir: empty }).load()).rejects.toThrow(empty);
  });
});

describe('createTtsProvider', () => {
  const providers: TtsProvider[] = [];
  afterAll(async () => {
    await Promise.all(providers.map((p) => p.close?.()));
  });

  it("'auto' uses Pico where it has a voice and eSpeak for the rest", async () => {
    const tts = createTtsProvider({ provider: 'auto', voicesDir: picoDir }, silentLogger());
    providers.push(tts);
    expect(tts).toBeInstanceOf(CompositeTts);
    await tts.load();
    const composite = tts as CompositeTts;
    expect(composite.providerFor('en')?.name).toBe(havePico ? 'svoxpico' : 'espeak');
    expect(composite.providerFor('ru')?.name).toBe('espeak');
    expect(composite.providerFor('pt-BR')?.name).toBe('espeak');
    for (const lang of ['pt', 'nl', 'pl', 'sv', 'ru', 'ar', 'zh', 'ja']) expect(tts.languages).toContain(lang);
    const ru = await synth(tts, 'Здравствуйте, чем могу помочь?', { language: 'ru' });
    expect(rmsDbfs(ru.audio)).toBeGreaterThan(-40);
    expect(durationMs(ru.audio.length)).toBeGreaterThan(500);
    await expect(synth(tts, 'Qapla', { language: 'tlh' })).rejects.toThrow(/no TTS voice for language 'tlh'/);
  });

  it.skipIf(!havePico)('applies configured default voices per language', async () => {
    const tts = createTtsProvider({ provider: 'svoxpico', voicesDir: picoDir, voices: { en: 'en-GB' } }, silentLogger());
    providers.push(tts);
    await tts.load();
    const byConfig = await synth(tts, 'Good morning.', { language: 'en' });
    const gb = await synth(tts, 'Good morning.', { language: 'en', voice: 'en-GB' });
    const us = await synth(tts, 'Good morning.', { language: 'en', voice: 'en-US' });
    expect(byConfig.audio.length).toBe(gb.audio.length);
    expect(byConfig.audio.length).not.toBe(us.audio.length);
  });

  it("'auto' falls back to eSpeak alone when the Pico directory is missing", async () => {
    const tts = createTtsProvider({ provider: 'auto', voicesDir: path.join(tmpdir(), 'no-such-pico-dir') }, silentLogger());
    providers.push(tts);
    expect(tts.name).toBe('espeak');
  });

  it("'svoxpico' with a missing directory fails at load()", async () => {
    const missing = path.join(tmpdir(), 'no-such-pico-dir');
    const tts = createTtsProvider({ provider: 'svoxpico', voicesDir: missing, fallback: false }, silentLogger());
    providers.push(tts);
    await expect(tts.load()).rejects.toThrow(missing);
  });
});
