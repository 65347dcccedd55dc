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
   * Creates the error.
   *
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
  /**
   * Cancels the job. A job not yet started is dropped; its promise rejects at once with the
   * signal's reason (a `DOMException` named `AbortError` unless `abort()` was given another).
   * A running job's promise rejects the same way, and the job sees its own signal abort; a job
   * that computes without awaiting anything cannot see that, so use `hardCancel` for those.
   */
  signal?: AbortSignal;
  /**
   * On cancel, if the job is running, terminate its worker (and start a new one) instead of
   * asking the job to stop: for CPU-bound jobs that never yield.
   * @default {false}
   */
  hardCancel?: boolean;
  /** Objects in the job to transfer to the worker instead of copying (such as ArrayBuffers). */
  transfer?: Transferable[];
}

/** @internal Messages between the queue and its workers. */
export type WorkMessage =
  | { type: "run"; id: number; job: unknown }
  | { type: "cancel"; id: number }
  | { type: "done"; id: number; result: unknown }
  | { type: "failed"; id: number; error: { name: string; message: string; stack?: string } }
  /** The worker is ending: it exited, closed itself, or an error escaped the job. */
  | { type: "lost"; reason: string };

interface Pending {
  id: number;
  job: unknown;
  transfer: Transferable[];
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  hardCancel: boolean;
  /** Where the job is: waiting for room, in the backlog, running, or settled. */
  state: "room" | "backlog" | "running" | "settled";
}

interface Slot {
  worker: Worker;
  /** The job the worker is running (it may already be settled, if it was cancelled). */
  running: Pending | undefined;
}

