import { parseArgs } from 'node:util';
import { writeWav } from '../src/audio/wav.js';
import { SvoxPicoTts, defaultPicoVoicesDir, findPicoVoices } from '../src/providers/tts/svoxpico/index.js';
import { EspeakTts } from '../src/providers/tts/espeak/index.js';
import type { TtsProvider } from '../src/providers/tts/types.js';

/**
 * Writes caller speech for load tests: npm run make-speech -- --text "What time is it?" --out FILE.wav
 * [--voice en-GB] [--engine pico|espeak]. 16 kHz mono PCM16 with 300 ms of silence on each side.
 */
const { values } = parseArgs({
  options: {
    text: { type: 'string' },
    out: { type: 'string' },
    voice: { type: 'string', default: 'en-GB' },
    // Pico when its voices are installed (npm run setup copies them when it can), eSpeak NG otherwise.
    engine: { type: 'string', default: findPicoVoices(defaultPicoVoicesDir()).length > 0 ? 'pico' : 'espeak' },
  },
});
if (!values.text || !values.out) {
  console.error('usage: npm run make-speech -- --text "What time is it?" --out FILE.wav [--voice en-GB] [--engine pico|espeak]');
  process.exit(2);
}
const tts: TtsProvider = values.engine === 'espeak' ? new EspeakTts({}) : new SvoxPicoTts({});
// eSpeak names voices by language ("en-us"), Pico by locale ("en-GB").
if (values.engine === 'espeak' && values.voice === 'en-GB') values.voice = 'en-us';
await tts.load();
const parts: Int16Array[] = [];
for await (const chunk of tts.synthesize(values.text, { language: values.voice!.slice(0, 2), voice: values.voice })) parts.push(chunk);
const pad = 4800;
const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0) + 2 * pad);
let offset = pad;
for (const p of parts) {
  out.set(p, offset);
  offset += p.length;
}
await writeWav(values.out, out, 16000);
console.log(`wrote ${values.out}: ${(out.length / 16000).toFixed(2)} s`);
await tts.close?.();
process.exit(0);
