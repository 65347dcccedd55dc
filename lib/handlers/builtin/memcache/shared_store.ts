/**
 * The `memcache` handler's cache: one store in a `SharedArrayBuffer` that every worker reads
 * and writes, laid out the way memcached lays out its own memory (one hash table, slab classes of
 * items in 1 MiB pages, one LRU per class, a CAS counter), behind one lock taken with `Atomics`.
 *
 * Runs inside every worker (each wraps the same buffer); the main thread hands the buffer out.
 *
 * Why this design, measured (2026-12-02, 2-core VM, `memcslap -t get -c 8`): with a shard per
 * worker and messages between them (the previous design), two workers served 26-27k gets/s and
 * one worker, where every key is local, 47-48k; a build where each worker served every key from
 * its own shard (no messages) was no faster than the messages. Each request cost a full wake-up of
 * a Deno worker (17 us of CPU, where memcached's costs 13), so the cost to cut was the handler's
 * own work per request, and any thread crossing: here every key is served where its request
 * arrives, in a few microseconds, with no allocation. memcached itself has one table and fine
 * locks; with the few threads a Deno server runs, one lock held for microseconds is simpler and
 * does not contend.
 *
 * Memory is what `memory` says, as memcached's `-m`: the pages are that many bytes of the buffer,
 * an item takes a chunk of its slab class, and `bytes` counts what memcached counts (header, key,
 * flags, CAS and value). The hash table and the counters come on top (a few MiB, reported as
 * `hash_bytes`). Items never move and nothing outside the lock refers to one, so a chunk is free
 * to reuse as soon as its item is unlinked.
 *
 * All item functions require the lock (`lock` / `unlock`); the functions that take it themselves
 * say so.
 *
 * @module
 */

/** memcached's `sizeof(item)` on 64-bit: `bytes` and the item size limit count it. */
const MEMCACHED_ITEM_HEADER = 48;
/** memcached's CAS field, counted in every item (CAS is on). */
const CAS_BYTES = 8;
/** memcached's `-n` default: the smallest chunk is its header plus this. */
const CHUNK_SIZE = 48;
/** memcached's `-f` default. */
const GROWTH_FACTOR = 1.25;
/** Longest key. */
export const KEY_MAX_LENGTH = 250;
/** memcached's `ITEM_UPDATE_INTERVAL`: an item's access time moves at most this often. */
const ITEM_UPDATE_INTERVAL = 60;
/** memcached starts its clock this far in the past, so that no time is ever 0. */
const CLOCK_OFFSET = ITEM_UPDATE_INTERVAL + 2;
/** How many active items one allocation may spare before it evicts one anyway. */
const EVICTION_SPARES = 5;
/** memcached's `REALTIME_MAXDELTA`: larger expiry times are Unix times. */
const REALTIME_MAXDELTA = 60 * 60 * 24 * 30;

/** Item flags, as memcached's `it_flags`. */
export const ItemFlag = {
  LINKED: 1,
  FETCHED: 2,
  STALE: 4,
  TOKEN_SENT: 8,
  KEY_BINARY: 16,
  /** Fetched twice: spared once by eviction (memcached's `ITEM_ACTIVE`). */
  ACTIVE: 32,
} as const;

// Our item header, in 32-bit words from the chunk's start (the key follows, then the value).
const H_NEXT = 0; // next item in its hash chain (item ref), or 0
const L_PREV = 1; // LRU neighbours (item refs), 0 at the ends
const L_NEXT = 2;
const TIME = 3; // last access, in clock seconds
const EXPTIME = 4; // expiry, in clock seconds; 0 = never
const NBYTES = 5; // value length
const CLIENT_FLAGS = 6; // the client's 32-bit flags (stored as int32)
const META = 7; // it_flags (bits 0-15), slab class (16-23), key length (24-31)
const CAS_LO = 8; // CAS value as a float64 over words 8-9
const HEADER_WORDS = 10;
const HEADER_BYTES = HEADER_WORDS * 4;

// The control block at the buffer's start, in 32-bit words (float64 fields at even words).
const C_LOCK = 0;
const C_WAITERS = 1;
const C_CAS = 2; // f64
const C_OLDEST_LIVE = 4; // i32: memcached's settings.oldest_live
const C_OLDEST_CAS = 6; // f64
const C_STARTED = 8; // f64: Unix seconds of process_started
const C_PAGES_USED = 10;
const C_BUCKETS = 11;
const C_ROWS_USED = 12; // stats rows handed out
const C_CURR_ITEMS = 14; // f64 gauges and totals of the store (under the lock)
const C_TOTAL_ITEMS = 16;
const C_BYTES = 18;
const C_EVICTIONS = 20;
const C_RECLAIMED = 22;
const C_EXPIRED_UNFETCHED = 24;
const C_EVICTED_UNFETCHED = 26;
const C_EVICTED_ACTIVE = 28;
const C_VERBOSITY = 30; // i32: what `verbosity` last set
const CONTROL_WORDS = 64;

