/**
 * memcached's meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) as memcached 1.6.18's
 * `process_m*_command` functions run them: one flag parser for all (`_meta_flag_preparse`: a flag
 * is a token's first byte, each at most once, with its argument glued on), the same checks in the
 * same order, the same return flags in the order the request gave them, and memcached's rules for
 * quiet mode (`q` hides the nominal answer of each command: `HD` of a store or delete, `EN` of a
 * miss, `HD` of an arithmetic; errors always show).
 *
 * Runs inside a worker. Each command takes the store's lock for the length of its work.
 *
 * @module
 */

import { decodeBase64, encodeBase64 } from "./base64.ts";
import { safeStrtol, safeStrtoul, safeStrtoull } from "./numbers.ts";
import type { Reply } from "./reply.ts";
import { type Session, startValue } from "./session.ts";
import {
  ClassStat,
  ItemFlag,
  KEY_MAX_LENGTH,
  NO_MEMORY,
  type SharedStore,
  Stat,
  TOO_LARGE,
} from "./shared_store.ts";
import { addDelta, storeItem, type StoreMode } from "./storage.ts";
import type { Tokens } from "./tokens.ts";

/** memcached's `MFLAG_MAX_OPT_LENGTH`: a meta command has fewer tokens than this. */
const MFLAG_MAX_OPT_LENGTH = 20;
/** memcached's `MFLAG_MAX_OPAQUE_LENGTH`. */
const MFLAG_MAX_OPAQUE_LENGTH = 32;
const KEY = 1;
const BAD_FORMAT = "CLIENT_ERROR bad command line format";
const BAD_TOKEN = "CLIENT_ERROR bad token in command line format";

/** What the flags of one meta command asked for (memcached's `struct _meta_flags`). */
interface MetaFlags {
  /** The key, decoded if `b` was given. */
  key: Uint8Array;
  keyBinary: boolean;
  noUpdate: boolean;
  vivify: boolean;
  value: boolean;
  setStale: boolean;
  noReply: boolean;
  hasCas: boolean;
  newTtl: boolean;
  /** `M`'s mode character, or 0. */
  mode: number;
  exptime: number;
  autovivExptime: number;
  recacheTime: number;
  clientFlags: number;
  reqCas: number;
  delta: bigint;
  initial: bigint;
}

/**
 * Parses the flags from token `start` on, as `_meta_flag_preparse` does: a duplicate or
 * unknown flag stops at once; a bad argument is noted and parsing goes on (the last error
 * found is the one reported).
 *
 * @returns The flags, or the error line.
 */
