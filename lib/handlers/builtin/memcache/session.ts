/**
 * One `memcache` connection's protocol state: what memcached keeps in its `conn` (the command's
 * `noreply`, a value being read into its item, bytes to swallow after a refused one, a long
 * `get` waiting for the client to read), and memcached's rules for answering (`out_string`
 * stays silent under `noreply`; `out_errstring` never does).
 *
 * Runs inside a worker.
 *
 * @module
 */

import type { Socket } from "../../handler.ts";
import type { Reply } from "./reply.ts";
import type { SharedStore } from "./shared_store.ts";
import type { StoreMode } from "./storage.ts";
import { Tokens } from "./tokens.ts";

/** A value being read into its item (memcached's `conn_nread`). */
export interface ValueRead {
  /** The (unlinked) item the value goes into. */
  ref: number;
  /** Value bytes still to come. */
  left: number;
  /** Value bytes already copied in. */
  filled: number;
  /** Bytes of the `\r\n` after the value seen so far, and whether they were right. */
  tail: number;
  tailOk: boolean;
  mode: StoreMode;
  cas: number;
  setStale: boolean;
  /**
   * For a meta set: what its answer carries after the code, in the request's order (an opaque
   * token's bytes, the key, the CAS); undefined for a classic command.
   */
  meta: (Uint8Array | "k" | "c")[] | undefined;
}

/**
 * The start of a value's read: nothing of it in yet.
 *
 * @param ref The item taken for it.
 * @param vlen Its length.
 * @param mode How it is stored once in.
 * @param cas The CAS the command compares with (0: none).
 * @param setStale A meta `cas` with `I`: the new value is stale.
 * @param meta A meta set's returned flags; undefined for a classic command.
 * @returns The read.
 */
export function startValue(
  ref: number,
  vlen: number,
  mode: StoreMode,
  cas: number,
  setStale: boolean,
  meta: ValueRead["meta"],
): ValueRead {
  return { ref, left: vlen, filled: 0, tail: 0, tailOk: true, mode, cas, setStale, meta };
}

/** A `get` whose reply is waiting for the client to read (resumed on `drain`). */
export interface GetRead {
  line: Uint8Array;
  at: number;
  returnCas: boolean;
  touch: boolean;
  exptime: number;
  /**
   * A key longer than memcached allows starts here (else -1): memcached then answers only
   * `CLIENT_ERROR`, having fetched (and touched) the keys before it, so those are fetched
   * without a word.
   */
  refuseAt: number;
}

/** The state of one connection. */
export class Session {
  readonly store: SharedStore;
  readonly reply: Reply;
  readonly socket: Socket;
  readonly tokens: Tokens = new Tokens();
  /** This command's `noreply` (memcached resets it before each command line). */
  noreply = false;
  /** Close once the reply is sent (`quit`). */
  closeAfter = false;
  /** Close without a reply (a line that is neither a command nor a `get`, HTTP, binary). */
  closeNow = false;
  /** The connection's first byte is still to come (a binary client is known by it). */
  first = true;
  /** A partial command line kept from the last chunk (a copy): its buffer and length. */
  partial: Uint8Array | undefined;
  partialLength = 0;
  value: ValueRead | undefined;
  /** Bytes to drop: the data block of a refused store (memcached's `conn_swallow`). */
  swallow = 0;
  /** A long `get` held for backpressure. */
  pendingGet: GetRead | undefined;
  /** Input held while the client is not reading its answers (a copy), taken on `drain`. */
  rest: Uint8Array | undefined;
  /** Number of workers, for `stats`. */
  readonly threads: number;

  constructor(store: SharedStore, reply: Reply, socket: Socket, threads: number) {
    this.store = store;
    this.reply = reply;
    this.socket = socket;
    this.threads = threads;
  }

  /** memcached's `out_string`: a line, unless this command is `noreply`. */
  out(text: string): void {
    if (this.noreply) return;
    this.reply.ascii(text);
    this.reply.crlf();
  }

  /** memcached's `out_errstring`: a line even under `noreply`. */
  outError(text: string): void {
    this.noreply = false;
    this.out(text);
  }
}
