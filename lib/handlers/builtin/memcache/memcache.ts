/**
 * The `memcache` protocol: memcached's text protocol, classic and meta commands, answered as
 * memcached 1.6 answers them, over one cache that every worker shares (`shared_store.ts`, in
 * memory from `HandlerContext.sharedBuffer`). It is the example of a handler whose workers share
 * state through memory rather than messages; `chat.ts` shows the messages.
 *
 * Runs inside a worker, as a built-in handler (`--handler memcache`).
 *
 * How a connection is served, as memcached serves one:
 * - Command lines are parsed where they lie in the lent chunk; only a line split across chunks
 *   is copied. A line with no end in sight is refused past 2 KiB unless it is a `get`/`gets`
 *   (memcached's rule), and a `get` line past 8 MiB closes the connection.
 * - A value is read straight into its item, which is taken from the cache's memory when the
 *   command line arrives (so values in flight count against `memory-limit`, and a client that
 *   stalls holds only that).
 * - Answers are assembled in one buffer per worker and written once per chunk; a long answer
 *   goes out every 64 KiB. When the client does not read (the socket is over its high-water
 *   mark), the rest of the request waits, a `get` between two keys included, and the client is
 *   not read meanwhile: a reply is never built whole.
 * - The binary protocol (a first byte of 0x80) and HTTP requests close the connection.
 *
 * @module
 */

import type { HandlerContext, HandlerOption, SocketHandler } from "../../handler.ts";
import { indexOfByte } from "../../bytes.ts";
import { sizeOption } from "../../handler_options.ts";
import { completeValue, processCommand, resumeGet } from "./commands.ts";
import { FLUSH_AT, Reply } from "./reply.ts";
import { Session } from "./session.ts";
import { SharedStore, Stat, type StoreSettings, storeSize } from "./shared_store.ts";

/** The first byte of every binary-protocol request. */
const BINARY_MAGIC = 0x80;
/** memcached's rule: a line with no end past this many bytes must be a `get`, or it is junk. */
const JUNK_LINE = 2048;
/** Longest `get` line this server holds for one connection. */
const MAX_GET_LINE = 8 * 1024 * 1024;
/** Most bytes of unfinished lines one worker holds for all its connections. */
const MAX_HELD_LINES = 64 * 1024 * 1024;
/**
 * The version of the cache's layout in memory (`shared_store.ts`): a rolling reload to code
 * whose layout differs must not read the old cache as its own. Raise it with any change there.
 */
const LAYOUT = 1;
/** The name of the cache's shared buffer: the layout's, so that a new layout starts empty. */
const SHARED_NAME = `memcache.v${LAYOUT}`;

/** What a worker hands its successor in a rolling reload (`handover`). */
interface Inheritance {
  /** The cache's memory (shared, not copied). */
  cache: SharedArrayBuffer;
  /** Its layout. */
  layout: number;
}

/** Settings for `--handler-option`, named as memcached's long options are. */
export const options: Record<string, HandlerOption> = {
  "memory-limit": sizeOption(
    "item memory of the cache, shared by all workers, as memcached's -m",
    "64m",
    { min: 2 * 1024 * 1024, max: 15 * 1024 ** 3 },
  ),
  "max-item-size": sizeOption(
    "largest item (key, value and 56 bytes of header), as memcached's -I",
    "1m",
    { min: 1024, max: 128 * 1024 * 1024 },
  ),
};

/** The cache (the same memory on every worker). */
let store: SharedStore;
/** This worker's answer buffer (one command runs at a time on a worker). */
const reply = new Reply();
/** Bytes of unfinished command lines this worker holds. */
let heldLines = 0;
let lease: ReturnType<typeof setInterval> | undefined;

/**
 * Joins the cache every worker shares: the one its predecessor handed over in a rolling reload
 * (if it is in this code's layout), else the server's shared buffer, which the first worker's
 * call makes.
 *
 * @param context The worker's context.
 * @throws {RangeError} If `max-item-size` is more than half of `memory-limit`.
 */
