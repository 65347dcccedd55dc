/**
 * The `memcache` handler's parts, without a server: the shared store (memory bounds, O(1)
 * eviction, flush and expiry, two workers on one buffer), memcached's number and token rules, and
 * the handler itself on in-memory connections: memcached's transcripts cut into chunks of every
 * size, the line rules, backpressure of long answers, values in flight. The answers expected are
 * memcached 1.6.18's (`fixtures/memcache_transcripts.ts`, checked against a real one by
 * `memcache_server_test.ts`; the differential test compares far more).
 */

import assert from "node:assert/strict";
import { decodeBase64, encodeBase64 } from "../lib/handlers/builtin/memcache/base64.ts";
import * as memcache from "../lib/handlers/builtin/memcache/memcache.ts";
import { safeStrtol, safeStrtoul, safeStrtoull } from "../lib/handlers/builtin/memcache/numbers.ts";
import {
  ItemFlag,
  NO_MEMORY,
  SharedStore,
  type StoreSettings,
  storeSize,
  TOO_LARGE,
} from "../lib/handlers/builtin/memcache/shared_store.ts";
import { Tokens } from "../lib/handlers/builtin/memcache/tokens.ts";
import { MemorySocket } from "../lib/worker/memory_socket.ts";
import { TRANSCRIPTS } from "./fixtures/memcache_transcripts.ts";
import { handlerContext } from "./helpers.ts";

const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
const fromLatin1 = (bytes: Uint8Array) => {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
};

function newStore(settings: StoreSettings): SharedStore {
  return new SharedStore(new SharedArrayBuffer(storeSize(settings)), settings);
}

/** Stores `value` under `key` (the lock taken), as a set does. */
function put(store: SharedStore, key: string, value: string, exptime = 0): number {
  store.lock();
  try {
    const ref = store.alloc(latin1(key), 0, exptime, value.length);
    if (ref < 0) return ref;
    store.valueRoom(ref).set(latin1(value));
    const old = store.find(latin1(key));
    if (old !== 0) store.replace(old, ref);
    else store.link(ref);
    return ref;
  } finally {
    store.unlock();
  }
}

function get(store: SharedStore, key: string): string | undefined {
  store.lock();
  try {
    const ref = store.find(latin1(key));
    return ref === 0 ? undefined : fromLatin1(store.value(ref));
  } finally {
    store.unlock();
  }
}

const SMALL: StoreSettings = { memory: 2 * 1024 * 1024, itemSizeMax: 1024 * 1024 };

Deno.test("SharedStore counts items as memcached does, and two workers share one buffer", () => {
  const buffer = new SharedArrayBuffer(storeSize(SMALL));
  const one = new SharedStore(buffer, SMALL);
  const two = new SharedStore(buffer, SMALL);
  put(one, "a", "abc");
  assert.equal(get(two, "a"), "abc", "the second worker does not see the first one's item");
  // memcached's ITEM_ntotal for key "a", 3 bytes, no flags, with CAS: 63 ("bytes 63").
  assert.equal(two.globals().bytes, 63);
  assert.equal(SharedStore.itemTotal(1, 0, 3), 63);
  assert.equal(SharedStore.itemTotal(2, 5, 300), 365);
  // memcached's slab classes for -n 48 -f 1.25: 96, 120, 152, ...
  assert.deepEqual(one.chunkSizes.slice(1, 8), [96, 120, 152, 192, 240, 304, 384]);
  assert.notEqual(one.stats, two.stats, "each worker counts in its own row");
});

