/**
 * `main` dispatch, worker side: one connection whose socket the main thread owns. Its bytes
 * arrive as frames and are lent to the handler straight from the batch they came in; the
 * handler's writes go back as frames. Credits bound both directions: at most `WINDOW` bytes of
 * output travel to the main thread unacknowledged (the rest waits here), and input is
 * acknowledged as the handler takes it, so the main thread stops reading a connection whose
 * handler does not.
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { CloseReason, HandlerContext, SocketHandler } from "../../../handlers/handler.ts";
import { ServedSocket } from "../../../worker/served_socket.ts";
import { BufferPool } from "../../../sockets/buffer_pool.ts";
import {
  ACK_THRESHOLD,
  ATTACH_THRESHOLD,
  BULK_BUFFER_SIZE,
  EAGER_ACK_THRESHOLD,
  Frame,
  type FrameWriter,
  reasonCode,
  WINDOW,
} from "../frames.ts";

/**
 * Bulk-size buffers free for output copies: the main thread's reads arrive in such buffers,
 * which come here once their bytes have been delivered, and leave again carrying a handler's
 * output. Steady bulk traffic so allocates none. One pool per worker.
 */
export const bulkBuffers: BufferPool = new BufferPool(BULK_BUFFER_SIZE, 64);

/** Options for {@linkcode RelayedSocket}. */
export interface RelayedSocketOptions {
  /** Server-wide connection id. */
  id: number;
  /** The client's address. */
  remoteAddr: Deno.NetAddr;
  /** The handler's callbacks. */
  handler: SocketHandler;
  /** What the handler knows of its worker. */
  context: HandlerContext;
  /** The worker's frames to the main thread. */
  writer: FrameWriter;
  /** Called once when the worker is done with the connection. */
  forget: () => void;
}

/** A connection served from frames. */
export class RelayedSocket extends ServedSocket {
  #writer: FrameWriter;
  #forget: () => void;
  /** Input not yet delivered: the handler was not accepting when it came. */
  #pending: Uint8Array[] = [];
  /** The client half-closed (after `#pending`). */
  #eof = false;
  /** Bytes delivered to the handler and not yet acknowledged to the main thread. */
  #consumed = 0;
  /** Bytes sent to the main thread and not yet acknowledged as written. */
  #outstanding = 0;
  /** Output past the window, waiting for credit (copies). */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** The handler ended: END goes once `#held` is empty. */
  #ending = false;
  #gone = false;

  /** @param options Identity, handler, and the frames to the main thread. */
  constructor(options: RelayedSocketOptions) {
    super(options);
    this.#writer = options.writer;
    this.#forget = options.forget;
  }

  /** Opens the connection to the handler. */
  start(): void {
    this.opened();
  }

  /** Bytes written and not yet acknowledged by the main thread (or still held here). */
  get buffered(): number {
    return this.#outstanding + this.#heldBytes;
  }

  /**
   * A `DATA` frame: lent to the handler at once if it accepts input, else kept.
   *
   * @param bytes The payload, viewing the batch (or, `owned`, a buffer of its own).
   * @param owned Whether the payload is alone in its buffer.
   * @returns Whether `bytes` is still in use after this returns (kept for later, or lent to a
   *   `data` call whose promise is pending): its buffer must not be reused yet.
   */
  receiveData(bytes: Uint8Array, owned: boolean): boolean {
    if (this.#gone) return false;
    if (this.ended) {
      // The handler is done: drop, but give the credit back so the main thread keeps reading.
      this.#consumed += bytes.length;
      this.#acknowledgeInput();
      return false;
    }
    if (this.#pending.length === 0 && this.accepting) {
      this.#deliver(bytes);
      return this.lentHeld;
    }
    // Kept for later: a payload that fills a buffer of its own as it is; any other is copied
    // out, so that what a paused connection holds is its bytes, not the buffers they came in.
    const whole = owned && bytes.byteLength === bytes.buffer.byteLength;
    this.#pending.push(whole ? bytes : bytes.slice());
    return whole;
  }

  /** An `EOF` frame: the client half-closed. */
  receiveEof(): void {
    if (this.#gone) return;
    this.#eof = true;
    if (this.#pending.length === 0 && this.accepting) this.receiveEnd();
  }

  /**
   * An `ACK` frame: the main thread has written `bytes` more of the output.
   *
   * @param bytes How many.
   */
  acknowledge(bytes: number): void {
    if (this.#gone) return;
    this.#outstanding -= bytes;
    this.#release();
  }

  /**
   * A `CLOSE` frame: the main thread closed the connection (reset, timeout, shutdown).
   *
   * @param reason Why.
   */
  closedFromOutside(reason: CloseReason): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#pending = [];
    this.#held = [];
    this.#heldBytes = 0;
    this.#forget();
    this.closedBecause(reason);
  }

  protected get highWater(): number {
    return WINDOW;
  }

  protected send(bytes: Uint8Array): number {
    if (this.#heldBytes > 0 || this.#outstanding >= WINDOW) {
      // Past the window: wait here for credit, rather than in the main thread's memory.
      this.#held.push(bytes.slice());
      this.#heldBytes += bytes.length;
      return this.#outstanding + this.#heldBytes;
    }
    this.#frame(bytes);
    return this.#outstanding;
  }

  protected endOutput(): void {
    this.#ending = true;
    this.#pending = [];
    if (this.#heldBytes === 0) this.#end();
  }

  protected abort(reason: CloseReason): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#writer.control(Frame.ABORT, this.id, reasonCode(reason));
    this.#forget();
    this.closedBecause(reason);
  }

  protected resumeInput(): void {
    while (this.#pending.length > 0 && this.accepting) this.#deliver(this.#pending.shift()!);
    if (this.#eof && this.#pending.length === 0 && this.accepting) this.receiveEnd();
  }

  #deliver(bytes: Uint8Array): void {
    this.#consumed += bytes.length;
    this.receive(bytes);
    this.#acknowledgeInput();
  }

  #acknowledgeInput(): void {
    if (
      this.#consumed >= ACK_THRESHOLD ||
      (this.#consumed >= EAGER_ACK_THRESHOLD && this.#pending.length === 0)
    ) {
      this.#writer.control(Frame.ACK, this.id, this.#consumed);
      this.#consumed = 0;
    }
  }

  /** Sends output held for credit, as far as the window allows; reports a drain. */
  #release(): void {
    while (this.#held.length > 0 && this.#outstanding < WINDOW) {
      const chunk = this.#held.shift()!;
      this.#heldBytes -= chunk.length;
      this.#frame(chunk);
    }
    if (this.#heldBytes > 0) return;
    if (this.#ending) {
      this.#end();
      return;
    }
    if (this.#outstanding < WINDOW) this.outputDrained();
  }

  #frame(bytes: Uint8Array): void {
    this.#outstanding += bytes.length;
    // Large chunks move as a buffer of their own (the caller keeps its bytes, so move a copy);
    // copies of bulk size go in a bulk-size buffer, which the main thread then reuses for reading.
    if (bytes.length >= ATTACH_THRESHOLD) {
      const bulk = bytes.length > BULK_BUFFER_SIZE / 2 && bytes.length <= BULK_BUFFER_SIZE;
      const copy = bulk ? new Uint8Array(bulkBuffers.take()) : new Uint8Array(bytes.length);
      copy.set(bytes);
      this.#writer.attach(this.id, copy.buffer, bytes.length);
    } else this.#writer.data(this.id, bytes);
  }

  /** Everything is handed to the main thread: it flushes, then closes the connection. */
  #end(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#writer.control(Frame.END, this.id);
    this.#forget();
    this.closedBecause("done");
  }
}