export async function setup(context: HandlerContext): Promise<void> {
  const settings: StoreSettings = {
    memory: context.options["memory-limit"] as number,
    itemSizeMax: context.options["max-item-size"] as number,
  };
  if (settings.itemSizeMax > settings.memory / 2) {
    // memcached's rule too: a page must hold at least two of the largest items.
    throw new RangeError("max-item-size cannot be more than half of memory-limit");
  }
  const size = storeSize(settings);
  const inherited = context.inherited as Partial<Inheritance> | undefined;
  const buffer = inherited?.layout === LAYOUT && inherited.cache?.byteLength === size
    ? inherited.cache
    : await context.sharedBuffer(SHARED_NAME, size);
  store = new SharedStore(buffer, settings);
  // The worker's sign of life, so that `stats` counts the connections of live workers only.
  const timer = setInterval(() => store.renew(), 1000);
  lease = timer;
  Deno.unrefTimer(timer);
}

/**
 * Hands the cache to this worker's successor in a rolling reload: every key survives it.
 *
 * @returns The cache's memory and layout.
 */
export function handover(): Inheritance {
  return { cache: store.buffer, layout: LAYOUT };
}

/** Leaves the cache (it stays, for the other workers and a replacement). */
export function teardown(): void {
  clearInterval(lease);
  store?.retire();
}

/** Serves memcached clients. */
export const handler: SocketHandler<Session> = {
  open(socket) {
    socket.data = new Session(store, reply, socket, socket.context.workers);
    store.stats[Stat.curr_connections]!++;
    store.stats[Stat.total_connections]!++;
  },
  data(socket, bytes) {
    const session = socket.data;
    store.stats[Stat.bytes_read]! += bytes.length;
    if (session.first) {
      session.first = false;
      if (bytes[0] === BINARY_MAGIC) {
        socket.log.debug("binary protocol request: not supported, closing");
        socket.end();
        return;
      }
    }
    consume(session, bytes, 0);
    flush(session);
  },
  drain(socket) {
    const session = socket.data;
    if (session.pendingGet !== undefined && !resumeGet(session, session.pendingGet)) return;
    const rest = session.rest;
    session.rest = undefined;
    if (rest !== undefined) consume(session, rest, 0);
    flush(session);
    if (session.rest === undefined && session.pendingGet === undefined) socket.resume();
  },
  close(socket) {
    const session = socket.data;
    store.stats[Stat.curr_connections]!--;
    dropPartial(session);
    const value = session.value;
    if (value !== undefined) {
      // The item its value was being read into goes back to the cache.
      session.value = undefined;
      store.lock();
      try {
        store.free(value.ref);
      } finally {
        store.unlock();
      }
    }
  },
};

/** Sends the worker's answer buffer to this connection. */
function flush(session: Session): boolean {
  store.stats[Stat.bytes_written]! += reply.length;
  return reply.flush(session.socket);
}

/**
 * Runs what `bytes` holds from `at` on: value bytes, bytes to swallow, command lines. Stops
 * early (keeping the rest as a copy, the socket paused) when the client does not read.
 */
