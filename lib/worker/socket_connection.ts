/**
 * One connection whose socket this worker owns (`kernel` dispatch): the handler's Web Streams
 * pair reads from and writes to the socket directly, with no other thread in between.
 *
 * Runs inside a worker only.
 *
 * Why it is built this way:
 * - The readable is pull-based with no queue of its own (`highWaterMark: 0`): the socket is read
 *   only when the handler asks for more, so a handler that stops reading stops the reads, and
 *   the kernel's buffers then push back on the client (backpressure with no buffer here).
 * - The socket is read with `conn.read()`, not `conn.readable`, which closes the whole socket
 *   at the peer's EOF and would cost a half-closed client its echo.
 * - The sink writes each chunk to the socket and resolves when the kernel has taken it all, so
 *   an awaited `write()` waits for a slow reader and memory stays bounded.
 * - Read buffers start at 1 KiB and double while reads fill them (up to 64 KiB): an idle
 *   connection costs 1 KiB, a bulk one reads 64 KiB at a time. A full buffer is handed to the
 *   handler as the chunk (handlers may keep chunks), and the next one is allocated only when
 *   the handler asks for more: a connection whose handler waits on a slow reader holds only
 *   the output the client has not taken. Past the worker's share of `--max-buffered`, reads
 *   shrink to 1 KiB and heavy connections stop being read.
 * - A connection closed with input or output pending (a timeout, the shutdown deadline) is
 *   reset, not closed with a FIN: a short answer must not look complete.
 *
 * @module
 */

import type { Connection } from "../handlers/handler.ts";
import { closeQuietly } from "../shared/address.ts";
import type { BufferBudget } from "../shared/buffer_budget.ts";
import type { CloseReason } from "../shared/close_reason.ts";
import { Counter, type SlotCounters } from "../shared/counters.ts";
import { resetAndClose } from "../shared/socket_reset.ts";
import type { ServerSocket } from "../shared/tls_socket.ts";
import type { TimedConnection } from "../shared/timeouts.ts";
import { OutputGuard, outputStrategy } from "./output_guard.ts";
import { CLOSED, connectionView, type HandledConnection } from "./run_handler.ts";

const MIN_READ = 1024;
const MAX_READ = 64 * 1024;
/** After the handler ends, how long to drain (and drop) what the client still sends. */
const LINGER_MS = 1000;

/** Called once when a connection has closed. */
export type SocketCloseListener = (connection: SocketConnection, reason: CloseReason) => void;

/** Options for {@linkcode SocketConnection}. */
export interface SocketConnectionOptions {
  /** The client's address as the logs and the handler show it. */
  remoteAddr: Deno.NetAddr;
  /** Bytes already read from the socket (after a PROXY header), delivered first. */
  initial?: Uint8Array | undefined;
  /** The row of counters of this worker's slot. */
  counters: SlotCounters;
  /** Called once when the connection has closed. */
  onClose: SocketCloseListener;
  /** The worker's budget for bytes held for clients. */
  budget: BufferBudget;
}

/** A connection served by the worker that owns its socket. */
export class SocketConnection implements HandledConnection, TimedConnection {
  /** Server-wide connection id. */
  readonly id: number;
  /** What the handler sees. */
  readonly view: Connection;
  /** Bytes read from the client. */
  bytesIn = 0;
  /** Bytes written to the client. */
  bytesOut = 0;
  /** See {@linkcode TimedConnection}. */
  active = true;
  /** See {@linkcode TimedConnection}. */
  lastSeenActive: number = performance.now();
  /** See {@linkcode TimedConnection}. */
  wrote = false;
  /** See {@linkcode TimedConnection}. */
  lastWriteProgress: number = performance.now();
  /** Closed with input or output still pending (and so reset, where Deno lets us). */
  cut = false;

