/**
 * Final-only ASR over the batch OpenAI-compatible `POST /v1/audio/transcriptions` (vLLM serving Voxtral Mini /
 * Small or Whisper, whisper.cpp's server, speaches, a hosted endpoint; or this service's asr-server mode).
 *
 * The utterance is buffered while the caller speaks and sent as one multipart WAV at finalize(). This is the one
 * ASR path where a re-decode is inherent: the server sees the audio only at the endpoint, so the ASR final costs
 * upload + a full decode of the utterance (on a GPU Whisper large-v3-turbo, typically 50–300 ms for a few
 * seconds of speech, growing with its length) instead of the few ms a streaming backend needs. There are no
 * partials. Prefer `vllm-realtime` where the server offers it.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import type { Logger } from 'pino';
import { OPENAI_BATCH_DEFAULTS, type OpenAiBatchSettings } from './options.js';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { encodeWav } from '../../../audio/wav.js';
import type { AsrFinal, AsrProvider, AsrStream, AsrStreamOptions } from '../types.js';

/** The options `providers.asr` declares for provider "openai-batch" (./options.ts), and a logger. */
export type OpenAiBatchAsrOptions = Omit<OpenAiBatchSettings, 'languages'> & { languages?: readonly string[]; logger?: Logger };

export class AsrHttpError extends Error {
  override readonly name = 'AsrHttpError';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** The longest utterance kept (2 minutes); beyond it the oldest audio is dropped, with a warning. */
const MAX_UTTERANCE_SAMPLES = INTERNAL_SAMPLE_RATE * 120;

/** Whisper's verbose_json reports language names ("english"); map the common ones back to tags. */
const LANGUAGE_NAMES: Record<string, string> = {
  english: 'en', french: 'fr', german: 'de', spanish: 'es', italian: 'it', portuguese: 'pt', dutch: 'nl',
  russian: 'ru', chinese: 'zh', japanese: 'ja', korean: 'ko', arabic: 'ar', hindi: 'hi', polish: 'pl', turkish: 'tr',
};

export class OpenAiBatchAsr implements AsrProvider {
  readonly name = 'openai-batch';
  // The utterance is sent whole at its end: no partials.
  readonly capabilities: ProviderCapabilities = { runsOn: ['server'], streaming: false };
  readonly languages: readonly string[];
  readonly endpoint: string;
  private readonly options: OpenAiBatchAsrOptions;
  private readonly logger: Logger | undefined;
  private responseFormat: 'json' | 'verbose_json';

