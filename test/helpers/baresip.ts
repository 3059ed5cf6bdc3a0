/**
 * A real SIP phone for tests: Debian's baresip with a WAV file as its microphone (aufile), what it hears
 * dumped to WAV (sndfile), driven over its ctrl_tcp JSON interface. Everything stays on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import dgram from 'node:dgram';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { encodeWav, parseWav } from '../../src/audio/wav.js';
import { rmsDbfs } from '../../src/audio/format.js';
import { readFile } from 'node:fs/promises';

export interface BaresipEvent {
  type: string;
  param?: string;
  atMs: number;
}

/** A free port on 127.0.0.1 for both UDP and TCP (baresip listens on both). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = dgram.createSocket('udp4');
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
}

/** 16-bit stereo WAV with the mono signal on both channels. */
function stereoWav(mono: Int16Array, rate: number): Buffer {
  const data = Buffer.alloc(mono.length * 4);
  for (let i = 0; i < mono.length; i++) {
    data.writeInt16LE(mono[i], i * 4);
    data.writeInt16LE(mono[i], i * 4 + 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(2, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 4, 28);
  header.writeUInt16LE(4, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

export class Baresip {
  readonly events: BaresipEvent[] = [];
  readonly log: string[] = [];
  private proc: ChildProcess | null = null;
  private ctrl: net.Socket | null = null;
  private rx = Buffer.alloc(0);
  private token = 0;
  private readonly pending = new Map<string, (r: { ok: boolean; data: string }) => void>();

  private constructor(readonly dir: string) {}

  /**
   * Start baresip with `microphone` as its audio source: PCM16 at 8 kHz for G.711 (the default), at 48 kHz
   * with `codec: 'opus'` (aufile wants the codec's rate). `caFile`: the CA it trusts for SIP over TLS (dial a
   * `;transport=tls` URI); `srtp`: offer RTP/SAVP with SDES keys and refuse plain RTP (mediaenc=srtp-mand).
   */
  static async start(microphone: Int16Array, options: { codec?: 'g711' | 'opus'; caFile?: string; srtp?: boolean } = {}): Promise<Baresip> {
    const opus = options.codec === 'opus';
    const dir = await mkdtemp(path.join(tmpdir(), 'baresip-'));
    const phone = new Baresip(dir);
    const [sipPort, ctrlPort] = [await freePort(), await freePort()];
    const rtpBase = 30_000 + 2 * Math.floor(Math.random() * 10_000);
    // baresip's Opus runs 2 channels at 48 kHz, and aufile wants exactly the codec's format.
    await writeFile(path.join(dir, 'mic.wav'), opus ? stereoWav(microphone, 48_000) : encodeWav(microphone, 8000));
    await writeFile(
      path.join(dir, 'config'),
      [
        'poll_method epoll',
        `sip_listen 127.0.0.1:${sipPort}`,
        'net_interface 127.0.0.1',
        `audio_source aufile,${path.join(dir, 'mic.wav')}`,
        // No sound card: the player is a bridge nobody listens to; sndfile records the decoded audio.
        'audio_player aubridge,speaker',
        'audio_alert aubridge,speaker',
        `rtp_ports ${rtpBase}-${rtpBase + 20}`,
        'module_path /usr/lib/baresip/modules',
        opus ? 'module opus.so' : 'module g711.so',
        'module aufile.so',
        'module aubridge.so',
        'module sndfile.so',
        'module_app account.so',
        'module_app menu.so',
        'module_app ctrl_tcp.so',
        `ctrl_tcp_listen 127.0.0.1:${ctrlPort}`,
        `snd_path ${dir}`,
        ...(options.caFile ? [`sip_cafile ${options.caFile}`] : []),
        ...(options.srtp ? ['module srtp.so'] : []),
        '',
      ].join('\n'),
    );
    await writeFile(path.join(dir, 'accounts'), `<sip:caller@127.0.0.1>;regint=0${options.srtp ? ';mediaenc=srtp-mand' : ''}\n`);
    phone.proc = spawn('baresip', ['-s', '-f', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (d: Buffer) => phone.log.push(d.toString());
    phone.proc.stdout?.on('data', collect);
    phone.proc.stderr?.on('data', collect);
    const deadline = performance.now() + 10_000;
    for (;;) {
      try {
        await phone.connect(ctrlPort);
        return phone;
      } catch {
        if (performance.now() > deadline || phone.proc.exitCode !== null) throw new Error(`baresip did not start:\n${phone.log.join('')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private connect(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        this.ctrl = socket;
        resolve();
      });
      socket.once('error', reject);
      socket.on('data', (d: Buffer) => this.onData(d));
    });
  }

  /** ctrl_tcp speaks netstrings of JSON. */
  private onData(d: Buffer): void {
    this.rx = Buffer.concat([this.rx, d]);
    for (;;) {
      const colon = this.rx.indexOf(':');
      if (colon < 0) return;
      const len = Number(this.rx.subarray(0, colon).toString());
      if (this.rx.length < colon + 1 + len + 1) return;
      const json = this.rx.subarray(colon + 1, colon + 1 + len).toString();
      this.rx = this.rx.subarray(colon + 1 + len + 1);
      const msg = JSON.parse(json) as { event?: boolean; type?: string; param?: string; response?: boolean; ok?: boolean; data?: string; token?: string };
      if (msg.event && msg.type) this.events.push({ type: msg.type, param: msg.param, atMs: performance.now() });
      if (msg.response && msg.token) this.pending.get(msg.token)?.({ ok: msg.ok ?? false, data: msg.data ?? '' });
    }
  }

  command(command: string, params = ''): Promise<{ ok: boolean; data: string }> {
    const token = String(++this.token);
    const json = JSON.stringify({ command, params, token });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`baresip command ${command} got no answer`)), 5000);
      this.pending.set(token, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.ctrl?.write(`${Buffer.byteLength(json)}:${json},`);
    });
  }

  async waitFor(type: string, timeoutMs = 10_000, since = 0): Promise<BaresipEvent> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.type === type && e.atMs >= since);
      if (found) return found;
      if (performance.now() > deadline) throw new Error(`baresip: no ${type} event; got ${this.events.map((e) => `${e.type}(${e.param ?? ''})`).join(', ')}\n${this.log.join('').slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** What baresip decoded from the call (sndfile's "-dec" dump), mono PCM16 at the codec's rate. */
  async heard(): Promise<{ samples: Int16Array; sampleRate: number }> {
    const files = (await readdir(this.dir)).filter((f) => f.startsWith('dump-') && f.endsWith('-dec.wav'));
    if (files.length === 0) throw new Error(`no decoded-audio dump in ${this.dir}: ${(await readdir(this.dir)).join(', ')}`);
    const wav = parseWav(await readFile(path.join(this.dir, files.sort().at(-1)!)));
    return { samples: wav.samples, sampleRate: wav.sampleRate };
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      try {
        await this.command('quit');
      } catch {
        /* already gone */
      }
      const proc = this.proc;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          resolve();
        }, 3000);
        proc.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.ctrl?.destroy();
  }

  /** Milliseconds of `heard()` audio louder than `dbfs` (20 ms frames), and the loudest frame. */
  async voicedMs(dbfs = -40): Promise<{ voicedMs: number; loudest: number; seconds: number }> {
    const { samples, sampleRate } = await this.heard();
    const frame = sampleRate / 50;
    let voiced = 0;
    let loudest = -Infinity;
    for (let i = 0; i + frame <= samples.length; i += frame) {
      const level = rmsDbfs(samples.subarray(i, i + frame));
      if (level > dbfs) voiced++;
      loudest = Math.max(loudest, level);
    }
    return { voicedMs: voiced * 20, loudest, seconds: samples.length / sampleRate };
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
