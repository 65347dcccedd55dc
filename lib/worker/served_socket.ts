/**
 * A connection as a byte-level handler sees it ({@linkcode Socket}), the same in both dispatch
 * modes: this class runs the handler's callbacks (in order, one at a time, with lent buffers,
 * errors closing the connection) and keeps the rules of the contract (pause, high-water mark,
 * output cap, end, close). Where bytes come from and go is the transport's: a subclass for each
 * mode (`lib/dispatch/kernel/worker/owned_socket.ts` reads and writes the socket itself,
 * `lib/dispatch/main/worker/relayed_socket.ts` exchanges frames with the main thread).
 *
 * Runs inside a worker only.
 *
 * The hot path is `receive` then `write`: a few field reads, one handler call, no allocation;
 * the promise, error and debug paths are taken only when used.
 *
 * @module
 */

import type {
  CloseReason,
  HandlerContext,
  HandlerLog,
  Socket,
  SocketHandler,
} from "../handlers/handler.ts";
import { getLog } from "../log.ts";
import { connectionLog } from "./handler_log.ts";

/** Most bytes of output that may wait for a connection's client, by default. */
export const OUTPUT_LIMIT: number = 16 * 1024 * 1024;

/**
 * `--debug-buffers`: lend every `data` call a copy in a buffer of its own, and detach that buffer
 * when the call is over, so that a handler that keeps a lent view fails at once. Set once per
 * worker, before the first connection.
 */
let debugBuffers = false;

/**
 * Turns the debug mode for lent buffers on or off for this worker (or test process).
 *
 * @param on Whether lent buffers are detached after their call.
 * @returns What it was before.
 */
export function setDebugBuffers(on: boolean): boolean {
  const before = debugBuffers;
  debugBuffers = on;
  return before;
}

/** Options for {@linkcode ServedSocket}. */
export interface ServedSocketOptions {
  /** Server-wide connection id. */
  id: number;
  /** The client's address. */
  remoteAddr: Deno.NetAddr;
  /** The handler's callbacks. */
  handler: SocketHandler;
  /** What the handler knows of its worker. */
  context: HandlerContext;
}

/**
 * The handler's side of a connection. A transport subclass feeds it with `receive` and
 * `receiveEnd` (only while {@linkcode ServedSocket.accepting}), reports output progress with
 * `outputDrained`, and implements the abstract hooks.
 */
export abstract class ServedSocket implements Socket {
  /** Server-wide id of the connection. */
  readonly id: number;
  /** The client's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** What the handler knows of its worker. */
  readonly context: HandlerContext;
  /** The handler's own state for this connection. */
  data: unknown = undefined;
  /** Most bytes that may wait for the client before the connection is closed. */
  outputLimit: number = OUTPUT_LIMIT;

  #handler: SocketHandler;
  #log: HandlerLog | undefined;
  /** The handler's pause(). */
  #paused = false;
  /** A callback's promise is pending: nothing more is delivered until it settles. */
  #busy = false;
  /** The handler (or the server) has ended the connection: no more data, no more writes. */
  #ended = false;
  #closed = false;
  /** `write` returned false: call `drain` once the output has gone. */
  #wantsDrain = false;
  /** The output was over the high-water mark: input is held until it drains. */
  #overHighWater = false;

  /** @param options Id, address, handler and context. */
  constructor(options: ServedSocketOptions) {
    this.id = options.id;
    this.remoteAddr = options.remoteAddr;
    this.#handler = options.handler;
    this.context = options.context;
  }

  /** A logger whose lines name the worker and this connection. */
  get log(): HandlerLog {
    return this.#log ??= connectionLog(this.id);
  }

  /** Whether the connection has closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the handler (or the server) has ended the connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Whether the handler takes input now: the transport delivers only then, and otherwise holds
   * it (the socket is not read, or frames wait).
   */
  get accepting(): boolean {
    return !this.#paused && !this.#busy && !this.#ended && !this.#closed && !this.#overHighWater;
  }

  /**
   * Whether a view lent to `data` may still be in use: the call returned a promise that has
   * not settled. The transport must not reuse the view's buffer until then.
   */
  protected get lentHeld(): boolean {
    return this.#busy;
  }

  /** Bytes written and not yet taken. */
  abstract get buffered(): number;

  /** The transport's high-water mark for output, in bytes. */
  protected abstract get highWater(): number;

  /**
   * Hands bytes to the transport: sent now, or copied and queued.
   *
   * @returns Bytes waiting now.
   */
  protected abstract send(bytes: Uint8Array): number;

  /** Sends what is queued, then shuts the output; closes the connection once it has finished. */
  protected abstract endOutput(): void;

  /** Closes the connection now (with a reset if anything is pending), for `reason`. */
  protected abstract abort(reason: CloseReason): void;

  /** Input may be taken again ({@linkcode ServedSocket.accepting} may have become true). */
  protected abstract resumeInput(): void;

  /** Calls the handler's `open`; the transport calls it once, first. */
  protected opened(): void {
    const open = this.#handler.open;
    if (open !== undefined) this.#settle(this.#run(() => open.call(this.#handler, this)));
  }

