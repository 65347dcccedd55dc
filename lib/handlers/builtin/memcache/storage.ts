/**
 * What storing and counting do to the shared store, as memcached's `do_store_item` and
 * `do_add_delta` do it: the same results, the same CAS rules (a stale-marking CAS for meta sets),
 * the same item size checks for append and prepend, and incr/decr that rewrite a value in place
 * (padded with spaces when it gets shorter, as memcached's does).
 *
 * Runs inside a worker; every function here needs the store's lock held.
 *
 * @module
 */

import {
  ClassStat,
  ItemFlag,
  NO_MEMORY,
  type SharedStore,
  Stat,
  TOO_LARGE,
} from "./shared_store.ts";

/** How a storage command stores (memcached's `NREAD_*`). */
export type StoreMode = "set" | "add" | "replace" | "append" | "prepend" | "cas";

/** What a store did (memcached's `store_item_type`). */
export type StoreResult = "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND";

/**
 * memcached's `do_store_item`: stores the (unlinked, filled) item `ref` under its key.
 *
 * @param store The store.
 * @param ref The new item; linked if stored, freed otherwise.
 * @param mode How.
 * @param cas The CAS value the client sent (0: none).
 * @param setStale Meta set with `I`: a CAS older than the item's stores, marked stale.
 * @returns What happened, and the stored item's CAS (0 if not stored).
 */
export function storeItem(
  store: SharedStore,
  ref: number,
  mode: StoreMode,
  cas: number,
  setStale: boolean,
): { result: StoreResult; cas: number } {
  const old = store.find(store.key(ref));
  let result: StoreResult = "NOT_STORED";
  let stored = ref;
  let doStore = false;
  if (old !== 0) {
    const oldCas = store.cas(old);
    const casResult = cas === 0
      ? "none"
      : cas === oldCas
      ? "match"
      : setStale && cas < oldCas
      ? "stale"
      : "badval";
    switch (mode) {
      case "add":
        store.update(old); // add only adds a missing item, but promotes the one it found
        break;
      case "cas":
        if (casResult === "match") {
          store.countClass(old, ClassStat.cas_hits);
          doStore = true;
        } else if (casResult === "stale") {
          // A stale value replaces the item but keeps its TTL and its stale/token marks.
          store.setExptime(ref, store.exptime(old));
          store.setItFlags(ref, ItemFlag.STALE | (store.itFlags(old) & ItemFlag.TOKEN_SENT));
          store.countClass(old, ClassStat.cas_hits);
          doStore = true;
        } else {
          store.countClass(old, ClassStat.cas_badval);
          result = "EXISTS";
        }
        break;
      case "append":
      case "prepend": {
        if (casResult !== "none" && casResult !== "match") {
          result = "EXISTS";
          break;
        }
        // Both values in a new item (which may be too large, or find no memory: NOT_STORED).
        const added = store.nbytes(ref);
        const kept = store.nbytes(old);
        store.pin(old); // the allocation may evict, but not the item it copies from
        const joined = store.alloc(
          store.key(old),
          store.flags(old),
          store.exptime(old),
          kept + added,
        );
        store.unpin(old);
        if (joined === TOO_LARGE || joined === NO_MEMORY) break;
        const room = store.valueRoom(joined);
        if (mode === "append") {
          room.set(store.value(old));
          room.set(store.value(ref), kept);
        } else {
          room.set(store.value(ref));
          room.set(store.value(old), added);
        }
        store.free(ref);
        stored = joined;
        doStore = true;
        break;
      }
      case "replace":
      case "set":
        doStore = true;
        break;
    }
    if (doStore) {
      store.replace(old, stored);
      result = "STORED";
    }
  } else {
    switch (mode) {
      case "add":
      case "set":
        store.link(ref);
        result = "STORED";
        break;
      case "cas":
        store.stats[Stat.cas_misses]!++;
        result = "NOT_FOUND";
        break;
      default:
        break; // replace, append, prepend need an item
    }
  }
  if (result !== "STORED") {
    if (stored === ref) store.free(ref);
    return { result, cas: 0 };
  }
  return { result, cas: store.cas(stored) };
}

/** What an incr/decr did (memcached's `delta_result_type`). */
export type DeltaResult = "OK" | "NON_NUMERIC" | "EOM" | "NOT_FOUND" | "CAS_MISMATCH";

const U64 = (1n << 64n) - 1n;

/**
 * memcached's `do_add_delta`.
 *
 * @param store The store.
 * @param key The key.
 * @param incr True for incr.
 * @param delta The amount.
 * @param cas A CAS value the item must have (0: any).
 * @returns What happened; with `OK`, the new value's text and the item.
 */
export function addDelta(
  store: SharedStore,
  key: Uint8Array,
  incr: boolean,
  delta: bigint,
  cas: number,
): { result: DeltaResult; value: string; ref: number } {
  const ref = store.find(key);
  if (ref === 0) return { result: "NOT_FOUND", value: "", ref: 0 };
  const nbytes = store.nbytes(ref);
  if (nbytes === 0) return { result: "NON_NUMERIC", value: "", ref: 0 };
  if (cas !== 0 && store.cas(ref) !== cas) return { result: "CAS_MISMATCH", value: "", ref: 0 };
  const current = parseStoredNumber(store.value(ref));
  if (current === undefined) return { result: "NON_NUMERIC", value: "", ref: 0 };
  let next: bigint;
  if (incr) {
    next = (current + delta) & U64;
    store.countClass(ref, ClassStat.incr_hits);
  } else {
    next = delta > current ? 0n : current - delta;
    store.countClass(ref, ClassStat.decr_hits);
  }
  const text = next.toString();
  if (text.length <= nbytes) {
    // In place, padded with spaces to the old length, and a new CAS (as memcached does).
    store.setCas(ref, store.nextCas());
    const room = store.valueRoom(ref);
    for (let i = 0; i < text.length; i++) room[i] = text.charCodeAt(i);
    room.fill(0x20, text.length);
    store.update(ref);
    return { result: "OK", value: text, ref };
  }
  store.pin(ref);
  const grown = store.alloc(key, store.flags(ref), store.exptime(ref), text.length);
  store.unpin(ref);
  if (grown === TOO_LARGE || grown === NO_MEMORY) return { result: "EOM", value: "", ref: 0 };
  const room = store.valueRoom(grown);
  for (let i = 0; i < text.length; i++) room[i] = text.charCodeAt(i);
  store.replace(ref, grown);
  return { result: "OK", value: text, ref: grown };
}

/**
 * A stored value read as memcached's `safe_strtoull` reads item data (which ends in `\r\n`):
 * leading white space, digits, then white space or the end.
 */
function parseStoredNumber(value: Uint8Array): bigint | undefined {
  let at = 0;
  const end = value.length;
  const space = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);
  while (at < end && space(value[at]!)) at++;
  let negative = false;
  if (at < end && (value[at] === 0x2b || value[at] === 0x2d)) {
    negative = value[at] === 0x2d;
    at++;
  }
  const first = at;
  let n = 0n;
  while (at < end && value[at]! >= 0x30 && value[at]! <= 0x39) {
    n = n * 10n + BigInt(value[at]! - 0x30);
    at++;
  }
  if (at === first || n > U64) return undefined;
  // After the digits: white space, or the end (the stored "\r\n" in memcached).
  if (at < end && !space(value[at]!)) return undefined;
  if (negative) {
    const wrapped = (-n) & U64;
    return wrapped >= 1n << 63n ? undefined : wrapped;
  }
  return n;
}
