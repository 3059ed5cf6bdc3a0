/**
 * The service on the embedded models in a child process of a load script, on a random loopback port, with a
 * fresh API key and an in-memory call store: the script's measurements are of a service nobody else uses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface LocalService {
  child: ChildProcess;
  httpUrl: string;
  /** The device WebSocket (`/v1/ws`). */
  wsUrl: string;
  apiKey: string;
  stop(): Promise<void>;
}

/**
 * `providers.asr` for a service measured on its media path alone: a batch endpoint on a closed loopback port, only
 * contacted when a turn ends (the turn then ends in an ASR error), so no local decoder is built, held or run.
 */
/** `--vad-quiet off|DBFS` as providers.vad.quietWindowDbfs: null (off) infers every window; undefined: not given. */
export function vadQuietOption(value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'off') return null;
  if (!Number.isFinite(Number(value))) throw new Error('--vad-quiet must be off or a level in dBFS');
  return Number(value);
}

export const ASR_ELSEWHERE = { provider: 'openai-batch', baseUrl: 'http://127.0.0.1:9/v1', model: 'elsewhere', retries: 0, timeoutMs: 500 };

/**
 * `providers.tts` beside ASR_ELSEWHERE: a failed recognition is answered with the spoken fallback line, which a
 * media-path run must not synthesize here (hundreds of callers' lines would be the measurement); elsewhere it fails
 * at once, as the recognition did.
 */
export const TTS_ELSEWHERE = { provider: 'openai-speech', baseUrl: 'http://127.0.0.1:9/v1', model: 'elsewhere', voices: { en: 'elsewhere', es: 'elsewhere' }, timeoutMs: 500 };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `config`: top-level config keys merged over the script's base (host, port, auth, in-memory store). */
export async function startLocalService(config: Record<string, unknown>, options: { logLevel?: string; readyTimeoutMs?: number } = {}): Promise<LocalService> {
  const port = 30_000 + Math.floor(Math.random() * 5000);
  const apiKey = randomBytes(16).toString('hex');
  const file = path.join(tmpdir(), `loadtest-service-${process.pid}-${port}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      host: '127.0.0.1',
      port,
      logLevel: options.logLevel ?? 'warn',
      store: { path: ':memory:' },
      auth: { apiKeyHashes: [createHash('sha256').update(apiKey).digest('hex')], tokenTtlS: 300, required: true, generatedKeyFile: null },
      ...config,
    }),
  );
  // The service's logs go to stderr: a load script's stdout is its JSON.
  // LOADTEST_SERVICE_NODE_FLAGS: Node flags for the service alone, e.g. "--cpu-prof --cpu-prof-dir=DIR" to profile it.
  const nodeFlags = process.env.LOADTEST_SERVICE_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', 'src/main.ts', '--config', file], { stdio: ['ignore', process.stderr, 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await Promise.race([exited, sleep(10_000)]);
    rmSync(file, { force: true });
  };
  const deadline = performance.now() + (options.readyTimeoutMs ?? 120_000);
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || performance.now() > deadline) {
      await stop();
      throw new Error('service did not become ready');
    }
    await sleep(300);
  }
  return { child, httpUrl: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/v1/ws`, apiKey, stop };
}
