/**
 * The server's counters, in one `SharedArrayBuffer` that every thread sees: the thread that
 * serves a worker slot's connections writes that slot's row, and the main thread reads all rows
 * for `/metrics`. Rows belong to slots, not to workers, so a replaced worker continues its
 * predecessor's counts and totals never go backwards.
 *
 * Two numbers are shared by all threads and changed with `Atomics`: the count of open connections
 * (so that `--max-connections` is one limit for the whole server, whichever thread accepts) and
 * the next connection id (ids are unique server-wide, as the logs need).
 *
 * Each slot has two rows, one per lane: during a rolling reload the worker being retired and the
 * one replacing it serve at the same time, each writing its own lane, and generations alternate
 * lanes (reloads never overlap, so two suffice). Readers sum a slot's lanes.
 *
 * Used on both threads. Each row has exactly one writer, so plain stores suffice there; 8-byte
 * aligned float stores are not torn on the 64-bit targets Deno ships for.
 *
 * @module
 */

import { CLOSE_REASONS, type CloseReason } from "../sockets/close_reason.ts";

/** The fields of a slot's row. */
export const Counter = {
  /** Connections accepted and handed to the slot's handler. */
  accepted: 0,
  /** Connections closed on accept: `--max-connections` reached, or no worker ready. */
  rejected: 1,
  /** `accept()` calls that failed. */
  acceptFailures: 2,
  /** Connections closed because their PROXY header was missing, malformed or late. */
  proxyRejected: 3,
  /** Connections open now. */
  active: 4,
  /** Bytes read from clients. */
  bytesIn: 5,
  /** Bytes written to clients. */
  bytesOut: 6,
  /** Connections the peer reset or abandoned before `accept()` returned them (not a fault here). */
  acceptAborted: 7,
  /** Connections the server reset because input or output was still pending when it closed them. */
  resets: 8,
  /** Connections closed on accept because their address had `--max-connections-per-ip` open. */
  perAddressRejected: 9,
  /** Bytes held for clients now by the thread serving the slot (a gauge; see `buffer_budget.ts`). */
  buffered: 10,
  /** TLS handshakes that failed, timed out or were abandoned: the connection was closed. */
  tlsHandshakeFailures: 11,
} as const;

/** One of the {@linkcode Counter} fields. */
export type CounterField = typeof Counter[keyof typeof Counter];

const FIRST_CLOSED = 12;
/** Rows per worker slot: see the module's documentation. */
export const LANES = 2;
const ROW = FIRST_CLOSED + CLOSE_REASONS.length;
/** Int32 header: open connections, next connection id, whether the drain's count was taken. */
const HEADER_BYTES = 16;
const OPEN = 0;
const NEXT_ID = 1;
const COUNTED = 2;

/** A slot's row of counters. Only the thread serving the slot writes it. */
export class SlotCounters {
  #row: Float64Array;

  /** @param row The row's view into the shared buffer. */
  constructor(row: Float64Array) {
    this.#row = row;
  }

  /**
   * Adds to a counter.
   *
   * @param field Which counter.
   * @param n How much.
   */
  add(field: CounterField, n = 1): void {
    this.#row[field]! += n;
  }

  /**
   * Sets a gauge.
   *
   * @param field Which one.
   * @param value Its value now.
   */
  set(field: CounterField, value: number): void {
    this.#row[field] = value;
  }

  /**
   * Counts a closed connection: one fewer active, one more closed for `reason`.
   *
   * @param reason Why it closed.
   */
  closed(reason: CloseReason): void {
    this.#row[Counter.active]! -= 1;
    this.#row[FIRST_CLOSED + CLOSE_REASONS.indexOf(reason)]! += 1;
  }

  /**
   * Reads a counter.
   *
   * @param field Which counter.
   * @returns Its value.
   */
  get(field: CounterField): number {
    return this.#row[field]!;
  }

  /**
   * Reads the count of connections closed for `reason`.
   *
   * @param reason A close reason.
   * @returns The count.
   */
  closedFor(reason: CloseReason): number {
    return this.#row[FIRST_CLOSED + CLOSE_REASONS.indexOf(reason)]!;
  }
}

/**
 * All of the server's counters: a row per worker slot, plus one for the main thread's own
 * accept loop (the last), and the shared open-connection count and id sequence.
 *
 * @example
 * ```ts
 * import { Counter, ServerCounters } from "./counters.ts";
 * import assert from "node:assert/strict";
 * const counters = ServerCounters.create(2);
 * // On another thread: new ServerCounters(counters.buffer, 2)
 * assert.ok(counters.tryOpen(1));
 * assert.ok(!counters.tryOpen(1));
 * counters.slot(0).add(Counter.accepted);
 * assert.equal(counters.sum(Counter.accepted), 1);
 * ```
 */
