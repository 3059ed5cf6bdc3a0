import { FRAME_MS } from '../audio/format.js';

/** Declared in ./options.ts (`turn.echoGuard`). */
export { DEFAULT_ECHO_GUARD, type EchoGuardConfig } from './options.js';
import type { EchoGuardConfig } from './options.js';

/** Agent frames quieter than this carry no echo worth modelling (pauses between words), dBFS. */
const FAR_ACTIVE_DB = -45;
/** Frames of evidence a delay needs before its echo model is believed (a real path is steady at once). */
const MIN_EVIDENCE = 12;
/** Loud agent frames after which the line is known: its echo path found, or none there (500 ms of agent speech). */
const SETTLING_FRAMES = 25;
/** After an echo frame, quiet frames are its tail for this long (the VAD's hangover), ms. */
const ECHO_TAIL_MS = 240;
/** Quieter than this a frame in the tail cannot be the caller starting to talk, dBFS (the energy onset's floor). */
const TAIL_QUIET_DB = -50;
/** Slots either side of the echo path searched for the agent frame that a caller frame may echo. */
const AROUND_SLOTS = 2;
/** Caller audio arriving this far from where its frame count puts it is a new start (a gap, a stall), ms. */
const RESYNC_MS = 120;
/** How fast the caller's audio time follows arrival times (per frame). */
const CLOCK_PULL = 0.05;
/** Caller frames remembered for judging a whole turn afterwards (echoShare), 20 ms each. */
const HISTORY_FRAMES = 500;
/** Caller frames quieter than this are line noise, not sound to judge, dBFS. */
const NEAR_SOUND_DB = -60;
/** A believable echo path predicts the caller's level to within this spread (standard deviation, dB). */
const MAX_SPREAD_DB = 4;
/** A path once found is kept while its spread stays within this (network jitter blurs levels for a while). */
const KEEP_SPREAD_DB = 7;
/** Another delay replaces the path only when its spread (variance) is this much smaller. */
const SWITCH_RATIO = 0.5;
/** The model follows a changing line over the last ~50 agent frames (1 s of agent speech). */
const SMOOTHING = 1 / 50;
/** Caller levels are clamped here: digital silence would make every difference look like a model. */
const LEVEL_FLOOR_DB = -90;

/**
 * A line-echo detector for barge-in, in the level domain. Phone lines (hybrids) and speakerphones return the
 * agent's own voice 15–25 dB down and 40–200 ms late; the VAD rightly calls that speech, and the agent would pause
 * for, or be interrupted by, itself. For each candidate delay this keeps a running mean and spread of
 * (agent level then − caller level now); the echo path is the delay at which that difference is steady (the
 * caller's level follows the agent's). A frame is echo when it is no louder than that path predicts plus a
 * margin; then it is not the caller taking the floor. With no echo on the line (a headset, a browser's own
 * canceller) no delay is steady, and nothing is held back. Only barge-in and turn detection use this: the
 * recogniser's audio is never altered.
 */
export class EchoGuard {
  private readonly delays: number;
  private readonly ring: number;
  /** Agent level per 20 ms slot of clock time, and which slot each entry holds (stale entries read as silence). */
  private readonly farPower: Float64Array;
  private readonly farSlot: Float64Array;
  private readonly mean: Float64Array;
  private readonly variance: Float64Array;
  private readonly evidence: Uint32Array;
  /** The caller's last frames' power (mean square), newest last: levels are compared over a few frames. */
  private readonly nearPower = [0, 0, 0];
  /** The caller's frames by slot (power), for judging a turn once the path is known. */
  private readonly nearHistory: Float64Array;
  private readonly nearSlot: Float64Array;
  /** The echo path believed now: its delay in frames, or -1 when none is. */
  private pathDelay = -1;
  /** Loud agent frames sent so far. */
  private agentFrames = 0;
  /** Audio time of the last frame judged echo. */
  private lastEchoMs = -Infinity;
  /** Audio time of the caller's last frame (audioTime). */
  private nearClockMs = -Infinity;

  constructor(private readonly config: EchoGuardConfig) {
    this.delays = Math.max(1, Math.ceil(config.maxDelayMs / FRAME_MS)) + 1;
    // Agent audio is kept as long as caller frames are, so a turn can be judged against it afterwards.
    this.ring = this.delays + 4 + HISTORY_FRAMES;
    this.nearHistory = new Float64Array(HISTORY_FRAMES);
    this.nearSlot = new Float64Array(HISTORY_FRAMES).fill(-1);
    this.farPower = new Float64Array(this.ring);
    this.farSlot = new Float64Array(this.ring).fill(-1);
    this.mean = new Float64Array(this.delays);
    this.variance = new Float64Array(this.delays);
    this.evidence = new Uint32Array(this.delays);
  }

  /** The agent's audio as it leaves for the caller, with the clock time it was sent. */
  agentAudio(samples: Int16Array, atMs: number): void {
    if (!this.config.enabled) return;
    const slot = Math.floor(atMs / FRAME_MS);
    const i = slot % this.ring;
    const power = meanSquare(samples);
    if (dB(power) > FAR_ACTIVE_DB) this.agentFrames++;
    // Frames sent ahead in a burst share a slot: the louder counts.
    if (this.farSlot[i] === slot) this.farPower[i] = Math.max(this.farPower[i], power);
    else {
      this.farSlot[i] = slot;
      this.farPower[i] = power;
    }
  }