function preparse(store: SharedStore, t: Tokens, start: number): MetaFlags | string {
  const f: MetaFlags = {
    key: t.token(KEY),
    keyBinary: false,
    noUpdate: false,
    vivify: false,
    value: false,
    setStale: false,
    noReply: false,
    hasCas: false,
    newTtl: false,
    mode: 0,
    exptime: 0,
    autovivExptime: 0,
    recacheTime: 0,
    clientFlags: 0,
    reqCas: 0,
    delta: 1n,
    initial: 0n,
  };
  const seen = new Uint8Array(128);
  let error: string | undefined;
  let hasError = false;
  for (let i = start; i < t.count - 1; i++) {
    const o = t.byte(i);
    if (o >= 127 || seen[o] !== 0) return "CLIENT_ERROR duplicate flag";
    seen[o] = 1;
    const arg = t.token(i).subarray(1);
    switch (String.fromCharCode(o)) {
      case "b": {
        const decoded = decodeBase64(t.token(KEY));
        if (decoded === undefined) {
          error = "CLIENT_ERROR error decoding key";
          hasError = true;
          f.key = new Uint8Array(0);
        } else f.key = decoded;
        f.keyBinary = true;
        break;
      }
      case "N": {
        f.vivify = true;
        const n = safeStrtol(arg);
        if (n === undefined) [error, hasError] = [BAD_TOKEN, true];
        else f.autovivExptime = store.realtime(n);
        break;
      }
      case "T": {
        const n = safeStrtol(arg);
        if (n === undefined) [error, hasError] = [BAD_TOKEN, true];
        else {
          f.exptime = store.realtime(n);
          f.newTtl = true;
        }
        break;
      }
      case "R": {
        const n = safeStrtol(arg);
        if (n === undefined) [error, hasError] = [BAD_TOKEN, true];
        else f.recacheTime = store.realtime(n);
        break;
      }
      case "l":
      case "O":
      case "P":
      case "L":
      case "k":
      case "s":
      case "t":
      case "c":
      case "f":
      case "h":
        break;
      case "v":
        f.value = true;
        break;
      case "u":
        f.noUpdate = true;
        break;
      case "q":
        f.noReply = true;
        break;
      case "F": {
        const n = safeStrtoul(arg);
        if (n === undefined) hasError = true;
        else f.clientFlags = n;
        break;
      }
      case "C": {
        const n = safeStrtoull(arg);
        if (n === undefined) [error, hasError] = [BAD_TOKEN, true];
        else {
          f.reqCas = Number(n);
          f.hasCas = true;
        }
        break;
      }
      case "M":
        if (t.length(i) !== 2) {
          [error, hasError] = ["CLIENT_ERROR incorrect length for M token", true];
        } else f.mode = t.byte(i, 1);
        break;
      case "J": {
        const n = safeStrtoull(arg);
        if (n === undefined) {
          [error, hasError] = ["CLIENT_ERROR invalid numeric initial value", true];
        } else f.initial = n;
        break;
      }
      case "D": {
        const n = safeStrtoull(arg);
        if (n === undefined) [error, hasError] = ["CLIENT_ERROR invalid numeric delta value", true];
        else f.delta = n;
        break;
      }
      case "I":
        f.setStale = true;
        break;
      default:
        return "CLIENT_ERROR invalid flag";
    }
  }
  return hasError ? (error ?? BAD_FORMAT) : f;
}

/**
 * Runs a meta command (its name is two bytes, the first `m`).
 *
 * @param session The connection.
 * @param t The command line's tokens.
 */
export function processMeta(session: Session, t: Tokens): void {
  switch (t.byte(0, 1)) {
    case 0x67: // g
      return metaGet(session, t);
    case 0x73: // s
      return metaSet(session, t);
    case 0x64: // d
      return metaDelete(session, t);
    case 0x6e: // n
      return session.out("MN");
    case 0x61: // a
      return metaArithmetic(session, t);
    case 0x65: // e
      return metaDebug(session, t);
    default:
      return session.out("ERROR");
  }
}

/** ` k<key>`, or ` k<base64> b` for a binary key (memcached's `META_KEY`). */
function metaKey(reply: Reply, key: Uint8Array, binary: boolean): void {
  reply.ascii(" k");
  if (binary) {
    reply.ascii(encodeBase64(key));
    reply.ascii(" b");
  } else reply.raw(key);
}

/** Appends token `i` (an opaque), or says it is too long. */
function opaque(reply: Reply, t: Tokens, i: number): boolean {
  if (t.length(i) > MFLAG_MAX_OPAQUE_LENGTH) return false;
  reply.byte(0x20);
  reply.raw(t.token(i));
  return true;
}

/**
 * Appends the flags every meta reply returns whatever the outcome, `O` (opaque) and `k`, in the
 * order asked; false (nothing more appended) when an opaque is too long.
 */
function opaqueAndKey(
  reply: Reply,
  t: Tokens,
  n: number,
  key: Uint8Array,
  binary: boolean,
): boolean {
  for (let i = KEY + 1; i < n - 1; i++) {
    const flag = t.byte(i);
    if (flag === 0x4f /* O */ && !opaque(reply, t, i)) return false;
    if (flag === 0x6b /* k */) metaKey(reply, key, binary);
  }
  return true;
}

