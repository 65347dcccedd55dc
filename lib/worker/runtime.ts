/**
 * The inside of a connection worker: waits for `init`, wires its links to the other workers,
 * loads the handler, runs its `setup`, starts the transport that the dispatch mode needs, and
 * reports `ready`. Many connections are served at once on the worker's own event loop. On
 * `drain` it lets its connections finish, runs the handler's `teardown`, and reports.
 *
 * Both transports serve the byte-level contract (`SocketHandler`); a Web Streams handler is
 * served through the streams view (`streams_view.ts`) on top of it.
 * - `main` dispatch: connections arrive as frames from the main thread
 *   (`lib/dispatch/main/worker/relay_transport.ts`).
 * - `kernel` dispatch: the worker listens with `SO_REUSEPORT` and owns its sockets
 *   (`lib/dispatch/kernel/worker/kernel_listener.ts`); only control messages and shared
 *   counters cross threads.
 *
 * Runs inside a worker only (entry: `workers/connection_worker.ts`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  type HandlerContext,
  type HandlerModule,
  isSocketHandler,
  PeerError,
  type SocketHandler,
} from "../handlers/handler.ts";
import { KernelListener } from "../dispatch/kernel/worker/kernel_listener.ts";
import { RelayTransport } from "../dispatch/main/worker/relay_transport.ts";
import { BatchRing } from "../dispatch/main/frames.ts";
import { parseHandlerOptions } from "../handlers/handler_options.ts";
import {
  describeLoadError,
  HandlerLoadError,
  loadHandler,
  withDeadline,
} from "../handlers/registry.ts";
import { getLog, setupLogging } from "../log.ts";
import type { DrainResult } from "../sockets/connection_set.ts";
import {
  type FromWorker,
  isToWorker,
  received,
  type RingBatch,
  type ToWorker,
} from "../threads/messages.ts";
import { RateLimitedLog } from "../sockets/rate_limited_log.ts";
import { workerName } from "../threads/worker_slot.ts";
import { workerLog } from "./handler_log.ts";
import { PeerNetwork } from "./peer_network.ts";
import { SharedBufferClient } from "./shared_buffer_client.ts";
import { setDebugBuffers } from "./served_socket.ts";
import { CLOSED, streamsView } from "./streams_view.ts";

/** The parts of a worker's global scope that the runtime uses. */
export interface WorkerScope {
  /** Receives messages from the main thread. */
  onmessage: ((event: MessageEvent) => void) | null;
  /** Sends a message to the main thread. */
  postMessage(message: FromWorker | RingBatch, transfer?: Transferable[]): void;
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
  let relay: RelayTransport | undefined;
  let sockets: KernelListener | undefined;
  let peers: PeerNetwork | undefined;
  let loaded: HandlerModule | undefined;
  let handlerTimeoutMs = 0;
  let draining: Promise<DrainResult> | undefined;
  const drain = async (timeout: number): Promise<DrainResult> => {
    const result = await sockets?.drain(timeout) ?? { finished: 0, idle: 0, cut: 0 };
    try {
      await loaded?.teardown?.();
    } catch (error) {
      getLog().warning("Handler teardown failed: {reason}", { reason: describeLoadError(error) });
    }
    // Not closed: other workers may still send to this one until the main thread ends it.
    peers?.stop();
    return result;
  };
  let unheeded: RateLimitedLog | undefined;
  const post = (message: FromWorker | RingBatch, transfer: Transferable[] = []) =>
    scope.postMessage(message, transfer);
  const close = scope.close.bind(scope);
  const shared = new SharedBufferClient(post);
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
    // So does a message to another worker that failed and that nobody awaited: said, not fatal.
    if (event.reason instanceof PeerError) {
      unheeded ??= new RateLimitedLog(getLog());
      unheeded.warn("peer", "A message to another worker failed, unawaited: {reason}", {
        reason: event.reason.message,
      });
      return;
    }
    die(event.reason);
  });
  scope.onmessage = async (event: MessageEvent) => {
    const message = received(event.data);
    if (!isToWorker(message)) return;
    switch (message.type) {
      case "init": {
        setupLogging(message.logLevel, workerName(message.slot), message.logFormat);
        setDebugBuffers(message.debugBuffers);
        // Before anything is awaited: a `peer` message may follow this one at once.
        peers = new PeerNetwork(message.slot, message.workers, workerLog());
        for (const peer of message.peers) peer && peers.connect(peer.slot, peer.port, peer.serial);
        for (const elder of message.elders) {
          peers.connectElder(elder.slot, elder.serial, elder.port);
        }
        handlerTimeoutMs = message.handlerTimeoutMs;
        try {
          const module = await loadHandler(message.handler, message.handlerTimeoutMs);
          const context = await setUp(module, message, peers, shared);
          peers.start();
          loaded = module;
          const handler: SocketHandler = isSocketHandler(module.handler)
            ? module.handler
            : streamsView(module.handler);
          const { dispatch } = message;
          if (dispatch.mode === "kernel") {
            sockets = new KernelListener(handler, context, {
              ...dispatch,
              slot: message.slot,
              lane: message.lane,
            });
            // A generation's workers listen when told (`listen`), once all of them are ready.
            if (!dispatch.listenWhenTold) sockets.start();
          } else {
            relay = new RelayTransport(handler, context, post, new BatchRing());
          }
          post({ type: "ready" });
        } catch (error) {
          const detail = error instanceof HandlerLoadError ? error.detail : (error as Error)?.stack;
          post({ type: "failed", message: (error as Error).message, detail: detail ?? "" });
        }
        break;
      }
      case "frames":
        relay?.receive(message);
        break;
      case "peer":
        peers?.connect(message.slot, message.port, message.serial);
        break;
      case "peer-lost":
        peers?.disconnect(message.slot);
        break;
      case "shared":
        shared.receive(message);
        break;
      case "tls":
        sockets?.updateTls(message.settings);
        post({ type: "tls-applied" });
        break;
      case "drain": {
        // Asked twice (a shutdown during a reload's drain): one drain, one teardown, and the
        // connections reported once.
        const first = draining === undefined;
        draining ??= drain(message.timeout);
        const result = await draining;
        post({ type: "drained", ...(first ? result : { finished: 0, idle: 0, cut: 0 }) });
        break;
      }
      case "handover": {
        const answer = await handOver(loaded, handlerTimeoutMs);
        try {
          post(answer);
        } catch (error) {
          // Not cloneable: the reload is refused; this worker serves on.
          post({
            type: "handed-over",
            value: undefined,
            error: `handover() returned what cannot be copied to a worker: ${
              (error as Error).message
            }`,
          });
        }
        break;
      }
      case "retire":
        peers?.retire(message.successors);
        break;
      case "listen":
        try {
          sockets?.start();
          post({ type: "listening", error: undefined });
        } catch (error) {
          post({ type: "listening", error: (error as Error).message });
        }
        break;
      case "elder-gone":
        peers?.dropElder(message.serial);
        break;
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown message: ${JSON.stringify(_never)}`);
      }
    }
  };
}

/** A handler's name as users wrote it: a built-in's name, or a module's path. */
function handlerName(spec: string): string {
  return spec.startsWith("file:") ? fileURLToPath(spec) : spec;
}

/**
 * Parses the handler's options and runs its `setup` within the load deadline.
 *
 * @throws {HandlerOptionError} For an option the handler refuses.
 * @throws {HandlerLoadError} If `setup` throws or does not finish in time.
 */
async function setUp(
  module: HandlerModule,
  init: Extract<ToWorker, { type: "init" }>,
  peers: PeerNetwork,
  shared: SharedBufferClient,
): Promise<HandlerContext> {
  const name = handlerName(init.handler);
  const context: HandlerContext = {
    worker: init.slot,
    workers: init.workers,
    options: parseHandlerOptions(name, module.options, init.handlerOptions),
    log: workerLog(),
    peers,
    inherited: init.inherited,
    sharedBuffer: (name, byteLength) => shared.get(name, byteLength),
  };
  if (module.setup === undefined) return context;
  const setup = module.setup;
  await withDeadline(
    // A setup that throws at once is caught like one that rejects.
    Promise.resolve().then(() => setup(context)),
    init.handlerTimeoutMs,
    `Cannot set up handler '${name}'`,
    `setup() did not finish within ${init.handlerTimeoutMs / 1000} s`,
  );
  return context;
}

/**
 * Runs the handler's `handover` (a rolling reload is about to replace this worker) within the
 * load deadline, and says what it gave: the value, or why not.
 */
async function handOver(
  module: HandlerModule | undefined,
  timeoutMs: number,
): Promise<Extract<FromWorker, { type: "handed-over" }>> {
  const handover = module?.handover;
  if (handover === undefined) return { type: "handed-over", value: undefined, error: undefined };
  try {
    const value = await withDeadline(
      Promise.resolve().then(handover),
      timeoutMs,
      "Cannot hand over the handler's state",
      `handover() did not finish within ${timeoutMs / 1000} s`,
    );
    return { type: "handed-over", value, error: undefined };
  } catch (error) {
    return { type: "handed-over", value: undefined, error: (error as Error).message };
  }
}
