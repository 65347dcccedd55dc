/**
 * memcached's text protocol, command by command, as memcached 1.6.18's `process_command_ascii`
 * and its `process_*_command` functions do it: the same token counts, the same checks in the same
 * order (so that the same bad line gets the same error, and `noreply` silences the same errors),
 * the same answers. The meta commands are in `meta.ts`, the stats in `stats.ts`.
 *
 * Runs inside a worker. Commands that read the store take its lock for the length of their work.
 *
 * @module
 */

import { finishMetaSet, processMeta } from "./meta.ts";
import { safeStrtol, safeStrtoul, safeStrtoull } from "./numbers.ts";
import { FLUSH_AT } from "./reply.ts";
import { type GetRead, type Session, startValue } from "./session.ts";
import { ClassStat, ItemFlag, KEY_MAX_LENGTH, NO_MEMORY, Stat, TOO_LARGE } from "./shared_store.ts";
import { processStats } from "./stats.ts";
import { addDelta, storeItem, type StoreMode } from "./storage.ts";
import type { Tokens } from "./tokens.ts";

/** What `version` answers: the protocol it speaks, and that it is not memcached itself. */
export const VERSION = "1.6.0-echoserver";

const KEY = 1;

/**
 * Runs one command line (memcached's `process_command_ascii`).
 *
 * @param session The connection.
 * @param line The line, without its line end.
 * @returns False when a `get` stopped for backpressure (resume it with {@linkcode resumeGet}).
 */
export function processCommand(session: Session, line: Uint8Array): boolean {
  session.noreply = false;
  const t = session.tokens.split(lineUntilNul(line));
  const n = t.count;
  if (n < 2 || t.length(0) < 2) {
    session.out("ERROR");
    return true;
  }
  const first = t.byte(0);
  if (first === 0x6d /* m */ && t.length(0) === 2) {
    processMeta(session, t);
    return true;
  }
  if (first === 0x67 /* g */) {
    if (n < 3) {
      session.out("ERROR");
      return true;
    }
    if (t.is(0, "get")) return startGet(session, t, false, false);
    if (t.is(0, "gets")) return startGet(session, t, true, false);
    if (t.is(0, "gat")) return startGet(session, t, false, true);
    if (t.is(0, "gats")) return startGet(session, t, true, true);
    session.out("ERROR");
    return true;
  }
  // The rest as memcached dispatches them: by first letter, then by the whole word. A word
  // memcached does not know (or this server does not support, see the README) is ERROR.
  switch (first) {
    case 0x73: // s
      if (t.is(0, "set")) return !wantOr(session, n, 6, 7) || update(session, t, "set", false);
      if (t.is(0, "stats")) {
        processStats(session, t, { version: VERSION, threads: session.threads });
        return true;
      }
      if (t.is(0, "shutdown")) {
        // memcached without -A: this server never lets a client stop it.
        session.out("ERROR: shutdown not enabled");
        return true;
      }
      return error(session);
    case 0x61: // a
      if (t.is(0, "add")) return !wantOr(session, n, 6, 7) || update(session, t, "add", false);
      if (t.is(0, "append")) {
        return !wantOr(session, n, 6, 7) || update(session, t, "append", false);
      }
      return error(session);
    case 0x63: // c
      if (t.is(0, "cas")) return !wantOr(session, n, 7, 8) || update(session, t, "cas", true);
      return error(session);
    case 0x69: // i
      if (t.is(0, "incr")) return !wantOr(session, n, 4, 5) || arithmetic(session, t, true);
      return error(session);
    case 0x64: // d
      if (t.is(0, "delete")) {
        if (n < 3 || n > 5) return error(session);
        remove(session, t);
        return true;
      }
      if (t.is(0, "decr")) return !wantOr(session, n, 4, 5) || arithmetic(session, t, false);
      return error(session);
    case 0x74: // t
      if (t.is(0, "touch")) return !wantOr(session, n, 4, 5) || touch(session, t);
      return error(session);
  }
  if (t.is(0, "replace")) return !wantOr(session, n, 6, 7) || update(session, t, "replace", false);
  if (t.is(0, "prepend")) return !wantOr(session, n, 6, 7) || update(session, t, "prepend", false);
  if (t.is(0, "bget")) {
    // memcached keeps this ancient alias of get.
    if (n < 3) return error(session);
    return startGet(session, t, false, false);
  }
  if (t.is(0, "flush_all")) {
    if (n < 2 || n > 4) return error(session);
    flushAll(session, t);
    return true;
  }
  if (t.is(0, "version")) {
    session.out(`VERSION ${VERSION}`);
    return true;
  }
  if (t.is(0, "quit")) {
    session.closeAfter = true;
    return true;
  }
  if (t.is(0, "verbosity")) return !wantOr(session, n, 3, 4) || verbosityCommand(session, t);
  // An HTTP request on the memcache port: memcached drops the connection without a word.
  if (startsWith(t.token(n - 2), "HTTP/")) {
    session.closeNow = true;
    return true;
  }
  session.out("ERROR");
  return true;
}

