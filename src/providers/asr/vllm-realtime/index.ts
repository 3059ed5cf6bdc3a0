/**
 * Streaming ASR over vLLM's realtime WebSocket (`/v1/realtime`), as vLLM serves Voxtral Mini 4B Realtime 2602,
 * and as this service's own `asr-server` mode serves its embedded ASR (src/asr-server.ts).
 *
 * Wire protocol, from vLLM's source (vllm-project/vllm):
 * - vllm/entrypoints/openai/realtime/protocol.py: client events `session.update {model, language?, temperature?}`,
 *   `input_audio_buffer.append {audio: base64 PCM16}`, `input_audio_buffer.commit {final?: bool}`; server events
 *   `session.created {id, created}`, `transcription.delta {delta}`, `transcription.done {text, usage}`,
 *   `error {error, code}`.
 * - vllm/entrypoints/openai/realtime/connection.py (RealtimeConnection.handle_event): a commit needs a prior
 *   session.update naming the model ("model_not_validated" otherwise); a plain commit *starts* a generation over
 *   the queued audio, `commit {final: true}` ends the audio stream; only one generation runs per connection
 *   ("Generation already in progress, ignoring commit"), and after `transcription.done` the server clears its
 *   audio queue for the next utterance.
 * - examples/online_serving/openai_realtime_client.py: audio is PCM16 mono at 16 kHz, the internal format here.
 *
 * So each utterance is: commit → appends → commit{final} → deltas … done, strictly one after the other on one
 * WebSocket per stream (per call). Audio of the next utterance that arrives while the previous one's `done` is
 * still pending is held here and sent after it (sending it earlier would be wiped by the server's queue clear).
 * vLLM's `done` carries no language; this service's asr-server adds `language` (ignored by vLLM clients), else
 * the stream's requested language is reported.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import type { AsrFinal, AsrProvider, AsrStream, AsrStreamOptions } from '../types.js';

/** Voxtral Mini 4B Realtime 2602's languages (its model card). */
export const VOXTRAL_REALTIME_LANGUAGES = ['en', 'zh', 'hi', 'es', 'ar', 'fr', 'pt', 'ru', 'de', 'ja', 'ko', 'it', 'nl'] as const;

export interface VllmRealtimeAsrOptions {
  /** e.g. "ws://gpu-host:8000/v1/realtime". */
  url: string;
  /** Served model name sent in session.update, e.g. "mistralai/Voxtral-Mini-4B-Realtime-2602". */
  model: string;
  /** Sent as "Authorization: Bearer …" (vLLM's --api-key, or this service's API key in asr-server mode). */
  apiKey?: string;
  /** Languages the served model recognises (default: Voxtral's 13); "*" for any. */
  languages?: readonly string[];
  /** WebSocket open + session.created (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Final commit → transcription.done (default 5000 ms). */
  finalTimeoutMs?: number;
  logger?: Logger;
}

export class AsrConnectionError extends Error {
  override readonly name = 'AsrConnectionError';
}

/** Server error events: what vLLM said, with its code. */
export class AsrServerError extends Error {
  override readonly name = 'AsrServerError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** Audio held for an utterance that cannot be sent yet is capped (the caller is far ahead of the server). */
const MAX_HELD_SAMPLES = INTERNAL_SAMPLE_RATE * 30;
/** Appends are batched up to this much audio (one 20 ms frame normally; more when catching up). */
const MAX_APPEND_SAMPLES = INTERNAL_SAMPLE_RATE / 5;
/** A failed connection is not retried sooner than this (each new utterance may retry). */
const RECONNECT_MIN_INTERVAL_MS = 1000;

export class VllmRealtimeAsr implements AsrProvider {
  readonly name = 'vllm-realtime';
  readonly languages: readonly string[];
  private readonly options: VllmRealtimeAsrOptions;
  private readonly logger: Logger | undefined;