  /** One caller frame received at `atMs`: true when it is the agent's own echo rather than the caller. */
  callerFrame(samples: Int16Array, arrivalMs: number): boolean {
    if (!this.config.enabled) return false;
    const atMs = this.audioTime(arrivalMs);
    const slot = Math.floor(atMs / FRAME_MS);
    const power = meanSquare(samples);
    this.nearPower.shift();
    this.nearPower.push(power);
    this.nearHistory[slot % HISTORY_FRAMES] = power;
    this.nearSlot[slot % HISTORY_FRAMES] = slot;
    const path = this.pathDelay;
    let echo = path >= 0 && this.isEcho(slot, power, path);
    // The VAD's memory runs on for a few frames after the echo stops: quiet frames right after echo are its tail.
    if (echo) this.lastEchoMs = atMs;
    else if (atMs - this.lastEchoMs < ECHO_TAIL_MS && dB(power) < TAIL_QUIET_DB) echo = true;
    // Every frame teaches the model; a caller talking over the agent blurs it only briefly (they interrupt it).
    this.learn(slot);
    return echo;
  }

  /**
   * Of the caller's sound between two times (a turn), the share that was the agent's echo, judged with the
   * path known now: the first frames of a call's first reply come before the path is found. Null when no
   * path is known or there was no sound.
   */
  echoShare(fromMs: number, toMs: number): number | null {
    const path = this.pathDelay;
    if (!this.config.enabled || path < 0) return null;
    let sound = 0;
    let echo = 0;
    const last = Math.floor(toMs / FRAME_MS);
    for (let slot = Math.max(Math.floor(fromMs / FRAME_MS), last - HISTORY_FRAMES + 1); slot <= last; slot++) {
      const i = slot % HISTORY_FRAMES;
      if (this.nearSlot[i] !== slot || dB(this.nearHistory[i]) < NEAR_SOUND_DB) continue;
      sound++;
      if (this.isEcho(slot, this.nearHistory[i], path)) echo++;
    }
    return sound === 0 ? null : echo / sound;
  }

  /** No louder than the loudest echo the path predicts for this slot (agent frames around it), plus the margin. */
  private isEcho(slot: number, power: number, path: number): boolean {
    // Audio time on both sides is good to a frame or two (bursts, pacing): the loudest agent frame near the path.
    let loudest = 0;
    for (let s = slot - path - AROUND_SLOTS; s <= slot - path + AROUND_SLOTS; s++) loudest = Math.max(loudest, this.agentPower(s));
    const far = dB(loudest);
    return far > FAR_ACTIVE_DB && dB(power) < far - this.mean[path] + this.config.marginDb;
  }

  /**
   * False while the agent has spoken too little for the line's echo to be known (the call's first reply):
   * until then a caller sound cannot be told from echo, and only words should stop the agent.
   */
  get settled(): boolean {
    return !this.config.enabled || this.pathDelay >= 0 || this.agentFrames >= SETTLING_FRAMES;
  }

  /** The echo path in ms and the loss on it in dB, when one is believed (for logs and tests). */
  get path(): { delayMs: number; lossDb: number } | null {
    return this.pathDelay < 0 ? null : { delayMs: this.pathDelay * FRAME_MS, lossDb: this.mean[this.pathDelay] };
  }

  /** Levels over the last three frames on both sides (syllables rise and fall within a frame or two). */
  private learn(slot: number): void {
    const near = Math.max(LEVEL_FLOOR_DB, dB((this.nearPower[0] + this.nearPower[1] + this.nearPower[2]) / 3));
    let best = -1;
    let bestVariance = MAX_SPREAD_DB * MAX_SPREAD_DB;
    for (let d = 0; d < this.delays; d++) {
      const far = dB((this.agentPower(slot - d - 2) + this.agentPower(slot - d - 1) + this.agentPower(slot - d)) / 3);
      if (far > FAR_ACTIVE_DB) {
        const diff = far - near;
        const n = ++this.evidence[d];
        const alpha = Math.max(SMOOTHING, 1 / n);
        const delta = diff - this.mean[d];
        this.mean[d] += alpha * delta;
        this.variance[d] = (1 - alpha) * (this.variance[d] + alpha * delta * delta);
      }
      if (this.evidence[d] >= MIN_EVIDENCE && this.variance[d] < bestVariance) {
        best = d;
        bestVariance = this.variance[d];
      }
    }
    // A path found is kept while it stays believable, unless another delay fits clearly better.
    const current = this.pathDelay;
    const kept = current >= 0 && this.variance[current] < KEEP_SPREAD_DB * KEEP_SPREAD_DB;
    if (best >= 0 && (!kept || bestVariance < SWITCH_RATIO * this.variance[current])) this.pathDelay = best;
    else if (!kept) this.pathDelay = -1;
  }

  /**
   * The caller's frames arrive in bursts (network, event loop), but each is 20 ms of audio after the one before:
   * their audio time runs on at 20 ms a frame, drawn slowly towards arrival times, and jumps only after a gap.
   */
  private audioTime(arrivalMs: number): number {
    const expected = this.nearClockMs + FRAME_MS;
    const drift = arrivalMs - expected;
    this.nearClockMs = Math.abs(drift) > RESYNC_MS ? arrivalMs : expected + drift * CLOCK_PULL;
    return this.nearClockMs;
  }

  /** The agent's power in one 20 ms slot (0 when nothing was sent then). */
  private agentPower(slot: number): number {
    const i = ((slot % this.ring) + this.ring) % this.ring;
    return this.farSlot[i] === slot ? this.farPower[i] : 0;
  }
}

/** Mean square of a frame, full scale = 1. */
function meanSquare(samples: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return samples.length === 0 ? 0 : sum / samples.length / (32768 * 32768);
}

function dB(power: number): number {
  return power > 0 ? 10 * Math.log10(power) : -Infinity;
}
