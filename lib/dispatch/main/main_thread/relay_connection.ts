/**
 * `main` dispatch, main thread: one accepted TCP connection. Its socket is read into the
 * worker's frame channel, what the worker sends back is written to the socket, and it is closed
 * the right way.
 *
 * Runs on the main thread only.
 *
 * Flow control: a connection holds at most `WINDOW` bytes both ways together (input read from
 * the socket and unacknowledged by the worker, plus output waiting for the socket); past that
 * the read loop pauses. So a client whose answers are not being read (a slow reader) stops
 * being read from as soon as its answers back up, and costs one window, not one per direction.
 * Past the thread's buffer budget (`--max-buffered`) heavy connections pause too. A paused
 * connection gives its read buffer back.
 *
 * Output goes to the socket at once where the kernel takes it (`SocketOutput`: the bytes are
 * written straight from the batch they arrived in); only what it does not take is copied.
 *
 * The socket is read with `read()` loops, not `conn.readable`, because the latter closes the
 * whole socket at the peer's EOF and the half-closed client would lose its echo.
 *
 * A connection closed with input or output still pending (by a timeout, the shutdown deadline,
 * a handler error) is reset, not closed with a FIN: a short answer must not look complete.
 *
 * @module
 */

import { closeQuietly, displayAddr } from "../../../sockets/address.ts";
import type { BufferBudget } from "../../../sockets/buffer_budget.ts";
import type { CloseReason } from "../../../sockets/close_reason.ts";
import type { SetMember } from "../../../sockets/connection_set.ts";
import { Counter, type SlotCounters } from "../../../threads/counters.ts";
import { ReadBuffer } from "../../../sockets/read_size.ts";
import { type OutputEvents, SocketOutput } from "../../../sockets/socket_output.ts";
import { resetAndClose } from "../../../sockets/socket_reset.ts";
import type { ServerSocket } from "../../../sockets/tls_socket.ts";
import type { WorkerLink } from "../../../main_thread/worker_pool.ts";
import { BufferPool } from "../../../sockets/buffer_pool.ts";
import {
  ACK_THRESHOLD,
  ATTACH_THRESHOLD,
  type BatchInbox,
  BULK_BUFFER_SIZE,
  EAGER_ACK_THRESHOLD,
  Frame,
  type FrameWriter,
  reasonCode,
  WINDOW,
} from "../frames.ts";

/** A running worker and the frames the main thread sends it. */
export interface WorkerChannel {
  /** The worker. */
  readonly link: WorkerLink;
  /** Frames to it. */
  readonly writer: FrameWriter;
  /** Its batches, as they arrive. */
  readonly inbox: BatchInbox;
}

/** Called once when a connection has closed. */
export type CloseListener = (connection: RelayConnection, reason: CloseReason) => void;

/** Options for {@linkcode RelayConnection}. */
export interface RelayConnectionOptions {
  /** The row of counters of the connection's worker slot. */
  counters: SlotCounters;
  /** Called once when the connection has closed. */
  onClose: CloseListener;
  /** The main thread's budget for bytes held for clients. */
  budget: BufferBudget;
  /**
   * The socket's descriptor when it is plain TCP (output then goes out in the call); undefined
   * with TLS.
   */
  fd: number | undefined;
  /** The client's address as a PROXY header gave it; the socket's peer otherwise. */
  remoteAddr?: Deno.NetAddr | undefined;
  /** Bytes already read past a PROXY header, delivered first. */
  initial?: Uint8Array | undefined;
}

/**
 * Bulk buffers that came back from the workers, written out and free again: the next full-size
 * socket reads go into them. Shared by every connection of the main thread.
 */
const bulkBuffers = new BufferPool(BULK_BUFFER_SIZE, 64);

/**
 * Takes a bulk buffer a worker gave back (it had no output to carry it), for the next
 * full-size socket read.
 *
 * @param buffer The buffer.
 */
export function reuseBulkBuffer(buffer: ArrayBuffer): void {
  bulkBuffers.give(buffer);
}
/** After the handler ends, how long to drain (and drop) what the client still sends. */
const LINGER_MS = 1000;

const encoder = new TextEncoder();

/** The main thread's side of one client connection. */
export class RelayConnection implements SetMember, OutputEvents {
  /** Server-wide connection id. */
  readonly id: number;
  /** The worker serving this connection. */
  readonly link: WorkerLink;
  /** Client address, IPv4-mapped IPv6 shown as IPv4. */
  readonly remoteAddr: Deno.NetAddr;
  /** Set on every read and write; the timeout sweep clears it (`timeouts.ts`). */
  active = true;
  /** When the sweep last saw the connection active. */
  lastSeenActive = performance.now();
  /** Set when the socket takes output; the sweep clears it. */
  wrote = false;
  /** When the sweep last saw output pending and moving (or none pending). */
  lastWriteProgress = performance.now();
  /** Bytes read from the client. */
  bytesIn = 0;
  /** Bytes written to the client. */
  bytesOut = 0;
  /** Closed with input or output still pending (and so reset, where Deno lets us). */
  cut = false;

