/**
 * The server as `main.ts` sees it, whatever the dispatch mode: start, snapshot, shutdown. Each
 * mode implements it (`lib/dispatch/main/main_thread/main_dispatch.ts`,
 * `lib/dispatch/kernel/main_thread/kernel_dispatch.ts`); `main.ts` picks one. Types only, so
 * that the modes can import it and nothing imports back.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { DrainResult } from "../shared/connection_set.ts";
import type { ServerCounters } from "../shared/counters.ts";
import type { TlsSettings } from "../shared/tls_socket.ts";
import type { Config } from "./config.ts";

/** A point-in-time view of the server, for metrics. */
export interface ServerSnapshot {
  /** Every worker slot's counters (live: read them, do not keep them). */
  counters: ServerCounters;
  /** Workers that died and were replaced. */
  workerRestarts: number;
}

/** How the connections open when a shutdown began ended (see {@linkcode DrainResult}). */
export type DrainReport = DrainResult;

/**
 * Settings the server needs: a subset of {@linkcode Config}, with the TLS files read and
 * checked (see `tls_files.ts`).
 */
export type ServerConfig = ServerFlags & { tls: TlsSettings | undefined };

/** The flags the server takes as they are. */
type ServerFlags = Pick<
  Config,
  | "port"
  | "host"
  | "workers"
  | "dispatch"
  | "idleTimeout"
  | "writeTimeout"
  | "maxConnections"
  | "maxConnectionsPerIp"
  | "maxBuffered"
  | "logLevel"
  | "logFormat"
  | "handler"
  | "handlerOptions"
  | "handlerTimeout"
  | "proxyProtocol"
  | "tlsHandshakeTimeout"
  | "debugBuffers"
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
   * Stops accepting, keeps serving open connections until they finish or `timeout` seconds
   * pass, then closes the rest (resetting those with input or output pending) and stops the
   * workers.
   *
   * @param timeout Seconds.
   * @returns How the connections open at the signal ended.
   */
  shutdown(timeout: number): Promise<DrainReport>;
  /** Counters and gauges as of now. */
  snapshot(): ServerSnapshot;
  /**
   * Uses new TLS settings for the connections that start from now on (SIGHUP); open ones keep
   * theirs. Without TLS, does nothing.
   *
   * @param settings Checked certificate, key and CA.
   * @returns Once every thread that accepts connections uses them.
   */
  reloadTls(settings: TlsSettings): Promise<void>;
}
