/**
 * The `main` dispatch adapter inside a worker: turns the frames arriving from the main thread into
 * one Web Streams pair per connection, runs the protocol handler on each, and sends the handler's
 * output back as frames. The sockets themselves stay on the main thread.
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { Connection, Handler, HandlerContext } from "../handlers/handler.ts";
import {
  ABORT_OUTPUT_OVERFLOW,
  ACK_THRESHOLD,
  ATTACH_THRESHOLD,
  BULK_BUFFER_SIZE,
  EAGER_ACK_THRESHOLD,
  Frame,
  FrameWriter,
  readFrames,
  WINDOW,
} from "../shared/channel.ts";
import type { FromWorker } from "../shared/messages.ts";
import { MemoryReclaimer } from "../shared/reclaim.ts";
import { OutputGuard, outputStrategy } from "./output_guard.ts";
import { CLOSED, connectionView, type HandledConnection, runHandler } from "./run_handler.ts";

/** Sends a message to the main thread, transferring the listed buffers. */
export type PostToMain = (message: FromWorker, transfer: Transferable[]) => void;

/** Runs handlers for the connections that the main thread assigns to this worker. */
export class ChannelRuntime {
  #handler: Handler;
  #context: HandlerContext;
  #writer: FrameWriter;
  #connections = new Map<number, WorkerConnection>();
  #reclaimer = new MemoryReclaimer(() => this.#connections.size);

  /**
   * @param handler The protocol handler.
   * @param context What the handler knows of its worker.
   * @param post Sends a batch to the main thread.
   */
  constructor(handler: Handler, context: HandlerContext, post: PostToMain) {
    this.#handler = handler;
    this.#context = context;
    this.#writer = new FrameWriter((buffer, length, attached, done) => {
      post({ type: "frames", buffer, length, attached, done }, [buffer, ...attached]);
    });
  }

  /**
   * Handles a batch of frames from the main thread.
   *
   * @param buffer The batch.
   * @param length Bytes of frames in it.
   * @param attached Its transferred payload buffers.
   */
  receive(buffer: ArrayBuffer, length: number, attached: ArrayBuffer[]): void {
    // The main thread holds its next batch until this one is done: say so in this turn's batch.
    this.#writer.markDone();
    readFrames(buffer, length, attached, (kind, id, value, payload) => {
      if (kind === Frame.OPEN) {
        this.#open(id, payload!);
        return;
      }
      // Frames for a connection that has already finished here are stale: drop them.
      const connection = this.#connections.get(id);
      if (connection === undefined) return;
      switch (kind) {
        case Frame.DATA:
          connection.receive(payload!);
          break;
        case Frame.EOF:
          connection.receiveEof();
          break;
        case Frame.ACK:
          connection.acknowledge(value);
          break;
        case Frame.CLOSE:
          connection.closeFromOutside();
          this.#forget(id);
          break;
        default:
          throw new RangeError(`Unexpected frame kind ${kind} from the main thread`);
      }
    });
  }

  #open(id: number, payload: Uint8Array): void {
    const remoteAddr = JSON.parse(new TextDecoder().decode(payload)) as Deno.NetAddr;
    const connection = new WorkerConnection(
      id,
      remoteAddr,
      this.#writer,
      () => this.#forget(id),
    );
    this.#connections.set(id, connection);
    this.#reclaimer.update();
    this.#serve(connection);
  }

  async #serve(connection: WorkerConnection): Promise<void> {
    await runHandler(this.#handler, connection, this.#context);
    this.#forget(connection.id);
  }

  #forget(id: number): void {
    if (this.#connections.delete(id)) this.#reclaimer.update();
  }
}

/** A connection's state inside the worker: its streams and its flow-control counters. */
class WorkerConnection implements HandledConnection {
  readonly id: number;
  readonly view: Connection;
  #writer: FrameWriter;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  /** Received bytes not yet read by the handler; bounded by the main thread's window. */
  #pending: Uint8Array[] = [];
  /** The handler is waiting in `read()` with nothing pending. */
  #waiting = false;
  #eof = false;
  #readableDone = false;
  /** Bytes read by the handler but not yet acknowledged to the main thread. */
  #consumed = 0;
  /** Bytes sent to the main thread and not yet written to the socket. */
  #outstanding = 0;
  #drained: (() => void) | undefined;
  #ended = false;
  /** Created on first use of `signal`: most handlers never look, and it costs memory. */
  #abort: AbortController | undefined;
  #closed = false;
  #guard: OutputGuard;
  #forget: () => void;

