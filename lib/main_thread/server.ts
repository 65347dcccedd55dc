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

import type { DrainResult } from "../sockets/connection_set.ts";
import type { ServerCounters } from "../threads/counters.ts";
import type { TlsSettings } from "../sockets/tls_socket.ts";
import type { Config } from "./config.ts";

/** A point-in-time view of the server, for metrics. */
export interface ServerSnapshot {
  /** Every worker slot's counters (live: read them, do not keep them). */
  counters: ServerCounters;
  /** Workers that died and were replaced. */
  workerRestarts: number;
  /** Rolling reloads done, and refused or failed. */
  reloads: { ok: number; failed: number };
}

/** What a rolling reload has done once the fresh workers serve new connections. */
export interface ReloadOutcome {
  /** Connections the retired workers still serve, to be finished on the old code. */
  finishing: number;
  /** Settles once the retired workers have ended: how those connections ended. */
  retired: Promise<DrainReport>;
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
  | "shutdownTimeout"
  | "drainIdle"
  | "join"
  | "logLevel"
  | "logFormat"
  | "handler"
  | "handlerOptions"
  | "handlerTimeout"
  | "proxyProtocol"
  | "tlsHandshakeTimeout"
  | "debugBuffers"
  | "reusePort"
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
   * A rolling reload (SIGUSR2): fresh workers load the handler module anew and serve new
   * connections as soon as they are all ready; the old ones finish the connections they have,
   * as at shutdown (`--shutdown-timeout`, resets for the ones cut), then end.
   *
   * @returns Once the fresh workers serve: what is left to the old ones.
   * @throws {ReloadError} If it could not happen (the new module fails to load or set up, a
   *   reload is still finishing, ...): the old workers go on serving.
   */
  reload(): Promise<ReloadOutcome>;
  /**
   * Uses new TLS settings for the connections that start from now on (SIGHUP); open ones keep
   * theirs. Without TLS, does nothing.
   *
   * @param settings Checked certificate, key and CA.
   * @returns Once every thread that accepts connections uses them.
   */
  reloadTls(settings: TlsSettings): Promise<void>;
}
