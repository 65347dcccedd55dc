/**
 * Direct links between workers: the {@linkcode Peers} a handler sees. The main thread wires one
 * `MessageChannel` per pair of workers at start-up and re-wires a replaced worker's; no message
 * between workers passes through the main thread.
 *
 * Runs inside a worker only.
 *
 * How each directed link works:
 * - Ordered: one port per pair, and every entry of an event-loop turn goes out in one batch
 *   (one `postMessage`, since Deno's cost is per message, not per byte), in the order sent.
 * - Credit-based backpressure, as HTTP/2 flow control does it: at most `WINDOW_MESSAGES`
 *   messages and requests (and about `WINDOW_BYTES` of payload) may be unanswered on a link.
 *   The receiver acknowledges messages once it has handed them to its listener; a request's
 *   credit comes back with its reply. A sender past its window waits (its promise stays
 *   pending), so a busy receiver slows its senders instead of buffering without bound.
 * - Loud failures: when a worker dies, the main thread says so (`disconnect`): every message
 *   and request still unanswered on its link rejects with a `lost` {@linkcode PeerError}, and
 *   new ones reject with `unavailable` until its replacement is wired (`connect`).
 * - Replies bypass the window: a request already holds the credit its reply returns.
 *
 * Across a rolling reload: the retired workers finish their connections while their successors
 * serve new ones, and the two generations stay one network for broadcasts (a chat room is not
 * split). A retired worker's links by index lead to the successors (its own index included, so
 * `send` and `request` reach the state's new owner), and the links it had become elder links,
 * as the successors have to it: {@linkcode PeerNetwork.broadcast} reaches every worker of both
 * generations until the main thread says a retired one is gone.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import {
  type HandlerLog,
  type MessageListener,
  PeerError,
  type PeerRequestOptions,
  type Peers,
  type PeerSendOptions,
  type RequestListener,
} from "../handlers/handler.ts";
import { shardOf } from "../handlers/shard.ts";

/** Most messages and requests unanswered on one directed link. */
export const WINDOW_MESSAGES = 256;
/**
 * Most payload bytes (estimated, see {@linkcode estimateSize}) unanswered on one directed link;
 * a single larger message still goes when nothing else is in flight.
 */
export const WINDOW_BYTES = 4 * 1024 * 1024;

const MSG = 0;
const REQ = 1;
const OK = 2;
const ERR = 3;

/** One entry of a batch: a message, a request, or a reply. Tuples clone cheaply. */
type Entry =
  | [typeof MSG, unknown]
  | [typeof REQ, number, unknown]
  | [typeof OK, number, unknown]
  | [typeof ERR, number, string];

/** What one `postMessage` on a link carries. */
interface Batch {
  /** How many of the receiver's messages the sender has handed to its listener since last time. */
  acks: number;
  entries: Entry[];
}

/** A message or request waiting for its acknowledgement or reply. */
interface Waiter {
  size: number;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** An entry admitted to a link but held back for lack of credit. */
interface Held {
  entry: Entry;
  transfer: Transferable[];
  waiter: Waiter;
}

/**
 * A rough size of a message, for the byte window: binary payloads count their bytes, strings
 * their length, containers the sum of their first two levels; anything else 16 bytes.
 *
 * @param value The message.
 * @param depth How deep to look.
 * @returns Estimated bytes.
 */
export function estimateSize(value: unknown, depth = 2): number {
  if (typeof value === "string") return value.length;
  if (ArrayBuffer.isView(value)) return value.byteLength;
  if (value instanceof ArrayBuffer) return value.byteLength;
  if (depth === 0 || typeof value !== "object" || value === null) return 16;
  let size = 16;
  const items = Array.isArray(value) ? value : Object.values(value);
  for (const item of items) size += estimateSize(item, depth - 1);
  return size;
}

class Link {
  /** The peer's index (slot). */
  readonly peer: number;
  /** The peer's serial, unique for the life of the server (0 until it is known). */
  serial = 0;
  port: MessagePort | undefined;
  /** Entries to send at the end of this turn, with what they transfer. */
  outbox: Entry[] = [];
  /** For each entry of `outbox`: the waiter of a message or request; none for a reply. */
  outboxWaiters: (Waiter | undefined)[] = [];
  /** For each entry of `outbox`: what it transfers. */
  outboxTransfers: Transferable[][] = [];
  /** Messages from the peer handed to our listener and not yet acknowledged. */
  acksOwed = 0;
  /** Our messages sent and not yet acknowledged, oldest first. */
  unacked: Waiter[] = [];
  /** Our requests sent and not yet answered, by id. */
  requests = new Map<number, Waiter>();
  /** Entries past the window, in order. */
  held: Held[] = [];
  inFlight = 0;
  inFlightBytes = 0;

