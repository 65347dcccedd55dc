/**
 * The Web Streams view of a connection: runs a {@linkcode Handler} (a function given a
 * `ReadableStream` / `WritableStream` pair) on top of the byte-level contract, as a
 * {@linkcode SocketHandler}. Both dispatch modes serve Web Streams handlers through it, so there
 * is one transport per mode and two views of it.
 *
 * Runs inside a worker only.
 *
 * How the streams map onto the socket:
 * - Reading: the readable is pull-based with no queue of its own (`highWaterMark: 0`). Each
 *   chunk the socket lends is copied (a handler may keep its chunks; small copies share a slab,
 *   see `copyBytes`) and enqueued; once a chunk waits unread, the socket is paused, and the next
 *   pull resumes it. A handler that stops reading stops the socket being read: backpressure
 *   with no buffer here.
 * - Writing: the sink hands each chunk to `socket.write` (sent at once, or copied); past the
 *   socket's high-water mark the sink waits for `drain`, so an awaited `write()` waits for a
 *   slow reader. Un-awaited writes wait in the stream, capped by `OutputGuard`.
 * - Ending: the handler returning (or closing the writable) ends the socket gracefully, after
 *   everything written, awaited or not; a throw closes it at once (`handler-error`).
 *
 * @module
 */

import type {
  Connection,
  Handler,
  HandlerLog,
  Socket,
  SocketHandler,
} from "../handlers/handler.ts";
import { copyBytes } from "../handlers/bytes.ts";
import { OutputGuard } from "./output_guard.ts";
import type { ServedSocket } from "./served_socket.ts";

/**
 * The error a connection's streams fail with once the connection is closed from outside
 * (reset, timeout, shutdown): one object, so that the worker can tell it from a handler's bug.
 */
export const CLOSED: Error = new Error("Connection closed");

/**
 * Serves a Web Streams handler over the byte-level contract.
 *
 * @param handler The Web Streams handler.
 * @returns Callbacks that give each connection its streams and run `handler` on them.
 */
export function streamsView(handler: Handler): SocketHandler<StreamsConnection> {
  return {
    open(socket) {
      const connection = new StreamsConnection(socket as ServedSocket, handler);
      socket.data = connection;
      connection.run();
    },
    data(socket, bytes) {
      socket.data.push(bytes);
    },
    end(socket) {
      socket.data.pushEnd();
    },
    drain(socket) {
      socket.data.drained();
    },
    close(socket) {
      socket.data?.closed();
    },
  };
}

/** One connection's streams, and the run of its handler. */
class StreamsConnection {
  /** What the handler sees. */
  readonly view: Connection;
  #socket: ServedSocket;
  #handler: Handler;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  /** The readable has ended (EOF, cancelled, errored). */
  #readableDone = false;
  /** The sink waits for the socket's `drain`. */
  #waiting: { resolve: () => void; reject: (error: Error) => void } | undefined;
  /** Made on first use of `signal`: most handlers never look, and it costs memory. */
  #abort: AbortController | undefined;
  #guard: OutputGuard;

  constructor(socket: ServedSocket, handler: Handler) {
    this.#socket = socket;
    this.#handler = handler;
    const readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => socket.resume(),
      cancel: () => {
        this.#readableDone = true;
        socket.pause(); // nobody reads: let TCP hold the client back
      },
    }, { highWaterMark: 0 });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: () => socket.end(),
      abort: (reason) => socket.fail(reason ?? new Error("writable aborted")),
    }, OutputGuard.strategy());
    this.#guard = new OutputGuard(writable, socket);
    const signal = () => this.#signal();
    this.view = {
      id: socket.id,
      remoteAddr: socket.remoteAddr,
      readable,
      writable,
      get signal() {
        return signal();
      },
      get log(): HandlerLog {
        return socket.log;
      },
      get outputLimit() {
        return socket.outputLimit;
      },
      set outputLimit(bytes: number) {
        socket.outputLimit = bytes;
      },
    };
  }

  /** Runs the handler to its end, then ends the socket the way its outcome says. */
  async run(): Promise<void> {
    try {
      await this.#handler(this.view, this.#socket.context);
      await this.#guard.finish();
    } catch (error) {
      // Errors caused by the connection closing under the handler are not the handler's fault.
      if (!this.#socket.closed) this.#socket.fail(error);
      return;
    }
    this.#socket.end();
  }

  /** Bytes from the client (lent: copied, since a handler may keep its chunks). */
  push(bytes: Uint8Array): void {
    if (this.#readableDone) return;
    const controller = this.#controller;
    controller.enqueue(copyBytes(bytes));
    // A chunk now waits unread: read no more until the handler pulls.
    if (controller.desiredSize! < 0) this.#socket.pause();
  }

  /** The client half-closed. */
  pushEnd(): void {
    if (this.#readableDone) return;
    this.#readableDone = true;
    this.#controller.close();
  }

  /** The socket's output has drained: a waiting write may go on. */
  drained(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.resolve();
  }

  /** The connection is gone: whatever waits on the streams fails with {@linkcode CLOSED}. */
  closed(): void {
    if (this.#abort !== undefined && !this.#abort.signal.aborted) this.#abort.abort(CLOSED);
    if (!this.#readableDone) {
      this.#readableDone = true;
      this.#controller.error(CLOSED);
    }
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(CLOSED);
  }

  #write(chunk: Uint8Array): Promise<void> | void {
    const socket: Socket = this.#socket;
    if (socket.closed) throw CLOSED;
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError("Handlers must write Uint8Array chunks");
    }
    if (chunk.length === 0 || socket.write(chunk)) return;
    if (socket.closed) throw CLOSED;
    // Past the high-water mark: the next chunk waits until the client has read.
    return new Promise((resolve, reject) => this.#waiting = { resolve, reject });
  }

  #signal(): AbortSignal {
    this.#abort ??= new AbortController();
    if (this.#socket.closed && !this.#abort.signal.aborted) this.#abort.abort(CLOSED);
    return this.#abort.signal;
  }
}
