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
 *   submitter cancels the job (a job that computes without awaiting never sees it: submit such
 *   jobs with `hardCancel`). Throwing fails the job (the submitter's promise rejects with a
 *   `JobError` whose `cause` carries this error). If the job ends the worker (`Deno.exit()`,
 *   `self.close()`) or an error escapes it (a throw in a timer, a rejection nobody handles),
 *   the job fails with a `JobError` saying so and the queue starts a new worker.
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
    close(): void;
  };
  _reportEndings(scope);
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
      case "lost":
        break;
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown work message: ${JSON.stringify(_never)}`);
      }
    }
  };
}

/**
 * Makes every way this worker can end reach the queue as one `lost` message: Deno reports no
 * event for `Deno.exit()` or `self.close()` in a worker, and an error that escapes a job would
 * otherwise print Deno's own "Uncaught (in worker)" lines although the queue handles it.
 */
function _reportEndings(scope: {
  postMessage(message: WorkMessage): void;
  close(): void;
}): void {
  const close = scope.close.bind(scope);
  const exit = Deno.exit;
  let ending = false;
  const lose = (reason: string) => {
    if (ending) return;
    ending = true;
    scope.postMessage({ type: "lost", reason });
  };
  Object.defineProperty(Deno, "exit", {
    configurable: true,
    writable: true,
    value: (code?: number): never => {
      lose(`worker exited (code ${code ?? 0})`);
      return exit(code);
    },
  });
  scope.close = () => {
    lose("worker closed itself");
    close();
  };
  const escaped = (what: string, error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    lose(`${what}: ${message}`);
    close();
  };
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    escaped("uncaught error", event.error ?? event.message);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    escaped("unhandled rejection", event.reason);
  });
}
