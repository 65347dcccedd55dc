/**
 * A fixed pool of connection workers: starts them, waits until each reports ready, hands out
 * the next one round-robin, replaces a worker that dies, and replaces them all with fresh ones
 * on a rolling reload. It also wires the workers to each other, one `MessageChannel` per pair
 * (re-wiring a replacement, and linking a reload's two generations), keeps the server's named
 * shared buffers (`HandlerContext.sharedBuffer`), and runs the exchanges that end workers.
 *
 * A rolling reload (`reload`): every worker is asked for its handler's `handover` value; a new
 * generation is started (the handler module loaded anew from disk) with those values; once
 * every new worker is ready it takes the slots, and the old ones are retired: the dispatch mode
 * lets their connections finish (`drainLinks`), then `dismiss` ends them. If any step fails,
 * the new workers are stopped and the old ones go on as if nothing happened. Generations
 * alternate counter lanes (`counters.ts`), which is why reloads never overlap.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { DrainResult } from "../sockets/connection_set.ts";
import { LANES } from "../threads/counters.ts";
import { getLog } from "../log.ts";
import {
  type FramesMessage,
  type FromWorker,
  isFromWorker,
  type PeerPort,
  received,
  type RingBatch,
  type ToWorker,
} from "../threads/messages.ts";
import { SharedBufferRegistry } from "../threads/shared_buffers.ts";
import { workerName } from "../threads/worker_slot.ts";
import { RoundRobin } from "./round_robin.ts";

/** The `init` message a worker starts with. */
export type InitMessage = Extract<ToWorker, { type: "init" }>;

/** The `init` message but for what the pool fills in: the worker's serial, peers and inheritance. */
export type InitSettings = Omit<InitMessage, "serial" | "peers" | "elders" | "inherited">;

/** How long past the drain's timeout to wait for a worker's report before giving up. */
const DRAIN_REPORT_SLACK_MS = 2000;

/** The answers the pool waits for, each to a request of its own. */
export type Answer = Extract<
  FromWorker,
  { type: "drained" | "tls-applied" | "handed-over" | "listening" }
>;

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
  /** Counter lane (see `counters.ts`): the generation's parity. */
  readonly lane: number;
  /** False once the worker has died or the pool has closed. */
  readonly alive: boolean;
  /**
   * Sends a message to this worker (nothing, once it is gone).
   *
   * @param message The message.
   * @param transfer Objects to transfer.
   */
  post(message: ToWorker | RingBatch, transfer?: Transferable[]): void;
}

/** Options for {@linkcode WorkerPool}. */
export interface WorkerPoolOptions {
  /** Number of workers. */
  size: number;
  /** Creates a worker. */
  spawn: WorkerFactory;
  /**
   * The `init` message for a slot's worker in a lane (its peers, elders and inheritance are
   * filled in by the pool); `replacement` for a worker that replaces one that died.
   */
  init: (slot: number, lane: number, replacement: boolean) => InitSettings;
  /**
   * Called once every worker of a generation (at start, and at each reload; not a replacement)
   * is ready, before the generation takes connections: `kernel` dispatch tells them to listen
   * here. A throw fails the start or the reload (the generation is stopped).
   */
  commit?: (links: WorkerLink[]) => Promise<void>;
  /** Called with each batch of frames a worker sends (`main` dispatch). */
  onFrames?: (link: WorkerLink, message: FramesMessage) => void;
  /** Called when a worker dies (a retired one included), before a replacement starts. */
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
   * answers at all), and to answer a reload's `handover`.
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

/** A rolling reload did not happen; the workers that were serving still are. One line. */
export class ReloadError extends Error {
  /** More about the failure (a stack), for debug logs; empty if there is none. */
  readonly detail: string;

  /**
   * @param message One line saying why.
   * @param detail More, for debug logs.
   */
  constructor(message: string, detail = "") {
    super(message);
    this.name = "ReloadError";
    this.detail = detail;
  }
}