export class ServerCounters {
  /** The shared memory; post it to a worker and wrap it there with the same `workers`. */
  readonly buffer: SharedArrayBuffer;
  /** Number of worker slots. */
  readonly workers: number;
  #shared: Int32Array;
  #rows: SlotCounters[];

  /**
   * Wraps counters created elsewhere (see {@linkcode ServerCounters.create}).
   *
   * @param buffer The shared memory.
   * @param workers Number of worker slots it was made for.
   */
  constructor(buffer: SharedArrayBuffer, workers: number) {
    this.buffer = buffer;
    this.workers = workers;
    this.#shared = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.#rows = Array.from(
      { length: LANES * workers + 1 },
      (_, i) => new SlotCounters(new Float64Array(buffer, HEADER_BYTES + i * ROW * 8, ROW)),
    );
  }

  /**
   * Allocates zeroed counters for `workers` slots.
   *
   * @param workers Number of worker slots.
   * @returns The counters; share `buffer` with the workers.
   */
  static create(workers: number): ServerCounters {
    const buffer = new SharedArrayBuffer(HEADER_BYTES + (LANES * workers + 1) * ROW * 8);
    const counters = new ServerCounters(buffer, workers);
    Atomics.store(counters.#shared, NEXT_ID, 1);
    return counters;
  }

  /**
   * The row a slot's worker writes.
   *
   * @param slot From 0 to `workers - 1`.
   * @param lane The worker's lane, from 0 to `LANES - 1` (see the module's documentation).
   * @returns The row.
   */
  slot(slot: number, lane = 0): SlotCounters {
    const row = slot >= 0 && slot < this.workers
      ? this.#rows[lane * this.workers + slot]
      : undefined;
    if (row === undefined) throw new RangeError(`No counter row for slot ${slot}, lane ${lane}`);
    return row;
  }

  /**
   * A counter of one slot, summed over its lanes.
   *
   * @param field Which counter.
   * @param slot From 0 to `workers - 1`.
   * @returns The total.
   */
  perSlot(field: CounterField, slot: number): number {
    let total = 0;
    for (let lane = 0; lane < LANES; lane++) total += this.slot(slot, lane).get(field);
    return total;
  }

  /** The row of the main thread's own accept loop (failures and rejections before a slot). */
  get main(): SlotCounters {
    return this.#rows[LANES * this.workers]!;
  }

  /**
   * Counts one more open connection if fewer than `max` are open.
   *
   * @param max `--max-connections`.
   * @returns Whether it was counted; if not, the connection must be refused.
   */
  tryOpen(max: number): boolean {
    if (Atomics.add(this.#shared, OPEN, 1) < max) return true;
    Atomics.sub(this.#shared, OPEN, 1);
    return false;
  }

  /**
   * Counts connections closed (undoes {@linkcode ServerCounters.tryOpen}).
   *
   * @param n How many.
   * @returns Whether the drain's count was taken before (see
   *   {@linkcode ServerCounters.countForDrain}).
   */
  release(n = 1): boolean {
    Atomics.sub(this.#shared, OPEN, n);
    return Atomics.load(this.#shared, COUNTED) === 1;
  }

  /**
   * A stop begins: takes the count of connections that the drain must account for. A thread
   * whose own drain has not begun yet tallies what closes from now on as finished (see
   * {@linkcode ServerCounters.release}), so that the final figures add up to this one.
   *
   * @returns Connections open now, server-wide.
   */
  countForDrain(): number {
    Atomics.store(this.#shared, COUNTED, 1);
    return this.open;
  }

  /** Connections open now, server-wide. */
  get open(): number {
    return Atomics.load(this.#shared, OPEN);
  }

  /**
   * A connection id unique server-wide (it wraps after 2^32 - 1, skipping 0).
   *
   * @returns The id.
   */
  nextId(): number {
    const id = Atomics.add(this.#shared, NEXT_ID, 1) >>> 0;
    return id === 0 ? this.nextId() : id;
  }

  /**
   * A counter summed over every row.
   *
   * @param field Which counter.
   * @returns The total.
   */
  sum(field: CounterField): number {
    return this.#rows.reduce((total, row) => total + row.get(field), 0);
  }

  /**
   * The count of connections closed for `reason`, summed over every row.
   *
   * @param reason A close reason.
   * @returns The total.
   */
  sumClosed(reason: CloseReason): number {
    return this.#rows.reduce((total, row) => total + row.closedFor(reason), 0);
  }

  /**
   * Folds a dead worker's open connections into `worker-lost` (its sockets closed with it) and
   * releases them from the server-wide count.
   *
   * @param slot The dead worker's slot.
   * @param lane Its lane.
   * @returns How many connections it had open.
   */
  workerLost(slot: number, lane: number): number {
    const row = this.slot(slot, lane);
    const open = row.get(Counter.active);
    row.set(Counter.buffered, 0);
    for (let i = 0; i < open; i++) row.closed("worker-lost");
    this.release(open);
    return open;
  }
}
