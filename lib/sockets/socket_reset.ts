/**
 * Closing a TCP connection with a reset (RST) instead of a FIN, for connections the server cuts
 * while input or output is still pending: a FIN after a short echo looks like a complete answer,
 * a reset tells the client that it is not.
 *
 * Deno 2.9.6 has no `SO_LINGER` (and `node:net`'s `resetAndDestroy` does not reach a socket
 * accepted with `Deno.listen`), so this sets it through libc (`libc.ts`): linger on, zero
 * seconds, then close, which is how every C server sends a reset. Where that is unavailable
 * (another platform, or `--allow-ffi` withheld), the socket is closed normally: Linux still
 * resets it when unread input is left, but pending output may then end in a FIN.
 *
 * Used on whichever thread owns the socket.
 *
 * @module
 */

import { closeQuietly } from "./address.ts";
import { lingerZero } from "./libc.ts";

/**
 * Closes `conn` with a reset: unsent output is discarded and the peer sees "connection reset".
 * Falls back to a plain close where a reset cannot be requested.
 *
 * @param conn The connection; closed when this returns.
 * @returns Whether a reset was requested (false: closed normally).
 */
export function resetAndClose(conn: { close(): void }): boolean {
  const reset = lingerZero(conn);
  // A connection whose close() ends gracefully (TLS: close_notify) has abort() for this.
  const abortable = conn as { abort?: () => void };
  if (typeof abortable.abort === "function") abortable.abort();
  else closeQuietly(conn);
  return reset;
}