/** Per slab class, in 32-bit words. */
const K_CHUNK = 0;
const K_PER_PAGE = 1;
const K_FREE = 2; // free chunk list head (item ref)
const K_FREE_COUNT = 3;
const K_CARVE = 4; // next never-used chunk of the class's newest page (item ref), or 0
const K_CARVE_LEFT = 5;
const K_HEAD = 6; // LRU, most recent first
const K_TAIL = 7;
const K_PAGES = 8;
const K_ITEMS = 9;
const K_EVICTED = 10;
const K_OOM = 11;
const K_RECLAIMED = 12;
const CLASS_WORDS = 16;
const MAX_CLASSES = 64;

/**
 * Counters each worker keeps in a row of its own (no lock: one writer per row), as memcached
 * keeps them per thread.
 */
export const Stat = {
  cmd_get: 0,
  cmd_flush: 1,
  cmd_touch: 2,
  cmd_meta: 3,
  get_misses: 4,
  get_expired: 5,
  get_flushed: 6,
  delete_misses: 7,
  incr_misses: 8,
  decr_misses: 9,
  cas_misses: 10,
  touch_misses: 11,
  store_too_large: 12,
  store_no_memory: 13,
  bytes_read: 14,
  bytes_written: 15,
  curr_connections: 16,
  total_connections: 17,
} as const;

/**
 * Counters kept per slab class, under the lock (memcached's `slab_stats`); the totals of
 * `stats` are their sums.
 */
export const ClassStat = {
  get_hits: 0,
  cmd_set: 1,
  delete_hits: 2,
  incr_hits: 3,
  decr_hits: 4,
  cas_hits: 5,
  cas_badval: 6,
  touch_hits: 7,
} as const;
const CLASS_COUNTERS = 8;
const ROW_FIELDS = 32;
/** A row's last sign of life (Unix seconds): the row's connections count while it is recent. */
const ROW_LEASE = ROW_FIELDS - 1;
/** A row whose worker has not renewed its lease for this long is a dead worker's. */
const LEASE_SECONDS = 3;
/** Rows for workers; a reload makes new ones, and past this many they are reused. */
const MAX_ROWS = 1024;

/** Why an allocation failed, as memcached answers it. */
export const TOO_LARGE = -1;
/** No memory for the item, even after evicting. */
export const NO_MEMORY = -2;

/** A decoded item header, for the protocol code. */
export interface ItemInfo {
  ref: number;
  nbytes: number;
  flags: number;
  exptime: number;
  time: number;
  itFlags: number;
  classId: number;
  nkey: number;
  cas: number;
}

/** The store's gauges and totals, as memcached names them. */
export interface StoreGlobals {
  bytes: number;
  curr_items: number;
  total_items: number;
  evictions: number;
  reclaimed: number;
  expired_unfetched: number;
  evicted_unfetched: number;
  evicted_active: number;
  total_malloced: number;
}

/** Settings a store is made with. */
export interface StoreSettings {
  /** Bytes of item memory (memcached's `-m`). */
  memory: number;
  /** Largest item, header included (memcached's `-I`). */
  itemSizeMax: number;
}

/**
 * What one store needs, in bytes, for these settings: control block, slab class table, stats rows,
 * hash table and pages.
 *
 * @param settings Memory and item size.
 * @returns The buffer's size.
 */
export function storeSize(settings: StoreSettings): number {
  const { pageSize, pages, buckets } = geometry(settings);
  return pagesOffset(buckets) + pageSize * pages;
}

function geometry(settings: StoreSettings) {
  const pageSize = Math.max(1024 * 1024, settings.itemSizeMax);
  const pages = Math.max(1, Math.floor(settings.memory / pageSize));
  // memcached grows its table at 1.5 items per bucket; this one cannot grow, so it is sized for
  // the most items the memory can hold (smallest chunks), at one per bucket, from 2^16 up.
  let buckets = 1 << 16;
  while (buckets < settings.memory / (MEMCACHED_ITEM_HEADER + CHUNK_SIZE)) buckets *= 2;
  return { pageSize, pages, buckets };
}

const CLASSES_OFFSET = CONTROL_WORDS * 4;
/** Bytes counted per class (memcached's `mem_requested`), a float64 each. */
const REQUESTED_OFFSET = CLASSES_OFFSET + MAX_CLASSES * CLASS_WORDS * 4;
const COUNTERS_OFFSET = REQUESTED_OFFSET + MAX_CLASSES * 8;
const ROWS_OFFSET = COUNTERS_OFFSET + MAX_CLASSES * CLASS_COUNTERS * 8;
const BUCKETS_OFFSET = ROWS_OFFSET + MAX_ROWS * ROW_FIELDS * 8;
function pagesOffset(buckets: number): number {
  return BUCKETS_OFFSET + buckets * 4;
}

