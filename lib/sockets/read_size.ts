/**
 * How big a socket's read buffer is: the one rule for every thread that reads sockets (the main
 * thread in `main` dispatch, each worker in `kernel` dispatch).
 *
 * Buffers start at {@linkcode MIN_READ}, double while reads fill them, up to
 * {@linkcode MAX_READ}, and halve while reads use an eighth or less: an idle connection costs
 * 1 KiB, a bulk one reads 64 KiB at a time. Each connection keeps its buffer and reads into it
 * again (the bytes are lent to the handler for the length of a call), so a steady stream of
 * chunks allocates nothing. {@linkcode ReadBuffer} keeps one connection's buffer by this rule;
 * full-size buffers come from, and go back to, a pool of the thread's, so that a paused
 * connection need not hold 64 KiB that nothing counts.
 *
 * Used on whichever thread owns the sockets.
 *
 * @module
 */

import type { BufferPool } from "./buffer_pool.ts";

/** Smallest read buffer: what an idle connection holds. */
export const MIN_READ = 1024;
/** Largest read buffer. */
export const MAX_READ = 64 * 1024;

/**
 * The size of the next read after a read of `n` bytes into a buffer of `size`.
 *
 * @param size The buffer's size.
 * @param n Bytes the read returned.
 * @returns The size for the next read.
 *
 * @example
 * ```ts
 * import { nextReadSize } from "./read_size.ts";
 * import assert from "node:assert/strict";
 * assert.equal(nextReadSize(1024, 1024), 2048); // full: grow
 * assert.equal(nextReadSize(4096, 100), 2048); // an eighth or less: shrink
 * assert.equal(nextReadSize(1024, 100), 1024); // never below the minimum
 * ```
 */
export function nextReadSize(size: number, n: number): number {
  if (n === size && size < MAX_READ) return size * 2;
  if (n <= size / 8 && size > MIN_READ) return size / 2;
  return size;
}

/**
 * One connection's read buffer: read into {@linkcode ReadBuffer.bytes}, take what was read with
 * {@linkcode ReadBuffer.filled}, then {@linkcode ReadBuffer.adapt} the size to it.
 *
 * @example
 * ```ts
 * import { BufferPool } from "./buffer_pool.ts";
 * import { MAX_READ, ReadBuffer } from "./read_size.ts";
 * import assert from "node:assert/strict";
 * const read = new ReadBuffer(new BufferPool(MAX_READ, 4));
 * const bytes = read.bytes;
 * assert.equal(read.filled(10), read.filled(10)); // one view while reads keep a length
 * read.adapt(bytes.length); // a full read: the next buffer is twice the size
 * assert.equal(read.bytes.length, 2 * bytes.length);
 * ```
 */
export class ReadBuffer {
  #pool: BufferPool;
  #bytes: Uint8Array<ArrayBuffer> | undefined;
  #size = MIN_READ;
  /** The last partial view of `#bytes` handed out, reused while reads keep that length. */
  #view: Uint8Array | undefined;

  /** @param pool Where full-size buffers come from and go back to (`MAX_READ` bytes each). */
  constructor(pool: BufferPool) {
    this.#pool = pool;
  }

  /** The buffer to read into next: made when there is none (a full-size one from the pool). */
  get bytes(): Uint8Array<ArrayBuffer> {
    return this.#bytes ??= new Uint8Array(
      this.#size === MAX_READ ? this.#pool.take() : new ArrayBuffer(this.#size),
    );
  }

  /**
   * The first `n` bytes of the buffer, as read: one view while reads keep the same length.
   *
   * @param n Bytes the read returned.
   * @returns The view.
   */
  filled(n: number): Uint8Array {
    const bytes = this.bytes;
    if (n === bytes.length) return bytes;
    const last = this.#view;
    if (last !== undefined && last.length === n && last.buffer === bytes.buffer) return last;
    return this.#view = bytes.subarray(0, n);
  }

  /**
   * Applies the rule after a read of `n` bytes: a buffer of another size replaces this one at
   * the next read, and this one is left to whatever still views it.
   *
   * @param n Bytes the read returned.
   */
  adapt(n: number): void {
    const size = nextReadSize(this.bytes.length, n);
    if (size === this.#size) return;
    this.#size = size;
    this.forget();
  }

  /**
   * Gives a full-size buffer back to the pool (a smaller one is kept): for a paused connection,
   * with no read under way and nothing viewing the buffer.
   */
  release(): void {
    if (this.#bytes?.length !== MAX_READ) return;
    this.#pool.give(this.#bytes.buffer);
    this.forget();
  }

  /** Lets go of the buffer (handed elsewhere, or replaced): the next read gets a new one. */
  forget(): void {
    this.#bytes = undefined;
    this.#view = undefined;
  }
}
