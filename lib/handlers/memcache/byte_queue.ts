/**
 * The bytes a connection has received and not yet parsed, as a queue of chunks: lines and data
 * blocks are taken from the front whatever chunk boundaries they straddle, and nothing is
 * copied until taken (or kept past a chunk's loan, `keep`).
 *
 * Pure; runs inside a worker.
 *
 * @module
 */

/** Received bytes not yet parsed. */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  /** Bytes of `#chunks[0]` already taken. */
  #head = 0;
  #length = 0;

  /** Bytes in the queue. */
  get length(): number {
    return this.#length;
  }

  /** The first byte, or -1 if the queue is empty. */
  first(): number {
    return this.#length === 0 ? -1 : this.#chunks[0]![this.#head]!;
  }

  /**
   * Adds bytes at the end (kept as they are, not copied: a lent chunk must be followed by
   * {@linkcode ByteQueue.keep} before its loan ends).
   *
   * @param chunk The bytes.
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Replaces what the queue holds by one copy of it, so that no lent chunk is referenced. */
  keep(): void {
    if (this.#length === 0) {
      this.#chunks = [];
      this.#head = 0;
      return;
    }
    const rest = this.take(this.#length);
    this.#chunks = [rest];
    this.#head = 0;
    this.#length = rest.length;
  }

  /**
   * Where the first `byte` is, counted from the front.
   *
   * @param byte The byte to look for.
   * @returns Its index, or -1.
   *
   * @example
   * ```ts
   * import { ByteQueue } from "./byte_queue.ts";
   * import assert from "node:assert/strict";
   * const queue = new ByteQueue();
   * queue.push(new TextEncoder().encode("ab"));
   * queue.push(new TextEncoder().encode("c\n"));
   * assert.equal(queue.indexOf(0x0a), 3);
   * ```
   */
  indexOf(byte: number): number {
    let offset = 0;
    for (let i = 0; i < this.#chunks.length; i++) {
      const chunk = this.#chunks[i]!;
      const start = i === 0 ? this.#head : 0;
      const at = chunk.indexOf(byte, start);
      if (at >= 0) return offset + at - start;
      offset += chunk.length - start;
    }
    return -1;
  }

  /**
   * Takes `n` bytes from the front, as an array of their own.
   *
   * @param n How many (at most {@linkcode ByteQueue.length}).
   * @returns A copy, which keeps no chunk alive.
   */
  take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const part = Math.min(n - filled, chunk.length - this.#head);
      out.set(chunk.subarray(this.#head, this.#head + part), filled);
      filled += part;
      this.#advance(part);
    }
    return out;
  }

  /**
   * Drops `n` bytes from the front.
   *
   * @param n How many (at most {@linkcode ByteQueue.length}).
   */
  skip(n: number): void {
    while (n > 0) {
      const part = Math.min(n, this.#chunks[0]!.length - this.#head);
      this.#advance(part);
      n -= part;
    }
  }

  /**
   * Takes the bytes before index `end` as Latin-1 text (one character per byte), then drops the
   * byte at `end` too; a `\r` just before it is left out of the text.
   *
   * @param end Index of the line's `\n`, from {@linkcode ByteQueue.indexOf}.
   * @returns The line.
   */
  takeLine(end: number): string {
    const first = this.#chunks[0]!;
    let bytes: Uint8Array;
    if (this.#head + end <= first.length) {
      bytes = first.subarray(this.#head, this.#head + end); // the usual case: no copy
      this.skip(end);
    } else {
      bytes = this.take(end);
    }
    this.skip(1);
    const length = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d
      ? bytes.length - 1
      : bytes.length;
    return latin1(bytes.subarray(0, length));
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}

/**
 * Bytes as Latin-1 text: one character per byte, so that any key round-trips exactly.
 *
 * @param bytes The bytes.
 * @returns The text.
 */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let at = 0; at < bytes.length; at += 8192) {
    text += String.fromCharCode.apply(null, bytes.subarray(at, at + 8192) as unknown as number[]);
  }
  return text;
}
