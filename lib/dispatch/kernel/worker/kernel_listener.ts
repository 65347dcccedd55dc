/**
 * `kernel` dispatch, worker side: the worker listens on the server's address with
 * `SO_REUSEPORT` (the kernel spreads incoming connections over every worker's listener),
 * accepts, enforces the server-wide limits, and serves each connection on its own event loop
 * with the socket it owns (`owned_socket.ts`). Only control messages and the shared counters
 * cross threads.
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { HandlerContext, SocketHandler } from "../../../handlers/handler.ts";
import { closeQuietly, displayAddr, formatAddr, remoteText } from "../../../sockets/address.ts";
import { acceptLoop } from "../../../sockets/accept_loop.ts";
import { AddressLimit } from "../../../sockets/address_limit.ts";
import { BufferBudget } from "../../../sockets/buffer_budget.ts";
import { ConnectionSet, type DrainResult } from "../../../sockets/connection_set.ts";
import type { CloseReason } from "../../../sockets/close_reason.ts";
import { Counter, ServerCounters, type SlotCounters } from "../../../threads/counters.ts";
import { descriptorOf } from "../../../sockets/libc.ts";
import { getLog } from "../../../log.ts";
import { workerName } from "../../../threads/worker_slot.ts";
import { RateLimitedLog } from "../../../sockets/rate_limited_log.ts";
import type { KernelDispatchInit } from "../../../threads/messages.ts";
import { readProxyHeader } from "../../../sockets/proxy_protocol.ts";
import { handshake } from "../../../sockets/tls_handshake.ts";
import { type ServerSocket, type TlsSettings, TlsTerminator } from "../../../sockets/tls_socket.ts";
import { OwnedSocket } from "./owned_socket.ts";

/** Settings of a worker in `kernel` dispatch: the init message's, plus the worker's place. */
export type KernelListenerOptions = KernelDispatchInit & {
  /** This worker's slot, from 0. */
  slot: number;
  /** This worker's counter lane (see `counters.ts`). */
  lane: number;
};

/** Listens, accepts and serves connections inside one worker. */
export class KernelListener {
  #handler: SocketHandler;
  #context: HandlerContext;
  #options: KernelListenerOptions;
  #counters: ServerCounters;
  #row: SlotCounters;
  /** This worker's counter row, which is also its table in the per-address limit. */
  #rowIndex: number;
  #listener: Deno.TcpListener | undefined;
  #connections: ConnectionSet<OwnedSocket>;
  #stopping = false;
  /** Connections closed after the drain's count was taken and before this worker's drain. */
  #closedBeforeDrain = 0;
  #acceptLoopDone: Promise<void> = Promise.resolve();
  #budget: BufferBudget;
  #perAddress: AddressLimit | undefined;
  #log = getLog();
  #rejections = new RateLimitedLog(this.#log);
  #tls: TlsTerminator | undefined;

  /**
   * @param handler The protocol handler.
   * @param context What the handler knows of its worker.
   * @param options Address, limits, shared counters and slot.
   */
  constructor(handler: SocketHandler, context: HandlerContext, options: KernelListenerOptions) {
    this.#handler = handler;
    this.#context = context;
    this.#options = options;
    this.#connections = new ConnectionSet(options.drainIdleMs);
    this.#counters = new ServerCounters(options.counters, options.workers);
    this.#row = this.#counters.slot(options.slot, options.lane);
    this.#rowIndex = options.lane * options.workers + options.slot;
    const row = this.#row;
    this.#budget = new BufferBudget(options.maxBuffered, (used) => row.set(Counter.buffered, used));
    this.#perAddress = options.perAddress === undefined
      ? undefined
      : new AddressLimit(options.perAddress, options.maxConnectionsPerIp);
    this.#tls = options.tls === undefined
      ? undefined
      : new TlsTerminator(options.tls, options.tlsHandshakeTimeoutMs);
  }

  /**
   * New connections use these TLS settings from now on; open ones keep theirs.
   *
   * @param settings Checked certificate, key and CA.
   */
  updateTls(settings: TlsSettings): void {
    this.#tls?.update(settings);
  }

