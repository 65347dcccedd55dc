/**
 * Warnings that an attacker can cause at will (a malformed PROXY header per connection, say),
 * logged at most once a second per kind, with the count of those left out: the log stays
 * readable and small whatever a peer sends.
 *
 * Used on whichever thread meets the event.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";

/** At most one warning a second per kind. */
export class RateLimitedLog {
  #log: Logger;
  #last = new Map<string, number>();
  #suppressed = new Map<string, number>();

  /** @param log Where the warnings go. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * Logs a warning, unless one of the same kind was logged less than a second ago; then it
   * only counts it, and the next warning of that kind says how many were left out.
   *
   * @param kind What happened (the key of the rate limit).
   * @param message A LogTape message template.
   * @param properties Its values.
   */
  warn(kind: string, message: string, properties: Record<string, unknown>): void {
    const now = performance.now();
    if (now - (this.#last.get(kind) ?? -Infinity) < 1000) {
      this.#suppressed.set(kind, (this.#suppressed.get(kind) ?? 0) + 1);
      return;
    }
    this.#last.set(kind, now);
    const suppressed = this.#suppressed.get(kind) ?? 0;
    this.#suppressed.set(kind, 0);
    if (suppressed === 0) this.#log.warning(message, properties);
    else {
      this.#log.warning(message + " ({suppressed} more like it in the last second not logged)", {
        ...properties,
        suppressed,
      });
    }
  }
}
