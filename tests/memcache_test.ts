/**
 * The `memcache` handler's parts, without a server: the shard store, the command parser, the
 * byte queue, and the handler itself fed memcached transcripts in chunks of every size. The
 * expected replies are memcached 1.6.18's, as it answered the same bytes (CAS values aside).
 */

import assert from "node:assert/strict";
import { ByteQueue, latin1 } from "../lib/handlers/memcache/byte_queue.ts";
import { expiry, parseCommand } from "../lib/handlers/memcache/commands.ts";
import * as memcache from "../lib/handlers/memcache/memcache.ts";
import { ITEM_OVERHEAD, ShardStore } from "../lib/handlers/memcache/store.ts";
import { TRANSCRIPTS } from "./fixtures/memcache_transcripts.ts";
import { MemorySocket } from "../lib/worker/memory_socket.ts";
import { handlerContext, utf8 } from "./helpers.ts";

const bytes = (text: string) => utf8(text);

Deno.test("ShardStore evicts the least recently used items to stay within its cap", () => {
  const size = (key: string, value: number) => key.length + value + ITEM_OVERHEAD;
  const store = new ShardStore(size("k0", 100) * 3);
  for (const key of ["k0", "k1", "k2"]) store.store("set", key, new Uint8Array(100), 0, 0, 0);
  assert.ok(store.get("k0", 0)); // k0 is now the most recently used
  store.store("set", "k3", new Uint8Array(100), 0, 0, 0);
  assert.equal(store.get("k1", 0), undefined, "the least recently used goes first");
  assert.ok(store.get("k0", 0) && store.get("k2", 0) && store.get("k3", 0));
  const stats = store.stats();
  assert.equal(stats.evictions, 1);
  assert.equal(stats.curr_items, 3);
  assert.ok(stats.bytes <= stats.limit_maxbytes);
  assert.equal(store.store("set", "huge", new Uint8Array(1000), 0, 0, 0), "NO_MEMORY");
});

Deno.test("ShardStore expires items, counts expired evictions as reclaimed, and touches", () => {
  const store = new ShardStore(1 << 20);
  store.store("set", "a", bytes("1"), 0, 1000, 0);
  store.store("set", "b", bytes("2"), 0, 1000, 0);
  assert.ok(store.get("a", 999));
  assert.ok(store.touch("b", 5000, 999));
  assert.equal(store.get("a", 1000), undefined);
  assert.ok(store.get("b", 4999));
  assert.equal(store.store("set", "c", bytes("3"), 0, -1, 0), "STORED");
  assert.equal(store.get("c", 0), undefined, "a negative expiry is already past");
  const stats = store.stats();
  assert.equal(stats.get_expired, 1);
  assert.equal(stats.reclaimed, 1);
});

Deno.test("ShardStore: add, replace, append, prepend, cas and incr/decr as memcached", () => {
  const store = new ShardStore(1 << 20, 1, 4);
  assert.equal(store.store("add", "k", bytes("v"), 7, 0, 0), "STORED");
  assert.equal(store.store("add", "k", bytes("w"), 0, 0, 0), "NOT_STORED");
  assert.equal(store.store("replace", "none", bytes("w"), 0, 0, 0), "NOT_STORED");
  assert.equal(store.store("append", "k", bytes(">"), 0, 0, 0), "STORED");
  assert.equal(store.store("prepend", "k", bytes("<"), 99, 0, 0), "STORED");
  const item = store.get("k", 0)!;
  assert.equal(latin1(item.value), "<v>");
  assert.equal(item.flags, 7, "append and prepend keep the flags");
  assert.equal(item.cas % 4, 1, "CAS values are unique across shards");
  assert.equal(store.store("cas", "k", bytes("x"), 0, 0, 0, item.cas + 4), "EXISTS");
  assert.equal(store.store("cas", "k", bytes("x"), 0, 0, 0, item.cas), "STORED");
  assert.equal(store.store("cas", "gone", bytes("x"), 0, 0, 0, 1), "NOT_FOUND");
  store.store("set", "n", bytes("18446744073709551615"), 0, 0, 0);
  assert.equal(store.arith("n", true, 2n, 0), "1");
  assert.equal(store.arith("n", false, 5n, 0), "0");
  assert.equal(store.arith("k", true, 1n, 0), "NON_NUMERIC");
  assert.equal(store.arith("none", true, 1n, 0), "NOT_FOUND");
  const stats = store.stats();
  assert.deepEqual([stats.cas_hits, stats.cas_badval, stats.cas_misses], [1, 1, 1]);
  assert.deepEqual([stats.incr_hits, stats.decr_hits, stats.incr_misses], [1, 1, 1]);
});