Deno.test("SharedStore evicts from the LRU tail, sparing an active item once, in O(1)", () => {
  const store = newStore(SMALL);
  const value = "v".repeat(900); // one class; 2 pages of 1 MiB hold about 2 * 1040 of them
  for (let i = 0; i < 10_000; i++) assert.ok(put(store, `k${i}`, value) > 0, `set ${i} failed`);
  const { evictions, curr_items, total_malloced } = store.globals();
  assert.equal(evictions + curr_items, 10_000);
  assert.ok(evictions > 7000, `evictions ${evictions}`);
  assert.ok(total_malloced <= SMALL.memory, "more pages than the memory holds");
  assert.equal(get(store, "k0"), undefined, "the oldest item is still there");
  assert.equal(get(store, "k9999"), value);
  // An item fetched twice is active: at the tail it is moved up once instead of evicted.
  store.lock();
  const oldest = `k${10_000 - curr_items}`;
  const ref = store.find(latin1(oldest));
  store.bump(ref);
  store.bump(ref);
  assert.ok((store.itFlags(ref) & ItemFlag.ACTIVE) !== 0);
  store.unlock();
  put(store, "new", value);
  assert.equal(get(store, oldest), value, "an active item was evicted before the others");
  assert.equal(get(store, `k${10_000 - curr_items + 1}`), undefined);
});

Deno.test("SharedStore refuses what is too large, and runs out of memory when all is in flight", () => {
  const store = newStore(SMALL);
  store.lock();
  try {
    assert.equal(store.alloc(latin1("big"), 0, 0, 1024 * 1024), TOO_LARGE);
    // Items allocated and not linked (values being read) cannot be evicted: memory runs out.
    const refs: number[] = [];
    let ref: number;
    while ((ref = store.alloc(latin1("x"), 0, 0, 600 * 1024)) > 0) refs.push(ref);
    assert.equal(ref, NO_MEMORY);
    assert.equal(refs.length, 2, "one item of more than half a page per page");
    for (const r of refs) store.free(r);
    assert.ok(store.alloc(latin1("x"), 0, 0, 600 * 1024) > 0, "freed chunks are not reused");
  } finally {
    store.unlock();
  }
});

Deno.test("SharedStore: expiry as memcached reads it, and flush_all now or later", () => {
  const store = newStore(SMALL);
  put(store, "past", "1", store.realtime(-1));
  put(store, "unix-past", "1", store.realtime(1_000_000_000));
  put(store, "later", "1", store.realtime(3600));
  put(store, "unix-later", "1", store.realtime(Math.floor(Date.now() / 1000) + 3600));
  assert.equal(get(store, "past"), undefined);
  assert.equal(get(store, "unix-past"), undefined);
  assert.equal(get(store, "later"), "1");
  assert.equal(get(store, "unix-later"), "1");
  assert.equal(store.realtime(0), 0, "0 is never");
  store.lock();
  store.setFlush(store.now() - 1, store.nextCas()); // flush_all: everything stored until now
  store.unlock();
  assert.equal(get(store, "later"), undefined);
  put(store, "after", "2");
  assert.equal(get(store, "after"), "2", "an item stored after the flush was flushed");
});

Deno.test("SharedStore counts the connections of live workers only", () => {
  const buffer = new SharedArrayBuffer(storeSize(SMALL));
  const alive = new SharedStore(buffer, SMALL);
  const dead = new SharedStore(buffer, SMALL);
  alive.stats[16]! += 2; // Stat.curr_connections
  dead.stats[16]! += 5;
  assert.equal(alive.currentConnections(), 7);
  dead.retire();
  assert.equal(alive.currentConnections(), 2);
});

Deno.test("numbers read as memcached's safe_strto* read them", () => {
  assert.equal(safeStrtoull(latin1("0005")), 5n);
  assert.equal(safeStrtoull(latin1("18446744073709551615")), 18446744073709551615n);
  assert.equal(safeStrtoull(latin1("18446744073709551616")), undefined, "out of range");
  assert.equal(safeStrtoull(latin1("-1")), undefined);
  assert.equal(safeStrtoull(latin1("1x")), undefined);
  assert.equal(safeStrtoul(latin1("4294967297")), 1, "the low 32 bits, as memcached keeps them");
  assert.equal(safeStrtoul(latin1("\t7")), 7, "leading white space other than a space");
  assert.equal(safeStrtol(latin1("-1")), -1);
  assert.equal(safeStrtol(latin1("2147483648")), -2147483648);
  assert.equal(safeStrtol(latin1("")), undefined);
});

