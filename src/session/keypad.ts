import type { Clock, TimerHandle } from './clock.js';

/**
 * Gathers keypad digits into one entry: it ends on '#' or after `timeoutMs` without a new key, and is handed
 * on whole ('#' itself is not part of it). An entry of only '#' is nothing.
 */
export class KeypadEntry {
  private keys = '';
  private timer: TimerHandle | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly timeoutMs: number,
    private readonly onEntry: (keys: string) => void,
  ) {}

  /** The keys of the entry in progress. */
  get pending(): string {
    return this.keys;
  }

  push(key: string): void {
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    if (key === '#') {
      this.flush();
      return;
    }
    this.keys += key;
    this.timer = this.clock.setTimeout(() => this.flush(), this.timeoutMs);
  }

  /** Forget the entry in progress (the call ended). */
  cancel(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.keys = '';
  }

  private flush(): void {
    this.timer = null;
    const keys = this.keys;
    this.keys = '';
    if (keys) this.onEntry(keys);
  }
}
