/**
 * The open connections of whichever thread owns their sockets, with what both dispatch modes do
 * to them as a set: the idle and write-timeout sweep, and waiting until none is left (the drain).
 *
 * Runs on the main thread in `main` dispatch, in each worker in `kernel` dispatch.
 *
 * @module
 */

import { MemoryReclaimer } from "./reclaim.ts";
import { SWEEP_MS, sweepTimeouts, type TimedConnection } from "./timeouts.ts";

/** What the set needs of a connection. */
export interface SetMember extends TimedConnection {
  /** Server-wide connection id. */
  readonly id: number;
  /** Set by `disconnect()` when input or output was still pending (the connection was reset). */
  readonly cut: boolean;
  /** Whether closing now would lose input or output. */
  readonly pending: boolean;
  /** Closes the connection; resets it if input or output is pending. */
  disconnect(reason: "idle" | "write-timeout" | "shutdown"): void;
}

/** How often the drain looks for connections that have gone quiet. */
const DRAIN_POLL_MS = 250;

/** How the connections open when a drain began ended. */
export interface DrainResult {
  /** Finished by themselves before the deadline. */
  finished: number;
  /** Still open at the deadline with nothing pending: closed, nothing lost. */
  idle: number;
  /** Still open at the deadline with input or output pending: reset. */
  cut: number;
}

/** Open connections by id. */
export class ConnectionSet<C extends SetMember> {
  /** During a drain, a connection with nothing pending and silent this long has finished. */
  readonly drainIdleMs: number;
  #connections = new Map<number, C>();
  /** Accepted and not yet added: a TLS handshake or a PROXY header under way. */
  #admitting = 0;
  /** Admissions that ended without the connection being served, during a drain of all. */
  #unserved = 0;
  #drainingAll = false;
  #reclaimer = new MemoryReclaimer(() => this.#connections.size);
  #onEmpty: (() => void) | undefined;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;

  /** @param drainIdleMs `--drain-idle` in milliseconds; 0: a drain closes none as idle. */
  constructor(drainIdleMs: number) {
    this.drainIdleMs = drainIdleMs;
  }

  /** How many are open. */
  get size(): number {
    return this.#connections.size;
  }

  /** Connections held: open ones, and those whose TLS handshake or PROXY header is under way. */
  get held(): number {
    return this.#connections.size + this.#admitting;
  }

  /** Whether a drain of all has begun: from then on it tallies every close itself. */
  get drainingAll(): boolean {
    return this.#drainingAll;
  }

  /** A connection was accepted; it is added once its TLS handshake or PROXY header is done. */
  beginAdmission(): void {
    this.#admitting++;
  }

  /**
   * An admission ended: the connection was added (`served`), or closed (its handshake or
   * header failed). A drain counts the latter as finished: the client went away, or never
   * spoke the protocol.
   *
   * @param served Whether it was added.
   */
  endAdmission(served: boolean): void {
    this.#admitting--;
    if (!served && this.#drainingAll) this.#unserved++;
    if (this.#admitting === 0 && this.#connections.size === 0) this.#onEmpty?.();
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
    this.#reclaimer.update();
  }

  /**
   * Removes a closed connection; wakes a {@linkcode ConnectionSet.waitUntilNone} whose last it
   * was.
   *
   * @param id Connection id.
   */
  delete(id: number): void {
    this.#connections.delete(id);
    this.#reclaimer.update();
    if (this.#connections.size === 0 && this.#admitting === 0) this.#onEmpty?.();
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
   * The drain, as HAProxy's soft stop does it: the connections keep being served (read and
   * answered) until each finishes or `ms` pass. A connection with nothing pending that stays
   * silent both ways for `drainIdleMs` has finished as far as the server can tell: it is
   * closed then (a telnet session left open must not hold the stop for the whole timeout).
   * At the deadline the rest are closed, and those with input or output pending are reset, so
   * that their clients cannot take a short answer for a complete one.
   *
   * A drain of some of the connections (those of workers a reload retired) leaves the others
   * alone. A drain of all stops the timeout sweeps: it watches activity itself, and its
   * deadline bounds all. It also waits for the admissions under way (TLS handshakes, PROXY
   * headers): one that completes is served and drained like the rest, one that fails counts as
   * finished, and one still under way at the deadline as cut (the thread's end closes it).
   *
   * @param ms Most milliseconds to wait.
   * @param which The connections to drain; all if omitted.
   * @returns How the connections open at the start ended (and any that joined meanwhile).
   */
  async drain(ms: number, which?: (connection: C) => boolean): Promise<DrainResult> {
    const all = which === undefined;
    if (all) {
      this.stopSweeps();
      this.#drainingAll = true;
      this.#unserved = 0;
    }
    const members = () => [...this.#connections.values()].filter((c) => which?.(c) ?? true);
    const admitting = () => all ? this.#admitting : 0;
    const start = performance.now();
    const deadline = start + ms;
    const lastActive = new Map<C, number>();
    const seen = new Set<C>(members());
    let idle = 0;
    let cut = 0;
    while ((members().length > 0 || admitting() > 0) && performance.now() < deadline) {
      await this.waitUntilNone(Math.min(DRAIN_POLL_MS, deadline - performance.now()), which);
      const now = performance.now();
      for (const connection of members()) {
        seen.add(connection); // one accepted just as the drain began is drained too
        if (connection.active) {
          connection.active = false;
          lastActive.set(connection, now);
        } else if (
          this.drainIdleMs > 0 && !connection.pending && !connection.inputInTransit &&
          now - (lastActive.get(connection) ?? start) >= this.drainIdleMs
        ) {
          connection.disconnect("shutdown");
          idle++;
        }
      }
    }
    for (const connection of members()) {
      seen.add(connection);
      connection.disconnect("shutdown");
      if (connection.cut) cut++;
      else idle++;
    }
    const unfinished = admitting();
    const unserved = all ? this.#unserved : 0;
    return { finished: seen.size - idle - cut + unserved, idle, cut: cut + unfinished };
  }

  /**
   * Waits until no connection (of those `which` picks) is open, or `ms` have passed. With
   * `which`, it only looks at the start and at the deadline: checking a subset on every close
   * would cost a pass over all connections each time.
   *
   * @param ms Most milliseconds to wait.
   * @param which The connections to wait for; all if omitted.
   * @returns When none is left, or at the deadline.
   */
  waitUntilNone(ms: number, which?: (connection: C) => boolean): Promise<void> {
    const none = () => {
      if (which === undefined) return this.#connections.size === 0 && this.#admitting === 0;
      for (const connection of this.#connections.values()) if (which(connection)) return false;
      return true;
    };
    if (ms <= 0 || none()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      if (which === undefined) this.#onEmpty = done;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}