/** memcached's `WANT_TOKENS_OR`. */
function wantOr(session: Session, n: number, a: number, b: number): boolean {
  if (n === a || n === b) return true;
  session.out("ERROR");
  return false;
}

function error(session: Session): true {
  session.out("ERROR");
  return true;
}

/** memcached's `set_noreply_maybe`: the last real token says `noreply`. */
function noreplyMaybe(session: Session, t: Tokens): boolean {
  if (t.is(t.count - 2, "noreply")) session.noreply = true;
  return session.noreply;
}

function startsWith(bytes: Uint8Array, text: string): boolean {
  if (bytes.length < text.length) return false;
  for (let i = 0; i < text.length; i++) if (bytes[i] !== text.charCodeAt(i)) return false;
  return true;
}

/** memcached reads command lines as C strings: nothing past a NUL byte counts. */
function lineUntilNul(line: Uint8Array): Uint8Array {
  const nul = line.indexOf(0);
  return nul < 0 ? line : line.subarray(0, nul);
}

// ---- get, gets, gat, gats ----

function startGet(session: Session, t: Tokens, returnCas: boolean, touch: boolean): boolean {
  let exptime = 0;
  let at = t.start[KEY]!;
  if (touch) {
    const exptimeInt = safeStrtol(t.token(1));
    if (exptimeInt === undefined) {
      session.out("CLIENT_ERROR invalid exptime argument");
      return true;
    }
    exptime = session.store.realtime(exptimeInt);
    at = t.start[2]!;
  }
  const get: GetRead = {
    line: t.line,
    at,
    returnCas,
    touch,
    exptime,
    refuseAt: firstLongKey(t.line, at),
  };
  return resumeGet(session, get);
}

/**
 * Answers a `get` from where it stands: each key in turn, its value copied out of the store
 * under the lock; every 64 KiB the reply goes to the socket, and if the socket is over its
 * high-water mark the rest waits (the client is not read meanwhile).
 *
 * @param session The connection.
 * @param get The command and how far it got.
 * @returns True when it finished; false when it is waiting for the socket to drain.
 */
export function resumeGet(session: Session, get: GetRead): boolean {
  const { store, reply } = session;
  const line = get.line;
  const end = line.length;
  let at = get.at;
  while (true) {
    while (at < end && line[at] === 0x20) at++;
    if (at >= end) break;
    let keyEnd = at;
    while (keyEnd < end && line[keyEnd] !== 0x20) keyEnd++;
    if (at === get.refuseAt) {
      session.out("CLIENT_ERROR bad command line format");
      session.pendingGet = undefined;
      return true;
    }
    const silent = get.refuseAt >= 0;
    const key = line.subarray(at, keyEnd);
    at = keyEnd;
    store.lock();
    try {
      const ref = store.find(key);
      if (ref !== 0) {
        if (get.touch) store.setExptime(ref, get.exptime);
        store.bump(ref);
        if (!silent) {
          reply.ascii("VALUE ");
          reply.raw(store.key(ref));
          reply.byte(0x20);
          reply.number(store.flags(ref));
          reply.byte(0x20);
          reply.number(store.nbytes(ref));
          if (get.returnCas) {
            reply.byte(0x20);
            reply.number(store.cas(ref));
          }
          reply.crlf();
          reply.raw(store.value(ref));
          reply.crlf();
        }
        if (get.touch) {
          store.stats[Stat.cmd_touch]!++;
          store.countClass(ref, ClassStat.touch_hits);
        } else {
          store.countClass(ref, ClassStat.get_hits);
          store.stats[Stat.cmd_get]!++;
        }
      } else if (get.touch) {
        store.stats[Stat.cmd_touch]!++;
        store.stats[Stat.touch_misses]!++;
      } else {
        store.stats[Stat.get_misses]!++;
        store.stats[Stat.cmd_get]!++;
      }
    } finally {
      store.unlock();
    }
    if (reply.length >= FLUSH_AT) {
      if (!reply.flush(session.socket)) {
        get.at = at;
        session.pendingGet = get;
        return false;
      }
    }
  }
  reply.ascii("END\r\n");
  session.pendingGet = undefined;
  return true;
}

