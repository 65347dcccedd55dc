/**
 * The server on the main thread: listens, accepts, hands each connection to the next worker,
 * routes the workers' frames back to their connections, enforces the connection limit and idle
 * timeout, and drains on shutdown.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { errorReason, formatAddr, remoteText } from "../shared/address.ts";
import { Frame, readFrames } from "../shared/channel.ts";
import { CLOSE_REASONS, type CloseReason } from "../shared/close_reason.ts";
import { getLog } from "../shared/log.ts";
import { parseProxyHeader, type ProxyHeader, V2_MAX_LENGTH } from "../shared/proxy_protocol.ts";
import { ClientConnection } from "./client_connection.ts";
import type { Config } from "./config.ts";
import { type WorkerFactory, type WorkerLink, WorkerPool } from "./worker_pool.ts";

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

/** Counters kept by the server. */
export interface ServerStats {
  /** Connections accepted and handed to a worker. */
  accepted: number;
  /** Of those, per worker slot. */
  acceptedByWorker: number[];
  /** Connections closed on accept because of `--max-connections` (or no worker ready). */
  rejected: number;
  /** `accept()` calls that failed (EMFILE and others). */
  failedAccepts: number;
  /** Connections closed because their PROXY header was missing, malformed or late. */
  proxyRejected: number;
  /** Connections closed, by reason. */
  closed: Record<CloseReason, number>;
  /** Bytes read from and written to clients, by connections already closed. */
  closedBytesIn: number;
  closedBytesOut: number;
}

/** A point-in-time view of the server, for metrics. */
export interface ServerSnapshot {
  stats: Readonly<ServerStats>;
  /** Open connections per worker slot. */
  activeByWorker: number[];
  /** Bytes read from and written to clients, all connections. */
  bytesIn: number;
  bytesOut: number;
  workerRestarts: number;
  workers: number;
}

/** Settings the server needs (a subset of {@linkcode Config}). */
export type ServerConfig = Pick<
  Config,
  | "port"
  | "host"
  | "workers"
  | "idleTimeout"
  | "writeTimeout"
  | "maxConnections"
  | "logLevel"
  | "handler"
  | "proxyProtocol"
>;

/** How long, after a shutdown signal, bytes already on their way are still taken in. */
const DRAIN_GRACE_MS = 200;
/** After a failed accept (such as EMFILE), wait this long before the next, as memcached does. */
const ACCEPT_BACKOFF_MS = 10;
const SWEEP_MS = 250;
/** How long a connection may take to send its PROXY header. */
const PROXY_HEADER_TIMEOUT_MS = 5000;

/**
 * The echo server's main-thread half.
 *
 * @example
 * ```ts ignore
 * const server = new Server(config, spawn);
 * const addr = await server.start();
 * // ... later, on SIGTERM:
 * await server.shutdown(10);
 * ```
 */
export class Server {
  #config: ServerConfig;
  #pool: WorkerPool;
  #listener: Deno.TcpListener | undefined;
  #connections = new Map<number, ClientConnection>();
  #nextId = 1;
  #stopping = false;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #acceptLoopDone: Promise<void> = Promise.resolve();
  #onEmpty: (() => void) | undefined;
  #awaitingHeader = 0;
  #lastAcceptWarning = -Infinity;
  #log = getLog();
  #stats: ServerStats;

