/**
 * The few libc calls the server makes through `Deno.dlopen`, where Deno 2.9.6 has no API for
 * them: `send()` without blocking (a socket write that returns at once with what the kernel
 * took), `setsockopt(SO_LINGER)` (how a server sends a reset), `malloc_trim(0)` (giving freed
 * heap back to the OS), `memchr()` (finding a byte 20 times faster than JavaScript can in
 * a large chunk), and what steering a `SO_REUSEPORT` group takes (finding this process's
 * listening sockets, their accept queues, the group's BPF program; counting a port's listening
 * sockets in the network namespace through the kernel's `sock_diag` netlink interface, as `ss -l`
 * does, where reading `/proc/net/tcp` would need `--allow-all` and would list every socket). Each needs `--allow-ffi` (the server's launch flags grant it) and glibc on
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

/** `SOL_SOCKET` and its options used here, on Linux. */
const SOL_SOCKET = 1;
const SO_LINGER = 13;
const SO_ACCEPTCONN = 30;
const SO_ATTACH_REUSEPORT_CBPF = 51;
const SO_ATTACH_FILTER = 26;
const SO_DETACH_REUSEPORT_BPF = 68;
/** `IPPROTO_TCP` and `TCP_INFO`. */
const IPPROTO_TCP = 6;
const TCP_INFO = 11;
/** `RLIMIT_NOFILE`. */
const RLIMIT_NOFILE = 7;
/** `AF_NETLINK`, `SOCK_DGRAM | SOCK_CLOEXEC`, `NETLINK_SOCK_DIAG`, and the messages used. */
const AF_NETLINK = 16;
const NETLINK_DGRAM_CLOEXEC = 2 | 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST_DUMP = 0x1 | 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
/** `TCP_LISTEN`, as a state bit of `inet_diag_req_v2.idiag_states`. */
const TCP_LISTEN_BIT = 1 << 10;
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
  getsockopt: (
    fd: number,
    level: number,
    name: number,
    value: Uint8Array<ArrayBuffer>,
    length: Uint8Array<ArrayBuffer>,
  ) => number;
  getsockname: (fd: number, address: Uint8Array<ArrayBuffer>, length: Uint8Array) => number;
  getrlimit: (resource: number, limit: Uint8Array<ArrayBuffer>) => number;
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (
    fd: number,
    bytes: Uint8Array<ArrayBuffer>,
    length: number,
    flags: number,
    address: Uint8Array<ArrayBuffer>,
    addressLength: number,
  ) => number;
  recv: (fd: number, buffer: Uint8Array<ArrayBuffer>, length: number, flags: number) => number;
  close: (fd: number) => number;
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
      getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
      getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      sendto: {
        parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
        result: "i32",
      },
      recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
      malloc_trim: { parameters: ["usize"], result: "i32" },
      // u32 lengths (the buffers are under 4 GiB), like send's: a `usize` parameter takes a
      // BigInt in optimised code, and a number there deoptimised every caller of findByte
      // in a loop (memcache's parser recompiled every few milliseconds under load).
      memchr: { parameters: ["buffer", "i32", "u32"], result: "u32" },
      memmove: { parameters: ["buffer", "buffer", "u32"], result: "u32" },
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

/**
 * Whether the `SO_REUSEPORT` functions below work in this thread.
 *
 * @returns True on Linux with glibc and `--allow-ffi`.
 */
export function canSteer(): boolean {
  return loadLibc() !== null;
}

/** Scratch memory for the calls below (one thread runs them at a time). */
const scratch = {
  value: new Uint8Array(4),
  length: new Uint8Array(4),
  address: new Uint8Array(128),
  info: new Uint8Array(232),
};

/** `scratch.length` holding `n`, as the `socklen_t *` getsockopt and getsockname take. */
function lengthOf(n: number): Uint8Array<ArrayBuffer> {
  new DataView(scratch.length.buffer).setUint32(0, n, true);
  return scratch.length;
}

