/**
 * The `init` message that tells a new worker who it is and how to serve, the same in both
 * dispatch modes but for the `dispatch` part.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { Dispatch } from "../threads/messages.ts";
import type { ServerConfig } from "./server.ts";
import type { InitSettings } from "./worker_pool.ts";

/**
 * How long a worker may take to report ready: the handler's own load deadline comes first (the
 * worker reports it); this one catches a worker that never answers at all.
 *
 * @param config The server's settings.
 * @returns Milliseconds.
 */
export function readyTimeout(config: ServerConfig): number {
  return config.handlerTimeout * 1000 + 5000;
}

/**
 * Builds a slot's `init` message (the pool adds its serial, peers and inheritance).
 *
 * @param config The server's settings.
 * @param slot The worker's slot, from 0.
 * @param lane The worker's counter lane (see `counters.ts`).
 * @param dispatch How the worker gets its connections.
 * @returns The message.
 */
export function workerInit(
  config: ServerConfig,
  slot: number,
  lane: number,
  dispatch: Dispatch,
): InitSettings {
  return {
    type: "init",
    slot,
    lane,
    workers: config.workers,
    logLevel: config.logLevel,
    logFormat: config.logFormat,
    handler: config.handler,
    handlerOptions: config.handlerOptions,
    handlerTimeoutMs: config.handlerTimeout * 1000,
    debugBuffers: config.debugBuffers,
    dispatch,
  };
}