  #conn: ServerSocket;
  #counters: SlotCounters;
  #onClose: SocketCloseListener;
  #budget: BufferBudget;
  /** The read buffer; none between a full read and the handler's next pull. */
  #buffer: Uint8Array<ArrayBuffer> | undefined;
  #readSize = MIN_READ;
  #initial: Uint8Array | undefined;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  /** A `conn.read()` under way, so that the linger loop can wait for it instead of racing it. */
  #pendingRead: Promise<number | null> | undefined;
  /** The readable has ended (EOF, cancelled, errored, or input stopped). */
  #readableDone = false;
  /** The peer sent EOF, or reading failed. */
  #readDone = false;
  /** Input is no longer given to the handler (it ended, or the server is draining). */
  #inputStopped = false;
  /** The handler's output is finished and FIN sent. */
  #outputEnded = false;
  #writing = false;
  #closed = false;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** Created on first use of `signal`: most handlers never look, and it costs memory. */
  #abort: AbortController | undefined;
  #guard: OutputGuard;

  /**
   * @param id Connection id, unique server-wide.
   * @param conn The accepted socket.
   * @param options Address, initial bytes, counters, close listener.
   */
  constructor(id: number, conn: ServerSocket, options: SocketConnectionOptions) {
    this.id = id;
    this.#conn = conn;
    this.#counters = options.counters;
    this.#onClose = options.onClose;
    this.#budget = options.budget;
    this.#initial = options.initial?.length ? options.initial : undefined;
    try {
      // Echoes are small writes that must leave at once, not wait for Nagle's timer.
      conn.setNoDelay(true);
    } catch {
      // The peer may already have gone; the first read will find out.
    }
    const readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: (controller) => this.#pull(controller),
      cancel: () => {
        this.#readableDone = true;
      },
    }, { highWaterMark: 0 });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: () => this.#endOutput(),
      abort: () => this.close("handler-error"),
    }, outputStrategy());
    this.#guard = new OutputGuard(writable, id, () => this.close("output-overflow"));
    this.view = connectionView({
      id,
      remoteAddr: options.remoteAddr,
      readable,
      writable,
      signal: () => this.#signal(),
      guard: this.#guard,
    });
  }

  /** Whether the connection was closed (from outside, or finished). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether output is waiting to be taken by the socket. */
  get writing(): boolean {
    return this.#writing;
  }

  /**
   * Whether closing now would lose something: output not yet taken by the socket, input not yet
   * given to the handler, or a handler that is not waiting for input (the kernel may hold more).
   */
  get pending(): boolean {
    if (this.#writing || this.#guard.queued > 0 || this.#initial !== undefined) return true;
    return !this.#readDone && !this.#inputStopped && this.#pendingRead === undefined;
  }

  /** Sends everything the handler wrote, awaited or not, then closes the writable. */
  async closeWritable(): Promise<void> {
    if (!this.#outputEnded) await this.#guard.finish();
  }

  /**
   * The handler is done. If it failed, close at once; otherwise send FIN and close once the
   * client has finished too (or after a short linger).
   *
   * @param failed Whether the handler threw.
   */
  finish(failed: boolean): void {
    if (this.#closed) return;
    if (failed) {
      this.close("handler-error");
      return;
    }
    this.#inputStopped = true;
    this.#endReadable();
    this.#endOutput();
    if (this.#readDone) {
      this.close("done");
      return;
    }
    // Closing with unread input would send a reset, which can destroy the echo the client has
    // not read yet; so keep reading (and dropping) until its EOF, for a short while.
    this.#lingerTimer = setTimeout(() => this.close("done"), LINGER_MS);
    this.#linger();
  }

  /**
   * Closes the connection now, dropping unsent output.
   *
   * @param reason Why, for logs and counters.
   */
  close(reason: CloseReason): void {
    if (this.#closed) return;
    this.cut = reason !== "done" && this.pending;
    this.#closed = true;
    clearTimeout(this.#lingerTimer);
    // Counted before the socket closes: the main thread serves /metrics, and a client that
    // sees the close first must find it counted.
    this.#onClose(this, reason);
    if (!this.cut) closeQuietly(this.#conn);
    else if (resetAndClose(this.#conn)) this.#counters.add(Counter.resets);
    if (this.#abort !== undefined && !this.#abort.signal.aborted) this.#abort.abort(CLOSED);
    if (!this.#readableDone) {
      this.#readableDone = true;
      this.#controller.error(CLOSED);
    }
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    if (this.#initial !== undefined) {
      controller.enqueue(this.#initial);
      this.#initial = undefined;
      return;
    }
    if (this.#budget.mustPause(this.#guard.queued)) {
      await new Promise<void>((resolve) => this.#budget.onRelief(resolve));
      if (this.#readableDone) return;
    }
    const chunk = await this.#read();
    // Input may have been stopped, or the stream cancelled, while the read was under way.
    if (this.#readableDone) return;
    if (chunk === null) this.#endReadable();
    else controller.enqueue(chunk);
  }

  /** One read from the socket: the bytes (a chunk of their own), or null at EOF. */
  async #read(): Promise<Uint8Array | null> {
    const size = this.#budget.over ? MIN_READ : this.#readSize;
    const buffer = this.#buffer?.length === size ? this.#buffer : new Uint8Array(size);
    this.#buffer = buffer;
    let n: number | null;
    try {
      const read = this.#conn.read(buffer);
      this.#pendingRead = read;
      n = await read;
    } catch {
      if (!this.#closed) this.close("reset");
      throw CLOSED;
    } finally {
      this.#pendingRead = undefined;
    }
    if (n === null) {
      this.#readDone = true;
      return null;
    }
    this.active = true;
    this.bytesIn += n;
    this.#counters.add(Counter.bytesIn, n);
    if (n === size) {
      // A full read: hand the buffer itself over; the next read, larger, gets a new one.
      this.#readSize = Math.min(size * 2, MAX_READ);
      this.#buffer = undefined;
      return buffer;
    }
    if (n <= size / 8 && size > MIN_READ) this.#readSize = size / 2;
    return buffer.slice(0, n);
  }

  #endReadable(): void {
    if (this.#readableDone) return;
    this.#readableDone = true;
    this.#controller.close();
  }

  async #write(chunk: Uint8Array): Promise<void> {
    if (this.#closed || this.#outputEnded) throw CLOSED;
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError("Handlers must write Uint8Array chunks");
    }
    if (chunk.length === 0) return;
    // Counted before the bytes can reach the client (who may then read /metrics from the main
    // thread); what the socket does not take is taken back.
    this.bytesOut += chunk.length;
    this.#counters.add(Counter.bytesOut, chunk.length);
    this.#writing = true;
    this.#budget.take(chunk.length);
    let offset = 0;
    try {
      while (offset < chunk.length) {
        offset += await this.#conn.write(offset === 0 ? chunk : chunk.subarray(offset));
        this.wrote = true; // any byte taken counts as progress for --write-timeout
      }
    } catch {
      this.bytesOut -= chunk.length - offset;
      this.#counters.add(Counter.bytesOut, offset - chunk.length);
      if (!this.#closed) this.close("reset");
      throw CLOSED;
    } finally {
      this.#writing = false;
      this.#budget.give(chunk.length);
    }
    this.active = true;
  }

  /** The handler's output is complete: send FIN (the client may still be sending). */
  #endOutput(): void {
    if (this.#outputEnded || this.#closed) return;
    this.#outputEnded = true;
    try {
      this.#conn.closeWrite();
    } catch {
      // The peer has gone; finish() will close.
    }
  }

  /** Reads and drops what the client still sends until its EOF, then closes. */
  async #linger(): Promise<void> {
    const scratch = this.#buffer ?? new Uint8Array(MIN_READ);
    try {
      let n = await (this.#pendingRead ?? this.#conn.read(scratch));
      while (n !== null && !this.#closed) n = await this.#conn.read(scratch);
    } catch {
      // Reset, or closed by the linger timer.
    }
    this.close("done");
  }

  #signal(): AbortSignal {
    this.#abort ??= new AbortController();
    if (this.#closed && !this.#abort.signal.aborted) this.#abort.abort(CLOSED);
    return this.#abort.signal;
  }
}