/**
 * This process's listening TCP sockets bound to `port` (any address), found by trying each
 * descriptor in turn: Deno does not say which descriptor a listener has.
 *
 * @param port The port.
 * @param want Stop after finding this many.
 * @returns Their descriptors, lowest first; empty where {@linkcode canSteer} is false.
 */
export function listenersOf(port: number, want = Infinity): number[] {
  const c = loadLibc();
  if (c === null) return [];
  const limit = new Uint8Array(16);
  const most = c.getrlimit(RLIMIT_NOFILE, limit) === 0
    ? Number(new BigUint64Array(limit.buffer)[0])
    : 1024;
  const found: number[] = [];
  const { value, address } = scratch;
  for (let fd = 0; fd < Math.min(most, 1 << 20) && found.length < want; fd++) {
    if (c.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, lengthOf(4)) !== 0) continue;
    if (value[0] !== 1) continue;
    if (c.getsockname(fd, address, lengthOf(address.length)) !== 0) continue;
    const family = address[0]! | (address[1]! << 8);
    // sockaddr_in and sockaddr_in6 both keep the port, big-endian, at bytes 2 and 3.
    if ((family === 2 || family === 10) && ((address[2]! << 8) | address[3]!) === port) {
      found.push(fd);
    }
  }
  return found;
}

/**
 * Connections waiting in a listening socket's accept queue (`TCP_INFO`'s `tcpi_unacked`, which
 * for a listener is its backlog).
 *
 * @param fd A listening socket's descriptor.
 * @returns The count, or undefined if the descriptor is no longer a listening socket.
 */
export function acceptQueueLength(fd: number): number | undefined {
  const c = loadLibc();
  if (c === null) return undefined;
  const { value, info } = scratch;
  if (c.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, lengthOf(4)) !== 0) return undefined;
  if (value[0] !== 1) return undefined;
  if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, lengthOf(info.length)) !== 0) {
    return undefined;
  }
  return new DataView(info.buffer).getUint32(24, true);
}

/**
 * Gives a `SO_REUSEPORT` group a classic BPF program that sends every new connection to one of
 * the sockets at indices `first` to `first + count - 1` of the group, at random. The kernel
 * keeps a group's sockets in the order they joined (a closed one's place taken by the last),
 * and falls back to its hash when the program names an index past the end.
 *
 * @param fd Any socket of the group.
 * @param first The first index.
 * @param count How many sockets from there.
 * @returns Whether the program was attached.
 */
export function steerGroup(fd: number, first: number, count: number): boolean {
  // A = random; A %= count; A += first; return A (SKF_AD_OFF + SKF_AD_RANDOM = -0x1000 + 56).
  return attachProgram(fd, SO_ATTACH_REUSEPORT_CBPF, [
    [0x20, 0, 0, -0x1000 + 56],
    [0x94, 0, 0, count],
    [0x04, 0, 0, first],
    [0x16, 0, 0, 0],
  ]);
}

/**
 * Makes a listening socket drop new connection attempts (SYNs) while it goes on completing the
 * handshakes already under way, so that its accept queue can be emptied before it closes:
 * closing a listener resets every connection still queued on it, which their clients took for
 * established. A dropped SYN is sent again by its client, which then finds the port closed
 * (refused), or a successor listening.
 *
 * @param fd A listening TCP socket.
 * @returns Whether the filter was attached.
 */
export function refuseNewConnections(fd: number): boolean {
  // The program sees the TCP header: A = flags; if (A & (SYN|ACK)) == SYN drop, else accept.
  return attachProgram(fd, SO_ATTACH_FILTER, [
    [0x30, 0, 0, 13],
    [0x54, 0, 0, 0x12],
    [0x15, 1, 0, 0x02],
    [0x06, 0, 0, 0xffffffff],
    [0x06, 0, 0, 0],
  ]);
}

