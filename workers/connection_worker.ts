/**
 * Entry of a connection worker: serves the connections the main thread assigns to it (`main`
 * dispatch) or accepts its own (`kernel` dispatch). All the logic is in `lib/worker/runtime.ts`.
 *
 * Runs inside a worker: a module Web Worker (`main` dispatch), or a `node:worker_threads`
 * worker (`kernel` dispatch, where only that flavour takes a per-worker heap cap), which has no
 * `self`: its `parentPort` is presented as the same scope.
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
import { runWorker, type WorkerScope } from "../lib/worker/runtime.ts";

function nodeScope(port: NonNullable<typeof parentPort>): WorkerScope {
  // Deno's parentPort has neither close() nor removeAllListeners(); the runtime always reports
  // "failed" before closing, and the main thread then terminates the worker: until then, the
  // worker takes no more messages.
  let closed = false;
  const scope: WorkerScope = {
    onmessage: null,
    postMessage: (message, transfer = []) => port.postMessage(message, transfer as never),
    close: () => {
      closed = true;
    },
  };
  port.on("message", (data: unknown) => {
    if (!closed) scope.onmessage?.(new MessageEvent("message", { data }));
  });
  return scope;
}

runWorker(
  typeof self === "undefined" && parentPort !== null
    ? nodeScope(parentPort)
    : self as unknown as WorkerScope,
);
