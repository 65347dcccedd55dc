/**
 * The `hash` protocol: for each line received, one line back with the hex SHA-256 of the line,
 * computed in JavaScript in the worker, optionally iterated (key stretching) to make each line
 * cost real CPU. It is the example of a handler that does work per message, where more workers
 * serve more.
 *
 * Runs inside a worker, as a built-in handler (`--handler hash`).
 *
 * Protocol: a line `abc` gets `ba7816bf...15ad` (SHA-256 of `abc`). A line `#1000 abc` gets
 * SHA-256 applied 1000 times: first to `abc`, then to each previous 32-byte digest. Rounds go up
 * to 100000. `\r\n` line ends are accepted. A line longer than 1 MiB gets `ERR line too long`
 * and closes the connection; a line `quit` closes it.
 *
 * @module
 */

import type { Connection, Handler } from "./handler.ts";

const K = new Uint32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
const INITIAL = new Uint32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);
const w = new Uint32Array(64);
const state = new Uint32Array(8);
let padded = new Uint8Array(128);
let paddedView = new DataView(padded.buffer);

/** Most rounds a line may ask for. */
export const MAX_ROUNDS = 100_000;
/** Longest line accepted. */
export const MAX_LINE = 1024 * 1024;

/**
 * SHA-256 of `data`, in plain JavaScript (FIPS 180-4).
 *
 * @param data The message.
 * @returns The 32-byte digest.
 *
 * @example
 * ```ts
 * import { sha256, toHex } from "./hash.ts";
 * import assert from "node:assert/strict";
 * assert.equal(
 *   toHex(sha256(new TextEncoder().encode("abc"))),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  const length = data.length;
  const blocks = Math.ceil((length + 9) / 64);
  // Scratch space is reused across calls (one worker runs one hash at a time): iterated
  // hashing would otherwise allocate several buffers per round and spend its time in GC.
  if (padded.length < blocks * 64) {
    padded = new Uint8Array(blocks * 64);
    paddedView = new DataView(padded.buffer);
  }
  padded.fill(0, 0, blocks * 64);
  padded.set(data);
  padded[length] = 0x80;
  paddedView.setUint32(blocks * 64 - 8, Math.floor(length / 0x20000000), false);
  paddedView.setUint32(blocks * 64 - 4, (length * 8) >>> 0, false);
  state.set(INITIAL);
  for (let block = 0; block < blocks; block++) {
    for (let i = 0; i < 16; i++) w[i] = paddedView.getUint32(block * 64 + i * 4, false);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15]!, b = w[i - 2]!;
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
    }
    let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!;
    let e = state[4]!, f = state[5]!, g = state[6]!, hh = state[7]!;
    for (let i = 0; i < 64; i++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + s1 + ch + K[i]! + w[i]!) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (s0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    state[0] = (state[0]! + a) | 0;
    state[1] = (state[1]! + b) | 0;
    state[2] = (state[2]! + c) | 0;
    state[3] = (state[3]! + d) | 0;
    state[4] = (state[4]! + e) | 0;
    state[5] = (state[5]! + f) | 0;
    state[6] = (state[6]! + g) | 0;
    state[7] = (state[7]! + hh) | 0;
  }
  const digest = new Uint8Array(32);
  const out = new DataView(digest.buffer);
  for (let i = 0; i < 8; i++) out.setUint32(i * 4, state[i]!, false);
  return digest;
}

/**
 * Lower-case hex of bytes.
 *
 * @param bytes The bytes.
 * @returns Two hex digits per byte.
 */
export function toHex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex;
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
  return toHex(digest);
}

/**
 * Serves the `hash` protocol on one connection.
 *
 * @param connection The connection.
 */
export const hash: Handler = async (connection: Connection): Promise<void> => {
  const writer = connection.writable.getWriter();
  let pending = new Uint8Array(0);
  for await (const chunk of connection.readable) {
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
