/**
 * Insertion-ordered collections that forget their oldest entries beyond `max`: per-call bookkeeping (ids seen,
 * outputs not yet taken) that must not grow with the length of a call or with what a client chooses to send.
 */
export class BoundedSet<T> implements Iterable<T> {
  private readonly entries = new Set<T>();

  constructor(readonly max: number) {}

  add(value: T): this {
    // Re-adding refreshes: the newest entries are the ones kept.
    this.entries.delete(value);
    this.entries.add(value);
    for (const oldest of this.entries) {
      if (this.entries.size <= this.max) break;
      this.entries.delete(oldest);
    }
    return this;
  }

  has(value: T): boolean {
    return this.entries.has(value);
  }

  delete(value: T): boolean {
    return this.entries.delete(value);
  }

  get size(): number {
    return this.entries.size;
  }

  [Symbol.iterator](): Iterator<T> {
    return this.entries[Symbol.iterator]();
  }
}

export class BoundedMap<K, V> {
  private readonly entries = new Map<K, V>();

  constructor(readonly max: number) {}

  set(key: K, value: V): this {
    this.entries.delete(key);
    this.entries.set(key, value);
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.max) break;
      this.entries.delete(oldest);
    }
    return this;
  }

  get(key: K): V | undefined {
    return this.entries.get(key);
  }

  has(key: K): boolean {
    return this.entries.has(key);
  }

  delete(key: K): boolean {
    return this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
