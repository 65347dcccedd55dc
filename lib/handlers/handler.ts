/**
 * The contract between the server and a protocol: what a handler receives for each connection,
 * what it may know about its worker, how it talks to handlers on other workers, and the shape of
 * a handler module.
 *
 * A handler comes in one of two shapes, and the server runs both on the same transport:
 * - a {@linkcode SocketHandler}: one set of callbacks for every connection (opened, data,
 *   writable again, half-closed, closed), in the spirit of `Bun.listen`, uWebSockets and Netty.
 *   `data` is lent a view of the worker's read buffer, so nothing is allocated per chunk; it is
 *   the fast shape, and the built-in handlers use it;
 * - a {@linkcode Handler}: a function called once per connection with a pair of Web Streams
 *   ({@linkcode Connection}), the convenient shape (`readable.pipeTo(writable)`), built by the
 *   server on top of the first.
 *
 * Handlers run inside a worker, many connections at once on the worker's event loop. Each worker
 * loads its own copy of the handler module, so module-level state is per-worker state;
 * {@linkcode Peers} is how workers reach each other. Echo (`echo.ts`) is the built-in default;
 * `chat.ts` and `memcache/` show the rest of the contract at work.
 *
 * @module
 */

import type { CloseReason } from "../sockets/close_reason.ts";

export type { CloseReason };

/** Log methods a handler may use; lines follow `--log-level` and name the worker. */
export interface HandlerLog {
  /** Logs at `trace` level. Properties fill `{name}` placeholders in the message. */
  trace(message: string, properties?: Record<string, unknown>): void;
  /** Logs at `debug` level. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Logs at `info` level. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs at `warning` level. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs at `error` level. */
  error(message: string, properties?: Record<string, unknown>): void;
}

/** One client connection, as a protocol handler sees it. */
export interface Connection {
  /** Server-wide id of the connection, as in the logs. */
  readonly id: number;
  /** The client's address (IPv4-mapped IPv6 addresses are shown as IPv4). */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * Bytes from the client. Ends when the client shuts its write side (half-close); errors when
   * the connection is closed from outside (reset, timeout, shutdown, worker loss). Reading
   * slowly is fine: the server then stops reading from the socket (backpressure).
   */
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * Bytes to the client. Writes wait while the client is slow to read. Closing it (or returning
   * from the handler) sends what was written, then closes the connection.
   */
  readonly writable: WritableStream<Uint8Array>;
  /** Aborted when the connection is closed from outside; the reason says why. */
  readonly signal: AbortSignal;
  /** A logger whose lines name the worker and this connection (`Connection 12: ...`). */
  readonly log: HandlerLog;
  /**
   * Most bytes of output that may wait for the client: written (awaited or not) and not yet
   * taken by the socket. Past it the connection is closed at once, logged, and counted as
   * `output-overflow`. 16 MiB by default; a handler that writes without awaiting (fanning out
   * to many clients, say) sets the bound its protocol wants, as Redis's client output buffer
   * limit does.
   */
  outputLimit: number;
}

/**
 * One client connection as a {@linkcode SocketHandler} sees it: the same object in every
 * callback for that connection.
 *
 * @typeParam Data What the handler keeps per connection in {@linkcode Socket.data}.
 */
export interface Socket<Data = unknown> {
  /** Server-wide id of the connection, as in the logs. */
  readonly id: number;
  /** The client's address (IPv4-mapped IPv6 addresses are shown as IPv4). */
  readonly remoteAddr: Deno.NetAddr;
  /** What the handler knows of its worker (the same object for every connection). */
  readonly context: HandlerContext;
  /** A logger whose lines name the worker and this connection (`Connection 12: ...`). */
  readonly log: HandlerLog;
  /** The handler's own state for this connection; `undefined` until the handler sets it. */
  data: Data;
  /**
   * Bytes written and not yet taken: by the client's socket (`kernel` dispatch), or by the
   * main thread, which holds up to a window per connection (`main` dispatch).
   */
  readonly buffered: number;
  /**
   * Most bytes that may wait in {@linkcode Socket.buffered}; past it the connection is closed
   * at once, logged, and counted as `output-overflow`. 16 MiB by default.
   */
  outputLimit: number;
  /** True once the connection is closed (by either side); writes are then ignored. */
  readonly closed: boolean;
  /**
   * Sends `bytes`. What the kernel takes at once is written in the call; the rest is copied,
   * so the caller may reuse `bytes` as soon as this returns (a view lent to `data` included).
   * While more than 64 KiB wait, the server stops reading this connection (backpressure for
   * request/response protocols). Ignored once the connection has ended or closed.
   *
   * @param bytes The bytes.
   * @returns False once more than 64 KiB wait: stop writing until `drain` is called.
   * @throws {TypeError} If `bytes` is not a `Uint8Array`, or (with `--debug-buffers`) a view
   *   lent to an earlier `data` call.
   */
  write(bytes: Uint8Array): boolean;
  /**
   * Ends the connection gracefully: no more `data` is delivered, what was written is sent,
   * then the write side is shut (FIN) and the connection closes once the client has finished
   * too (or after a second). Idempotent; what the handler does afterwards is ignored.
   */
  end(): void;
  /**
   * Closes the connection at once: output not yet sent is dropped, and the client sees a
   * reset if anything was pending, so a short answer never looks complete. `end` is the
   * normal way; this one is for protocol errors.
   */
  close(): void;
  /** Stops delivering `data`: the socket is not read, so TCP holds the client back. */
  pause(): void;
  /** Delivers `data` again after {@linkcode Socket.pause}. */
  resume(): void;
}

