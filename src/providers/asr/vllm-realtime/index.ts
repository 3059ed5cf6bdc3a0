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
 *
 * What vLLM's code does that a client must allow for (each has a test in test/remote-vllm.test.ts):
 * - Voxtral decodes whole windows only (voxtral_realtime.py VoxtralRealtimeBuffer.get_input_stream returns at
 *   the end-of-audio sentinel without the partial window): `trailingSilenceMs` (default 500) of silence goes out
 *   before the final commit, or the last words are lost.
 * - `transcription.done` carries no language: none is reported then (AsrFinal.language is '') and the session
 *   keeps its own. This service's asr-server adds `language`, which is reported.
 * - After a generation error (`error` instead of `done`) the audio queue is not cleared, so the next utterance
 *   would start with stale audio: the connection is dropped and a fresh one opened.
 * - A generation can end on its own (token limit) while the caller still speaks: that `done` is unsolicited; its
 *   text is kept as the start of the utterance and a new generation is started for the rest.
 * - Builds before PR #33963 never answer `commit{final}` and builds before PR #36934 fail every WebSocket when
 *   started with `--api-key`: both are named in the error (VLLM_REALTIME_MIN_VERSION).
 * Several URLs fail over (src/providers/backends.ts): a connection that fails moves to the next URL, and an
 * utterance whose connection died before its final is replayed once on the new connection.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { VLLM_REALTIME_DEFAULTS, type VllmRealtimeSettings } from './options.js';
import WebSocket from 'ws';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { BackendPool, urlList, type BackendStrategy } from '../../backends.js';
import type { AsrFinal, AsrProvider, AsrStream, AsrStreamOptions } from '../types.js';

/** Voxtral Mini 4B Realtime 2602's languages (its model card). */
export const VOXTRAL_REALTIME_LANGUAGES = ['en', 'zh', 'hi', 'es', 'ar', 'fr', 'pt', 'ru', 'de', 'ja', 'ko', 'it', 'nl'] as const;

/** The first vLLM release with both realtime fixes this client relies on (PR #33963 commit{final}, PR #36934 --api-key). */
export const VLLM_REALTIME_MIN_VERSION = '0.18.0';