  constructor(peer: number) {
    this.peer = peer;
  }

  hasCredit(size: number): boolean {
    if (this.inFlight === 0) return true;
    return this.inFlight < WINDOW_MESSAGES && this.inFlightBytes + size <= WINDOW_BYTES;
  }
}

/** The links of one worker to every other worker. */
export class PeerNetwork implements Peers {
  /** This worker's index. */
  readonly self: number;
  /** Number of workers. */
  readonly count: number;
  #links: (Link | undefined)[];
  /** Links to retired workers still serving, by serial: they take part in broadcasts only. */
  #elders = new Map<number, Link>();
  /** Replaced by a rolling reload: index links lead to the successors, this one's own too. */
  #retired = false;
  /** The handler has been torn down: messages are acknowledged and dropped, requests refused. */
  #stopped = false;
  #log: HandlerLog;
  #messageListener: MessageListener | undefined;
  #requestListener: RequestListener | undefined;
  #started = false;
  /** Local deliveries asked for before `start()`. */
  #early: (() => void)[] = [];
  #dirty = new Set<Link>();
  #flushScheduled = false;
  #nextRequestId = 1;
  #missingListenerWarned = false;

  /**
   * @param self This worker's index.
   * @param count Number of workers.
   * @param log Where to report a listener that fails.
   */
  constructor(self: number, count: number, log: HandlerLog) {
    this.self = self;
    this.count = count;
    this.#log = log;
    this.#links = Array.from({ length: count }, (_, i) => i === self ? undefined : new Link(i));
  }

  /**
   * Wires the link to a worker (at start-up, or to the replacement of one that died).
   *
   * @param peer The worker's index.
   * @param port This worker's end of the pair's channel.
   * @param serial The worker's serial.
   */
  connect(peer: number, port: MessagePort, serial = 0): void {
    const link = this.#links[peer];
    if (link === undefined) throw new RangeError(`No link to worker index ${peer}`);
    if (link.port !== undefined) this.disconnect(peer);
    this.#wire(link, port, serial);
  }

  /**
   * Wires a link to a worker retired by a rolling reload that still serves its connections: it
   * takes part in broadcasts until {@linkcode PeerNetwork.dropElder}.
   *
   * @param peer The retired worker's index.
   * @param serial Its serial.
   * @param port This worker's end of the pair's channel.
   */
  connectElder(peer: number, serial: number, port: MessagePort): void {
    const link = new Link(peer);
    this.#elders.set(serial, link);
    this.#wire(link, port, serial);
  }

  /**
   * The retired worker with this serial has ended: what is unanswered on its link is lost.
   *
   * @param serial Its serial.
   */
  dropElder(serial: number): void {
    const link = this.#elders.get(serial);
    if (link === undefined) return;
    this.#elders.delete(serial);
    this.#fail(link);
  }

  /**
   * This worker has been replaced by a rolling reload: its links become elder links, and the
   * links by index lead to the successors, this worker's own index included.
   *
   * @param successors This worker's end of a channel to each successor.
   */
  retire(successors: { slot: number; serial: number; port: MessagePort }[]): void {
    for (const link of this.#links) {
      if (link?.port !== undefined) this.#elders.set(link.serial, link);
    }
    this.#retired = true;
    this.#links = Array.from({ length: this.count }, (_, i) => new Link(i));
    for (const { slot, serial, port } of successors) this.#wire(this.#links[slot]!, port, serial);
  }

