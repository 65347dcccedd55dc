/**
 * One shard of the `memcache` handler's cache: the items whose keys this worker owns, in least-
 * recently-used order, within a memory cap, with memcached's expiry, CAS and counters.
 *
 * Runs inside a worker; each worker owns one store, and only that worker touches it (requests
 * for its keys arrive over `Peers`), so every operation on a key is atomic.
 *
 * Memory is counted as memcached counts it: key, value and a fixed per-item overhead
 * ({@linkcode ITEM_OVERHEAD}). The JavaScript objects around an item cost more than that, so the
 * process holds more than the cap (see README).
 *
 * @module
 */

/** Bytes counted per item on top of its key and value, as memcached's item header. */
export const ITEM_OVERHEAD = 48;

/** One cached item. Values are never changed in place: a new value is a new array. */
export interface Item {
  value: Uint8Array;
  flags: number;
  /** Expiry as `Date.now()` milliseconds; 0 = never. */
  expiresAt: number;
  cas: number;
  /** Bytes counted against the cap. */
  size: number;
  /** `Date.now()` when stored, for `flush_all` with a delay. */
  storedAt: number;
}

/** How a storage command stores. */
export type StoreMode = "set" | "add" | "replace" | "append" | "prepend" | "cas";

/** What a storage command did, as memcached answers it. */
export type StoreResult = "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" | "NO_MEMORY";

/** The counters `stats` reports for a shard; every one only grows but the gauges. */
export interface ShardStats {
  /** Keys looked up by get, gets, gat, gats. */
  cmd_get: number;
  cmd_set: number;
  cmd_touch: number;
  get_hits: number;
  get_misses: number;
  get_expired: number;
  get_flushed: number;
  delete_hits: number;
  delete_misses: number;
  incr_hits: number;
  incr_misses: number;
  decr_hits: number;
  decr_misses: number;
  cas_hits: number;
  cas_misses: number;
  cas_badval: number;
  touch_hits: number;
  touch_misses: number;
  /** Items removed to make room while still live. */
  evictions: number;
  /** Expired items removed (found on access, or made room). */
  reclaimed: number;
  /** Items stored since start. */
  total_items: number;
  /** Gauge: items now. */
  curr_items: number;
  /** Gauge: bytes counted now. */
  bytes: number;
  /** Gauge: this shard's cap. */
  limit_maxbytes: number;
}

/** The counters a store keeps itself; the gauges are read when asked. */
type Counts = Omit<ShardStats, "curr_items" | "bytes" | "limit_maxbytes">;

const MAX_U64 = (1n << 64n) - 1n;
const encoder = new TextEncoder();

