/**
 * Round-robin choice among a fixed number of slots, skipping slots that cannot take work now
 * (a worker being replaced), as memcached's dispatcher does with its threads.
 *
 * Runs on the main thread.
 *
 * @module
 */

/**
 * Cycles through slots `0 .. size-1`.
 *
 * @example
 * ```ts
 * import { RoundRobin } from "./round_robin.ts";
 * import assert from "node:assert/strict";
 * const rr = new RoundRobin(3);
 * assert.deepEqual([rr.next(), rr.next(), rr.next(), rr.next()], [0, 1, 2, 0]);
 * assert.equal(rr.next((slot) => slot !== 1), 2);
 * ```
 */
export class RoundRobin {
  #size: number;
  #next = 0;

  /**
   * @param size Number of slots; at least 1.
   * @throws {RangeError} If `size` is not a positive integer.
   */
  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new RangeError(`RoundRobin needs a positive slot count, got ${size}`);
    }
    this.#size = size;
  }

  /**
   * Picks the next slot in turn that `available` accepts.
   *
   * @param available Whether a slot can take work now; all can if omitted.
   * @returns The slot, or `undefined` if none is available.
   */
  next(available?: (slot: number) => boolean): number | undefined {
    for (let tried = 0; tried < this.#size; tried++) {
      const slot = this.#next;
      this.#next = (slot + 1) % this.#size;
      if (available === undefined || available(slot)) return slot;
    }
    return undefined;
  }
}
