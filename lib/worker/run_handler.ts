/**
 * Runs the protocol handler on one connection and ends the connection the way its outcome
 * says: gracefully when it returns, at once when it throws. The same for every dispatch mode.
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { Connection, Handler, HandlerContext, HandlerLog } from "../handlers/handler.ts";
import { getLog } from "../shared/log.ts";
import { connectionLog } from "./handler_log.ts";
import type { OutputGuard } from "./output_guard.ts";

/**
 * The error a connection's streams fail with once the connection is closed from outside
 * (reset, timeout, shutdown): one object, so that the worker can tell it from a handler's bug.
 */
export const CLOSED: Error = new Error("Connection closed");

/**
 * The `Connection` a handler sees, the same in both dispatch modes: the streams and address as
 * given, and the parts most handlers never touch (signal, log) made on first use.
 *
 * @param parts The connection's id, address and streams; its signal, made when asked; the
 *   guard of its output, which holds `outputLimit`.
 * @returns The view.
 */
export function connectionView(parts: {
  id: number;
  remoteAddr: Deno.NetAddr;
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  signal: () => AbortSignal;
  guard: OutputGuard;
}): Connection {
  const { id, remoteAddr, readable, writable, signal, guard } = parts;
  let log: HandlerLog | undefined;
  return {
    id,
    remoteAddr,
    readable,
    writable,
    get signal() {
      return signal();
    },
    get log() {
      return log ??= connectionLog(id);
    },
    get outputLimit() {
      return guard.limit;
    },
    set outputLimit(bytes: number) {
      guard.limit = bytes;
    },
  };
}

/** What {@linkcode runHandler} needs of a connection, in either dispatch mode. */
export interface HandledConnection {
  /** Server-wide id, for the log. */
  readonly id: number;
  /** What the handler sees. */
  readonly view: Connection;
  /** Whether the connection was closed from outside (not the handler's doing). */
  readonly closed: boolean;
  /** Closes the writable if the handler left it open, so that queued writes are sent. */
  closeWritable(): Promise<void>;
  /** The handler is done: flush and close (`failed`: close at once). */
  finish(failed: boolean): void;
}

/**
 * Runs `handler` on `connection` to the end, logging a failure that was the handler's own.
 *
 * @param handler The protocol handler.
 * @param connection The connection.
 * @param context What the handler knows of its worker.
 * @returns When the handler has finished and the connection is ending.
 */
export async function runHandler(
  handler: Handler,
  connection: HandledConnection,
  context: HandlerContext,
): Promise<void> {
  let failed = false;
  try {
    await handler(connection.view, context);
    await connection.closeWritable();
  } catch (error) {
    // Errors caused by the connection closing under the handler are not the handler's fault.
    if (!connection.closed) {
      failed = true;
      getLog().warn("Connection {id}: handler failed: {error}", {
        id: connection.id,
        error: (error as Error)?.message ?? String(error),
      });
    }
  }
  connection.finish(failed);
}
