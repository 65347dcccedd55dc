/**
 * Binding the server's address: the default host `::` (IPv4 and IPv6 on Linux), falling back to
 * IPv4 alone where IPv6 is unavailable, with one-line errors.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { errorReason, formatAddr } from "../sockets/address.ts";

/** Listening failed: port in use, permission denied, bad address. The message is one line. */
export class ListenError extends Error {
  /**
   * @param message One line naming the address and the reason.
   * @param options The underlying error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}

/** Options for {@linkcode listenTcp}. */
export interface ListenOptions {
  /** Address; `undefined` means every interface, IPv6 and IPv4. */
  host: string | undefined;
  /** Port; 0 picks a free one. */
  port: number;
  /**
   * Set `SO_REUSEPORT`, so that worker listeners can share the port (`kernel` dispatch).
   * @default {false}
   */
  reusePort?: boolean;
  /** Where the IPv4 fallback is reported. */
  log: Logger;
}

/**
 * Listens on TCP.
 *
 * @param options Address and socket options.
 * @returns The listener.
 * @throws {ListenError} If the address cannot be listened on.
 */
export function listenTcp(options: ListenOptions): Deno.TcpListener {
  const { host, port, log } = options;
  const reusePort = options.reusePort ?? false;
  const listen = (hostname: string) =>
    Deno.listen({ hostname, port, transport: "tcp", ...(reusePort ? { reusePort } : {}) });
  let failure: unknown;
  try {
    return listen(host ?? "::");
  } catch (error) {
    failure = error;
  }
  // Default host on a machine without IPv6: fall back to IPv4 only.
  if (host === undefined && !_isAddressError(failure)) {
    try {
      const listener = listen("0.0.0.0");
      log.warning("IPv6 unavailable ({reason}); listening on IPv4 only", {
        reason: errorReason(failure),
      });
      return listener;
    } catch (error) {
      failure = error;
    }
  }
  throw new ListenError(
    `Cannot listen on ${formatAddr(host ?? "::", port)}: ${errorReason(failure)}`,
    { cause: failure },
  );
}

/**
 * Checks that the address is free, without holding it: binds it without `SO_REUSEPORT` (which
 * fails on any listener there, a sharing one included) and closes at once. The server binds
 * for real once its workers are ready, so that it never accepts connections that nobody serves
 * yet, and reports a port in use only after the handler has loaded (a handler that cannot load
 * is the error to report first).
 *
 * @param options Address (`reusePort` is ignored).
 * @returns The address as bound: the real port when 0 was asked for, and the host the IPv4
 *   fallback chose, for the real bind to use.
 * @throws {ListenError} If the address is in use or cannot be listened on.
 */
export function probeAddress(options: ListenOptions): Deno.NetAddr {
  let listener: Deno.TcpListener;
  try {
    listener = listenTcp({ ...options, reusePort: false });
  } catch (error) {
    if (!(error instanceof ListenError) || !(error.cause instanceof Deno.errors.AddrInUse)) {
      throw error;
    }
    throw new ListenError(
      `${error.message} (to take over from an echoserver on this port, start with --join)`,
      { cause: error.cause },
    );
  }
  const addr = listener.addr;
  listener.close();
  return addr;
}

function _isAddressError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}