  /**
   * Listens on the server's address and starts accepting.
   *
   * @throws {Error} If the address cannot be listened on; the message is one line.
   */
  start(): void {
    const { hostname, port } = this.#options;
    try {
      this.#listener = Deno.listen({ hostname, port, transport: "tcp", reusePort: true });
    } catch (error) {
      const reason = (error as Error)?.message?.split("\n")[0] ?? String(error);
      throw new Error(`Cannot listen on ${formatAddr(hostname, port)}: ${reason}`, {
        cause: error,
      });
    }
    this.#acceptLoopDone = acceptLoop(this.#listener, {
      onConnection: (conn) => this.#admit(conn),
      onFailure: () => this.#row.add(Counter.acceptFailures),
      onPeerAbort: () => this.#row.add(Counter.acceptAborted),
      stopping: () => this.#stopping,
      log: this.#log,
    });
    this.#connections.startSweeps(this.#options.idleTimeout, this.#options.writeTimeout);
  }

  /**
   * Stops accepting, keeps serving open connections until each finishes or `timeout` seconds
   * pass, then closes the rest (resetting those with input or output pending).
   *
   * @param timeout Seconds to wait for connections to finish.
   * @returns How the connections ended.
   */
  async drain(timeout: number): Promise<DrainResult> {
    if (this.#stopping) return { finished: 0, idle: 0, cut: 0 };
    this.#stopping = true;
    if (this.#listener !== undefined) closeQuietly(this.#listener);
    await this.#acceptLoopDone;
    const result = await this.#connections.drain(timeout * 1000);
    result.finished += this.#closedBeforeDrain;
    return result;
  }

  /**
   * Gives a connection's place in `--max-connections` back. One that closes after the main
   * thread took the drain's count and before this worker's drain began is tallied here.
   */
  #release(): void {
    if (this.#counters.release() && !this.#connections.drainingAll) this.#closedBeforeDrain++;
  }

  #admit(conn: Deno.TcpConn): void {
    // One accepted as the drain began is served like the rest: closing it would answer its
    // client with an empty reply (a hand-over to another process must not lose it).
    if (!this.#counters.tryOpen(this.#options.maxConnections)) {
      this.#row.add(Counter.rejected);
      this.#log.debug("Connection from {addr} rejected: {count} open, limit {limit}", {
        addr: remoteText(conn),
        count: this.#counters.open,
        limit: this.#options.maxConnections,
      });
      closeQuietly(conn);
      return;
    }
    if (this.#options.proxyProtocol) this.#admitProxied(conn);
    else {
      const client = displayAddr(conn.remoteAddr);
      if (this.#admitAddress(conn, client)) this.#start(conn, client);
    }
  }

  /**
   * Counts the connection against `--max-connections-per-ip`; closes it if its address is at
   * the limit. The count is released in `#closed`, by the connection's `remoteAddr`.
   */
  #admitAddress(conn: Deno.TcpConn, client: Deno.NetAddr): boolean {
    if (
      this.#perAddress === undefined ||
      this.#perAddress.tryOpen(this.#rowIndex, client.hostname)
    ) return true;
    this.#release();
    this.#row.add(Counter.perAddressRejected);
    this.#log.debug("Connection from {addr} rejected: {limit} open from that address", {
      addr: formatAddr(client.hostname, client.port),
      limit: this.#perAddress.limit,
    });
    closeQuietly(conn);
    return false;
  }

  /** Reads the PROXY header, then serves the connection as coming from the client it names. */
  async #admitProxied(conn: Deno.TcpConn): Promise<void> {
    const addr = remoteText(conn);
    // A drain waits for it, and serves it if it comes through (see ConnectionSet.drain).
    this.#connections.beginAdmission();
    let served = false;
    try {
      const { header, rest } = await readProxyHeader(conn);
      const source = header.command === "proxy" ? header.source : undefined;
      const client = displayAddr(source ?? conn.remoteAddr);
      if (this.#admitAddress(conn, client)) {
        this.#start(conn, client, rest);
        served = true;
      }
    } catch (error) {
      // Count first: the main thread serves /metrics, and a client that sees the close
      // before this thread has counted it would read a stale figure.
      this.#release();
      this.#row.add(Counter.proxyRejected);
      closeQuietly(conn);
      this.#rejections.warn("proxy", "Connection from {addr} rejected: {reason}", {
        addr,
        reason: (error as Error).message,
      });
    } finally {
      this.#connections.endAdmission(served);
    }
  }

  /**
   * Serves an admitted connection, after its TLS handshake when TLS is on. It already counts
   * against the limits: a failed handshake gives its places back.
   */
  async #start(conn: Deno.TcpConn, client: Deno.NetAddr, initial?: Uint8Array): Promise<void> {
    if (this.#tls === undefined) {
      this.#serve(conn, client, descriptorOf(conn), initial);
      return;
    }
    this.#connections.beginAdmission();
    const secure = await handshake(this.#tls, conn, initial, {
      counters: this.#row,
      log: this.#rejections,
    });
    if (secure === undefined) {
      this.#perAddress?.release(this.#rowIndex, client.hostname);
      this.#release();
    } else this.#serve(secure, client, undefined); // during a drain too: it is drained
    this.#connections.endAdmission(secure !== undefined);
  }

  /**
   * Serves an admitted connection; `fd` is its descriptor when it is plain TCP (writes then go
   * out in the call), undefined with TLS (the bytes on the wire are not the handler's).
   */
  #serve(
    conn: ServerSocket,
    remoteAddr: Deno.NetAddr,
    fd: number | undefined,
    initial?: Uint8Array,
  ): void {
    const id = this.#counters.nextId();
    const connection = new OwnedSocket(conn, {
      id,
      remoteAddr,
      handler: this.#handler,
      context: this.#context,
      fd,
      initial,
      counters: this.#row,
      budget: this.#budget,
      onClose: (c, reason) => this.#closed(c, reason),
    });
    this.#connections.add(connection);
    this.#row.add(Counter.accepted);
    this.#row.add(Counter.active);
    this.#log.debug("Connection {id} from {addr} to {worker}", {
      id,
      addr: formatAddr(remoteAddr.hostname, remoteAddr.port),
      worker: workerName(this.#options.slot),
    });
    connection.start();
  }

  #closed(connection: OwnedSocket, reason: CloseReason): void {
    this.#connections.delete(connection.id);
    this.#perAddress?.release(this.#rowIndex, connection.remoteAddr.hostname);
    this.#release();
    this.#row.closed(reason);
    this.#log.debug("Connection {id} closed: {reason} ({bytesIn} B in, {bytesOut} B out)", {
      id: connection.id,
      reason,
      bytesIn: connection.bytesIn,
      bytesOut: connection.bytesOut,
    });
  }
}
