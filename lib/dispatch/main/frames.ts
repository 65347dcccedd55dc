/**
 * `main` dispatch, both threads: the byte channel between the main thread and one worker. Every
 * connection's bytes, and the flow-control credits that bound them, travel through here and
 * nowhere else.
 *
 * Runs on both threads; each side of a worker link owns one {@linkcode FrameWriter} and decodes
 * what the other side sends with {@linkcode readFrames}.
 *
 * Why this shape: the per-message cost of crossing threads dwarfs the per-byte cost, so the
 * channel is one link per worker (not per connection) and each side batches every frame produced
 * in one event-loop turn into one buffer, handed over in one `postMessage` as a transfer, not a
 * copy. A frame is a 9-byte header (kind, connection id, value) followed, for `DATA` and `OPEN`,
 * by `value` bytes of payload.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { CLOSE_REASONS, type CloseReason } from "../../sockets/close_reason.ts";
import {
  DONE_RANGE,
  type FramesMessage,
  type RingBatch,
  ringBatch,
} from "../../threads/messages.ts";
import { type BufferPool, discard } from "../../sockets/buffer_pool.ts";

/** Frame kinds. Which side sends which is noted on each. */
export const Frame = {
  /** main → worker: a new connection; payload is its remote address as JSON. */
  OPEN: 1,
  /** both ways: bytes of one connection; payload is the bytes. */
  DATA: 2,
  /** main → worker: the peer shut its write side; no more DATA follows. */
  EOF: 3,
  /**
   * main → worker: the connection is gone (reset, timeout, shutdown); stop serving it. `value`
   * is the reason ({@linkcode reasonCode}).
   */
  CLOSE: 4,
  /** both ways: `value` bytes of the receiver's earlier DATA were consumed; more may be sent. */
  ACK: 5,
  /** worker → main: the handler finished its output; flush it, then close the connection. */
  END: 6,
  /**
   * worker → main: close the connection now, dropping unsent output, with a reset if anything
   * is pending. `value` is the reason ({@linkcode reasonCode}): `handler-error`,
   * `output-overflow`, or `done` (the handler's own `close()`).
   */
  ABORT: 7,
  /**
   * both ways: like DATA, but the `value` bytes travel as the next of the batch's attached
   * (transferred) buffers instead of being copied into the batch. Readers see it as DATA.
   */
  DATA_REF: 8,
} as const;

/**
 * A close reason as a frame's `value`.
 *
 * @param reason The reason.
 * @returns Its code.
 */
export function reasonCode(reason: CloseReason): number {
  return CLOSE_REASONS.indexOf(reason);
}

/**
 * The close reason a frame's `value` carries.
 *
 * @param code The code.
 * @returns The reason (`done` for a code it does not know).
 */
export function reasonOf(code: number): CloseReason {
  return CLOSE_REASONS[code] ?? "done";
}

/** One of the {@linkcode Frame} kinds. */
export type FrameKind = typeof Frame[keyof typeof Frame];

/** Size of a frame header: kind (1 byte), connection id (4), value (4). */
export const HEADER_SIZE = 9;

/**
 * Most bytes of one connection that a side may send before the receiver acknowledges them; the
 * main thread also holds a connection's input and output together to it. 128 KiB: a slow reader
 * then costs about 400 KiB of RSS with 200 of them (`deno task bench:slow-readers`), and bulk
 * echo (64 KiB chunks) ran as fast as with 256 KiB.
 */
export const WINDOW = 128 * 1024;

/**
 * A receiver acknowledges once it has consumed this many unacknowledged bytes. A sender only
 * stalls with `WINDOW` bytes unacknowledged, which is past this mark, so no ack is ever owed
 * forever, while small request/response traffic sends almost no acks.
 */
export const ACK_THRESHOLD = WINDOW / 2;

/**
 * A worker also acknowledges as soon as its handler has read everything received, once this
 * much is unacknowledged: the main thread's buffer budget then sees what is really held, and a
 * connection is never paused for bytes that are long consumed. Below it, small request/response
 * traffic still sends almost no acks.
 */
export const EAGER_ACK_THRESHOLD = 4 * 1024;

/** Size of a batch buffer; batches that need more get a larger one, which is not reused. */
const BATCH_CAPACITY = 64 * 1024;
/** Batch buffers kept for reuse, at most. */
const MAX_FREE_BATCHES = 8;
/** Spare bulk buffers one batch carries back to the other side, at most. */
const MAX_SPARE = 16;

