/**
 * Which worker owns a key: a stable hash of the key, so that every worker agrees on the owner
 * without asking, and a handler can shard its state the way Seastar's shards or a memcached
 * client's server list do.
 *
 * Pure; used inside workers (through `Peers.ownerOf`) and by tests.
 *
 * @module
 */

const encoder = new TextEncoder();
/** Scratch space for string keys up to this many UTF-8 bytes; longer ones are encoded anew. */
const scratch = new Uint8Array(1024);

/**
 * The 32-bit FNV-1a hash of some bytes. A fast, well-spread hash for sharding, not a
 * cryptographic one: a client who picks keys can pile them on one worker, as with memcached's
 * own client-side hashing.
 *
 * @param bytes The key's bytes.
 * @returns An unsigned 32-bit hash.
 *
 * @example
 * ```ts
 * import { fnv1a32 } from "./shard.ts";
 * import assert from "node:assert/strict";
 * assert.equal(fnv1a32(new TextEncoder().encode("a")), 0xe40c292c);
 * ```
 */
export function fnv1a32(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    hash ^= bytes[i]!;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * The shard (worker index) that owns `key` among `shards`.
 *
 * @param key A string (hashed as UTF-8) or bytes; `"k"` and its UTF-8 bytes map alike.
 * @param shards How many shards there are (at least 1).
 * @returns An index from 0 to `shards - 1`.
 *
 * @example
 * ```ts
 * import { shardOf } from "./shard.ts";
 * import assert from "node:assert/strict";
 * assert.equal(shardOf("user:1", 4), shardOf(new TextEncoder().encode("user:1"), 4));
 * assert.equal(shardOf("anything", 1), 0);
 * ```
 */
export function shardOf(key: string | Uint8Array, shards: number): number {
  if (shards <= 1) return 0;
  let bytes: Uint8Array;
  if (typeof key !== "string") bytes = key;
  else if (key.length * 3 <= scratch.length) {
    bytes = scratch.subarray(0, encoder.encodeInto(key, scratch).written);
  } else bytes = encoder.encode(key);
  return fnv1a32(bytes) % shards;
}