/** The options `providers.asr` declares for provider "vllm-realtime" (./options.ts), and a logger. */
export type VllmRealtimeAsrOptions = Omit<VllmRealtimeSettings, 'languages'> & { languages?: readonly string[]; logger?: Logger };

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
  readonly capabilities: ProviderCapabilities = { runsOn: ['server'], streaming: true };
  readonly languages: readonly string[];
  readonly backends: BackendPool;
  private readonly options: VllmRealtimeAsrOptions;
  private readonly logger: Logger | undefined;

  constructor(options: VllmRealtimeAsrOptions) {
    const urls = urlList(options.url, options.urls, 'vllm-realtime: url');
    for (const url of urls) if (!/^wss?:\/\//.test(url)) throw new Error(`vllm-realtime: url must be ws:// or wss://, got "${url}"`);
    if (!options.model) throw new Error('vllm-realtime: model is required');
    this.options = options;
    this.languages = options.languages ?? VOXTRAL_REALTIME_LANGUAGES;
    this.logger = options.logger?.child({ provider: 'asr-vllm-realtime' });
    this.backends = new BackendPool({ stage: 'asr', urls, strategy: options.failover?.strategy, downMs: options.failover?.downMs, logger: this.logger });
  }

  /**
   * Opens one session to check the server is there and speaks the protocol, then asks `GET /v1/models` (served
   * by vLLM's OpenAI server next to /v1/realtime) whether the model is served: vLLM acknowledges session.update
   * only with an error, and only at the first commit.
   */
  async load(): Promise<void> {
    const t0 = performance.now();
    const { socket, sessionId, url } = await openSessionFailover(this.backends, this.options, this.logger);
    socket.close(1000);
    await Promise.all([this.checkModel(url), this.checkVersion(url)]);
    this.logger?.info({ url, model: this.options.model, sessionId, ms: Math.round(performance.now() - t0) }, 'vllm realtime ASR reachable');
  }

  private async checkModel(url: string): Promise<void> {
    const modelsUrl = new URL('models', url.replace(/^ws/, 'http'));
    let ids: string[];
    try {
      const res = await fetch(modelsUrl, {
        headers: this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {},
        signal: AbortSignal.timeout(this.options.connectTimeoutMs ?? VLLM_REALTIME_DEFAULTS.connectTimeoutMs),
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
      throw new AsrServerError(`ASR server ${url}: the model \`${this.options.model}\` does not exist (served: ${ids.join(', ') || 'none'})`, 'model_not_found');
    }
  }

  /**
   * vLLM serves `GET /version`: a release older than VLLM_REALTIME_MIN_VERSION is named at start, before the first
   * call hits its bugs. Only a warning: a development build of an older number may already carry the fixes, and
   * other servers (this service's asr-server) have no such route.
   */
  private async checkVersion(url: string): Promise<void> {
    let version: string | undefined;
    try {
      const res = await fetch(new URL('/version', url.replace(/^ws/, 'http')), { signal: AbortSignal.timeout(this.options.connectTimeoutMs ?? VLLM_REALTIME_DEFAULTS.connectTimeoutMs) });
      if (!res.ok) return;
      const body = (await res.json()) as { version?: unknown };
      version = typeof body.version === 'string' ? body.version : undefined;
    } catch {
      return;
    }
    if (version && olderThan(version, VLLM_REALTIME_MIN_VERSION)) {
      this.logger?.warn(
        { url, version, required: VLLM_REALTIME_MIN_VERSION },
        `vLLM ${version} is older than ${VLLM_REALTIME_MIN_VERSION}: its realtime endpoint ignores commit{final} (PR #33963) or fails WebSockets under --api-key (PR #36934); upgrade vLLM`,
      );
    }
  }

  createStream(options: AsrStreamOptions = {}): VllmRealtimeStream {
    return new VllmRealtimeStream(this.options, this.backends, this.languages, options, this.logger);
  }
}

/**
 * openSession on each URL of the pool in turn: a URL that cannot be reached (AsrConnectionError) is marked down
 * and the next one is tried; a protocol error (AsrServerError: bad key, unknown model) is the same everywhere.
 */
async function openSessionFailover(
  pool: BackendPool,
  options: VllmRealtimeAsrOptions,
  logger: Logger | undefined,
  language?: string,
): Promise<{ socket: WebSocket; sessionId: string; url: string }> {
  let last: Error | undefined;
  for (const url of pool.candidates()) {
    pool.started(url);
    try {
      const opened = await openSession(url, options, logger, language);
      pool.succeeded(url);
      return { ...opened, url };
    } catch (err) {
      last = err instanceof Error ? err : new Error(String(err));
      if (!(err instanceof AsrConnectionError)) throw last;
      pool.failed(url, last.message);
    }
  }
  throw last ?? new AsrConnectionError('ASR: no server');
}

/** Connect, wait for session.created, send session.update. Rejects with AsrConnectionError / AsrServerError. */
function openSession(
  url: string,
  options: VllmRealtimeAsrOptions,
  logger: Logger | undefined,
  language?: string,
): Promise<{ socket: WebSocket; sessionId: string }> {
  const timeoutMs = options.connectTimeoutMs ?? VLLM_REALTIME_DEFAULTS.connectTimeoutMs;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    const socket = new WebSocket(url, { headers, handshakeTimeout: timeoutMs, maxPayload: 4 * 1024 * 1024 });
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
      () => finish(new AsrConnectionError(`ASR server ${url}: no session.created within ${timeoutMs} ms`)),
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
        finish(new AsrServerError(`ASR server ${url}: ${errorText(event)}`, errorCode(event)));
      }
    };
    socket.on('message', onMessage);
    socket.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      // vLLM before PR #36934 raises KeyError('method') in its auth middleware on every WebSocket when started with
      // --api-key: uvicorn answers the upgrade with 500.
      const hint =
        status === 500 && options.apiKey
          ? ` (vLLM before ${VLLM_REALTIME_MIN_VERSION} fails every /v1/realtime WebSocket when started with --api-key, PR #36934: upgrade vLLM to ${VLLM_REALTIME_MIN_VERSION} or newer)`
          : '';
      const message = `ASR server ${url} refused the WebSocket: HTTP ${status || '?'}${hint}`;
      // A refusal for the key is the same on every server; a 5xx may not be.
      finish(status === 401 || status === 403 ? new AsrServerError(message, 'unauthorized') : new AsrConnectionError(message));
    });
    socket.once('error', (err) => finish(new AsrConnectionError(`ASR server ${url}: ${describeNetError(err)}`)));
    socket.once('close', (code) => finish(new AsrConnectionError(`ASR server ${url} closed the connection (${code})`)));
    logger?.debug({ url }, 'connecting to realtime ASR');
  });
}