/**
 * Payloads at least this big travel as attached buffers (`DATA_REF`), moved to the other thread
 * without a copy; smaller ones are copied into the batch, which is cheaper than a transfer.
 */
export const ATTACH_THRESHOLD = 8 * 1024;

/**
 * Size of the buffers that bulk payloads travel in: the largest socket read, and what a large
 * outgoing chunk is copied into, so that either side can recycle them (see `BufferPool`).
 */
export const BULK_BUFFER_SIZE = 64 * 1024;

/**
 * Receives a finished batch: `length` bytes of frames at the start of `buffer`, plus the
 * buffers that its `DATA_REF` frames refer to, in order, and spare bulk buffers given back
 * (see {@linkcode FrameWriter.giveBack}). The attached and spare buffers are the receiver's from
 * then on (transfer them); so is `buffer`, unless the sender returns true: it copied the frames
 * (into a {@linkcode BatchRing}), and the writer keeps staging in `buffer`.
 */
export type BatchSender = (
  buffer: ArrayBuffer,
  length: number,
  attached: ArrayBuffer[],
  done: number,
  spare: ArrayBuffer[],
) => boolean | void;

/** Bytes of a {@linkcode BatchRing}: a power of two, so that positions wrap with 32 bits. */
const RING_CAPACITY = 256 * 1024;

/**
 * One direction of a worker link's batches, in shared memory: the sender copies a batch in and
 * posts only its length, instead of transferring the batch's buffer. A transfer cost about 8 us
 * of CPU per message here (a ping-pong of `{ type, buffer, length, attached, done }` with the
 * buffer transferred: 89 us of CPU per round trip, against 72 us without the buffer), and small
 * request/response traffic sends one batch each way per request. Batches that carry buffers,
 * and any that do not fit, still travel as transfers.
 *
 * Single producer, single consumer; the message that announces a batch follows its bytes, and
 * the positions are published with `Atomics`, so the consumer sees the bytes it is told of.
 * A batch never wraps: one that would cross the end starts again at 0, which both sides know.
 */
export class BatchRing {
  /** The memory, to announce to the consumer (once). */
  readonly shared: SharedArrayBuffer;
  /** [0]: bytes the consumer has taken; [1]: bytes the producer has put (both wrap at 2^32). */
  #control: Int32Array;
  #bytes: Uint8Array;
  /** This side's position: put (producer) or taken (consumer), wrapping at 2^32. */
  #position = 0;

