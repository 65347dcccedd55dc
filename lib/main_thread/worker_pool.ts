/**
 * A fixed pool of connection workers: starts them, waits until each reports ready, hands out
 * the next one round-robin, and replaces a worker that dies. It also wires the workers to each
 * other, one `MessageChannel` per pair (re-wiring a replacement), keeps the server's named shared
 * buffers (`HandlerContext.sharedBuffer`), and runs the drain exchange that ends them.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { DrainResult } from "../shared/connection_set.ts";
import { getLog } from "../shared/log.ts";
import {
  type FramesMessage,
  type FromWorker,
  isFromWorker,
  type ToWorker,
} from "../shared/messages.ts";
import { SharedBufferRegistry } from "../shared/shared_buffers.ts";
import { workerName } from "../shared/worker_slot.ts";
import { RoundRobin } from "./round_robin.ts";

/** The `init` message, which the pool completes with the worker's peer ports. */
export type InitMessage = Extract<ToWorker, { type: "init" }>;

/** How long past the drain's timeout to wait for a worker's report before giving up. */
const DRAIN_REPORT_SLACK_MS = 2000;

/** The answers the pool waits for, each to a request of its own. */
type Answer = Extract<FromWorker, { type: "drained" | "tls-applied" }>;

/**
 * What the pool needs of a worker: a Web `Worker` has it, and so does the adapter that
 * `node_worker.ts` puts around a `node:worker_threads` worker.
 */
export interface WorkerHandle {
  /** Receives the worker's messages. */
  onmessage: ((event: MessageEvent) => void) | null;
  /** Receives an error that escaped the worker (or its unexpected exit). */
  onerror: ((event: ErrorEvent) => void) | null;
  /** Sends a message, transferring the listed objects. */
  postMessage(message: unknown, transfer?: Transferable[]): void;
  /** Ends the worker at once. */
  terminate(): void;
}

/** How a worker should be created. */
export interface SpawnOptions {
  /**
   * Cap on the worker's young generation in MiB (V8 semi-spaces), or undefined for V8's default.
   * Only `node:worker_threads` workers take a per-worker cap in Deno 2.9.6.
   */
  youngGenerationMb?: number | undefined;
}

/** Creates the worker for a slot; `name` shows in the worker's log lines and in errors. */
export type WorkerFactory = (name: string, options: SpawnOptions) => WorkerHandle;

/** One running worker, as connections see it. A replacement worker is a new link. */
export interface WorkerLink {
  /** Slot in the pool, from 0. */
  readonly slot: number;
  /** False once the worker has died or the pool has closed. */
  readonly alive: boolean;
  /**
   * Sends a message to this worker (nothing, once it is gone).
   *
   * @param message The message.
   * @param transfer Objects to transfer.
   */
  post(message: ToWorker, transfer?: Transferable[]): void;
}

/** Options for {@linkcode WorkerPool}. */
export interface WorkerPoolOptions {
  /** Number of workers. */
  size: number;
  /** Creates a worker. */
  spawn: WorkerFactory;
  /** The `init` message for a slot's worker (its `peers` are filled in by the pool). */
  init: (slot: number) => InitMessage;
  /** Called with each batch of frames a worker sends (`main` dispatch). */
  onFrames?: (link: WorkerLink, message: FramesMessage) => void;
  /** Called when a worker dies, before its replacement starts. */
  onLost: (link: WorkerLink) => void;
  /** How each worker is created. */
  spawnOptions?: SpawnOptions;
  /**
   * Milliseconds to wait before retrying a replacement that failed to start.
   * @default {1000}
   */
  retryDelay?: number;
  /**
   * Milliseconds a worker may take to report ready (a worker stuck in synchronous code never
   * answers at all).
   * @default {15000}
   */
  readyTimeout?: number;
}

/** A worker failed to start (for example, its handler could not be loaded). */
export class WorkerStartError extends Error {
  /** More about the failure (a stack), for debug logs; empty if there is none. */
  readonly detail: string;

  /**
   * @param message One line saying which worker failed and why.
   * @param detail More, for debug logs.
   */
  constructor(message: string, detail = "") {
    super(message);
    this.name = "WorkerStartError";
    this.detail = detail;
  }
}

class Link implements WorkerLink {
  readonly slot: number;
  readonly worker: WorkerHandle;
  alive = true;
  ready = false;

  constructor(slot: number, worker: WorkerHandle) {
    this.slot = slot;
    this.worker = worker;
  }

  post(message: ToWorker, transfer: Transferable[] = []): void {
    if (this.alive) this.worker.postMessage(message, transfer);
  }
}