/** Attaches a classic BPF program (`code, jt, jf, k` per instruction) with `setsockopt`. */
function attachProgram(
  fd: number,
  option: number,
  program: [code: number, jt: number, jf: number, k: number][],
): boolean {
  const c = loadLibc();
  if (c === null) return false;
  const filter = new Uint8Array(program.length * 8);
  const view = new DataView(filter.buffer);
  program.forEach(([code, jt, jf, k], i) => {
    view.setUint16(i * 8, code, true);
    view.setUint8(i * 8 + 2, jt);
    view.setUint8(i * 8 + 3, jf);
    view.setUint32(i * 8 + 4, k >>> 0, true);
  });
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  const fprog = new Uint8Array(16);
  const header = new DataView(fprog.buffer);
  header.setUint16(0, program.length, true);
  header.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(filter))), true);
  return c.setsockopt(fd, SOL_SOCKET, option, fprog, fprog.length) === 0;
}

/**
 * Takes a `SO_REUSEPORT` group's BPF program away: the kernel's hash spreads connections again.
 *
 * @param fd Any socket of the group.
 * @returns Whether a program was detached.
 */
export function unsteerGroup(fd: number): boolean {
  const c = loadLibc();
  if (c === null) return false;
  const unused = new Uint8Array(4);
  return c.setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, unused, unused.length) === 0;
}

/** Listening TCP sockets on one port, by address family. */
export interface PortListeners {
  ipv4: number;
  ipv6: number;
}

/**
 * The listening TCP sockets on `port` in this network namespace, of any process and any
 * address, as the kernel's `sock_diag` netlink interface reports them (what `ss -ltn` shows): it
 * lists listening sockets only, however many connections the machine has.
 *
 * @param port The port.
 * @returns The count by family, or undefined where it cannot be asked.
 */
export function portListeners(port: number): PortListeners | undefined {
  const c = loadLibc();
  if (c === null) return undefined;
  const fd = c.socket(AF_NETLINK, NETLINK_DGRAM_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return undefined;
  try {
    const ipv4 = _dumpListeners(c, fd, 2, port);
    const ipv6 = ipv4 === undefined ? undefined : _dumpListeners(c, fd, 10, port);
    return ipv4 === undefined || ipv6 === undefined ? undefined : { ipv4, ipv6 };
  } finally {
    c.close(fd);
  }
}

/** One `SOCK_DIAG_BY_FAMILY` dump of listening TCP sockets, counted for `port`. */
function _dumpListeners(c: Libc, fd: number, family: number, port: number): number | undefined {
  // struct nlmsghdr (16 bytes), then struct inet_diag_req_v2 (56 bytes).
  const request = new Uint8Array(72);
  const out = new DataView(request.buffer);
  out.setUint32(0, request.length, true);
  out.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  out.setUint16(6, NLM_F_REQUEST_DUMP, true);
  request[16] = family;
  request[17] = IPPROTO_TCP;
  out.setUint32(20, TCP_LISTEN_BIT, true);
  const kernel = new Uint8Array(12); // struct sockaddr_nl: the kernel (pid 0)
  new DataView(kernel.buffer).setUint16(0, AF_NETLINK, true);
  if (c.sendto(fd, request, request.length, 0, kernel, kernel.length) !== request.length) {
    return undefined;
  }
  const buffer = new Uint8Array(64 * 1024);
  const view = new DataView(buffer.buffer);
  let count = 0;
  for (;;) {
    const n = c.recv(fd, buffer, buffer.length, 0);
    if (n <= 0) return undefined;
    for (let at = 0; at + 16 <= n;) {
      const length = view.getUint32(at, true);
      const type = view.getUint16(at + 4, true);
      if (type === NLMSG_DONE) return count;
      if (type === NLMSG_ERROR || length < 16) return undefined;
      // struct inet_diag_msg after the header: family, state, timer, retrans, then the
      // socket id, whose first field is the local port, big-endian.
      if (buffer[at + 17] === 10 && view.getUint16(at + 20, false) === port) count++;
      at += (length + 3) & ~3;
    }
  }
}