  constructor(options: OpenAiBatchAsrOptions) {
    if (!/^https?:\/\//.test(options.baseUrl)) throw new Error(`openai-batch: baseUrl must be http(s)://, got "${options.baseUrl}"`);
    if (!options.model) throw new Error('openai-batch: model is required');
    this.options = options;
    this.languages = options.languages ?? ['*'];
    this.endpoint = `${options.baseUrl.replace(/\/+$/, '')}/audio/transcriptions`;
    this.logger = options.logger?.child({ provider: 'asr-openai-batch' });
    this.responseFormat = options.responseFormat ?? OPENAI_BATCH_DEFAULTS.responseFormat;
    if (this.responseFormat === 'verbose_json' && /voxtral/i.test(options.model)) {
      this.logger?.warn({ model: options.model }, "verbose_json is refused by vLLM for Voxtral (no segment timestamps): asking for 'json'");
      this.responseFormat = 'json';
    }
  }

  /** Nothing to load; the server is checked by the first request (a GET /models probe is not universal). */
  async load(): Promise<void> {
    this.logger?.info({ endpoint: this.endpoint, model: this.options.model }, 'batch transcription endpoint configured');
  }

  createStream(options: AsrStreamOptions = {}): AsrStream {
    return new OpenAiBatchStream(this, options, this.logger);
  }

  /** One transcription request with timeout and retries. */
  async transcribe(samples: Int16Array, language: string | undefined, signal: AbortSignal): Promise<{ text: string; language?: string }> {
    const retries = this.options.retries ?? OPENAI_BATCH_DEFAULTS.retries;
    let lastError: AsrHttpError | undefined;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)));
      if (signal.aborted) throw new AsrHttpError('transcription cancelled', undefined, false);
      try {
        return await this.attempt(samples, language, signal);
      } catch (err) {
        lastError = err instanceof AsrHttpError ? err : new AsrHttpError(String(err), undefined, false);
        if (lastError.status === 400 && this.responseFormat === 'verbose_json' && /verbose_json|timestamp/i.test(lastError.message)) {
          this.logger?.warn({ err: lastError.message }, "server refuses verbose_json: asking for 'json' from now on");
          this.responseFormat = 'json';
          attempt--;
          continue;
        }
        if (!lastError.retryable || signal.aborted) throw lastError;
        this.logger?.warn({ attempt: attempt + 1, err: lastError.message }, 'transcription request failed; retrying');
      }
    }
    throw lastError ?? new AsrHttpError('transcription failed', undefined, false);
  }

  private async attempt(samples: Int16Array, language: string | undefined, outer: AbortSignal): Promise<{ text: string; language?: string }> {
    const form = new FormData();
    const wav = encodeWav(samples, INTERNAL_SAMPLE_RATE);
    form.append('file', new Blob([wav], { type: 'audio/wav' }), 'utterance.wav');
    form.append('model', this.options.model);
    form.append('response_format', this.responseFormat);
    form.append('temperature', '0');
    if (language) form.append('language', language);
    const timeoutMs = this.options.timeoutMs ?? OPENAI_BATCH_DEFAULTS.timeoutMs;
    const signal = AbortSignal.any([outer, AbortSignal.timeout(timeoutMs)]);
    let res: Response;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        body: form,
        headers: this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {},
        signal,
      });
    } catch (err) {
      if (outer.aborted) throw new AsrHttpError('transcription cancelled', undefined, false);
      const timedOut = (err as Error).name === 'TimeoutError' || signal.aborted;
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new AsrHttpError(
        timedOut ? `transcription at ${this.endpoint} timed out after ${timeoutMs} ms` : `transcription at ${this.endpoint} failed: ${(err as Error).message}${cause ? ` (${cause})` : ''}`,
        undefined,
        true,
      );
    }
    const body = await res.text().catch(() => '');
    if (!res.ok) {
      const retryable = res.status === 429 || res.status >= 500;
      throw new AsrHttpError(`transcription at ${this.endpoint}: HTTP ${res.status} ${body.slice(0, 200)}`, res.status, retryable);
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      throw new AsrHttpError(`transcription at ${this.endpoint}: answer is not JSON: ${body.slice(0, 120)}`, res.status, false);
    }
    const rec = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
    if (typeof rec.text !== 'string') throw new AsrHttpError(`transcription at ${this.endpoint}: answer has no "text"`, res.status, false);
    const lang = typeof rec.language === 'string' ? (LANGUAGE_NAMES[rec.language.toLowerCase()] ?? rec.language.toLowerCase()) : undefined;
    return { text: rec.text, ...(lang ? { language: lang } : {}) };
  }
}

class OpenAiBatchStream implements AsrStream {
  private parts: Int16Array[] = [];
  private samples = 0;
  private closed = false;
  private readonly aborter = new AbortController();
  private readonly language: string | undefined;

  constructor(
    private readonly provider: OpenAiBatchAsr,
    options: AsrStreamOptions,
    private readonly logger: Logger | undefined,
  ) {
    const primary = options.language?.toLowerCase().split(/[-_]/)[0];
    this.language = primary && (provider.languages.includes(primary) || provider.languages.includes('*')) ? primary : undefined;
  }

  push(pcm: Int16Array): void {
    if (this.closed || pcm.length === 0) return;
    this.parts.push(pcm.slice());
    this.samples += pcm.length;
    while (this.samples > MAX_UTTERANCE_SAMPLES && this.parts.length > 1) {
      this.samples -= this.parts.shift()?.length ?? 0;
      this.logger?.warn('utterance over 2 minutes: dropping its oldest audio');
    }
  }

  async finalize(): Promise<AsrFinal> {
    const parts = this.parts;
    const samples = this.samples;
    this.parts = [];
    this.samples = 0;
    // The language asked for (the server decodes in it), else what the server detected, else none: never a guess.
    const language = this.language ?? '';
    if (this.closed || samples === 0) return { text: '', language, audioMs: 0 };
    const pcm = new Int16Array(samples);
    let off = 0;
    for (const p of parts) {
      pcm.set(p, off);
      off += p.length;
    }
    const result = await this.provider.transcribe(pcm, this.language, this.aborter.signal);
    return { text: result.text.replace(/\s+/g, ' ').trim(), language: result.language ?? language, audioMs: (samples * 1000) / INTERNAL_SAMPLE_RATE };
  }

  cancel(): void {
    this.parts = [];
    this.samples = 0;
  }

  close(): void {
    this.closed = true;
    this.parts = [];
    this.samples = 0;
    this.aborter.abort();
  }
}
