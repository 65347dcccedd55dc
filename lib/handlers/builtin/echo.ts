/**
 * The echo protocol: every byte comes back in order; a line `quit` ends the connection.
 *
 * Runs inside a worker, as the default handler.
 *
 * @module
 */

import { indexOfByte } from "../bytes.ts";
import type { Connection, Handler, SocketHandler } from "../handler.ts";

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
      const newline = indexOfByte(chunk, NEWLINE, start);
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

/**
 * Echoes every byte back until the client half-closes or sends a `quit` line; bytes before the
 * `quit` line are echoed, anything after it is not. Echo never holds bytes back, so the parts of
 * a `quit` line that arrived before its end (in earlier chunks) have been echoed already.
 *
 * Byte-level: each chunk lent by the server is written straight back (the kernel usually takes
 * it in the call), so a round trip allocates nothing. Backpressure needs no code here: while
 * the client leaves 64 KiB of echo unread, the server stops reading it.
 *
 * @example Serving it by hand (the server does this for `--handler echo`)
 * ```ts ignore
 * import { handler } from "./echo.ts";
 * handler.open!(socket);
 * handler.data(socket, bytes); // writes bytes back
 * ```
 */
export const handler: SocketHandler<QuitDetector> = {
  open(socket) {
    socket.data = new QuitDetector();
  },
  data(socket, bytes) {
    const quitAt = socket.data.scan(bytes);
    if (quitAt < 0) {
      socket.write(bytes);
      return;
    }
    if (quitAt > 0) socket.write(bytes.subarray(0, quitAt));
    socket.end();
  },
};

/**
 * The same protocol over Web Streams, for handlers that compose it with streams of their own
 * (a test fixture tees the readable, for one).
 *
 * @param connection The connection to serve.
 */
export const echoStream: Handler = async (connection: Connection): Promise<void> => {
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
