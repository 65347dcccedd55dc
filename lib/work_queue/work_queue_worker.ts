/**
 * The worker side of {@linkcode WorkQueue}: runs each job the queue sends with a function of
 * yours and sends back its result or error.
 *
 * Runs inside a work-queue worker (a module Web Worker started by `WorkQueue`).
 *
 * @module
 */

import type { WorkMessage } from "./work_queue.ts";

/** What a job function may return to transfer parts of its result instead of copying them. */
export interface Transferring<Result> {
  /** The result. */
  value: Result;
  /** Objects inside it to transfer (such as ArrayBuffers). */
  transfer: Transferable[];
}

const TRANSFERRING = Symbol("transferring");

/**
 * Marks a job result whose buffers should be transferred back to the submitting thread.
 *
 * @param value The result.
 * @param transfer Objects inside it to transfer.
 * @returns A wrapper that {@linkcode serveJobs} unwraps.
 *
 * @example
 * ```ts ignore
 * serveJobs((size: number) => {
 *   const bytes = new Uint8Array(size);
 *   return transferring(bytes, [bytes.buffer]);
 * });
 * ```
 */
export function transferring<Result>(
  value: Result,
  transfer: Transferable[],
): Transferring<Result> {
  return Object.assign({ value, transfer }, { [TRANSFERRING]: true });
}

/**
 * Serves jobs in this worker, one at a time, with `run`.
 *
 * @param run Computes a job's result; may be async; gets an AbortSignal that aborts when the
 *   submitter cancels the job. Throwing fails the job (the submitter's promise rejects with a
 *   `JobError` whose `cause` carries this error).
 *
 * @example
 * ```ts ignore
 * import { serveJobs } from "./work_queue_worker.ts";
 * serveJobs((n: number) => n * n);
 * ```
 */
export function serveJobs<Job, Result>(
  run: (
    job: Job,
    signal: AbortSignal,
  ) => Result | Transferring<Result> | Promise<Result | Transferring<Result>>,
): void {
  const scope = self as unknown as {
    onmessage: ((event: MessageEvent<WorkMessage>) => void) | null;
    postMessage(message: WorkMessage, transfer?: Transferable[]): void;
  };
  const controllers = new Map<number, AbortController>();
  scope.onmessage = async (event) => {
    const message = event.data;
    switch (message.type) {
      case "run": {
        const controller = new AbortController();
        controllers.set(message.id, controller);
        try {
          const output = await run(message.job as Job, controller.signal);
          if (typeof output === "object" && output !== null && TRANSFERRING in output) {
            const { value, transfer } = output as Transferring<Result>;
            scope.postMessage({ type: "done", id: message.id, result: value }, transfer);
          } else {
            scope.postMessage({ type: "done", id: message.id, result: output });
          }
        } catch (error) {
          const e = error instanceof Error ? error : new Error(String(error));
          scope.postMessage({
            type: "failed",
            id: message.id,
            error: { name: e.name, message: e.message, ...(e.stack ? { stack: e.stack } : {}) },
          });
        } finally {
          controllers.delete(message.id);
        }
        break;
      }
      case "cancel":
        controllers.get(message.id)?.abort(new DOMException("Job cancelled", "AbortError"));
        break;
      case "done":
      case "failed":
        break;
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown work message: ${JSON.stringify(_never)}`);
      }
    }
  };
}
