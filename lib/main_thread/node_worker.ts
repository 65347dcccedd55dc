/**
 * Starts a connection worker as a `node:worker_threads` worker and presents it to the pool as a
 * {@linkcode WorkerHandle}, like a Web Worker. Used in `kernel` dispatch for one reason: Deno
 * 2.9.6 honours `resourceLimits.maxYoungGenerationSizeMb` only for such workers, and capping
 * each busy worker's young generation is what keeps 10,000 connections within budget (V8 grows
 * it to 16 MiB semi-spaces per isolate under load; the launch flag that would cap it applies to
 * every isolate, and costs `main` dispatch's main thread 12-22%).
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { SHARE_ENV, Worker as NodeWorker } from "node:worker_threads";
import type { WorkerHandle } from "./worker_pool.ts";

/**
 * Starts `module` in a `node:worker_threads` worker.
 *
 * @param module The worker module (it must accept both worker flavours, as
 *   `workers/connection_worker.ts` does).
 * @param name The worker's name (its thread's name too).
 * @param youngGenerationMb Cap on its young generation, in MiB.
 * @returns A handle the pool can drive.
 */
export function startNodeWorker(
  module: URL,
  name: string,
  youngGenerationMb: number,
): WorkerHandle {
  const worker = new NodeWorker(module, {
    name,
    // The environment as a Web Worker sees it (the process's own). Node's default copies it,
    // which reads every variable: without --allow-env, a permission prompt in a terminal.
    env: SHARE_ENV,
    resourceLimits: { maxYoungGenerationSizeMb: youngGenerationMb },
  });
  let terminated = false;
  const handle: WorkerHandle = {
    onmessage: null,
    onerror: null,
    postMessage(message: unknown, transfer: Transferable[] = []) {
      // deno-lint-ignore no-explicit-any
      worker.postMessage(message, transfer as any);
    },
    terminate() {
      terminated = true;
      worker.terminate();
    },
  };
  const fail = (message: string) => {
    const event = new ErrorEvent("error", { message, cancelable: true });
    handle.onerror?.(event);
  };
  worker.on(
    "message",
    (data: unknown) => handle.onmessage?.(new MessageEvent("message", { data })),
  );
  worker.on("error", (error: Error) => fail(error?.message ?? String(error)));
  worker.on("exit", (code: number) => {
    if (!terminated) fail(`worker exited (code ${code})`);
  });
  return handle;
}
