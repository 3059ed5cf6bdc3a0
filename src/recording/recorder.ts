import { createWriteStream, mkdirSync, readdirSync, renameSync, rmSync, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import opus from '@discordjs/opus';
import type { Logger } from 'pino';
import { FRAME_MS, FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../audio/format.js';
import { OggOpusWriter } from './ogg.js';
import type { RecordingTap } from '../session/ports.js';

/** Call recordings: off unless enabled (docs/compliance.md); declared in ./options.ts. */
export type { RecordingConfig } from './options.js';
import type { RecordingConfig } from './options.js';

/** Defined by the session (src/session/ports.ts); re-exported for the modules that import it here. */
export type { RecordingTap };

const SLOT_MS = FRAME_MS;
/** Slots are encoded this far behind real time, so late caller frames and early (paced) agent frames find their place. */
const ENCODE_DELAY_SLOTS = 25;
/**
 * A caller who neither refuses nor says anything for this long after the call starts has let the recording go on
 * (the consent line said how to refuse); until then the audio waits in memory, so a refusal leaves no file behind.
 */
const CONSENT_WINDOW_SLOTS = 30_000 / FRAME_MS;
/**
 * A channel this far behind real time had a gap (the agent was silent, the network stalled): it jumps to now and
 * silence fills the gap. Smaller lags are jitter, and frames stay back to back.
 */
const MAX_LAG_SLOTS = 10;

/**
 * Records both sides of one call as stereo Ogg Opus (caller left, agent right) at 16 kHz. Frames are only
 * copied on the audio path; encoding and file writes run on a timer once a second, behind real time, so the
 * call's audio never waits for the disk. Each side is placed on a shared 20 ms timeline by arrival, so the two
 * stay aligned across silences.
 */
export class CallRecorder implements RecordingTap {
  private readonly startedMs = performance.now();
  private readonly left = new Map<number, Int16Array>();
  private readonly right = new Map<number, Int16Array>();
  private nextLeft = 0;
  private nextRight = 0;
  private encodedUpTo = 0;
  private paused = false;
  private state: 'pending' | 'recording' | 'refused' | 'closed' = 'pending';
  private readonly encoder: opus.OpusEncoder;
  private readonly out: WriteStream;
  private readonly ogg: OggOpusWriter;
  private readonly timer: NodeJS.Timeout;
  private bytes = 0;
  readonly partFile: string;
  readonly file: string;

  constructor(
    callId: string,
    private readonly config: RecordingConfig,
    private readonly log: Logger,
    /** Encrypts the file as it is written (store.encryptionKeys): no plain audio ever reaches the disk. */
    seal?: { header(): Buffer; chunk(index: number, data: Buffer): Buffer } | null,
  ) {
    mkdirSync(config.dir, { recursive: true });
    this.file = path.join(config.dir, `${callId.replace(/[^A-Za-z0-9_-]/g, '_')}.ogg`);
    this.partFile = `${this.file}.part`;
    this.out = createWriteStream(this.partFile, { mode: 0o600 });
    this.out.on('error', (err) => this.log.error({ err }, 'recording write failed'));
    let pages = 0;
    if (seal) this.out.write(seal.header());
    this.encoder = new opus.OpusEncoder(INTERNAL_SAMPLE_RATE, 2);
    this.encoder.setBitrate(config.bitrate);
    this.ogg = new OggOpusWriter(
      (page) => {
        const data = seal ? seal.chunk(pages++, page) : page;
        this.bytes += data.length;
        this.out.write(data);
      },
      { channels: 2, inputSampleRate: INTERNAL_SAMPLE_RATE },
    );
    this.timer = setInterval(() => this.encode(this.slotNow() - ENCODE_DELAY_SLOTS), 1000);
    this.timer.unref();
  }

  caller(samples: Int16Array): void {
    this.nextLeft = this.place(this.left, this.nextLeft, samples);
  }

  agent(samples: Int16Array): void {
    this.nextRight = this.place(this.right, this.nextRight, samples);
  }

  sensitive(on: boolean): void {
    if (on !== this.paused) this.log.info({ paused: on }, on ? 'recording paused: sensitive answer' : 'recording resumed');
    this.paused = on;
  }

  consent(given: boolean): void {
    if (this.state !== 'pending') return;
    this.state = given ? 'recording' : 'refused';
    this.log.info({ consent: given }, given ? 'recording: caller did not object' : 'recording refused by the caller: discarded');
    if (!given) {
      this.left.clear();
      this.right.clear();
    }
  }

  /**
   * Ends the recording: the file (renamed from `.part`) and its size, or null when the caller refused or
   * nothing could be written.
   */
  async close(): Promise<{ file: string; bytes: number } | null> {
    if (this.state === 'closed') return null;
    const refused = this.state === 'refused';
    // A call that ended before the caller answered the consent line: they heard it and did not refuse.
    if (this.state === 'pending') this.state = 'recording';
    clearInterval(this.timer);
    if (!refused) this.encode(Math.max(this.nextLeft, this.nextRight));
    this.state = 'closed';
    this.ogg.flush(true);
    await new Promise<void>((resolve) => this.out.end(resolve));
    if (refused) {
      rmSync(this.partFile, { force: true });
      return null;
    }
    try {
      renameSync(this.partFile, this.file);
      return { file: this.file, bytes: statSync(this.file).size };
    } catch (err) {
      this.log.error({ err }, 'recording could not be kept');
      return null;
    }
  }

  private slotNow(): number {
    return Math.floor((performance.now() - this.startedMs) / SLOT_MS);
  }

  private place(channel: Map<number, Int16Array>, next: number, samples: Int16Array): number {
    if (this.state === 'refused' || this.state === 'closed') return next;
    const now = this.slotNow();
    const slot = Math.max(next < now - MAX_LAG_SLOTS ? now : next, this.encodedUpTo);
    // Paused: the slot passes as silence.
    if (!this.paused && samples.length === FRAME_SAMPLES) channel.set(slot, samples.slice());
    return slot + 1;
  }

  private encode(upTo: number): void {
    // Until the caller answers the consent line nothing reaches the file (a refusal must leave no trace).
    if (this.state === 'pending') {
      if (this.slotNow() < CONSENT_WINDOW_SLOTS) return;
      this.consent(true);
    }
    const stereo = new Int16Array(FRAME_SAMPLES * 2);
    for (; this.encodedUpTo < upTo; this.encodedUpTo++) {
      const l = this.left.get(this.encodedUpTo);
      const r = this.right.get(this.encodedUpTo);
      this.left.delete(this.encodedUpTo);
      this.right.delete(this.encodedUpTo);
      for (let i = 0; i < FRAME_SAMPLES; i++) {
        stereo[2 * i] = l ? l[i] : 0;
        stereo[2 * i + 1] = r ? r[i] : 0;
      }
      try {
        const packet = this.encoder.encode(Buffer.from(stereo.buffer, stereo.byteOffset, stereo.byteLength));
        this.ogg.packet(packet, (48_000 * SLOT_MS) / 1000);
      } catch (err) {
        this.log.error({ err }, 'recording encode failed');
        return;
      }
    }
  }
}

/** Deletes recording files older than `retentionDays` (also `.part` files a crash left behind). */
export function sweepRecordings(dir: string, retentionDays: number, log: Logger): number {
  if (retentionDays <= 0) return 0;
  const cutoff = Date.now() - retentionDays * 24 * 3600 * 1000;
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!/\.ogg(\.part)?$/.test(name)) continue;
    const file = path.join(dir, name);
    try {
      if (statSync(file).mtimeMs < cutoff) {
        rmSync(file, { force: true });
        removed++;
      }
    } catch {
      // Gone meanwhile.
    }
  }
  if (removed > 0) log.info({ removed, retentionDays }, 'old recordings deleted');
  return removed;
}
