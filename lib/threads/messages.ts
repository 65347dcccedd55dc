/**
 * The messages exchanged between the main thread and a worker, as typed unions split by
 * direction. Connection bytes do not appear here one by one: in `main` dispatch they travel
 * inside `frames` batches (`lib/dispatch/main/frames.ts`); in `kernel` dispatch they never
 * cross threads.
 *
 * Used on both threads.
 *
 * @module
 */

import type { DrainResult } from "../sockets/connection_set.ts";
import type { LogFormat, LogLevelName } from "../log.ts";
import type { TlsSettings } from "../sockets/tls_socket.ts";

/** A batch of frames (see `lib/dispatch/main/frames.ts`), either way. */
export interface FramesMessage {
  type: "frames";
  /**
   * Frames in the first `length` bytes; transferred. Absent: the frames are the next `length`
   * bytes of the sender's ring (`BatchRing` in `frames.ts`).
   */
  buffer?: ArrayBuffer;
  /** The sender's ring, with the first batch that uses it. */
  ring?: SharedArrayBuffer;
  length: number;
  /** Payload buffers of the batch's `DATA_REF` frames, in order; transferred. */
  attached: ArrayBuffer[];
  /** How many of the receiver's batches the sender has processed since its last batch. */
  done: number;
  /**
   * Bulk buffers the sender has finished with, for the receiver to reuse; transferred. Absent
   * when there are none (most batches): every property is cloned with every message.
   */
  spare?: ArrayBuffer[];
}

/**
 * A batch of frames waiting in the sender's ring (`BatchRing` in `frames.ts`), posted as a bare
 * number, `length * DONE_RANGE + done`: a number is the cheapest message to clone, and in
 * `main` dispatch one goes each way per request of a request/response protocol. Receivers turn
 * it back into a {@linkcode FramesMessage} with {@linkcode received} before their `switch`.
 */
export type RingBatch = number;

/** `done` counts at most this many batches less one in a {@linkcode RingBatch}. */
export const DONE_RANGE = 65536;

/**
 * A {@linkcode RingBatch} for a batch of `length` bytes.
 *
 * @param length Bytes of frames.
 * @param done See {@linkcode FramesMessage.done}.
 * @returns The number to post.
 */
export function ringBatch(length: number, done: number): RingBatch {
  return length * DONE_RANGE + done;
}

/**
 * The batch a {@linkcode RingBatch} announces.
 *
 * @param value The number received.
 * @returns It as a `frames` message without a buffer (the frames are in the ring).
 */
export function framesInRing(value: RingBatch): FramesMessage {
  return {
    type: "frames",
    length: Math.floor(value / DONE_RANGE),
    attached: [],
    done: value % DONE_RANGE,
  };
}

/**
 * A message as another thread posted it: a {@linkcode RingBatch} turned back into its `frames`
 * message, anything else as it is (to be checked with `isToWorker` or `isFromWorker`).
 *
 * @param data The `data` of a message event.
 * @returns The message.
 */
export function received(data: unknown): unknown {
  return typeof data === "number" ? framesInRing(data) : data;
}

/**
 * How a worker gets its connections. `main`: from the main thread, over the frame channel.
 * `kernel`: it listens on the server's address itself (`SO_REUSEPORT`) and owns its sockets.
 */
export type Dispatch = { mode: "main" } | ({ mode: "kernel" } & KernelDispatchInit);

/** What a worker in `kernel` dispatch needs to listen and serve on its own. */
export interface KernelDispatchInit {
  /** Address to listen on: the one the main thread reserved (real port, effective host). */
  hostname: string;
  port: number;
  /** The server's counters (see `counters.ts`), shared with the main thread. */
  counters: SharedArrayBuffer;
  /** Number of worker slots the counters were made for. */
  workers: number;
  maxConnections: number;
  /** `--max-connections-per-ip` (0 = none) and its shared table (see `address_limit.ts`). */
  maxConnectionsPerIp: number;
  perAddress: SharedArrayBuffer | undefined;
  /** This worker's share of `--max-buffered`, in bytes. */
  maxBuffered: number;
  idleTimeout: number;
  writeTimeout: number;
  /** `--drain-idle`, in milliseconds. */
  drainIdleMs: number;
  proxyProtocol: boolean;
  /** TLS settings in force (the latest reload's, for a replacement); none: plain TCP. */
  tls: TlsSettings | undefined;
  /** Milliseconds a client may take to complete its TLS handshake. */
  tlsHandshakeTimeoutMs: number;
  /**
   * Listen only when told (`listen`): the worker is one of a generation that joins the port's
   * group together. False for a replacement of a worker that died: it listens once set up.
   */
  listenWhenTold: boolean;
}

/**
 * This worker's end of a channel to another worker, and who that worker is: its slot, and its
 * serial (unique for the life of the server: a slot's workers differ in it).
 */
export interface PeerPort {
  slot: number;
  serial: number;
  /** Transferred. */
  port: MessagePort;
}

