/**
 * A line's noise floor in dB, tracked frame by frame: it drops at once to a quieter frame and rises at most `riseDb`
 * per frame, so speech (loud but brief, with pauses) barely lifts it while a line that really got noisier is followed.
 */
export class NoiseFloor {
  private floor: number;

  constructor(
    private readonly startDb: number,
    /** Most the floor rises per frame pushed, dB. */
    private readonly riseDb: number,
  ) {
    this.floor = startDb;
  }

  /** Take one frame's level (dB); returns the floor after it. */
  push(levelDb: number): number {
    this.floor = levelDb < this.floor ? levelDb : this.floor + Math.min(this.riseDb, levelDb - this.floor);
    return this.floor;
  }

  reset(): void {
    this.floor = this.startDb;
  }
}
