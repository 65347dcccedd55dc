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

import { AddressLimit } from "../../../sockets/address_limit.ts";
import { Counter, LANES, ServerCounters } from "../../../threads/counters.ts";
import { getLog } from "../../../log.ts";
import type { TlsSettings } from "../../../sockets/tls_socket.ts";
import { ListenError, probeAddress } from "../../../main_thread/listen.ts";
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
  WorkerStartError,
} from "../../../main_thread/worker_pool.ts";
import { listenersOf } from "../../../sockets/libc.ts";

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
/** Most milliseconds to wait for a generation's workers to listen once told to. */
const LISTEN_TIMEOUT_MS = 5000;

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
  /** The port the workers listen on, once started. */
  #port = 0;
  #stopWatching: (() => void) | undefined;
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
    // One table per counter row (a slot's lanes), each written by one worker.
    this.#perAddress = config.maxConnectionsPerIp > 0
      ? AddressLimit.create(config.maxConnectionsPerIp, LANES * config.workers)
      : undefined;
  }

  /**
   * Counters and gauges as of now, summed from the workers' shared rows.
   *
   * @returns A snapshot.
   */
  snapshot(): ServerSnapshot {
    return {
      counters: this.#counters,
      workerRestarts: this.#pool?.restarts ?? 0,
      reloads: this.#pool?.reloads ?? { ok: 0, failed: 0 },
    };
  }

  /**
   * Reserves the address, starts the workers, waits until all are ready, has them listen, then
   * releases the reservation.
   *
   * @returns The address listened on (with the real port when `port` was 0).
   * @throws {ListenError} If the address cannot be listened on.
   * @throws {WorkerStartError} If a worker cannot start.
   */
  async start(): Promise<Deno.NetAddr> {
    const config = this.#config;
    // Another echoserver already listening on the port (a hand-over): counted before joining.
    const incumbents = config.port === 0 || !config.join
      ? undefined
      : ReuseportGroup.capture(config.port, 0);
    // The main thread checks the address first, holding nothing: it learns the real port when 0
    // was asked for, finds a port in use (unless joining it), and IPv6 falls back to IPv4 in one
    // place. The workers listen once all are ready; a port in use is reported then, so that a
    // handler that cannot load fails as such (exit 2) first.
    let addr: Deno.NetAddr = {
      transport: "tcp",
      hostname: config.host ?? incumbents?.address ?? "::",
      port: config.port,
    };
    let unusable: ListenError | undefined;
    if (!config.join) {
      try {
        addr = probeAddress({ host: config.host, port: config.port, log: this.#log });
      } catch (error) {
        if (!(error instanceof ListenError)) throw error;
        unusable = error;
      }
    }
    const handOver = incumbents !== undefined && incumbents.before > 0;
    const pool = new WorkerPool({
      size: config.workers,
      readyTimeout: readyTimeout(config),
      spawn: this.#spawn,
      init: (slot, lane, replacement) =>
        workerInit(config, slot, lane, {
          mode: "kernel",
          hostname: addr.hostname,
          port: addr.port,
          counters: this.#counters.buffer,
          workers: config.workers,
          maxConnections: config.maxConnections,
          maxConnectionsPerIp: config.maxConnectionsPerIp,
          perAddress: this.#perAddress?.buffer,
          maxBuffered: Math.ceil(config.maxBuffered / config.workers),
          idleTimeout: config.idleTimeout,
          writeTimeout: config.writeTimeout,
          drainIdleMs: config.drainIdle * 1000,
          proxyProtocol: config.proxyProtocol,
          tls: this.#tls,
          tlsHandshakeTimeoutMs: config.tlsHandshakeTimeout * 1000,
          listenWhenTold: !replacement,
        }),
      commit: (links) => unusable !== undefined ? Promise.reject(unusable) : this.#listen(links),
      spawnOptions: { youngGenerationMb: YOUNG_GENERATION_MB },
      onLost: (link) => this.#lost(link),
    });
    this.#pool = pool;
    await pool.start();
    this.#port = addr.port;
    if (handOver) this.#takeOver(incumbents!);
    return addr;
  }

  /** Tells a generation's workers to listen, and waits until they do. */
  async #listen(links: WorkerLink[]): Promise<void> {
    const { answers, silent } = await this.#pool!.askAll(
      { type: "listen" },
      "listening",
      LISTEN_TIMEOUT_MS,
      links,
    );
    const failed = answers.find((answer) => answer.error !== undefined);
    if (failed !== undefined) throw new ListenError(failed.error!);
    if (silent > 0) {
      throw new WorkerStartError(
        `${silent} worker(s) did not start listening within ${LISTEN_TIMEOUT_MS / 1000} s`,
      );
    }
  }

  /**
   * Another process listens on the port: new connections come to this one from now on, so
   * that the other can stop without losing any (see `reuseport_steering.ts`).
   */
  #takeOver(group: ReuseportGroup): void {
    const steered = group.steerToNewcomers(this.#config.workers);
    this.#log.info(
      "{count} listener(s) of another process share port {port}: {what}",
      {
        count: group.before,
        port: this.#port,
        what: steered
          ? "new connections come to this one now (hand-over)"
          : "the kernel spreads new connections over both",
      },
    );
    if (steered) this.#stopWatching = unsteerWhenAlone(this.#port, this.#config.workers);
  }

  /**
   * A rolling reload: fresh workers (the handler loaded anew) listen next to the old ones, new
   * connections go to them from the moment they are ready, and the old ones stop accepting once
   * their accept queues are empty, then finish their connections as at shutdown.
   *
   * @returns How many connections the old workers still serve, and when they are done.
   * @throws {ReloadError} If the reload could not happen; the old workers go on serving.
   */
  async reload(): Promise<ReloadOutcome> {
    const pool = this.#pool;
    if (pool === undefined || this.#stopping) throw new ReloadError("the server is stopping");
    const group = ReuseportGroup.capture(this.#port, this.#config.workers);
    const retired = await pool.reload();
    const finishing = retired.reduce(
      (sum, link) => sum + this.#counters.slot(link.slot, link.lane).get(Counter.active),
      0,
    );
    return { finishing, retired: this.#retire(pool, retired, group, finishing) };
  }

  /**
   * Lets reloaded-away workers finish, then ends them. `finishing` is how many connections
   * they had when the new ones took over: those that end before the drain begins (while the
   * listeners are steered away from) have finished too.
   */
  async #retire(
    pool: WorkerPool,
    retired: WorkerLink[],
    group: ReuseportGroup | undefined,
    finishing: number,
  ): Promise<DrainReport> {
    // New connections go to the new workers; the old ones accept what they already have.
    const steered = group?.steerToNewcomers(this.#config.workers) ?? false;
    if (steered) {
      const left = await group!.waitForEmptyQueues();
      this.#log.debug("Reload: new connections go to the fresh workers; {left} left queued", {
        left,
      });
      group!.pinToFirstNewcomer();
    } else {
      this.#log.warning(
        "Reload: cannot steer new connections away from the old workers' listeners " +
          "(needs --allow-ffi and glibc on Linux); connections waiting in their queues as they " +
          "close are reset unless net.ipv4.tcp_migrate_req=1",
      );
    }
    const draining = pool.drainLinks(retired, this.#config.shutdownTimeout);
    if (steered) await group!.release(); // once the old listeners have closed
    const { result, silent } = await draining;
    for (const link of retired) {
      const row = this.#counters.slot(link.slot, link.lane);
      if (silent > 0) result.cut += row.get(Counter.active);
      this.#lost(link); // what a silent one still held; its gauges are nobody's now
    }
    pool.dismiss(retired);
    result.finished = Math.max(result.finished, finishing - result.idle - result.cut);
    return result;
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
    this.#stopWatching?.();
    const pool = this.#pool;
    pool.stopReplacing();
    // A successor shares the port (a hand-over): close the listeners only once new
    // connections go to it and their queues are empty, so that nothing waiting is reset.
    // Without one, new connections are refused from now on and the workers accept what is
    // queued, which is then drained with the rest instead of reset by the close.
    const ours = listenersOf(this.#port, pool.all.length);
    const unaccepted = await handOffBeforeClosing(this.#port, ours)
      ? 0
      : await emptyQueuesBeforeClosing(ours) ?? 0;
    const open = this.#counters.countForDrain();
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
    result.cut += unaccepted;
    pool.close();
    return result;
  }

  #lost(link: WorkerLink): void {
    // The dead worker's sockets closed with it (connections still waiting in its accept queue
    // were reset by the kernel): count them as lost and free their places in the limit.
    this.#counters.workerLost(link.slot, link.lane);
    this.#perAddress?.clearSlot(link.lane * this.#config.workers + link.slot);
  }
}
