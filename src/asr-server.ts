/**
 * `asr-server` mode: this service's configured ASR (by default the embedded PocketSphinx) served to other
 * machines, so media nodes can run without the ASR models:
 *
 * - `WS  config.asrServer.path` (default `/v1/realtime`): vLLM's realtime transcription protocol, exactly as
 *   vllm/entrypoints/openai/realtime/{protocol,connection}.py define it (see
 *   src/providers/asr/vllm-realtime/index.ts for the message shapes), so the `vllm-realtime` ASR client — or any
 *   vLLM realtime client — works against it unchanged. `transcription.done` also carries `language`.
 * - `POST /v1/audio/transcriptions`: the batch OpenAI-compatible endpoint (multipart WAV), for `openai-batch`.
 * - `GET /v1/models`, `GET /healthz`.
 *
 * The client decides where utterances end (commit / commit{final}), so no VAD runs here. Auth is the service's
 * own (API keys / session tokens, `Authorization: Bearer`), as vLLM's `--api-key`.
 *
 * Run: `npm start -- --mode asr-server [--config FILE]` or `tsx src/asr-server.ts [--config FILE]`.
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import websocket from '@fastify/websocket';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import { Auth } from './auth/auth.js';
import { requireCaller } from './auth/plugin.js';
import { INTERNAL_SAMPLE_RATE } from './audio/format.js';
import { resampleOnce } from './audio/resample.js';
import { parseWav, WavFormatError } from './audio/wav.js';
import { loadConfig, type ServiceConfig } from './config.js';
import { createLogger } from './core/logger.js';
import { exitOnSignals } from './core/shutdown.js';
import { createAsrProvider } from './providers/asr/index.js';
import type { AsrProvider, AsrStream } from './providers/asr/types.js';

/** Largest append accepted: 2 s of audio as base64 (vLLM bounds it by VLLM_MAX_AUDIO_CLIP_FILESIZE_MB). */
const MAX_APPEND_BYTES = 2 * INTERNAL_SAMPLE_RATE * 2;
/** Largest WebSocket message: a maximal append in base64 plus JSON. */
const MAX_WS_PAYLOAD = Math.ceil((MAX_APPEND_BYTES * 4) / 3) + 1024;
/** Largest batch upload (25 MB, OpenAI's own limit for /v1/audio/transcriptions). */
const MAX_UPLOAD_BYTES = 25 * 1024 * 1024;

export interface AsrServer {
  app: FastifyInstance;
  asr: AsrProvider;
  /** Open realtime connections. */
  readonly connections: number;
  /** Listen and load the ASR model; resolves with the bound port once ready. */
  start(): Promise<number>;
  stop(): Promise<void>;
}

type ErrorCode =
  | 'invalid_json'
  | 'invalid_event'
  | 'unknown_event'
  | 'invalid_audio'
  | 'model_not_found'
  | 'model_not_validated'
  | 'unsupported_language'
  | 'utterance_too_long'
  | 'session_limit'
  | 'processing_error';

