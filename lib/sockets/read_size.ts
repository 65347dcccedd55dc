/**
 * How big a socket's read buffer is: the one rule for every thread that reads sockets (the main
 * thread in `main` dispatch, each worker in `kernel` dispatch).
 *
 * Buffers start at {@linkcode MIN_READ}, double while reads fill them, up to
 * {@linkcode MAX_READ}, and halve while reads use an eighth or less: an idle connection costs
 * 1 KiB, a bulk one reads 64 KiB at a time. Each connection keeps its buffer and reads into it
 * again (the bytes are lent to the handler for the length of a call), so a steady stream of
 * chunks allocates nothing.
 *
 * Used on whichever thread owns the sockets.
 *
 * @module
 */

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
