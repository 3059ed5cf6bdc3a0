import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { PocketSphinxAsr, type PocketSphinxStream } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrFinal, AsrPartial } from '../src/providers/asr/types.js';

function hasTool(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const available =
  hasTool('espeak-ng') &&
  hasTool('sox') &&
  existsSync('/usr/share/pocketsphinx/model/en-us/en-us.lm.bin') &&
  ['/usr/lib/x86_64-linux-gnu/libpocketsphinx.so.3', '/usr/lib/aarch64-linux-gnu/libpocketsphinx.so.3'].some(
    (p) => existsSync(p),
  );

/**
 * espeak-ng speech is far from what the generic en-us model was trained on, so each sentence
 * asserts only the key words pocketsphinx reliably gets (checked against its actual output).
 * Live CMN starts from the model's -cmninit and adapts at each utterance end, so a fresh
 * decoder's first utterance is the weakest: tests that may get a fresh decoder use `help` or
 * `hospital`, which decode well either way; `manager` and `tomorrow` only after adaptation.
 */
const SENTENCES = {
  help: { text: 'can you help me please', keys: ['can', 'you', 'help', 'me', 'please'], min: 4 },
  hospital: { text: 'where is the nearest hospital', keys: ['where', 'nearest', 'hospital'], min: 2 },
  table: {
    text: 'I would like to book a table for two',
    keys: ['would', 'like', 'book', 'table', 'two'],
    min: 3,
  },
  manager: { text: 'I need to speak to a manager', keys: ['need', 'speak', 'manager'], min: 2 },
  tomorrow: {
    text: 'please call me back tomorrow morning',
    keys: ['call', 'back', 'tomorrow', 'morning'],
    min: 2,
  },
} as const;
type SentenceId = keyof typeof SENTENCES;

function keyHits(text: string, keys: readonly string[]): number {
  const words = new Set(text.toLowerCase().split(/\s+/));
  return keys.filter((k) => words.has(k)).length;
}

/** Samples of the `data` chunk of a PCM16 mono WAV. */
function readWavPcm16(file: string): Int16Array {
  const buf = readFileSync(file);
  expect(buf.toString('ascii', 0, 4)).toBe('RIFF');
  let offset = 12;
  while (offset + 8 <= buf.length) {
    const id = buf.toString('ascii', offset, offset + 4);
    const size = buf.readUInt32LE(offset + 4);
    if (id === 'fmt ') {
      expect(buf.readUInt16LE(offset + 10)).toBe(1); // mono
      expect(buf.readUInt32LE(offset + 12)).toBe(INTERNAL_SAMPLE_RATE);
      expect(buf.readUInt16LE(offset + 22)).toBe(16);
    }
    if (id === 'data') {
      const bytes = buf.subarray(offset + 8, offset + 8 + Math.min(size, buf.length - offset - 8));
      // Copy into an aligned buffer.
      return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + (bytes.length & ~1)));
    }
    offset += 8 + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

function* frames(pcm: Int16Array): Generator<Int16Array> {
  for (let o = 0; o < pcm.length; o += FRAME_SAMPLES) yield pcm.subarray(o, o + FRAME_SAMPLES);
}

describe.skipIf(!available)('PocketSphinxAsr (real audio)', () => {
  let dir: string;
  const audio = new Map<SentenceId, Int16Array>();
  let asr: PocketSphinxAsr;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'asr-ps-'));
    for (const [id, s] of Object.entries(SENTENCES) as Array<[SentenceId, (typeof SENTENCES)[SentenceId]]>) {
      const raw = path.join(dir, `${id}.raw.wav`);
      const wav = path.join(dir, `${id}.wav`);
      execFileSync('espeak-ng', ['-v', 'en-us', '-s', '150', '-w', raw, s.text]);
      // 16 kHz mono PCM16 plus a little silence either side, as a VAD segment would have.
      execFileSync('sox', [raw, '-r', '16000', '-c', '1', '-b', '16', wav, 'pad', '0.2', '0.3']);
      audio.set(id, readWavPcm16(wav));
    }
    asr = new PocketSphinxAsr({ spareDecoders: 2 });
    const t0 = performance.now();
    await asr.load();
    console.log(`[pocketsphinx] load ${(performance.now() - t0).toFixed(0)} ms`);
  });

  afterAll(async () => {
    await asr?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function pcmOf(id: SentenceId): Int16Array {
    const pcm = audio.get(id);
    if (!pcm) throw new Error(`no audio for ${id}`);
    return pcm;
  }

  /** A spare decoder is built in the background after each take; wait so creation stays cheap. */
  async function whenSpareReady(): Promise<void> {
    for (let i = 0; i < 200 && asr.poolStats.idle === 0; i++) await sleep(25);
  }

  async function createTimed(onPartial?: (p: AsrPartial) => void): Promise<PocketSphinxStream> {
    await whenSpareReady();
    const t0 = performance.now();
    const stream = asr.createStream({ language: 'en', onPartial });
    const ms = performance.now() - t0;
    console.log(`[pocketsphinx] createStream ${ms.toFixed(2)} ms`);
    expect(ms).toBeLessThan(20);
    return stream;
  }

  it('transcribes several utterances on one stream, with partials before each final', async () => {
    const events: Array<{ kind: 'partial' | 'final'; text: string }> = [];
    const stream = await createTimed((p) => {
      expect(p.language).toBe('en');
      events.push({ kind: 'partial', text: p.text });
    });

    // Measure decoding alone, not the spare decoder being built in the background.
    await whenSpareReady();
    let totalHits = 0;
    let totalKeys = 0;
    // The same audio on the same decoder sequence is, now and then, decoded to one other hypothesis (seen in about
    // 1 of 10 runs of this file on a busy 2-core machine, on both sides of unrelated changes: "where is the nearest
    // hospital" => "where is not your response to the old"); the cause inside PocketSphinx is not found. One
    // sentence under its floor is tolerated; the streaming checks below hold for every sentence.
    const sentencesUnderFloor: string[] = [];
    for (const id of ['help', 'hospital', 'table', 'manager', 'tomorrow'] as const) {
      const pcm = pcmOf(id);
      events.length = 0;
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      for (const frame of frames(pcm)) stream.push(frame);
      await stream.idle();
      const decodeMs = performance.now() - t0;
      // Process-wide (all threads) CPU time: the decode cost, unaffected by other load on the box.
      const cpu = process.cpuUsage(cpu0);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      const t1 = performance.now();
      const final: AsrFinal = await stream.finalize();
      const finalizeMs = performance.now() - t1;
      events.push({ kind: 'final', text: final.text });

      const audioMs = (pcm.length * 1000) / INTERNAL_SAMPLE_RATE;
      const s = SENTENCES[id];
      const hits = keyHits(final.text, s.keys);
      totalHits += hits;
      totalKeys += s.keys.length;
      console.log(
        `[pocketsphinx] "${s.text}" => "${final.text}" (${hits}/${s.keys.length} keys) ` +
          `RTF ${(decodeMs / audioMs).toFixed(3)} (CPU ${(cpuMs / audioMs).toFixed(3)}) ` +
          `finalize ${finalizeMs.toFixed(1)} ms`,
      );

      expect(final.language).toBe('en');
      expect(final.audioMs).toBeCloseTo(audioMs, 0);
      if (hits < s.min) sentencesUnderFloor.push(`"${s.text}" => "${final.text}"`);
      // Well under real time when the box is quiet (~0.3); the bound is loose because wall time
      // on a shared 2-core CI box swings a lot. finalize only closes the search.
      expect(cpuMs / audioMs).toBeLessThan(1);
      expect(decodeMs / audioMs).toBeLessThan(3);
      expect(finalizeMs).toBeLessThan(500);

      const partials = events.filter((e) => e.kind === 'partial');
      expect(partials.length).toBeGreaterThan(0);
      expect(events.at(-1)?.kind).toBe('final');
      // Consecutive partials are distinct: only changes are reported.
      for (let i = 1; i < partials.length; i++) expect(partials[i].text).not.toBe(partials[i - 1].text);

      // Word times are utterance-relative and ordered.
      expect(final.words?.length ?? 0).toBeGreaterThan(0);
      let prevEnd = 0;
      for (const w of final.words ?? []) {
        expect(w.startMs).toBeGreaterThanOrEqual(prevEnd);
        expect(w.endMs).toBeGreaterThan(w.startMs);
        expect(w.endMs).toBeLessThanOrEqual(audioMs + 20);
        prevEnd = w.startMs;
      }
      expect(final.words?.map((w) => w.word).join(' ')).toBe(final.text);
    }
    expect(sentencesUnderFloor.length, sentencesUnderFloor.join('; ')).toBeLessThanOrEqual(1);
    expect(totalHits / totalKeys).toBeGreaterThanOrEqual(0.6);
    stream.close();
    await stream.idle();
  });

  it('measures finalize latency with audio pushed in real time', async () => {
    const partials: string[] = [];
    const stream = await createTimed((p) => partials.push(p.text));
    await whenSpareReady();
    const pcm = pcmOf('help');
    const t0 = performance.now();
    let n = 0;
    for (const frame of frames(pcm)) {
      stream.push(frame);
      n++;
      // Pace to the wall clock like a live call (20 ms per frame).
      const due = t0 + n * 20 - performance.now();
      if (due > 0) await sleep(due);
    }
    const backlogMs = stream.backlogMs;
    const t1 = performance.now();
    const final = await stream.finalize();
    const finalizeMs = performance.now() - t1;
    console.log(
      `[pocketsphinx] real-time paced: finalize ${finalizeMs.toFixed(1)} ms ` +
        `(undecoded backlog at endpoint ${backlogMs.toFixed(0)} ms), ${partials.length} partials`,
    );
    expect(keyHits(final.text, SENTENCES.help.keys)).toBeGreaterThanOrEqual(SENTENCES.help.min);
    expect(partials.length).toBeGreaterThan(0);
    // Beyond any backlog a starved CPU left behind, finalize only closes the search.
    expect(finalizeMs).toBeLessThan(300 + 3 * backlogMs);
    stream.close();
    await stream.idle();
  });

  it('decodes two concurrent streams independently without blocking the event loop', async () => {
    const a = await createTimed();
    const b = await createTimed();
    const pa = pcmOf('hospital');
    const pb = pcmOf('help');
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    const t0 = performance.now();
    // Interleave frames as two live calls would.
    for (let o = 0; o < Math.max(pa.length, pb.length); o += FRAME_SAMPLES) {
      if (o < pa.length) a.push(pa.subarray(o, o + FRAME_SAMPLES));
      if (o < pb.length) b.push(pb.subarray(o, o + FRAME_SAMPLES));
    }
    const [fa, fb] = await Promise.all([a.finalize(), b.finalize()]);
    const wallMs = performance.now() - t0;
    loop.disable();
    const maxLagMs = loop.max / 1e6;
    console.log(
      `[pocketsphinx] concurrent: "${fa.text}" | "${fb.text}" in ${wallMs.toFixed(0)} ms ` +
        `(audio ${(((pa.length + pb.length) * 1000) / INTERNAL_SAMPLE_RATE).toFixed(0)} ms), ` +
        `max event-loop lag ${maxLagMs.toFixed(1)} ms`,
    );

    expect(keyHits(fa.text, SENTENCES.hospital.keys)).toBeGreaterThanOrEqual(SENTENCES.hospital.min);
    expect(keyHits(fb.text, SENTENCES.help.keys)).toBeGreaterThanOrEqual(SENTENCES.help.min);
    expect(fa.text).not.toMatch(/\bhelp\b/);
    expect(fb.text).not.toMatch(/\bhospital\b/);
    expect(fa.audioMs).toBeCloseTo((pa.length * 1000) / INTERNAL_SAMPLE_RATE, 0);
    expect(fb.audioMs).toBeCloseTo((pb.length * 1000) / INTERNAL_SAMPLE_RATE, 0);
    // A synchronous decode of this much audio would stall the loop for hundreds of ms.
    expect(maxLagMs).toBeLessThan(150);
    a.close();
    b.close();
    await Promise.all([a.idle(), b.idle()]);
  });

  it('cancel drops the utterance: finalize returns empty text and the stream stays usable', async () => {
    const partials: string[] = [];
    const stream = await createTimed((p) => partials.push(p.text));
    for (const frame of frames(pcmOf('table'))) stream.push(frame);
    stream.cancel();
    const empty = await stream.finalize();
    expect(empty.text).toBe('');
    expect(empty.audioMs).toBe(0);
    expect(empty.words ?? []).toEqual([]);

    // Cancel in the middle of decoding (some audio already processed, some still queued).
    const pcm = pcmOf('table');
    for (const frame of frames(pcm.subarray(0, pcm.length >> 1))) stream.push(frame);
    await sleep(50);
    for (const frame of frames(pcm.subarray(pcm.length >> 1))) stream.push(frame);
    stream.cancel();
    expect((await stream.finalize()).text).toBe('');

    // Still usable. The cancelled half-utterance did update live CMN (ps_end_utt always does),
    // which skews the next utterance of this synthetic voice, so only its independence is checked.
    const hospital = pcmOf('hospital');
    for (const frame of frames(hospital)) stream.push(frame);
    const next = await stream.finalize();
    expect(next.text).not.toBe('');
    expect(next.text).not.toMatch(/\b(table|book)\b/);
    expect(next.audioMs).toBeCloseTo((hospital.length * 1000) / INTERNAL_SAMPLE_RATE, 0);
    for (const frame of frames(pcmOf('help'))) stream.push(frame);
    const after = await stream.finalize();
    expect(keyHits(after.text, SENTENCES.help.keys)).toBeGreaterThanOrEqual(SENTENCES.help.min);
    stream.close();
    await stream.idle();
  });

  it('close is idempotent, later calls are no-ops, and the decoder goes back to the pool', async () => {
    const stream = await createTimed();
    const leased = asr.poolStats.leased;
    for (const frame of frames(pcmOf('help'))) stream.push(frame);
    const pending = stream.finalize();
    stream.close();
    stream.close();
    // A finalize requested before close still completes.
    expect(keyHits((await pending).text, SENTENCES.help.keys)).toBeGreaterThanOrEqual(SENTENCES.help.min);
    expect(() => stream.push(pcmOf('help').subarray(0, FRAME_SAMPLES))).not.toThrow();
    expect(() => stream.cancel()).not.toThrow();
    await expect(stream.finalize()).resolves.toEqual({ text: '', language: 'en', audioMs: 0 });
    await stream.idle();
    expect(asr.poolStats.leased).toBe(leased - 1);

    // Closing mid-utterance with audio still queued.
    const other = await createTimed();
    for (const frame of frames(pcmOf('table'))) other.push(frame);
    other.close();
    other.close();
    await other.idle();
    expect(asr.poolStats.leased).toBe(leased - 1);
  });

  it('a stream created with no spare decoder waits for one and still decodes', async () => {
    const local = new PocketSphinxAsr({ spareDecoders: 1, maxIdleDecoders: 0 });
    await local.load();
    try {
      const first = local.createStream({});
      const second = local.createStream({}); // no spare yet: waits for the one being built
      for (const frame of frames(pcmOf('help'))) second.push(frame);
      const final = await second.finalize();
      expect(keyHits(final.text, SENTENCES.help.keys)).toBeGreaterThanOrEqual(SENTENCES.help.min);
      first.close();
      second.close();
    } finally {
      await local.close();
    }
    // After the provider closes, stream creation fails loudly instead of crashing natively.
    expect(() => local.createStream({})).toThrow();
  });
});
