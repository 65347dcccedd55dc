/**
 * The `chat` handler end to end: real clients on both workers of a real server, in both dispatch
 * modes. Lines are checked per sender: all of them, in order, to everyone but the sender.
 */

import assert from "node:assert/strict";
import {
  bothModes,
  connectOnWorker,
  scrape,
  type ServerProcess,
  startServer,
  total,
  utf8,
  writeAll,
} from "./helpers.ts";

const FAULTS = "tests/fixtures/chat_with_faults.ts";

/** A chat client that collects every line it receives. */
class ChatClient implements Disposable {
  readonly conn: Deno.TcpConn;
  readonly id: number;
  readonly worker: number;
  readonly lines: string[] = [];
  ended = false;
  #partial = "";
  #wake: (() => void) | undefined;
  readonly reading: Promise<void>;

  constructor(conn: Deno.TcpConn, id: number, worker: number) {
    this.conn = conn;
    this.id = id;
    this.worker = worker;
    this.reading = this.#read();
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        const text = this.#partial + decoder.decode(buffer.subarray(0, n), { stream: true });
        const parts = text.split("\n");
        this.#partial = parts.pop()!;
        this.lines.push(...parts);
        this.#wake?.();
      }
    } catch {
      // Reset: the lines so far are what it got.
    }
    this.ended = true;
    this.#wake?.();
  }

  /** Waits until the server has closed the connection, with a deadline. */
  async waitForEnd(timeoutMs = 10_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`client ${this.id} still open`)), timeoutMs);
    });
    try {
      await Promise.race([this.reading, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  send(text: string): Promise<void> {
    return writeAll(this.conn, utf8(text));
  }

  /** Waits until `n` lines have arrived (or the connection ended), with a deadline. */
  async waitForLines(n: number, timeoutMs = 30_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length < n && !this.ended) {
      if (Date.now() > deadline) {
        throw new Error(
          `client ${this.id}: ${this.lines.length} of ${n} lines after ${timeoutMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    return this.lines;
  }

  [Symbol.dispose](): void {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** Connects a client that the server serves on `worker` (the server must log at debug level). */
async function join(server: ServerProcess, worker: number): Promise<ChatClient> {
  const { conn, id } = await connectOnWorker(server, worker);
  return new ChatClient(conn, id, worker);
}

function start(dispatch: string, ...extra: string[]): Promise<ServerProcess> {
  return startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--log-level",
    "debug",
    "--metrics-port",
    "0",
    ...extra,
  ]);
}

/** Sends numbered lines `from` to `from + count - 1`, split across writes of varied sizes. */
async function talk(client: ChatClient, count: number, tag = "line", from = 0): Promise<void> {
  let text = "";
  for (let k = from; k < from + count; k++) text += `${tag} ${client.id}.${k}\n`;
  const bytes = utf8(text);
  for (let at = 0, step = 7; at < bytes.length; at += step, step = (step * 13) % 997 + 1) {
    await writeAll(client.conn, bytes.subarray(at, at + step));
  }
}

/** Checks that `client` got every other sender's `count` lines, each sender's in order. */
function assertHeardAll(client: ChatClient, senders: ChatClient[], count: number, tag = "line") {
  for (const sender of senders) {
    if (sender === client) continue;
    const heard = client.lines.filter((line) => line.startsWith(`${sender.id}: ${tag} `));
    const expected = (k: number) => `${sender.id}: ${tag} ${sender.id}.${k}`;
    const wrong = heard.findIndex((line, k) => line !== expected(k));
    assert.ok(
      heard.length === count && wrong === -1,
      `client ${client.id} heard ${heard.length} of ${count} lines from ${sender.id}` +
        (wrong >= 0 ? `; line ${wrong} is "${heard[wrong]!.slice(-40)}"` : "") +
        (client.ended ? "; its connection ended" : ""),
    );
  }
  const own = client.lines.filter((line) => line.startsWith(`${client.id}: `));
  assert.deepEqual(own, [], `client ${client.id} heard itself`);
}

bothModes(
  "chat: every line reaches every other client on both workers, in order",
  async (dispatch) => {
    await using server = await start(dispatch, "--handler", "chat");
    const clients = [
      await join(server, 1),
      await join(server, 2),
      await join(server, 1),
      await join(server, 2),
      await join(server, 2),
    ];
    try {
      const count = 300;
      await Promise.all(clients.map((client) => talk(client, count)));
      for (const client of clients) await client.waitForLines(count * (clients.length - 1));
      for (const client of clients) assertHeardAll(client, clients, count);
    } finally {
      for (const client of clients) client[Symbol.dispose]();
    }
  },
);

bothModes(
  "chat: with one worker busy for 1.5 s, no line is lost or reordered",
  async (dispatch) => {
    await using server = await start(dispatch, "--handler", FAULTS);
    const clients = [
      await join(server, 1),
      await join(server, 1),
      await join(server, 2),
      await join(server, 2),
    ];
    try {
      const [, , blocker] = clients;
      const count = 2000;
      // worker-2 stops taking anything while worker-1's clients talk.
      await blocker!.send("#busy 1500\n");
      await Promise.all(clients.map((client) => talk(client, count)));
      for (const client of clients) {
        await client.waitForLines(count * (clients.length - 1) + (client === blocker ? 0 : 1));
      }
      for (const client of clients) assertHeardAll(client, clients, count);
    } finally {
      for (const client of clients) client[Symbol.dispose]();
    }
  },
);

bothModes(
  "chat: a client that does not read is disconnected; the others hear everything",
  async (dispatch) => {
    await using server = await start(
      dispatch,
      "--handler",
      "chat",
      "--handler-option",
      "max-backlog=256k",
    );
    const talker = await join(server, 1);
    const listener = await join(server, 2);
    // Never reads: what is sent to it piles up in the kernel's buffers, then in the server.
    const sleeper = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await server.waitForLog(
        /Connection \d+ from .* to worker-\d[\s\S]*Connection \d+ from .* to worker-\d[\s\S]*Connection \d+ from/,
      );
      const count = 20_000;
      const padding = "x".repeat(1000);
      // 20 MB in bursts that the listener hears before the next: it keeps up, the sleeper not.
      for (let sent = 0; sent < count; sent += 100) {
        await talk(talker, 100, padding, sent);
        await listener.waitForLines(sent + 100);
      }
      assertHeardAll(listener, [talker], count, padding);
      await server.waitForLog(/more than 262144 B of output wait for the client/);
      const metrics = await scrape(server.metricsPort!);
      assert.equal(metrics.get('echoserver_connections_closed_total{reason="output-overflow"}'), 1);
      assert.equal(total(metrics, "echoserver_connections_active"), 2);
    } finally {
      talker[Symbol.dispose]();
      listener[Symbol.dispose]();
      sleeper.close();
    }
  },
);

bothModes("chat: quit, an over-long line and a last line without newline", async (dispatch) => {
  await using server = await start(
    dispatch,
    "--handler",
    "chat",
    "--handler-option",
    "max-line=100",
  );
  using listener = await join(server, 1);
  using leaver = await join(server, 2);
  await leaver.send("bye all\r\nquit\r\nnot relayed\n");
  await leaver.waitForEnd();
  assert.deepEqual(leaver.lines, []);
  using ranter = await join(server, 2);
  await ranter.send("x".repeat(150));
  await ranter.waitForEnd();
  assert.deepEqual(ranter.lines, ["ERR line too long"]);
  using last = await join(server, 2);
  await last.send("no newline at the end");
  await last.conn.closeWrite();
  await listener.waitForLines(2);
  assert.deepEqual(listener.lines, [
    `${leaver.id}: bye all\r`,
    `${last.id}: no newline at the end`,
  ]);
});

bothModes(
  "chat: a worker that dies mid-conversation is replaced, and the room goes on",
  async (dispatch) => {
    await using server = await start(dispatch, "--handler", FAULTS);
    using a = await join(server, 1);
    using b = await join(server, 1);
    using doomed = await join(server, 2);
    await doomed.send("#crash\n");
    await server.waitForLog(/worker-2 died/);
    // Meanwhile worker-1's clients carry on, and hear each other.
    await talk(a, 50, "during");
    await b.waitForLines(51);
    assertHeardAll(b, [a], 50, "during");
    await server.waitForLog(/worker-2 replaced/);
    using fresh = await join(server, 2);
    await talk(a, 50, "after");
    await talk(fresh, 50, "after");
    await fresh.waitForLines(50);
    await a.waitForLines(1 + 50); // the crash line, then fresh's
    assertHeardAll(fresh, [a], 50, "after");
    assertHeardAll(a, [fresh], 50, "after");
  },
);
