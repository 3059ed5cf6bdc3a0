/**
 * Which VAD windows need no model: three seconds into a stretch that is either under an absolute level (digital
 * silence, a muted microphone) or steady at the line's own noise floor (a hiss or hum that does not change). The
 * model's answer on such windows is silence, and on an idle device, a caller listening to a long answer or a line
 * on hold they are most of the windows. What changes (a word, a click, babble, music) always goes to the model.
 * SileroVadStream holds its state and probability across the windows this calls quiet (BENCHMARKS.md, "Quiet
 * windows": what that changes in Silero's decisions, and what it saves).
 */
import { NoiseFloor } from '../../audio/noise-floor.js';

export interface QuietWindows {
  /** RMS level of a window, dBFS, under which it is always quiet. */
  levelDbfs: number;
  /** A window at most this far over the line's noise floor (dB) is quiet; null: only the absolute level counts. */
  overFloorDb: number | null;
  /** Quiet windows in a row that still run before the rest are skipped (the model's state settles on the quiet). */
  settleWindows: number;
  /**
   * The same while the VAD is behind real time (SileroBatcher's `behind`): fewer, so a loaded node sheds the model's
   * work on quiet lines instead of hearing every caller late.
   */
  behindSettleWindows: number;
}

/**
 * -60 dBFS: digital silence, a muted or very quiet microphone, a line between G.711's smallest steps; speech is
 * 30–50 dB louder. 3 dB over the floor: a steady noise's 32 ms windows stay within about a dB of their quietest, and
 * speech at 0 dB SNR already doubles the power. 94 windows (3 s): Silero's state keeps changing over a long silence,
 * so no point is exact, and a state held from early in a pause is primed: held from 0.5 s, the next utterance was
 * marked up to 7 frames longer than with every window run (a later endpoint: +40–50 ms voice-to-voice on eSpeak's
 * "What time is it?"); held from 3 s, within two frames (BENCHMARKS.md, "Quiet windows"). Behind real time, 16
 * windows (0.5 s): a turn ended some 40 ms later is the lesser harm next to every onset heard hundreds of ms late
 * (BENCHMARKS.md, "A VAD behind real time").
 */
export const DEFAULT_QUIET_WINDOWS: QuietWindows = { levelDbfs: -60, overFloorDb: 3, settleWindows: 94, behindSettleWindows: 16 };

/** How fast the floor follows a louder line, dB per window (~2.5 dB/s): speech never lifts it far. */
const FLOOR_RISE_DB = 0.08;

/** One stream's quiet detector, fed each window's mean square (samples scaled to ±1). */
export class QuietWindowGate {
  private readonly levelMeanSquare: number;
  private readonly floor = new NoiseFloor(0, FLOOR_RISE_DB);
  private run = 0;

  constructor(private readonly config: QuietWindows) {
    this.levelMeanSquare = 10 ** (config.levelDbfs / 10);
  }

  /** True when this window may be skipped: quiet, after `settleWindows` quiet ones in a row (`behindSettleWindows` when `behind`). */
  push(meanSquare: number, behind = false): boolean {
    this.run = this.quiet(meanSquare) ? this.run + 1 : 0;
    return this.run > (behind ? Math.min(this.config.behindSettleWindows, this.config.settleWindows) : this.config.settleWindows);
  }

  private quiet(meanSquare: number): boolean {
    // Under the absolute level: quiet, and left out of the floor (a dropout's zeros would sink it for seconds).
    if (meanSquare < this.levelMeanSquare) return true;
    const overFloor = this.config.overFloorDb;
    if (overFloor === null) return false;
    const levelDb = 10 * Math.log10(meanSquare);
    return levelDb <= this.floor.push(levelDb) + overFloor;
  }

  reset(): void {
    this.floor.reset();
    this.run = 0;
  }
}

/** `providers.vad`'s quietWindowDbfs and quietOverFloorDb (null: off) over the defaults; null skips no window. */
export function quietWindowsOf(options: { quietWindowDbfs?: number | null; quietOverFloorDb?: number | null }): QuietWindows | null {
  if (options.quietWindowDbfs === null) return null;
  return {
    ...DEFAULT_QUIET_WINDOWS,
    levelDbfs: options.quietWindowDbfs ?? DEFAULT_QUIET_WINDOWS.levelDbfs,
    overFloorDb: options.quietOverFloorDb === undefined ? DEFAULT_QUIET_WINDOWS.overFloorDb : options.quietOverFloorDb,
  };
}