class Link implements WorkerLink {
  readonly slot: number;
  readonly lane: number;
  /** Unique for the life of the pool: workers of one slot differ in it. */
  readonly serial: number;
  readonly worker: WorkerHandle;
  alive = true;
  ready = false;

  constructor(slot: number, lane: number, serial: number, worker: WorkerHandle) {
    this.slot = slot;
    this.lane = lane;
    this.serial = serial;
    this.worker = worker;
  }

  post(message: ToWorker | RingBatch, transfer: Transferable[] = []): void {
    if (this.alive) this.worker.postMessage(message, transfer);
  }
}

/** What a new worker is started with besides its `init`. */
interface Wiring {
  peers: (PeerPort | undefined)[];
  elders: PeerPort[];
  inherited: unknown;
}

/** A worker being started: its link, and when it is ready. */
interface Starting {
  link: Link;
  ready: Promise<void>;
}

/**
 * Runs `size` workers, replaces any that dies, and replaces all of them on a rolling reload.
 *
 * @example
 * ```ts ignore
 * const pool = new WorkerPool({ size: 2, spawn, init, onFrames, onLost });
 * await pool.start();
 * const link = pool.next(); // the worker for the next connection
 * const retired = await pool.reload(); // fresh workers serve from now on
 * await pool.drainLinks(retired, 10);
 * pool.dismiss(retired);
 * pool.close();
 * ```
 */
export class WorkerPool {
  #options: WorkerPoolOptions;
  /** The workers that take new connections, by slot. */
  #links: (Link | undefined)[];
  /** Workers a reload replaced, finishing their connections. */
  #retiring = new Set<Link>();
  #reloading = false;
  #roundRobin: RoundRobin;
  #closed = false;
  #replacing = true;
  #restarts = 0;
  #reloads = { ok: 0, failed: 0 };
  #nextSerial = 1;
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

  /** Number of workers replaced since start (after dying; a reload does not count). */
  get restarts(): number {
    return this.#restarts;
  }

