/**
 * `main` dispatch, the default, main thread: it listens, accepts, hands each connection to the
 * next worker round-robin, relays the connection's bytes both ways over that worker's channel
 * (`relay_connection.ts`), enforces the connection limit and timeouts, and drains on shutdown.
 * The worker half is `../worker/relay_transport.ts`.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { closeQuietly, displayAddr, formatAddr, remoteText } from "../../../sockets/address.ts";
import { acceptLoop } from "../../../sockets/accept_loop.ts";
import { AddressLimit } from "../../../sockets/address_limit.ts";
import { BufferBudget } from "../../../sockets/buffer_budget.ts";
import { ConnectionSet } from "../../../sockets/connection_set.ts";
import type { CloseReason } from "../../../sockets/close_reason.ts";
import { Counter, ServerCounters } from "../../../threads/counters.ts";
import { descriptorOf } from "../../../sockets/libc.ts";
import { getLog } from "../../../log.ts";
import { RateLimitedLog } from "../../../sockets/rate_limited_log.ts";
import { readProxyHeader } from "../../../sockets/proxy_protocol.ts";
import { handshake } from "../../../sockets/tls_handshake.ts";
import { type ServerSocket, type TlsSettings, TlsTerminator } from "../../../sockets/tls_socket.ts";
import { workerName } from "../../../threads/worker_slot.ts";
import { listenTcp, probeAddress } from "../../../main_thread/listen.ts";
import {
  emptyQueuesBeforeClosing,
  handOffBeforeClosing,
  ReuseportGroup,
  unsteerWhenAlone,
} from "../../../main_thread/reuseport_steering.ts";
import type {
  DrainReport,
  ReloadOutcome,
  Server,
  ServerConfig,
  ServerSnapshot,
} from "../../../main_thread/server.ts";
import { readyTimeout, workerInit } from "../../../main_thread/worker_init.ts";
import {
  ReloadError,
  type WorkerFactory,
  type WorkerLink,
  WorkerPool,
} from "../../../main_thread/worker_pool.ts";
import { listenersOf } from "../../../sockets/libc.ts";
import type { FramesMessage } from "../../../threads/messages.ts";
import {
  BatchInbox,
  BatchRing,
  Frame,
  FrameWriter,
  postingBatches,
  readFrames,
  reasonOf,
} from "../frames.ts";
import { RelayConnection, reuseBulkBuffer, type WorkerChannel } from "./relay_connection.ts";

/**
 * The server in `main` dispatch.
 *
 * @example
 * ```ts ignore
 * const server = new MainDispatch(config, spawn);
 * const addr = await server.start();
 * // ... later, on SIGTERM:
 * await server.shutdown(10);
 * ```
 */
export class MainDispatch implements Server {
  #config: ServerConfig;
  #pool: WorkerPool;
  #counters: ServerCounters;
  #listener: Deno.TcpListener | undefined;
  #connections: ConnectionSet<RelayConnection>;
  #nextId = 1;
  #stopping = false;
  /** The listener is closing: the accept loop ends (later than `#stopping`, see shutdown). */
  #listenerClosed = false;
  #acceptLoopDone: Promise<void> = Promise.resolve();
  #tls: TlsTerminator | undefined;
  #budget: BufferBudget;
  #perAddress: AddressLimit | undefined;
  #log = getLog();
  #rejections = new RateLimitedLog(this.#log);
  /** The frame channel to each running worker. */
  #channels = new Map<WorkerLink, WorkerChannel>();
  #stopWatching: (() => void) | undefined;