/**
 * A byte-level handler: one set of callbacks for every connection, called on the worker's event
 * loop. Each callback may return a promise: no more `data` (nor `end`) is delivered for that
 * connection until it settles, so an asynchronous protocol stays in order without pausing by
 * hand. A callback that throws (or rejects) closes its connection at once, logged and counted
 * as `handler-error`; the worker carries on.
 *
 * The bytes `data` receives are lent, not given: a view of the worker's read buffer, valid
 * until the call returns (or its promise settles), then reused for the next read. To keep
 * bytes longer, copy them (`bytes.slice()`). With `--debug-buffers` the server detaches every
 * lent buffer after its call, so that a handler that keeps one fails loudly in its tests
 * instead of reading another connection's bytes in production.
 *
 * @typeParam Data What the handler keeps per connection in {@linkcode Socket.data}.
 *
 * @example An upper-casing echo that needs no allocation per chunk
 * ```ts
 * import type { SocketHandler } from "./handler.ts";
 * export const upper: SocketHandler = {
 *   data(socket, bytes) {
 *     for (let i = 0; i < bytes.length; i++) {
 *       const b = bytes[i]!;
 *       if (b >= 0x61 && b <= 0x7a) bytes[i] = b - 0x20; // the lent view may be changed too
 *     }
 *     socket.write(bytes);
 *   },
 * };
 * ```
 */
export interface SocketHandler<Data = unknown> {
  /** A connection has opened; set {@linkcode Socket.data} here. */
  open?(socket: Socket<Data>): void | Promise<void>;
  /**
   * Bytes from the client, lent for the length of the call.
   *
   * @param socket The connection.
   * @param bytes The bytes: a view valid until this returns (or its promise settles).
   */
  data(socket: Socket<Data>, bytes: Uint8Array): void | Promise<void>;
  /** Output that made `write` return false has all been taken: write again. */
  drain?(socket: Socket<Data>): void;
  /**
   * The client shut its write side (half-close): no more `data` follows. Without this callback
   * the server ends the connection ({@linkcode Socket.end}) once its output is sent.
   */
  end?(socket: Socket<Data>): void | Promise<void>;
  /**
   * The connection has closed, for whatever reason; called once, last.
   *
   * @param socket The connection.
   * @param reason Why, as the logs and `/metrics` name it.
   */
  close?(socket: Socket<Data>, reason: CloseReason): void;
}

/** Options for {@linkcode Peers.send} and {@linkcode Peers.request}. */
export interface PeerSendOptions {
  /**
   * Objects to transfer rather than copy (`ArrayBuffer`s, `MessagePort`s), as with
   * `postMessage`. A message to the worker's own index is not copied at all.
   */
  transfer?: Transferable[];
}

