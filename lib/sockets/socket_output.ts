/**
 * The write side of one socket that this thread owns: bytes go to the kernel at once when it
 * takes them, and only what it does not take is copied and queued, then written as the socket
 * drains. The same for every thread that owns sockets (the main thread in `main` dispatch, each
 * worker in `kernel` dispatch).
 *
 * Why it is built this way (Deno 2.9.6, measured on the project's 2-core VM):
 * - `conn.write()` is an asynchronous operation that never completes in the call (its promise
 *   is pending on return even on an idle socket), so it cannot say what the kernel took, and a
 *   caller that reuses its buffer must copy first or wait. On a plain TCP socket, with
 *   `--allow-ffi` on Linux, libc's non-blocking `send()` (`libc.ts`) writes in the call: the
 *   common case (the kernel takes the whole answer) costs one call, no copy and no promise,
 *   and the caller's bytes are free again as soon as `write` returns.
 * - Whatever is not taken at once is copied into a queue of segments (small writes coalesce
 *   into one `conn.write()`), so what a backlog holds is its bytes plus at most one partly
 *   filled segment: a slow reader's memory is what `--max-buffered` counts. The last segment
 *   written is kept for the next write, so a socket whose every write is queued (TLS) does not
 *   allocate per write.
 * - Without the fast path (a TLS connection, another OS, the permission withheld) every write
 *   is staged and written asynchronously: the same promises, slower.
 *
 * Used on whichever thread owns the socket.
 *
 * @module
 */

import type { BufferBudget } from "./buffer_budget.ts";
import { Counter, type SlotCounters } from "../threads/counters.ts";
import { canSendNow, sendNow } from "./libc.ts";
import type { ServerSocket } from "./tls_socket.ts";

/**
 * Output the socket did not take at once is copied into segments of at most this size (larger
 * chunks get one of their own size), so a backlog holds at most one partly filled segment beyond
 * its bytes. Segments start at {@linkcode MIN_SEGMENT} and grow with the backlog, so that a
 * socket with a small write waiting holds little.
 */
const SEGMENT = 16 * 1024;
/** Smallest segment. */
const MIN_SEGMENT = 1024;

/**
 * What an output reports to its connection (the connection object itself implements it, so
 * that a connection costs no closures for it).
 */
export interface OutputEvents {
  /** The socket took `n` more bytes (any progress counts against `--write-timeout`). */
  onOutputWritten(n: number): void;
  /** Everything queued has been written. */
  onOutputDrained(): void;
  /** The socket failed while writing; the output has dropped what it held. */
  onOutputFailed(): void;
}

/** Options for {@linkcode SocketOutput}. */
export interface SocketOutputOptions {
  /**
   * The socket's descriptor, for the synchronous path; only for a plain TCP socket (a TLS
   * connection encrypts in JavaScript). Undefined: every write is asynchronous.
   */
  fd: number | undefined;
  /** Where bytes are counted as sent. */
  counters: SlotCounters;
  /** The thread's budget: queued bytes count against `--max-buffered`. */
  budget: BufferBudget;
  /** Told of progress, drain and failure. */
  events: OutputEvents;
}

/** One segment of queued output: `bytes[start, end)` is still to be written. */
interface Segment {
  readonly bytes: Uint8Array;
  start: number;
  end: number;
}

/** The output side of one socket. */
export class SocketOutput {
  #conn: ServerSocket;
  #fd: number | undefined;
  #counters: SlotCounters;
  #budget: BufferBudget;
  #events: OutputEvents;
  /** Copies of what the socket has not taken yet, oldest first; the first is being written. */
  #segments: Segment[] = [];
  /** The last segment written out, empty, for the next backlog (at most `SEGMENT` bytes). */
  #spare: Uint8Array | undefined;
  /** Bytes queued: the sum of the segments' unwritten ranges. */
  #queued = 0;
  #writing = false;
  #closed = false;

