/**
 * `kernel` dispatch, worker side: one connection whose socket this worker owns. The socket is
 * read into a buffer the connection keeps, each read is lent to the handler's `data` callback,
 * and the handler's writes go to the socket at once (`SocketOutput`); no other thread is
 * involved.
 *
 * Runs inside a worker only.
 *
 * Why it is built this way:
 * - One read at a time, into the connection's own buffer (the read-size rule of
 *   `read_size.ts`), and the next read only once the handler has taken the last one and accepts
 *   more: a handler that pauses, is busy, or has more than 64 KiB of output waiting stops the
 *   reads, and TCP then holds the client back (backpressure with no buffer here).
 * - The socket is read with `conn.read()`, not `conn.readable`, which closes the whole socket
 *   at the peer's EOF and would cost a half-closed client its echo.
 * - A connection closed with input or output pending (a timeout, the shutdown deadline, a
 *   handler's error) is reset, not closed with a FIN: a short answer must not look complete.
 * - After the handler ends, what the client still sends is read and dropped for a second:
 *   closing with unread input would send a reset that can destroy the answer in flight.
 *
 * @module
 */

import type { CloseReason, HandlerContext, SocketHandler } from "../../../handlers/handler.ts";
import { closeQuietly } from "../../../sockets/address.ts";
import type { BufferBudget } from "../../../sockets/buffer_budget.ts";
import type { SetMember } from "../../../sockets/connection_set.ts";
import { Counter, type SlotCounters } from "../../../threads/counters.ts";
import { BufferPool } from "../../../sockets/buffer_pool.ts";
import { MAX_READ, ReadBuffer } from "../../../sockets/read_size.ts";
import { type OutputEvents, SocketOutput } from "../../../sockets/socket_output.ts";
import { resetAndClose } from "../../../sockets/socket_reset.ts";
import type { ServerSocket } from "../../../sockets/tls_socket.ts";
import { ServedSocket } from "../../../worker/served_socket.ts";

/** Output waiting past this stops the reads, and makes `write` return false. */
export const HIGH_WATER = 64 * 1024;
/** After the handler ends, how long to drain (and drop) what the client still sends. */
const LINGER_MS = 1000;

/** Called once when a connection has closed. */
export type OwnedSocketCloseListener = (socket: OwnedSocket, reason: CloseReason) => void;

/** Options for {@linkcode OwnedSocket}. */
export interface OwnedSocketOptions {
  /** Server-wide connection id. */
  id: number;
  /** The client's address as the logs and the handler show it. */
  remoteAddr: Deno.NetAddr;
  /** The handler's callbacks. */
  handler: SocketHandler;
  /** What the handler knows of its worker. */
  context: HandlerContext;
  /**
   * The socket's descriptor when it is plain TCP (writes then go out in the call); undefined
   * for TLS.
   */
  fd: number | undefined;
  /** Bytes already read from the socket (after a PROXY header), delivered first. */
  initial?: Uint8Array | undefined;
  /** The row of counters of this worker's slot. */
  counters: SlotCounters;
  /** Called once when the connection has closed. */
  onClose: OwnedSocketCloseListener;
  /** The worker's budget for bytes held for clients. */
  budget: BufferBudget;
}

/**
 * Full-size read buffers this worker's paused connections gave up, for the next that resumes or
 * grows. A slow reader otherwise holds 64 KiB of read buffer that nothing counts while it waits;
 * one the pool has no room for is freed at once.
 */
const readBuffers = new BufferPool(MAX_READ, 16);

/** A connection served by the worker that owns its socket. */
export class OwnedSocket extends ServedSocket implements SetMember, OutputEvents {
  /** Bytes read from the client. */
  bytesIn = 0;
  /** Bytes the socket took. */
  bytesOut = 0;
  /** Set on every read and write; the timeout sweep clears it (`timeouts.ts`). */
  active = true;
  /** When the sweep last saw the connection active. */
  lastSeenActive: number = performance.now();
  /** Set when the socket takes output; the sweep clears it. */
  wrote = false;
  /** When the sweep last saw output pending and moving (or none pending). */
  lastWriteProgress: number = performance.now();
  /** Closed with input or output still pending (and so reset, where Deno lets us). */
  cut = false;
  /** The handler runs on this thread: what is read is delivered at once. */
  readonly inputInTransit = false;