/** Options for {@linkcode Peers.request}. */
export interface PeerRequestOptions extends PeerSendOptions {
  /** Gives up waiting for the reply: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Answers a request from a handler on another worker (or on this one). */
export type RequestListener = (message: unknown, from: number) => unknown;

/** Receives a message sent with {@linkcode Peers.send} or {@linkcode Peers.broadcast}. */
export type MessageListener = (message: unknown, from: number) => void;

/**
 * The workers of the server as one handler sees them: direct, reliable, ordered links to each
 * other worker. Between any two workers, messages and requests arrive in the order they were
 * sent. Nothing is dropped silently: a receiver that falls behind holds its senders' promises
 * back (backpressure), and a message that cannot be delivered rejects with a
 * {@linkcode PeerError}. Payloads are structured-cloned, as with `postMessage`.
 */
export interface Peers {
  /** This worker's index, from 0 to `count - 1`. Logs call it `worker-<index + 1>`. */
  readonly self: number;
  /** How many workers the server runs. */
  readonly count: number;
  /**
   * Sends a message to one worker's {@linkcode MessageListener}.
   *
   * @param to The worker's index (this worker's own index delivers locally, uncopied).
   * @param message Any structured-cloneable value.
   * @param options Objects to transfer.
   * @returns Resolves once the receiving worker has handed the message to its listener; waits
   *   while that worker is behind.
   * @throws {PeerError} If the worker is being replaced, or dies before taking the message.
   */
  send(to: number, message: unknown, options?: PeerSendOptions): Promise<void>;
  /**
   * Sends a message to every worker, this one included.
   *
   * @param message Any structured-cloneable value (copied once per other worker).
   * @returns Resolves once every worker has handed it to its listener.
   * @throws {PeerError} If any worker cannot take it (the others still get it).
   */
  broadcast(message: unknown): Promise<void>;
  /**
   * Asks one worker's {@linkcode RequestListener} and waits for its answer.
   *
   * @param to The worker's index (this worker's own index calls the listener directly).
   * @param message Any structured-cloneable value.
   * @param options Objects to transfer, and a signal to stop waiting.
   * @returns What the listener returned (or resolved to), structured-cloned.
   * @throws {PeerError} If the worker is unavailable or dies first, or its listener throws.
   */
  request<T = unknown>(to: number, message: unknown, options?: PeerRequestOptions): Promise<T>;
  /**
   * Sets the function that receives messages on this worker (one per worker). Set it in
   * `setup`: messages from other workers wait until `setup` has finished.
   *
   * @param listener The listener.
   */
  onMessage(listener: MessageListener): void;
  /**
   * Sets the function that answers requests on this worker (one per worker; set it in `setup`).
   * Its return value (or what its promise resolves to) is the reply; a throw is sent back as a
   * {@linkcode PeerError}.
   *
   * @param listener The listener.
   */
  onRequest(listener: RequestListener): void;
  /**
   * The worker that owns `key`, by a stable hash (FNV-1a over the key's UTF-8 bytes): the same
   * key maps to the same worker on every worker, for the life of the server.
   *
   * @param key A string or bytes.
   * @returns A worker index.
   */
  ownerOf(key: string | Uint8Array): number;
}

/** Why a {@linkcode PeerError} happened. */
export type PeerErrorKind =
  /** The worker is not running now (it died and is being replaced), or the index is wrong. */
  | "unavailable"
  /** The worker died with the message or request in flight: it may or may not have seen it. */
  | "lost"
  /** The worker's request listener threw (or it has none); `message` says what. */
  | "remote";

/**
 * A message between workers could not be delivered or answered.
 *
 * @example
 * ```ts
 * import { PeerError } from "./handler.ts";
 * const error = new PeerError("lost", 1, "worker-2 was lost with the request in flight");
 * console.assert(error.kind === "lost" && error.peer === 1);
 * ```
 */
export class PeerError extends Error {
  /** What went wrong. */
  readonly kind: PeerErrorKind;
  /** The worker's index. */
  readonly peer: number;

