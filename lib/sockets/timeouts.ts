/**
 * `--idle-timeout` and `--write-timeout`, enforced by a sweep every {@linkcode SWEEP_MS} over the
 * open connections instead of a timer per connection (a timer per chunk would cost more than the
 * echo itself).
 *
 * Runs on whichever thread owns the sockets: the main thread in `main` dispatch, each worker in
 * `kernel` dispatch.
 *
 * @module
 */

/** How often the sweep runs, in milliseconds. */
export const SWEEP_MS = 250;

/** What the sweep needs of a connection. */
export interface TimedConnection {
  /**
   * Set when a byte is read or written; the sweep clears it and notes the time. A flag, not a
   * clock read, because it is on the path of every chunk.
   */
  active: boolean;
  /** `performance.now()` when the sweep last saw the connection active. */
  lastSeenActive: number;
  /** Set when a socket write takes any byte; cleared by the sweep, like `active`. */
  wrote: boolean;
  /** `performance.now()` when the sweep last saw output pending and moving (or none pending). */
  lastWriteProgress: number;
  /** Whether output is waiting to be written to the socket. */
  readonly writing: boolean;
  /**
   * Whether input read from the socket waits for a handler on another thread to take it: the
   * connection is not idle, however long ago it was read (that thread may be busy or starved).
   */
  readonly inputInTransit: boolean;
  /** Closes the connection now. */
  disconnect(reason: "idle" | "write-timeout"): void;
}

/**
 * Closes the connections past their idle or write timeout.
 *
 * @param connections The open connections.
 * @param idleTimeout Seconds of silence allowed; 0 = no limit.
 * @param writeTimeout Seconds that pending output may go untaken; 0 = no limit.
 * @param now The time, from `performance.now()`.
 */
export function sweepTimeouts(
  connections: Iterable<TimedConnection>,
  idleTimeout: number,
  writeTimeout: number,
  now: number = performance.now(),
): void {
  const idleCutoff = now - idleTimeout * 1000;
  const writeCutoff = now - writeTimeout * 1000;
  // Closing removes from the caller's map: walk a copy.
  for (const connection of [...connections]) {
    // Output pending and not one byte of it taken since the last look: the clock runs.
    if (!connection.writing || connection.wrote) {
      connection.wrote = false;
      connection.lastWriteProgress = now;
    } else if (writeTimeout > 0 && connection.lastWriteProgress < writeCutoff) {
      connection.disconnect("write-timeout");
      continue;
    }
    if (connection.active) {
      connection.active = false;
      connection.lastSeenActive = now;
    } else if (
      idleTimeout > 0 && connection.lastSeenActive < idleCutoff && !connection.inputInTransit
    ) {
      connection.disconnect("idle");
    }
  }
}
