/**
 * eSpeak NG as a separate process: the `espeak-ng` program of the operating system (Debian's `espeak-ng`
 * package), one process per sentence, WAV on its stdout. It replaces the WASM build that the service would
 * otherwise load into its own process (@echogarden/espeak-ng-emscripten, GPL-3.0): with this engine no GPL code
 * runs inside the service (docs/compliance.md). Text goes on stdin, never on the command line.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { StreamingResampler } from '../../../audio/resample.js';
import { silentLogger } from '../../../core/logger.js';
import type { TtsOptions, TtsProvider } from '../types.js';

const run = promisify(execFile);

/** Defaults where eSpeak's own choice differs from what callers expect. */
const PREFERRED_VOICE: Record<string, string> = { en: 'en-us' };

export interface EspeakProcessTtsOptions {
  /** The program (default `espeak-ng` on PATH). */
  command?: string;
  /** Words per minute (eSpeak default 175). */
  rate?: number;
  logger?: Logger;
}

export class EspeakProcessTts implements TtsProvider {
  readonly name = 'espeak-ng-process';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: true };
  private languageList: string[] = [];
  private readonly command: string;
  private readonly log: Logger;

  constructor(private readonly options: EspeakProcessTtsOptions = {}) {
    this.command = options.command ?? 'espeak-ng';
    this.log = options.logger ?? silentLogger();
  }

  get languages(): readonly string[] {
    return this.languageList;
  }

  async load(): Promise<void> {
    const { stdout } = await run(this.command, ['--voices']);
    const tags = new Set<string>();
    for (const line of stdout.split('\n').slice(1)) {
      const language = line.trim().split(/\s+/)[1];
      if (language) tags.add(language.split('-')[0].toLowerCase());
    }
    this.languageList = [...tags].sort();
    this.log.info({ command: this.command, languages: this.languageList.length }, 'eSpeak NG (separate process) ready');
  }

  async *synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    const primary = options.language.split(/[-_]/)[0].toLowerCase();
    const voice = options.voice ?? PREFERRED_VOICE[primary] ?? options.language.toLowerCase();
    if (!/^[A-Za-z0-9/_+-]{1,40}$/.test(voice)) throw new Error(`invalid eSpeak voice '${voice}'`);
    const child = spawn(this.command, ['-v', voice, '-s', String(this.options.rate ?? 175), '--stdout'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const abort = () => child.kill('SIGKILL');
    options.signal?.addEventListener('abort', abort, { once: true });
    child.stdin.end(text);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    let header = Buffer.alloc(0);
    let resampler: StreamingResampler | null = null;
    let odd: Buffer | null = null;
    try {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        if (options.signal?.aborted) return;
        let data = chunk;
        if (!resampler) {
          header = Buffer.concat([header, data]);
          const at = header.indexOf('data', 12, 'ascii');
          if (at < 0 || header.length < at + 8) continue;
          const rate = header.readUInt32LE(24);
          resampler = await StreamingResampler.create(rate, INTERNAL_SAMPLE_RATE, { timing: 'aligned' });
          data = header.subarray(at + 8);
        }
        if (odd) {
          data = Buffer.concat([odd, data]);
          odd = null;
        }
        if (data.length % 2 === 1) {
          odd = data.subarray(data.length - 1);
          data = data.subarray(0, data.length - 1);
        }
        const samples = new Int16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
        const out = resampler.process(samples);
        if (out.length > 0) yield out;
      }
      const code = await exited;
      if (options.signal?.aborted) return;
      if (code !== 0) throw new Error(`espeak-ng exited with ${code}: ${stderr.trim().slice(0, 200)}`);
      const tail = resampler?.flush();
      if (tail && tail.length > 0) yield tail;
    } finally {
      options.signal?.removeEventListener('abort', abort);
      resampler?.destroy();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }
}
