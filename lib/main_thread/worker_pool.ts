/**
 * A fixed pool of connection workers: starts them, waits until each reports ready, hands out
 * the next one round-robin, and replaces a worker that dies.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { DrainResult } from "../shared/connection_set.ts";
import { FrameWriter } from "../shared/channel.ts";
import { getLog } from "../shared/log.ts";
import { type FromWorker, isFromWorker, type ToWorker } from "../shared/messages.ts";
import { RoundRobin } from "./round_robin.ts";

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
  /** Frames to this worker. */
  readonly writer: FrameWriter;
  /** False once the worker has died or the pool has closed. */
  readonly alive: boolean;
  /**
   * Sends a control message to this worker (connection bytes go through `writer`).
   *
   * @param message The message.
   */
  post(message: ToWorker): void;
}

/** Options for {@linkcode WorkerPool}. */
export interface WorkerPoolOptions {
  /** Number of workers. */
  size: number;
  /** Creates a worker. */
  spawn: WorkerFactory;
  /** The `init` message for a slot's worker. */
  init: (slot: number) => ToWorker;
  /** Called with each batch of frames a worker sends (`main` dispatch). */
  onFrames?: (
    link: WorkerLink,
    buffer: ArrayBuffer,
    length: number,
    attached: ArrayBuffer[],
  ) => void;
  /** Called when a worker dies, before its replacement starts. */
  onLost: (link: WorkerLink) => void;
  /** How each worker is created. */
  spawnOptions?: SpawnOptions;
  /** Called when a worker reports that its drain is over (`kernel` dispatch). */
  onDrained?: (link: WorkerLink, result: DrainResult) => void;
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
  readonly writer: FrameWriter;
  alive = true;
  ready = false;

  constructor(slot: number, worker: WorkerHandle) {
    this.slot = slot;
    this.worker = worker;
    this.writer = new FrameWriter((buffer, length, attached, done) => {
      if (!this.alive) return;
      const message: ToWorker = { type: "frames", buffer, length, attached, done };
      worker.postMessage(message, [buffer, ...attached]);
    }, { oneInFlight: true });
  }

  post(message: ToWorker): void {
    if (this.alive) this.worker.postMessage(message);
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
    const started = this.#links.map((_, slot) => this.#spawn(slot));
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

  /** Stops every worker at once. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const link of this.#links) {
      if (link === undefined) continue;
      link.alive = false;
      link.worker.terminate();
    }
  }

  #spawn(slot: number): Promise<void> {
    const name = `worker-${slot + 1}`;
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
    worker.postMessage(this.#options.init(slot));
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
        if (!link.alive) break;
        this.#options.onFrames?.(link, message.buffer, message.length, message.attached);
        if (message.done) link.writer.release();
        break;
      case "ready":
        link.ready = true;
        resolve();
        break;
      case "drained":
        this.#options.onDrained?.(link, {
          finished: message.finished,
          idle: message.idle,
          cut: message.cut,
        });
        break;
      case "failed":
        if (link.ready) this.#lose(link, message.message);
        else reject(new WorkerStartError(message.message, message.detail));
        break;
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
    this.#log.error("worker-{slot} died: {reason}; closing its connections and replacing it", {
      slot: link.slot + 1,
      reason,
    });
    this.#options.onLost(link);
    if (this.#replacing) this.#replace(link.slot);
  }

  async #replace(slot: number): Promise<void> {
    while (!this.#closed && this.#replacing) {
      try {
        await this.#spawn(slot);
        this.#restarts++;
        this.#log.info("worker-{slot} replaced", { slot: slot + 1 });
        return;
      } catch (error) {
        this.#links[slot]?.worker.terminate();
        this.#log.error("Replacing worker-{slot} failed: {reason}; retrying", {
          slot: slot + 1,
          reason: (error as Error).message,
        });
        await new Promise((r) => setTimeout(r, this.#options.retryDelay ?? 1000));
      }
    }
  }
}