  #wire(link: Link, port: MessagePort, serial: number): void {
    link.port = port;
    link.serial = serial;
    // Setting `onmessage` starts a port. Until `start()`, the peer's messages wait in it
    // unacknowledged, which holds the peer back like any slow receiver.
    if (this.#started) this.#listen(link, port);
  }

  #listen(link: Link, port: MessagePort): void {
    port.onmessage = (event: MessageEvent<Batch>) => this.#receive(link, event.data);
  }

  /**
   * The worker died: everything unanswered on its link is lost, and it is unavailable until
   * {@linkcode PeerNetwork.connect} wires its replacement.
   *
   * @param peer The worker's index.
   */
  disconnect(peer: number): void {
    const link = this.#links[peer];
    if (link !== undefined) this.#fail(link);
  }

  /** Closes a link's port and fails everything unanswered on it. */
  #fail(link: Link): void {
    if (link.port === undefined) return;
    link.port.onmessage = null;
    link.port.close();
    link.port = undefined;
    const peer = link.peer;
    const name = `worker-${peer + 1}`;
    const lost = () => new PeerError("lost", peer, `${name} was lost with the message in flight`);
    for (const waiter of link.unacked) waiter.reject(lost());
    for (const waiter of link.requests.values()) {
      waiter.reject(new PeerError("lost", peer, `${name} was lost before answering`));
    }
    for (const held of link.held) {
      held.waiter.reject(new PeerError("unavailable", peer, `${name} is being replaced`));
    }
    link.unacked = [];
    link.requests.clear();
    link.held = [];
    link.outbox = [];
    link.outboxWaiters = [];
    link.outboxTransfers = [];
    link.acksOwed = 0;
    link.inFlight = 0;
    link.inFlightBytes = 0;
    this.#dirty.delete(link);
  }

  /** Starts taking messages: call once the handler's `setup` has set its listeners. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    for (const link of [...this.#links, ...this.#elders.values()]) {
      if (link?.port !== undefined) this.#listen(link, link.port);
    }
    for (const deliver of this.#early.splice(0)) deliver();
  }

  /**
   * The worker has drained and its handler is torn down, but it runs until the main thread ends
   * it: from now on messages that reach it are acknowledged and dropped, and requests answered
   * with an error, so that no other worker waits on it (a chat line broadcast to a worker with
   * no clients left must not hold its sender's connection).
   */
  stop(): void {
    this.#stopped = true;
  }

  /** Closes every link (the worker is stopping). */
  close(): void {
    for (let peer = 0; peer < this.count; peer++) this.disconnect(peer);
    for (const serial of [...this.#elders.keys()]) this.dropElder(serial);
  }

  /** See {@linkcode Peers.onMessage}. */
  onMessage(listener: MessageListener): void {
    this.#messageListener = listener;
  }

  /** See {@linkcode Peers.onRequest}. */
  onRequest(listener: RequestListener): void {
    this.#requestListener = listener;
  }

  /** See {@linkcode Peers.ownerOf}. */
  ownerOf(key: string | Uint8Array): number {
    return shardOf(key, this.count);
  }

  /** See {@linkcode Peers.send}. */
  send(to: number, message: unknown, options?: PeerSendOptions): Promise<void> {
    if (to === this.self && !this.#retired) return this.#deliverLocally(message);
    return this.#enqueue(to, [MSG, message], message, options?.transfer) as Promise<void>;
  }

  #deliverLocally(message: unknown): Promise<void> {
    return this.#local(() => this.#dispatchMessage(message, this.self));
  }

  /** See {@linkcode Peers.broadcast}. */
  async broadcast(message: unknown): Promise<void> {
    const sends: Promise<void>[] = [];
    for (let peer = 0; peer < this.count; peer++) sends.push(this.send(peer, message));
    // A retired worker's own clients are still its own; and both generations hear each other.
    if (this.#retired) sends.push(this.#deliverLocally(message));
    for (const link of this.#elders.values()) {
      sends.push(this.#enqueueOn(link, [MSG, message], message, []) as Promise<void>);
    }
    const results = await Promise.allSettled(sends);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  /** See {@linkcode Peers.request}. */
  request<T = unknown>(to: number, message: unknown, options?: PeerRequestOptions): Promise<T> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const answer = to === this.self && !this.#retired
      ? this.#local(() => this.#answerLocally(message))
      : this.#enqueue(to, [REQ, this.#nextRequestId++, message], message, options?.transfer);
    if (signal === undefined) return answer as Promise<T>;
    return new Promise<T>((resolve, reject) => {
      const abort = () => reject(signal.reason);
      signal.addEventListener("abort", abort, { once: true });
      answer.then(resolve as (value: unknown) => void, reject)
        .finally(() => signal.removeEventListener("abort", abort));
    });
  }

  /** Runs `fn` on this worker after the current task (after `start()` if not started yet). */
  #local<T>(fn: () => T | Promise<T>): Promise<T> {
    if (this.#started) return Promise.resolve().then(fn);
    return new Promise<T>((resolve, reject) => {
      this.#early.push(() => Promise.resolve().then(fn).then(resolve, reject));
    });
  }

  async #answerLocally(message: unknown): Promise<unknown> {
    const listener = this.#requestListener;
    if (listener === undefined) throw this.#noListener(this.self);
    try {
      return await listener(message, this.self);
    } catch (error) {
      throw new PeerError("remote", this.self, describe(error), { cause: error });
    }
  }

  #enqueue(
    to: number,
    entry: Entry,
    message: unknown,
    transfer: Transferable[] = [],
  ): Promise<unknown> {
    const link = this.#links[to];
    if (link === undefined) {
      const why = Number.isInteger(to) && to >= 0 && to < this.count
        ? "is this worker"
        : `is not a worker index (0 to ${this.count - 1})`;
      return Promise.reject(new PeerError("unavailable", to, `${to} ${why}`));
    }
    return this.#enqueueOn(link, entry, message, transfer);
  }

  #enqueueOn(
    link: Link,
    entry: Entry,
    message: unknown,
    transfer: Transferable[],
  ): Promise<unknown> {
    if (link.port === undefined) {
      return Promise.reject(
        new PeerError("unavailable", link.peer, `worker-${link.peer + 1} is being replaced`),
      );
    }
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const waiter: Waiter = { size: estimateSize(message), resolve, reject };
    if (link.held.length === 0 && link.hasCredit(waiter.size)) {
      this.#admit(link, entry, transfer, waiter);
    } else {
      link.held.push({ entry, transfer, waiter });
    }
    return promise;
  }

  /** Puts an entry in the link's outbox and counts it against the window. */
  #admit(link: Link, entry: Entry, transfer: Transferable[], waiter: Waiter): void {
    link.inFlight++;
    link.inFlightBytes += waiter.size;
    if (entry[0] === REQ) link.requests.set(entry[1], waiter);
    else link.unacked.push(waiter);
    link.outbox.push(entry);
    link.outboxWaiters.push(waiter);
    link.outboxTransfers.push(transfer);
    this.#markDirty(link);
  }

  /** Credit came back: admit held entries, in order, while it lasts. */
  #release(link: Link, size: number): void {
    link.inFlight--;
    link.inFlightBytes -= size;
    while (link.held.length > 0 && link.hasCredit(link.held[0]!.waiter.size)) {
      const held = link.held.shift()!;
      this.#admit(link, held.entry, held.transfer, held.waiter);
    }
  }

  #markDirty(link: Link): void {
    this.#dirty.add(link);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // Once this turn's callbacks are done: the batch then holds everything the turn produced.
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    // Failures below may admit held entries and mark links dirty again: that is the next flush.
    const links = [...this.#dirty];
    this.#dirty.clear();
    for (const link of links) {
      const port = link.port;
      if (port === undefined) continue;
      const batch: Batch = { acks: link.acksOwed, entries: link.outbox };
      const waiters = link.outboxWaiters;
      const transfers = link.outboxTransfers;
      link.acksOwed = 0;
      link.outbox = [];
      link.outboxWaiters = [];
      link.outboxTransfers = [];
      try {
        port.postMessage(batch, transfers.flat());
      } catch {
        // One entry that cannot be cloned must not sink the others: send them one by one.
        port.postMessage({ acks: batch.acks, entries: [] } satisfies Batch);
        batch.entries.forEach((entry, i) => {
          try {
            port.postMessage({ acks: 0, entries: [entry] } satisfies Batch, transfers[i] ?? []);
          } catch (error) {
            this.#unsendable(link, entry, waiters[i], error);
          }
        });
      }
    }
  }

  /** An entry could not be cloned: fail it where it came from. */
  #unsendable(link: Link, entry: Entry, waiter: Waiter | undefined, error: unknown): void {
    const reason = `cannot be sent to worker-${link.peer + 1}: ${describe(error)}`;
    if (waiter === undefined) {
      // A reply: the requester still gets an answer, an error.
      if (entry[0] === OK) this.#reply(link, [ERR, entry[1], `The reply ${reason}`]);
      return;
    }
    // Never delivered, so never acknowledged or answered: take it out of the counts.
    if (entry[0] === REQ) link.requests.delete(entry[1]);
    else link.unacked.splice(link.unacked.indexOf(waiter), 1);
    waiter.reject(new TypeError(`${entry[0] === REQ ? "Request" : "Message"} ${reason}`));
    this.#release(link, waiter.size);
  }

  #receive(link: Link, batch: Batch): void {
    for (let i = 0; i < batch.acks; i++) {
      const waiter = link.unacked.shift();
      if (waiter === undefined) break;
      waiter.resolve(undefined);
      this.#release(link, waiter.size);
    }
    for (const entry of batch.entries) {
      switch (entry[0]) {
        case MSG:
          this.#dispatchMessage(entry[1], link.peer);
          link.acksOwed++;
          this.#markDirty(link);
          break;
        case REQ:
          this.#answer(link, entry[1], entry[2]);
          break;
        case OK:
        case ERR: {
          const waiter = link.requests.get(entry[1]);
          if (waiter === undefined) break;
          link.requests.delete(entry[1]);
          if (entry[0] === OK) waiter.resolve(entry[2]);
          else waiter.reject(new PeerError("remote", link.peer, entry[2]));
          this.#release(link, waiter.size);
          break;
        }
        default: {
          const _never: never = entry;
          throw new TypeError(`Unknown entry: ${String(_never)}`);
        }
      }
    }
  }

  #dispatchMessage(message: unknown, from: number): void {
    if (this.#stopped) return;
    const listener = this.#messageListener;
    if (listener === undefined) {
      this.#warnNoListener("message");
      return;
    }
    try {
      listener(message, from);
    } catch (error) {
      // The listener's bug is its own: the link, and the worker, carry on.
      this.#log.warn("Message listener failed on a message from worker-{from}: {error}", {
        from: from + 1,
        error: describe(error),
      });
    }
  }

  #answer(link: Link, id: number, message: unknown): void {
    if (this.#stopped) {
      this.#reply(link, [ERR, id, `worker-${this.self + 1} has stopped`]);
      return;
    }
    const listener = this.#requestListener;
    if (listener === undefined) {
      this.#reply(link, [ERR, id, this.#noListener(this.self).message]);
      return;
    }
    let result: unknown;
    try {
      result = listener(message, link.peer);
    } catch (error) {
      this.#reply(link, [ERR, id, describe(error)]);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (value) => this.#reply(link, [OK, id, value]),
        (error) => this.#reply(link, [ERR, id, describe(error)]),
      );
    } else this.#reply(link, [OK, id, result]);
  }

  #reply(link: Link, entry: Entry): void {
    // The requester is gone (its worker died): nobody waits for this answer.
    if (link.port === undefined) return;
    link.outbox.push(entry);
    link.outboxWaiters.push(undefined);
    link.outboxTransfers.push([]);
    this.#markDirty(link);
  }

  #noListener(worker: number): PeerError {
    this.#warnNoListener("request");
    return new PeerError(
      "remote",
      worker,
      `worker-${worker + 1} has no request listener (set one in setup with peers.onRequest)`,
    );
  }

  #warnNoListener(kind: "message" | "request"): void {
    if (this.#missingListenerWarned) return;
    this.#missingListenerWarned = true;
    this.#log.warn(
      "A {kind} arrived from another worker but the handler set no listener for it " +
        "(peers.onMessage / peers.onRequest in setup)",
      { kind },
    );
  }
}

function describe(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? text;
}
