/**
 * The accept loop every listener of the server runs: it survives a shortage of descriptors
 * (EMFILE) by backing off and retrying, as memcached does, instead of ending like
 * `for await (const conn of listener)` would.
 *
 * Runs on whichever thread owns the listener: the main thread in `main` dispatch, each worker in
 * `kernel` dispatch.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { errorReason } from "./address.ts";

/** After a failed accept (such as EMFILE), wait this long before the next, as memcached does. */
export const ACCEPT_BACKOFF_MS = 10;

/** Options for {@linkcode acceptLoop}. */
export interface AcceptLoopOptions {
  /** Called with each accepted connection. */
  onConnection: (conn: Deno.TcpConn) => void;
  /** Called for each failed `accept()` (descriptor shortage and the like), for counting. */
  onFailure: () => void;
  /** Called when the peer reset or abandoned its connection before it was accepted. */
  onPeerAbort?: () => void;
  /** True once the listener is being closed on purpose: the loop then ends quietly. */
  stopping: () => boolean;
  /** Where failures are reported (at most one warning line a second). */
  log: Logger;
}

/**
 * Accepts connections until the listener is closed.
 *
 * @param listener The listener.
 * @param options Callbacks.
 * @returns When the listener has been closed.
 */
export async function acceptLoop(
  listener: Deno.TcpListener,
  options: AcceptLoopOptions,
): Promise<void> {
  let lastWarning = -Infinity;
  let failures = 0;
  while (!options.stopping()) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (options.stopping() || error instanceof Deno.errors.BadResource) return;
      if (_isPeerAbort(error)) {
        options.onPeerAbort?.();
        // The client gave up between its handshake and our accept (a reset, a load
        // balancer's health check): nothing is wrong here, accept the next one at once.
        options.log.debug("Accept failed: {reason}", { reason: errorReason(error) });
        continue;
      }
      options.onFailure();
      failures++;
      // EMFILE repeats every few milliseconds: one line a second is enough.
      const now = performance.now();
      if (now - lastWarning >= 1000) {
        lastWarning = now;
        options.log.warning("Accept failed: {reason} ({count} failed so far); retrying", {
          reason: errorReason(error),
          count: failures,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, ACCEPT_BACKOFF_MS));
      continue;
    }
    options.onConnection(conn);
  }
}

/** Accept errors caused by the peer, not by a lack of resources here. */
function _isPeerAbort(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected;
}
