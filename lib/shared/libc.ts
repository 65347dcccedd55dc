/**
 * The few libc calls the server makes through `Deno.dlopen`, where Deno 2.9.6 has no API for
 * them: `send()` without blocking (a socket write that returns at once with what the kernel
 * took), `setsockopt(SO_LINGER)` (how a server sends a reset), `malloc_trim(0)` (giving freed
 * heap back to the OS), and `memchr()` (finding a byte 20 times faster than JavaScript can in
 * a large chunk). Each needs `--allow-ffi` (the server's launch flags grant it) and glibc on
 * Linux; anywhere else every function here reports that it cannot, and callers fall back to
 * Deno's own (slower, or less exact) way.
 *
 * The socket calls need the socket's descriptor, which Deno keeps under an internal symbol
 * (`Deno.internal.fd`); `tests/libc_test.ts` checks that it is there on the pinned Deno.
 *
 * Used on any thread; each thread loads the library once.
 *
 * @module
 */

/** `SOL_SOCKET` and `SO_LINGER` on Linux. */
const SOL_SOCKET = 1;
const SO_LINGER = 13;
/** `MSG_DONTWAIT | MSG_NOSIGNAL`: never block, never raise SIGPIPE (a dead peer is an error). */
const SEND_FLAGS = 0x40 | 0x4000;
/** `struct linger { int l_onoff = 1; int l_linger = 0; }` */
const LINGER_ZERO = new Uint8Array(new Int32Array([1, 0]).buffer);

interface Libc {
  // i32 results: an `isize` result would come back through a slower path (measured: 241 against
  // 117 ns a call), and no single write here is 2 GiB.
  send: (fd: number, bytes: Uint8Array, length: number, flags: number) => number;
  setsockopt: (
    fd: number,
    level: number,
    name: number,
    value: Uint8Array<ArrayBuffer>,
    length: number,
  ) => number;
  malloc_trim: (pad: number) => number;
  // u32 results: the low 32 bits of a pointer, enough for offsets within one buffer (below).
  memchr: (bytes: Uint8Array, byte: number, length: number) => number;
  memmove: (to: Uint8Array, from: Uint8Array, length: number) => number;
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
      send: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
      setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
      malloc_trim: { parameters: ["usize"], result: "i32" },
      memchr: { parameters: ["buffer", "i32", "usize"], result: "u32" },
      memmove: { parameters: ["buffer", "buffer", "usize"], result: "u32" },
    });
    libc = library.symbols as unknown as Libc;
  } catch {
    // No glibc (musl, say): callers fall back.
  }
  return libc;
}

let fdSymbol: symbol | null | undefined;

/**
 * The socket's file descriptor, where Deno exposes it (an internal symbol on 2.9.6).
 *
 * @param conn A Deno socket (a TLS connection of this server carries its TCP socket's).
 * @returns The descriptor, or undefined.
 */
export function descriptorOf(conn: object): number | undefined {
  if (fdSymbol === undefined) {
    fdSymbol = Object.getOwnPropertySymbols(conn).find((s) =>
      s.description === "Deno.internal.fd"
    ) ?? null;
  }
  const fd = fdSymbol === null ? undefined : (conn as Record<symbol, unknown>)[fdSymbol];
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/**
 * Whether {@linkcode sendNow} works in this thread.
 *
 * @returns True when libc's `send` can be called.
 */
export function canSendNow(): boolean {
  return loadLibc() !== null;
}

/**
 * Writes what the kernel takes at once, without waiting: one `send()` that never blocks.
 * Deno's own `conn.write()` always completes in a later turn of the event loop, so it cannot
 * tell the caller what was taken; this can, and costs one call instead of an async operation.
 *
 * Only for a plain TCP socket whose descriptor is open and whose earlier writes have all
 * completed (the caller keeps that order); never for a TLS connection's underlying socket.
 *
 * @param fd The socket's descriptor ({@linkcode descriptorOf}).
 * @param bytes What to write.
 * @returns Bytes the kernel took, from 0 to `bytes.length`. Write the rest with `conn.write()`,
 *   which waits for room, or reports the socket's error: 0 means no room or a failed socket
 *   alike (`send` says which only through `errno`), and the async write finds out which.
 * @throws {TypeError} If {@linkcode canSendNow} is false.
 */
export function sendNow(fd: number, bytes: Uint8Array): number {
  const n = libc!.send(fd, bytes, bytes.length, SEND_FLAGS);
  return n < 0 ? 0 : n;
}

/**
 * Sets `SO_LINGER` to {on, 0 s}: the next close of the socket sends a reset (RST) and discards
 * unsent output.
 *
 * @param conn The socket.
 * @returns Whether it was set.
 */
export function lingerZero(conn: object): boolean {
  const set = loadLibc()?.setsockopt;
  const fd = set === undefined ? undefined : descriptorOf(conn);
  return set !== undefined && fd !== undefined &&
    set(fd, SOL_SOCKET, SO_LINGER, LINGER_ZERO, LINGER_ZERO.length) === 0;
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

/**
 * Whether {@linkcode findByte} works in this thread.
 *
 * @returns True when libc's `memchr` can be called.
 */
export function canFindByte(): boolean {
  return loadLibc() !== null;
}

/**
 * The index of the first `byte` in `bytes` (libc's `memchr`, vectorised: about 0.8 us per
 * 64 KiB here, against 19 us for `Uint8Array.prototype.indexOf`).
 *
 * `memchr` returns a pointer, and a 64-bit result would come back as a BigInt; but an offset
 * within one buffer needs only the low 32 bits of two addresses: the match's (a `u32` result),
 * and the buffer's own, which `memmove(p, p, 0)` returns. Their difference is exact for any
 * buffer under 4 GiB, and the byte at the offset is checked, so a miss can never pass for a
 * match.
 *
 * @param bytes Where to look (not empty).
 * @param byte The byte.
 * @returns Its index, or -1.
 * @throws {TypeError} If {@linkcode canFindByte} is false.
 */
export function findByte(bytes: Uint8Array, byte: number): number {
  const { memchr, memmove } = libc!;
  const at = (memchr(bytes, byte, bytes.length) - memmove(bytes, bytes, 0)) >>> 0;
  return at < bytes.length && bytes[at] === byte ? at : -1;
}