  /** Rolling reloads done, and refused or failed, since start. */
  get reloads(): { ok: number; failed: number } {
    return { ...this.#reloads };
  }

  /**
   * Starts every worker and waits until all have reported ready.
   *
   * @throws {WorkerStartError} If any worker fails to start; the pool is then closed.
   */
  async start(): Promise<void> {
    const started = this.#startGeneration(0, this.#links.map(() => undefined), []);
    for (const { link } of started) this.#links[link.slot] = link;
    const results = await Promise.allSettled(started.map((s) => s.ready));
    const failure = results.find((r) => r.status === "rejected");
    if (failure !== undefined) {
      this.close();
      throw (failure as PromiseRejectedResult).reason;
    }
    try {
      await this.#options.commit?.(this.links);
    } catch (error) {
      this.close();
      throw error;
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

  /**
   * Whether a worker takes new connections: ready, alive, and not retired by a reload.
   *
   * @param link The worker.
   * @returns Whether it does.
   */
  takesConnections(link: WorkerLink): boolean {
    const mine = link as Link;
    return mine.ready && mine.alive && this.#links[mine.slot] === mine;
  }

  /** The workers that take new connections now, ready or not. */
  get links(): WorkerLink[] {
    return this.#links.filter((link): link is Link => link !== undefined && link.alive);
  }

  /** Every running worker: those that take new connections, and retired ones still finishing. */
  get all(): WorkerLink[] {
    return [...this.links, ...this.#retiring];
  }

  /** From now on a worker that dies is not replaced (the server is shutting down). */
  stopReplacing(): void {
    this.#replacing = false;
  }

  /**
   * A rolling reload: asks every worker for its handler's `handover` value, starts a fresh
   * worker per slot with it (loading the handler module anew), and once all are ready makes
   * them the ones that take new connections. The old workers go on serving the connections
   * they have, linked to the new ones for broadcasts; finish them with
   * {@linkcode WorkerPool.drainLinks} and {@linkcode WorkerPool.dismiss}.
   *
   * @returns The retired workers.
   * @throws {ReloadError} If a reload is running or the pool is stopping, a worker is being
   *   replaced, a `handover` fails, or a new worker fails to start; the old workers then go on
   *   as the ones that take new connections, and no new worker is left running.
   */
  async reload(): Promise<WorkerLink[]> {
    try {
      const retired = await this.#reload();
      this.#reloads.ok++;
      return retired;
    } catch (error) {
      this.#reloads.failed++;
      throw error;
    }
  }

  async #reload(): Promise<Link[]> {
    if (this.#closed || !this.#replacing) throw new ReloadError("the server is stopping");
    if (this.#reloading || this.#retiring.size > 0) {
      throw new ReloadError("the previous reload's workers are still finishing");
    }
    const old = [...this.#links];
    if (old.some((link) => link === undefined || !link.ready || !link.alive)) {
      throw new ReloadError("a worker is being replaced after dying; try again shortly");
    }
    this.#reloading = true;
    try {
      const current = old as Link[];
      const inherited = await this.#handovers(current);
      const lane = (current[0]!.lane + 1) % LANES;
      // Each old worker gets a channel to each new one: its successors by slot, and their elder.
      const successors = current.map(() => new Array<PeerPort>());
      const elders = current.map(() => new Array<PeerPort>());
      const serials = current.map(() => this.#nextSerial++);
      for (const elder of current) {
        for (const slot of current.keys()) {
          const { port1, port2 } = new MessageChannel();
          successors[elder.slot]!.push({ slot, serial: serials[slot]!, port: port1 });
          elders[slot]!.push({ slot: elder.slot, serial: elder.serial, port: port2 });
        }
      }
      const started = this.#startGeneration(lane, inherited, elders, serials);
      const fresh = started.map((s) => s.link);
      const results = await Promise.allSettled(started.map((s) => s.ready));
      let failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected")
        ?.reason as Error | undefined;
      if (failure === undefined) {
        try {
          await this.#options.commit?.(fresh);
        } catch (error) {
          failure = error as Error;
        }
      }
      const dead = fresh.find((link) => !link.alive);
      // An old worker that died meanwhile has a replacement the new generation knows nothing of.
      const replaced = current.find((link, slot) => this.#links[slot] !== link || !link.alive);
      if (failure !== undefined || dead !== undefined || replaced !== undefined) {
        for (const link of fresh) this.#end(link);
        for (const ports of successors) for (const { port } of ports) port.close();
        throw new ReloadError(
          failure?.message ??
            (dead !== undefined
              ? `${workerName(dead.slot)} died as it started`
              : `${workerName(replaced!.slot)} died during the reload; try again shortly`),
          failure instanceof WorkerStartError ? failure.detail : "",
        );
      }
      for (const link of fresh) this.#links[link.slot] = link;
      for (const link of current) {
        this.#retiring.add(link);
        const ports = successors[link.slot]!;
        link.post({ type: "retire", successors: ports }, ports.map((p) => p.port));
      }
      return current;
    } finally {
      this.#reloading = false;
    }
  }

  /** Each worker's `handover` value, by slot. */
  async #handovers(links: Link[]): Promise<unknown[]> {
    const timeout = this.#options.readyTimeout ?? 15_000;
    const values: unknown[] = [];
    const errors: string[] = [];
    const silent = await this.#askEach(
      links,
      { type: "handover" },
      "handed-over",
      timeout,
      (answer, link) => {
        if (answer.error === undefined) values[link.slot] = answer.value;
        else errors.push(`${workerName(link.slot)}: ${answer.error}`);
      },
    );
    if (errors.length > 0) throw new ReloadError(errors[0]!);
    if (silent > 0) {
      throw new ReloadError(
        `${silent} worker(s) did not answer the handover within ${timeout / 1000} s`,
      );
    }
    const lost = links.find((link) => !link.alive);
    if (lost !== undefined) {
      throw new ReloadError(`${workerName(lost.slot)} died during the reload; try again shortly`);
    }
    return values;
  }

  /**
   * Asks every running worker (retired ones too) to drain (stop accepting, let its
   * connections finish for up to `timeout` seconds, close the rest, run the handler's
   * `teardown`) and waits for the reports.
   *
   * @param timeout Seconds the workers may take, before a short slack.
   * @returns The reports summed, and how many workers never answered (stuck in a handler's
   *   endless loop, say). A worker that dies meanwhile counts as neither.
   */
  drain(timeout: number): Promise<{ result: DrainResult; silent: number }> {
    return this.drainLinks(this.all, timeout);
  }

  /**
   * Asks some workers to drain (see {@linkcode WorkerPool.drain}) and waits for their reports.
   *
   * @param links The workers.
   * @param timeout Seconds they may take, before a short slack.
   * @returns The reports summed, and how many never answered.
   */
  async drainLinks(
    links: WorkerLink[],
    timeout: number,
  ): Promise<{ result: DrainResult; silent: number }> {
    const result: DrainResult = { finished: 0, idle: 0, cut: 0 };
    const silent = await this.#askEach(
      links as Link[],
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
   * Ends retired workers (their drain is over): they stop, and the others drop their links to
   * them.
   *
   * @param links Workers that {@linkcode WorkerPool.reload} returned.
   */
  dismiss(links: WorkerLink[]): void {
    for (const link of links as Link[]) {
      if (!this.#retiring.delete(link)) continue;
      this.#end(link);
      this.#tellEldersGone(link);
    }
  }

  /**
   * Sends `request` to workers and waits until each has answered with `type` (or died), or
   * `timeoutMs` pass.
   *
   * @param request The message.
   * @param type The answer it asks for.
   * @param timeoutMs Most milliseconds to wait.
   * @param links The workers; every running one if omitted.
   * @returns The answers that came, and how many workers did not answer in time.
   */
  async askAll<T extends Answer["type"]>(
    request: ToWorker,
    type: T,
    timeoutMs: number,
    links: WorkerLink[] = this.all,
  ): Promise<{ answers: Extract<Answer, { type: T }>[]; silent: number }> {
    const answers: Extract<Answer, { type: T }>[] = [];
    const silent = await this.#askEach(
      links as Link[],
      request,
      type,
      timeoutMs,
      (answer) => answers.push(answer),
    );
    return { answers, silent };
  }

  /** Stops every worker at once. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const link of [...this.#links, ...this.#retiring]) {
      if (link !== undefined) this.#end(link);
    }
    this.#retiring.clear();
  }

  async #askEach<T extends Answer["type"]>(
    links: Link[],
    request: ToWorker,
    type: T,
    timeoutMs: number,
    onAnswer: (answer: Extract<Answer, { type: T }>, link: Link) => void,
  ): Promise<number> {
    let settled = 0;
    const answers = links.map((link) =>
      this.#ask(link, request, type).then((answer) => {
        settled++;
        if (answer !== undefined) onAnswer(answer, link);
      })
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const giveUp = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    try {
      await Promise.race([Promise.all(answers), giveUp]);
    } finally {
      clearTimeout(timer);
      for (const link of links) this.#waiting.get(link)?.delete(type);
    }
    return links.length - settled;
  }

  /** Sends `request` and resolves with the worker's answer, or undefined if it dies first. */
  #ask<T extends Answer["type"]>(
    link: Link,
    request: ToWorker,
    type: T,
  ): Promise<Extract<Answer, { type: T }> | undefined> {
    if (!link.alive) return Promise.resolve(undefined);
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

  /**
   * Starts one worker per slot in `lane`, wired to each other (and to `elders`, by slot), each
   * inheriting `inherited[slot]`.
   */
  #startGeneration(
    lane: number,
    inherited: unknown[],
    elders: PeerPort[][],
    serials = this.#links.map(() => this.#nextSerial++),
  ): Starting[] {
    const size = this.#links.length;
    const peers = serials.map(() => new Array<PeerPort | undefined>(size).fill(undefined));
    for (let i = 0; i < size; i++) {
      for (let j = i + 1; j < size; j++) {
        const { port1, port2 } = new MessageChannel();
        peers[i]![j] = { slot: j, serial: serials[j]!, port: port1 };
        peers[j]![i] = { slot: i, serial: serials[i]!, port: port2 };
      }
    }
    return serials.map((serial, slot) =>
      this.#spawn(slot, lane, serial, {
        peers: peers[slot]!,
        elders: elders[slot] ?? [],
        inherited: inherited[slot],
      })
    );
  }

  /** Starts the worker of a slot, wired as told. */
  #spawn(
    slot: number,
    lane: number,
    serial: number,
    wiring: Wiring,
    replacement = false,
  ): Starting {
    const name = workerName(slot);
    const worker = this.#options.spawn(name, this.#options.spawnOptions ?? {});
    const link = new Link(slot, lane, serial, worker);
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
    const ready = started.promise.finally(() => clearTimeout(timer));
    const { resolve, reject } = started;
    worker.onmessage = (event: MessageEvent) => {
      const message = received(event.data);
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
    const ports = [...wiring.peers, ...wiring.elders].filter((p) => p !== undefined);
    worker.postMessage(
      { ...this.#options.init(slot, lane, replacement), serial, ...wiring },
      ports.map((p) => p.port),
    );
    return { link, ready };
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
      case "handed-over":
      case "listening":
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

  /** Stops a worker; whoever waits for its answers stops waiting. */
  #end(link: Link): void {
    link.alive = false;
    link.ready = false;
    link.worker.terminate();
    for (const settle of [...this.#waiting.get(link)?.values() ?? []]) settle(undefined);
    this.#waiting.delete(link);
  }

  #lose(link: Link, reason: string): void {
    if (!link.alive) return;
    const retired = this.#retiring.delete(link);
    const current = this.#links[link.slot] === link;
    this.#end(link);
    this.#log.error(
      retired
        ? "{worker} (retired by a reload) died: {reason}; closing its connections"
        : "{worker} died: {reason}; closing its connections and replacing it",
      { worker: workerName(link.slot), reason },
    );
    this.#options.onLost(link);
    if (retired) this.#tellEldersGone(link);
    if (!current) return; // retired, or a reload's new worker not yet in service
    this.#tellPeersLost(link.slot);
    if (this.#replacing) this.#replace(link.slot, link.lane);
  }

  /** The other workers fail what is in flight to `slot` at once, instead of waiting. */
  #tellPeersLost(slot: number): void {
    for (const other of this.all) {
      if (other.slot !== slot || this.#retiring.has(other as Link)) {
        other.post({ type: "peer-lost", slot });
      }
    }
  }

  /** A retired worker has ended: the others drop their elder links to it. */
  #tellEldersGone(gone: Link): void {
    for (const other of this.all) other.post({ type: "elder-gone", serial: gone.serial });
  }

  async #replace(slot: number, lane: number): Promise<void> {
    while (!this.#closed && this.#replacing) {
      // Fresh channels between the replacement and every running worker: the current ones are
      // its peers; retired ones are its elders, and it is their peer at this slot.
      const serial = this.#nextSerial++;
      const wiring: Wiring = {
        peers: new Array<PeerPort | undefined>(this.#links.length).fill(undefined),
        elders: [],
        inherited: undefined,
      };
      for (const other of this.all as Link[]) {
        if (other.slot === slot && !this.#retiring.has(other)) continue;
        const { port1, port2 } = new MessageChannel();
        const mine = { slot: other.slot, serial: other.serial, port: port1 };
        if (this.#retiring.has(other)) wiring.elders.push(mine);
        else wiring.peers[other.slot] = mine;
        other.post({ type: "peer", slot, serial, port: port2 }, [port2]);
      }
      const { link, ready } = this.#spawn(slot, lane, serial, wiring, true);
      this.#links[slot] = link;
      try {
        await ready;
        this.#restarts++;
        this.#log.info("{worker} replaced", { worker: workerName(slot) });
        return;
      } catch (error) {
        this.#end(link);
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