  constructor(id: number, remoteAddr: Deno.NetAddr, writer: FrameWriter, forget: () => void) {
    this.id = id;
    this.#writer = writer;
    this.#forget = forget;
    const readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#deliver(),
      cancel: () => {
        this.#readableDone = true;
        this.#pending = [];
      },
    }, { highWaterMark: 0 });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#send(chunk),
      close: () => this.#end(Frame.END),
      abort: () => this.#end(Frame.ABORT),
    }, outputStrategy());
    this.#guard = new OutputGuard(writable, id, () => this.#overflow());
    this.view = connectionView({
      id,
      remoteAddr: remoteAddr,
      readable,
      writable,
      signal: () => this.#signal(),
      guard: this.#guard,
    });
  }

  #signal(): AbortSignal {
    this.#abort ??= new AbortController();
    if (this.#closed && !this.#abort.signal.aborted) this.#abort.abort(CLOSED);
    return this.#abort.signal;
  }

  /** Whether the connection was closed from outside (the main thread said so). */
  get closed(): boolean {
    return this.#closed;
  }

  receive(bytes: Uint8Array): void {
    if (this.#readableDone) return;
    // A chunk that will wait views a batch that may carry other connections' bytes too: keep a
    // copy of its own size instead of the whole batch.
    if (!this.#waiting && bytes.byteLength * 2 < bytes.buffer.byteLength) bytes = bytes.slice();
    this.#pending.push(bytes);
    if (this.#waiting) this.#deliver();
  }

  receiveEof(): void {
    this.#eof = true;
    if (this.#waiting) this.#deliver();
  }

  acknowledge(bytes: number): void {
    this.#outstanding -= bytes;
    if (this.#outstanding < WINDOW && this.#drained !== undefined) {
      this.#drained();
      this.#drained = undefined;
    }
  }

  closeFromOutside(): void {
    if (this.closed) return;
    const reason = CLOSED;
    this.#closed = true;
    this.#abort?.abort(reason);
    this.#pending = [];
    if (!this.#readableDone) {
      this.#readableDone = true;
      this.#controller.error(reason);
    }
    this.#drained?.();
    this.#drained = undefined;
  }

  /** Sends everything the handler wrote, awaited or not, then closes the writable. */
  async closeWritable(): Promise<void> {
    if (!this.#ended) await this.#guard.finish();
  }

  /** Tells the main thread the handler is done, unless its writable already did. */
  finish(failed: boolean): void {
    this.#end(failed ? Frame.ABORT : Frame.END);
  }

  #deliver(): void {
    if (this.#readableDone) return;
    const chunk = this.#pending.shift();
    if (chunk === undefined) {
      if (this.#eof) {
        this.#readableDone = true;
        this.#controller.close();
      } else {
        this.#waiting = true;
      }
      return;
    }
    this.#waiting = false;
    this.#controller.enqueue(chunk);
    this.#consumed += chunk.length;
    if (
      this.#consumed >= ACK_THRESHOLD ||
      (this.#consumed >= EAGER_ACK_THRESHOLD && this.#pending.length === 0)
    ) {
      this.#writer.control(Frame.ACK, this.id, this.#consumed);
      this.#consumed = 0;
    }
  }

  #send(chunk: Uint8Array): Promise<void> | void {
    if (this.closed || this.#ended) throw CLOSED;
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError("Handlers must write Uint8Array chunks");
    }
    if (chunk.length === 0) return;
    // Large chunks move as their own buffer; the handler keeps its chunk, so move a copy. Copies
    // of bulk size go in a bulk-size buffer, which the main thread then reuses for reading.
    if (chunk.length >= ATTACH_THRESHOLD) {
      const size = chunk.length > BULK_BUFFER_SIZE / 2 && chunk.length <= BULK_BUFFER_SIZE
        ? BULK_BUFFER_SIZE
        : chunk.length;
      const copy = new Uint8Array(size);
      copy.set(chunk);
      this.#writer.attach(this.id, copy.buffer, chunk.length);
    } else this.#writer.data(this.id, chunk);
    this.#outstanding += chunk.length;
    // Backpressure: the handler's next write waits until the client has read enough.
    if (this.#outstanding >= WINDOW) {
      return new Promise((resolve) => this.#drained = resolve);
    }
  }

  #overflow(): void {
    if (this.#closed || this.#ended) return;
    this.#ended = true;
    this.#writer.control(Frame.ABORT, this.id, ABORT_OUTPUT_OVERFLOW);
    this.closeFromOutside();
    this.#forget();
  }

  #end(kind: typeof Frame.END | typeof Frame.ABORT): void {
    if (this.#ended) return;
    this.#ended = true;
    if (!this.closed) this.#writer.control(kind, this.id);
  }
}
