/**
 * The memcached text protocol's command lines, parsed into typed commands, with memcached's own
 * error replies for bad ones (checked against memcached 1.6.18: the same input gets the same
 * answer).
 *
 * Pure; runs inside a worker.
 *
 * @module
 */

import type { StoreMode } from "./store.ts";

/** Longest key memcached accepts. */
export const MAX_KEY_LENGTH = 250;
/** Relative expiry times go up to 30 days; larger ones are Unix times. */
const RELATIVE_LIMIT = 60 * 60 * 24 * 30;
const MAX_U64 = (1n << 64n) - 1n;

/** A parsed command line. Expiry times are absolute `Date.now()` ms (0 = never, -1 = past). */
export type Command =
  | { kind: "get"; keys: string[]; cas: boolean; touch?: number }
  | {
    kind: "store";
    mode: StoreMode;
    key: string;
    flags: number;
    expiresAt: number;
    bytes: number;
    cas: number;
    noreply: boolean;
  }
  | { kind: "delete"; key: string; noreply: boolean }
  | { kind: "arith"; key: string; incr: boolean; delta: bigint; noreply: boolean }
  | { kind: "touch"; key: string; expiresAt: number; noreply: boolean }
  | { kind: "flush"; at: number; noreply: boolean }
  | { kind: "stats"; args: string[] }
  | { kind: "version" }
  | { kind: "verbosity"; level: number | undefined; noreply: boolean }
  | { kind: "quit" }
  /** A line memcached refuses; `reply` is its answer, with `\r\n`. */
  | { kind: "error"; reply: string };

const ERROR = { kind: "error", reply: "ERROR\r\n" } as const;
const BAD_FORMAT = { kind: "error", reply: "CLIENT_ERROR bad command line format\r\n" } as const;

/**
 * An expiry time as memcached reads it: 0 never; negative, already past; up to 30 days,
 * seconds from now; beyond, a Unix time.
 *
 * @param exptime The number sent.
 * @param now `Date.now()`.
 * @returns `Date.now()` ms of expiry, 0 for never, or -1 for already expired.
 *
 * @example
 * ```ts
 * import { expiry } from "./commands.ts";
 * import assert from "node:assert/strict";
 * assert.equal(expiry(10, 1_000_000), 1_010_000);
 * assert.equal(expiry(2_000_000_000, 0), 2_000_000_000_000);
 * assert.equal(expiry(-1, 0), -1);
 * ```
 */
export function expiry(exptime: number, now: number): number {
  if (exptime === 0) return 0;
  if (exptime < 0) return -1;
  if (exptime <= RELATIVE_LIMIT) return now + exptime * 1000;
  const at = exptime * 1000;
  return at <= now ? -1 : at;
}

/**
 * Parses one command line (without its line end; bytes read as Latin-1, one character each).
 *
 * @param line The line.
 * @param now `Date.now()`, for expiry times.
 * @returns The command, or the error memcached would answer.
 *
 * @example
 * ```ts
 * import { parseCommand } from "./commands.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseCommand("get a b", 0), { kind: "get", keys: ["a", "b"], cas: false });
 * assert.deepEqual(parseCommand("bogus", 0), { kind: "error", reply: "ERROR\r\n" });
 * ```
 */
