/**
 * `--max-connections-per-ip`: counts open connections per client address, server-wide, in a
 * `SharedArrayBuffer` that every accepting thread updates with `Atomics` (the main thread in
 * `main` dispatch, every worker in `kernel` dispatch), with no lock and no message.
 *
 * How: a count-min sketch per accepting thread (slot). In its slot, each address has a cell in
 * each of two rows, chosen by two different hashes; opening adds one to both cells, closing
 * takes one from both, and the slot's count for the address is the smaller of the two; the
 * address's count is the sum over the slots. Another address can share one cell, rarely both,
 * so a count is never too low and almost always exact: the limit is never exceeded, and a
 * client is refused early only in a double collision. A slot's table is cleared when its
 * worker dies (its sockets died with it), which a single shared table could not do.
 *
 * Used on whichever threads accept.
 *
 * @module
 */

/** Cells per row: 2 x 32,768 x 4 bytes = 256 KiB per slot, allocated only when the limit is on. */
const ROW_CELLS = 1 << 15;
const SLOT_CELLS = 2 * ROW_CELLS;

/**
 * Open connections per address, against a limit.
 *
 * @example
 * ```ts
 * import { AddressLimit } from "./address_limit.ts";
 * import assert from "node:assert/strict";
 * const limit = AddressLimit.create(2, 2);
 * assert.ok(limit.tryOpen(0, "192.0.2.1"));
 * assert.ok(limit.tryOpen(1, "192.0.2.1")); // counted server-wide, whichever slot accepts
 * assert.ok(!limit.tryOpen(0, "192.0.2.1")); // a third from the same address
 * assert.ok(limit.tryOpen(0, "192.0.2.2")); // another address is not affected
 * limit.release(0, "192.0.2.1");
 * assert.ok(limit.tryOpen(1, "192.0.2.1"));
 * ```
 */
export class AddressLimit {
  /** The shared cells; post to a worker and wrap it there with the same limit. */
  readonly buffer: SharedArrayBuffer;
  /** Most open connections per address. */
  readonly limit: number;
  #cells: Int32Array;
  #slots: number;

  /**
   * Allocates the shared tables.
   *
   * @param limit Most open connections per address.
   * @param slots Number of accepting threads.
   * @returns A limit whose `buffer` other threads can share.
   */
  static create(limit: number, slots: number): AddressLimit {
    return new AddressLimit(new SharedArrayBuffer(slots * SLOT_CELLS * 4), limit);
  }

  /**
   * @param buffer A buffer from {@linkcode AddressLimit.create}.
   * @param limit Most open connections per address.
   */
  constructor(buffer: SharedArrayBuffer, limit: number) {
    this.buffer = buffer;
    this.limit = limit;
    this.#cells = new Int32Array(buffer);
    this.#slots = this.#cells.length / SLOT_CELLS;
  }

  /**
   * Counts a new connection from `address` unless the address is at the limit.
   *
   * @param slot The accepting thread's slot.
   * @param address The client's address (as logs show it: IPv4-mapped IPv6 as IPv4).
   * @returns Whether it may be served; if true, call {@linkcode AddressLimit.release} when it closes.
   */
  tryOpen(slot: number, address: string): boolean {
    const [a, b] = cellsOf(address);
    const base = slot * SLOT_CELLS;
    Atomics.add(this.#cells, base + a, 1);
    Atomics.add(this.#cells, base + b, 1);
    let total = 0;
    for (let s = 0; s < this.#slots; s++) {
      const at = s * SLOT_CELLS;
      total += Math.min(Atomics.load(this.#cells, at + a), Atomics.load(this.#cells, at + b));
    }
    if (total <= this.limit) return true;
    Atomics.sub(this.#cells, base + a, 1);
    Atomics.sub(this.#cells, base + b, 1);
    return false;
  }

  /**
   * Counts a closed connection from `address`.
   *
   * @param slot The slot that opened it.
   * @param address The same string given to {@linkcode AddressLimit.tryOpen}.
   */
  release(slot: number, address: string): void {
    const [a, b] = cellsOf(address);
    Atomics.sub(this.#cells, slot * SLOT_CELLS + a, 1);
    Atomics.sub(this.#cells, slot * SLOT_CELLS + b, 1);
  }

  /**
   * Forgets every connection of a slot, when its worker died with its sockets. Call before the
   * slot's replacement starts.
   *
   * @param slot The slot.
   */
  clearSlot(slot: number): void {
    this.#cells.fill(0, slot * SLOT_CELLS, (slot + 1) * SLOT_CELLS);
  }
}

/** The address's cell in each row: two FNV-1a hashes with different offsets. */
function cellsOf(address: string): [number, number] {
  let h1 = 0x811c9dc5;
  let h2 = 0x050c5d1f;
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x01000193);
  }
  // Mix the high bits down: FNV's low bits alone spread short strings poorly.
  h1 ^= h1 >>> 16;
  h2 = Math.imul(h2 ^ (h2 >>> 15), 0x2c1b3c6d);
  h2 ^= h2 >>> 13;
  return [(h1 >>> 0) % ROW_CELLS, ROW_CELLS + (h2 >>> 0) % ROW_CELLS];
}
