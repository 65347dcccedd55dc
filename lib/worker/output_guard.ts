/**
 * Keeps a handler's output honest whatever the handler does with its writer: everything it
 * wrote is sent when it returns, awaited or not, and output it queues without waiting for the
 * client is capped (the role of Redis's client output buffer limit).
 *
 * Runs inside a worker only, for both dispatch modes.
 *
 * How: the connection's `WritableStream` counts queued bytes (a byte-length strategy whose
 * high-water mark of 1 keeps the usual backpressure: `ready` waits while anything is queued),
 * and `getWriter()` is wrapped so that each `write()` checks the queue first and the guard knows
 * the writer, whose `close()` it can await after the handler returns. `pipeTo()` respects
 * backpressure by itself and needs none of this.
 *
 * @module
 */

import { getLog } from "../shared/log.ts";

/** Most bytes a connection's handler may have queued and not yet sent, by default. */
export const OUTPUT_LIMIT: number = 16 * 1024 * 1024;

/** The queuing strategy a guarded `WritableStream` must be created with. */
export function outputStrategy(): QueuingStrategy<Uint8Array> {
  return new ByteLengthQueuingStrategy({ highWaterMark: 1 });
}

/** Guards one connection's writable. */
export class OutputGuard {
  #writable: WritableStream<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #id: number;
  /** Most queued bytes; the handler may change it (`Connection.outputLimit`). */
  limit: number;
  #onOverflow: () => void;
  #overflowed = false;

  /**
   * @param writable The connection's writable, created with {@linkcode outputStrategy}.
   * @param id The connection's id, for the log.
   * @param onOverflow Called once, after the warning is logged, when a write would take the queue
   *   past `limit`; it closes the connection (counted as `output-overflow`).
   * @param limit Most queued bytes.
   */
  constructor(
    writable: WritableStream<Uint8Array>,
    id: number,
    onOverflow: () => void,
    limit: number = OUTPUT_LIMIT,
  ) {
    this.#writable = writable;
    this.#id = id;
    this.#onOverflow = onOverflow;
    this.limit = limit;
    const getWriter = writable.getWriter.bind(writable);
    Object.defineProperty(writable, "getWriter", {
      configurable: true,
      writable: true,
      value: () => this.#wrap(getWriter()),
    });
  }

  /** Bytes the handler has written through its writer and the socket has not yet taken. */
  get queued(): number {
    const desired = this.#writer?.desiredSize;
    return desired === undefined || desired === null ? 0 : Math.max(0, 1 - desired);
  }

  /**
   * After the handler has returned: closes the writable if the handler did not, and waits
   * until everything written, awaited or not, has been taken by the socket.
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
      const limit = this.limit;
      // desiredSize is 1 minus the bytes queued (in flight included); null once the stream has
      // errored (the connection is closed already, and the write rejects by itself). A write
      // with nothing waiting never trips the limit, however large: a backlog is what waits.
      const desired = writer.desiredSize;
      const queued = desired === null ? 0 : 1 - desired;
      if (queued > 0 && queued + (chunk?.byteLength ?? 0) > limit) {
        this.#overflow(queued + (chunk?.byteLength ?? 0));
      }
      return write(chunk);
    };
    return writer;
  }

  #overflow(queued: number): void {
    if (this.#overflowed) return;
    this.#overflowed = true;
    getLog().warning(
      "Connection {id}: more than {limit} B of output wait for the client ({queued} B: it does " +
        "not read, or the handler does not wait for its writes); closing",
      { id: this.#id, limit: this.limit, queued },
    );
    this.#onOverflow();
  }
}
