/**
 * Socket addresses and errors as a person reads them in logs and error lines.
 *
 * Used on both threads.
 *
 * @module
 */

/**
 * Formats a host and port as `host:port`, with IPv6 hosts in brackets.
 *
 * @param hostname Host name or address.
 * @param port Port number.
 * @returns Such as `127.0.0.1:5555` or `[::]:5555`.
 *
 * @example
 * ```ts
 * import { formatAddr } from "./address.ts";
 * import assert from "node:assert/strict";
 * assert.equal(formatAddr("::1", 5555), "[::1]:5555");
 * ```
 */
export function formatAddr(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * An address as a person reads it: IPv4-mapped IPv6 (`::ffff:127.0.0.1`) becomes IPv4.
 *
 * @param addr A socket address.
 * @returns The same address, with the mapping removed.
 *
 * @example
 * ```ts
 * import { displayAddr } from "./address.ts";
 * import assert from "node:assert/strict";
 * const addr = displayAddr({ transport: "tcp", hostname: "::ffff:127.0.0.1", port: 9 });
 * assert.equal(addr.hostname, "127.0.0.1");
 * ```
 */
export function displayAddr(addr: Deno.Addr): Deno.NetAddr {
  const net = addr as Deno.NetAddr;
  const hostname = net.hostname.startsWith("::ffff:") && net.hostname.includes(".")
    ? net.hostname.slice(7)
    : net.hostname;
  return { transport: "tcp", hostname, port: net.port };
}

/**
 * The remote address of a socket as `host:port`, or `unknown` if the socket is already gone.
 *
 * @param conn An accepted connection.
 * @returns Such as `127.0.0.1:40112`.
 */
export function remoteText(conn: Deno.Conn): string {
  try {
    const { hostname, port } = displayAddr(conn.remoteAddr);
    return formatAddr(hostname, port);
  } catch {
    return "unknown";
  }
}

/**
 * An error as one lower-case line for a log message, without Deno's "(os error N)" suffix.
 *
 * @param error Any thrown value.
 * @returns Such as `address already in use`.
 *
 * @example
 * ```ts
 * import { errorReason } from "./address.ts";
 * import assert from "node:assert/strict";
 * assert.equal(errorReason(new Error("Address in use (os error 98)")), "address in use");
 * ```
 */
export function errorReason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const line = (message.split("\n")[0] ?? message).replace(/\s*\(os error \d+\)$/, "");
  return line.charAt(0).toLowerCase() + line.slice(1);
}

/**
 * Closes a socket (or listener) that may already be closed.
 *
 * @param closable Anything with `close()`.
 */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Already closed.
  }
}