  #conn: ServerSocket;
  #counters: SlotCounters;
  #onClose: OwnedSocketCloseListener;
  #budget: BufferBudget;
  #output: SocketOutput;
  #read = new ReadBuffer(readBuffers);
  #initial: Uint8Array | undefined;
  /** A `conn.read()` is under way. */
  #reading = false;
  /** The read loop waits for input to be wanted again. */
  #wake: (() => void) | undefined;
  /** The peer sent EOF, or reading failed. */
  #readDone = false;
  /** The handler's output is finished and FIN sent. */
  #outputEnded = false;
  #gone = false;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param conn The accepted socket (decrypted, with TLS).
   * @param options Identity, handler, descriptor, counters and budget.
   */
  constructor(conn: ServerSocket, options: OwnedSocketOptions) {
    super(options);
    this.#conn = conn;
    this.#counters = options.counters;
    this.#onClose = options.onClose;
    this.#budget = options.budget;
    this.#initial = options.initial?.length ? options.initial : undefined;
    this.#output = new SocketOutput(conn, {
      fd: options.fd,
      counters: options.counters,
      budget: options.budget,
      events: this,
    });
    try {
      // Answers are small writes that must leave at once, not wait for Nagle's timer.
      conn.setNoDelay(true);
    } catch {
      // The peer may already have gone; the first read will find out.
    }
  }

  /** Opens the connection to the handler and starts reading. */
  start(): void {
    this.opened();
    this.#readLoop();
  }

  /** Bytes written and not yet taken by the socket. */
  get buffered(): number {
    return this.#output.queued;
  }

  /** Whether output is waiting to be taken by the socket. */
  get writing(): boolean {
    return this.#output.queued > 0;
  }

  /**
   * Whether closing now would lose something: output not yet taken by the socket, input not yet
   * given to the handler, or a handler that is not waiting for input (the kernel may hold more).
   */
  get pending(): boolean {
    if (this.#output.queued > 0 || this.#initial !== undefined) return true;
    return !this.#readDone && !this.ended && !this.#reading;
  }

  /**
   * Closes the connection now, dropping unsent output; with a reset if anything was pending.
   *
   * @param reason Why, for logs and counters.
   */
  disconnect(reason: CloseReason): void {
    if (this.#gone) return;
    this.cut = this.pending;
    this.#gone = true;
    clearTimeout(this.#lingerTimer);
    // Counted before the socket closes: the main thread serves /metrics, and a client that
    // sees the close first must find it counted.
    this.#onClose(this, reason);
    this.#output.close();
    if (!this.cut) closeQuietly(this.#conn);
    else if (resetAndClose(this.#conn)) this.#counters.add(Counter.resets);
    this.#wakeReader();
    this.closedBecause(reason);
  }

  /** See {@linkcode OutputEvents}. */
  onOutputWritten(n: number): void {
    this.bytesOut += n;
    this.wrote = true; // any byte taken counts as progress for --write-timeout
    this.active = true;
  }

  /** See {@linkcode OutputEvents}. */
  onOutputDrained(): void {
    this.outputDrained();
    if (this.ended && !this.#outputEnded) this.#finish();
  }

  /** See {@linkcode OutputEvents}. */
  onOutputFailed(): void {
    this.disconnect("reset");
  }

  protected get highWater(): number {
    return HIGH_WATER;
  }

  protected send(bytes: Uint8Array): number {
    return this.#output.write(bytes);
  }

  protected endOutput(): void {
    this.#wakeReader(); // a paused reader now lingers instead
    if (this.#output.queued === 0) this.#finish();
  }

  protected abort(reason: CloseReason): void {
    this.disconnect(reason);
  }

  protected resumeInput(): void {
    this.#wakeReader();
  }

  async #readLoop(): Promise<void> {
    if (this.#initial !== undefined) {
      const initial = this.#initial;
      this.#initial = undefined;
      if (this.accepting) this.receive(initial);
    }
    const conn = this.#conn;
    while (!this.#gone) {
      const lingering = this.ended;
      if (lingering ? !this.#outputEnded : !this.#wanted()) {
        // No read is under way: a full-size buffer goes back to the pool, unless a `data` call
        // still holds a view of it.
        if (!lingering && !this.lentHeld) this.#read.release();
        await new Promise<void>((resolve) => this.#wake = resolve);
        continue;
      }
      const buffer = this.#read.bytes;
      let n: number | null;
      this.#reading = true;
      try {
        n = await conn.read(buffer);
      } catch {
        n = -1;
      }
      this.#reading = false;
      if (this.#gone) return;
      if (n === null || n < 0) {
        this.#readDone = true;
        if (n !== null) this.disconnect("reset");
        else if (this.ended) {
          if (this.#outputEnded) this.disconnect("done");
        } else this.receiveEnd();
        return;
      }
      this.active = true;
      this.bytesIn += n;
      this.#counters.add(Counter.bytesIn, n);
      if (this.ended) continue; // lingering: read and drop
      this.receive(this.#read.filled(n));
      this.#read.adapt(n);
    }
  }

  /** Whether the next read may start: the handler wants input, and the budget allows it. */
  #wanted(): boolean {
    if (!this.accepting) return false;
    if (!this.#budget.mustPause(this.#output.queued)) return true;
    this.#budget.onRelief(() => this.#wakeReader());
    return false;
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** All output is written: send FIN, then close once the client has finished too. */
  #finish(): void {
    if (this.#gone || this.#outputEnded) return;
    this.#outputEnded = true;
    try {
      // A peer that has gone makes the shutdown fail: the read loop then finds out too.
      this.#conn.closeWrite().catch(() => {});
    } catch {
      this.disconnect("done");
      return;
    }
    if (this.#readDone) {
      this.disconnect("done");
      return;
    }
    // Closing with unread input would send a reset, which can destroy the answer the client has
    // not read yet; so the read loop keeps reading (and dropping) until its EOF, for a while.
    this.#lingerTimer = setTimeout(() => this.disconnect("done"), LINGER_MS);
    this.#wakeReader();
  }
}