/** memcached prints these differences of its unsigned clock as unsigned 32-bit numbers. */
function u32(n: number): number {
  return n >>> 0;
}

// ---- mg ----

function metaGet(session: Session, t: Tokens): void {
  const n = t.count;
  if (n < 3) return session.out("ERROR");
  if (t.length(KEY) > KEY_MAX_LENGTH) return session.outError(BAD_FORMAT);
  if (n > MFLAG_MAX_OPT_LENGTH) return session.outError("CLIENT_ERROR options flags are too long");
  const { store, reply } = session;
  const f = preparse(store, t, 2);
  if (typeof f === "string") return session.outError(f);
  session.noreply = f.noReply;
  const mark = reply.length;
  store.lock();
  try {
    let ref = store.find(f.key);
    let created = false;
    if (ref === 0 && f.vivify) {
      const made = store.alloc(f.key, 0, 0, 0);
      if (made > 0) {
        store.link(made);
        ref = made;
        created = true;
      }
    }
    if (ref === 0) {
      store.stats[Stat.get_misses]!++;
      store.stats[Stat.cmd_get]!++;
      reply.ascii("EN");
      if (!opaqueAndKey(reply, t, n, f.key, f.keyBinary)) {
        reply.length = mark;
        return session.outError("CLIENT_ERROR opaque token too long");
      }
      reply.crlf();
      if (session.noreply) reply.length = mark;
      return;
    }
    let wonToken = false;
    let ttlSet = false;
    if (f.value) {
      reply.ascii("VA ");
      reply.number(store.nbytes(ref));
    } else reply.ascii("HD");
    const now = store.now();
    for (let i = KEY + 1; i < n - 1; i++) {
      switch (t.byte(i)) {
        case 0x54: // T
          ttlSet = true;
          store.setExptime(ref, f.exptime);
          break;
        case 0x4e: // N
          if (created) {
            store.setExptime(ref, f.autovivExptime);
            wonToken = true;
          }
          break;
        case 0x52: { // R
          const exptime = store.exptime(ref);
          if (
            (store.itFlags(ref) & ItemFlag.TOKEN_SENT) === 0 && !created && exptime !== 0 &&
            exptime < f.recacheTime
          ) wonToken = true;
          break;
        }
        case 0x73: // s
          reply.ascii(" s");
          reply.number(store.nbytes(ref));
          break;
        case 0x74: { // t
          reply.ascii(" t");
          const exptime = store.exptime(ref);
          if (exptime === 0) reply.ascii("-1");
          else reply.number(u32(exptime - now));
          break;
        }
        case 0x63: // c
          reply.ascii(" c");
          reply.number(store.cas(ref));
          break;
        case 0x66: // f
          reply.ascii(" f");
          reply.number(store.flags(ref));
          break;
        case 0x6c: // l
          reply.ascii(" l");
          reply.number(u32(now - store.time(ref)));
          break;
        case 0x68: // h
          reply.ascii((store.itFlags(ref) & ItemFlag.FETCHED) !== 0 ? " h1" : " h0");
          break;
        case 0x4f: // O
          if (!opaque(reply, t, i)) {
            reply.length = mark;
            return session.outError("CLIENT_ERROR opaque token too long");
          }
          break;
        case 0x6b: // k
          metaKey(reply, store.key(ref), (store.itFlags(ref) & ItemFlag.KEY_BINARY) !== 0);
          break;
      }
    }
    const itFlags = store.itFlags(ref);
    if ((itFlags & ItemFlag.TOKEN_SENT) !== 0) reply.ascii(" Z");
    if ((itFlags & ItemFlag.STALE) !== 0) {
      reply.ascii(" X");
      if ((itFlags & ItemFlag.TOKEN_SENT) === 0) wonToken = true;
    }
    if (wonToken) {
      reply.ascii(" W");
      store.setItFlags(ref, ItemFlag.TOKEN_SENT);
    }
    reply.crlf();
    if (f.value) {
      reply.raw(store.value(ref));
      reply.crlf();
    }
    if (!f.noUpdate) store.bump(ref);
    if (ttlSet) {
      store.stats[Stat.cmd_touch]!++;
      store.countClass(ref, ClassStat.touch_hits);
    } else {
      store.countClass(ref, ClassStat.get_hits);
      store.stats[Stat.cmd_get]!++;
    }
  } finally {
    store.unlock();
  }
}