  /**
   * Creates the error.
   *
   * @param kind What went wrong.
   * @param peer The worker's index.
   * @param message One line.
   * @param options The underlying error, if any.
   */
  constructor(kind: PeerErrorKind, peer: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PeerError";
    this.kind = kind;
    this.peer = peer;
  }
}

/** What a handler knows about the worker it runs on. The same object for every connection. */
export interface HandlerContext {
  /** This worker's index, from 0 (logs call it `worker-<index + 1>`). */
  readonly worker: number;
  /** How many workers the server runs. */
  readonly workers: number;
  /**
   * The handler's options (`--handler-option name=value`), each parsed by the handler's
   * {@linkcode HandlerOption}; unset ones have their default.
   */
  readonly options: Readonly<Record<string, unknown>>;
  /** A logger whose lines name this worker. */
  readonly log: HandlerLog;
  /** Links to the other workers. */
  readonly peers: Peers;
  /**
   * What the handler's {@linkcode HandlerModule.handover} returned on the worker this one
   * replaces in a rolling reload (SIGUSR2), structured-cloned (a `SharedArrayBuffer` is shared,
   * not copied); `undefined` when the server starts, and for a worker that replaces one that
   * died.
   */
  readonly inherited: unknown;
  /**
   * Memory every worker shares: the buffer named `name`, made zero-filled for the first worker
   * that asks, and the same buffer for every worker after, a replacement for a worker that died
   * included, for as long as the server runs. State kept in it outlives any one worker;
   * coordinate access with `Atomics`. Pages are committed as they are first written.
   *
   * @param name Letters, digits, `_ . : -`, up to 64.
   * @param byteLength Its size (the same on every call for a name), up to 64 GiB.
   * @returns The buffer.
   * @throws {RangeError} For a bad name or size, or a size that differs from the buffer's.
   *
   * @example
   * ```ts ignore
   * export async function setup(context: HandlerContext) {
   *   counts = new Int32Array(await context.sharedBuffer("hits", 4 * 1024));
   * }
   * ```
   */
  sharedBuffer(name: string, byteLength: number): Promise<SharedArrayBuffer>;
}

/**
 * Serves one connection until it ends. Returning (or resolving) ends the connection gracefully;
 * throwing (or rejecting) closes it at once and is logged as a handler error.
 *
 * @example A handler that upper-cases what it receives
 * ```ts
 * import type { Handler } from "./handler.ts";
 * export const upper: Handler = async ({ readable, writable }) => {
 *   await readable
 *     .pipeThrough(new TextDecoderStream())
 *     .pipeThrough(new TransformStream({ transform: (s, c) => c.enqueue(s.toUpperCase()) }))
 *     .pipeThrough(new TextEncoderStream())
 *     .pipeTo(writable);
 * };
 * ```
 */
export type Handler = (
  connection: Connection,
  context: HandlerContext,
) => void | Promise<void>;

/**
 * One setting a handler accepts on the command line (`--handler-option name=value`).
 *
 * @example
 * ```ts
 * import type { HandlerOption } from "./handler.ts";
 * const size: HandlerOption = {
 *   description: "most bytes a line may have",
 *   default: "8192",
 *   parse: (value) => {
 *     const n = Number(value);
 *     if (!Number.isInteger(n) || n < 1) throw new RangeError("must be a positive integer");
 *     return n;
 *   },
 * };
 * ```
 */
export interface HandlerOption {
  /** One line for `--help`. */
  readonly description: string;
  /** The value when the option is not given, as it would be typed. */
  readonly default: string;
  /**
   * Turns the text into the value handlers see in {@linkcode HandlerContext.options}; throws
   * (a `RangeError`, say) with a one-line message if the text is not valid. Without it, the
   * text itself is the value.
   */
  readonly parse?: (value: string) => unknown;
}

/**
 * Whether a handler is the byte-level shape.
 *
 * @param handler Either shape.
 * @returns True for a {@linkcode SocketHandler}.
 *
 * @example
 * ```ts
 * import { isSocketHandler } from "./handler.ts";
 * console.assert(isSocketHandler({ data() {} }));
 * console.assert(!isSocketHandler(async () => {}));
 * ```
 */
export function isSocketHandler(handler: Handler | SocketHandler): handler is SocketHandler {
  return typeof handler === "object" && handler !== null &&
    typeof (handler as SocketHandler).data === "function";
}

/**
 * What a handler module may export. Only the handler is required (as `default` or `handler`):
 * a {@linkcode Handler} function (Web Streams) or a {@linkcode SocketHandler} object.
 *
 * @example A module with per-worker state
 * ```ts
 * import type { HandlerContext, HandlerModule } from "./handler.ts";
 * let served = 0;
 * const module: HandlerModule = {
 *   handler: async ({ writable }) => {
 *     served++;
 *     await writable.close();
 *   },
 *   setup: (context: HandlerContext) => context.log.info("ready"),
 *   teardown: () => {},
 * };
 * ```
 */
export interface HandlerModule {
  /** Serves each connection: a Web Streams function, or byte-level callbacks. */
  handler: Handler | SocketHandler;
  /** Settings it accepts, by name; without it, any `--handler-option` is refused. */
  options?: Readonly<Record<string, HandlerOption>>;
  /**
   * Runs once per worker before its first connection (start-up waits for it, within
   * `--handler-timeout`): set up per-worker state and peer listeners here.
   */
  setup?: (context: HandlerContext) => void | Promise<void>;
  /** Runs once per worker after its last connection, when the server stops. */
  teardown?: () => void | Promise<void>;
  /**
   * Runs on each worker that a rolling reload (SIGUSR2) is about to replace, while it still
   * serves: what it returns is the successor's {@linkcode HandlerContext.inherited} (the
   * successor may be new code: agree on a shape, and check it). It must be structured-cloneable;
   * it is copied, not moved, because the reload may still fail (the new module does not load,
   * or its `setup` throws), and this worker then goes on serving. State changed after the copy
   * does not reach the successor, unless it lives in shared memory
   * ({@linkcode HandlerContext.sharedBuffer}), as `memcache`'s cache does. Runs within
   * `--handler-timeout`; a throw aborts the reload.
   */
  handover?: () => unknown | Promise<unknown>;
}