  /**
   * @param config Validated settings.
   * @param spawn Creates a connection worker.
   */
  constructor(config: ServerConfig, spawn: WorkerFactory) {
    this.#config = config;
    this.#stats = {
      accepted: 0,
      acceptedByWorker: new Array(config.workers).fill(0),
      rejected: 0,
      failedAccepts: 0,
      proxyRejected: 0,
      closed: Object.fromEntries(CLOSE_REASONS.map((r) => [r, 0])) as Record<CloseReason, number>,
      closedBytesIn: 0,
      closedBytesOut: 0,
    };
    this.#pool = new WorkerPool({
      size: config.workers,
      spawn,
      init: (slot) => ({
        type: "init",
        index: slot + 1,
        logLevel: config.logLevel,
        handler: config.handler,
      }),
      onFrames: (link, buffer, length, attached) => this.#receive(link, buffer, length, attached),
      onLost: (link) => this.#closeAll("worker-lost", link),
    });
  }

  /**
   * Counters and gauges as of now.
   *
   * @returns A snapshot; walks the open connections, so take it at scrape rate, not per chunk.
   */
  snapshot(): ServerSnapshot {
    const activeByWorker = new Array(this.#config.workers).fill(0);
    let bytesIn = this.#stats.closedBytesIn;
    let bytesOut = this.#stats.closedBytesOut;
    for (const connection of this.#connections.values()) {
      activeByWorker[connection.link.slot]++;
      bytesIn += connection.bytesIn;
      bytesOut += connection.bytesOut;
    }
    return {
      stats: this.#stats,
      activeByWorker,
      bytesIn,
      bytesOut,
      workerRestarts: this.#pool.restarts,
      workers: this.#config.workers,
    };
  }

  /**
   * Listens, starts the workers, waits until all are ready, then starts accepting.
   *
   * @returns The address listened on (with the real port when `port` was 0).
   * @throws {ListenError} If the address cannot be listened on.
   * @throws {WorkerStartError} If a worker cannot start.
   */
  async start(): Promise<Deno.NetAddr> {
    const listener = this.#listen();
    try {
      await this.#pool.start();
    } catch (error) {
      listener.close();
      throw error;
    }
    this.#listener = listener;
    this.#acceptLoopDone = this.#acceptLoop(listener);
    if (this.#config.idleTimeout > 0 || this.#config.writeTimeout > 0) {
      this.#sweepTimer = setInterval(() => this.#sweep(), SWEEP_MS);
    }
    return listener.addr;
  }

  /**
   * Stops accepting, lets each connection finish what it was sent, and closes those still open
   * after `timeout` seconds. Then stops the workers.
   *
   * @param timeout Seconds to wait for connections to finish.
   */
  async shutdown(timeout: number): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    clearInterval(this.#sweepTimer);
    this.#listener?.close();
    await this.#acceptLoopDone;
    const deadline = performance.now() + timeout * 1000;
    if (this.#connections.size > 0) {
      this.#log.info("Shutting down: draining {count} connection(s), up to {timeout} s", {
        count: this.#connections.size,
        timeout,
      });
      await this.#waitForEmpty(Math.min(DRAIN_GRACE_MS, timeout * 1000));
      for (const connection of this.#connections.values()) connection.stopInput();
      await this.#waitForEmpty(deadline - performance.now());
      if (this.#connections.size > 0) {
        this.#log.warning("Shutdown timeout: closing {count} connection(s) still open", {
          count: this.#connections.size,
        });
        this.#closeAll("shutdown");
      }
    }
    this.#pool.close();
  }

  #listen(): Deno.TcpListener {
    const { host, port } = this.#config;
    let failure: unknown;
    try {
      return Deno.listen({ hostname: host ?? "::", port, transport: "tcp" });
    } catch (error) {
      failure = error;
    }
    // Default host on a machine without IPv6: fall back to IPv4 only.
    if (host === undefined && !_isAddressError(failure)) {
      try {
        const listener = Deno.listen({ hostname: "0.0.0.0", port, transport: "tcp" });
        this.#log.warning("IPv6 unavailable ({reason}); listening on IPv4 only", {
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

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    while (!this.#stopping) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#stopping) return;
        this.#stats.failedAccepts++;
        if (_isPeerAbort(error)) {
          // The client gave up between its handshake and our accept (a reset, a load
          // balancer's health check): nothing is wrong here, accept the next one at once.
          this.#log.debug("Accept failed: {reason}", { reason: errorReason(error) });
          continue;
        }
        this.#warnAcceptFailure(error);
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_BACKOFF_MS));
        continue;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.TcpConn): void {
    const open = this.#connections.size + this.#awaitingHeader;
    const link = open < this.#config.maxConnections ? this.#pool.next() : undefined;
    if (link === undefined) {
      this.#stats.rejected++;
      this.#log.debug("Connection from {addr} rejected: {count} open, limit {limit}", {
        addr: remoteText(conn),
        count: open,
        limit: this.#config.maxConnections,
      });
      _close(conn);
      return;
    }
    if (this.#config.proxyProtocol) this.#admitProxied(conn, link);
    else this.#serve(conn, link);
  }

  /** Reads the PROXY header, then serves the connection as coming from the client it names. */
  async #admitProxied(conn: Deno.TcpConn, link: WorkerLink): Promise<void> {
    this.#awaitingHeader++;
    let header: ProxyHeader | undefined;
    let received = new Uint8Array(0);
    const timer = setTimeout(() => _close(conn), PROXY_HEADER_TIMEOUT_MS);
    try {
      const buffer = new Uint8Array(V2_MAX_LENGTH);
      while (header === undefined) {
        const n = await conn.read(buffer.subarray(received.length));
        if (n === null) throw new Error("closed before sending its PROXY header");
        received = buffer.subarray(0, received.length + n);
        header = parseProxyHeader(received);
      }
    } catch (error) {
      this.#stats.proxyRejected++;
      const late = error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.Interrupted;
      this.#log.warning("Connection from {addr} rejected: {reason}", {
        addr: remoteText(conn),
        reason: late ? "no PROXY header within 5 s" : (error as Error).message,
      });
      _close(conn);
      return;
    } finally {
      clearTimeout(timer);
      this.#awaitingHeader--;
    }
    if (!link.alive || this.#stopping) {
      _close(conn);
      return;
    }
    this.#serve(conn, link, {
      remoteAddr: header.command === "proxy" ? header.source : undefined,
      initial: received.slice(header.length),
    });
  }

  #serve(
    conn: Deno.TcpConn,
    link: WorkerLink,
    options?: { remoteAddr?: Deno.NetAddr | undefined; initial?: Uint8Array },
  ): void {
    const id = this.#nextId;
    // Ids are 32-bit in the channel's frames; skip 0 and any still in use after a wrap.
    do this.#nextId = (this.#nextId + 1) >>> 0 || 1; while (this.#connections.has(this.#nextId));
    const connection = new ClientConnection(
      id,
      conn,
      link,
      (c, reason) => this.#closed(c, reason),
      options,
    );
    this.#connections.set(id, connection);
    this.#stats.accepted++;
    this.#stats.acceptedByWorker[link.slot]!++;
    this.#log.debug("Connection {id} from {addr} to worker-{worker}", {
      id,
      addr: formatAddr(connection.remoteAddr.hostname, connection.remoteAddr.port),
      worker: link.slot + 1,
    });
    connection.start();
  }

  #closed(connection: ClientConnection, reason: CloseReason): void {
    this.#connections.delete(connection.id);
    this.#stats.closed[reason]++;
    this.#stats.closedBytesIn += connection.bytesIn;
    this.#stats.closedBytesOut += connection.bytesOut;
    this.#log.debug("Connection {id} closed: {reason} ({bytesIn} B in, {bytesOut} B out)", {
      id: connection.id,
      reason,
      bytesIn: connection.bytesIn,
      bytesOut: connection.bytesOut,
    });
    if (this.#connections.size === 0) this.#onEmpty?.();
  }

  #receive(
    link: WorkerLink,
    buffer: ArrayBuffer,
    length: number,
    attached: ArrayBuffer[],
  ): void {
    readFrames(buffer, length, attached, (kind, id, value, payload, owned) => {
      const connection = this.#connections.get(id);
      // Frames for a connection closed meanwhile are stale: drop them.
      if (connection === undefined || connection.link !== link) return;
      switch (kind) {
        case Frame.DATA:
          connection.receive(payload!, owned);
          break;
        case Frame.ACK:
          connection.acknowledge(value);
          break;
        case Frame.END:
          connection.end();
          break;
        case Frame.ABORT:
          connection.close("handler-error");
          break;
        default:
          throw new RangeError(`Unexpected frame kind ${kind} from worker-${link.slot + 1}`);
      }
    });
  }

  /** Closes connections past their idle or write timeout. Runs every `SWEEP_MS`. */
  #sweep(): void {
    const now = performance.now();
    const { idleTimeout, writeTimeout } = this.#config;
    const idleCutoff = now - idleTimeout * 1000;
    const writeCutoff = now - writeTimeout * 1000;
    for (const connection of this.#connections.values()) {
      // Output pending and not one byte of it taken since the last look: the clock runs.
      if (!connection.writing || connection.wrote) {
        connection.wrote = false;
        connection.lastWriteProgress = now;
      } else if (writeTimeout > 0 && connection.lastWriteProgress < writeCutoff) {
        connection.close("write-timeout");
        continue;
      }
      if (connection.active) {
        connection.active = false;
        connection.lastSeenActive = now;
      } else if (idleTimeout > 0 && connection.lastSeenActive < idleCutoff) {
        connection.close("idle");
      }
    }
  }

  #closeAll(reason: CloseReason, link?: WorkerLink): void {
    for (const connection of [...this.#connections.values()]) {
      if (link === undefined || connection.link === link) connection.close(reason);
    }
  }

  #waitForEmpty(ms: number): Promise<void> {
    if (this.#connections.size === 0 || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      this.#onEmpty = done;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  #warnAcceptFailure(error: unknown): void {
    // EMFILE repeats every few milliseconds: one line a second is enough.
    const now = performance.now();
    if (now - this.#lastAcceptWarning < 1000) return;
    this.#lastAcceptWarning = now;
    this.#log.warning("Accept failed: {reason} ({count} failed so far); retrying", {
      reason: errorReason(error),
      count: this.#stats.failedAccepts,
    });
  }
}

function _close(conn: Deno.TcpConn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Accept errors caused by the peer, not by a lack of resources here. */
function _isPeerAbort(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected;
}

function _isAddressError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}