Deno.test("Tokens split as memcached's tokenize_command: 23 tokens, then the rest", () => {
  const t = new Tokens();
  t.split(latin1("get  a b"));
  assert.equal(t.count, 4, "three tokens and memcached's final empty one");
  assert.equal(fromLatin1(t.token(2)), "b");
  const many = Array.from({ length: 30 }, (_, i) => `k${i}`).join(" ");
  t.split(latin1(`get ${many}`));
  assert.equal(t.count, 24);
  assert.equal(fromLatin1(t.line.subarray(t.rest)), many.split(" ").slice(22).join(" "));
});

Deno.test("base64 keys decode and fail as memcached's base64 does", () => {
  assert.equal(fromLatin1(decodeBase64(latin1("YWJj"))!), "abc");
  assert.equal(fromLatin1(decodeBase64(latin1("YQ=="))!), "a");
  assert.equal(decodeBase64(latin1("!!!")), undefined);
  assert.equal(decodeBase64(latin1("YWJ")), undefined, "not a multiple of four");
  assert.equal(encodeBase64(latin1("\x00\xffk")), "AP9r");
});

// ---- the handler, on in-memory connections ----

const context = handlerContext(
  Object.fromEntries(
    Object.entries(memcache.options).map(([name, option]) => [name, option.parse!(option.default)]),
  ),
);
await memcache.setup(context);
/** The cache the handler set up (what it hands over in a reload), seen from here. */
const cache = new SharedStore(memcache.handover().cache, {
  memory: context.options["memory-limit"] as number,
  itemSizeMax: context.options["max-item-size"] as number,
});

/** Splits bytes into chunks of pseudo-random sizes from 1 to `max` bytes. */
function chunks(all: Uint8Array, seed: number, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let x = seed;
  for (let at = 0; at < all.length;) {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = 1 + (x >>> 8) % max;
    out.push(all.slice(at, at + n));
    at += n;
  }
  return out;
}

/**
 * Runs the handler on one connection that sends `input` in the given chunks, with every lent
 * buffer detached after its call (`--debug-buffers`), so that a view kept by mistake fails.
 */
async function converse(input: Uint8Array[]): Promise<{ text: string; closed: boolean }> {
  const socket = new MemorySocket(memcache.handler, { context, debugBuffers: true });
  for (const chunk of input) socket.push(chunk);
  socket.pushEnd();
  await socket.settled();
  assert.notEqual(socket.closeReason, "handler-error");
  return {
    text: fromLatin1(socket.bytes).replace(/^(VALUE \S+ \d+ \d+) \d+\r$/gm, "$1 <cas>\r"),
    closed: socket.closeReason !== undefined,
  };
}

Deno.test("memcache handler answers as memcached does, however the bytes are split", async () => {
  for (const [input, expected] of TRANSCRIPTS) {
    const bytes = latin1(input);
    const whole = await converse([bytes]);
    assert.equal(whole.text, expected, JSON.stringify(input.slice(0, 80)));
    const splits = input.length > 10_000 ? [[4, 700], [5, 9000]] : [[1, 1], [2, 3], [3, 17]];
    for (const [seed, max] of splits) {
      const split = await converse(chunks(bytes, seed!, max!));
      assert.equal(split.text, expected, `${JSON.stringify(input.slice(0, 80))} in 1-${max}`);
    }
  }
});

