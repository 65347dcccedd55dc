/**
 * One accepted TCP connection, on the main thread: reads its socket into the worker's channel,
 * writes what the worker sends back to the socket, and closes it the right way.
 *
 * Runs on the main thread only.
 *
 * Flow control: at most `WINDOW` bytes read from the socket may wait unacknowledged in the
 * worker; past that the read loop pauses, so a client whose echo is not being read (a slow
 * reader) stops being read from, and memory stays bounded. Past the thread's buffer budget
 * (`--max-buffered`) heavy connections pause too. A paused connection gives its read buffer
 * back, and what it holds is held in buffers of its own size (a chunk that would keep a much
 * larger buffer alive is copied), so a slow reader costs what it really holds.
 *
 * The socket is read with `read()` loops, not `conn.readable`, because the latter closes the
 * whole socket at the peer's EOF and the half-closed client would lose its echo.
 *
 * A connection closed with input or output still pending (by a timeout, the shutdown deadline,
 * a handler error) is reset, not closed with a FIN: a short answer must not look complete.
 *
 * @module
 */

import { closeQuietly, displayAddr } from "../shared/address.ts";
import {
  ACK_THRESHOLD,
  ATTACH_THRESHOLD,
  BULK_BUFFER_SIZE,
  Frame,
  WINDOW,
} from "../shared/channel.ts";
import type { BufferBudget } from "../shared/buffer_budget.ts";
import type { CloseReason } from "../shared/close_reason.ts";
import { Counter, type SlotCounters } from "../shared/counters.ts";
import { resetAndClose } from "../shared/socket_reset.ts";
import type { ServerSocket } from "../shared/tls_socket.ts";
import type { TimedConnection } from "../shared/timeouts.ts";
import { BufferPool } from "./buffer_pool.ts";
import type { WorkerLink } from "./worker_pool.ts";

/** Called once when a connection has closed. */
export type CloseListener = (connection: ClientConnection, reason: CloseReason) => void;

/** Options for {@linkcode ClientConnection}. */
export interface ClientConnectionOptions {
  /** The row of counters of the connection's worker slot. */
  counters: SlotCounters;
  /** Called once when the connection has closed. */
  onClose: CloseListener;
  /** The main thread's budget for bytes held for clients. */
  budget: BufferBudget;
  /** The client's address as a PROXY header gave it; the socket's peer otherwise. */
  remoteAddr?: Deno.NetAddr | undefined;
  /** Bytes already read past a PROXY header, delivered first. */
  initial?: Uint8Array | undefined;
}

const MIN_READ = 1024;
const MAX_READ = BULK_BUFFER_SIZE;
/**
 * Bulk buffers that came back from the workers, written out and free again: the next full-size
 * socket reads go into them. Shared by every connection of the main thread.
 */
const bulkBuffers = new BufferPool(BULK_BUFFER_SIZE, 64);
/** After the handler ends, how long to drain (and drop) what the client still sends. */
const LINGER_MS = 1000;

const encoder = new TextEncoder();

/** The main thread's side of one client connection. */
export class ClientConnection implements TimedConnection {
  /** Server-wide connection id. */
  readonly id: number;
  /** The worker serving this connection. */
  readonly link: WorkerLink;
  /** Client address, IPv4-mapped IPv6 shown as IPv4. */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * Set when a byte is read or written; the idle sweep clears it and notes the time. A flag,
   * not a clock read, because it is on the path of every chunk.
   */
  active = true;
  /** `performance.now()` when the idle sweep last saw the connection active. */
  lastSeenActive = performance.now();
  /** Set when a socket write completes; cleared by the sweep, like `active`. */
  wrote = false;
  /** `performance.now()` when the sweep last saw output pending and moving (or none pending). */
  lastWriteProgress = performance.now();
  /** Bytes read from the client. */
  bytesIn = 0;
  /** Bytes written to the client. */
  bytesOut = 0;
  /** Closed with input or output still pending (and so reset, where Deno lets us). */
  cut = false;

  #conn: ServerSocket;
  #counters: SlotCounters;
  #onClose: CloseListener;
  #budget: BufferBudget;
  /** The read buffer; given back while reading is paused. */
  #buffer: Uint8Array<ArrayBuffer> | undefined;
  #readSize = MIN_READ;
  /** Bytes sent to the worker and not yet acknowledged. */
  #inFlight = 0;
  /** Bytes in `#writeQueue`. */
  #queuedOut = 0;
  #resumeRead: (() => void) | undefined;
  #writeQueue: Uint8Array[] = [];
  /** For each chunk of `#writeQueue`: whether its buffer is ours to recycle once written. */
  #writeOwned: boolean[] = [];
  #writing = false;
  #written = 0;
  /** The peer sent EOF, or reading failed. */
  #readDone = false;
  /** Input is no longer passed to the worker (it ended, or the server is draining). */
  #inputStopped = false;
  /** The worker sent END: flush, then close. */
  #ending = false;
  #closed = false;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;

