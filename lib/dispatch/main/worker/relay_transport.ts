/**
 * `main` dispatch, worker side: the frames from the main thread, turned into connections
 * (`relayed_socket.ts`) served by the handler; the handler's output goes back as frames. The
 * sockets themselves stay on the main thread (`../main_thread/relay_connection.ts`).
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { HandlerContext, SocketHandler } from "../../../handlers/handler.ts";
import type { FramesMessage, FromWorker, RingBatch } from "../../../threads/messages.ts";
import { MemoryReclaimer } from "../../../sockets/reclaim.ts";
import {
  BatchInbox,
  type BatchRing,
  Frame,
  FrameWriter,
  postingBatches,
  readFrames,
  reasonOf,
} from "../frames.ts";
import { bulkBuffers, RelayedSocket } from "./relayed_socket.ts";

/** Sends a message to the main thread, transferring the listed buffers. */
export type PostToMain = (message: FromWorker | RingBatch, transfer: Transferable[]) => void;

const decoder = new TextDecoder();

/** Serves the connections that the main thread assigns to this worker. */
export class RelayTransport {
  #handler: SocketHandler;
  #context: HandlerContext;
  #writer: FrameWriter;
  #inbox = new BatchInbox();
  #connections = new Map<number, RelayedSocket>();
  #reclaimer = new MemoryReclaimer(() => this.#connections.size);

  /**
   * @param handler The handler's callbacks.
   * @param context What the handler knows of its worker.
   * @param post Sends a batch to the main thread.
   * @param ring Where small batches to the main thread go (see `BatchRing`); without one,
   *   every batch is transferred.
   */
  constructor(
    handler: SocketHandler,
    context: HandlerContext,
    post: PostToMain,
    ring?: BatchRing,
  ) {
    this.#handler = handler;
    this.#context = context;
    this.#writer = new FrameWriter(postingBatches(post, ring));
  }

  /** Connections being served now. */
  get size(): number {
    return this.#connections.size;
  }

  /**
   * Handles a batch of frames from the main thread.
   *
   * @param message The batch, with its transferred payload buffers and the bulk buffers the
   *   main thread gave back.
   */
  receive(message: FramesMessage): void {
    for (const free of message.spare ?? []) bulkBuffers.give(free);
    const buffer = this.#inbox.open(message, this.#writer);
    // Counted in this turn's batch: the main thread's drain tells input still in transit to
    // this worker from input it has taken.
    this.#writer.markDone();
    /** Whether a handler still holds a view of the batch (an async `data` call). */
    let held = false;
    readFrames(buffer, message.length, message.attached, (kind, id, value, payload, owned) => {
      if (kind === Frame.OPEN) {
        this.#open(id, payload!);
        return;
      }
      // Frames for a connection that has already finished here are stale: drop them.
      const connection = this.#connections.get(id);
      if (connection === undefined) return;
      switch (kind) {
        case Frame.DATA: {
          const kept = connection.receiveData(payload!, owned);
          // A payload of its own goes to the pool for bulk output; one in the batch keeps it.
          if (owned) {
            // Kept for output here, else back to the main thread, which reads into them.
            if (!kept) this.#writer.recycleBulk(payload!.buffer as ArrayBuffer, bulkBuffers);
          } else held ||= kept;
          break;
        }
        case Frame.EOF:
          connection.receiveEof();
          break;
        case Frame.ACK:
          connection.acknowledge(value);
          break;
        case Frame.CLOSE:
          connection.closedFromOutside(reasonOf(value));
          break;
        default:
          throw new RangeError(`Unexpected frame kind ${kind} from the main thread`);
      }
    });
    // Nothing views the batch any more: it may carry this worker's next one.
    if (!held) this.#writer.recycle(buffer);
  }

  #open(id: number, payload: Uint8Array): void {
    const remoteAddr = JSON.parse(decoder.decode(payload)) as Deno.NetAddr;
    const connection = new RelayedSocket({
      id,
      remoteAddr,
      handler: this.#handler,
      context: this.#context,
      writer: this.#writer,
      forget: () => {
        if (this.#connections.delete(id)) this.#reclaimer.update();
      },
    });
    this.#connections.set(id, connection);
    this.#reclaimer.update();
    connection.start();
  }
}