// ---- ms ----

const MODES: Record<number, StoreMode> = {
  0x45: "add", // E
  0x41: "append", // A
  0x50: "prepend", // P
  0x52: "replace", // R
  0x53: "set", // S
};

function metaSet(session: Session, t: Tokens): void {
  const n = t.count;
  if (n < 3) return session.out("ERROR");
  if (t.length(KEY) > KEY_MAX_LENGTH || n === 3) return session.outError(BAD_FORMAT);
  if (n > MFLAG_MAX_OPT_LENGTH) return session.outError("CLIENT_ERROR options flags too long");
  const parsedLength = safeStrtol(t.token(KEY + 1));
  if (parsedLength === undefined || parsedLength < 0 || parsedLength > 0x7fffffff - 2) {
    return session.outError(BAD_FORMAT);
  }
  const vlen = parsedLength;
  const { store } = session;
  // From here on, an error swallows the value (the length is known).
  const refuse = (error: string) => {
    session.swallow = vlen + 2;
    session.outError(error);
  };
  const f = preparse(store, t, 3);
  if (typeof f === "string") return refuse(f);
  session.noreply = f.noReply;
  // What the answer carries after its code, in the request's order (filled in at the end).
  const returns: (Uint8Array | "k" | "c")[] = [];
  let opaqueTooLong = false;
  for (let i = KEY + 1; i < n - 1; i++) {
    switch (t.byte(i)) {
      case 0x4f: // O
        if (t.length(i) > MFLAG_MAX_OPAQUE_LENGTH) opaqueTooLong = true;
        else returns.push(t.token(i).slice());
        break;
      case 0x6b: // k
        returns.push("k");
        break;
      case 0x63: // c
        returns.push("c");
        break;
    }
  }
  let mode: StoreMode = "set";
  if (f.mode !== 0) {
    const chosen = MODES[f.mode];
    if (chosen === undefined) return refuse("CLIENT_ERROR invalid mode for ms M token");
    mode = chosen;
  }
  // A CAS makes set and replace a cas (append, prepend and add check it their own way).
  if (f.hasCas && (mode === "set" || mode === "replace")) mode = "cas";
  if (opaqueTooLong) return refuse("CLIENT_ERROR opaque token too long");
  store.lock();
  let ref: number;
  try {
    ref = store.alloc(f.key, f.clientFlags, f.exptime, vlen);
    if (ref === TOO_LARGE || ref === NO_MEMORY) {
      store.stats[ref === TOO_LARGE ? Stat.store_too_large : Stat.store_no_memory]!++;
      // A failed store must not leave the old value readable (whatever the mode).
      const old = store.find(f.key);
      if (old !== 0) store.unlink(old);
    } else if (f.keyBinary) store.setItFlags(ref, ItemFlag.KEY_BINARY);
  } finally {
    store.unlock();
  }
  if (ref === TOO_LARGE) return refuse("SERVER_ERROR object too large for cache");
  if (ref === NO_MEMORY) return refuse("SERVER_ERROR out of memory storing object");
  session.value = startValue(ref, vlen, mode, f.reqCas, f.setStale && mode === "cas", returns);
}

/**
 * Finishes a meta set once its value is in (memcached's `_finalize_mset`): the code, then the
 * return flags.
 *
 * @param session The connection.
 * @param result What the store did.
 * @param key The item's key.
 * @param binaryKey Whether the key was sent in base64 (and goes back so).
 * @param cas The CAS of the stored item (0 if not stored).
 * @param returns The return flags the request asked for.
 */
