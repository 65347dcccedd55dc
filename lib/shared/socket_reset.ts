/**
 * Closing a TCP connection with a reset (RST) instead of a FIN, for connections the server cuts
 * while input or output is still pending: a FIN after a short echo looks like a complete answer,
 * a reset tells the client that it is not.
 *
 * Deno 2.9.6 has no `SO_LINGER` (and `node:net`'s `resetAndDestroy` does not reach a socket
 * accepted with `Deno.listen`), so this sets it through libc with `Deno.dlopen`: linger on, zero
 * seconds, then close, which is how every C server sends a reset. That needs `--allow-ffi`, which
 * the server's launch flags grant, and the socket's descriptor, which Deno keeps under an
 * internal symbol; a test checks both on the pinned Deno. Without either (another platform, or
 * the permission withheld), the socket is closed normally: Linux still resets it when unread
 * input is left, but pending output may then end in a FIN.
 *
 * Used on whichever thread owns the socket.
 *
 * @module
 */

import { closeQuietly } from "./address.ts";

/** `SOL_SOCKET` and `SO_LINGER` on Linux. */
const SOL_SOCKET = 1;
const SO_LINGER = 13;
/** `struct linger { int l_onoff = 1; int l_linger = 0; }` */
const LINGER_ZERO = new Uint8Array(new Int32Array([1, 0]).buffer);

type SetSockOpt = (
  fd: number,
  level: number,
  name: number,
  value: Uint8Array<ArrayBuffer>,
  length: number,
) => number;

interface Libc {
  setsockopt: SetSockOpt;
  /** glibc's `malloc_trim(pad)`: gives free heap pages back to the OS. */
  malloc_trim: (pad: number) => number;
}

let libc: Libc | null | undefined;

/** glibc through FFI, or null where it cannot be loaded (not Linux, no permission, musl). */
function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") return null;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    const library = Deno.dlopen("libc.so.6", {
      setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
      malloc_trim: { parameters: ["usize"], result: "i32" },
    });
    libc = library.symbols as unknown as Libc;
  } catch {
    // No glibc (musl, say): fall back to a plain close.
  }
  return libc;
}

function loadSetSockOpt(): SetSockOpt | null {
  return loadLibc()?.setsockopt ?? null;
}

/**
 * Asks glibc to give its free heap pages back to the OS (`malloc_trim(0)`); does nothing where
 * glibc cannot be reached. Socket buffers freed after a burst otherwise stay in malloc's arenas.
 *
 * @returns Whether it ran.
 */
export function trimMallocHeap(): boolean {
  const trim = loadLibc()?.malloc_trim;
  if (trim === undefined) return false;
  trim(0);
  return true;
}

/** The socket's file descriptor, where Deno exposes it (an internal symbol on 2.9.6). */
function descriptorOf(conn: { close(): void }): number | undefined {
  const symbol = Object.getOwnPropertySymbols(conn).find((s) =>
    s.description === "Deno.internal.fd"
  );
  const fd = symbol === undefined
    ? undefined
    : (conn as unknown as Record<symbol, unknown>)[symbol];
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/**
 * Whether {@linkcode resetAndClose} can send a reset in this process.
 *
 * @param conn Any open TCP connection (to find its descriptor).
 * @returns True when `SO_LINGER` can be set.
 */
export function canReset(conn: { close(): void }): boolean {
  return loadSetSockOpt() !== null && descriptorOf(conn) !== undefined;
}

/**
 * Closes `conn` with a reset: unsent output is discarded and the peer sees "connection reset".
 * Falls back to a plain close where a reset cannot be requested.
 *
 * @param conn The connection; closed when this returns.
 * @returns Whether a reset was requested (false: closed normally).
 */
export function resetAndClose(conn: { close(): void }): boolean {
  const set = loadSetSockOpt();
  const fd = set === null ? undefined : descriptorOf(conn);
  const reset = set !== null && fd !== undefined &&
    set(fd, SOL_SOCKET, SO_LINGER, LINGER_ZERO, LINGER_ZERO.length) === 0;
  // A connection whose close() ends gracefully (TLS: close_notify) has abort() for this.
  const abortable = conn as { abort?: () => void };
  if (typeof abortable.abort === "function") abortable.abort();
  else closeQuietly(conn);
  return reset;
}