/**
 * Runs jobs on a pool of workers, first come first served, with a bounded backlog.
 *
 * Every promise it returns settles: a job's result or error, its cancellation, the loss of its
 * worker (which is replaced), or the queue closing before a waiting submit got room.
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
  /** Submits waiting for room in the backlog, oldest first. */
  #waitingForRoom: Pending[] = [];
  /** Jobs admitted and waiting for a worker, oldest first. */
  #backlog: Pending[] = [];
  #capacity: number;
  #nextId = 1;
  #closing = false;
  #drained = Promise.withResolvers<void>();
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

  /** Jobs in the backlog, waiting for a worker (at most `capacity`). */
  get waiting(): number {
    return this.#backlog.length;
  }

  /** Jobs running now whose submitters still wait for them. */
  get running(): number {
    return this.#slots.filter((slot) => slot.running?.state === "running").length;
  }

  /**
   * Submits a job. If the backlog is full, the job waits for room first (backpressure): the
   * promise then settles later, but a cancel still takes effect at once.
   *
   * @param job The job's input; cloned to the worker (or transferred, see `transfer`).
   * @param options Cancellation and transfer list.
   * @returns The job's result.
   * @throws {JobError} If the job threw in the worker (its error as `cause`), or its worker
   *   ended while running it (exited, closed itself, or an error escaped the job).
   * @throws {unknown} The signal's reason if cancelled through `signal` (an `AbortError`
   *   `DOMException` unless `abort()` was given another reason).
   * @throws {Error} If the queue is closed, or closes before the job got room.
   */
  submit(job: Job, options: SubmitOptions = {}): Promise<Result> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closing) return Promise.reject(new Error("WorkQueue is closed: no new jobs"));
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const pending: Pending = {
      id: this.#nextId++,
      job,
      transfer: options.transfer ?? [],
      resolve,
      reject,
      signal,
      onAbort: undefined,
      hardCancel: options.hardCancel ?? false,
      state: "room",
    };
    if (signal !== undefined) {
      pending.onAbort = () => this.#cancel(pending);
      signal.addEventListener("abort", pending.onAbort, { once: true });
    }
    this.#waitingForRoom.push(pending);
    this.#pump();
    return promise as Promise<Result>;
  }

  /**
   * Stops taking jobs: new submits reject, and so do submits still waiting for room; jobs in
   * the backlog and running ones finish (or fail, or are cancelled); then the workers stop.
   * Idempotent.
   *
   * @returns When every admitted job has settled and the workers are stopped.
   */
  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      for (const pending of this.#waitingForRoom.splice(0)) {
        this.#settle(pending, () => pending.reject(new Error("WorkQueue is closed: no new jobs")));
      }
      this.#checkDrained();
    }
    await this.#drained.promise;
    for (const slot of this.#slots) slot.worker.terminate();
  }

  /** Admits waiting submits while the backlog has room, and starts jobs on idle workers. */
  #pump(): void {
    while (true) {
      while (this.#waitingForRoom.length > 0 && this.#backlog.length < this.#capacity) {
        const pending = this.#waitingForRoom.shift()!;
        pending.state = "backlog";
        this.#backlog.push(pending);
      }
      const idle = this.#slots.find((slot) => slot.running === undefined);
      const next = idle === undefined ? undefined : this.#backlog.shift();
      if (idle === undefined || next === undefined) break;
      next.state = "running";
      idle.running = next;
      const message: WorkMessage = { type: "run", id: next.id, job: next.job };
      try {
        idle.worker.postMessage(message, next.transfer);
      } catch (error) {
        // The job could not be cloned to the worker: it fails alone.
        idle.running = undefined;
        this.#settle(next, () => next.reject(new JobError(`Job not sent: ${error}`)));
      }
    }
    this.#checkDrained();
  }

  #receive(slot: Slot, message: WorkMessage): void {
    if (message.type === "lost") {
      this.#workerLost(slot, message.reason);
      return;
    }
    const pending = slot.running;
    if (pending === undefined || !("id" in message) || message.id !== pending.id) return;
    switch (message.type) {
      case "done":
        slot.running = undefined;
        this.#settle(pending, () => pending.resolve(message.result));
        break;
      case "failed": {
        const { error } = message;
        const cause = Object.assign(new Error(error.message), error);
        slot.running = undefined;
        this.#settle(
          pending,
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
    this.#pump();
  }

  /** Settles a job once: runs `settle` unless it already settled, and forgets its signal. */
  #settle(pending: Pending, settle: () => void): void {
    if (pending.state === "settled") return;
    pending.state = "settled";
    if (pending.onAbort) pending.signal?.removeEventListener("abort", pending.onAbort);
    settle();
  }

  #cancel(pending: Pending): void {
    const reason = pending.signal?.reason;
    switch (pending.state) {
      case "room":
        this.#waitingForRoom.splice(this.#waitingForRoom.indexOf(pending), 1);
        break;
      case "backlog":
        this.#backlog.splice(this.#backlog.indexOf(pending), 1);
        break;
      case "running": {
        const slot = this.#slots.find((s) => s.running === pending);
        if (slot !== undefined && pending.hardCancel) {
          this.#replace(slot);
        } else if (slot !== undefined) {
          // Ask the job to stop (it sees its signal abort); the worker stays busy until it
          // returns, and its late result then settles nothing.
          const message: WorkMessage = { type: "cancel", id: pending.id };
          slot.worker.postMessage(message);
        }
        break;
      }
      case "settled":
        return;
    }
    this.#settle(pending, () => pending.reject(reason));
    this.#pump();
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
      this.#workerLost(slot, event.message);
    };
    return slot;
  }

  /** A worker ended under a job: fail the job (if it still waits) and start a new worker. */
  #workerLost(slot: Slot, reason: string): void {
    if (!this.#slots.includes(slot)) return; // already replaced
    const pending = slot.running;
    this.#replace(slot);
    if (pending !== undefined) {
      this.#settle(
        pending,
        () => pending.reject(new JobError(`Worker failed while running a job: ${reason}`)),
      );
    }
    this.#pump();
  }

  /** Terminates a slot's worker and puts a new one in its place. */
  #replace(slot: Slot): void {
    slot.worker.terminate();
    slot.running = undefined;
    const index = this.#slots.indexOf(slot);
    if (index >= 0) this.#slots[index] = this.#spawn(index);
  }

  #checkDrained(): void {
    if (!this.#closing || this.#waitingForRoom.length > 0 || this.#backlog.length > 0) return;
    // Jobs cancelled while running no longer hold anyone up.
    if (this.#slots.some((slot) => slot.running?.state === "running")) return;
    this.#drained.resolve();
  }
}