/** One worker's shard. */
export class ShardStore {
  #items = new Map<string, Item>();
  #limit: number;
  #used = 0;
  #casNext = 1;
  #casStride: number;
  #casOffset: number;
  /** Items stored at or before this time are gone (`flush_all`); 0 = none. */
  #flushedUpTo = 0;
  #counts: Counts = {
    cmd_get: 0,
    cmd_set: 0,
    cmd_touch: 0,
    get_hits: 0,
    get_misses: 0,
    get_expired: 0,
    get_flushed: 0,
    delete_hits: 0,
    delete_misses: 0,
    incr_hits: 0,
    incr_misses: 0,
    decr_hits: 0,
    decr_misses: 0,
    cas_hits: 0,
    cas_misses: 0,
    cas_badval: 0,
    touch_hits: 0,
    touch_misses: 0,
    evictions: 0,
    reclaimed: 0,
    total_items: 0,
  };

  /**
   * @param limit Most bytes counted (see {@linkcode ITEM_OVERHEAD}).
   * @param shard This shard's index, and `shards` their number: CAS values are unique across
   *   all shards (`n * shards + shard`).
   * @param shards How many shards there are.
   */
  constructor(limit: number, shard = 0, shards = 1) {
    this.#limit = limit;
    this.#casOffset = shard;
    this.#casStride = shards;
  }

  /**
   * Looks an item up for a retrieval command, making it the most recently used.
   *
   * @param key The key.
   * @param now `Date.now()`.
   * @param touch A new expiry (`gat`), or undefined.
   * @returns The item, or undefined on a miss.
   */
  get(key: string, now: number, touch?: number): Item | undefined {
    this.#counts.cmd_get++;
    if (touch !== undefined) this.#counts.cmd_touch++;
    const item = this.#live(key, now, true);
    if (item === undefined) {
      this.#counts.get_misses++;
      if (touch !== undefined) this.#counts.touch_misses++;
      return undefined;
    }
    this.#counts.get_hits++;
    if (touch !== undefined) {
      this.#counts.touch_hits++;
      item.expiresAt = touch;
    }
    this.#bump(key, item);
    return item;
  }

  /**
   * A storage command: set, add, replace, append, prepend or cas.
   *
   * @param mode Which.
   * @param key The key.
   * @param value The data block (kept as is: the caller gives up the array).
   * @param flags Opaque 32-bit flags (ignored by append and prepend).
   * @param expiresAt Expiry (ignored by append and prepend); negative = already expired.
   * @param now `Date.now()`.
   * @param cas For `cas`: the value the client last saw.
   * @returns memcached's answer.
   */
  store(
    mode: StoreMode,
    key: string,
    value: Uint8Array,
    flags: number,
    expiresAt: number,
    now: number,
    cas = 0,
  ): StoreResult {
    this.#counts.cmd_set++;
    const existing = this.#live(key, now, false);
    switch (mode) {
      case "add":
        if (existing !== undefined) {
          this.#bump(key, existing); // memcached bumps on a failed add, too
          return "NOT_STORED";
        }
        break;
      case "replace":
        if (existing === undefined) return "NOT_STORED";
        break;
      case "append":
      case "prepend": {
        if (existing === undefined) return "NOT_STORED";
        const joined = new Uint8Array(existing.value.length + value.length);
        joined.set(mode === "append" ? existing.value : value);
        joined.set(
          mode === "append" ? value : existing.value,
          mode === "append" ? existing.value.length : value.length,
        );
        return this.#put(key, joined, existing.flags, existing.expiresAt, now);
      }
      case "cas":
        if (existing === undefined) {
          this.#counts.cas_misses++;
          return "NOT_FOUND";
        }
        if (existing.cas !== cas) {
          this.#counts.cas_badval++;
          return "EXISTS";
        }
        this.#counts.cas_hits++;
        break;
      case "set":
        break;
      default: {
        const _never: never = mode;
        throw new TypeError(`Unknown store mode ${_never}`);
      }
    }
    if (expiresAt < 0 || (expiresAt > 0 && expiresAt <= now)) {
      // Stored and at once expired, as memcached does: the old value is gone too.
      this.#remove(key);
      return "STORED";
    }
    return this.#put(key, value, flags, expiresAt, now);
  }

  /**
   * Deletes an item.
   *
   * @param key The key.
   * @param now `Date.now()`.
   * @returns Whether it was there.
   */
  delete(key: string, now: number): boolean {
    if (this.#live(key, now, false) === undefined) {
      this.#counts.delete_misses++;
      return false;
    }
    this.#counts.delete_hits++;
    this.#remove(key);
    return true;
  }

  /**
   * incr or decr: the value, read as a decimal 64-bit unsigned integer, plus or minus `delta`
   * (incr wraps at 2^64, decr stops at 0).
   *
   * @param key The key.
   * @param incr True for incr, false for decr.
   * @param delta The amount.
   * @param now `Date.now()`.
   * @returns The new value as text, `NOT_FOUND`, or `NON_NUMERIC` if the value is no number.
   */
  arith(key: string, incr: boolean, delta: bigint, now: number): string {
    const item = this.#live(key, now, false);
    if (item === undefined) {
      if (incr) this.#counts.incr_misses++;
      else this.#counts.decr_misses++;
      return "NOT_FOUND";
    }
    const current = parseU64(item.value);
    if (current === undefined) return "NON_NUMERIC";
    if (incr) this.#counts.incr_hits++;
    else this.#counts.decr_hits++;
    const next = incr ? (current + delta) & MAX_U64 : current > delta ? current - delta : 0n;
    const text = next.toString();
    this.#put(key, encoder.encode(text), item.flags, item.expiresAt, now);
    return text;
  }

  /**
   * Sets a new expiry on an item.
   *
   * @param key The key.
   * @param expiresAt The new expiry; negative = now.
   * @param now `Date.now()`.
   * @returns Whether it was there.
   */
  touch(key: string, expiresAt: number, now: number): boolean {
    this.#counts.cmd_touch++;
    const item = this.#live(key, now, false);
    if (item === undefined) {
      this.#counts.touch_misses++;
      return false;
    }
    this.#counts.touch_hits++;
    item.expiresAt = expiresAt;
    this.#bump(key, item);
    return true;
  }

  /**
   * `flush_all`: every item stored up to `at` is gone from then on.
   *
   * @param at `Date.now()` time from which the flush holds (now, or later with a delay).
   * @param now `Date.now()`.
   */
  flush(at: number, now: number): void {
    if (at <= now) {
      this.#items.clear();
      this.#used = 0;
      this.#flushedUpTo = 0;
      return;
    }
    this.#flushedUpTo = Math.max(this.#flushedUpTo, at);
  }

  /** The counters and gauges, for `stats`. */
  stats(): ShardStats {
    return {
      ...this.#counts,
      curr_items: this.#items.size,
      bytes: this.#used,
      limit_maxbytes: this.#limit,
    };
  }

  /** `stats reset`: the counters back to 0 (the gauges stay). */
  resetStats(): void {
    for (const name of Object.keys(this.#counts) as (keyof Counts)[]) {
      this.#counts[name] = 0;
    }
  }

  /** The live item for `key`, or undefined; an expired or flushed one is removed on the way. */
  #live(key: string, now: number, forGet: boolean): Item | undefined {
    const item = this.#items.get(key);
    if (item === undefined) return undefined;
    const flushed = this.#flushedUpTo !== 0 && now >= this.#flushedUpTo &&
      item.storedAt <= this.#flushedUpTo;
    const expired = item.expiresAt !== 0 && item.expiresAt <= now;
    if (!flushed && !expired) return item;
    if (forGet) {
      if (flushed) this.#counts.get_flushed++;
      else this.#counts.get_expired++;
    }
    this.#counts.reclaimed++;
    this.#remove(key);
    return undefined;
  }

  #put(key: string, value: Uint8Array, flags: number, expiresAt: number, now: number) {
    const size = key.length + value.length + ITEM_OVERHEAD;
    this.#remove(key);
    if (size > this.#limit) return "NO_MEMORY";
    // Least recently used first: a Map iterates in insertion order, and a use re-inserts.
    for (const [oldest, item] of this.#items) {
      if (this.#used + size <= this.#limit) break;
      const expired = item.expiresAt !== 0 && item.expiresAt <= now;
      if (expired) this.#counts.reclaimed++;
      else this.#counts.evictions++;
      this.#remove(oldest);
    }
    const cas = this.#casNext++ * this.#casStride + this.#casOffset;
    this.#items.set(key, { value, flags, expiresAt, cas, size, storedAt: now });
    this.#used += size;
    this.#counts.total_items++;
    return "STORED";
  }

  #remove(key: string): void {
    const item = this.#items.get(key);
    if (item === undefined) return;
    this.#items.delete(key);
    this.#used -= item.size;
  }

  #bump(key: string, item: Item): void {
    this.#items.delete(key);
    this.#items.set(key, item);
  }
}

/** A value as a decimal 64-bit unsigned integer, or undefined if it is not one. */
function parseU64(value: Uint8Array): bigint | undefined {
  if (value.length === 0 || value.length > 20) return undefined;
  let text = "";
  for (const byte of value) {
    if (byte < 0x30 || byte > 0x39) return undefined;
    text += String.fromCharCode(byte);
  }
  const n = BigInt(text);
  return n > MAX_U64 ? undefined : n;
}
