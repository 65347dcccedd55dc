/**
 * The TLS step of admitting a connection, the same in both dispatch modes: run the handshake,
 * or count the failure and say so (at most one line a second: a scanner or a plain-text client
 * can cause failures at will).
 *
 * Runs on whichever thread owns the sockets.
 *
 * @module
 */

import { remoteText } from "./address.ts";
import { Counter, type SlotCounters } from "../threads/counters.ts";
import type { RateLimitedLog } from "./rate_limited_log.ts";
import { type TlsServerConn, type TlsTerminator } from "./tls_socket.ts";

/**
 * Upgrades an admitted connection to TLS.
 *
 * @param terminator The TLS settings in force.
 * @param conn The accepted connection.
 * @param initial Bytes read past a PROXY header: the start of the handshake.
 * @param report Where a failure is counted and logged.
 * @returns The decrypted connection, or undefined if the handshake failed (`conn` is closed).
 */
export async function handshake(
  terminator: TlsTerminator,
  conn: Deno.TcpConn,
  initial: Uint8Array | undefined,
  report: { counters: SlotCounters; log: RateLimitedLog },
): Promise<TlsServerConn | undefined> {
  const addr = remoteText(conn);
  try {
    return await terminator.upgrade(conn, initial);
  } catch (error) {
    report.counters.add(Counter.tlsHandshakeFailures);
    report.log.warn("tls", "TLS handshake with {addr} failed: {reason}", {
      addr,
      reason: (error as Error).message,
    });
    return undefined;
  }
}