/** The cache every worker shares. */
export class SharedStore {
  /** The shared memory. */
  readonly buffer: SharedArrayBuffer;
  /** Bytes of item memory. */
  readonly memory: number;
  /** Largest item, header included. */
  readonly itemSizeMax: number;
  /** The size of a page. */
  readonly pageSize: number;
  /** Number of pages. */
  readonly pages: number;
  /** Hash table buckets. */
  readonly buckets: number;
  /** Slab classes in use (1 to `classes - 1`; class 0 is unused, as in memcached). */
  readonly classes: number;
  /** This worker's counters. */
  readonly stats: Float64Array;
  #control: Int32Array;
  #controlF: Float64Array;
  #classTable: Int32Array;
  #requested: Float64Array;
  #counters: Float64Array;
  #table: Int32Array;
  #words: Int32Array;
  #floats: Float64Array;
  #bytes: Uint8Array;
  #pagesOffset: number;
  #rows: Float64Array;

  /**
   * Wraps a store's buffer; the first worker to wrap a new (zeroed) buffer lays it out.
   *
   * @param buffer The shared memory ({@linkcode storeSize} bytes).
   * @param settings The settings it was made for.
   */
  constructor(buffer: SharedArrayBuffer, settings: StoreSettings) {
    const { pageSize, pages, buckets } = geometry(settings);
    this.buffer = buffer;
    this.memory = pages * pageSize;
    this.itemSizeMax = settings.itemSizeMax;
    this.pageSize = pageSize;
    this.pages = pages;
    this.buckets = buckets;
    this.#control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.#controlF = new Float64Array(buffer, 0, CONTROL_WORDS / 2);
    this.#classTable = new Int32Array(buffer, CLASSES_OFFSET, MAX_CLASSES * CLASS_WORDS);
    this.#requested = new Float64Array(buffer, REQUESTED_OFFSET, MAX_CLASSES);
    this.#counters = new Float64Array(buffer, COUNTERS_OFFSET, MAX_CLASSES * CLASS_COUNTERS);
    this.#rows = new Float64Array(buffer, ROWS_OFFSET, MAX_ROWS * ROW_FIELDS);
    this.#table = new Int32Array(buffer, BUCKETS_OFFSET, buckets);
    this.#pagesOffset = pagesOffset(buckets);
    this.#words = new Int32Array(buffer);
    this.#floats = new Float64Array(buffer, 0, Math.floor(buffer.byteLength / 8));
    this.#bytes = new Uint8Array(buffer);
    this.lock();
    try {
      if (this.#control[C_BUCKETS] === 0) this.#layOut();
      this.classes = this.#countClasses();
      const row = this.#control[C_ROWS_USED]!++ % MAX_ROWS;
      this.stats = this.#rows.subarray(row * ROW_FIELDS, row * ROW_FIELDS + ROW_FIELDS);
      this.stats.fill(0, Stat.curr_connections, Stat.curr_connections + 1);
      this.renew();
    } finally {
      this.unlock();
    }
  }

  // ---- the lock ----

  /** Takes the store's lock, waiting for another worker's critical section to end. */
  lock(): void {
    const control = this.#control;
    if (Atomics.compareExchange(control, C_LOCK, 0, 1) === 0) return;
    for (let spin = 0; spin < 2000; spin++) {
      if (
        Atomics.load(control, C_LOCK) === 0 && Atomics.compareExchange(control, C_LOCK, 0, 1) === 0
      ) {
        return;
      }
    }
    Atomics.add(control, C_WAITERS, 1);
    while (Atomics.compareExchange(control, C_LOCK, 0, 1) !== 0) {
      Atomics.wait(control, C_LOCK, 1, 10);
    }
    Atomics.sub(control, C_WAITERS, 1);
  }

  /** Releases the lock. */
  unlock(): void {
    Atomics.store(this.#control, C_LOCK, 0);
    if (Atomics.load(this.#control, C_WAITERS) > 0) Atomics.notify(this.#control, C_LOCK, 1);
  }

  // ---- time ----

  /** memcached's `current_time`: seconds since the store's clock started. */
  now(): number {
    return Math.floor(Date.now() / 1000 - this.#controlF[C_STARTED / 2]!);
  }

  /** memcached's `process_started`, in Unix seconds. */
  get started(): number {
    return this.#controlF[C_STARTED / 2]!;
  }

  /**
   * memcached's `realtime(EXPTIME_TO_POSITIVE_TIME(exptime))`: an expiry as sent (seconds from
   * now up to 30 days, else a Unix time; negative: already past) as clock time; 0 = never.
   *
   * @param exptime As the client sent it (a 32-bit integer).
   * @returns Clock seconds.
   */
  realtime(exptime: number): number {
    if (exptime < 0) exptime = REALTIME_MAXDELTA + 1;
    if (exptime === 0) return 0;
    if (exptime > REALTIME_MAXDELTA) {
      const started = this.started;
      if (exptime <= started) return 1;
      return Math.floor(exptime - started);
    }
    return exptime + this.now();
  }

  // ---- items ----

  /**
   * The item for `key`, or 0. An item that is flushed or expired is unlinked on the way (and
   * counted as memcached counts it), as memcached's `do_item_get` does.
   *
   * @param key The key's bytes.
   * @returns An item ref.
   */
  find(key: Uint8Array): number {
    const ref = this.#lookup(key, hash(key));
    if (ref === 0) return 0;
    const now = this.now();
    if (this.#isFlushed(ref, now)) {
      this.unlink(ref);
      this.stats[Stat.get_flushed]!++;
      return 0;
    }
    const exptime = this.#words[ref * 2 + EXPTIME]!;
    if (exptime !== 0 && exptime <= now) {
      this.unlink(ref);
      this.stats[Stat.get_expired]!++;
      return 0;
    }
    return ref;
  }

  /**
   * A fetch, as memcached's segmented LRU counts one (`do_item_bump`): the first marks the item
   * fetched; the second marks it active and moves its access time (and the item to the head
   * of its LRU); later ones cost nothing. An active item at the LRU's tail is spared once by
   * eviction instead of being moved on every hit.
   *
   * @param ref The item.
   */
  bump(ref: number): void {
    const w = this.#words;
    const at = ref * 2 + META;
    const flags = w[at]!;
    if ((flags & ItemFlag.ACTIVE) !== 0) return;
    if ((flags & ItemFlag.FETCHED) === 0) {
      w[at] = flags | ItemFlag.FETCHED;
      return;
    }
    w[at] = flags | ItemFlag.ACTIVE;
    w[ref * 2 + TIME] = this.now();
    this.#lruUnlink(ref);
    this.#lruPush(ref);
  }

  /**
   * A store's touch of an existing item (memcached's `do_item_update`): its access time moves
   * to now, and it goes to the head of its LRU.
   *
   * @param ref The item.
   */
  update(ref: number): void {
    this.#words[ref * 2 + TIME] = this.now();
    this.#lruUnlink(ref);
    this.#lruPush(ref);
  }

  /**
   * memcached's `ITEM_ntotal`: the bytes an item counts.
   *
   * @param nkey Key length.
   * @param flags Client flags (0 costs no bytes).
   * @param nbytes Value length.
   * @returns The item's size as memcached counts it.
   */
  static itemTotal(nkey: number, flags: number, nbytes: number): number {
    return MEMCACHED_ITEM_HEADER + nkey + 1 + nbytes + 2 + (flags !== 0 ? 4 : 0) + CAS_BYTES;
  }

  /**
   * Whether an item of this shape may be stored at all (memcached's `item_size_ok`).
   *
   * @param nkey Key length.
   * @param flags Client flags.
   * @param nbytes Value length.
   * @returns True if it is not too large.
   */
  sizeOk(nkey: number, flags: number, nbytes: number): boolean {
    return SharedStore.itemTotal(nkey, flags, nbytes) <= this.itemSizeMax;
  }

  /**
   * A new, unlinked item (memcached's `do_item_alloc`): evicts from its class's LRU tail when the
   * class has no free chunk and no page is left.
   *
   * @param key The key.
   * @param flags Client flags.
   * @param exptime Clock time of expiry.
   * @param nbytes Value length.
   * @returns The item ref, or {@linkcode TOO_LARGE} / {@linkcode NO_MEMORY}.
   */
  alloc(key: Uint8Array, flags: number, exptime: number, nbytes: number): number {
    const total = SharedStore.itemTotal(key.length, flags, nbytes);
    if (total > this.itemSizeMax) return TOO_LARGE;
    const own = HEADER_BYTES + key.length + nbytes;
    const classId = this.#classFor(Math.max(total, own));
    if (classId === 0) return TOO_LARGE;
    const ref = this.#chunk(classId);
    if (ref === 0) {
      this.#classTable[classId * CLASS_WORDS + K_OOM]!++;
      return NO_MEMORY;
    }
    const w = this.#words;
    const at = ref * 2;
    w[at + H_NEXT] = 0;
    w[at + L_PREV] = 0;
    w[at + L_NEXT] = 0;
    w[at + TIME] = 0;
    w[at + EXPTIME] = exptime;
    w[at + NBYTES] = nbytes;
    w[at + CLIENT_FLAGS] = flags | 0;
    w[at + META] = (classId << 16) | (key.length << 24);
    this.#floats[ref + CAS_LO / 2] = 0;
    this.#bytes.set(key, ref * 8 + HEADER_BYTES);
    return ref;
  }

  /**
   * Links an unlinked item (memcached's `do_item_link`): gives it a new CAS value, puts it in the
   * hash table and at the head of its LRU, and counts it.
   *
   * @param ref The item.
   */
  link(ref: number): void {
    const w = this.#words;
    const at = ref * 2;
    w[at + META] = w[at + META]! | ItemFlag.LINKED;
    w[at + TIME] = this.now();
    this.#floats[ref + CAS_LO / 2] = this.nextCas();
    const key = this.key(ref);
    const bucket = hash(key) & (this.buckets - 1);
    w[at + H_NEXT] = this.#table[bucket]!;
    this.#table[bucket] = ref;
    this.#lruPush(ref);
    const total = this.total(ref);
    const classId = this.classOf(ref);
    this.#classTable[classId * CLASS_WORDS + K_ITEMS]!++;
    this.#requested[classId] = this.#requested[classId]! + total;
    const f = this.#controlF;
    f[C_CURR_ITEMS / 2]!++;
    f[C_TOTAL_ITEMS / 2]!++;
    f[C_BYTES / 2] = f[C_BYTES / 2]! + total;
  }

  /**
   * Unlinks an item and frees its chunk (memcached's `do_item_unlink` with the last reference
   * gone: nothing outside the lock ever holds an item here).
   *
   * @param ref The item.
   */
  unlink(ref: number): void {
    const w = this.#words;
    const at = ref * 2;
    if ((w[at + META]! & ItemFlag.LINKED) === 0) {
      this.free(ref);
      return;
    }
    const key = this.key(ref);
    const bucket = hash(key) & (this.buckets - 1);
    let prev = 0;
    for (let it = this.#table[bucket]!; it !== 0; prev = it, it = w[it * 2 + H_NEXT]!) {
      if (it !== ref) continue;
      if (prev === 0) this.#table[bucket] = w[at + H_NEXT]!;
      else w[prev * 2 + H_NEXT] = w[at + H_NEXT]!;
      break;
    }
    this.#lruUnlink(ref);
    const total = this.total(ref);
    const classId = this.classOf(ref);
    this.#classTable[classId * CLASS_WORDS + K_ITEMS]!--;
    this.#requested[classId] = this.#requested[classId]! - total;
    const f = this.#controlF;
    f[C_CURR_ITEMS / 2]!--;
    f[C_BYTES / 2] = f[C_BYTES / 2]! - total;
    w[at + META] = w[at + META]! & ~ItemFlag.LINKED;
    this.free(ref);
  }

  /**
   * Replaces a linked item by an unlinked one (memcached's `item_replace`).
   *
   * @param old The linked item.
   * @param next The new one.
   */
  replace(old: number, next: number): void {
    this.unlink(old);
    this.link(next);
  }

  /**
   * Keeps a linked item out of eviction's reach while an allocation runs (memcached's reference
   * does that): it leaves its LRU until {@linkcode SharedStore.unpin}.
   *
   * @param ref The item.
   */
  pin(ref: number): void {
    this.#lruUnlink(ref);
  }

  /**
   * Puts a pinned item back at the head of its LRU (if it is still linked).
   *
   * @param ref The item.
   */
  unpin(ref: number): void {
    if ((this.#words[ref * 2 + META]! & ItemFlag.LINKED) !== 0) this.#lruPush(ref);
  }

  /**
   * Gives an unlinked item's chunk back to its class (an item allocated for a value that then
   * failed, or whose connection went away).
   *
   * @param ref The item.
   */
  free(ref: number): void {
    const cls = this.classOf(ref) * CLASS_WORDS;
    this.#words[ref * 2 + META] = this.classOf(ref) << 16;
    this.#words[ref * 2 + H_NEXT] = this.#classTable[cls + K_FREE]!;
    this.#classTable[cls + K_FREE] = ref;
    this.#classTable[cls + K_FREE_COUNT]!++;
  }

  /** The next CAS value (memcached's `get_cas_id`). */
  nextCas(): number {
    const f = this.#controlF;
    return ++f[C_CAS / 2]!;
  }

  /**
   * memcached's `flush_all` state: items stored at or before `oldestLive` (clock time), or with
   * a CAS below `oldestCas`, are gone once `oldestLive` has come.
   *
   * @param oldestLive Clock time.
   * @param oldestCas A CAS value, or 0.
   */
  setFlush(oldestLive: number, oldestCas: number): void {
    this.#control[C_OLDEST_LIVE] = oldestLive;
    if (oldestCas !== 0) this.#controlF[C_OLDEST_CAS / 2] = oldestCas;
  }

  // ---- item fields (the lock held) ----

  /** Value length. */
  nbytes(ref: number): number {
    return this.#words[ref * 2 + NBYTES]!;
  }

  /** Client flags, unsigned. */
  flags(ref: number): number {
    return this.#words[ref * 2 + CLIENT_FLAGS]! >>> 0;
  }

  /** Sets the client flags. */
  setFlags(ref: number, flags: number): void {
    this.#words[ref * 2 + CLIENT_FLAGS] = flags | 0;
  }

  /** Expiry, clock time; 0 = never. */
  exptime(ref: number): number {
    return this.#words[ref * 2 + EXPTIME]!;
  }

  /** Sets the expiry. */
  setExptime(ref: number, exptime: number): void {
    this.#words[ref * 2 + EXPTIME] = exptime;
  }

  /** Last access, clock time. */
  time(ref: number): number {
    return this.#words[ref * 2 + TIME]!;
  }

  /** memcached's `it_flags` that apply here ({@linkcode ItemFlag}). */
  itFlags(ref: number): number {
    return this.#words[ref * 2 + META]! & 0xffff;
  }

  /** Sets and clears item flags. */
  setItFlags(ref: number, set: number, clear = 0): void {
    const at = ref * 2 + META;
    this.#words[at] = (this.#words[at]! | set) & ~clear;
  }

  /** The item's slab class. */
  classOf(ref: number): number {
    return (this.#words[ref * 2 + META]! >>> 16) & 0xff;
  }

  /** CAS value. */
  cas(ref: number): number {
    return this.#floats[ref + CAS_LO / 2]!;
  }

  /** Sets the CAS value. */
  setCas(ref: number, cas: number): void {
    this.#floats[ref + CAS_LO / 2] = cas;
  }

  /** The key (a view of the store: copy it to keep it past the lock). */
  key(ref: number): Uint8Array {
    const nkey = this.#words[ref * 2 + META]! >>> 24;
    const at = ref * 8 + HEADER_BYTES;
    return this.#bytes.subarray(at, at + nkey);
  }

  /** The value (a view of the store: copy it out before unlocking). */
  value(ref: number): Uint8Array {
    const nkey = this.#words[ref * 2 + META]! >>> 24;
    const at = ref * 8 + HEADER_BYTES + nkey;
    return this.#bytes.subarray(at, at + this.#words[ref * 2 + NBYTES]!);
  }

  /** The value's room, for writing it (the item is unlinked and the caller's). */
  valueRoom(ref: number): Uint8Array {
    return this.value(ref);
  }

  /** The bytes the item counts, as memcached's `ITEM_ntotal`. */
  total(ref: number): number {
    const w = this.#words;
    return SharedStore.itemTotal(
      w[ref * 2 + META]! >>> 24,
      w[ref * 2 + CLIENT_FLAGS]!,
      w[ref * 2 + NBYTES]!,
    );
  }

  /**
   * Changes an item's value length in place (incr/decr, which never grow one past its chunk).
   *
   * @param ref The item.
   * @param nbytes The new length (at most what its chunk holds).
   */
  resize(ref: number, nbytes: number): void {
    const before = this.total(ref);
    this.#words[ref * 2 + NBYTES] = nbytes;
    const delta = this.total(ref) - before;
    const classId = this.classOf(ref);
    this.#requested[classId] = this.#requested[classId]! + delta;
    this.#controlF[C_BYTES / 2] = this.#controlF[C_BYTES / 2]! + delta;
  }

  // ---- stats (no lock needed for a snapshot a dashboard reads) ----

  /**
   * The store's gauges and totals, as memcached names them.
   *
   * @returns Name to value.
   */
  globals(): StoreGlobals {
    const f = this.#controlF;
    return {
      bytes: f[C_BYTES / 2]!,
      curr_items: f[C_CURR_ITEMS / 2]!,
      total_items: f[C_TOTAL_ITEMS / 2]!,
      evictions: f[C_EVICTIONS / 2]!,
      reclaimed: f[C_RECLAIMED / 2]!,
      expired_unfetched: f[C_EXPIRED_UNFETCHED / 2]!,
      evicted_unfetched: f[C_EVICTED_UNFETCHED / 2]!,
      evicted_active: f[C_EVICTED_ACTIVE / 2]!,
      total_malloced: this.#control[C_PAGES_USED]! * this.pageSize,
    };
  }

  /**
   * Every worker's counter summed.
   *
   * @param field A {@linkcode Stat}.
   * @returns The total.
   */
  sum(field: number): number {
    const rows = Math.min(this.#control[C_ROWS_USED]!, MAX_ROWS);
    let total = 0;
    for (let row = 0; row < rows; row++) total += this.#rows[row * ROW_FIELDS + field]!;
    return total;
  }

  /** Open connections over the workers alive now (a dead worker's row does not count). */
  currentConnections(): number {
    const rows = Math.min(this.#control[C_ROWS_USED]!, MAX_ROWS);
    const now = Date.now() / 1000;
    let total = 0;
    for (let row = 0; row < rows; row++) {
      if (now - this.#rows[row * ROW_FIELDS + ROW_LEASE]! > LEASE_SECONDS) continue;
      total += this.#rows[row * ROW_FIELDS + Stat.curr_connections]!;
    }
    return total;
  }

  /** Renews this worker's lease on its row: call it every second or so. */
  renew(): void {
    this.stats[ROW_LEASE] = Date.now() / 1000;
  }

  /** This worker is done: its row's connections no longer count. */
  retire(): void {
    this.stats[ROW_LEASE] = 0;
    this.stats[Stat.curr_connections] = 0;
  }

  /**
   * Counts an event in the item's slab class (the lock held).
   *
   * @param ref The item.
   * @param field A {@linkcode ClassStat}.
   */
  countClass(ref: number, field: number): void {
    this.#counters[this.classOf(ref) * CLASS_COUNTERS + field]!++;
  }

  /**
   * A slab-class counter, of one class or summed over all.
   *
   * @param field A {@linkcode ClassStat}.
   * @param classId The class, or undefined for the sum.
   * @returns The count.
   */
  classCount(field: number, classId?: number): number {
    if (classId !== undefined) return this.#counters[classId * CLASS_COUNTERS + field]!;
    let total = 0;
    for (let c = 1; c < this.classes; c++) total += this.#counters[c * CLASS_COUNTERS + field]!;
    return total;
  }

  /** What `verbosity` last set, for every worker. */
  get verbosity(): number {
    return Atomics.load(this.#control, C_VERBOSITY);
  }

  set verbosity(level: number) {
    Atomics.store(this.#control, C_VERBOSITY, level);
  }

  /** `stats reset`: every worker's counters, and the store's totals, back to 0. */
  resetStats(): void {
    const rows = Math.min(this.#control[C_ROWS_USED]!, MAX_ROWS);
    for (let row = 0; row < rows; row++) {
      // Gauges stay (open connections, the lease); the rest start over.
      const at = row * ROW_FIELDS;
      this.#rows.fill(0, at, at + Stat.curr_connections);
      this.#rows[at + Stat.total_connections] = 0;
    }
    this.#counters.fill(0);
    const f = this.#controlF;
    f[C_TOTAL_ITEMS / 2] = 0;
    f[C_EVICTIONS / 2] = 0;
    f[C_RECLAIMED / 2] = 0;
    f[C_EXPIRED_UNFETCHED / 2] = 0;
    f[C_EVICTED_UNFETCHED / 2] = 0;
    f[C_EVICTED_ACTIVE / 2] = 0;
    for (let c = 1; c < this.classes; c++) {
      const at = c * CLASS_WORDS;
      this.#classTable[at + K_EVICTED] = 0;
      this.#classTable[at + K_OOM] = 0;
      this.#classTable[at + K_RECLAIMED] = 0;
    }
  }

  /**
   * A slab class's figures, for `stats slabs` and `stats items`.
   *
   * @param classId The class.
   * @returns Its figures, as memcached names them.
   */
  classStats(classId: number) {
    const k = this.#classTable;
    const at = classId * CLASS_WORDS;
    const chunk = k[at + K_CHUNK]!;
    const perPage = k[at + K_PER_PAGE]!;
    const pages = k[at + K_PAGES]!;
    const tail = k[at + K_TAIL]!;
    return {
      chunkSize: chunk,
      chunksPerPage: perPage,
      totalPages: pages,
      totalChunks: pages * perPage,
      usedChunks: pages * perPage - k[at + K_FREE_COUNT]! - k[at + K_CARVE_LEFT]!,
      freeChunks: k[at + K_FREE_COUNT]! + k[at + K_CARVE_LEFT]!,
      items: k[at + K_ITEMS]!,
      requested: this.#requested[classId]!,
      evicted: k[at + K_EVICTED]!,
      outOfMemory: k[at + K_OOM]!,
      reclaimed: k[at + K_RECLAIMED]!,
      oldestAge: tail === 0 ? 0 : this.now() - this.#words[tail * 2 + TIME]!,
    };
  }

  /** The chunk size of every slab class, smallest first (index = class id). */
  get chunkSizes(): number[] {
    const sizes = [0];
    for (let c = 1; c < this.classes; c++) sizes.push(this.#classTable[c * CLASS_WORDS + K_CHUNK]!);
    return sizes;
  }

  // ---- internals ----

  #layOut(): void {
    const { pageSize, buckets } = this;
    this.#control[C_BUCKETS] = buckets;
    this.#controlF[C_STARTED / 2] = Math.floor(Date.now() / 1000) - CLOCK_OFFSET;
    // memcached's slabs_init: chunk sizes from header + -n, times -f, 8-byte aligned, up to half
    // a page (slab_chunk_max); then one class of whole pages for the largest items.
    let size = MEMCACHED_ITEM_HEADER + CHUNK_SIZE;
    let classId = 1;
    const chunkMax = pageSize / 2;
    while (classId < MAX_CLASSES - 1 && size <= chunkMax / GROWTH_FACTOR) {
      if (size % 8 !== 0) size += 8 - (size % 8);
      this.#setClass(classId++, size);
      size = Math.floor(size * GROWTH_FACTOR);
    }
    this.#setClass(classId++, chunkMax);
    this.#setClass(classId, pageSize);
  }

  #setClass(classId: number, chunk: number): void {
    const at = classId * CLASS_WORDS;
    this.#classTable[at + K_CHUNK] = chunk;
    this.#classTable[at + K_PER_PAGE] = Math.floor(this.pageSize / chunk);
  }

  #countClasses(): number {
    let classId = 1;
    while (classId < MAX_CLASSES && this.#classTable[classId * CLASS_WORDS + K_CHUNK]! > 0) {
      classId++;
    }
    return classId;
  }

  /** The smallest class whose chunks hold `size` bytes, or 0. */
  #classFor(size: number): number {
    for (let c = 1; c < this.classes; c++) {
      if (this.#classTable[c * CLASS_WORDS + K_CHUNK]! >= size) return c;
    }
    return 0;
  }

  /** A chunk of the class: free list, then its newest page, then a new page, then eviction. */
  #chunk(classId: number): number {
    const k = this.#classTable;
    const at = classId * CLASS_WORDS;
    const free = k[at + K_FREE]!;
    if (free !== 0) {
      k[at + K_FREE] = this.#words[free * 2 + H_NEXT]!;
      k[at + K_FREE_COUNT]!--;
      return free;
    }
    if (k[at + K_CARVE_LEFT]! === 0 && this.#control[C_PAGES_USED]! < this.pages) {
      const page = this.#control[C_PAGES_USED]!++;
      k[at + K_CARVE] = (this.#pagesOffset + page * this.pageSize) / 8;
      k[at + K_CARVE_LEFT] = k[at + K_PER_PAGE]!;
      k[at + K_PAGES]!++;
    }
    if (k[at + K_CARVE_LEFT]! > 0) {
      const ref = k[at + K_CARVE]!;
      k[at + K_CARVE] = ref + k[at + K_CHUNK]! / 8;
      k[at + K_CARVE_LEFT]!--;
      return ref;
    }
    return this.#evict(classId);
  }

  /**
   * Frees the LRU tail of a class and takes its chunk: an expired or flushed tail counts as
   * reclaimed, a live one as evicted; an active tail is spared once (moved to the head, no
   * longer active), as memcached's LRU maintainer spares it, up to a few times per allocation.
   */
  #evict(classId: number): number {
    const k = this.#classTable;
    const at = classId * CLASS_WORDS;
    const w = this.#words;
    const now = this.now();
    let tail = k[at + K_TAIL]!;
    for (let spared = 0; tail !== 0 && spared < EVICTION_SPARES; spared++) {
      const meta = w[tail * 2 + META]!;
      if ((meta & ItemFlag.ACTIVE) === 0 || this.#isDead(tail, now)) break;
      w[tail * 2 + META] = meta & ~ItemFlag.ACTIVE;
      this.#lruUnlink(tail);
      this.#lruPush(tail);
      tail = k[at + K_TAIL]!;
    }
    if (tail === 0) return 0;
    const fetched = (w[tail * 2 + META]! & ItemFlag.FETCHED) !== 0;
    const f = this.#controlF;
    if (this.#isDead(tail, now)) {
      f[C_RECLAIMED / 2]!++;
      k[at + K_RECLAIMED]!++;
      if (!fetched) f[C_EXPIRED_UNFETCHED / 2]!++;
    } else {
      f[C_EVICTIONS / 2]!++;
      k[at + K_EVICTED]!++;
      if (!fetched) f[C_EVICTED_UNFETCHED / 2]!++;
      if ((w[tail * 2 + META]! & ItemFlag.ACTIVE) !== 0) f[C_EVICTED_ACTIVE / 2]!++;
    }
    this.unlink(tail);
    const ref = k[at + K_FREE]!;
    k[at + K_FREE] = w[ref * 2 + H_NEXT]!;
    k[at + K_FREE_COUNT]!--;
    return ref;
  }

  /** Expired or flushed. */
  #isDead(ref: number, now: number): boolean {
    const exptime = this.#words[ref * 2 + EXPTIME]!;
    return (exptime !== 0 && exptime <= now) || this.#isFlushed(ref, now);
  }

  #isFlushed(ref: number, now: number): boolean {
    const oldestLive = this.#control[C_OLDEST_LIVE]!;
    if (oldestLive === 0 || oldestLive > now) return false;
    if (this.#words[ref * 2 + TIME]! <= oldestLive) return true;
    const oldestCas = this.#controlF[C_OLDEST_CAS / 2]!;
    const cas = this.#floats[ref + CAS_LO / 2]!;
    return oldestCas !== 0 && cas !== 0 && cas < oldestCas;
  }

  #lookup(key: Uint8Array, h: number): number {
    const w = this.#words;
    const bytes = this.#bytes;
    const nkey = key.length;
    for (let it = this.#table[h & (this.buckets - 1)]!; it !== 0; it = w[it * 2 + H_NEXT]!) {
      if (w[it * 2 + META]! >>> 24 !== nkey) continue;
      const at = it * 8 + HEADER_BYTES;
      let same = true;
      for (let i = 0; i < nkey; i++) {
        if (bytes[at + i] !== key[i]) {
          same = false;
          break;
        }
      }
      if (same) return it;
    }
    return 0;
  }

  #lruPush(ref: number): void {
    const w = this.#words;
    const cls = this.classOf(ref) * CLASS_WORDS;
    const head = this.#classTable[cls + K_HEAD]!;
    w[ref * 2 + L_PREV] = 0;
    w[ref * 2 + L_NEXT] = head;
    if (head !== 0) w[head * 2 + L_PREV] = ref;
    this.#classTable[cls + K_HEAD] = ref;
    if (this.#classTable[cls + K_TAIL] === 0) this.#classTable[cls + K_TAIL] = ref;
  }

  #lruUnlink(ref: number): void {
    const w = this.#words;
    const cls = this.classOf(ref) * CLASS_WORDS;
    const prev = w[ref * 2 + L_PREV]!;
    const next = w[ref * 2 + L_NEXT]!;
    if (prev !== 0) w[prev * 2 + L_NEXT] = next;
    else if (this.#classTable[cls + K_HEAD] === ref) this.#classTable[cls + K_HEAD] = next;
    if (next !== 0) w[next * 2 + L_PREV] = prev;
    else if (this.#classTable[cls + K_TAIL] === ref) this.#classTable[cls + K_TAIL] = prev;
    w[ref * 2 + L_PREV] = 0;
    w[ref * 2 + L_NEXT] = 0;
  }
}

/**
 * FNV-1a over the key's bytes: the bucket of a key.
 *
 * @param key The key.
 * @returns A 32-bit hash.
 */
export function hash(key: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i]!, 0x01000193);
  return h >>> 0;
}
