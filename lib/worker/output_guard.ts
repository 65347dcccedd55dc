/**
 * Keeps a Web Streams handler's output honest whatever the handler does with its writer:
 * everything it wrote is sent when it returns, awaited or not, and output it queues without
 * waiting for the client is capped (`Connection.outputLimit`, the role of Redis's client output
 * buffer limit).
 *
 * Runs inside a worker only, for the Web Streams view (`streams_view.ts`) in both dispatch modes.
 *
 * How: the connection's `WritableStream` counts queued bytes (a byte-length strategy whose
 * high-water mark of 1 keeps the usual backpressure: `ready` waits while anything is queued),
 * and `getWriter()` is wrapped so that each `write()` checks first what waits (in the stream,
 * and in the socket below it) and the guard knows the writer, whose `close()` it can await after
 * the handler returns. `pipeTo()` respects backpressure by itself and needs none of this.
 *
 * @module
 */

/** What the guard needs of the socket under the stream. */
export interface GuardedSocket {
  /** Bytes written to the socket and not yet taken. */
  readonly buffered: number;
  /** Most bytes that may wait. */
  readonly outputLimit: number;
  /** Closes the connection for waiting output past the limit (logged, counted). */
  overflow(waiting: number): void;
}

/** Guards one connection's writable. */
export class OutputGuard {
  #writable: WritableStream<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #socket: GuardedSocket;

  /** The queuing strategy a guarded `WritableStream` must be created with. */
  static strategy(): QueuingStrategy<Uint8Array> {
    return new ByteLengthQueuingStrategy({ highWaterMark: 1 });
  }

  /**
   * @param writable The connection's writable, created with {@linkcode OutputGuard.strategy}.
   * @param socket The socket it writes to.
   */
  constructor(writable: WritableStream<Uint8Array>, socket: GuardedSocket) {
    this.#writable = writable;
    this.#socket = socket;
    const getWriter = writable.getWriter.bind(writable);
    Object.defineProperty(writable, "getWriter", {
      configurable: true,
      writable: true,
      value: () => this.#wrap(getWriter()),
    });
  }

  /**
   * After the handler has returned: closes the writable if the handler did not, and waits
   * until everything written, awaited or not, has been handed to the socket.
   *
   * @returns When the output is complete.
   * @throws {Error} The stream's error if the connection closed first.
   */
  async finish(): Promise<void> {
    const writable = this.#writable;
    if (!writable.locked) {
      await writable.close();
      return;
    }
    const writer = this.#writer;
    // Locked by a pipe the handler did not wait for: the pipe closes the stream when it ends.
    if (writer === undefined) return;
    try {
      await writer.close();
    } catch {
      // The handler closed it already (close() then rejects): wait for that close instead.
      await writer.closed;
    }
  }

  #wrap(writer: WritableStreamDefaultWriter<Uint8Array>): WritableStreamDefaultWriter<Uint8Array> {
    this.#writer = writer;
    const write = writer.write.bind(writer);
    writer.write = (chunk?: Uint8Array): Promise<void> => {
      // desiredSize is 1 minus the bytes queued (in flight included); null once the stream has
      // errored (the connection is closed already, and the write rejects by itself). A write
      // with nothing waiting never trips the limit, however large: a backlog is what waits.
      const desired = writer.desiredSize;
      const queued = (desired === null ? 0 : 1 - desired) + this.#socket.buffered;
      const size = chunk?.byteLength ?? 0;
      if (queued > 0 && queued + size > this.#socket.outputLimit) {
        this.#socket.overflow(queued + size);
      }
      return write(chunk);
    };
    return writer;
  }
}