  /**
   * @param config Validated settings.
   * @param spawn Creates a connection worker.
   */
  constructor(config: ServerConfig, spawn: WorkerFactory) {
    this.#config = config;
    this.#connections = new ConnectionSet(config.drainIdle * 1000);
    this.#counters = ServerCounters.create(config.workers);
    const main = this.#counters.main;
    this.#budget = new BufferBudget(config.maxBuffered, (used) => main.set(Counter.buffered, used));
    this.#perAddress = config.maxConnectionsPerIp > 0
      ? AddressLimit.create(config.maxConnectionsPerIp, 1)
      : undefined;
    this.#tls = config.tls === undefined
      ? undefined
      : new TlsTerminator(config.tls, config.tlsHandshakeTimeout * 1000);
    this.#pool = new WorkerPool({
      size: config.workers,
      readyTimeout: readyTimeout(config),
      spawn,
      init: (slot, lane) => workerInit(config, slot, lane, { mode: "main" }),
      onFrames: (link, message) => this.#receive(link, message),
      onLost: (link) => {
        this.#closeAll("worker-lost", link);
        this.#channels.delete(link);
      },
    });
  }

  /**
   * Counters and gauges as of now.
   *
   * @returns A snapshot.
   */
  snapshot(): ServerSnapshot {
    return {
      counters: this.#counters,
      workerRestarts: this.#pool.restarts,
      reloads: this.#pool.reloads,
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
    const config = this.#config;
    // Another echoserver already listening on the port (a hand-over): counted before joining.
    const group = config.port === 0 || !config.join
      ? undefined
      : ReuseportGroup.capture(config.port, 0);
    // The handler is loaded first: a module that cannot load fails as such (exit 2) even on a
    // port in use. The port is checked (unless joining it) and bound once the workers are
    // ready, so that no connection waits on it for a handler still loading.
    await this.#pool.start();
    const probed = config.join
      ? undefined
      : probeAddress({ host: config.host, port: config.port, log: this.#log });
    const listener = listenTcp({
      host: config.host ?? probed?.hostname,
      port: config.port,
      // So that a new release can listen on the port while this one drains (see README).
      reusePort: config.reusePort,
      log: this.#log,
    });
    this.#listener = listener;
    this.#acceptLoopDone = acceptLoop(listener, {
      onConnection: (conn) => this.#admit(conn),
      onFailure: () => this.#counters.main.add(Counter.acceptFailures),
      onPeerAbort: () => this.#counters.main.add(Counter.acceptAborted),
      stopping: () => this.#listenerClosed,
      log: this.#log,
    });
    this.#connections.startSweeps(this.#config.idleTimeout, this.#config.writeTimeout);
    if (group !== undefined && group.before > 0) this.#takeOver(group, listener.addr.port);
    return listener.addr;
  }

  /**
   * Another process listens on the port: new connections come to this one from now on, so
   * that the other can stop without losing any (see `reuseport_steering.ts`).
   */
  #takeOver(group: ReuseportGroup, port: number): void {
    const steered = group.steerToNewcomers(1);
    this.#log.info("{count} listener(s) of another process share port {port}: {what}", {
      count: group.before,
      port,
      what: steered
        ? "new connections come to this one now (hand-over)"
        : "the kernel spreads new connections over both",
    });
    if (steered) this.#stopWatching = unsteerWhenAlone(port, 1);
  }

  /**
   * A rolling reload: fresh workers (the handler loaded anew) take every connection accepted
   * from the moment they are all ready; the connections of the old ones are drained as at
   * shutdown, then the old workers end. The listener never closes.
   *
   * @returns How many connections the old workers still serve, and when they are done.
   * @throws {ReloadError} If the reload could not happen; the old workers go on serving.
   */
  async reload(): Promise<ReloadOutcome> {
    if (this.#stopping) throw new ReloadError("the server is stopping");
    const retired = new Set(await this.#pool.reload());
    const old = (connection: RelayConnection) => retired.has(connection.link);
    const finishing = [...this.#connections.values()].filter(old).length;
    return { finishing, retired: this.#retire([...retired], old) };
  }

  /** Lets reloaded-away workers' connections finish, then ends the workers. */
  async #retire(
    retired: WorkerLink[],
    old: (connection: RelayConnection) => boolean,
  ): Promise<DrainReport> {
    const report = await this.#connections.drain(this.#config.shutdownTimeout * 1000, old);
    // They hold no connection now; draining them runs the handler's teardown.
    await this.#pool.drainLinks(retired, 0);
    this.#pool.dismiss(retired);
    for (const link of retired) this.#channels.delete(link);
    return report;
  }

  /**
   * New connections use these TLS settings from now on; open ones keep theirs.
   *
   * @param settings Checked certificate, key and CA.
   */
  reloadTls(settings: TlsSettings): Promise<void> {
    this.#tls?.update(settings);
    return Promise.resolve();
  }

  /**
   * Stops accepting, keeps serving open connections until each finishes or `timeout` seconds
   * pass, closes the rest (resetting those with input or output pending), then stops the
   * workers.
   *
   * @param timeout Seconds to wait for connections to finish.
   * @returns How the connections ended.
   */
  async shutdown(timeout: number): Promise<DrainReport> {
    if (this.#stopping) return { finished: 0, idle: 0, cut: 0 };
    this.#stopping = true;
    this.#stopWatching?.();
    /** Connections left in the listen queue as it closed (the kernel resets them). */
    let unaccepted = 0;
    if (this.#listener !== undefined) {
      // Close only once the queue is empty, so that nothing waiting in it is reset: with a
      // successor on the port (a hand-over) new connections go to it; without, they are
      // refused meanwhile, and those queued are accepted and drained with the rest.
      const port = this.#listener.addr.port;
      const ours = listenersOf(port, 1);
      if (!await handOffBeforeClosing(port, ours)) {
        unaccepted = await emptyQueuesBeforeClosing(ours) ?? 0;
      }
      this.#listenerClosed = true;
      closeQuietly(this.#listener);
    }
    await this.#acceptLoopDone;
    const open = this.#connections.held;
    if (open > 0) {
      this.#log.info("Shutting down: draining {count} connection(s), up to {timeout} s", {
        count: open,
        timeout,
      });
    }
    const report = await this.#connections.drain(timeout * 1000);
    report.cut += unaccepted;
    // The workers hold no connection now; draining them runs the handler's teardown.
    await this.#pool.drain(0);
    this.#pool.close();
    return report;
  }

  #admit(conn: Deno.TcpConn): void {
    const open = this.#connections.held;
    const link = open < this.#config.maxConnections ? this.#pool.next() : undefined;
    if (link === undefined) {
      this.#counters.main.add(Counter.rejected);
      this.#log.debug("Connection from {addr} rejected: {count} open, limit {limit}", {
        addr: remoteText(conn),
        count: open,
        limit: this.#config.maxConnections,
      });
      closeQuietly(conn);
      return;
    }
    if (this.#config.proxyProtocol) this.#admitProxied(conn, link);
    else if (this.#admitAddress(conn, displayAddr(conn.remoteAddr))) this.#start(conn, link);
  }

  /**
   * Counts the connection against `--max-connections-per-ip`; closes it if its address is at
   * the limit. The count is released in `#closed`, by the connection's `remoteAddr`.
   */
  #admitAddress(conn: Deno.TcpConn, client: Deno.NetAddr): boolean {
    if (this.#perAddress === undefined || this.#perAddress.tryOpen(0, client.hostname)) return true;
    this.#counters.main.add(Counter.perAddressRejected);
    this.#log.debug("Connection from {addr} rejected: {limit} open from that address", {
      addr: formatAddr(client.hostname, client.port),
      limit: this.#perAddress.limit,
    });
    closeQuietly(conn);
    return false;
  }

  /** Reads the PROXY header, then serves the connection as coming from the client it names. */
  async #admitProxied(conn: Deno.TcpConn, link: WorkerLink): Promise<void> {
    const addr = remoteText(conn);
    // A drain waits for it, and serves it if it comes through (see ConnectionSet.drain).
    this.#connections.beginAdmission();
    let served = false;
    try {
      const { header, rest } = await readProxyHeader(conn);
      const source = header.command === "proxy" ? header.source : undefined;
      if (!this.#admitAddress(conn, displayAddr(source ?? conn.remoteAddr))) return;
      this.#start(conn, link, source, rest);
      served = true;
    } catch (error) {
      this.#counters.main.add(Counter.proxyRejected);
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
   * Serves an admitted connection, after its TLS handshake when TLS is on. Its address already
   * counts against `--max-connections-per-ip`: a failed handshake gives its place back.
   */
  async #start(
    conn: Deno.TcpConn,
    link: WorkerLink,
    remoteAddr?: Deno.NetAddr,
    initial?: Uint8Array,
  ): Promise<void> {
    if (this.#tls === undefined) {
      this.#serve(conn, link, { remoteAddr, initial, fd: descriptorOf(conn) });
      return;
    }
    const client = displayAddr(remoteAddr ?? conn.remoteAddr);
    this.#connections.beginAdmission();
    const secure = await handshake(this.#tls, conn, initial, {
      counters: this.#counters.main,
      log: this.#rejections,
    });
    if (secure === undefined) this.#perAddress?.release(0, client.hostname);
    // During a drain too: it is drained like the rest.
    else this.#serve(secure, link, { remoteAddr: client, fd: undefined });
    this.#connections.endAdmission(secure !== undefined);
  }

  #serve(
    conn: ServerSocket,
    chosen: WorkerLink,
    options: {
      remoteAddr?: Deno.NetAddr | undefined;
      initial?: Uint8Array | undefined;
      fd: number | undefined;
    },
  ): void {
    // The worker chosen at accept may have died, or been retired by a reload, during a PROXY
    // header or a TLS handshake: then the connection goes to one that takes connections now.
    const link = this.#pool.takesConnections(chosen) ? chosen : this.#pool.next();
    if (link === undefined) {
      this.#counters.main.add(Counter.rejected);
      this.#perAddress?.release(0, displayAddr(options.remoteAddr ?? conn.remoteAddr).hostname);
      closeQuietly(conn);
      return;
    }
    const id = this.#nextId;
    // Ids are 32-bit in the channel's frames; skip 0 and any still in use after a wrap.
    do this.#nextId = (this.#nextId + 1) >>> 0 || 1; while (this.#connections.has(this.#nextId));
    const row = this.#counters.slot(link.slot);
    const connection = new RelayConnection(id, conn, this.#channel(link), {
      ...options,
      counters: row,
      budget: this.#budget,
      onClose: (c, reason) => this.#closed(c, reason),
    });
    this.#connections.add(connection);
    row.add(Counter.accepted);
    row.add(Counter.active);
    this.#log.debug("Connection {id} from {addr} to {worker}", {
      id,
      addr: formatAddr(connection.remoteAddr.hostname, connection.remoteAddr.port),
      worker: workerName(link.slot),
    });
    connection.start();
  }

  #closed(connection: RelayConnection, reason: CloseReason): void {
    this.#connections.delete(connection.id);
    this.#perAddress?.release(0, connection.remoteAddr.hostname);
    this.#counters.slot(connection.link.slot).closed(reason);
    this.#log.debug("Connection {id} closed: {reason} ({bytesIn} B in, {bytesOut} B out)", {
      id: connection.id,
      reason,
      bytesIn: connection.bytesIn,
      bytesOut: connection.bytesOut,
    });
  }

  /** The frames to a worker, and its batches as they arrive. */
  #channel(link: WorkerLink): WorkerChannel {
    let channel = this.#channels.get(link);
    if (channel === undefined) {
      const writer = new FrameWriter(
        postingBatches((message, transfer) => link.post(message, transfer), new BatchRing()),
      );
      channel = { link, writer, inbox: new BatchInbox() };
      this.#channels.set(link, channel);
    }
    return channel;
  }

  #receive(link: WorkerLink, message: FramesMessage): void {
    for (const free of message.spare ?? []) reuseBulkBuffer(free);
    const { writer, inbox } = this.#channel(link);
    const buffer = inbox.open(message, writer);
    readFrames(
      buffer,
      message.length,
      message.attached,
      (kind, id, value, payload, owned) => {
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
            connection.disconnect(reasonOf(value), true);
            break;
          default:
            throw new RangeError(`Unexpected frame kind ${kind} from ${workerName(link.slot)}`);
        }
      },
    );
    // Nothing views the batch now (output not taken at once was copied): it may carry ours.
    writer.recycle(buffer);
    // How far the worker has got: a drain tells input in transit from input it holds.
    writer.processedBy(message.done);
  }

  #closeAll(reason: CloseReason, link?: WorkerLink): void {
    for (const connection of [...this.#connections.values()]) {
      if (link === undefined || connection.link === link) connection.disconnect(reason);
    }
  }
}