export function finishMetaSet(
  session: Session,
  result: "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND",
  key: Uint8Array,
  binaryKey: boolean,
  cas: number,
  returns: (Uint8Array | "k" | "c")[],
): void {
  const reply = session.reply;
  if (result === "STORED" && session.noreply) return;
  reply.ascii(
    result === "STORED" ? "HD" : result === "EXISTS" ? "EX" : result === "NOT_FOUND" ? "NF" : "NS",
  );
  for (const part of returns) {
    if (part === "k") metaKey(reply, key, binaryKey);
    else if (part === "c") {
      reply.ascii(" c");
      reply.number(cas);
    } else {
      reply.byte(0x20);
      reply.raw(part);
    }
  }
  reply.crlf();
}

// ---- md ----

function metaDelete(session: Session, t: Tokens): void {
  const n = t.count;
  if (n < 3) return session.out("ERROR");
  if (t.length(KEY) > KEY_MAX_LENGTH) return session.out(BAD_FORMAT);
  if (n > MFLAG_MAX_OPT_LENGTH) return session.out("CLIENT_ERROR options flags too long");
  const { store, reply } = session;
  const f = preparse(store, t, 2);
  if (typeof f === "string") return session.outError("CLIENT_ERROR invalid or duplicate flag");
  session.noreply = f.noReply;
  const mark = reply.length;
  reply.ascii("HD"); // the code is written over once known
  if (!opaqueAndKey(reply, t, n, f.key, f.keyBinary)) {
    reply.length = mark;
    return session.outError("CLIENT_ERROR opaque token too long");
  }
  reply.crlf();
  let code: "HD" | "NF" | "EX";
  store.lock();
  try {
    const ref = store.find(f.key);
    if (ref === 0) {
      store.stats[Stat.delete_misses]!++;
      code = "NF";
    } else if (f.hasCas && store.cas(ref) !== f.reqCas) {
      store.stats[Stat.delete_misses]!++;
      code = "EX";
    } else if (f.setStale) {
      // Invalidate: the item stays, marked stale, with a new CAS (and TTL if given), so that
      // the next client to fetch it wins the token to recache it.
      if (f.newTtl) store.setExptime(ref, f.exptime);
      store.setItFlags(ref, ItemFlag.STALE, ItemFlag.TOKEN_SENT);
      store.setCas(ref, store.nextCas());
      code = "HD";
    } else {
      store.countClass(ref, ClassStat.delete_hits);
      store.unlink(ref);
      code = "HD";
    }
  } finally {
    store.unlock();
  }
  if (code === "HD" && session.noreply) {
    reply.length = mark;
    return;
  }
  reply.bytes[mark] = code.charCodeAt(0);
  reply.bytes[mark + 1] = code.charCodeAt(1);
}

// ---- ma ----