export function buildAsrServer(config: ServiceConfig, logger: Logger, asr?: AsrProvider): AsrServer {
  const provider = asr ?? createAsrProvider(config.providers.asr, logger.child({ component: 'asr' }));
  const auth = new Auth(config.auth, logger);
  const app = Fastify({ loggerInstance: logger as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: MAX_UPLOAD_BYTES });
  const settings = config.asrServer;
  const connections = new Set<RealtimeAsrConnection>();
  let ready = false;
  let loadError: Error | null = null;
  let stopped = false;

  void app.register(websocket, { options: { maxPayload: MAX_WS_PAYLOAD } });
  // multipart bodies are parsed with the WHATWG FormData parser in the route (no extra dependency).
  app.addContentTypeParser('multipart/form-data', { parseAs: 'buffer', bodyLimit: MAX_UPLOAD_BYTES }, (_req, body, done) => done(null, body));

  app.get('/healthz', async (_request, reply) => {
    const status = ready ? 'ready' : loadError ? 'failed' : 'loading';
    return reply.code(ready ? 200 : 503).send({ status, mode: 'asr-server', provider: provider.name, sessions: connections.size, ...(loadError ? { error: loadError.message } : {}) });
  });

  void app.register(async (scoped) => {
    scoped.addHook('preValidation', requireCaller(auth));

    scoped.get('/v1/models', async () => ({
      object: 'list',
      data: [{ id: settings.model, object: 'model', created: 0, owned_by: 'voice-agent', languages: provider.languages }],
    }));

    scoped.get(settings.path, { websocket: true }, (socket, request) => {
      const log = logger.child({ asrSession: randomUUID().slice(0, 8), ip: request.ip });
      if (!ready) {
        sendJson(socket, { type: 'error', error: 'ASR model is not loaded yet', code: 'processing_error' });
        socket.close(1013, 'not ready');
        return;
      }
      if (connections.size >= settings.maxSessions) {
        log.warn({ max: settings.maxSessions }, 'realtime ASR session refused: limit reached');
        sendJson(socket, { type: 'error', error: `server busy: ${settings.maxSessions} sessions open`, code: 'session_limit' });
        socket.close(1013, 'session limit');
        return;
      }
      const connection = new RealtimeAsrConnection(socket, provider, settings, log);
      connections.add(connection);
      socket.on('close', () => {
        connections.delete(connection);
        connection.close();
      });
    });

    scoped.post('/v1/audio/transcriptions', async (request, reply) => {
      if (!ready) return reply.code(503).send(openAiError('ASR model is not loaded yet', 'server_error'));
      const contentType = request.headers['content-type'] ?? '';
      if (!contentType.startsWith('multipart/form-data') || !Buffer.isBuffer(request.body)) {
        return reply.code(400).send(openAiError('expected multipart/form-data with a "file" field', 'invalid_request_error'));
      }
      return transcribeUpload(request.body, contentType, provider, settings.model, settings.maxUtteranceMs, reply);
    });
  });

  return {
    app,
    asr: provider,
    get connections() {
      return connections.size;
    },
    async start() {
      await app.listen({ host: config.host, port: config.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : config.port;
      logger.info({ port, path: settings.path, provider: provider.name }, 'asr-server listening; loading model');
      const t0 = performance.now();
      try {
        await provider.load();
      } catch (err) {
        loadError = err instanceof Error ? err : new Error(String(err));
        logger.error({ err: loadError }, 'ASR model failed to load');
        throw loadError;
      }
      ready = true;
      logger.info({ ms: Math.round(performance.now() - t0) }, 'asr-server ready');
      return port;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const c of connections) c.close();
      await app.close();
      await provider.close?.();
    },
  };
}

function sendJson(socket: WebSocket, event: Record<string, unknown>): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(event));
}

function openAiError(message: string, type: string): { error: { message: string; type: string } } {
  return { error: { message, type } };
}