/** Where the first key longer than memcached allows starts in a get's line, or -1. */
function firstLongKey(line: Uint8Array, from: number): number {
  let start = -1;
  for (let i = from; i <= line.length; i++) {
    if (i === line.length || line[i] === 0x20) {
      if (start >= 0 && i - start > KEY_MAX_LENGTH) return start;
      start = -1;
    } else if (start < 0) start = i;
  }
  return -1;
}

// ---- set, add, replace, append, prepend, cas ----

function update(session: Session, t: Tokens, mode: StoreMode, handleCas: boolean): boolean {
  noreplyMaybe(session, t);
  if (t.length(KEY) > KEY_MAX_LENGTH) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  const flags = safeStrtoul(t.token(2));
  const exptimeInt = flags === undefined ? undefined : safeStrtol(t.token(3));
  const vlen = exptimeInt === undefined ? undefined : safeStrtol(t.token(4));
  if (flags === undefined || exptimeInt === undefined || vlen === undefined) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  const store = session.store;
  let cas = 0;
  if (handleCas) {
    const parsed = safeStrtoull(t.token(5));
    if (parsed === undefined) {
      session.out("CLIENT_ERROR bad command line format");
      return true;
    }
    cas = Number(parsed);
  }
  if (vlen < 0 || vlen > 0x7fffffff - 2) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  const key = t.token(KEY);
  store.lock();
  let ref: number;
  try {
    ref = store.alloc(key, flags, store.realtime(exptimeInt), vlen);
    if (ref === TOO_LARGE || ref === NO_MEMORY) {
      if (ref === TOO_LARGE) store.stats[Stat.store_too_large]!++;
      else store.stats[Stat.store_no_memory]!++;
      // A failed set must not leave the old value readable.
      if (mode === "set") {
        const old = store.find(key);
        if (old !== 0) store.unlink(old);
      }
    }
  } finally {
    store.unlock();
  }
  if (ref === TOO_LARGE || ref === NO_MEMORY) {
    session.out(
      ref === TOO_LARGE
        ? "SERVER_ERROR object too large for cache"
        : "SERVER_ERROR out of memory storing object",
    );
    session.swallow = vlen + 2;
    return true;
  }
  session.value = startValue(ref, vlen, mode, cas, false, undefined);
  return true;
}

/**
 * A value has been read into its item (memcached's `complete_nread_ascii`): checks the `\r\n`
 * after it and stores it, or says why not.
 *
 * @param session The connection; its `value` is complete.
 */
export function completeValue(session: Session): void {
  const value = session.value!;
  session.value = undefined;
  const store = session.store;
  store.lock();
  try {
    store.countClass(value.ref, ClassStat.cmd_set);
    if (!value.tailOk) {
      store.free(value.ref);
      if (value.meta !== undefined) session.noreply = false; // meta sets always say it
      session.out("CLIENT_ERROR bad data chunk");
      return;
    }
    const returns = value.meta;
    // The key, before the item is stored or freed (a meta set may send it back).
    const key = returns?.includes("k") ? store.key(value.ref).slice() : EMPTY;
    const binaryKey = (store.itFlags(value.ref) & ItemFlag.KEY_BINARY) !== 0;
    const { result, cas } = storeItem(store, value.ref, value.mode, value.cas, value.setStale);
    if (returns !== undefined) finishMetaSet(session, result, key, binaryKey, cas, returns);
    else session.out(result);
  } finally {
    store.unlock();
  }
}

const EMPTY = new Uint8Array(0);

// ---- incr, decr ----

