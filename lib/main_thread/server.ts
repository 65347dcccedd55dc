/**
 * The server as `main.ts` sees it, whatever the dispatch mode: start, snapshot, shutdown.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { ServerCounters } from "../shared/counters.ts";
import type { Config } from "./config.ts";
import { KernelDispatch } from "./kernel_dispatch.ts";
import { MainDispatch } from "./main_dispatch.ts";
import type { WorkerFactory } from "./worker_pool.ts";

/** A point-in-time view of the server, for metrics. */
export interface ServerSnapshot {
  /** Every worker slot's counters (live: read them, do not keep them). */
  counters: ServerCounters;
  /** Workers that died and were replaced. */
  workerRestarts: number;
}

/** Settings the server needs (a subset of {@linkcode Config}). */
export type ServerConfig = Pick<
  Config,
  | "port"
  | "host"
  | "workers"
  | "dispatch"
  | "idleTimeout"
  | "writeTimeout"
  | "maxConnections"
  | "logLevel"
  | "logFormat"
  | "handler"
  | "handlerTimeout"
  | "proxyProtocol"
>;

/** A running server, in either dispatch mode. */
export interface Server {
  /**
   * Listens, starts the workers, waits until all are ready, then serves.
   *
   * @returns The address listened on (with the real port when `port` was 0).
   */
  start(): Promise<Deno.NetAddr>;
  /**
   * Stops accepting, lets open connections finish for up to `timeout` seconds, closes the
   * rest, then stops the workers.
   *
   * @param timeout Seconds.
   */
  shutdown(timeout: number): Promise<void>;
  /** Counters and gauges as of now. */
  snapshot(): ServerSnapshot;
}

/**
 * Creates the server for the configured dispatch mode.
 *
 * @param config Validated settings.
 * @param spawn Creates a connection worker.
 * @returns The server, not yet started.
 */
export function createServer(config: ServerConfig, spawn: WorkerFactory): Server {
  return config.dispatch === "kernel"
    ? new KernelDispatch(config, spawn)
    : new MainDispatch(config, spawn);
}
