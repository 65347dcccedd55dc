/**
 * How workers are numbered. In code a worker is its slot in the pool, from 0 (an index into
 * arrays, the `ownerOf` result, `context.worker`); people see it from 1 (`worker-1` in logs and
 * thread names, `worker="1"` in metrics). This is the one place that turns one into the other.
 *
 * Used on both threads.
 *
 * @module
 */

/**
 * The name of a worker as logs and thread names show it.
 *
 * @param slot The worker's slot, from 0.
 * @returns Such as `worker-1` for slot 0.
 *
 * @example
 * ```ts
 * import { workerName } from "./worker_slot.ts";
 * import assert from "node:assert/strict";
 * assert.equal(workerName(0), "worker-1");
 * ```
 */
export function workerName(slot: number): string {
  return `worker-${workerNumber(slot)}`;
}

/**
 * The number of a worker as people count them (the `worker` label of metrics).
 *
 * @param slot The worker's slot, from 0.
 * @returns `slot + 1`.
 */
export function workerNumber(slot: number): number {
  return slot + 1;
}