function arithmetic(session: Session, t: Tokens, incr: boolean): boolean {
  noreplyMaybe(session, t);
  if (t.length(KEY) > KEY_MAX_LENGTH) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  const delta = safeStrtoull(t.token(2));
  if (delta === undefined) {
    session.out("CLIENT_ERROR invalid numeric delta argument");
    return true;
  }
  const store = session.store;
  store.lock();
  let outcome;
  try {
    outcome = addDelta(store, t.token(KEY), incr, delta, 0);
    if (outcome.result === "NOT_FOUND") {
      store.stats[incr ? Stat.incr_misses : Stat.decr_misses]!++;
    }
  } finally {
    store.unlock();
  }
  switch (outcome.result) {
    case "OK":
      session.out(outcome.value);
      break;
    case "NON_NUMERIC":
      session.out("CLIENT_ERROR cannot increment or decrement non-numeric value");
      break;
    case "EOM":
      session.out("SERVER_ERROR out of memory");
      break;
    case "NOT_FOUND":
      session.out("NOT_FOUND");
      break;
    case "CAS_MISMATCH":
      break; // no CAS with the classic commands
  }
  return true;
}

// ---- delete ----

function remove(session: Session, t: Tokens): void {
  const n = t.count;
  if (n > 3) {
    const holdIsZero = t.is(KEY + 1, "0");
    const setsNoreply = noreplyMaybe(session, t);
    const valid = (n === 4 && (holdIsZero || setsNoreply)) ||
      (n === 5 && holdIsZero && setsNoreply);
    if (!valid) {
      session.out("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
      return;
    }
  }
  if (t.length(KEY) > KEY_MAX_LENGTH) {
    session.out("CLIENT_ERROR bad command line format");
    return;
  }
  const store = session.store;
  store.lock();
  let found: boolean;
  try {
    const ref = store.find(t.token(KEY));
    found = ref !== 0;
    if (found) {
      store.countClass(ref, ClassStat.delete_hits);
      store.unlink(ref);
    } else store.stats[Stat.delete_misses]!++;
  } finally {
    store.unlock();
  }
  session.out(found ? "DELETED" : "NOT_FOUND");
}

// ---- touch ----

function touch(session: Session, t: Tokens): boolean {
  noreplyMaybe(session, t);
  if (t.length(KEY) > KEY_MAX_LENGTH) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  const exptimeInt = safeStrtol(t.token(2));
  if (exptimeInt === undefined) {
    session.out("CLIENT_ERROR invalid exptime argument");
    return true;
  }
  const store = session.store;
  store.lock();
  let found: boolean;
  try {
    const ref = store.find(t.token(KEY));
    found = ref !== 0;
    store.stats[Stat.cmd_touch]!++;
    if (found) {
      store.bump(ref);
      store.setExptime(ref, store.realtime(exptimeInt));
      store.countClass(ref, ClassStat.touch_hits);
    } else store.stats[Stat.touch_misses]!++;
  } finally {
    store.unlock();
  }
  session.out(found ? "TOUCHED" : "NOT_FOUND");
  return true;
}

// ---- verbosity, flush_all ----

function verbosityCommand(session: Session, t: Tokens): boolean {
  noreplyMaybe(session, t);
  const level = safeStrtoul(t.token(1));
  if (level === undefined) {
    session.out("CLIENT_ERROR bad command line format");
    return true;
  }
  session.store.verbosity = Math.min(level, 2); // memcached's MAX_VERBOSITY_LEVEL
  session.out("OK");
  return true;
}

function flushAll(session: Session, t: Tokens): void {
  noreplyMaybe(session, t);
  const store = session.store;
  store.stats[Stat.cmd_flush]!++;
  let exptime = 0;
  if (t.count !== (session.noreply ? 3 : 2)) {
    const parsed = safeStrtol(t.token(1));
    if (parsed === undefined) {
      session.out("CLIENT_ERROR invalid exptime argument");
      return;
    }
    exptime = parsed;
  }
  store.lock();
  try {
    const newOldest = exptime > 0 ? store.realtime(exptime) : store.now();
    const oldestLive = newOldest - 1;
    store.setFlush(oldestLive, oldestLive <= store.now() ? store.nextCas() : 0);
  } finally {
    store.unlock();
  }
  session.out("OK");
}