function metaArithmetic(session: Session, t: Tokens): void {
  const n = t.count;
  if (n < 3) return session.out("ERROR");
  if (t.length(KEY) > KEY_MAX_LENGTH) return session.out(BAD_FORMAT);
  if (n > MFLAG_MAX_OPT_LENGTH) return session.out("CLIENT_ERROR options flags too long");
  const { store, reply } = session;
  const f = preparse(store, t, 2);
  if (typeof f === "string") return session.outError("CLIENT_ERROR invalid or duplicate flag");
  session.noreply = f.noReply;
  let incr = true;
  switch (f.mode) {
    case 0:
    case 0x49: // I
    case 0x2b: // +
      break;
    case 0x44: // D
    case 0x2d: // -
      incr = false;
      break;
    default:
      return session.outError("CLIENT_ERROR invalid mode for ma M token");
  }
  const mark = reply.length;
  store.lock();
  try {
    let ref = 0;
    let created = false;
    let text = "";
    const outcome = addDelta(store, f.key, incr, f.delta, f.reqCas);
    switch (outcome.result) {
      case "OK":
        ref = outcome.ref;
        text = outcome.value;
        break;
      case "NON_NUMERIC":
        return session.outError("CLIENT_ERROR cannot increment or decrement non-numeric value");
      case "EOM":
        return session.outError("SERVER_ERROR out of memory");
      case "NOT_FOUND":
        if (f.vivify) {
          text = f.initial.toString();
          const made = store.alloc(f.key, 0, 0, text.length);
          if (made < 0) return session.outError("SERVER_ERROR Out of memory allocating new item");
          const room = store.valueRoom(made);
          for (let i = 0; i < text.length; i++) room[i] = text.charCodeAt(i);
          storeItem(store, made, "add", 0, false);
          ref = made;
          created = true;
        } else {
          store.stats[incr ? Stat.incr_misses : Stat.decr_misses]!++;
          reply.ascii("NF");
        }
        break;
      case "CAS_MISMATCH":
        reply.ascii("EX");
        break;
    }
    if (ref !== 0) {
      if (f.value) {
        reply.ascii("VA ");
        reply.number(text.length);
      } else reply.ascii("HD");
    }
    for (let i = KEY + 1; i < n - 1; i++) {
      const flag = t.byte(i);
      if (flag === 0x4f /* O */) {
        if (!opaque(reply, t, i)) {
          reply.length = mark;
          return session.outError("CLIENT_ERROR opaque token too long");
        }
      } else if (flag === 0x6b /* k */) metaKey(reply, f.key, f.keyBinary);
      else if (ref === 0) continue;
      else if (flag === 0x63 /* c */) {
        reply.ascii(" c");
        reply.number(store.cas(ref));
      } else if (flag === 0x74 /* t */) {
        reply.ascii(" t");
        const exptime = store.exptime(ref);
        if (exptime === 0) reply.ascii("-1");
        else reply.number(u32(exptime - store.now()));
      } else if (flag === 0x54 /* T */) store.setExptime(ref, f.exptime);
      else if (flag === 0x4e /* N */ && created) store.setExptime(ref, f.autovivExptime);
    }
    if (ref !== 0 && f.value) {
      reply.crlf();
      reply.ascii(text);
    }
    reply.crlf();
    // Only a nominal answer to an existing item is quiet (a vivified one is not).
    if (outcome.result === "OK" && session.noreply) reply.length = mark;
  } finally {
    store.unlock();
  }
}

// ---- me ----

function metaDebug(session: Session, t: Tokens): void {
  const n = t.count;
  if (n < 3 || t.length(KEY) > KEY_MAX_LENGTH) return session.out(BAD_FORMAT);
  let key = t.token(KEY);
  if (n >= 4 && t.is(2, "b")) {
    const decoded = decodeBase64(key);
    if (decoded === undefined) return session.out(BAD_FORMAT);
    key = decoded;
  }
  const { store, reply } = session;
  store.lock();
  try {
    store.stats[Stat.cmd_meta]!++;
    const ref = store.find(key);
    if (ref === 0) return session.out("EN");
    const flags = store.itFlags(ref);
    const now = store.now();
    const exptime = store.exptime(ref);
    reply.ascii("ME ");
    if ((flags & ItemFlag.KEY_BINARY) !== 0) reply.ascii(encodeBase64(store.key(ref)));
    else reply.raw(store.key(ref));
    reply.ascii(
      ` exp=${exptime === 0 ? -1 : (now - exptime) | 0} la=${u32(now - store.time(ref))} ` +
        `cas=${store.cas(ref)} fetch=${(flags & ItemFlag.FETCHED) !== 0 ? "yes" : "no"} ` +
        `cls=${store.classOf(ref)} size=${store.total(ref)}`,
    );
    reply.crlf();
  } finally {
    store.unlock();
  }
}
