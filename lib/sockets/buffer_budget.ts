/**
 * A budget for the bytes a thread holds on behalf of its clients: input read from sockets and
 * not yet consumed by a handler, output written by handlers and not yet taken by a socket
 * (`--max-buffered`). Each connection is bounded by its own window; the budget bounds them all
 * together, so that thousands of clients that send but never read cannot add up to gigabytes.
 *
 * Past the budget, the connections that hold the most (at least `HEAVY_BYTES`) stop being read
 * until the total is back under it; light connections keep being served, so a bystander's
 * small echo is not held up by the heavy ones.
 *
 * Used on whichever thread owns the sockets: the main thread in `main` dispatch, each worker
 * (with its share of the budget) in `kernel` dispatch.
 *
 * @module
 */

/** A connection holding this much or more is "heavy": it is paused first past the budget. */
export const HEAVY_BYTES = 16 * 1024;

/**
 * Bytes held for clients, against a limit.
 *
 * @example
 * ```ts
 * import { BufferBudget } from "./buffer_budget.ts";
 * import assert from "node:assert/strict";
 * const budget = new BufferBudget(100_000);
 * budget.take(150_000);
 * assert.ok(budget.mustPause(20_000)); // heavy, and over budget
 * assert.ok(!budget.mustPause(1_000)); // light connections keep going
 * budget.give(100_000);
 * assert.ok(!budget.mustPause(20_000));
 * ```
 */
export class BufferBudget {
  /** Most bytes held before heavy connections are paused. */
  readonly limit: number;
  #used = 0;
  #waiters: (() => void)[] = [];
  #report: ((used: number) => void) | undefined;

  /**
   * @param limit Most bytes held before heavy connections are paused.
   * @param report Called with the new total on every change (to publish it as a gauge).
   */
  constructor(limit: number, report?: (used: number) => void) {
    this.limit = limit;
    this.#report = report;
  }

  /** Bytes held now. */
  get used(): number {
    return this.#used;
  }

  /** Whether the thread holds more than the budget. */
  get over(): boolean {
    return this.#used > this.limit;
  }

  /**
   * Counts bytes now held.
   *
   * @param bytes How many.
   */
  take(bytes: number): void {
    this.#used += bytes;
    this.#report?.(this.#used);
  }

  /**
   * Counts bytes no longer held; wakes paused connections once back under budget.
   *
   * @param bytes How many.
   */
  give(bytes: number): void {
    this.#used -= bytes;
    this.#report?.(this.#used);
    if (this.#used <= this.limit && this.#waiters.length > 0) {
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    }
  }

  /**
   * Whether a connection holding `held` bytes must stop reading for now.
   *
   * @param held Bytes the connection holds.
   * @returns True past the budget for heavy connections.
   */
  mustPause(held: number): boolean {
    return this.#used > this.limit && held >= HEAVY_BYTES;
  }

  /**
   * Calls `wake` once the total is back under budget.
   *
   * @param wake Called once.
   */
  onRelief(wake: () => void): void {
    this.#waiters.push(wake);
  }
}
