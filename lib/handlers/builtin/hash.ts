/**
 * The `hash` protocol: for each line received, one line back with the hex SHA-256 of the line,
 * optionally iterated (key stretching) so that each line costs real CPU. It is the example of a
 * handler that does work per message, where more workers serve more. The digests come from
 * `node:crypto` (crypto is never hand-written here).
 *
 * Runs inside a worker, as a built-in handler (`--handler hash`).
 *
 * Protocol: a line `abc` gets `ba7816bf...15ad` (SHA-256 of `abc`). A line `#1000 abc` gets
 * SHA-256 applied 1000 times: first to `abc`, then to each previous 32-byte digest. Rounds go up
 * to {@linkcode MAX_ROUNDS} (a round costs about 4 us here, so a line stays under about 10 ms of
 * CPU). `\r\n` line ends are accepted. A line longer than 1 MiB gets `ERR line too long` and
 * closes the connection; a line `quit` closes it. Between lines that cost real work the handler
 * sends the answers computed so far and yields to the worker's other connections, so one client
 * cannot hold its worker.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { setImmediate } from "node:timers";
import type { Socket, SocketHandler } from "../handler.ts";
import { isQuit, LineReader } from "../lines.ts";

/** Most rounds a line may ask for: about 10 ms of CPU at about 4 us a round. */
export const MAX_ROUNDS = 2_500;
/** Longest line accepted. */
export const MAX_LINE = 1024 * 1024;

/**
 * SHA-256 of `data` (`node:crypto`).
 *
 * @param data The message.
 * @returns The 32-byte digest.
 *
 * @example
 * ```ts
 * import { sha256 } from "./hash.ts";
 * import assert from "node:assert/strict";
 * assert.equal(
 *   sha256(new TextEncoder().encode("abc")).toHex(),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  const digest = createHash("sha256").update(data).digest();
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength);
}

const encoder = new TextEncoder();
const ROUNDS = /^#(\d{1,6}) /;

/**
 * The reply to one line (without its line end): the hex digest, or an error.
 *
 * @param line The line's bytes, without `\n` or `\r\n`.
 * @returns The reply text.
 */
export function answer(line: Uint8Array): string {
  let rounds = 1;
  let data = line;
  if (line[0] === 0x23 /* # */) {
    const match = ROUNDS.exec(new TextDecoder().decode(line.subarray(0, 8)));
    if (match) {
      rounds = Number(match[1]);
      data = line.subarray(match[0].length);
      if (rounds < 1 || rounds > MAX_ROUNDS) return `ERR rounds must be 1 to ${MAX_ROUNDS}`;
    }
  }
  let digest = sha256(data);
  for (let i = 1; i < rounds; i++) digest = sha256(digest);
  return digest.toHex();
}

/** Rounds past which a line counts as real work, after which the handler yields. */
const YIELD_AFTER_ROUNDS = 50;
/**
 * Most milliseconds of work between two full turns of the event loop. Only a timer gives one:
 * `setImmediate` and a socket write that completes at once return before Deno polls for I/O, so
 * with them alone a `kernel`-dispatch worker did not even accept a new connection until a flood
 * of costly lines was over (seen in `tests/attack_test.ts`).
 */
const TURN_EVERY_MS = 5;

/**
 * Serves the `hash` protocol: each line's answer, written once per chunk (or once per few
 * milliseconds of work), in order.
 *
 * Byte-level: lines are views of the lent chunk, so only a line split across chunks is copied.
 * A chunk whose work takes longer than {@linkcode TURN_EVERY_MS} returns a promise, which holds
 * the connection's next chunk back until its lines are all answered.
 */
export const handler: SocketHandler<LineReader> = {
  open(socket) {
    socket.data = new LineReader(MAX_LINE);
  },
  data(socket, bytes) {
    socket.data.push(bytes);
    // Reading this chunk took a turn of the event loop: the clock of continuous work restarts.
    return answerLines(socket, performance.now(), "");
  },
  end(socket) {
    // A last line without its newline is not a line: nothing to answer.
    socket.end();
  },
};

const scratch = { bytes: new Uint8Array(4096) };

/** Writes `text` (ASCII) through a reused buffer: no allocation per reply. */
function send(socket: Socket, text: string): void {
  if (text.length > scratch.bytes.length) scratch.bytes = new Uint8Array(text.length * 2);
  const { written } = encoder.encodeInto(text, scratch.bytes);
  socket.write(scratch.bytes.subarray(0, written));
}

/**
 * Answers the chunk's lines from where it stands (`replies`: answers not yet sent); returns a
 * promise when it had to take a turn of the event loop (the rest is answered after it),
 * nothing when it finished at once.
 */
function answerLines(
  socket: Socket<LineReader>,
  turnAt: number,
  replies: string,
): void | Promise<void> {
  const lines = socket.data;
  for (let line = lines.next(); line !== undefined; line = lines.next()) {
    if (isQuit(line)) {
      if (replies !== "") send(socket, replies);
      socket.end();
      return;
    }
    replies += answer(line) + "\n";
    if (line[0] === 0x23 /* # */ && roundsOf(line) > YIELD_AFTER_ROUNDS) {
      if (performance.now() - turnAt >= TURN_EVERY_MS) {
        // Every few milliseconds of work: send the answers so far, and give the worker a turn.
        send(socket, replies);
        return new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() =>
          answerLines(socket, performance.now(), "")
        );
      }
      // Between costly lines: let other connections' lines in first, so that their answers
      // leave in the same batch (main dispatch) rather than one message each.
      return new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
        answerLines(socket, turnAt, replies)
      );
    }
  }
  if (replies !== "") send(socket, replies);
  if (!lines.keep()) {
    send(socket, "ERR line too long\n");
    socket.end();
  }
}

/** The round count a line asks for (1 if none, or out of range). */
function roundsOf(line: Uint8Array): number {
  const match = ROUNDS.exec(new TextDecoder().decode(line.subarray(0, 8)));
  return match === null ? 1 : Number(match[1]);
}