/** One client's realtime session: vLLM's RealtimeConnection, over this service's ASR stream. */
class RealtimeAsrConnection {
  private stream: AsrStream | null = null;
  private validated = false;
  private language: string | undefined;
  private generating = false;
  /** Text already sent as deltas in this generation (deltas are append-only on the wire). */
  private sentText = '';
  private uttSamples = 0;
  private appendedSinceDone = 0;
  private tooLongReported = false;
  /** Serialises finalizes so `done` events go out in commit order. */
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly asr: AsrProvider,
    private readonly settings: ServiceConfig['asrServer'],
    private readonly log: Logger,
  ) {
    socket.on('message', (data: RawData, isBinary: boolean) => this.onMessage(data, isBinary));
    sendJson(socket, { type: 'session.created', id: `sess-${randomUUID()}`, created: Math.floor(Date.now() / 1000) });
  }

  private error(message: string, code: ErrorCode): void {
    sendJson(this.socket, { type: 'error', error: message, code });
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.closed) return;
    if (isBinary) return this.error('binary messages are not part of the protocol: send JSON events', 'invalid_event');
    let event: unknown;
    try {
      event = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8'));
    } catch {
      return this.error('Invalid JSON', 'invalid_json');
    }
    if (typeof event !== 'object' || event === null || Array.isArray(event)) return this.error('an event must be a JSON object', 'invalid_event');
    const e = event as Record<string, unknown>;
    try {
      switch (e.type) {
        case 'session.update':
          return this.onSessionUpdate(e);
        case 'input_audio_buffer.append':
          return this.onAppend(e);
        case 'input_audio_buffer.commit':
          return this.onCommit(e.final === true);
        default:
          return this.error(`Unknown event type: ${String(e.type).slice(0, 64)}`, 'unknown_event');
      }
    } catch (err) {
      this.log.error({ err }, 'realtime ASR event failed');
      this.error(`processing failed: ${(err as Error).message}`, 'processing_error');
    }
  }

  private onSessionUpdate(e: Record<string, unknown>): void {
    if (e.model !== undefined && e.model !== null && e.model !== this.settings.model) {
      return this.error(`The model \`${String(e.model).slice(0, 100)}\` does not exist. This server serves \`${this.settings.model}\`.`, 'model_not_found');
    }
    if (e.language !== undefined && e.language !== null) {
      const lang = typeof e.language === 'string' ? e.language.toLowerCase().split(/[-_]/)[0] : '';
      if (!lang || !(this.asr.languages.includes(lang) || this.asr.languages.includes('*'))) {
        return this.error(`language ${JSON.stringify(e.language)} is not supported (supported: ${this.asr.languages.join(', ')})`, 'unsupported_language');
      }
      if (this.stream && lang !== this.language) {
        // A new language needs a new stream; an utterance in progress is dropped.
        this.stream.close();
        this.stream = null;
      }
      this.language = lang;
    }
    this.validated = true;
  }

  private ensureStream(): AsrStream {
    this.stream ??= this.asr.createStream({ language: this.language, onPartial: (p) => this.onPartial(p.text) });
    return this.stream;
  }

  private onAppend(e: Record<string, unknown>): void {
    if (typeof e.audio !== 'string' || e.audio.length === 0) return this.error('"audio" must be a non-empty base64 string', 'invalid_audio');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(e.audio)) return this.error('Invalid audio data: not base64', 'invalid_audio');
    const bytes = Buffer.from(e.audio, 'base64');
    if (bytes.length === 0 || bytes.length % 2 !== 0) return this.error(`Invalid audio data: ${bytes.length} bytes is not whole PCM16 samples`, 'invalid_audio');
    if (bytes.length > MAX_APPEND_BYTES) return this.error(`Invalid audio data: append of ${bytes.length} bytes exceeds ${MAX_APPEND_BYTES}`, 'invalid_audio');
    const samples = new Int16Array(bytes.length / 2);
    for (let i = 0; i < samples.length; i++) samples[i] = bytes.readInt16LE(i * 2);
    const maxSamples = (this.settings.maxUtteranceMs * INTERNAL_SAMPLE_RATE) / 1000;
    if (this.uttSamples + samples.length > maxSamples) {
      if (!this.tooLongReported) {
        this.tooLongReported = true;
        this.error(`utterance longer than ${this.settings.maxUtteranceMs} ms: further audio is ignored until the final commit`, 'utterance_too_long');
      }
      return;
    }
    this.uttSamples += samples.length;
    this.appendedSinceDone += samples.length;
    this.ensureStream().push(samples);
  }

  private onCommit(final: boolean): void {
    if (!this.validated) {
      return this.error('Model not validated. Make sure to validate the model by sending a session.update event.', 'model_not_validated');
    }
    if (!final) {
      if (this.generating) {
        this.log.debug('generation already in progress, ignoring commit');
        return;
      }
      this.generating = true;
      this.sentText = '';
      this.ensureStream();
      return;
    }
    // final: end of this utterance's audio. Without a prior start commit, the audio queued so far is the utterance.
    this.generating = false;
    const stream = this.ensureStream();
    const sentBefore = this.sentText;
    const samples = this.appendedSinceDone;
    this.appendedSinceDone = 0;
    this.uttSamples = 0;
    this.tooLongReported = false;
    const t0 = performance.now();
    const result = samples > 0 ? stream.finalize() : Promise.resolve({ text: '', language: this.language ?? this.asr.languages[0] ?? 'en', audioMs: 0 });
    this.chain = this.chain.then(async () => {
      try {
        const final = await result;
        if (this.closed) return;
        // Whatever the deltas did not cover (or a revision of them), so that deltas + done agree where possible.
        if (final.text.startsWith(sentBefore) && final.text.length > sentBefore.length) {
          sendJson(this.socket, { type: 'transcription.delta', delta: final.text.slice(sentBefore.length) });
        }
        const words = final.text ? final.text.split(/\s+/).length : 0;
        sendJson(this.socket, {
          type: 'transcription.done',
          text: final.text,
          usage: { prompt_tokens: Math.round(final.audioMs / 80), completion_tokens: words, total_tokens: Math.round(final.audioMs / 80) + words },
          language: final.language,
        });
        this.log.debug({ ms: Math.round(performance.now() - t0), audioMs: final.audioMs, chars: final.text.length }, 'utterance transcribed');
      } catch (err) {
        this.log.error({ err }, 'realtime ASR finalize failed');
        this.error(`transcription failed: ${(err as Error).message}`, 'processing_error');
      }
    });
    this.sentText = '';
  }

  /** Running hypotheses become append-only deltas; a revision of words already sent waits for `done`. */
  private onPartial(text: string): void {
    if (this.closed || !this.generating) return;
    const sent = this.sentText;
    if (!text.startsWith(sent) || text.length <= sent.length) return;
    const delta = text.slice(sent.length);
    this.sentText = text;
    sendJson(this.socket, { type: 'transcription.delta', delta });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream?.close();
    this.stream = null;
    if (this.socket.readyState === this.socket.OPEN) this.socket.close(1001, 'server closing');
  }
}

