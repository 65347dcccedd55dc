/**
 * The inside of a connection worker: waits for `init`, loads the handler, starts the adapter
 * that the dispatch mode needs, and reports `ready`. Many connections are served at once on the
 * worker's own event loop.
 *
 * - `main` dispatch: connections arrive as frames from the main thread (`channel_adapter.ts`).
 * - `kernel` dispatch: the worker listens with `SO_REUSEPORT` and owns its sockets
 *   (`socket_server.ts`); only control messages and shared counters cross threads.
 *
 * Runs inside a worker only (entry: `workers/connection_worker.ts`).
 *
 * @module
 */

import { HandlerLoadError, loadHandler } from "../handlers/registry.ts";
import { getLog, setupLogging } from "../shared/log.ts";
import type { DrainResult } from "../shared/connection_set.ts";
import { type FromWorker, isToWorker } from "../shared/messages.ts";
import { ChannelRuntime } from "./channel_adapter.ts";
import { CLOSED } from "./run_handler.ts";
import { SocketServer } from "./socket_server.ts";

/** The parts of a worker's global scope that the runtime uses. */
export interface WorkerScope {
  /** Receives messages from the main thread. */
  onmessage: ((event: MessageEvent) => void) | null;
  /** Sends a message to the main thread. */
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  /** Ends the worker. */
  close(): void;
}

/**
 * Serves connections for the main thread: waits for `init`, loads the handler, reports `ready`,
 * then serves until the worker is terminated.
 *
 * @param scope The worker's global scope (`self`).
 */
export function runWorker(scope: WorkerScope): void {
  let channel: ChannelRuntime | undefined;
  let sockets: SocketServer | undefined;
  const post = (message: FromWorker, transfer: Transferable[] = []) =>
    scope.postMessage(message, transfer);
  const close = scope.close.bind(scope);
  // An error that escapes a handler (a throw in a stray callback) may have left this isolate in
  // any state: report it in one line and stop; the main thread replaces the worker.
  const die = (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    getLog().error("Uncaught error: {message}", { message });
    post({ type: "failed", message: `uncaught error: ${message}` });
    close();
  };
  // A handler that ends its worker on purpose (Deno.exit, self.close) would leave the main
  // thread none the wiser: Deno reports no event for it. Say so first, then go.
  const exit = Deno.exit;
  Object.defineProperty(Deno, "exit", {
    configurable: true,
    writable: true,
    value: (code?: number): never => {
      post({ type: "failed", message: `worker exited (code ${code ?? 0})` });
      return exit(code);
    },
  });
  scope.close = () => {
    post({ type: "failed", message: "worker closed itself" });
    close();
  };
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    die(event.error ?? event.message);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    // A write that failed because its connection was closed from outside concerns that
    // connection only, even if the handler never awaited it.
    if (event.reason === CLOSED) return;
    die(event.reason);
  });
  scope.onmessage = async (event: MessageEvent) => {
    const message = event.data;
    if (!isToWorker(message)) return;
    switch (message.type) {
      case "init": {
        setupLogging(message.logLevel, `worker-${message.index}`, message.logFormat);
        try {
          const handler = await loadHandler(message.handler, message.handlerTimeoutMs);
          const { dispatch } = message;
          if (dispatch.mode === "kernel") {
            sockets = new SocketServer(handler, { ...dispatch, slot: message.index - 1 });
            sockets.start();
          } else {
            channel = new ChannelRuntime(handler, post);
          }
          post({ type: "ready" });
        } catch (error) {
          const detail = error instanceof HandlerLoadError ? error.detail : (error as Error)?.stack;
          post({ type: "failed", message: (error as Error).message, detail: detail ?? "" });
        }
        break;
      }
      case "frames":
        channel?.receive(message.buffer, message.length, message.attached);
        break;
      case "drain": {
        const result: DrainResult = await sockets?.drain(message.timeout) ??
          { finished: 0, idle: 0, cut: 0 };
        post({ type: "drained", ...result });
        break;
      }
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown message: ${JSON.stringify(_never)}`);
      }
    }
  };
}