  constructor(options: VllmRealtimeAsrOptions) {
    if (!/^wss?:\/\//.test(options.url)) throw new Error(`vllm-realtime: url must be ws:// or wss://, got "${options.url}"`);
    if (!options.model) throw new Error('vllm-realtime: model is required');
    this.options = options;
    this.languages = options.languages ?? VOXTRAL_REALTIME_LANGUAGES;
    this.logger = options.logger?.child({ provider: 'asr-vllm-realtime' });
  }

  /**
   * Opens one session to check the server is there and speaks the protocol, then asks `GET /v1/models` (served
   * by vLLM's OpenAI server next to /v1/realtime) whether the model is served: vLLM acknowledges session.update
   * only with an error, and only at the first commit.
   */
  async load(): Promise<void> {
    const t0 = performance.now();
    const { socket, sessionId } = await openSession(this.options, this.logger);
    socket.close(1000);
    await this.checkModel();
    this.logger?.info({ url: this.options.url, model: this.options.model, sessionId, ms: Math.round(performance.now() - t0) }, 'vllm realtime ASR reachable');
  }

  private async checkModel(): Promise<void> {
    const modelsUrl = new URL('models', this.options.url.replace(/^ws/, 'http'));
    let ids: string[];
    try {
      const res = await fetch(modelsUrl, {
        headers: this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {},
        signal: AbortSignal.timeout(this.options.connectTimeoutMs ?? 5000),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as { data?: Array<{ id?: unknown }> };
      ids = (body.data ?? []).map((m) => String(m.id));
    } catch (err) {
      // Behind a proxy that only forwards the WebSocket the check is skipped; the first commit would fail instead.
      this.logger?.warn({ url: modelsUrl.href, err: (err as Error).message }, 'cannot list served models; model name not checked');
      return;
    }
    if (!ids.includes(this.options.model)) {
      throw new AsrServerError(`ASR server ${this.options.url}: the model \`${this.options.model}\` does not exist (served: ${ids.join(', ') || 'none'})`, 'model_not_found');
    }
  }

  createStream(options: AsrStreamOptions = {}): VllmRealtimeStream {
    return new VllmRealtimeStream(this.options, this.languages, options, this.logger);
  }
}

/** Connect, wait for session.created, send session.update. Rejects with AsrConnectionError / AsrServerError. */
function openSession(
  options: VllmRealtimeAsrOptions,
  logger: Logger | undefined,
  language?: string,
): Promise<{ socket: WebSocket; sessionId: string }> {
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    const socket = new WebSocket(options.url, { headers, handshakeTimeout: timeoutMs, maxPayload: 4 * 1024 * 1024 });
    let settled = false;
    const finish = (err: Error | null, sessionId?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('message', onMessage);
      if (err) {
        socket.terminate();
        reject(err);
      } else resolve({ socket, sessionId: sessionId ?? '' });
    };
    const timer = setTimeout(
      () => finish(new AsrConnectionError(`ASR server ${options.url}: no session.created within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      const event = isBinary ? undefined : parseEvent(data);
      if (event?.type === 'session.created') {
        const update: Record<string, unknown> = { type: 'session.update', model: options.model };
        if (language) update.language = language;
        socket.send(JSON.stringify(update));
        finish(null, typeof event.id === 'string' ? event.id : '');
      } else if (event?.type === 'error') {
        finish(new AsrServerError(`ASR server ${options.url}: ${errorText(event)}`, errorCode(event)));
      }
    };
    socket.on('message', onMessage);
    socket.once('unexpected-response', (_req, res) => {
      finish(new AsrConnectionError(`ASR server ${options.url} refused the WebSocket: HTTP ${res.statusCode ?? '?'}`));
    });
    socket.once('error', (err) => finish(new AsrConnectionError(`ASR server ${options.url}: ${describeNetError(err)}`)));
    socket.once('close', (code) => finish(new AsrConnectionError(`ASR server ${options.url} closed the connection (${code})`)));
    logger?.debug({ url: options.url }, 'connecting to realtime ASR');
  });
}

interface Utterance {
  id: number;
  /** The start commit went out: this utterance owns the server's current generation. */
  started: boolean;
  /** Audio not sent yet (the connection is not ready, or a previous utterance is still in flight). */
  held: Int16Array[];
  heldSamples: number;
  samples: number;
  /** Concatenated deltas. */
  text: string;
  /** Set by finalize(); absent for the utterance still being spoken. */
  waiter?: { resolve: (final: AsrFinal) => void; reject: (err: Error) => void };
  /** Cancelled: its result is thrown away. */
  discard: boolean;
  /** Its audio was lost with a connection, or the server failed it: finalize() rejects with this. */
  error?: Error;
}

/** One call's connection. Utterances go over it one at a time (see the file comment). */
export class VllmRealtimeStream implements AsrStream {
  private socket: WebSocket | null = null;
  private connecting: Promise<void> | null = null;
  private lastConnectFailureAt = -Infinity;
  private lastConnectError: Error | null = null;
  /** Utterances finalized (or cancelled after their audio went out), oldest first; the head is on the wire. */
  private readonly pending: Utterance[] = [];
  /** The utterance the caller is speaking now. */
  private current: Utterance | null = null;
  private nextId = 1;
  private finalTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly language: string | undefined;
  private readonly log: Logger | undefined;

  constructor(
    private readonly options: VllmRealtimeAsrOptions,
    languages: readonly string[],
    private readonly streamOptions: AsrStreamOptions,
    logger: Logger | undefined,
  ) {
    const primary = streamOptions.language?.toLowerCase().split(/[-_]/)[0];
    // Only a language the model knows is sent: vLLM rejects others (validate_language).
    this.language = primary && (languages.includes(primary) || languages.includes('*')) ? primary : undefined;
    this.log = logger?.child({ stream: randomUUID().slice(0, 8) });
    // Connect now so the first utterance does not pay for the handshake.
    this.ensureConnected();
  }

  push(pcm: Int16Array): void {
    if (this.closed || pcm.length === 0) return;
    const utt = (this.current ??= this.newUtterance());
    utt.samples += pcm.length;
    if (utt.error) return; // already failed: finalize() reports it
    if (this.canSend(utt)) this.sendAudio(utt, pcm);
    else this.hold(utt, pcm.slice());
  }

  finalize(): Promise<AsrFinal> {
    const utt = this.current;
    this.current = null;
    if (this.closed || !utt || utt.samples === 0) return Promise.resolve(this.emptyFinal());
    if (utt.error) return Promise.reject(utt.error);
    return new Promise<AsrFinal>((resolve, reject) => {
      utt.waiter = { resolve, reject };
      this.pending.push(utt);
      this.pump();
    });
  }

  cancel(): void {
    const utt = this.current;
    this.current = null;
    if (!utt || !utt.started || utt.error) return; // nothing on the wire: just forget the held audio
    // The server is generating for it: end that generation and ignore its result.
    utt.discard = true;
    this.pending.push(utt);
    this.pump();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.current = null;
    this.failPending(new AsrConnectionError('ASR stream closed'));
    this.socket?.close(1000);
    this.socket = null;
  }

  private newUtterance(): Utterance {
    return { id: this.nextId++, started: false, held: [], heldSamples: 0, samples: 0, text: '', discard: false };
  }

  /** Audio for `utt` can go out now: connected, and nothing earlier is still waiting for its `done`. */
  private canSend(utt: Utterance): boolean {
    return this.socket?.readyState === WebSocket.OPEN && (this.pending.length === 0 || this.pending[0] === utt);
  }

  private hold(utt: Utterance, pcm: Int16Array): void {
    utt.held.push(pcm);
    utt.heldSamples += pcm.length;
    while (utt.heldSamples > MAX_HELD_SAMPLES && utt.held.length > 1) {
      const dropped = utt.held.shift();
      utt.heldSamples -= dropped?.length ?? 0;
      this.log?.warn('realtime ASR backlog over 30 s: dropping the oldest held audio');
    }
    if (!this.socket) this.ensureConnected();
  }

  private send(event: Record<string, unknown>): void {
    this.socket?.send(JSON.stringify(event));
  }

  private sendAudio(utt: Utterance, pcm: Int16Array): void {
    if (!utt.started) {
      utt.started = true;
      utt.text = '';
      this.send({ type: 'input_audio_buffer.commit' });
    }
    for (let off = 0; off < pcm.length; off += MAX_APPEND_SAMPLES) {
      const part = pcm.subarray(off, Math.min(pcm.length, off + MAX_APPEND_SAMPLES));
      const audio = Buffer.from(part.buffer, part.byteOffset, part.byteLength).toString('base64');
      this.send({ type: 'input_audio_buffer.append', audio });
    }
  }

  private flushHeld(utt: Utterance): void {
    if (utt.held.length === 0) return;
    const total = new Int16Array(utt.heldSamples);
    let off = 0;
    for (const part of utt.held) {
      total.set(part, off);
      off += part.length;
    }
    utt.held = [];
    utt.heldSamples = 0;
    this.sendAudio(utt, total);
  }

  /** Moves the head of `pending` onto the wire (start, held audio, final commit), then the spoken utterance. */
  private pump(): void {
    if (this.closed) return;
    if (this.socket?.readyState !== WebSocket.OPEN) {
      if (this.pending.length > 0 || this.current) this.ensureConnected();
      return;
    }
    const head = this.pending[0];
    if (head) {
      if (this.finalTimer) return; // its final commit is out; waiting for `done`
      if (!head.started && head.held.length === 0) {
        // Finalized with no audio on the wire (everything was dropped): nothing to ask the server.
        this.pending.shift();
        this.settle(head, this.emptyFinal());
        this.pump();
        return;
      }
      this.flushHeld(head);
      this.send({ type: 'input_audio_buffer.commit', final: true });
      const timeoutMs = this.options.finalTimeoutMs ?? 5000;
      this.finalTimer = setTimeout(() => this.onFinalTimeout(timeoutMs), timeoutMs);
      return;
    }
    if (this.current) this.flushHeld(this.current);
  }

  private onFinalTimeout(timeoutMs: number): void {
    this.finalTimer = undefined;
    const err = new AsrConnectionError(`ASR server ${this.options.url}: no transcription.done within ${timeoutMs} ms`);
    this.log?.warn({ timeoutMs }, 'realtime ASR final timed out; reconnecting');
    // The server's state is unknown now: start over on a fresh connection.
    this.dropConnection(err);
  }

  private ensureConnected(): void {
    if (this.closed || this.socket || this.connecting) return;
    if (performance.now() - this.lastConnectFailureAt < RECONNECT_MIN_INTERVAL_MS) {
      // Too soon to retry: whoever waits fails now rather than hanging.
      this.failPending(this.lastConnectError ?? new AsrConnectionError('ASR server unreachable'));
      return;
    }
    this.connecting = openSession(this.options, this.log, this.language).then(
      ({ socket }) => {
        this.connecting = null;
        if (this.closed) {
          socket.close(1000);
          return;
        }
        this.socket = socket;
        socket.on('message', (data, isBinary) => this.onMessage(data, isBinary));
        socket.on('close', (code, reason) => {
          if (this.socket !== socket) return;
          this.socket = null;
          this.dropConnection(new AsrConnectionError(`ASR server connection closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`));
        });
        socket.on('error', (err) => this.log?.warn({ err: describeNetError(err) }, 'realtime ASR socket error'));
        this.pump();
      },
      (err: unknown) => {
        this.connecting = null;
        this.lastConnectFailureAt = performance.now();
        this.lastConnectError = err instanceof Error ? err : new Error(String(err));
        this.log?.warn({ err: this.lastConnectError.message }, 'realtime ASR connection failed');
        this.failPending(this.lastConnectError);
      },
    );
  }

  /** The connection is unusable: fail what waits on it; the next utterance reconnects. */
  private dropConnection(err: Error): void {
    const socket = this.socket;
    this.socket = null;
    socket?.terminate();
    this.failPending(err);
  }

  private failPending(err: Error): void {
    if (this.finalTimer) clearTimeout(this.finalTimer);
    this.finalTimer = undefined;
    for (const utt of this.pending.splice(0)) this.settle(utt, err);
    // Audio of the utterance in progress that already went out is lost with the connection.
    if (this.current?.started) this.current.error ??= err;
  }

  private settle(utt: Utterance, result: AsrFinal | Error): void {
    if (!utt.waiter || utt.discard) return;
    if (result instanceof Error) utt.waiter.reject(result);
    else utt.waiter.resolve(result);
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    const event = isBinary ? undefined : parseEvent(data);
    if (!event) {
      this.log?.warn('realtime ASR sent a message that is not a JSON event; ignored');
      return;
    }
    const onWire = this.pending[0] ?? (this.current?.started ? this.current : undefined);
    switch (event.type) {
      case 'transcription.delta': {
        if (!onWire || typeof event.delta !== 'string') return;
        onWire.text += event.delta;
        // Partials only while the caller is still in that utterance (as the embedded ASR does).
        if (onWire === this.current && this.streamOptions.onPartial && onWire.text.trim()) {
          try {
            this.streamOptions.onPartial({ text: normalise(onWire.text), language: this.reportedLanguage(event) });
          } catch (err) {
            this.log?.warn({ err }, 'onPartial threw');
          }
        }
        return;
      }
      case 'transcription.done': {
        const head = this.pending.shift();
        if (this.finalTimer) clearTimeout(this.finalTimer);
        this.finalTimer = undefined;
        if (!head) {
          this.log?.warn('transcription.done without a pending utterance; ignored');
          return;
        }
        const text = normalise(typeof event.text === 'string' ? event.text : head.text);
        this.settle(head, { text, language: this.reportedLanguage(event), audioMs: (head.samples * 1000) / INTERNAL_SAMPLE_RATE });
        this.pump();
        return;
      }
      case 'error': {
        const err = new AsrServerError(`ASR server: ${errorText(event)}`, errorCode(event));
        this.log?.warn({ code: err.code, error: err.message }, 'realtime ASR server error');
        // A generation that errors ends without `done` (connection.py _run_generation): fail that utterance.
        if (this.finalTimer && this.pending.length > 0) {
          clearTimeout(this.finalTimer);
          this.finalTimer = undefined;
          const head = this.pending.shift();
          if (head) this.settle(head, err);
          this.pump();
        } else if (this.current?.started) {
          // The spoken utterance's finalize() fails with the server's reason; the server's state is unknown now.
          this.current.error = err;
          this.dropConnection(err);
        }
        return;
      }
      default:
        return; // session.created repeats, usage events, extensions: nothing to do
    }
  }

  private reportedLanguage(event: Record<string, unknown>): string {
    const lang = typeof event.language === 'string' && event.language ? event.language : undefined;
    return lang ?? this.language ?? this.streamOptions.language ?? 'en';
  }

  private emptyFinal(): AsrFinal {
    return { text: '', language: this.language ?? this.streamOptions.language ?? 'en', audioMs: 0 };
  }
}

function parseEvent(data: WebSocket.RawData): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function errorText(event: Record<string, unknown>): string {
  const e = event.error;
  if (typeof e === 'string') return e;
  // OpenAI-style servers nest it: { error: { message, code } }.
  if (typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string') return (e as { message: string }).message;
  return 'unknown error';
}

function errorCode(event: Record<string, unknown>): string | undefined {
  if (typeof event.code === 'string') return event.code;
  const e = event.error;
  if (typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string') return (e as { code: string }).code;
  return undefined;
}

function describeNetError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code ? `${code} ${err.message}` : err.message;
}

function normalise(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
