/**
 * A free list of equally sized `ArrayBuffer`s, so that bulk traffic reuses memory instead of
 * allocating a fresh buffer per chunk.
 *
 * Runs on any thread; a pool belongs to the thread that made it (buffers reach another thread
 * only by transfer, and the receiver may put them in its own pool).
 *
 * Why: allocating a 64 KiB buffer costs about as much as the kernel's work to move 64 KiB over
 * loopback (it is zero-filled, and often page-faulted in), and every allocation counts toward
 * V8's external-memory budget, whose overrun forces full garbage collections.
 *
 * @module
 */

/**
 * A bounded free list of buffers of one size.
 *
 * @example
 * ```ts
 * import { BufferPool } from "./buffer_pool.ts";
 * import assert from "node:assert/strict";
 * const pool = new BufferPool(1024, 4);
 * const buffer = pool.take();
 * pool.give(buffer);
 * assert.equal(pool.take(), buffer); // reused, not allocated again
 * ```
 */
export class BufferPool {
  /** Size in bytes of every buffer in the pool. */
  readonly size: number;
  #max: number;
  #free: ArrayBuffer[] = [];

  /**
   * @param size Size in bytes of the buffers.
   * @param max Most free buffers kept; more are left to the garbage collector, so an idle
   *   server holds at most `size * max` bytes here.
   */
  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** Number of free buffers held. */
  get available(): number {
    return this.#free.length;
  }

  /** A free buffer, or a new one if none is free. Its contents are unspecified. */
  take(): ArrayBuffer {
    return this.#free.pop() ?? new ArrayBuffer(this.size);
  }

  /**
   * Returns a buffer for reuse. The caller must hold no view of it that is still in use.
   * Buffers of another size, detached ones, and any past the limit are ignored.
   *
   * @param buffer The buffer.
   */
  give(buffer: ArrayBuffer): void {
    if (buffer.byteLength !== this.size || buffer.detached || this.#free.length >= this.#max) {
      return;
    }
    this.#free.push(buffer);
  }
}
