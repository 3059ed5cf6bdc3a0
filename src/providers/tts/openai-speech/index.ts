/**
 * Streaming TTS over the OpenAI-compatible `POST /v1/audio/speech`, as vLLM-Omni (Qwen3-TTS, Voxtral TTS),
 * Kokoro-FastAPI, Orpheus-FastAPI and OpenAI serve it.
 *
 * The request asks for raw PCM (`response_format: "pcm"`: 16-bit little-endian mono at the server's rate, which
 * the config declares: 24 kHz for Kokoro, Qwen3-TTS, Voxtral TTS, Orpheus) and a streamed answer (`stream: true`;
 * `stream_format: "audio"` where the server knows it, e.g. OpenAI). Audio is resampled to the internal 16 kHz
 * as bytes arrive, so the first chunk is yielded with the first bytes. A server that answers WAV anyway has its
 * header parsed (rate from it). Barge-in aborts the HTTP request. Before any audio, a connect error, 5xx or
 * timeout moves to the next URL (src/providers/backends.ts); after audio started, the error is thrown (replaying
 * would repeat words) and FallbackTts (tts/index.ts) or the session's `tts_failed` take over.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import type { Logger } from 'pino';
import { OPENAI_SPEECH_DEFAULTS, type OpenAiSpeechClientSettings } from './options.js';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { StreamingResampler } from '../../../audio/resample.js';
import { BackendPool, urlList, type BackendStrategy } from '../../backends.js';
import type { TtsOptions, TtsProvider } from '../types.js';

/** What the client takes of `providers.tts` with provider "openai-speech" (./options.ts), and a logger. */
export type OpenAiSpeechTtsOptions = OpenAiSpeechClientSettings & { logger?: Logger };

export class TtsHttpError extends Error {
  override readonly name = 'TtsHttpError';
  constructor(
    message: string,
    readonly status: number | undefined,
    /** Another server may do better (connect error, 5xx, 429, timeout). */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

function primaryTag(language: string): string {
  return language.trim().split(/[-_]/)[0].toLowerCase();
}

export class OpenAiSpeechTts implements TtsProvider {
  readonly name = 'openai-speech';
  readonly capabilities: ProviderCapabilities = { runsOn: ['server'], streaming: true };
  readonly languages: readonly string[];
  readonly backends: BackendPool;
  private readonly sampleRate: number;
  private readonly log: Logger | undefined;

  constructor(private readonly options: OpenAiSpeechTtsOptions) {
    const bases = urlList(options.baseUrl, options.baseUrls, 'openai-speech TTS: baseUrl');
    for (const b of bases) if (!/^https?:\/\//.test(b)) throw new Error(`openai-speech TTS: baseUrl must be http(s)://, got "${b}"`);
    if (!options.model) throw new Error('openai-speech TTS: model is required');
    if (Object.keys(options.voices ?? {}).length === 0) throw new Error('openai-speech TTS: voices (a voice per language) is required');
    this.languages = [...new Set(Object.keys(options.voices).map(primaryTag))];
    this.sampleRate = options.sampleRate ?? OPENAI_SPEECH_DEFAULTS.sampleRate;
    this.log = options.logger?.child({ provider: 'tts-openai-speech' });
    this.backends = new BackendPool({
      stage: 'tts',
      urls: bases.map((b) => `${b.replace(/\/+$/, '')}/audio/speech`),
      strategy: options.failover?.strategy,
      downMs: options.failover?.downMs,
      logger: this.log,
    });
  }

  /** No probe (it would cost a synthesis at every boot); the resampler's WASM is compiled now, not on the first reply. */
  async load(): Promise<void> {
    (await StreamingResampler.create(this.sampleRate, INTERNAL_SAMPLE_RATE, { timing: 'aligned' })).destroy();
    this.log?.info({ urls: this.backends.urls, model: this.options.model, sampleRate: this.sampleRate }, 'remote TTS configured');
  }

  /** False while every server is marked down: a fallback can speak at once instead of waiting on them. */
  get healthy(): boolean {
    return this.backends.anyUp();
  }

  async *synthesize(text: string, options: TtsOptions): AsyncGenerator<Int16Array> {
    const voice = options.voice ?? this.options.voices[options.language] ?? this.options.voices[primaryTag(options.language)];
    if (!voice) throw new TtsHttpError(`openai-speech TTS: no voice for language '${options.language}'`, undefined, false);
    const body: Record<string, unknown> = { model: this.options.model, input: text, voice, response_format: 'pcm', stream: true };
    if (this.options.streamFormat) body.stream_format = this.options.streamFormat;
    if (this.options.speed !== undefined) body.speed = this.options.speed;
    const payload = JSON.stringify(body);
    const outer = options.signal;
    let last: TtsHttpError | undefined;

    for (const url of this.backends.candidates()) {
      if (outer?.aborted) return;
      this.backends.started(url);
      let produced = false;
      try {
        for await (const chunk of this.attempt(url, payload, outer)) {
          produced = true;
          yield chunk;
        }
        if (!outer?.aborted) this.backends.succeeded(url);
        return;
      } catch (err) {
        if (outer?.aborted) return;
        const e = err instanceof TtsHttpError ? err : new TtsHttpError(`TTS at ${url}: ${(err as Error).message}`, undefined, true);
        if (e.retryable) this.backends.failed(url, e.message);
        if (produced) throw new TtsHttpError(`${e.message} (mid-reply, after audio started)`, e.status, false);
        if (!e.retryable) throw e;
        last = e;
      }
    }
    throw last ?? new TtsHttpError('openai-speech TTS: no server', undefined, true);
  }

  /** One request: yields 16 kHz PCM as the server's bytes arrive. */
  private async *attempt(url: string, payload: string, outer: AbortSignal | undefined): AsyncGenerator<Int16Array> {
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(outer?.reason);
    outer?.addEventListener('abort', onAbort, { once: true });
    let timedOut: TtsHttpError | undefined;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number, what: string): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = new TtsHttpError(`TTS at ${url}: no audio for ${ms} ms (${what})`, undefined, true);
        ctl.abort(timedOut);
      }, ms);
    };
    let resampler: StreamingResampler | undefined;
    try {
      arm(this.options.timeoutMs ?? OPENAI_SPEECH_DEFAULTS.timeoutMs, 'first byte');
      let res: Response;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}) },
          body: payload,
          signal: ctl.signal,
        });
      } catch (err) {
        throw timedOut ?? new TtsHttpError(`TTS at ${url} failed: ${describe(err)}`, undefined, true);
      }
      if (!res.ok) {
        const detail = (await res.text().catch(() => '')).replace(/\s+/g, ' ').slice(0, 300);
        throw new TtsHttpError(`TTS at ${url}: HTTP ${res.status} ${detail}`, res.status, res.status === 429 || res.status >= 500);
      }
      if (!res.body) throw new TtsHttpError(`TTS at ${url}: empty answer`, res.status, true);
      const pcm = new PcmDecoder(this.sampleRate);
      const reader = res.body.getReader();
      try {
        for (;;) {
          let step: Awaited<ReturnType<typeof reader.read>>;
          try {
            step = await reader.read();
          } catch (err) {
            throw timedOut ?? new TtsHttpError(`TTS at ${url}: stream broke: ${describe(err)}`, undefined, true);
          }
          if (step.done) break;
          arm(this.options.idleTimeoutMs ?? OPENAI_SPEECH_DEFAULTS.idleTimeoutMs, 'stalled');
          const samples = pcm.push(step.value);
          if (samples.length === 0) continue;
          resampler ??= await StreamingResampler.create(pcm.rate, INTERNAL_SAMPLE_RATE, { timing: 'aligned' });
          const out = resampler.process(samples);
          if (out.length > 0) yield out;
        }
      } finally {
        reader.releaseLock();
      }
      if (resampler) {
        const tail = resampler.flush();
        if (tail.length > 0) yield tail;
      }
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
      ctl.abort(); // the consumer stopped (barge-in) or we are done: release the connection
      resampler?.destroy();
    }
  }
}

