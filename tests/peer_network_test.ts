/**
 * The links between workers, in one thread: each network is one worker's side, wired with real
 * `MessageChannel`s as the main thread wires workers. A network that is not started takes no
 * messages, which is how a busy worker looks to its peers.
 */

import assert from "node:assert/strict";
import { PeerError } from "../lib/handlers/handler.ts";
import { PeerNetwork, WINDOW_BYTES, WINDOW_MESSAGES } from "../lib/worker/peer_network.ts";
import { fnv1a32, shardOf } from "../lib/handlers/shard.ts";

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** `n` networks wired pairwise; `using` closes them all. */
function wire(n: number, options: { start?: boolean } = {}) {
  const nets = Array.from({ length: n }, (_, i) => new PeerNetwork(i, n, quiet));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const { port1, port2 } = new MessageChannel();
      nets[i]!.connect(j, port1);
      nets[j]!.connect(i, port2);
    }
  }
  if (options.start ?? true) { for (const net of nets) net.start(); }
  return Object.assign(nets, {
    [Symbol.dispose]() {
      for (const net of nets) net.close();
    },
  });
}

/** Resolves after the event loop has turned `n` times (batches go out once per turn). */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

/** Counts the entries that leave through any port while it is in scope. */
function countPostedEntries(): { entries: number } & Disposable {
  const original = MessagePort.prototype.postMessage;
  const seen = {
    entries: 0,
    [Symbol.dispose]() {
      MessagePort.prototype.postMessage = original;
    },
  };
  MessagePort.prototype.postMessage = function (this: MessagePort, ...args: unknown[]) {
    const batch = args[0] as { entries?: unknown[] };
    if (batch?.entries) seen.entries += batch.entries.length;
    // deno-lint-ignore no-explicit-any
    return (original as any).apply(this, args);
  };
  return seen;
}

Deno.test("PeerNetwork delivers messages and requests in the order sent, per pair", async () => {
  using nets = wire(2);
  const [a, b] = nets;
  const seen: number[] = [];
  b!.onMessage((message) => seen.push(message as number));
  b!.onRequest((message) => {
    seen.push(message as number);
    return (message as number) * 2;
  });
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < 2000; i++) {
    sends.push(i % 10 === 0 ? a!.request(1, i) : a!.send(1, i));
  }
  const results = await Promise.all(sends);
  assert.deepEqual(seen, Array.from({ length: 2000 }, (_, i) => i));
  for (let i = 0; i < 2000; i += 10) assert.equal(results[i], i * 2);
});

Deno.test("PeerNetwork holds senders back while the receiver takes nothing, then delivers all", async () => {
  using nets = wire(2, { start: false });
  const [a, b] = nets;
  a!.start(); // b is "busy": started later
  const received: number[] = [];
  b!.onMessage((message) => received.push(message as number));
  using posts = countPostedEntries();
  let resolved = 0;
  const sends = Array.from({ length: 1000 }, (_, i) => a!.send(1, i).then(() => resolved++));
  await turns(20);
  assert.equal(resolved, 0, "a send resolved before the receiver took it");
  assert.equal(posts.entries, WINDOW_MESSAGES, "more than the window left the sender");
  b!.start();
  await Promise.all(sends);
  assert.deepEqual(received, Array.from({ length: 1000 }, (_, i) => i));
});

Deno.test("PeerNetwork's byte window holds large messages back too", async () => {
  using nets = wire(2, { start: false });
  const [a, b] = nets;
  a!.start();
  let got = 0;
  b!.onMessage(() => got++);
  using posts = countPostedEntries();
  const size = 1024 * 1024;
  const sends = Array.from({ length: 10 }, () => a!.send(1, new Uint8Array(size)));
  await turns(10);
  assert.equal(posts.entries, Math.floor(WINDOW_BYTES / size));
  b!.start();
  await Promise.all(sends);
  assert.equal(got, 10);
});

Deno.test("PeerNetwork: a worker replaced mid-conversation fails what it held, then serves anew", async () => {
  using nets = wire(2);
  const [a, b] = nets;
  const never = new Promise(() => {});
  b!.onRequest((message) => message === "hang" ? never : "fine");
  assert.equal(await a!.request(1, "ping"), "fine");
  const hanging = a!.request(1, "hang");
  await turns();
  // The main thread saw worker 1 die.
  a!.disconnect(1);
  await assert.rejects(hanging, (e) => e instanceof PeerError && e.kind === "lost" && e.peer === 1);
  await assert.rejects(
    a!.send(1, "meanwhile"),
    (e) => e instanceof PeerError && e.kind === "unavailable",
  );
  // Its replacement is wired: the conversation goes on with it, in order.
  const replacement = new PeerNetwork(1, 2, quiet);
  const { port1, port2 } = new MessageChannel();
  a!.connect(1, port1);
  replacement.connect(0, port2);
  const seen: unknown[] = [];
  replacement.onMessage((message) => seen.push(message));
  replacement.onRequest((message) => `new:${message}`);
  replacement.start();
  await a!.send(1, "one");
  assert.equal(await a!.request(1, "two"), "new:two");
  await a!.send(1, "three");
  assert.deepEqual(seen, ["one", "three"]);
  replacement.close();
});