  /** @param shared An existing ring's memory (the consumer's side); new memory otherwise. */
  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(8 + RING_CAPACITY);
    this.#control = new Int32Array(this.shared, 0, 2);
    this.#bytes = new Uint8Array(this.shared, 8, RING_CAPACITY);
  }

  /**
   * Producer: copies a batch in.
   *
   * @param batch The batch's frames.
   * @returns False if it does not fit now (send it some other way).
   */
  put(batch: Uint8Array): boolean {
    const length = batch.length;
    const at = this.#position % RING_CAPACITY;
    const skip = at + length > RING_CAPACITY ? RING_CAPACITY - at : 0;
    const used = (this.#position - Atomics.load(this.#control, 0)) >>> 0;
    if (skip + length > RING_CAPACITY - used) return false;
    this.#bytes.set(batch, skip === 0 ? at : 0);
    this.#position = (this.#position + skip + length) >>> 0;
    Atomics.store(this.#control, 1, this.#position | 0);
    return true;
  }

  /**
   * Consumer: copies the next batch out, and frees its room.
   *
   * @param into Where to; its length is the batch's.
   */
  take(into: Uint8Array): void {
    const length = into.length;
    Atomics.load(this.#control, 1); // pairs with the producer's store
    let at = this.#position % RING_CAPACITY;
    if (at + length > RING_CAPACITY) {
      this.#position = (this.#position + RING_CAPACITY - at) >>> 0;
      at = 0;
    }
    into.set(this.#bytes.subarray(at, at + length));
    this.#position = (this.#position + length) >>> 0;
    Atomics.store(this.#control, 0, this.#position | 0);
  }
}

/**
 * The receiving side of a link's batches: a batch's buffer as it was transferred, or a copy of
 * it taken out of the sender's {@linkcode BatchRing}. Copied, not viewed in place: payloads are
 * lent to handlers, and a view of shared memory is refused by Web APIs such as `Blob` and
 * `crypto.subtle` (checked on Deno 2.9.6), and cannot be detached for `--debug-buffers`.
 */
export class BatchInbox {
  #ring: BatchRing | undefined;

  /**
   * The buffer holding `message`'s frames. A copy out of the ring goes into a free buffer of
   * `writer`, which the caller recycles to it as it does a transferred batch.
   *
   * @param message The batch's message.
   * @param writer This side's writer, for a free buffer.
   * @returns The buffer; its first `message.length` bytes are the frames.
   */
  open(message: FramesMessage, writer: FrameWriter): ArrayBuffer {
    if (message.ring !== undefined) this.#ring = new BatchRing(message.ring);
    if (message.buffer !== undefined) return message.buffer;
    if (this.#ring === undefined) throw new RangeError("A batch in a ring never announced");
    const buffer = writer.freeBuffer(message.length);
    this.#ring.take(new Uint8Array(buffer, 0, message.length));
    return buffer;
  }
}

/**
 * A {@linkcode BatchSender} that posts each batch as a `frames` message, transferring its
 * buffers. `spare` is left out when empty, as it is in most batches: every property is cloned
 * with every message, and an empty array on each cost main dispatch 4-6% of its small round
 * trips. With `ring`, a batch that carries no buffers is copied into it instead and announced
 * by a number (a `RingBatch`; the first by a `frames` message that hands over the ring).
 *
 * @param post Sends a message to the other thread, transferring the listed objects.
 * @param ring Where batches without buffers go, when they fit.
 * @returns The sender.
 */
export function postingBatches(
  post: (message: FramesMessage | RingBatch, transfer: Transferable[]) => void,
  ring?: BatchRing,
): BatchSender {
  let announced = false;
  return (buffer, length, attached, done, spare) => {
    if (
      ring !== undefined && attached.length === 0 && spare.length === 0 && done < DONE_RANGE &&
      ring.put(new Uint8Array(buffer, 0, length))
    ) {
      if (announced) post(ringBatch(length, done), []);
      else post({ type: "frames", length, attached, done, ring: ring.shared }, []);
      announced = true;
      return true;
    }
    post(
      spare.length === 0
        ? { type: "frames", buffer, length, attached, done }
        : { type: "frames", buffer, length, attached, done, spare },
      [buffer, ...attached, ...spare],
    );
    return false;
  };
}

/**
 * Collects frames produced during one event-loop turn and sends them as one batch when the turn
 * ends.
 *
 * @example
 * ```ts
 * import { Frame, FrameWriter, readFrames } from "./frames.ts";
 * const writer = new FrameWriter((buffer, length, attached) => {
 *   readFrames(buffer, length, attached, (kind, id, value, payload) => {
 *     // kind === Frame.DATA, id === 7, payload holds "hi"
 *   });
 * });
 * writer.data(7, new TextEncoder().encode("hi"));
 * writer.flush();
 * ```
 */
export class FrameWriter {
  #send: BatchSender;
  #bytes = new Uint8Array(BATCH_CAPACITY);
  #view = new DataView(this.#bytes.buffer);
  /** Batch buffers that came back from the other side, free to stage in. */
  #free: ArrayBuffer[] = [];
  #length = 0;
  #attached: ArrayBuffer[] = [];
  /** Bulk buffers going back to the other side with the next batch. */
  #spare: ArrayBuffer[] = [];
  #scheduled = false;
  /** Batches from the other side processed since the last batch sent. */
  #owesDone = 0;
  /** Batches with frames sent so far. */
  #sent = 0;
  /** How many of them the receiver has said it processed. */
  #processed = 0;
  #flushSoon = () => {
    this.#scheduled = false;
    this.flush();
  };

  /**
   * @param send Called with each batch; the buffer is the receiver's from then on (transfer it).
   */
  constructor(send: BatchSender) {
    this.#send = send;
  }

  /** Number of bytes waiting to be sent. */
  get pending(): number {
    return this.#length;
  }

  /**
   * Queues a `DATA` frame carrying a copy of `bytes`.
   *
   * @param id Connection id.
   * @param bytes The payload; copied, so the caller may reuse its buffer at once.
   */
  data(id: number, bytes: Uint8Array): void {
    this.payload(Frame.DATA, id, bytes);
  }

  /**
   * Queues a `DATA` frame whose payload is the first `length` bytes of `buffer`, which is moved
   * to the other thread without a copy: the caller must not use `buffer` again.
   *
   * @param id Connection id.
   * @param buffer The payload's buffer; transferred.
   * @param length Payload length.
   */
  attach(id: number, buffer: ArrayBuffer, length: number): void {
    this.#header(Frame.DATA_REF, id, length, 0);
    this.#attached.push(buffer);
  }

  /**
   * Gives a bulk buffer back to the other side with the next batch (it sends no batch of its
   * own): bulk payloads that arrive and leave no output, such as a large upload that a handler
   * stores, would otherwise be dropped here while the other side allocates a new buffer for
   * every read, and the garbage of 200 MB of uploads took RSS 200 MB up before it was
   * collected.
   *
   * @param buffer A bulk buffer this side has finished with.
   * @returns Whether it will go (false past `MAX_SPARE` waiting: drop it).
   */
  giveBack(buffer: ArrayBuffer): boolean {
    if (this.#spare.length >= MAX_SPARE || buffer.detached) return false;
    this.#spare.push(buffer);
    return true;
  }

  /**
   * A bulk buffer this side has finished with: kept in `pool` if it has room, else given back
   * to the other side (see {@linkcode FrameWriter.giveBack}), else freed.
   *
   * @param buffer The buffer; nothing may view it any more.
   * @param pool This side's pool of bulk buffers.
   */
  recycleBulk(buffer: ArrayBuffer, pool: BufferPool): void {
    if (!pool.full || !this.giveBack(buffer)) pool.give(buffer);
  }

  /**
   * Queues a frame with a payload copied into the batch (`OPEN`, `DATA`).
   *
   * @param kind Frame kind.
   * @param id Connection id.
   * @param payload The payload.
   */
  payload(kind: FrameKind, id: number, payload: Uint8Array): void {
    this.#header(kind, id, payload.length, payload.length);
    this.#bytes.set(payload, this.#length);
    this.#length += payload.length;
  }

  /**
   * Queues a frame without payload (`EOF`, `CLOSE`, `ACK`, `END`, `ABORT`).
   *
   * @param kind Frame kind.
   * @param id Connection id.
   * @param value For `ACK`, the number of bytes consumed; otherwise 0.
   */
  control(kind: FrameKind, id: number, value = 0): void {
    this.#header(kind, id, value, 0);
  }

  /**
   * Notes that a batch from the other side has been processed; the next batch sent counts it
   * (`done`), and one is sent this turn even if it carries no frames.
   */
  markDone(): void {
    this.#owesDone++;
    this.#schedule();
  }

  /** The number of the batch being staged: frames queued now travel in it. */
  get staging(): number {
    return this.#sent + 1;
  }

  /**
   * Whether the receiver has processed batch `serial` and those before it (it counts them in
   * its batches' `done`). Batch 0 is the one before the first.
   *
   * @param serial A batch number from {@linkcode FrameWriter.staging}.
   * @returns Whether it has.
   */
  processed(serial: number): boolean {
    return serial <= this.#processed;
  }

  /**
   * The receiver has processed `count` more of the batches sent (a received batch's `done`).
   *
   * @param count How many.
   */
  processedBy(count: number): void {
    this.#processed += count;
  }

  /** Sends what is queued now instead of at the end of the turn. */
  flush(): void {
    const length = this.#length;
    if (length === 0 && this.#owesDone === 0) return;
    // The staging buffer itself goes to the other thread (a transfer, not a copy), and the next
    // batch is staged in a buffer that came back (see recycle): in steady traffic no batch
    // allocates, which matters because every ArrayBuffer costs about 0.7 us in Deno 2.9.6.
    const batch = this.#bytes.buffer as ArrayBuffer;
    const attached = this.#attached;
    const done = this.#owesDone;
    const spare = this.#spare;
    this.#length = 0;
    this.#attached = [];
    if (spare.length > 0) this.#spare = [];
    this.#owesDone = 0;
    if (length > 0) this.#sent++;
    const copied = this.#send(batch, length, attached, done, spare) === true;
    // A batch copied into a ring leaves its buffer here, to stage the next in (unless it grew).
    if (!copied || batch.byteLength !== BATCH_CAPACITY) this.#stage(this.freeBuffer(0));
  }

  /**
   * A buffer for `length` bytes of frames (a received batch copied out of a ring, or the next
   * batch to stage): a free batch buffer when one is large enough. Give a received one back
   * with {@linkcode FrameWriter.recycle} once nothing views it.
   *
   * @param length The batch's length.
   * @returns The buffer.
   */
  freeBuffer(length: number): ArrayBuffer {
    if (length > BATCH_CAPACITY) return new ArrayBuffer(length);
    return this.#free.pop() ?? new ArrayBuffer(BATCH_CAPACITY);
  }

  /**
   * Takes a batch buffer the other side sent, once nothing views it any more, to stage a later
   * batch in. Buffers of another size, and any past the limit, are freed.
   *
   * @param buffer A batch received from the other thread.
   */
  recycle(buffer: ArrayBuffer): void {
    if (buffer.detached) return;
    if (buffer.byteLength === BATCH_CAPACITY && this.#free.length < MAX_FREE_BATCHES) {
      this.#free.push(buffer);
    } else discard(buffer); // now, not at a garbage collection (see buffer_pool.ts)
  }

  #header(kind: FrameKind, id: number, value: number, payloadLength: number): void {
    const needed = this.#length + HEADER_SIZE + payloadLength;
    if (needed > this.#bytes.length) this.#grow(needed);
    const at = this.#length;
    this.#bytes[at] = kind;
    this.#view.setUint32(at + 1, id, true);
    this.#view.setUint32(at + 5, value, true);
    this.#length = at + HEADER_SIZE;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    // setImmediate runs once this turn's I/O callbacks and microtasks are done: the batch
    // then holds everything the turn produced. (setTimeout(0) waits milliseconds here.)
    setImmediate(this.#flushSoon);
  }

  #grow(needed: number): void {
    const next = new Uint8Array(Math.max(needed, this.#bytes.length * 2));
    next.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = next;
    this.#view = new DataView(next.buffer);
  }

  #stage(buffer: ArrayBuffer): void {
    this.#bytes = new Uint8Array(buffer);
    this.#view = new DataView(buffer);
  }
}

/**
 * Called by {@linkcode readFrames} for each frame. `payload` views the batch, without a copy;
 * `owned` says that it is a `DATA_REF` payload, alone in its (transferred) buffer, which the
 * receiver may recycle once it is done with the bytes.
 */
export type FrameVisitor = (
  kind: FrameKind,
  id: number,
  value: number,
  payload: Uint8Array | undefined,
  owned: boolean,
) => void;

/**
 * Decodes a batch produced by a {@linkcode FrameWriter}.
 *
 * @param buffer The batch's buffer.
 * @param length Bytes of frames at its start.
 * @param attached The buffers sent with the batch, for its `DATA_REF` frames.
 * @param visit Called once per frame, in order; `DATA_REF` frames are reported as `DATA`.
 * @throws {RangeError} If the batch is truncated or has an unknown frame kind.
 */
export function readFrames(
  buffer: ArrayBuffer,
  length: number,
  attached: readonly ArrayBuffer[],
  visit: FrameVisitor,
): void {
  const bytes = new Uint8Array(buffer, 0, length);
  const view = new DataView(buffer, 0, length);
  let at = 0;
  let nextAttached = 0;
  while (at < length) {
    if (at + HEADER_SIZE > length) throw new RangeError(`Truncated frame header at ${at}`);
    const kind = bytes[at] as FrameKind;
    const id = view.getUint32(at + 1, true);
    const value = view.getUint32(at + 5, true);
    at += HEADER_SIZE;
    if (kind === Frame.DATA || kind === Frame.OPEN) {
      if (at + value > length) throw new RangeError(`Truncated frame payload at ${at}`);
      visit(kind, id, value, bytes.subarray(at, at + value), false);
      at += value;
    } else if (kind === Frame.DATA_REF) {
      const payload = attached[nextAttached++];
      if (payload === undefined || payload.byteLength < value) {
        throw new RangeError(`Missing attached buffer for frame at ${at - HEADER_SIZE}`);
      }
      visit(Frame.DATA, id, value, new Uint8Array(payload, 0, value), true);
    } else if (kind >= Frame.OPEN && kind <= Frame.ABORT) {
      visit(kind, id, value, undefined, false);
    } else {
      throw new RangeError(`Unknown frame kind ${kind} at ${at - HEADER_SIZE}`);
    }
  }
}