/**
 * Bytes → PCM16 samples across chunk borders (a chunk may end mid-sample). A WAV header, from a server that
 * ignores `response_format: "pcm"`, is skipped and its sample rate used.
 */
class PcmDecoder {
  private carry: Uint8Array = new Uint8Array(0);
  private started = false;

  constructor(public rate: number) {}

  push(bytes: Uint8Array): Int16Array {
    let data = this.carry.length > 0 ? concat(this.carry, bytes) : bytes;
    if (!this.started) {
      if (data.length < 44 && ascii(data, 0, Math.min(4, data.length)) === 'RIFF'.slice(0, Math.min(4, data.length))) {
        this.carry = data; // wait for the whole header
        return new Int16Array(0);
      }
      this.started = true;
      if (ascii(data, 0, 4) === 'RIFF' && ascii(data, 8, 4) === 'WAVE') data = this.skipWavHeader(data);
    }
    const whole = data.length - (data.length % 2);
    this.carry = data.slice(whole);
    const samples = new Int16Array(whole / 2);
    const view = new DataView(data.buffer, data.byteOffset, whole);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true);
    return samples;
  }

  private skipWavHeader(data: Uint8Array): Uint8Array {
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    let off = 12;
    while (off + 8 <= data.length) {
      const id = ascii(data, off, 4);
      const size = view.getUint32(off + 4, true);
      if (id === 'fmt ' && off + 16 <= data.length) this.rate = view.getUint32(off + 12, true);
      if (id === 'data') return data.subarray(off + 8);
      off += 8 + size + (size % 2);
    }
    return data.subarray(Math.min(44, data.length));
  }
}

function ascii(data: Uint8Array, at: number, n: number): string {
  return String.fromCharCode(...data.subarray(at, at + n));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return [(err as Error).message ?? String(err), cause?.code ?? cause?.message].filter(Boolean).join(': ');
}
