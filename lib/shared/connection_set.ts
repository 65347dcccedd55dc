/**
 * The open connections of whichever thread owns their sockets, with what both dispatch modes do
 * to them as a set: the idle and write-timeout sweep, and waiting until none is left (the drain).
 *
 * Runs on the main thread in `main` dispatch, in each worker in `kernel` dispatch.
 *
 * @module
 */

import { SWEEP_MS, sweepTimeouts, type TimedConnection } from "./timeouts.ts";

/** What the set needs of a connection. */
export interface SetMember extends TimedConnection {
  /** Server-wide connection id. */
  readonly id: number;
}

/** Open connections by id. */
export class ConnectionSet<C extends SetMember> {
  #connections = new Map<number, C>();
  #onEmpty: (() => void) | undefined;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;

  /** How many are open. */
  get size(): number {
    return this.#connections.size;
  }

  /**
   * The connection with this id, if open.
   *
   * @param id Connection id.
   * @returns The connection.
   */
  get(id: number): C | undefined {
    return this.#connections.get(id);
  }

  /**
   * Whether a connection with this id is open.
   *
   * @param id Connection id.
   * @returns Whether it is.
   */
  has(id: number): boolean {
    return this.#connections.has(id);
  }

  /** The open connections. */
  values(): IterableIterator<C> {
    return this.#connections.values();
  }

  /**
   * Adds an open connection.
   *
   * @param connection The connection.
   */
  add(connection: C): void {
    this.#connections.set(connection.id, connection);
  }

  /**
   * Removes a closed connection; wakes {@linkcode ConnectionSet.waitForEmpty} on the last.
   *
   * @param id Connection id.
   */
  delete(id: number): void {
    this.#connections.delete(id);
    if (this.#connections.size === 0) this.#onEmpty?.();
  }

  /**
   * Closes connections past `--idle-timeout` or `--write-timeout`, every `SWEEP_MS`.
   *
   * @param idleTimeout Seconds; 0 = none.
   * @param writeTimeout Seconds; 0 = none.
   */
  startSweeps(idleTimeout: number, writeTimeout: number): void {
    if (idleTimeout <= 0 && writeTimeout <= 0) return;
    this.#sweepTimer = setInterval(
      () => sweepTimeouts(this.#connections.values(), idleTimeout, writeTimeout),
      SWEEP_MS,
    );
  }

  /** Stops the sweeps. */
  stopSweeps(): void {
    clearInterval(this.#sweepTimer);
  }

  /**
   * Waits until no connection is open, or `ms` have passed.
   *
   * @param ms Most milliseconds to wait.
   * @returns When empty, or at the deadline.
   */
  waitForEmpty(ms: number): Promise<void> {
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
}
