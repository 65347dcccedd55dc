/**
 * A bounded work queue that runs jobs on a fixed pool of module workers: the ancestor's
 * "multithreaded work queue, which can be re-used for other purposes", for Deno.
 *
 * Runs on the thread that submits jobs (usually the main thread). The workers run a module that
 * calls {@linkcode serveJobs} from `work_queue_worker.ts`. Usable on its own, without the server.
 *
 * @module
 */

/** A job's error, as it crossed back from the worker. */
export class JobError extends Error {
  /**
   * @param message What failed.
   * @param options The worker's error (name, message, stack) as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "JobError";
  }
}

/** Options for {@linkcode WorkQueue}. */
export interface WorkQueueOptions {
  /**
   * Number of workers.
   * @default {navigator.hardwareConcurrency}
   */
  workers?: number;
  /**
   * Most jobs waiting to start; `submit()` waits for room beyond it (backpressure).
   * @default {64}
   */
  capacity?: number;
  /** Name prefix of the workers (shown in errors). @default {"work"} */
  name?: string;
}

/** Options for {@linkcode WorkQueue.submit}. */
export interface SubmitOptions {
  /** Cancels the job: it is dropped if not started, and its promise rejects either way. */
  signal?: AbortSignal;
  /** Objects in the job to transfer to the worker instead of copying (such as ArrayBuffers). */
  transfer?: Transferable[];
}

/** @internal Messages between the queue and its workers. */
export type WorkMessage =
  | { type: "run"; id: number; job: unknown }
  | { type: "cancel"; id: number }
  | { type: "done"; id: number; result: unknown }
  | { type: "failed"; id: number; error: { name: string; message: string; stack?: string } };

interface Pending {
  id: number;
  job: unknown;
  transfer: Transferable[];
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface Slot {
  worker: Worker;
  running: Pending | undefined;
}

/**
 * Runs jobs on a pool of workers, first come first served, with a bounded backlog.
 *
 * @typeParam Job What a job carries to the worker (structured-cloneable).
 * @typeParam Result What the worker sends back.
 *
 * @example Squaring numbers on two workers
 * ```ts
 * import { WorkQueue } from "./work_queue.ts";
 * import assert from "node:assert/strict";
 *
 * const source = `import { serveJobs } from ${JSON.stringify(
 *   new URL("./work_queue_worker.ts", import.meta.url).href,
 * )};
 * serveJobs((n) => n * n);`;
 * const url = `data:application/javascript,${encodeURIComponent(source)}`;
 * const queue = new WorkQueue<number, number>(url, { workers: 2 });
 * assert.deepEqual(await Promise.all([1, 2, 3].map((n) => queue.submit(n))), [1, 4, 9]);
 * await queue.close();
 * ```
 */
export class WorkQueue<Job, Result> {
  #slots: Slot[];
  #backlog: Pending[] = [];
  #capacity: number;
  #roomWaiters: (() => void)[] = [];
  #nextId = 1;
  #closing = false;
  #drained: (() => void) | undefined;
  #module: string | URL;
  #name: string;