  /**
   * Delivers bytes from the client, lent for the call. Only while `accepting`.
   *
   * @param bytes The bytes; the transport reuses their buffer once the call is over.
   */
  protected receive(bytes: Uint8Array): void {
    if (debugBuffers) {
      this.#receiveDebug(bytes);
      return;
    }
    let result: void | Promise<void>;
    try {
      result = this.#handler.data(this, bytes);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (result !== undefined) this.#settle(result);
  }

  /** The client shut its write side. Only while `accepting`. */
  protected receiveEnd(): void {
    const end = this.#handler.end;
    if (end === undefined) {
      this.end();
      return;
    }
    this.#settle(this.#run(() => end.call(this.#handler, this)));
  }

  /** The transport's output has all gone (after a write returned false, or with an end). */
  protected outputDrained(): void {
    const wasOver = this.#overHighWater;
    this.#overHighWater = false;
    // The handler's own output first (it may have more to write, and go over the mark again:
    // then input stays held until the next drain), then held input.
    if (this.#wantsDrain && !this.#ended && !this.#closed) {
      this.#wantsDrain = false;
      const drain = this.#handler.drain;
      if (drain !== undefined) this.#settle(this.#run(() => drain.call(this.#handler, this)));
    }
    if (wasOver && this.accepting) this.resumeInput();
  }

  /**
   * The connection is gone: the transport calls this once, whatever the reason.
   *
   * @param reason Why.
   */
  protected closedBecause(reason: CloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    const close = this.#handler.close;
    if (close === undefined) return;
    try {
      close.call(this.#handler, this, reason);
    } catch (error) {
      this.#report(error);
    }
  }

  /**
   * See {@linkcode Socket.write}.
   *
   * @param bytes The bytes.
   * @returns False past the high-water mark.
   */
  write(bytes: Uint8Array): boolean {
    if (!(bytes instanceof Uint8Array)) {
      throw new TypeError("Socket.write takes a Uint8Array");
    }
    if (debugBuffers && bytes.buffer instanceof ArrayBuffer && bytes.buffer.detached) {
      throw new TypeError(
        "Socket.write was given a view lent to an earlier data call (detached by " +
          "--debug-buffers): copy the bytes you keep, with bytes.slice()",
      );
    }
    if (this.#ended || this.#closed) return false;
    const waiting = this.send(bytes);
    if (waiting < this.highWater) return true;
    // A write with nothing else waiting never trips the limit, however large: a backlog does.
    if (waiting > this.outputLimit && waiting > bytes.length) {
      this.overflow(waiting);
      return false;
    }
    this.#wantsDrain = true;
    this.#overHighWater = true;
    return false;
  }

  /** See {@linkcode Socket.end}. */
  end(): void {
    if (this.#ended || this.#closed) return;
    this.#ended = true;
    this.endOutput();
  }

  /** See {@linkcode Socket.close}. */
  close(): void {
    if (this.#closed) return;
    this.#ended = true;
    this.abort("done");
  }

  /** See {@linkcode Socket.pause}. */
  pause(): void {
    this.#paused = true;
  }

  /** See {@linkcode Socket.resume}. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.accepting) this.resumeInput();
  }

  /**
   * Closes the connection as the handler's failure: logged, counted as `handler-error`. For the
   * Web Streams view, whose handler fails outside any callback; a callback just throws.
   *
   * @param error What the handler threw.
   */
  fail(error: unknown): void {
    if (this.#closed) return;
    this.#report(error);
    this.#ended = true;
    this.abort("handler-error");
  }

  /**
   * Closes the connection for holding more output than `outputLimit`: logged, counted as
   * `output-overflow`. The Web Streams view calls it for output its stream still holds.
   *
   * @param waiting Bytes of output waiting.
   */
  overflow(waiting: number): void {
    if (this.#closed || this.#ended) return;
    getLog().warning(
      "Connection {id}: more than {limit} B of output wait for the client ({queued} B: it does " +
        "not read, or the handler does not wait for its writes); closing",
      { id: this.id, limit: this.outputLimit, queued: waiting },
    );
    this.#ended = true;
    this.abort("output-overflow");
  }

  #receiveDebug(bytes: Uint8Array): void {
    const lent = bytes.slice();
    const detach = () => {
      lent.buffer.transfer();
    };
    let result: void | Promise<void>;
    try {
      result = this.#handler.data(this, lent);
    } catch (error) {
      detach();
      this.fail(error);
      return;
    }
    if (result === undefined) detach();
    else this.#settle(Promise.resolve(result).finally(detach));
  }

  /** Runs a callback, turning a throw into a rejection. */
  #run(callback: () => void | Promise<void>): void | Promise<void> {
    try {
      return callback();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Holds input until a callback's promise settles; a rejection closes the connection. */
  #settle(result: void | Promise<void>): void {
    if (result === undefined || typeof (result as Promise<void>).then !== "function") return;
    this.#busy = true;
    (result as Promise<void>).then(
      () => {
        this.#busy = false;
        if (this.accepting) this.resumeInput();
      },
      (error) => {
        this.#busy = false;
        this.fail(error);
      },
    );
  }

  #report(error: unknown): void {
    getLog().warning("Connection {id}: handler failed: {error}", {
      id: this.id,
      error: (error as Error)?.message ?? String(error),
    });
  }
}