Deno.test("ShardStore.flush() now empties the shard; with a delay, later", () => {
  const store = new ShardStore(1 << 20);
  store.store("set", "old", bytes("1"), 0, 0, 0);
  store.flush(100, 10);
  store.store("set", "new", bytes("2"), 0, 0, 200);
  assert.ok(store.get("old", 99), "not yet");
  assert.equal(store.get("old", 100), undefined, "flushed at its time");
  assert.ok(store.get("new", 300), "stored after the flush time: kept");
  store.flush(0, 300);
  assert.equal(store.stats().curr_items, 0);
});

Deno.test("expiry() reads relative seconds, Unix times and negatives as memcached does", () => {
  const now = 1_800_000_000_000;
  assert.equal(expiry(0, now), 0);
  assert.equal(expiry(60, now), now + 60_000);
  assert.equal(expiry(2_592_000, now), now + 2_592_000_000, "30 days is still relative");
  assert.equal(expiry(1_800_000_100, now), 1_800_000_100_000, "past 30 days: a Unix time");
  assert.equal(expiry(1_000_000_000, now), -1, "a Unix time in the past");
  assert.equal(expiry(-5, now), -1);
});

Deno.test("parseCommand() parses every command and refuses bad lines with memcached's words", () => {
  const cases: [string, unknown][] = [
    ["get a b  c", { kind: "get", keys: ["a", "b", "c"], cas: false }],
    ["gets a", { kind: "get", keys: ["a"], cas: true }],
    ["gat 0 a", { kind: "get", keys: ["a"], cas: false, touch: 0 }],
    ["cas k 1 0 5 99 noreply", {
      kind: "store",
      mode: "cas",
      key: "k",
      flags: 1,
      expiresAt: 0,
      bytes: 5,
      cas: 99,
      noreply: true,
    }],
    ["delete k 0 noreply", { kind: "delete", key: "k", noreply: true }],
    ["incr k 18446744073709551615", {
      kind: "arith",
      key: "k",
      incr: true,
      delta: 18446744073709551615n,
      noreply: false,
    }],
    ["flush_all noreply", { kind: "flush", at: 0, noreply: true }],
    ["stats settings", { kind: "stats", args: ["settings"] }],
    ["version x", { kind: "version" }],
    ["verbosity noreply", { kind: "verbosity", level: undefined, noreply: true }],
    ["quit", { kind: "quit" }],
  ];
  for (const [line, expected] of cases) assert.deepEqual(parseCommand(line, 0), expected, line);
  const errors: [string, string][] = [
    ["", "ERROR"],
    ["GET a", "ERROR"],
    ["get", "ERROR"],
    ["set k 0 0", "ERROR"],
    ["set k 0 0 -1", "CLIENT_ERROR bad command line format"],
    ["set k x 0 1", "CLIENT_ERROR bad command line format"],
    ["set k 4294967296 0 1", "CLIENT_ERROR bad command line format"],
    [`get ${"k".repeat(251)}`, "CLIENT_ERROR bad command line format"],
    ["delete k 5", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"],
    ["incr k abc", "CLIENT_ERROR invalid numeric delta argument"],
    ["incr k 18446744073709551616", "CLIENT_ERROR invalid numeric delta argument"],
    ["touch k soon", "CLIENT_ERROR invalid exptime argument"],
    ["flush_all abc", "CLIENT_ERROR invalid exptime argument"],
    ["verbosity", "ERROR"],
    ["verbosity foo", "CLIENT_ERROR bad command line format"],
    ["verbosity foo bar my", "ERROR"],
  ];
  for (const [line, reply] of errors) {
    assert.deepEqual(parseCommand(line, 0), { kind: "error", reply: reply + "\r\n" }, line);
  }
});

Deno.test("ByteQueue takes lines and blocks across chunk boundaries, copying only on take", () => {
  const queue = new ByteQueue();
  for (const part of ["se", "t k 0 0 5\r", "\nab", "c\r\n\r", "\nget k\n"]) queue.push(bytes(part));
  assert.equal(queue.takeLine(queue.indexOf(0x0a)), "set k 0 0 5");
  assert.equal(latin1(queue.take(7)), "abc\r\n\r\n");
  assert.equal(queue.first(), "g".charCodeAt(0));
  assert.equal(queue.takeLine(queue.indexOf(0x0a)), "get k");
  assert.equal(queue.length, 0);
  assert.equal(queue.indexOf(0x0a), -1);
  queue.push(new Uint8Array([0xff, 0x80, 0x0a]));
  assert.equal(queue.takeLine(2), "\u00ff\u0080", "bytes come back one character each");
});

/** Splits text into chunks of pseudo-random sizes from 1 to `max` bytes. */
function chunks(text: string, seed: number, max: number): Uint8Array[] {
  const all = Uint8Array.from(text, (c) => c.charCodeAt(0));
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
async function converse(input: Uint8Array[]): Promise<string> {
  const socket = new MemorySocket(memcache.handler, { context, debugBuffers: true });
  for (const chunk of input) socket.push(chunk);
  socket.pushEnd();
  await socket.settled();
  assert.notEqual(socket.closeReason, "handler-error");
  return latin1(socket.bytes).replace(/^(VALUE \S+ \d+ \d+) \d+\r$/gm, "$1 <cas>\r");
}

const context = handlerContext(
  Object.fromEntries(
    Object.entries(memcache.options).map(([name, option]) => [name, option.parse!(option.default)]),
  ),
);
memcache.setup(context);

Deno.test("memcache handler answers as memcached does, however the bytes are split", async () => {
  for (const [input, expected] of TRANSCRIPTS) {
    const whole = await converse([Uint8Array.from(input, (c) => c.charCodeAt(0))]);
    assert.equal(whole, expected, JSON.stringify(input.slice(0, 80)));
    // One byte at a time costs a turn per byte: only for the short transcripts.
    const splits = input.length > 10_000
      ? [[4, 700], [5, 9000]]
      : [[1, 1], [2, 3], [3, 17], [4, 700]];
    for (const [seed, max] of splits) {
      const split = await converse(chunks(input, seed!, max!));
      assert.equal(split, expected, `${JSON.stringify(input.slice(0, 80))} in chunks of 1-${max}`);
    }
  }
});

Deno.test("memcache handler stores a value exactly at max-item-size, byte for byte", async () => {
  const value = Uint8Array.from({ length: 1024 * 1024 }, (_, i) => (i * 31 + 7) % 256);
  const input = [bytes("set edge 9 0 1048576\r\n"), value, bytes("\r\nget edge\r\n")];
  const output = await converse(input);
  const header = "STORED\r\nVALUE edge 9 1048576\r\n";
  assert.equal(output.slice(0, header.length), header);
  assert.equal(output.length, header.length + value.length + "\r\nEND\r\n".length);
  assert.ok(value.every((b, i) => output.charCodeAt(header.length + i) === b));
});

Deno.test("memcache handler closes a connection whose line never ends, or that speaks binary", async () => {
  assert.equal(
    await converse([bytes("get " + "k".repeat(70_000))]),
    "CLIENT_ERROR line too long\r\n",
  );
  assert.equal(await converse([new Uint8Array([0x80, 0x0a, 0, 0]), bytes("get k\r\n")]), "");
});
