/**
 * The echo protocol: every byte comes back in order; a line `quit` ends the connection.
 *
 * Runs inside a worker, as the default handler.
 *
 * @module
 */

import type { Connection, Handler } from "./handler.ts";

const NEWLINE = 0x0a;
const QUIT = [0x71, 0x75, 0x69, 0x74]; // "quit"
const CR = 0x0d;

/**
 * Finds lines that say `quit` (`quit\n` or `quit\r\n`) in a byte stream that arrives in chunks
 * of any size, including a `quit` line split across chunks.
 *
 * @example
 * ```ts
 * import { QuitDetector } from "./echo.ts";
 * import assert from "node:assert/strict";
 * const detector = new QuitDetector();
 * const bytes = (s: string) => new TextEncoder().encode(s);
 * assert.equal(detector.scan(bytes("hello\nqu")), -1);
 * assert.equal(detector.scan(bytes("it\r\nmore")), 0);
 * ```
 */
export class QuitDetector {
  /** Length of the current (unfinished) line so far. */
  #lineLength = 0;
  /** Its first bytes, as long as it is short enough to still be `quit\r`. */
  #head: number[] = [];

  /**
   * Scans the next chunk of the stream.
   *
   * @param chunk The next bytes.
   * @returns The offset in `chunk` where the first complete `quit` line starts (0 if it started
   *   in an earlier chunk), or -1 if no `quit` line ends in this chunk.
   */
  scan(chunk: Uint8Array): number {
    let start = 0;
    while (start <= chunk.length) {
      const newline = nextNewline(chunk, start);
      const end = newline < 0 ? chunk.length : newline;
      this.#extend(chunk, start, end);
      if (newline < 0) return -1;
      if (this.#isQuit()) return start;
      this.#lineLength = 0;
      this.#head.length = 0;
      start = newline + 1;
    }
    return -1;
  }

  #extend(chunk: Uint8Array, start: number, end: number): void {
    for (let i = start; i < end && this.#head.length < 5; i++) this.#head.push(chunk[i]!);
    this.#lineLength += end - start;
  }

  #isQuit(): boolean {
    const length = this.#lineLength;
    if (length !== 4 && length !== 5) return false;
    if (length === 5 && this.#head[4] !== CR) return false;
    return QUIT.every((byte, i) => this.#head[i] === byte);
  }
}

/** Below this many bytes, `indexOf` is as fast as anything. */
const WORDWISE_MIN = 256;
const NEWLINES = 0x0a0a0a0a;
const LOW_BITS = 0x01010101;
const HIGH_BITS = 0x80808080;

/**
 * `chunk.indexOf(NEWLINE, from)`, made about twice as fast on long chunks by testing four bytes
 * per step (V8's `indexOf` on typed arrays goes byte by byte). A word `w` holds a newline iff
 * `x = w ^ 0x0a0a0a0a` has a zero byte, which `(x - 0x01010101) & ~x & 0x80808080` detects.
 *
 * @param chunk The bytes.
 * @param from Where to start looking.
 * @returns The index of the first newline at or after `from`, or -1.
 */
export function nextNewline(chunk: Uint8Array, from: number): number {
  const end = chunk.length;
  if (end - from < WORDWISE_MIN) return chunk.indexOf(NEWLINE, from);
  let at = from;
  while ((chunk.byteOffset + at) % 4 !== 0) {
    if (chunk[at] === NEWLINE) return at;
    at++;
  }
  const words = new Uint32Array(chunk.buffer, chunk.byteOffset + at, (end - at) >>> 2);
  for (let i = 0; i < words.length; i++) {
    const x = words[i]! ^ NEWLINES;
    if (((x - LOW_BITS) & ~x & HIGH_BITS) !== 0) return chunk.indexOf(NEWLINE, at + i * 4);
  }
  return chunk.indexOf(NEWLINE, at + words.length * 4);
}

/**
 * Echoes every byte back until the client half-closes or sends a `quit` line. Bytes before the
 * `quit` line are echoed; anything after it is not. Echo never holds bytes back, so the parts
 * of a `quit` line that arrived before its end (in earlier chunks) have been echoed already.
 *
 * @param connection The connection to serve.
 */
export const echo: Handler = async (connection: Connection): Promise<void> => {
  const reader = connection.readable.getReader();
  const writer = connection.writable.getWriter();
  const detector = new QuitDetector();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    const quitAt = detector.scan(value);
    if (quitAt >= 0) {
      if (quitAt > 0) await writer.write(value.subarray(0, quitAt));
      await reader.cancel();
      break;
    }
    await writer.write(value);
  }
  await writer.close();
};
