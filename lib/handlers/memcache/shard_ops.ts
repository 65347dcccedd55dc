/**
 * What a `memcache` connection asks of the worker that owns a key: typed operations, sent in
 * batches (all of one chunk's operations for one owner in one request, in order) and answered
 * in one `switch`.
 *
 * Runs inside a worker: built by the connection's worker, served by the owner's.
 *
 * @module
 */

import type { ShardStats, ShardStore, StoreMode, StoreResult } from "./store.ts";

/** One operation on a shard. Expiry times are absolute (`Date.now()` ms); 0 = never. */
export type ShardOp =
  | { op: "get"; keys: string[]; touch?: number }
  | {
    op: "store";
    mode: StoreMode;
    key: string;
    flags: number;
    expiresAt: number;
    value: Uint8Array;
    cas: number;
  }
  | { op: "delete"; key: string }
  | { op: "arith"; key: string; incr: boolean; delta: bigint }
  | { op: "touch"; key: string; expiresAt: number }
  | { op: "flush"; at: number }
  | { op: "stats" }
  | { op: "reset" };

/** One hit of a retrieval: key, flags, value, CAS. */
export type Hit = [key: string, flags: number, value: Uint8Array, cas: number];

/** Counters of a worker's connections, reported with its shard's. */
export interface ConnectionStats {
  curr_connections: number;
  total_connections: number;
  bytes_read: number;
  bytes_written: number;
  cmd_flush: number;
}

/** The answer to each kind of {@linkcode ShardOp}, in the same order. */
export type ShardResult =
  | (Hit | null)[] // get: one per key, null for a miss
  | StoreResult // store
  | boolean // delete, touch
  | string // arith: the new value, NOT_FOUND or NON_NUMERIC
  | null // flush, reset
  | (ShardStats & ConnectionStats); // stats

/**
 * Serves a batch of operations on this worker's shard, in order.
 *
 * @param store This worker's shard.
 * @param ops The operations.
 * @param connections This worker's connection counters (for `stats`).
 * @returns One result per operation.
 */
export function serveOps(
  store: ShardStore,
  ops: ShardOp[],
  connections: ConnectionStats,
): ShardResult[] {
  const now = Date.now();
  return ops.map((op): ShardResult => {
    switch (op.op) {
      case "get":
        return op.keys.map((key): Hit | null => {
          const item = store.get(key, now, op.touch);
          return item === undefined ? null : [key, item.flags, item.value, item.cas];
        });
      case "store":
        return store.store(op.mode, op.key, op.value, op.flags, op.expiresAt, now, op.cas);
      case "delete":
        return store.delete(op.key, now);
      case "arith":
        return store.arith(op.key, op.incr, op.delta, now);
      case "touch":
        return store.touch(op.key, op.expiresAt, now);
      case "flush":
        store.flush(op.at, now);
        return null;
      case "stats":
        return { ...store.stats(), ...connections };
      case "reset":
        store.resetStats();
        connections.total_connections = connections.curr_connections;
        connections.bytes_read = connections.bytes_written = connections.cmd_flush = 0;
        return null;
      default: {
        const _never: never = op;
        throw new TypeError(`Unknown shard operation: ${JSON.stringify(_never)}`);
      }
    }
  });
}
