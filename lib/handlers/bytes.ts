/**
 * Byte helpers for handlers: what a protocol needs on the hot path, done fast. The built-in
 * handlers use them, and so may any handler (`mod.ts` exports them).
 *
 * Runs inside a worker (or anywhere: nothing here depends on the server).
 *
 * @module
 */

import { canFindByte, findByte } from "../sockets/libc.ts";

/**
 * From this many bytes on, libc's `memchr` (through FFI) beats `indexOf`; below it, the call
 * costs more than the search (measured: 210 ns a call, against `indexOf`'s 180 ns at 512 B and
 * 320 ns at 1 KiB).
 */
const NATIVE_SEARCH_MIN = 1024;

let native: boolean | undefined;

/**
 * `bytes.indexOf(byte, from)`, fast on large chunks: where `--allow-ffi` lets it (the server's
 * launch flags do), a chunk of 1 KiB or more is searched by libc's vectorised `memchr`, 20
 * times faster than `indexOf` on 64 KiB (0.8 against 19 us here). Elsewhere it is `indexOf`.
 *
 * @param bytes Where to look.
 * @param byte The byte to find.
 * @param from Where to start.
 * @returns The index of the first `byte` at or after `from`, or -1.
 *
 * @example Finding line ends
 * ```ts
 * import { indexOfByte } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * const bytes = new TextEncoder().encode("get a\r\nget b\r\n");
 * assert.equal(indexOfByte(bytes, 0x0a), 6);
 * assert.equal(indexOfByte(bytes, 0x0a, 7), 13);
 * assert.equal(indexOfByte(bytes, 0x00), -1);
 * ```
 */
export function indexOfByte(bytes: Uint8Array, byte: number, from = 0): number {
  if (bytes.length - from < NATIVE_SEARCH_MIN || !(native ??= canFindByte())) {
    return bytes.indexOf(byte, from);
  }
  if (from <= 0) return findByte(bytes, byte);
  const at = findByte(bytes.subarray(from), byte);
  return at < 0 ? -1 : at + from;
}

/** Copies smaller than this share a slab (Node's `Buffer` pool uses the same rule). */
const SLAB_COPY_MAX = 4096;
/** Size of a slab that small copies are cut from. */
const SLAB_SIZE = 8192;
let slab = new Uint8Array(0);
let slabUsed = 0;

/**
 * A copy of `bytes` that the caller may keep: the way to hold on to bytes lent to a `data`
 * callback.
 *
 * In Deno 2.9.6 every new `ArrayBuffer` costs about 0.7 us, however small (measured here: 680 ns
 * for 16 bytes, where a view of an existing buffer costs 25 ns), which is more than a whole
 * round trip's JavaScript. So, as Node's `Buffer.allocUnsafe` does, copies under 4 KiB are cut
 * from a shared 8 KiB slab; larger ones get a buffer of their own. The price: a small copy's
 * `.buffer` is shared with other copies, so never transfer it (`postMessage(x, [x.buffer])`) or
 * view past its ends; `slice()` it first if you must.
 *
 * @param bytes The bytes.
 * @returns A copy of them.
 *
 * @example
 * ```ts
 * import { copyBytes } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * const lent = new Uint8Array([1, 2, 3]);
 * const kept = copyBytes(lent);
 * lent[0] = 9;
 * assert.deepEqual([...kept], [1, 2, 3]);
 * ```
 */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  const length = bytes.length;
  if (length >= SLAB_COPY_MAX) return bytes.slice();
  if (slabUsed + length > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    slabUsed = 0;
  }
  slab.set(bytes, slabUsed);
  const copy = slab.subarray(slabUsed, slabUsed + length);
  // Keep copies 8-byte aligned, so that a handler may view one as wider words.
  slabUsed = (slabUsed + length + 7) & ~7;
  return copy;
}
