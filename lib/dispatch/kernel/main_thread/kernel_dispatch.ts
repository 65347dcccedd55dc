/**
 * `kernel` dispatch (Linux), main thread: every worker listens on the server's address with
 * `SO_REUSEPORT`, the kernel spreads incoming connections over their listeners, and each worker
 * does its own socket I/O (`../worker/kernel_listener.ts`). The main thread only supervises: it
 * reserves the address, starts the workers, replaces one that dies, reads the shared counters
 * for `/metrics`, and runs the drain.
 *
 * Why: in `main` dispatch the main thread does every socket's I/O, and for light protocols it
 * alone costs more CPU per round trip than a whole single-isolate server, so it caps the server
 * on any number of cores. Here no byte crosses threads.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { AddressLimit } from "../../../shared/address_limit.ts";
import { ServerCounters } from "../../../shared/counters.ts";
import { getLog } from "../../../shared/log.ts";
import type { TlsSettings } from "../../../shared/tls_socket.ts";
import { listenTcp } from "../../../main_thread/listen.ts";
import type {
  DrainReport,
  Server,
  ServerConfig,
  ServerSnapshot,
} from "../../../main_thread/server.ts";
import { readyTimeout, workerInit } from "../../../main_thread/worker_init.ts";
import {
  type WorkerFactory,
  type WorkerLink,
  WorkerPool,
} from "../../../main_thread/worker_pool.ts";

/**
 * Young-generation cap per worker, in MiB (Node's measure: all of it, about three semi-spaces).
 * V8 otherwise grows a busy isolate's semi-spaces to 16 MiB each. Measured with 2 workers and a C
 * client (docs/performance.md): at 24, 10,000 busy connections peaked at 313-320 MB instead of
 * 390-403 at the same round trips; 1,000 connections ran 5-10% slower in noisy A/B runs; at 8,
 * 1,000 connections lost 31%; at 32, memory was 337-348 MB.
 */
const YOUNG_GENERATION_MB = 24;

/** Most milliseconds to wait for the workers to take new TLS settings (one stuck in a handler never does). */
const TLS_APPLY_TIMEOUT_MS = 5000;

/**
 * The server in `kernel` dispatch.
 *
 * @example
 * ```ts ignore
 * const server = new KernelDispatch(config, spawn);
 * const addr = await server.start();
 * await server.shutdown(10);
 * ```
 */
export class KernelDispatch implements Server {
  #config: ServerConfig;
  #spawn: WorkerFactory;
  #counters: ServerCounters;
  #pool: WorkerPool | undefined;
  #stopping = false;
  /** The TLS settings in force: a replaced worker starts with the latest. */
  #tls: TlsSettings | undefined;
  #perAddress: AddressLimit | undefined;
  #log = getLog();

  /**
   * @param config Validated settings.
   * @param spawn Creates a connection worker.
   */
  constructor(config: ServerConfig, spawn: WorkerFactory) {
    this.#config = config;
    this.#spawn = spawn;
    this.#counters = ServerCounters.create(config.workers);
    this.#tls = config.tls;
    this.#perAddress = config.maxConnectionsPerIp > 0
      ? AddressLimit.create(config.maxConnectionsPerIp, config.workers)
      : undefined;
  }

  /**
   * Counters and gauges as of now, summed from the workers' shared rows.
   *
   * @returns A snapshot.
   */
  snapshot(): ServerSnapshot {
    return { counters: this.#counters, workerRestarts: this.#pool?.restarts ?? 0 };
  }

  /**
   * Reserves the address, starts the workers (each listens on it), waits until all are ready,
   * then releases the reservation.
   *
   * @returns The address listened on (with the real port when `port` was 0).
   * @throws {ListenError} If the address cannot be listened on.
   * @throws {WorkerStartError} If a worker cannot start.
   */
  async start(): Promise<Deno.NetAddr> {
    const config = this.#config;
    // The main thread binds first: it learns the real port when 0 was asked for, fails at once
    // on a port that another program holds, and IPv6 falls back to IPv4 in one place.
    const reservation = listenTcp({
      host: config.host,
      port: config.port,
      reusePort: true,
      log: this.#log,
    });
    const { hostname, port } = reservation.addr;
    const pool = new WorkerPool({
      size: config.workers,
      readyTimeout: readyTimeout(config),
      spawn: this.#spawn,
      init: (slot) =>
        workerInit(config, slot, {
          mode: "kernel",
          hostname,
          port,
          counters: this.#counters.buffer,
          workers: config.workers,
          maxConnections: config.maxConnections,
          maxConnectionsPerIp: config.maxConnectionsPerIp,
          perAddress: this.#perAddress?.buffer,
          maxBuffered: Math.ceil(config.maxBuffered / config.workers),
          idleTimeout: config.idleTimeout,
          writeTimeout: config.writeTimeout,
          proxyProtocol: config.proxyProtocol,
          tls: this.#tls,
          tlsHandshakeTimeoutMs: config.tlsHandshakeTimeout * 1000,
        }),
      spawnOptions: { youngGenerationMb: YOUNG_GENERATION_MB },
      onLost: (link) => this.#lost(link),
    });
    this.#pool = pool;
    try {
      await pool.start();
    } finally {
      // The workers listen now. The reservation must go: the kernel would otherwise queue
      // connections on a socket that nobody accepts from.
      reservation.close();
    }
    return reservation.addr;
  }

  /**
   * Tells every worker to use new TLS settings for the connections it accepts from now on, and
   * waits until each has (a replacement starts with them).
   *
   * @param settings Checked certificate, key and CA.
   */
  async reloadTls(settings: TlsSettings): Promise<void> {
    if (this.#tls === undefined) return;
    this.#tls = settings;
    await this.#pool?.askAll({ type: "tls", settings }, "tls-applied", TLS_APPLY_TIMEOUT_MS);
  }

  /**
   * Tells every worker to stop accepting and drain its connections for up to `timeout`
   * seconds, waits for their reports, then stops the workers.
   *
   * @param timeout Seconds to wait for connections to finish.
   * @returns How the connections ended, summed over the workers. A worker that never reports
   *   (stuck in a handler) has its open connections counted as cut.
   */
  async shutdown(timeout: number): Promise<DrainReport> {
    if (this.#stopping || this.#pool === undefined) return { finished: 0, idle: 0, cut: 0 };
    this.#stopping = true;
    const pool = this.#pool;
    pool.stopReplacing();
    const open = this.#counters.open;
    if (open > 0) {
      this.#log.info("Shutting down: draining {count} connection(s), up to {timeout} s", {
        count: open,
        timeout,
      });
    }
    const { result, silent } = await pool.drain(timeout);
    // A worker stuck in a handler's endless loop never answers: what it still holds is cut
    // when it is terminated.
    if (silent > 0) result.cut += this.#counters.open;
    pool.close();
    return result;
  }

  #lost(link: WorkerLink): void {
    // The dead worker's sockets closed with it (connections still waiting in its accept queue
    // were reset by the kernel): count them as lost and free their places in the limit.
    this.#counters.workerLost(link.slot);
    this.#perAddress?.clearSlot(link.slot);
  }
}