interface Utterance {
  id: number;
  /** The start commit went out: this utterance owns the server's current generation. */
  started: boolean;
  /** Audio not sent yet (the connection is not ready, or a previous utterance is still in flight). */
  held: Int16Array[];
  heldSamples: number;
  /** Audio already sent, kept (up to 30 s) so the utterance can be replayed on another connection. */
  sent: Int16Array[];
  sentSamples: number;
  /** Some sent audio was dropped from `sent`: a replay would be incomplete. */
  sentTruncated: boolean;
  /** Times it was replayed after its connection died (at most once). */
  replays: number;
  samples: number;
  /** Concatenated deltas of the running generation. */
  text: string;
  /** Text of generations that ended on their own (unsolicited `done`) before the caller finished. */
  prefix: string;
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
  private socketUrl = '';
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
    private readonly backends: BackendPool,
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
    return {
      id: this.nextId++, started: false, held: [], heldSamples: 0, sent: [], sentSamples: 0, sentTruncated: false,
      replays: 0, samples: 0, text: '', prefix: '', discard: false,
    };
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

  private sendAudio(utt: Utterance, pcm: Int16Array, keep = true): void {
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
    if (!keep) return;
    utt.sent.push(pcm.slice()); // the caller may reuse its frame buffers
    utt.sentSamples += pcm.length;
    while (utt.sentSamples > MAX_HELD_SAMPLES && utt.sent.length > 1) {
      utt.sentSamples -= utt.sent.shift()?.length ?? 0;
      utt.sentTruncated = true;
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
        // Nothing left to ask the server: all its audio was dropped, or its generations ended on their own.
        this.pending.shift();
        this.settle(head, this.finalOf(head, ''));
        this.pump();
        return;
      }
      this.flushHeld(head);
      // Voxtral decodes whole windows only: silence completes the last one (not counted in audioMs).
      const padSamples = Math.round(((this.options.trailingSilenceMs ?? VLLM_REALTIME_DEFAULTS.trailingSilenceMs) * INTERNAL_SAMPLE_RATE) / 1000);
      if (padSamples > 0) this.sendAudio(head, new Int16Array(padSamples), false);
      this.send({ type: 'input_audio_buffer.commit', final: true });
      const timeoutMs = this.options.finalTimeoutMs ?? VLLM_REALTIME_DEFAULTS.finalTimeoutMs;
      this.finalTimer = setTimeout(() => this.onFinalTimeout(timeoutMs), timeoutMs);
      return;
    }
    if (this.current) this.flushHeld(this.current);
  }

  private onFinalTimeout(timeoutMs: number): void {
    this.finalTimer = undefined;
    // A server that transcribed this utterance and then never answered its final commit: a build without commit{final}.
    const hint =
      (this.pending[0]?.text ?? '') !== ''
        ? `; it transcribed the audio but never answered input_audio_buffer.commit{final}: vLLM builds before ${VLLM_REALTIME_MIN_VERSION} ignore it (PR #33963), upgrade vLLM`
        : '';
    const err = new AsrConnectionError(`ASR server ${this.socketUrl}: no transcription.done within ${timeoutMs} ms after the final commit${hint}`);
    this.log?.warn({ timeoutMs, url: this.socketUrl }, 'realtime ASR final timed out; reconnecting');
    this.backends.failed(this.socketUrl, err.message);
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
    this.connecting = openSessionFailover(this.backends, this.options, this.log, this.language).then(
      ({ socket, url }) => {
        this.connecting = null;
        if (this.closed) {
          socket.close(1000);
          return;
        }
        this.socket = socket;
        this.socketUrl = url;
        // A dropped connection may still deliver what it had buffered: only the current one is listened to.
        socket.on('message', (data, isBinary) => {
          if (this.socket === socket) this.onMessage(data, isBinary);
        });
        socket.on('close', (code, reason) => {
          if (this.socket !== socket) return;
          this.socket = null;
          const err = new AsrConnectionError(`ASR server ${url} connection closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
          this.backends.failed(url, err.message);
          this.onConnectionLost(err);
        });
        socket.on('error', (err) => this.log?.warn({ err: describeNetError(err), url }, 'realtime ASR socket error'));
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

  /**
   * The server went away before these utterances' finals: each is replayed once, whole, on a new connection
   * (the next URL when there are several). Nothing was final yet, so nothing the caller saw is duplicated.
   */
  private onConnectionLost(err: Error): void {
    if (this.finalTimer) clearTimeout(this.finalTimer);
    this.finalTimer = undefined;
    const onWire = [...this.pending, ...(this.current ? [this.current] : [])].filter((u) => u.started);
    const replay = onWire.filter((u) => u.started && !u.error && u.replays === 0 && !u.sentTruncated && !u.discard);
    if (replay.length === 0) {
      this.failPending(err);
      return;
    }
    for (const u of onWire) {
      if (!replay.includes(u)) {
        if (u !== this.current) this.settle(u, err);
        else u.error ??= err;
        continue;
      }
      u.replays++;
      u.started = false;
      u.text = '';
      u.held = [...u.sent, ...u.held];
      u.heldSamples += u.sentSamples;
      u.sent = [];
      u.sentSamples = 0;
    }
    const keep = this.pending.filter((u) => replay.includes(u) || !onWire.includes(u));
    this.pending.splice(0, this.pending.length, ...keep);
    this.log?.warn({ err: err.message, utterances: replay.length }, 'realtime ASR connection lost; replaying on a new connection');
    this.ensureConnected();
  }

  /** The connection is unusable: fail what waits on it; the next utterance reconnects. */
  private dropConnection(err: Error): void {
    const socket = this.socket;
    this.socket = null;
    socket?.terminate();
    this.failPending(err);
  }

  /** vLLM keeps a failed generation's audio queued: a fresh connection for whatever comes next. */
  private recycleConnection(): void {
    const socket = this.socket;
    this.socket = null;
    if (this.finalTimer) clearTimeout(this.finalTimer);
    this.finalTimer = undefined;
    socket?.terminate();
    this.ensureConnected();
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
            this.streamOptions.onPartial({ text: normalise(`${onWire.prefix} ${onWire.text}`), language: reportedLanguage(event) });
          } catch (err) {
            this.log?.warn({ err }, 'onPartial threw');
          }
        }
        return;
      }
      case 'transcription.done': {
        const text = typeof event.text === 'string' ? event.text : undefined;
        if (!this.finalTimer) {
          this.onUnsolicitedDone(onWire, text);
          return;
        }
        clearTimeout(this.finalTimer);
        this.finalTimer = undefined;
        const head = this.pending.shift();
        if (!head) return;
        this.backends.succeeded(this.socketUrl);
        this.settle(head, this.finalOf(head, text ?? head.text, reportedLanguage(event)));
        this.pump();
        return;
      }
      case 'error': {
        const err = new AsrServerError(`ASR server ${this.socketUrl}: ${errorText(event)}`, errorCode(event));
        this.log?.warn({ code: err.code, error: err.message }, 'realtime ASR server error');
        if (!onWire?.started) return; // nothing of ours is generating: a complaint about an event, not a failed utterance
        // A generation that errors ends without `done` and leaves its audio queued (connection.py _run_generation).
        if (onWire === this.current) this.current.error = err;
        else {
          this.pending.shift();
          this.settle(onWire, err);
        }
        this.recycleConnection();
        return;
      }
      default:
        return; // session.created repeats, usage events, extensions: nothing to do
    }
  }

  /**
   * A `done` nobody asked for: the generation ended on its own (token limit) while the caller still spoke, and
   * the server cleared its queue. Not the turn's final: its text starts the utterance, and the next audio starts
   * a new generation. An utterance finalized with nothing after it then needs no round trip.
   */
  private onUnsolicitedDone(onWire: Utterance | undefined, text: string | undefined): void {
    if (!onWire?.started) {
      this.log?.warn('transcription.done without a pending utterance; ignored');
      return;
    }
    onWire.prefix = normalise(`${onWire.prefix} ${text ?? onWire.text}`);
    onWire.text = '';
    onWire.started = false;
    onWire.sent = [];
    onWire.sentSamples = 0;
    this.log?.info({ utterance: onWire.id }, 'realtime ASR generation ended before the final commit; starting another for the rest');
    this.pump();
  }

  private finalOf(utt: Utterance, text: string, language = ''): AsrFinal {
    return {
      text: normalise(`${utt.prefix} ${text}`),
      language,
      audioMs: (utt.samples * 1000) / INTERNAL_SAMPLE_RATE,
    };
  }

  private emptyFinal(): AsrFinal {
    return { text: '', language: '', audioMs: 0 };
  }
}

/** Only a language the server said it heard (this service's asr-server does; vLLM does not): '' otherwise. */
function reportedLanguage(event: Record<string, unknown>): string {
  return typeof event.language === 'string' ? event.language : '';
}

/** "0.17.1" < "0.18.0"; pre-release and local suffixes ("0.18.0rc1", "+cu130") are ignored. */
export function olderThan(version: string, required: string): boolean {
  const parts = (v: string): number[] => (/^\d+(\.\d+)*/.exec(v)?.[0] ?? '0').split('.').map(Number);
  const a = parts(version);
  const b = parts(required);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  }
  return false;
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