/** Sent by the main thread to a worker. */
export type ToWorker =
  /** First message: who the worker is and how to serve. Answered with `ready` or `failed`. */
  | {
    type: "init";
    /** The worker's slot in the pool, from 0 (see `worker_slot.ts`). */
    slot: number;
    /** The worker's serial, unique for the life of the server. */
    serial: number;
    /**
     * The worker's lane (see `counters.ts`): generations of workers alternate lanes, so that a
     * worker being retired and its successor write different counter rows.
     */
    lane: number;
    /** How many workers the server runs. */
    workers: number;
    logLevel: LogLevelName;
    logFormat: LogFormat;
    /** Built-in handler name, or a module URL. */
    handler: string;
    /** `--handler-option` values by name, as typed; the handler parses them. */
    handlerOptions: Record<string, string>;
    /** Milliseconds the handler module may take to load, and its `setup` to run. */
    handlerTimeoutMs: number;
    /** `--debug-buffers`: detach each buffer lent to a `data` call once the call is over. */
    debugBuffers: boolean;
    /**
     * This worker's end of a channel to each other worker, by slot (none at its own slot, or
     * for a worker being replaced: a `peer` message brings that one later).
     */
    peers: (PeerPort | undefined)[];
    /**
     * Channels to workers retired by a rolling reload and still finishing their connections:
     * they receive this worker's broadcasts, and it theirs, until `elder-gone`.
     */
    elders: PeerPort[];
    /**
     * What the handler's `handover` returned on the worker this one replaces in a rolling
     * reload (`HandlerContext.inherited`); undefined otherwise.
     */
    inherited: unknown;
    dispatch: Dispatch;
  }
  /** A batch of frames (see `channel.ts`); the buffers are transferred. */
  | FramesMessage
  /** The worker at the port's slot was replaced: this worker's end of a channel to it. */
  | ({ type: "peer" } & PeerPort)
  /** The worker at `slot` died: what is in flight to it is lost, until a `peer` message. */
  | { type: "peer-lost"; slot: number }
  /** The answer to a `share` request: the buffer, or why not (one line). */
  | {
    type: "shared";
    name: string;
    buffer: SharedArrayBuffer | undefined;
    error: string | undefined;
  }
  /**
   * `kernel` dispatch, SIGHUP: new connections use these TLS settings (already checked).
   * Answered with `tls-applied`.
   */
  | { type: "tls"; settings: TlsSettings }
  /**
   * Stop accepting (`kernel` dispatch), let open connections finish for up to `timeout`
   * seconds, close the rest, run the handler's `teardown`, then answer `drained`.
   */
  | { type: "drain"; timeout: number }
  /**
   * A rolling reload is about to replace this worker: run the handler's `handover` and answer
   * `handed-over` with its value. The worker goes on serving as before.
   */
  | { type: "handover" }
  /**
   * A rolling reload has replaced this worker: its links by slot now lead to the successors
   * (one per slot, its own included), and the links it had become elder links. A `drain`
   * follows.
   */
  | { type: "retire"; successors: PeerPort[] }
  /** The retired worker with this serial has ended: drop the elder link to it. */
  | { type: "elder-gone"; serial: number }
  /**
   * `kernel` dispatch: start listening (and accepting) now. A worker reports `ready` with its
   * handler set up but not listening yet, so that no listener joins the port's group before
   * every worker of its generation can serve. Answered with `listening`.
   */
  | { type: "listen" };

/** Sent by a worker to the main thread. */
export type FromWorker =
  /** The worker has loaded its handler and serves connections from now on. */
  | { type: "ready" }
  /**
   * The worker could not start (for example, its handler failed to load), or failed later.
   * `message` is one line; `detail` (a stack) is for debug logs.
   */
  | { type: "failed"; message: string; detail?: string }
  /** A batch of frames (see `channel.ts`); the buffers are transferred. */
  | FramesMessage
  /** The drain is over, and this is how the worker's connections ended (none in `main`). */
  | ({ type: "drained" } & DrainResult)
  /** The handler asks for the shared buffer `name` (`HandlerContext.sharedBuffer`). */
  | { type: "share"; name: string; byteLength: number }
  /** `kernel` dispatch: the worker uses the `tls` message's settings for new connections now. */
  | { type: "tls-applied" }
  /**
   * The answer to `handover`: the value the handler's `handover` returned (undefined without
   * one), or why it failed (one line).
   */
  | { type: "handed-over"; value: unknown; error: string | undefined }
  /** The answer to `listen`: listening now, or why not (one line). */
  | { type: "listening"; error: string | undefined };

/**
 * Checks that a value received from another thread is a {@linkcode FromWorker} message.
 *
 * @param value The `data` of a message event.
 * @returns Whether it has a known `type`.
 */
export function isFromWorker(value: unknown): value is FromWorker {
  if (typeof value !== "object" || value === null) return false;
  const type = (value as { type?: unknown }).type;
  return type === "ready" || type === "failed" || type === "frames" || type === "drained" ||
    type === "share" || type === "tls-applied" || type === "handed-over" ||
    type === "listening";
}

/**
 * Checks that a value received from the main thread is a {@linkcode ToWorker} message.
 *
 * @param value The `data` of a message event.
 * @returns Whether it has a known `type`.
 */
export function isToWorker(value: unknown): value is ToWorker {
  if (typeof value !== "object" || value === null) return false;
  const type = (value as { type?: unknown }).type;
  return type === "init" || type === "frames" || type === "peer" || type === "peer-lost" ||
    type === "shared" || type === "tls" || type === "drain" || type === "handover" ||
    type === "retire" || type === "elder-gone" || type === "listen";
}