  /**
   * @param conn The socket (decrypted, with TLS).
   * @param options Descriptor, counters, budget and events.
   */
  constructor(conn: ServerSocket, options: SocketOutputOptions) {
    this.#conn = conn;
    this.#fd = options.fd !== undefined && canSendNow() ? options.fd : undefined;
    this.#counters = options.counters;
    this.#budget = options.budget;
    this.#events = options.events;
  }

  /** Bytes written by the caller and not yet taken by the socket. */
  get queued(): number {
    return this.#queued;
  }

  /** Whether the synchronous path is in use. */
  get immediate(): boolean {
    return this.#fd !== undefined;
  }

  /**
   * Writes `bytes`: what the kernel takes now is sent in the call, the rest is copied and sent
   * as the socket drains. The caller may reuse `bytes` as soon as this returns.
   *
   * @param bytes The bytes.
   * @returns Bytes queued now (0: the kernel took everything).
   */
  write(bytes: Uint8Array): number {
    const length = bytes.length;
    if (this.#closed || length === 0) return this.#queued;
    // Counted before the bytes can reach the client, who may then read /metrics from another
    // thread; what never leaves is taken back when the output is dropped.
    this.#counters.add(Counter.bytesOut, length);
    let taken = 0;
    if (this.#fd !== undefined && this.#queued === 0) {
      taken = sendNow(this.#fd, bytes);
      if (taken === length) {
        this.#events.onOutputWritten(length);
        return 0;
      }
      if (taken > 0) this.#events.onOutputWritten(taken);
    }
    this.#append(taken === 0 ? bytes : bytes.subarray(taken));
    this.#queued += length - taken;
    this.#budget.take(length - taken);
    if (!this.#writing) this.#flush();
    return this.#queued;
  }

  /** Drops what is queued (the connection is closing); counts it as never sent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#drop();
  }

  /** Copies `chunk` into the free end of the last segment, then into new ones. */
  #append(chunk: Uint8Array): void {
    let copied = 0;
    const last = this.#segments.at(-1);
    if (last !== undefined) {
      // The last segment may be the one being written: only its free end is filled.
      copied = Math.min(chunk.length, last.bytes.length - last.end);
      last.bytes.set(chunk.subarray(0, copied), last.end);
      last.end += copied;
    }
    while (copied < chunk.length) {
      const rest = chunk.length - copied;
      let bytes = this.#spare;
      this.#spare = undefined;
      if (bytes === undefined || bytes.length < Math.min(rest, SEGMENT)) {
        bytes = new Uint8Array(
          Math.max(rest, Math.min(SEGMENT, Math.max(MIN_SEGMENT, this.#queued))),
        );
      }
      const n = Math.min(rest, bytes.length);
      bytes.set(chunk.subarray(copied, copied + n));
      this.#segments.push({ bytes, start: 0, end: n });
      copied += n;
    }
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      let segment: Segment | undefined;
      while ((segment = this.#segments[0]) !== undefined && !this.#closed) {
        // Bytes appended to this segment meanwhile are written by the next turn of the loop.
        const n = await this.#conn.write(segment.bytes.subarray(segment.start, segment.end));
        if (this.#closed) return;
        segment.start += n;
        this.#queued -= n;
        this.#budget.give(n);
        this.#events.onOutputWritten(n);
        if (segment.start === segment.end) {
          this.#segments.shift();
          // No write refers to it any more: the next backlog may fill it.
          if (segment.bytes.length <= SEGMENT) this.#spare = segment.bytes;
        }
      }
    } catch {
      if (this.#closed) return;
      this.#closed = true;
      this.#drop();
      this.#events.onOutputFailed();
      return;
    } finally {
      this.#writing = false;
    }
    if (!this.#closed) this.#events.onOutputDrained();
  }

  #drop(): void {
    if (this.#queued > 0) {
      this.#counters.add(Counter.bytesOut, -this.#queued);
      this.#budget.give(this.#queued);
      this.#queued = 0;
    }
    // A segment being written stays referenced by the pending write: dropped, never reused.
    this.#segments = [];
    this.#spare = undefined;
  }
}
