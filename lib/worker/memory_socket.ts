/**
 * A connection with no socket under it, for testing handlers: bytes are pushed in by the test,
 * and what the handler writes is kept. It runs the handler's callbacks exactly as the server's
 * transports do (it is the same {@linkcode ServedSocket}), so pause, promises, end, close, the
 * output cap and `--debug-buffers` behave as they do in the server.
 *
 * Runs anywhere (a test process); the server itself never uses it.
 *
 * @module
 */

import type {
  CloseReason,
  Handler,
  HandlerContext,
  HandlerLog,
  SocketHandler,
} from "../handlers/handler.ts";
import { isSocketHandler } from "../handlers/handler.ts";
import { localSharedBuffers } from "../threads/shared_buffers.ts";
import { PeerNetwork } from "./peer_network.ts";
import { ServedSocket, setDebugBuffers } from "./served_socket.ts";
import { streamsView } from "./streams_view.ts";

const silent: HandlerLog = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** Options for {@linkcode MemorySocket}. */
export interface MemorySocketOptions {
  /** The handler's context; by default a lone worker (0 of 1) with no options. */
  context?: HandlerContext;
  /** The connection id. @default {1} */
  id?: number;
  /** The high-water mark, in bytes. @default {65536} */
  highWater?: number;
  /**
   * Detach every buffer lent to `data` once its call is over, as the server's `--debug-buffers`
   * does: a handler that keeps a lent view then fails instead of passing.
   * @default {false}
   */
  debugBuffers?: boolean;
}

/**
 * A handler's connection in memory: the test pushes the client's bytes and reads what the
 * handler wrote.
 *
 * @example Testing a byte handler
 * ```ts
 * import { MemorySocket } from "./memory_socket.ts";
 * import { handler as echo } from "../handlers/builtin/echo.ts";
 * import assert from "node:assert/strict";
 * const socket = new MemorySocket(echo);
 * socket.push("hello\nquit\n");
 * await socket.settled();
 * assert.equal(socket.text, "hello\n");
 * assert.equal(socket.closeReason, "done");
 * ```
 */
export class MemorySocket {
  #transport: MemoryTransport;

  /**
   * Opens a connection to `handler` (a Web Streams handler runs through the streams view).
   *
   * @param handler Either shape of handler.
   * @param options Context, id, high-water mark.
   */
  constructor(handler: SocketHandler | Handler, options: MemorySocketOptions = {}) {
    this.#transport = new MemoryTransport(handler, options);
  }

  /** What the handler wrote, chunk by chunk (copies). */
  get written(): readonly Uint8Array[] {
    return this.#transport.written;
  }

  /** Everything written, as one array. */
  get bytes(): Uint8Array {
    const chunks = this.#transport.written;
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const chunk of chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  /** Everything written, as text (UTF-8). */
  get text(): string {
    return new TextDecoder().decode(this.bytes);
  }

  /** Why the connection closed, once it has (`done`, `handler-error`, `output-overflow`). */
  get closeReason(): CloseReason | undefined {
    return this.#transport.closeReason;
  }

  /** Whether the handler takes input now (not paused, busy, ended, or over its mark). */
  get accepting(): boolean {
    return this.#transport.accepting;
  }

  /**
   * Whether the client pretends to be slow: what the handler writes then stays waiting (see
   * `buffered`) until {@linkcode MemorySocket.take}.
   */
  get slow(): boolean {
    return this.#transport.slow;
  }

  set slow(slow: boolean) {
    this.#transport.slow = slow;
  }

  /** Bytes written and not taken by the (slow) client. */
  get buffered(): number {
    return this.#transport.buffered;
  }

  /**
   * Bytes from the client: delivered at once if the handler accepts input, else held (as a
   * socket that is not read).
   *
   * @param bytes Bytes, or text (UTF-8).
   */
  push(bytes: Uint8Array | string): void {
    this.#transport.push(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
  }

  /** The client half-closes (after whatever is held). */
  pushEnd(): void {
    this.#transport.pushEnd();
  }

  /** The (slow) client takes everything written: `buffered` falls to 0 and `drain` is due. */
  take(): void {
    this.#transport.take();
  }

  /**
   * Waits until the handler's pending work has settled: ten turns of the event loop.
   *
   * @returns After the turns.
   */
  async settled(): Promise<void> {
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/** The transport under a {@linkcode MemorySocket}: the server's callback rules, no socket. */
class MemoryTransport extends ServedSocket {
  written: Uint8Array[] = [];
  closeReason: CloseReason | undefined;
  slow = false;
  #waiting = 0;
  #pending: Uint8Array[] = [];
  #eof = false;
  #highWater: number;
  #debugBuffers: boolean;

  constructor(handler: SocketHandler | Handler, options: MemorySocketOptions) {
    super({
      id: options.id ?? 1,
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
      handler: isSocketHandler(handler) ? handler : streamsView(handler),
      context: options.context ?? loneWorker(),
    });
    this.#highWater = options.highWater ?? 64 * 1024;
    this.#debugBuffers = options.debugBuffers ?? false;
    this.opened();
  }

  /** Lends `chunk` to the handler, detached after the call with `debugBuffers`. */
  #lend(chunk: Uint8Array): void {
    const before = setDebugBuffers(this.#debugBuffers);
    try {
      this.receive(chunk);
    } finally {
      setDebugBuffers(before);
    }
  }

  get buffered(): number {
    return this.#waiting;
  }

  push(chunk: Uint8Array): void {
    if (this.#pending.length === 0 && this.accepting) this.#lend(chunk);
    else this.#pending.push(chunk);
  }

  pushEnd(): void {
    this.#eof = true;
    if (this.#pending.length === 0 && this.accepting) this.receiveEnd();
  }

  take(): void {
    this.#waiting = 0;
    this.outputDrained();
  }

  protected get highWater(): number {
    return this.#highWater;
  }

  protected send(bytes: Uint8Array): number {
    this.written.push(bytes.slice());
    if (this.slow) this.#waiting += bytes.length;
    return this.#waiting;
  }

  protected endOutput(): void {
    this.#finish("done");
  }

  protected abort(reason: CloseReason): void {
    this.#finish(reason);
  }

  protected resumeInput(): void {
    while (this.#pending.length > 0 && this.accepting) this.#lend(this.#pending.shift()!);
    if (this.#eof && this.#pending.length === 0 && this.accepting) this.receiveEnd();
  }

  #finish(reason: CloseReason): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    this.closedBecause(reason);
  }
}

/**
 * The context of a worker that runs alone, with no main thread: one worker of one, a silent
 * log, peers linked to nobody, shared buffers of its own. For handlers called in tests.
 *
 * @param options The handler's parsed options.
 * @returns The context.
 */
export function loneWorker(options: Record<string, unknown> = {}): HandlerContext {
  const peers = new PeerNetwork(0, 1, silent);
  peers.start();
  return {
    worker: 0,
    workers: 1,
    options,
    log: silent,
    peers,
    inherited: undefined,
    sharedBuffer: localSharedBuffers(),
  };
}