function consume(session: Session, bytes: Uint8Array, at: number): void {
  const socket = session.socket;
  const end = bytes.length;
  while (at < end) {
    if (session.closeAfter || session.closeNow || socket.closed) return;
    if (session.swallow > 0) {
      const skipped = Math.min(session.swallow, end - at);
      session.swallow -= skipped;
      at += skipped;
      continue;
    }
    if (session.value !== undefined) {
      at = readValue(session, bytes, at);
      continue;
    }
    const newline = indexOfByte(bytes, 0x0a, at);
    if (newline < 0) {
      if (!keepPartial(session, bytes.subarray(at))) refuseLine(session);
      return;
    }
    let line: Uint8Array;
    if (session.partial !== undefined) {
      if (!keepPartial(session, bytes.subarray(at, newline))) {
        refuseLine(session);
        return;
      }
      line = session.partial.subarray(0, session.partialLength);
    } else line = bytes.subarray(at, newline);
    at = newline + 1;
    // memcached strips the \r of a line of more than one byte.
    if (line.length > 1 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    const finished = processCommand(session, line);
    // A get that waits for the client to read keeps a copy of its line.
    if (!finished) session.pendingGet!.line = session.pendingGet!.line.slice();
    dropPartial(session);
    if (!finished) {
      hold(session, bytes, at);
      return;
    }
    if (session.closeNow) {
      // What came before is answered; then the connection goes, as memcached drops it.
      flush(session);
      socket.end();
      return;
    }
    if (session.closeAfter) {
      flush(session);
      socket.end();
      return;
    }
    if (reply.length >= FLUSH_AT && !flush(session)) {
      hold(session, bytes, at);
      return;
    }
  }
}

/** A line that never ends (or is too long to hold): what came before is answered, then close. */
function refuseLine(session: Session): void {
  session.socket.log.debug("command line too long, closing");
  dropPartial(session);
  flush(session);
  session.socket.end();
}

/** Keeps the unprocessed input (a copy) until the client has read, and stops reading it. */
function hold(session: Session, bytes: Uint8Array, at: number): void {
  if (at < bytes.length) session.rest = bytes.slice(at);
  session.socket.pause();
}

/** Copies value bytes into the item being read; stores it once its `\r\n` has come. */
function readValue(session: Session, bytes: Uint8Array, at: number): number {
  const value = session.value!;
  const end = bytes.length;
  if (value.left > 0) {
    const n = Math.min(value.left, end - at);
    // The item is this connection's alone until it is stored: no lock needed to fill it.
    store.valueRoom(value.ref).set(bytes.subarray(at, at + n), value.filled);
    value.filled += n;
    value.left -= n;
    at += n;
  }
  while (value.left === 0 && value.tail < 2 && at < end) {
    if (bytes[at] !== (value.tail === 0 ? 0x0d : 0x0a)) value.tailOk = false;
    value.tail++;
    at++;
  }
  if (value.left === 0 && value.tail === 2) completeValue(session);
  return at;
}

/**
 * Appends bytes to the connection's unfinished line, within memcached's rule for lines with no
 * end (past 2 KiB only a `get` may go on) and this server's bounds.
 *
 * @returns False if the line may not grow: the connection is to be closed.
 */
function keepPartial(session: Session, bytes: Uint8Array): boolean {
  const length = session.partialLength + bytes.length;
  if (length > MAX_GET_LINE || heldLines + bytes.length > MAX_HELD_LINES) return false;
  let buffer = session.partial;
  if (buffer === undefined || buffer.length < length) {
    const grown = new Uint8Array(Math.max(256, length, (buffer?.length ?? 0) * 2));
    if (buffer !== undefined) grown.set(buffer.subarray(0, session.partialLength));
    heldLines += grown.length - (buffer?.length ?? 0);
    session.partial = buffer = grown;
  }
  buffer.set(bytes, session.partialLength);
  session.partialLength = length;
  return length <= JUNK_LINE || isLongGet(buffer.subarray(0, Math.min(length, 200)));
}

function dropPartial(session: Session): void {
  if (session.partial === undefined) return;
  heldLines -= session.partial.length;
  session.partial = undefined;
  session.partialLength = 0;
}

/** memcached's test: at most 100 leading spaces, then `get ` or `gets `. */
function isLongGet(start: Uint8Array): boolean {
  let at = 0;
  while (at < start.length && start[at] === 0x20) at++;
  if (at > 100) return false;
  const word = (text: string) => {
    for (let i = 0; i < text.length; i++) {
      if (start[at + i] !== text.charCodeAt(i)) return false;
    }
    return true;
  };
  return word("get ") || word("gets ");
}
