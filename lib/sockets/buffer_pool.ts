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
 * A buffer the pool has no room for is freed at once (`ArrayBuffer.prototype.transfer(0)`
 * releases its memory), not left to the garbage collector: V8 lets about 64 MB of such
 * garbage gather per isolate before it collects, and 200 clients uploading 1 MB each through
 * `main` dispatch left 62 MB of it in each worker (RSS +148 MB, against +31 in `kernel`).
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

  /** Whether the pool holds as many free buffers as it keeps. */
  get full(): boolean {
    return this.#free.length >= this.#max;
  }

  /** A free buffer, or a new one if none is free. Its contents are unspecified. */
  take(): ArrayBuffer {
    return this.#free.pop() ?? new ArrayBuffer(this.size);
  }

  /**
   * Returns a buffer for reuse, or frees its memory now if the pool has no room for it (or it is
   * of another size). The caller must hold no view of it that is still in use.
   *
   * @param buffer The buffer.
   */
  give(buffer: ArrayBuffer): void {
    if (buffer.detached) return;
    if (buffer.byteLength === this.size && this.#free.length < this.#max) this.#free.push(buffer);
    else discard(buffer);
  }
}

/**
 * Frees a buffer's memory now rather than at the next garbage collection. Nothing may view it
 * any more: its views read as empty from then on.
 *
 * @param buffer The buffer; detached when this returns.
 */
export function discard(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}
