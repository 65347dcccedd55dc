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
import type { Connection, Handler } from "./handler.ts";

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
 * Serves the `hash` protocol on one connection.
 *
 * @param connection The connection.
 */
export const hash: Handler = async (connection: Connection): Promise<void> => {
  const writer = connection.writable.getWriter();
  let pending = new Uint8Array(0);
  for await (const chunk of connection.readable) {
    // Reading this chunk took a turn of the event loop: the clock of continuous work restarts.
    let turnAt = performance.now();
    let data = pending.length === 0 ? chunk : concat(pending, chunk);
    let replies = "";
    let start = 0;
    let quit = false;
    for (let newline = data.indexOf(0x0a); newline >= 0; newline = data.indexOf(0x0a, start)) {
      const end = newline > start && data[newline - 1] === 0x0d ? newline - 1 : newline;
      const line = data.subarray(start, end);
      start = newline + 1;
      if (line.length === 4 && new TextDecoder().decode(line) === "quit") {
        quit = true;
        break;
      }
      replies += answer(line) + "\n";
      if (line[0] === 0x23 /* # */ && roundsOf(line) > YIELD_AFTER_ROUNDS) {
        if (performance.now() - turnAt >= TURN_EVERY_MS) {
          // Every few milliseconds of work: send the answers so far, and give the worker a turn.
          await writer.write(encoder.encode(replies));
          replies = "";
          await new Promise((resolve) => setTimeout(resolve, 0));
          turnAt = performance.now();
        } else {
          // Between costly lines: let other connections' lines in first, so that their answers
          // leave in the same batch (main dispatch) rather than one message each.
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    }
    if (replies !== "") await writer.write(encoder.encode(replies));
    if (quit) break;
    data = data.subarray(start);
    if (data.length > MAX_LINE) {
      await writer.write(encoder.encode("ERR line too long\n"));
      break;
    }
    pending = data.slice();
  }
  await writer.close();
};

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

/** The round count a line asks for (1 if none, or out of range). */
function roundsOf(line: Uint8Array): number {
  const match = ROUNDS.exec(new TextDecoder().decode(line.subarray(0, 8)));
  return match === null ? 1 : Number(match[1]);
}
