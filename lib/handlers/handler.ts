/**
 * The contract between the server and a protocol: what a handler receives for each connection.
 *
 * Handlers run inside a worker, one call per connection, many at once on the worker's event
 * loop. Echo (`echo.ts`) is the built-in one.
 *
 * @module
 */

/** One client connection, as a protocol handler sees it. */
export interface Connection {
  /** Server-wide id of the connection, as in the logs. */
  readonly id: number;
  /** The client's address (IPv4-mapped IPv6 addresses are shown as IPv4). */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * Bytes from the client. Ends when the client shuts its write side (half-close); errors when
   * the connection is closed from outside (reset, timeout, shutdown, worker loss). Reading
   * slowly is fine: the server then stops reading from the socket (backpressure).
   */
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * Bytes to the client. Writes wait while the client is slow to read. Closing it (or returning
   * from the handler) sends what was written, then closes the connection.
   */
  readonly writable: WritableStream<Uint8Array>;
  /** Aborted when the connection is closed from outside; the reason says why. */
  readonly signal: AbortSignal;
}

/**
 * Serves one connection until it ends. Returning (or resolving) ends the connection gracefully;
 * throwing (or rejecting) closes it at once and is logged as a handler error.
 *
 * @example A handler that upper-cases what it receives
 * ```ts
 * import type { Handler } from "./handler.ts";
 * export const upper: Handler = async ({ readable, writable }) => {
 *   await readable
 *     .pipeThrough(new TextDecoderStream())
 *     .pipeThrough(new TransformStream({ transform: (s, c) => c.enqueue(s.toUpperCase()) }))
 *     .pipeThrough(new TextEncoderStream())
 *     .pipeTo(writable);
 * };
 * ```
 */
export type Handler = (connection: Connection) => void | Promise<void>;