/**
 * Runs `size` workers and replaces any that dies.
 *
 * @example
 * ```ts ignore
 * const pool = new WorkerPool({ size: 2, spawn, init, onFrames, onLost });
 * await pool.start();
 * const link = pool.next(); // the worker for the next connection
 * pool.close();
 * ```
 */
export class WorkerPool {
  #options: WorkerPoolOptions;
  #links: (Link | undefined)[];
  #roundRobin: RoundRobin;
  #closed = false;
  #replacing = true;
  #restarts = 0;
  /** Who waits for which answer from which worker; settled with undefined if it dies. */
  #waiting = new Map<Link, Map<Answer["type"], (answer: Answer | undefined) => void>>();
  #shared = new SharedBufferRegistry();
  #log = getLog();

  /** @param options Size, factory and callbacks. */
  constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#links = new Array(options.size).fill(undefined);
    this.#roundRobin = new RoundRobin(options.size);
  }

  /** Number of workers replaced since start. */
  get restarts(): number {
    return this.#restarts;
  }

  /**
   * Starts every worker and waits until all have reported ready.
   *
   * @throws {WorkerStartError} If any worker fails to start; the pool is then closed.
   */
  async start(): Promise<void> {
    const size = this.#links.length;
    const peers = this.#links.map(() => new Array<MessagePort | undefined>(size).fill(undefined));
    for (let i = 0; i < size; i++) {
      for (let j = i + 1; j < size; j++) {
        const { port1, port2 } = new MessageChannel();
        peers[i]![j] = port1;
        peers[j]![i] = port2;
      }
    }
    const started = this.#links.map((_, slot) => this.#spawn(slot, peers[slot]!));
    const results = await Promise.allSettled(started);
    const failure = results.find((r) => r.status === "rejected");
    if (failure !== undefined) {
      this.close();
      throw (failure as PromiseRejectedResult).reason;
    }
  }

  /**
   * The worker for the next connection, round-robin among the ready ones.
   *
   * @returns A link, or `undefined` if no worker is ready (all being replaced).
   */
  next(): WorkerLink | undefined {
    const slot = this.#roundRobin.next((i) => this.#links[i]?.ready === true);
    return slot === undefined ? undefined : this.#links[slot];
  }

  /** The workers running now, ready or not. */
  get links(): WorkerLink[] {
    return this.#links.filter((link): link is Link => link !== undefined && link.alive);
  }

  /** From now on a worker that dies is not replaced (the server is shutting down). */
  stopReplacing(): void {
    this.#replacing = false;
  }

  /**
   * Asks every running worker to drain (stop accepting, let its connections finish for up to
   * `timeout` seconds, close the rest, run the handler's `teardown`) and waits for the reports.
   *
   * @param timeout Seconds the workers may take, before a short slack.
   * @returns The reports summed, and how many workers never answered (stuck in a handler's
   *   endless loop, say). A worker that dies meanwhile counts as neither.
   */
  async drain(timeout: number): Promise<{ result: DrainResult; silent: number }> {
    const result: DrainResult = { finished: 0, idle: 0, cut: 0 };
    const silent = await this.#askEach(
      this.links,
      { type: "drain", timeout },
      "drained",
      timeout * 1000 + DRAIN_REPORT_SLACK_MS,
      (report) => {
        result.finished += report.finished;
        result.idle += report.idle;
        result.cut += report.cut;
      },
    );
    return { result, silent };
  }

  /**
   * Sends `request` to every running worker and waits until each has answered with `type` (or
   * died), or `timeoutMs` pass.
   *
   * @param request The message.
   * @param type The answer it asks for.
   * @param timeoutMs Most milliseconds to wait.
   * @returns How many workers did not answer in time.
   */
  askAll(request: ToWorker, type: Answer["type"], timeoutMs: number): Promise<number> {
    return this.#askEach(this.links, request, type, timeoutMs, () => {});
  }

  async #askEach<T extends Answer["type"]>(
    links: WorkerLink[],
    request: ToWorker,
    type: T,
    timeoutMs: number,
    onAnswer: (answer: Extract<Answer, { type: T }>) => void,
  ): Promise<number> {
    let settled = 0;
    const answers = links.map((link) =>
      this.#ask(link as Link, request, type).then((answer) => {
        settled++;
        if (answer !== undefined) onAnswer(answer);
      })
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const giveUp = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all(answers), giveUp]);
    clearTimeout(timer);
    for (const link of links) this.#waiting.get(link as Link)?.delete(type);
    return links.length - settled;
  }

  /** Sends `request` and resolves with the worker's answer, or undefined if it dies first. */
  #ask<T extends Answer["type"]>(
    link: Link,
    request: ToWorker,
    type: T,
  ): Promise<Extract<Answer, { type: T }> | undefined> {
    return new Promise((resolve) => {
      let waits = this.#waiting.get(link);
      if (waits === undefined) this.#waiting.set(link, waits = new Map());
      waits.set(type, (answer) => {
        waits.delete(type);
        resolve(answer as Extract<Answer, { type: T }> | undefined);
      });
      link.post(request);
    });
  }

  /** Stops every worker at once. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const link of this.#links) {
      if (link === undefined) continue;
      link.alive = false;
      link.worker.terminate();
    }
  }

  /** Starts the worker of a slot, with its ends of the channels to the others. */
  #spawn(slot: number, peers: (MessagePort | undefined)[]): Promise<void> {
    const name = workerName(slot);
    const worker = this.#options.spawn(name, this.#options.spawnOptions ?? {});
    const link = new Link(slot, worker);
    this.#links[slot] = link;
    const started = Promise.withResolvers<void>();
    const timeout = this.#options.readyTimeout ?? 15_000;
    const timer = setTimeout(
      () =>
        started.reject(
          new WorkerStartError(
            `Cannot start ${name}: it did not report ready within ${timeout / 1000} s`,
          ),
        ),
      timeout,
    );
    const promise = started.promise.finally(() => clearTimeout(timer));
    const { resolve, reject } = started;
    worker.onmessage = (event: MessageEvent) => {
      const message = event.data;
      if (!isFromWorker(message)) return;
      this.#receive(link, message, resolve, reject);
    };
    worker.onerror = (event: ErrorEvent) => {
      // Handled here: an error in one worker must not end the main thread.
      event.preventDefault();
      const reason = event.message || "unknown error";
      if (link.ready) this.#lose(link, reason);
      else reject(new WorkerStartError(`Cannot start ${name}: ${reason}`));
    };
    const transfer = peers.filter((port): port is MessagePort => port !== undefined);
    worker.postMessage({ ...this.#options.init(slot), peers }, transfer);
    return promise;
  }

  #receive(
    link: Link,
    message: FromWorker,
    resolve: () => void,
    reject: (error: Error) => void,
  ): void {
    switch (message.type) {
      case "frames":
        if (link.alive) this.#options.onFrames?.(link, message);
        break;
      case "ready":
        link.ready = true;
        resolve();
        break;
      case "drained":
      case "tls-applied":
        this.#waiting.get(link)?.get(message.type)?.(message);
        break;
      case "failed":
        if (link.ready) this.#lose(link, message.message);
        else reject(new WorkerStartError(message.message, message.detail));
        break;
      case "share": {
        // One buffer per name for the life of the server: a replacement gets its predecessor's.
        let buffer: SharedArrayBuffer | undefined;
        let error: string | undefined;
        try {
          buffer = this.#shared.get(message.name, message.byteLength);
        } catch (e) {
          error = (e as Error).message;
        }
        link.post({ type: "shared", name: message.name, buffer, error });
        break;
      }
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown message from worker: ${JSON.stringify(_never)}`);
      }
    }
  }

  #lose(link: Link, reason: string): void {
    if (!link.alive) return;
    link.alive = false;
    link.ready = false;
    link.worker.terminate();
    this.#log.error("{worker} died: {reason}; closing its connections and replacing it", {
      worker: workerName(link.slot),
      reason,
    });
    this.#options.onLost(link);
    for (const settle of [...this.#waiting.get(link)?.values() ?? []]) settle(undefined);
    this.#waiting.delete(link);
    this.#tellPeersLost(link.slot);
    if (this.#replacing) this.#replace(link.slot);
  }

  /** The other workers fail what is in flight to `slot` at once, instead of waiting. */
  #tellPeersLost(slot: number): void {
    for (const other of this.links) {
      if (other.slot !== slot) other.post({ type: "peer-lost", slot });
    }
  }

  async #replace(slot: number): Promise<void> {
    while (!this.#closed && this.#replacing) {
      // Fresh channels between the replacement and every running worker.
      const peers = new Array<MessagePort | undefined>(this.#links.length).fill(undefined);
      for (const other of this.links) {
        if (other.slot === slot) continue;
        const { port1, port2 } = new MessageChannel();
        peers[other.slot] = port1;
        other.post({ type: "peer", slot, port: port2 }, [port2]);
      }
      try {
        await this.#spawn(slot, peers);
        this.#restarts++;
        this.#log.info("{worker} replaced", { worker: workerName(slot) });
        return;
      } catch (error) {
        this.#links[slot]!.alive = false;
        this.#links[slot]!.worker.terminate();
        this.#tellPeersLost(slot);
        this.#log.error("Replacing {worker} failed: {reason}; retrying", {
          worker: workerName(slot),
          reason: (error as Error).message,
        });
        await new Promise((r) => setTimeout(r, this.#options.retryDelay ?? 1000));
      }
    }
  }
}
