/**
 * The runtime flags the server is launched with, wherever it is launched from: the compiled
 * binary (`scripts/compile.ts` bakes them in), `deno task serve` (deno.json repeats them, and a
 * test checks that it does), the benchmark and the tests.
 *
 * Runs in no server thread: it is read by whatever starts the server (the launcher, the compile
 * script).
 *
 * @module
 */

/**
 * V8 flags, as one `deno` argument.
 *
 * `--heap-growing-percent=50`: between full collections V8 lets each heap grow to as much as four
 * times what survived the last one. With 10,000 busy connections, each round trip leaves promises
 * that live as long as the client's wait and so reach the old generation, and the three heaps
 * (main thread and two workers) took the process to about 550 MB. Growing by 1.5x instead brought
 * the peak to about 430 MB with the same round trips per second, and changed nothing measurable at
 * 50 connections or with 64 KiB messages (`deno task bench`, S1, S3, S4).
 *
 * `--expose-gc`: after a burst of connections has left, each thread runs one full collection so
 * that their buffers are freed and the memory can go back to the OS (`lib/sockets/reclaim.ts`).
 */
export const V8_FLAGS = "--v8-flags=--heap-growing-percent=50,--expose-gc";

/**
 * Unstable Deno APIs the server uses: `Deno.listen({ reusePort: true })` for `--dispatch
 * kernel` is still behind `--unstable-net` in Deno 2.9.6.
 */
export const UNSTABLE_FLAGS = "--unstable-net";

/**
 * `--allow-ffi`: for the few libc calls the server makes. At `--shutdown-timeout` (and on write
 * timeouts) a connection with output still pending must be reset, not closed with a FIN that
 * makes a short echo look complete; Deno 2.9.6 cannot set `SO_LINGER`, so
 * `lib/sockets/libc.ts` calls libc's `setsockopt` through `Deno.dlopen`. The same permission lets
 * a socket write go out in the call (libc's non-blocking `send`) instead of as an asynchronous
 * operation, and lets handlers search bytes with `memchr`. Without it the server still runs,
 * slower, and a cut connection may end in a FIN.
 */
export const FFI_PERMISSION = "--allow-ffi";

/** Every runtime flag, in the order `deno run` and `deno compile` take them. */
export const LAUNCH_FLAGS: readonly string[] = [UNSTABLE_FLAGS, FFI_PERMISSION, V8_FLAGS];
