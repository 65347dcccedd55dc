/**
 * What other programs may build on: the protocol-handler contract in both shapes (byte-level
 * `SocketHandler` callbacks, and Web Streams `Handler` functions), with the handler context and
 * the links between workers (`Peers`); byte helpers for handlers (`indexOfByte`, `copyBytes`,
 * `LineReader`, `isQuit`);
 * `MemorySocket`, to test a handler without a server; handler options; the key-to-worker hash;
 * the multi-threaded work queue and its worker side; and the PROXY protocol parser. Everything
 * else in `lib/` is the server's own and may change.
 *
 * The server itself is the command-line program `main.ts`.
 *
 * @example A byte-level handler module for `--handler ./upper.ts`
 * ```ts
 * import type { SocketHandler } from "./mod.ts";
 * export const upper: SocketHandler = {
 *   data(socket, bytes) {
 *     // `bytes` is lent for this call: change it, write it, or copyBytes() it to keep it.
 *     for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 97 && bytes[i]! <= 122) bytes[i]! -= 32;
 *     socket.write(bytes);
 *   },
 * };
 * export default upper;
 * ```
 *
 * @example The same over Web Streams
 * ```ts
 * import type { Handler } from "./mod.ts";
 * export const upper: Handler = async ({ readable, writable }) => {
 *   await readable
 *     .pipeThrough(new TextDecoderStream())
 *     .pipeThrough(new TransformStream({ transform: (s, c) => c.enqueue(s.toUpperCase()) }))
 *     .pipeThrough(new TextEncoderStream())
 *     .pipeTo(writable);
 * };
 * export default upper;
 * ```
 *
 * @module
 */

export {
  type CloseReason,
  type Connection,
  type Handler,
  type HandlerContext,
  type HandlerLog,
  type HandlerModule,
  type HandlerOption,
  isSocketHandler,
  type MessageListener,
  PeerError,
  type PeerErrorKind,
  type PeerRequestOptions,
  type Peers,
  type PeerSendOptions,
  type RequestListener,
  type Socket,
  type SocketHandler,
} from "./lib/handlers/handler.ts";
export { copyBytes, indexOfByte } from "./lib/handlers/bytes.ts";
export { isQuit, LineReader } from "./lib/handlers/lines.ts";
export { MemorySocket, type MemorySocketOptions } from "./lib/worker/memory_socket.ts";
export {
  HandlerOptionError,
  integerOption,
  parseHandlerOptions,
  sizeOption,
} from "./lib/handlers/handler_options.ts";
export { fnv1a32, shardOf } from "./lib/handlers/shard.ts";
export {
  JobError,
  type SubmitOptions,
  WorkQueue,
  type WorkQueueOptions,
} from "./lib/work_queue/work_queue.ts";
export { serveJobs, type Transferring, transferring } from "./lib/work_queue/work_queue_worker.ts";
export {
  parseProxyHeader,
  type ProxiedStart,
  type ProxyHeader,
  ProxyProtocolError,
  readProxyHeader,
} from "./lib/sockets/proxy_protocol.ts";
