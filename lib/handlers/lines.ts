/**
 * Lines out of a byte stream that arrives in chunks of any size: the part every line protocol
 * has (the built-in `hash`, `chat` and `memcache` use it; so may any handler, `mod.ts` exports
 * it). It is made for the byte-level contract: lines are views of the lent chunk, so a chunk of
 * whole lines costs no copy and no allocation but the views; only a line that straddles two
 * chunks is joined, and only the partial line at a chunk's end is kept (copied).
 *
 * Runs inside a worker (or anywhere: nothing here depends on the server).
 *
 * @module
 */

import { copyBytes, indexOfByte } from "./bytes.ts";

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = new Uint8Array(0);

/**
 * Splits a stream into lines ending in `\n` (a `\r` before it is part of the line end).
 *
 * @example In a `data` callback
 * ```ts
 * import { LineReader } from "./lines.ts";
 * import assert from "node:assert/strict";
 * const lines = new LineReader(1024);
 * const seen: string[] = [];
 * for (const chunk of ["get a\r\nget", " b\n", "partial"]) {
 *   lines.push(new TextEncoder().encode(chunk));
 *   for (let line = lines.next(); line !== undefined; line = lines.next()) {
 *     seen.push(new TextDecoder().decode(line));
 *   }
 *   assert.ok(lines.keep()); // before the chunk's call ends: keeps "partial"
 * }
 * assert.deepEqual(seen, ["get a", "get b"]);
 * assert.equal(new TextDecoder().decode(lines.rest), "partial");
 * ```
 */
export class LineReader {
  /** Longest partial line kept between chunks. */
  readonly maxLine: number;
  #chunk: Uint8Array = EMPTY;
  #start = 0;
  /** A partial line kept from earlier chunks (a copy of its own). */
  #partial: Uint8Array | undefined;
  /** Length of the last line's end (`\n`: 1, `\r\n`: 2). */
  #endLength = 0;

  /**
   * Creates a reader with nothing kept yet.
   *
   * @param maxLine Longest partial line {@linkcode LineReader.keep} accepts, in bytes.
   */
  constructor(maxLine: number) {
    this.maxLine = maxLine;
  }

  /**
   * Starts on the next chunk (after any partial line kept from the last one).
   *
   * @param chunk Bytes, lent: used until {@linkcode LineReader.keep}.
   */
  push(chunk: Uint8Array): void {
    const partial = this.#partial;
    this.#partial = undefined;
    this.#start = 0;
    if (partial === undefined) {
      this.#chunk = chunk;
      return;
    }
    const joined = new Uint8Array(partial.length + chunk.length);
    joined.set(partial);
    joined.set(chunk, partial.length);
    this.#chunk = joined;
  }

  /**
   * The next complete line of the chunk, without its line end.
   *
   * @param withEnd Include the line end (`\n` or `\r\n`) as it came.
   * @returns A view of the chunk (valid as long as the chunk is), or undefined when no
   *   complete line is left.
   */
  next(withEnd = false): Uint8Array | undefined {
    const chunk = this.#chunk;
    const start = this.#start;
    const newline = indexOfByte(chunk, LF, start);
    if (newline < 0) return undefined;
    this.#start = newline + 1;
    this.#endLength = newline > start && chunk[newline - 1] === CR ? 2 : 1;
    return chunk.subarray(start, withEnd ? newline + 1 : newline + 1 - this.#endLength);
  }

  /** Bytes of the chunk after the last line returned (a view; for protocols with data blocks). */
  get remaining(): Uint8Array {
    return this.#chunk.subarray(this.#start);
  }

  /**
   * Consumes `n` bytes after the last line (a data block read from {@linkcode remaining}).
   *
   * @param n How many.
   */
  skip(n: number): void {
    this.#start = Math.min(this.#chunk.length, this.#start + n);
  }

  /**
   * Keeps the partial line left at the chunk's end (a copy), to be joined with the next chunk;
   * call it before the chunk's loan ends.
   *
   * @returns False if that partial line is longer than `maxLine` (it is dropped).
   */
  keep(): boolean {
    const rest = this.#chunk.subarray(this.#start);
    this.#chunk = EMPTY;
    this.#start = 0;
    if (rest.length > this.maxLine) return false;
    this.#partial = rest.length === 0 ? undefined : copyBytes(rest);
    return true;
  }

  /** The partial line kept (at the end of input, the last line without its newline). */
  get rest(): Uint8Array {
    return this.#partial ?? EMPTY;
  }
}

/**
 * Whether a line says `quit`, the word that ends a connection in the built-in line protocols.
 *
 * @param line The line, with or without its line end.
 * @returns True for exactly `quit`, `quit\n` or `quit\r\n`.
 *
 * @example
 * ```ts
 * import { isQuit } from "./lines.ts";
 * console.assert(isQuit(new TextEncoder().encode("quit")));
 * console.assert(!isQuit(new TextEncoder().encode("quit ")));
 * ```
 */
export function isQuit(line: Uint8Array): boolean {
  let length = line.length;
  if (length > 0 && line[length - 1] === LF) length--;
  if (length > 0 && line[length - 1] === CR) length--;
  return length === 4 && line[0] === 0x71 && line[1] === 0x75 && line[2] === 0x69 &&
    line[3] === 0x74;
}
