/**
 * Gives memory back after a burst of connections has gone: a thousand slow readers that leave
 * should not keep the server at its peak RSS for good.
 *
 * Why it is needed: an idle server allocates nothing, so V8 runs no garbage collection, and the
 * buffers of closed connections (their backing stores, outside the heap) are freed only when a
 * collection finds them; and glibc keeps freed small blocks in its arenas. So when a thread's
 * connection count has fallen by half from a peak at least `BURST` above it, and has stayed
 * down for `QUIET_MS`, the thread runs one full collection (`gc()`, exposed by the
 * `--expose-gc` V8 flag the server is launched with) and `malloc_trim(0)`. Steady churn never
 * triggers it: the count does not fall from its peak.
 *
 * Used on every thread that owns connections (the main thread in `main` dispatch, each worker).
 *
 * @module
 */

import { trimMallocHeap } from "./libc.ts";

/** How many connections must have gone, from a peak, before memory is worth reclaiming. */
const BURST = 256;
/** How long the count must stay down before reclaiming. */
const QUIET_MS = 2000;

/** Watches one thread's connection count and reclaims memory after a burst has left. */
export class MemoryReclaimer {
  #peak = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #count: () => number;

  /** @param count The thread's open connections now. */
  constructor(count: () => number) {
    this.#count = count;
  }

  /** Call when a connection opens or closes. */
  update(): void {
    const count = this.#count();
    if (count > this.#peak) {
      this.#peak = count;
      return;
    }
    if (this.#timer !== undefined || this.#peak - count < BURST || count > this.#peak / 2) {
      return;
    }
    this.#timer = setTimeout(() => this.#reclaim(), QUIET_MS);
    Deno.unrefTimer(this.#timer);
  }

  #reclaim(): void {
    this.#timer = undefined;
    const count = this.#count();
    if (count > this.#peak / 2) return; // a new burst came meanwhile
    this.#peak = count;
    (globalThis as { gc?: () => void }).gc?.();
    trimMallocHeap();
  }
}
