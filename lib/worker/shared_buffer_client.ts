/**
 * A worker's side of the server's named shared memory (`HandlerContext.sharedBuffer`): asks
 * the main thread's registry with a `share` message and waits for its `shared` answer.
 *
 * Runs inside a worker.
 *
 * @module
 */

import type { FromWorker, ToWorker } from "../threads/messages.ts";

type Shared = Extract<ToWorker, { type: "shared" }>;

/** Asks the main thread for shared buffers. */
export class SharedBufferClient {
  #post: (message: FromWorker) => void;
  #waiting = new Map<string, PromiseWithResolvers<SharedArrayBuffer>[]>();

  /** @param post Sends a message to the main thread. */
  constructor(post: (message: FromWorker) => void) {
    this.#post = post;
  }

  /**
   * The buffer of `name` (see `HandlerContext.sharedBuffer`).
   *
   * @param name Its name.
   * @param byteLength Its size.
   * @returns The buffer, once the main thread has answered.
   */
  get(name: string, byteLength: number): Promise<SharedArrayBuffer> {
    const waiter = Promise.withResolvers<SharedArrayBuffer>();
    const queue = this.#waiting.get(name);
    if (queue === undefined) this.#waiting.set(name, [waiter]);
    else queue.push(waiter);
    this.#post({ type: "share", name, byteLength });
    return waiter.promise;
  }

  /**
   * Takes the main thread's answer (answers for one name come in the order asked).
   *
   * @param message The `shared` message.
   */
  receive(message: Shared): void {
    const queue = this.#waiting.get(message.name);
    const waiter = queue?.shift();
    if (queue?.length === 0) this.#waiting.delete(message.name);
    if (waiter === undefined) return;
    if (message.buffer !== undefined) waiter.resolve(message.buffer);
    else waiter.reject(new RangeError(message.error ?? "no shared buffer"));
  }
}