Deno.test("PeerNetwork: messages in flight when a worker dies reject as lost, none silently", async () => {
  using nets = wire(2, { start: false });
  const [a] = nets;
  a!.start();
  const sends = Array.from({ length: 300 }, (_, i) => a!.send(1, i));
  await turns();
  a!.disconnect(1);
  const outcomes = await Promise.allSettled(sends);
  const kinds = outcomes.map((o) =>
    o.status === "rejected" && o.reason instanceof PeerError ? o.reason.kind : "delivered"
  );
  // Those already sent were lost with it; those held back by the window never left.
  assert.equal(kinds.filter((k) => k === "lost").length, WINDOW_MESSAGES);
  assert.equal(kinds.filter((k) => k === "unavailable").length, 300 - WINDOW_MESSAGES);
});

Deno.test("PeerNetwork.request() rejects with the remote listener's error, as a PeerError", async () => {
  using nets = wire(2);
  const [a, b] = nets;
  b!.onRequest((message) => {
    if (message === "throw") throw new RangeError("bad key");
    return Promise.reject(new Error("async failure"));
  });
  await assert.rejects(
    a!.request(1, "throw"),
    (e) => e instanceof PeerError && e.kind === "remote" && e.message === "bad key",
  );
  await assert.rejects(a!.request(1, "other"), { name: "PeerError", message: "async failure" });
});

Deno.test("PeerNetwork: a worker that set no request listener answers with an error", async () => {
  using nets = wire(2);
  await assert.rejects(nets[0]!.request(1, "x"), /worker-2 has no request listener/);
});

Deno.test("PeerNetwork delivers to its own worker locally, without a copy", async () => {
  using nets = wire(2);
  const [a] = nets;
  const value = { bytes: new Uint8Array([1, 2, 3]) };
  let got: unknown;
  a!.onMessage((message) => got = message);
  a!.onRequest((message) => message);
  await a!.send(0, value);
  assert.equal(got, value);
  assert.equal(await a!.request(0, value), value);
});

Deno.test("PeerNetwork.broadcast() reaches every worker, itself included", async () => {
  using nets = wire(3);
  const seen: string[] = [];
  nets.forEach((net, i) => net.onMessage((m, from) => seen.push(`${i}<-${from}:${m}`)));
  await nets[1]!.broadcast("hi");
  assert.deepEqual(seen.sort(), ["0<-1:hi", "1<-1:hi", "2<-1:hi"]);
});

Deno.test("PeerNetwork: a message that cannot be cloned fails alone; its batch still arrives", async () => {
  using nets = wire(2);
  const [a, b] = nets;
  const seen: unknown[] = [];
  b!.onMessage((message) => seen.push(message));
  const sends = [a!.send(1, "before"), a!.send(1, () => "a function"), a!.send(1, "after")];
  const outcomes = await Promise.allSettled(sends);
  assert.deepEqual(outcomes.map((o) => o.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /cannot be sent/);
  assert.deepEqual(seen, ["before", "after"]);
  // The failed one gave its credit back: the link still works.
  await a!.send(1, "later");
  assert.deepEqual(seen, ["before", "after", "later"]);
});

Deno.test("PeerNetwork.request() stops waiting when its signal aborts", async () => {
  using nets = wire(2);
  nets[1]!.onRequest(() => new Promise(() => {}));
  const controller = new AbortController();
  const asking = nets[0]!.request(1, "slow", { signal: controller.signal });
  controller.abort(new Error("gave up"));
  await assert.rejects(asking, /gave up/);
});

Deno.test("PeerNetwork: a throwing message listener does not break the link", async () => {
  using nets = wire(2);
  const seen: unknown[] = [];
  nets[1]!.onMessage((message) => {
    if (message === "bad") throw new Error("listener bug");
    seen.push(message);
  });
  await nets[0]!.send(1, "bad");
  await nets[0]!.send(1, "good");
  assert.deepEqual(seen, ["good"]);
});

Deno.test("PeerNetwork.send() to an index that is no worker rejects as unavailable", async () => {
  using nets = wire(2);
  await assert.rejects(nets[0]!.send(5, "x"), (e) => e instanceof PeerError && e.peer === 5);
});

Deno.test("shardOf() agrees on every worker, for strings and bytes, and spreads keys", () => {
  using nets = wire(4);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 10_000; i++) {
    const key = `key:${i}`;
    const owners = new Set(nets.map((net) => net.ownerOf(key)));
    assert.equal(owners.size, 1);
    assert.equal(shardOf(new TextEncoder().encode(key), 4), [...owners][0]);
    counts[[...owners][0]!]!++;
  }
  for (const count of counts) assert.ok(count > 2000 && count < 3000, `uneven: ${counts}`);
  // Long keys (past the scratch buffer) hash the same as bytes too.
  const long = "x".repeat(5000) + "é";
  assert.equal(shardOf(long, 7), fnv1a32(new TextEncoder().encode(long)) % 7);
});