  /**
   * Starts the workers.
   *
   * @param module URL of the worker module (it must call `serveJobs`).
   * @param options Pool size and backlog capacity.
   * @throws {RangeError} If `workers` or `capacity` is not a positive integer.
   */
  constructor(module: string | URL, options: WorkQueueOptions = {}) {
    const workers = options.workers ?? Math.max(1, navigator.hardwareConcurrency);
    const capacity = options.capacity ?? 64;
    for (const [name, value] of [["workers", workers], ["capacity", capacity]] as const) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`WorkQueue '${name}' must be a positive integer, got ${value}`);
      }
    }
    this.#capacity = capacity;
    this.#module = module;
    this.#name = options.name ?? "work";
    this.#slots = Array.from({ length: workers }, (_, i) => this.#spawn(i));
  }

  /** Jobs waiting to start. */
  get waiting(): number {
    return this.#backlog.length;
  }

  /** Jobs running now. */
  get running(): number {
    return this.#slots.filter((slot) => slot.running !== undefined).length;
  }

  /**
   * Submits a job. If the backlog is full, waits for room first.
   *
   * @param job The job's input; cloned to the worker (or transferred, see `transfer`).
   * @param options Cancellation and transfer list.
   * @returns The job's result.
   * @throws {JobError} If the job threw in the worker (its error as `cause`).
   * @throws {DOMException} `AbortError` if cancelled through `signal`.
   * @throws {Error} If the queue is closed.
   */
  async submit(job: Job, options: SubmitOptions = {}): Promise<Result> {
    const { signal } = options;
    signal?.throwIfAborted();
    while (this.#backlog.length >= this.#capacity && !this.#closing) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
      signal?.throwIfAborted();
    }
    if (this.#closing) throw new Error("WorkQueue is closed: no new jobs");
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const pending: Pending = {
      id: this.#nextId++,
      job,
      transfer: options.transfer ?? [],
      resolve,
      reject,
      signal,
      onAbort: undefined,
    };
    if (signal !== undefined) {
      pending.onAbort = () => this.#cancel(pending);
      signal.addEventListener("abort", pending.onAbort, { once: true });
    }
    this.#backlog.push(pending);
    this.#dispatch();
    return promise as Promise<Result>;
  }

  /**
   * Stops taking jobs: new submits reject; jobs already submitted (running or waiting) finish;
   * then the workers stop. Idempotent.
   *
   * @returns When every submitted job has settled and the workers are stopped.
   */
  async close(): Promise<void> {
    this.#closing = true;
    for (const wake of this.#roomWaiters.splice(0)) wake();
    if (this.#backlog.length > 0 || this.running > 0) {
      await new Promise<void>((resolve) => this.#drained = resolve);
    }
    for (const slot of this.#slots) slot.worker.terminate();
  }

  #dispatch(): void {
    for (const slot of this.#slots) {
      if (slot.running !== undefined) continue;
      const next = this.#backlog.shift();
      if (next === undefined) break;
      slot.running = next;
      const message: WorkMessage = { type: "run", id: next.id, job: next.job };
      slot.worker.postMessage(message, next.transfer);
      this.#roomWaiters.shift()?.();
    }
    this.#checkDrained();
  }

  #receive(slot: Slot, message: WorkMessage): void {
    const pending = slot.running;
    if (pending === undefined || !("id" in message) || message.id !== pending.id) return;
    switch (message.type) {
      case "done":
        this.#settle(slot, () => pending.resolve(message.result));
        break;
      case "failed": {
        const { error } = message;
        const cause = Object.assign(new Error(error.message), error);
        this.#settle(
          slot,
          () => pending.reject(new JobError(`Job failed: ${error.message}`, { cause })),
        );
        break;
      }
      case "run":
      case "cancel":
        break;
      default: {
        const _never: never = message;
        throw new TypeError(`Unknown work message: ${JSON.stringify(_never)}`);
      }
    }
  }

  #settle(slot: Slot, settle: () => void): void {
    const pending = slot.running!;
    slot.running = undefined;
    if (pending.onAbort) pending.signal?.removeEventListener("abort", pending.onAbort);
    settle();
    this.#dispatch();
  }

  #cancel(pending: Pending): void {
    const reason = pending.signal?.reason ?? new DOMException("Job cancelled", "AbortError");
    const queued = this.#backlog.indexOf(pending);
    if (queued >= 0) {
      this.#backlog.splice(queued, 1);
      this.#roomWaiters.shift()?.();
      pending.reject(reason);
      this.#checkDrained();
      return;
    }
    const slot = this.#slots.find((s) => s.running === pending);
    if (slot === undefined) return;
    // A running job cannot be stopped from outside its thread: ask the worker (the job sees its
    // signal abort) and reject the caller now. The slot takes new work once the job returns;
    // its late result then settles nothing (a promise settles once).
    const message: WorkMessage = { type: "cancel", id: pending.id };
    slot.worker.postMessage(message);
    pending.reject(reason);
  }

  #spawn(index: number): Slot {
    const worker = new Worker(this.#module, {
      type: "module",
      name: `${this.#name}-${index + 1}`,
    });
    const slot: Slot = { worker, running: undefined };
    worker.onmessage = (event: MessageEvent<WorkMessage>) => this.#receive(slot, event.data);
    worker.onerror = (event) => {
      // Handled here: a broken worker fails its job, not the submitting thread.
      event.preventDefault();
      this.#workerFailed(slot, event.message);
    };
    return slot;
  }

  /** A worker died (an error escaped its job): fail its job and put a new worker in its place. */
  #workerFailed(slot: Slot, message: string): void {
    slot.worker.terminate();
    const pending = slot.running;
    const index = this.#slots.indexOf(slot);
    if (index >= 0) this.#slots[index] = this.#spawn(index);
    pending?.reject(new JobError(`Worker failed while running a job: ${message}`));
    this.#dispatch();
  }

  #checkDrained(): void {
    if (this.#closing && this.#backlog.length === 0 && this.running === 0) this.#drained?.();
  }
}