/** `POST /v1/audio/transcriptions`: decode the WAV, run it through one ASR stream, answer json/text/verbose_json. */
async function transcribeUpload(
  body: Buffer,
  contentType: string,
  asr: AsrProvider,
  model: string,
  maxUtteranceMs: number,
  reply: FastifyReply,
): Promise<FastifyReply> {
  let form: FormData;
  try {
    form = await new Response(body, { headers: { 'content-type': contentType } }).formData();
  } catch (err) {
    return reply.code(400).send(openAiError(`malformed multipart body: ${(err as Error).message}`, 'invalid_request_error'));
  }
  const file = form.get('file');
  if (!file || typeof file === 'string') return reply.code(400).send(openAiError('missing "file" (an audio file)', 'invalid_request_error'));
  const requestedModel = form.get('model');
  if (typeof requestedModel === 'string' && requestedModel !== '' && requestedModel !== model) {
    return reply.code(404).send(openAiError(`The model \`${requestedModel.slice(0, 100)}\` does not exist.`, 'invalid_request_error'));
  }
  const format = form.get('response_format') ?? 'json';
  if (format !== 'json' && format !== 'text' && format !== 'verbose_json') {
    return reply.code(400).send(openAiError(`response_format "${String(format)}" is not supported (json, text, verbose_json)`, 'invalid_request_error'));
  }
  const language = form.get('language');
  if (typeof language === 'string' && language !== '') {
    const lang = language.toLowerCase().split(/[-_]/)[0];
    if (!asr.languages.includes(lang) && !asr.languages.includes('*')) {
      return reply.code(400).send(openAiError(`language "${language}" is not supported (supported: ${asr.languages.join(', ')})`, 'invalid_request_error'));
    }
  }
  let samples: Int16Array;
  try {
    const wav = parseWav(new Uint8Array(await file.arrayBuffer()));
    samples = await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);
  } catch (err) {
    const message = err instanceof WavFormatError ? err.message : `cannot read the audio: ${(err as Error).message}`;
    return reply.code(400).send(openAiError(`${message} (this server reads WAV files)`, 'invalid_request_error'));
  }
  if ((samples.length * 1000) / INTERNAL_SAMPLE_RATE > maxUtteranceMs) {
    return reply.code(400).send(openAiError(`audio longer than ${maxUtteranceMs} ms`, 'invalid_request_error'));
  }
  const stream = asr.createStream({ language: typeof language === 'string' && language ? language : undefined });
  try {
    for (let off = 0; off < samples.length; off += INTERNAL_SAMPLE_RATE / 10) stream.push(samples.subarray(off, off + INTERNAL_SAMPLE_RATE / 10));
    const final = await stream.finalize();
    if (format === 'text') return reply.type('text/plain; charset=utf-8').send(final.text);
    if (format === 'json') return reply.send({ text: final.text });
    return reply.send({
      task: 'transcribe',
      language: final.language,
      duration: final.audioMs / 1000,
      text: final.text,
      ...(final.words ? { words: final.words.map((w) => ({ word: w.word, start: w.startMs / 1000, end: w.endMs / 1000 })) } : {}),
    });
  } catch (err) {
    return reply.code(500).send(openAiError(`transcription failed: ${(err as Error).message}`, 'server_error'));
  } finally {
    stream.close();
  }
}

/** Process entry point for the asr-server mode. */
export async function runAsrServer(argv: string[] = process.argv.slice(2)): Promise<void> {
  const config = loadConfig(argv);
  const logger = createLogger(config.logLevel);
  const server = buildAsrServer(config, logger);
  exitOnSignals(logger, () => server.stop());
  await server.start();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runAsrServer().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