export function parseCommand(line: string, now: number): Command {
  const tokens = line.split(" ").filter((t) => t !== "");
  const name = tokens[0];
  switch (name) {
    case "get":
    case "gets":
      return retrieval(tokens.slice(1), name === "gets", undefined);
    case "gat":
    case "gats": {
      const exptime = signed(tokens[1]);
      if (tokens.length < 3) return ERROR;
      if (exptime === undefined) {
        return { kind: "error", reply: "CLIENT_ERROR invalid exptime argument\r\n" };
      }
      return retrieval(tokens.slice(2), name === "gats", expiry(exptime, now));
    }
    case "set":
    case "add":
    case "replace":
    case "append":
    case "prepend":
    case "cas":
      return storage(name, tokens, now);
    case "delete": {
      if (tokens.length < 2) return ERROR;
      const key = tokens[1]!;
      if (key.length > MAX_KEY_LENGTH) return BAD_FORMAT;
      const rest = tokens.slice(2);
      const noreply = rest.at(-1) === "noreply";
      if (noreply) rest.pop();
      // memcached still takes a legacy time of 0, and nothing else.
      if (rest.length > 1 || (rest.length === 1 && rest[0] !== "0")) {
        return {
          kind: "error",
          reply: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        };
      }
      return { kind: "delete", key, noreply };
    }
    case "incr":
    case "decr": {
      if (tokens.length < 3) return ERROR;
      const key = tokens[1]!;
      if (key.length > MAX_KEY_LENGTH) return BAD_FORMAT;
      const delta = u64(tokens[2]!);
      if (delta === undefined) {
        return { kind: "error", reply: "CLIENT_ERROR invalid numeric delta argument\r\n" };
      }
      return { kind: "arith", key, incr: name === "incr", delta, noreply: tokens[3] === "noreply" };
    }
    case "touch": {
      if (tokens.length < 3) return ERROR;
      const key = tokens[1]!;
      if (key.length > MAX_KEY_LENGTH) return BAD_FORMAT;
      const exptime = signed(tokens[2]);
      if (exptime === undefined) {
        return { kind: "error", reply: "CLIENT_ERROR invalid exptime argument\r\n" };
      }
      return {
        kind: "touch",
        key,
        expiresAt: expiry(exptime, now),
        noreply: tokens[3] === "noreply",
      };
    }
    case "flush_all": {
      const rest = tokens.slice(1);
      const noreply = rest.at(-1) === "noreply";
      if (noreply) rest.pop();
      let at = now;
      if (rest.length > 0) {
        const delay = signed(rest[0]);
        if (delay === undefined || delay < 0) {
          return { kind: "error", reply: "CLIENT_ERROR invalid exptime argument\r\n" };
        }
        if (delay > 0) at = expiry(delay, now);
      }
      return { kind: "flush", at, noreply };
    }
    case "stats":
      return { kind: "stats", args: tokens.slice(1) };
    case "version":
      return { kind: "version" }; // memcached 1.6 ignores anything after it
    case "verbosity": {
      // As memcached 1.6: one or two arguments; a last `noreply` silences even an error.
      if (tokens.length < 2 || tokens.length > 3) return ERROR;
      const noreply = tokens.at(-1) === "noreply";
      const level = unsigned(tokens[1]);
      if (level === undefined && !noreply) return BAD_FORMAT;
      return { kind: "verbosity", level, noreply };
    }
    case "quit":
      return { kind: "quit" };
    default:
      return ERROR;
  }
}

function retrieval(keys: string[], cas: boolean, touch: number | undefined): Command {
  if (keys.length === 0) return ERROR;
  if (keys.some((key) => key.length > MAX_KEY_LENGTH)) return BAD_FORMAT;
  return touch === undefined ? { kind: "get", keys, cas } : { kind: "get", keys, cas, touch };
}

function storage(mode: StoreMode, tokens: string[], now: number): Command {
  const needed = mode === "cas" ? 6 : 5;
  if (tokens.length < needed) return ERROR;
  const key = tokens[1]!;
  const flags = unsigned(tokens[2]);
  const exptime = signed(tokens[3]);
  const bytes = unsigned(tokens[4]);
  const cas = mode === "cas" ? u64(tokens[5]!) : 0n;
  if (
    key.length > MAX_KEY_LENGTH || flags === undefined || flags > 0xffffffff ||
    exptime === undefined || bytes === undefined || cas === undefined
  ) {
    return BAD_FORMAT;
  }
  return {
    kind: "store",
    mode,
    key,
    flags,
    expiresAt: expiry(exptime, now),
    bytes,
    cas: Number(cas),
    noreply: tokens[needed] === "noreply",
  };
}

/** A decimal integer that fits a JavaScript number exactly, or undefined. */
function unsigned(token: string | undefined): number | undefined {
  if (token === undefined || !/^\d{1,15}$/.test(token)) return undefined;
  return Number(token);
}

function signed(token: string | undefined): number | undefined {
  if (token === undefined || !/^-?\d{1,15}$/.test(token)) return undefined;
  return Number(token);
}

function u64(token: string): bigint | undefined {
  if (!/^\d{1,20}$/.test(token)) return undefined;
  const n = BigInt(token);
  return n > MAX_U64 ? undefined : n;
}