  #initial: Uint8Array | undefined;

  /**
   * @param id Connection id.
   * @param conn The accepted socket (decrypted, with TLS).
   * @param link The worker that serves it.
   * @param options Where to count its bytes, whom to tell when it closes, the client's address
   *   as a PROXY header gave it, and bytes already read past that header.
   */
  constructor(
    id: number,
    conn: ServerSocket,
    link: WorkerLink,
    options: ClientConnectionOptions,
  ) {
    this.id = id;
    this.#conn = conn;
    this.link = link;
    this.#counters = options.counters;
    this.#onClose = options.onClose;
    this.#budget = options.budget;
    this.remoteAddr = displayAddr(options.remoteAddr ?? conn.remoteAddr);
    this.#initial = options.initial;
  }

  /** Tells the worker about the connection and starts reading. */
  start(): void {
    try {
      // Echoes are small writes that must leave at once, not wait for Nagle's timer.
      this.#conn.setNoDelay(true);
    } catch {
      // The peer may already have gone; the read loop will find out.
    }
    this.link.writer.payload(Frame.OPEN, this.id, encoder.encode(JSON.stringify(this.remoteAddr)));
    if (this.#initial !== undefined && this.#initial.length > 0) {
      this.link.writer.data(this.id, this.#initial);
      this.#inFlight += this.#initial.length;
      this.#budget.take(this.#initial.length);
      this.bytesIn += this.#initial.length;
      this.#counters.add(Counter.bytesIn, this.#initial.length);
    }
    this.#initial = undefined;
    this.#readLoop();
  }

  /** Whether output is waiting to be written to the socket. */
  get writing(): boolean {
    return this.#writing;
  }

  /**
   * Whether closing now would lose something: output not yet taken by the socket, or reading
   * paused (the worker holds a window of unconsumed input, or the budget is spent, and the
   * kernel may hold more). Unacknowledged input alone does not count: the worker acknowledges
   * in steps of `ACK_THRESHOLD`, so up to that much of it is usually consumed already, and
   * resetting would destroy an echo that the kernel still holds for the client.
   */
  get pending(): boolean {
    return this.#writeQueue.length > 0 || this.#resumeRead !== undefined;
  }

  /**
   * The worker's output for this connection: queue it for the socket.
   *
   * @param bytes The bytes.
   * @param owned Whether `bytes` is alone in its buffer, which may be reused once written.
   */
  receive(bytes: Uint8Array, owned = false): void {
    if (this.#closed || this.#ending) return;
    // A chunk that will wait views a batch that may carry other connections' bytes too: keep a
    // copy of its own size instead of the whole batch.
    if (!owned && this.#writing && bytes.byteLength * 2 < bytes.buffer.byteLength) {
      bytes = bytes.slice();
    }
    this.#queuedOut += bytes.length;
    this.#budget.take(bytes.length);
    this.#writeQueue.push(bytes);
    this.#writeOwned.push(owned);
    if (!this.#writing) this.#writeLoop();
  }

  /** The worker consumed `bytes` more of this connection's input. */
  acknowledge(bytes: number): void {
    this.#inFlight -= bytes;
    this.#budget.give(bytes);
    if (this.#inFlight < WINDOW) this.#wakeReader();
  }

  /** The handler is done: send what it wrote, then close. */
  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    this.#inputStopped = true;
    this.#wakeReader();
    if (!this.#writing) this.#finish();
  }

  /**
   * Closes the connection now, dropping unsent output; with a reset if anything was pending.
   *
   * @param reason Why, for the close listener.
   */
  close(reason: CloseReason): void {
    if (this.#closed) return;
    this.cut = reason !== "done" && this.pending;
    this.#closed = true;
    clearTimeout(this.#lingerTimer);
    // Tell the worker unless it is the one that ended the connection, or is gone.
    if (
      !this.#ending && reason !== "handler-error" && reason !== "output-overflow" &&
      this.link.alive
    ) {
      this.link.writer.control(Frame.CLOSE, this.id);
    }
    this.#writeQueue = [];
    this.#writeOwned = [];
    this.#budget.give(this.#inFlight + this.#queuedOut);
    this.#inFlight = 0;
    this.#queuedOut = 0;
    this.#wakeReader();
    if (!this.cut) closeQuietly(this.#conn);
    else if (resetAndClose(this.#conn)) this.#counters.add(Counter.resets);
    this.#onClose(this, reason);
  }

  async #readLoop(): Promise<void> {
    while (!this.#closed) {
      const overBudget = this.#budget.mustPause(this.#inFlight + this.#queuedOut);
      if ((this.#inFlight >= WINDOW || overBudget) && !this.#inputStopped) {
        this.#releaseBuffer();
        await new Promise<void>((resolve) => {
          this.#resumeRead = resolve;
          if (overBudget) this.#budget.onRelief(() => this.#wakeReader());
        });
        continue;
      }
      const buffer = this.#buffer ??= newReadBuffer(this.#readSize);
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = -1;
      }
      if (this.#closed) return;
      if (n === null || n < 0) {
        this.#readDone = true;
        if (n !== null && !this.#ending) this.close("reset");
        else if (this.#ending && !this.#writing) this.close("done");
        else if (!this.#inputStopped) {
          this.#inputStopped = true;
          this.link.writer.control(Frame.EOF, this.id);
        }
        return;
      }
      this.active = true;
      this.bytesIn += n;
      this.#counters.add(Counter.bytesIn, n);
      if (this.#inputStopped) continue; // the handler has ended: read and drop
      this.#inFlight += n;
      this.#budget.take(n);
      this.#readSize = nextReadSize(buffer.length, n);
      if (n >= ATTACH_THRESHOLD && n * 2 >= buffer.length) {
        // Bulk: hand the read buffer itself to the worker (no copy): at most twice the bytes
        // it carries. The next read gets a buffer of its own.
        this.link.writer.attach(this.id, buffer.buffer, n);
        this.#buffer = undefined;
      } else {
        this.link.writer.data(this.id, buffer.subarray(0, n)); // copied into the batch
        if (this.#readSize !== buffer.length) this.#buffer = undefined;
      }
    }
  }

  /** While paused, a connection holds no read buffer; a full-size one goes back to the pool. */
  #releaseBuffer(): void {
    if (this.#buffer?.length === MAX_READ) bulkBuffers.give(this.#buffer.buffer);
    this.#buffer = undefined;
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    while (this.#writeQueue.length > 0 && !this.#closed) {
      const chunk = this.#writeQueue[0]!;
      try {
        let offset = 0;
        while (offset < chunk.length) {
          offset += await this.#conn.write(chunk.subarray(offset));
          this.wrote = true; // any byte taken counts as progress for --write-timeout
        }
      } catch {
        this.close("reset");
        break;
      }
      this.#writeQueue.shift();
      this.#queuedOut -= chunk.length;
      this.#budget.give(chunk.length);
      if (this.#writeOwned.shift()) bulkBuffers.give(chunk.buffer as ArrayBuffer);
      this.active = true;
      this.bytesOut += chunk.length;
      this.#counters.add(Counter.bytesOut, chunk.length);
      this.#written += chunk.length;
      if (this.#written >= ACK_THRESHOLD) {
        this.link.writer.control(Frame.ACK, this.id, this.#written);
        this.#written = 0;
      }
    }
    this.#writing = false;
    if (this.#ending && !this.#closed) this.#finish();
  }

  /** All output is written: send FIN, then close once the client has finished too. */
  #finish(): void {
    if (this.#readDone) {
      this.close("done");
      return;
    }
    try {
      this.#conn.closeWrite();
    } catch {
      this.close("done");
      return;
    }
    // Closing with unread input would send a reset, which can destroy the echo the client has
    // not read yet; so keep reading (and dropping) until its EOF, for a short while.
    this.#lingerTimer = setTimeout(() => this.close("done"), LINGER_MS);
  }

  #wakeReader(): void {
    const resume = this.#resumeRead;
    this.#resumeRead = undefined;
    resume?.();
  }
}

/**
 * The read size after a read of `n` bytes into `size`: doubled while reads fill the buffer,
 * halved while they use an eighth of it, so idle connections cost 1 KiB each and bulk ones read
 * 64 KiB at a time.
 */
function nextReadSize(size: number, n: number): number {
  if (n === size && size < MAX_READ) return size * 2;
  if (n <= size / 8 && size > MIN_READ) return size / 2;
  return size;
}

/** A read buffer of `size` bytes; full-size ones are reused bulk buffers when there are any. */
function newReadBuffer(size: number): Uint8Array<ArrayBuffer> {
  return size === MAX_READ ? new Uint8Array(bulkBuffers.take()) : new Uint8Array(size);
}
