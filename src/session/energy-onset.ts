import { rmsDbfs } from '../audio/format.js';
import { NoiseFloor } from '../audio/noise-floor.js';

/**
 * A cheap, zero-lag onset detector on frame energy against an adaptive noise floor. Silero needs ~50–100 ms
 * to be sure of speech (longer for fricatives like the "s" of "stop"); this fires on the first loud frames so
 * agent audio can be paused at once. It only ever pauses: the VAD decides whether it was speech.
 */
export class EnergyOnset {
  /** Rises at most 0.05 dB per 20 ms frame. */
  private readonly floor = new NoiseFloor(-60, 0.05);
  private loudRun = 0;
  private lastLoud = false;

  /** Whether the last frame pushed was loud (over the noise floor by the margin, and not echo). */
  get loud(): boolean {
    return this.lastLoud;
  }

  constructor(
    /** How far above the noise floor a frame must be to count as loud, dB. */
    private readonly marginDb = 15,
    /** Quietest level that can count as loud at all, dBFS. */
    private readonly minLevelDb = -50,
    /** Consecutive loud frames needed. */
    private readonly frames = 2,
  ) {}

  /** Feed one frame; true on the frame where an onset is detected. An echo frame is never loud (echo-guard.ts). */
  push(samples: Int16Array, echo = false): boolean {
    const level = Math.max(-100, rmsDbfs(samples));
    const floorDb = this.floor.push(level);
    const loud = !echo && level > this.minLevelDb && level > floorDb + this.marginDb;
    this.lastLoud = loud;
    this.loudRun = loud ? this.loudRun + 1 : 0;
    return this.loudRun === this.frames;
  }
}