  #conn: ServerSocket;
  #writer: FrameWriter;
  #counters: SlotCounters;
  #onClose: CloseListener;
  #budget: BufferBudget;
  #output: SocketOutput;
  /** The read buffer; given back while reading is paused, or handed to the worker. */
  #read = new ReadBuffer(bulkBuffers);
  /** Bytes sent to the worker and not yet acknowledged. */
  #inFlight = 0;
  /** The batch that carries (or carried) the latest input to the worker. */
  #inputBatch = 0;
  #resumeRead: (() => void) | undefined;
  /** Output written to the socket and not yet acknowledged to the worker. */
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
   * @param channel The worker that serves it, and the frames to it.
   * @param options Where to count its bytes, whom to tell when it closes, its descriptor, the
   *   client's address as a PROXY header gave it, and bytes already read past that header.
   */
  constructor(
    id: number,
    conn: ServerSocket,
    channel: WorkerChannel,
    options: RelayConnectionOptions,
  ) {
    this.id = id;
    this.#conn = conn;
    this.link = channel.link;
    this.#writer = channel.writer;
    this.#counters = options.counters;
    this.#onClose = options.onClose;
    this.#budget = options.budget;
    this.remoteAddr = displayAddr(options.remoteAddr ?? conn.remoteAddr);
    this.#initial = options.initial;
    this.#output = new SocketOutput(conn, {
      fd: options.fd,
      counters: options.counters,
      budget: options.budget,
      events: this,
    });
  }

  /** Tells the worker about the connection and starts reading. */
  start(): void {
    try {
      // Echoes are small writes that must leave at once, not wait for Nagle's timer.
      this.#conn.setNoDelay(true);
    } catch {
      // The peer may already have gone; the read loop will find out.
    }
    this.#writer.payload(Frame.OPEN, this.id, encoder.encode(JSON.stringify(this.remoteAddr)));
    if (this.#initial !== undefined && this.#initial.length > 0) {
      this.#writer.data(this.id, this.#initial);
      this.#inputBatch = this.#writer.staging;
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
    return this.#output.queued > 0;
  }

  /**
   * Whether closing now would lose something: output not yet taken by the socket, or reading
   * paused (the worker holds a window of unconsumed input, or the budget is spent, and the
   * kernel may hold more). Unacknowledged input alone does not count: the worker acknowledges
   * in steps, so some of it is usually consumed already, and resetting would destroy an answer
   * that the kernel still holds for the client.
   */
  get pending(): boolean {
    return this.#output.queued > 0 || this.#resumeRead !== undefined;
  }

  /**
   * Whether the worker has yet to process the batch that carried the latest input (exact,
   * unlike the acknowledgements, which come in steps). What a handler writes as it takes input
   * comes back with the worker's word that it processed the batch.
   */
  get inputInTransit(): boolean {
    return !this.#writer.processed(this.#inputBatch);
  }

  /**
   * The worker's output for this connection: to the socket, at once where it takes it.
   *
   * @param bytes The bytes (a view of the batch; free again when this returns).
   * @param owned Whether `bytes` is alone in its buffer, which may then be reused for reading.
   */
  receive(bytes: Uint8Array, owned = false): void {
    if (this.#closed || this.#ending) return;
    this.#output.write(bytes);
    // Kept for reading here, else back to the worker, whose output travels in them.
    if (owned) this.#writer.recycleBulk(bytes.buffer as ArrayBuffer, bulkBuffers);
  }

  /**
   * The worker consumed `bytes` more of this connection's input.
   *
   * @param bytes How many.
   */
  acknowledge(bytes: number): void {
    this.#inFlight -= bytes;
    this.#budget.give(bytes);
    this.#wakeIfRoom();
  }

  /** The handler is done: send what it wrote, then close. */
  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    this.#inputStopped = true;
    this.#wakeReader();
    if (this.#output.queued === 0) this.#finish();
  }

  /**
   * Closes the connection now, dropping unsent output; with a reset if anything was pending.
   *
   * @param reason Why, for the close listener.
   * @param fromWorker The worker closed it (its handler failed, or closed it itself): it needs
   *   no word back.
   */
  disconnect(reason: CloseReason, fromWorker = false): void {
    if (this.#closed) return;
    this.cut = this.pending;
    this.#closed = true;
    clearTimeout(this.#lingerTimer);
    // Tell the worker unless it is the one that ended the connection, or is gone.
    if (!this.#ending && !fromWorker && this.link.alive) {
      this.#writer.control(Frame.CLOSE, this.id, reasonCode(reason));
    }
    this.#output.close();
    this.#budget.give(this.#inFlight);
    this.#inFlight = 0;
    this.#wakeReader();
    if (!this.cut) closeQuietly(this.#conn);
    else if (resetAndClose(this.#conn)) this.#counters.add(Counter.resets);
    this.#onClose(this, reason);
  }

  async #readLoop(): Promise<void> {
    while (!this.#closed) {
      const held = this.#held;
      const overBudget = this.#budget.mustPause(held);
      if ((held >= WINDOW || overBudget) && !this.#inputStopped) {
        // While paused, a connection holds no read buffer; a full-size one goes back to the pool.
        this.#read.release();
        this.#read.forget();
        await new Promise<void>((resolve) => {
          this.#resumeRead = resolve;
          if (overBudget) this.#budget.onRelief(() => this.#wakeReader());
        });
        continue;
      }
      const buffer = this.#read.bytes;
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = -1;
      }
      if (this.#closed) return;
      if (n === null || n < 0) {
        this.#readDone = true;
        if (n !== null && !this.#ending) this.disconnect("reset");
        else if (this.#ending && this.#output.queued === 0) this.disconnect("done");
        else if (!this.#inputStopped) {
          this.#inputStopped = true;
          this.#writer.control(Frame.EOF, this.id);
        }
        return;
      }
      this.active = true;
      this.bytesIn += n;
      this.#counters.add(Counter.bytesIn, n);
      if (this.#inputStopped) continue; // the handler has ended: read and drop
      this.#inFlight += n;
      this.#budget.take(n);
      if (n >= ATTACH_THRESHOLD && n * 2 >= buffer.length) {
        // Bulk: hand the read buffer itself to the worker (no copy): at most twice the bytes
        // it carries. The next read gets a buffer of its own.
        this.#read.adapt(n);
        this.#writer.attach(this.id, buffer.buffer, n);
        this.#read.forget();
      } else {
        this.#writer.data(this.id, this.#read.filled(n)); // copied into the batch
        this.#read.adapt(n);
      }
      this.#inputBatch = this.#writer.staging;
    }
  }

  /** See {@linkcode OutputEvents}. */
  onOutputDrained(): void {
    if (this.#ending && !this.#closed) this.#finish();
  }

  /** See {@linkcode OutputEvents}. */
  onOutputFailed(): void {
    this.disconnect("reset");
  }

  /** See {@linkcode OutputEvents}. */
  onOutputWritten(n: number): void {
    this.active = true;
    this.wrote = true; // any byte taken counts as progress for --write-timeout
    this.bytesOut += n;
    this.#written += n;
    // Output leaving frees room in the connection's window for input.
    this.#wakeIfRoom();
    // The worker's credit back for what the socket took: in steps, and early once nothing
    // waits here, so that the worker's view of what is buffered stays close to the truth.
    if (
      this.#written >= ACK_THRESHOLD ||
      (this.#written >= EAGER_ACK_THRESHOLD && this.#output.queued === 0)
    ) {
      if (!this.#closed && !this.#ending) this.#writer.control(Frame.ACK, this.id, this.#written);
      this.#written = 0;
    }
  }

  /** All output is written: send FIN, then close once the client has finished too. */
  #finish(): void {
    if (this.#readDone) {
      this.disconnect("done");
      return;
    }
    try {
      // A peer that has gone makes the shutdown fail: the read loop then finds out too.
      this.#conn.closeWrite().catch(() => {});
    } catch {
      this.disconnect("done");
      return;
    }
    // Closing with unread input would send a reset, which can destroy the answer the client has
    // not read yet; so keep reading (and dropping) until its EOF, for a short while.
    this.#lingerTimer = setTimeout(() => this.disconnect("done"), LINGER_MS);
  }

  /** Bytes the connection holds both ways: input the worker has not acknowledged, output queued. */
  get #held(): number {
    return this.#inFlight + this.#output.queued;
  }

  /** Resumes a paused read once the window has room again (the budget is checked on resuming). */
  #wakeIfRoom(): void {
    if (this.#held < WINDOW) this.#wakeReader();
  }

  #wakeReader(): void {
    const resume = this.#resumeRead;
    this.#resumeRead = undefined;
    resume?.();
  }
}