Deno.test("memcache handler stores a value at the item size limit, byte for byte", async () => {
  // max-item-size counts memcached's item: 48 header + key + 1 + value + 2 + 8 CAS.
  const size = 1024 * 1024 - 48 - 4 - 1 - 2 - 8 - 4; // key "edge", flags 9 (4 bytes)
  const value = Uint8Array.from({ length: size }, (_, i) => (i * 31 + 7) % 256);
  const input = [latin1(`set edge 9 0 ${size}\r\n`), value, latin1("\r\nget edge\r\n")];
  const { text } = await converse(input);
  const header = `STORED\r\nVALUE edge 9 ${size}\r\n`;
  assert.equal(text.slice(0, header.length), header);
  assert.equal(text.length, header.length + size + "\r\nEND\r\n".length);
  assert.ok(value.every((b, i) => text.charCodeAt(header.length + i) === b));
  const over = await converse([latin1(`set edge 9 0 ${size + 1}\r\n`), new Uint8Array(size + 3)]);
  assert.equal(over.text, "SERVER_ERROR object too large for cache\r\n");
});

Deno.test("memcache handler: a line with no end past 2 KiB closes unless it is a get", async () => {
  const junk = await converse([latin1("set k 0 0 1\r\na\r\n"), latin1("x".repeat(3000))]);
  assert.equal(junk.text, "STORED\r\n", "what came before the junk is answered");
  assert.ok(junk.closed);
  // A long get, its first bytes alone in a chunk ("ge"), then the rest: it is answered.
  const keys = Array.from({ length: 300 }, (_, i) => `${i}`.padStart(250, "k")).join(" ");
  const long = await converse([latin1("ge"), latin1(`t ${keys}`), latin1("\r\n")]);
  assert.equal(long.text, "END\r\n");
  // The binary protocol: a first byte of 0x80 closes without a word.
  const binary = await converse([new Uint8Array([0x80, 0x0a, 0, 0]), latin1("get k\r\n")]);
  assert.equal(binary.text, "");
  assert.ok(binary.closed);
});

Deno.test("memcache handler streams a long get under backpressure instead of building it", async () => {
  const value = "v".repeat(30_000);
  const set = await converse([latin1(`set big 0 0 ${value.length}\r\n${value}\r\n`)]);
  assert.equal(set.text, "STORED\r\n");
  const socket = new MemorySocket(memcache.handler, { context, debugBuffers: true });
  socket.slow = true; // the client does not read
  socket.push(`get ${"big ".repeat(500)}\r\nget big\r\n`);
  await socket.settled();
  const firstTurn = socket.buffered;
  assert.ok(firstTurn < 256 * 1024, `${firstTurn} B written for a client that does not read`);
  assert.ok(!socket.accepting, "the client is still read while its answers wait");
  const answer = `VALUE big 0 30000\r\n${value}\r\n`;
  const whole = answer.repeat(500) + "END\r\n" + answer + "END\r\n";
  const writtenLength = () => socket.written.reduce((n, chunk) => n + chunk.length, 0);
  let rounds = 0;
  while (writtenLength() < whole.length) {
    assert.ok(++rounds < 10_000, "the get never finished");
    socket.take(); // drain runs in the call
    assert.ok(socket.buffered < 256 * 1024);
  }
  assert.equal(socket.text, whole);
});

Deno.test("memcache handler gives the memory of a value in flight back when its client goes", async () => {
  const largest = cache.chunkSizes.length - 1; // items of more than half a page
  const used = () => {
    cache.lock();
    try {
      return cache.classStats(largest).usedChunks;
    } finally {
      cache.unlock();
    }
  };
  const before = used();
  for (let i = 0; i < 5; i++) {
    const socket = new MemorySocket(memcache.handler, { context });
    socket.push(`set stall${i} 0 0 900000\r\n${"s".repeat(1000)}`);
    assert.equal(used(), before + 1, "a value's item is not taken when its command arrives");
    socket.pushEnd(); // and gone, 899,000 bytes short
    await socket.settled();
    assert.equal(used(), before, "the item of a value never finished was kept");
  }
});
