/**
 * The `memcache` handler end to end: the real server with 2 workers, in both dispatch modes,
 * driven through real sockets, by real memcached clients (libmemcached's `memccapable`,
 * Python's pymemcache, from Debian's packages) and compared with a real memcached.
 *
 * Tests that need a tool skip when it is missing, saying so in their name; `.ci/run` installs
 * the tools and sets `REQUIRE_MEMCACHED_TOOLS=1`, which turns a missing tool into a failure.
 */

import assert from "node:assert/strict";
import { findMemcached, startMemcached } from "../launcher/memcached.ts";
import { TRANSCRIPTS } from "./fixtures/memcache_transcripts.ts";
import {
  DISPATCHES,
  readBytes,
  type ServerProcess,
  startServer,
  utf8,
  writeAll,
} from "./helpers.ts";

const REQUIRED = Deno.env.get("REQUIRE_MEMCACHED_TOOLS") === "1";
const LATIN1 = new TextDecoder("latin1");

/** Bytes as text, one character per byte, as the protocol's keys and values are. */
function latin1(bytes: Uint8Array): string {
  return LATIN1.decode(bytes);
}

/** Whether a program runs (exit status aside). */
function runs(program: string, args: string[]): boolean {
  try {
    new Deno.Command(program, { args, stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

const MEMCAPABLE = ["memccapable", "memcapable"].find((p) => runs(p, ["-h"]));
/** Debian's pymemcache is for Debian's Python, which may not be the first python3 on PATH. */
const PYTHON = ["/usr/bin/python3", "python3"].find((python) => {
  try {
    return new Deno.Command(python, { args: ["-c", "import pymemcache"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
});
const MEMCACHED = findMemcached();

/**
 * Registers a test per dispatch mode that needs `tool`: skipped (named so) when it is missing,
 * unless the run requires the tools.
 */
function withTool(
  name: string,
  tool: string | undefined,
  what: string,
  fn: (dispatch: string) => Promise<void>,
) {
  for (const dispatch of DISPATCHES) {
    const missing = tool === undefined;
    Deno.test({
      name: `[${dispatch}] ${name}${
        missing && !REQUIRED ? ` (SKIPPED: ${what} not installed)` : ""
      }`,
      ignore: missing && !REQUIRED,
      fn: () => {
        if (missing) throw new Error(`${what} is required (REQUIRE_MEMCACHED_TOOLS=1) but missing`);
        return fn(dispatch);
      },
    });
  }
}

function startCache(dispatch: string, ...extra: string[]): Promise<ServerProcess> {
  return startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--handler",
    "memcache",
    ...extra,
  ]);
}

/** Sends `input` on a new connection, half-closes, and reads every reply to the end. */
async function transcript(port: number, input: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const bytes = typeof input === "string"
      ? Uint8Array.from(input, (c) => c.charCodeAt(0))
      : input;
    const reading = readBytes(conn, Infinity);
    await writeAll(conn, bytes);
    await conn.closeWrite();
    return latin1(await reading).replace(/^(VALUE \S+ \d+ \d+) \d+\r$/gm, "$1 <cas>\r");
  } finally {
    conn.close();
  }
}

/** A client that sends one command at a time and reads its whole reply. */
class Client implements Disposable {
  #conn: Deno.TcpConn;
  #pending = "";
  #buffer = new Uint8Array(64 * 1024);

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends `command` and reads until a line matches `end` (the default: any one-line reply). */
  async ask(command: string, end = /^(END|STORED|EXISTS|NOT_FOUND|NOT_STORED|\d+|.*ERROR.*)$/m) {
    await writeAll(this.#conn, utf8(command));
    while (true) {
      const lines = this.#pending.split("\r\n");
      // The reply is whole once a complete line matches `end`.
      const at = lines.findIndex((line, i) => i < lines.length - 1 && end.test(line));
      if (at >= 0) {
        const reply = lines.slice(0, at + 1).join("\r\n") + "\r\n";
        this.#pending = lines.slice(at + 1).join("\r\n");
        return reply;
      }
      const n = await this.#conn.read(this.#buffer);
      if (n === null) throw new Error(`connection closed; got so far: ${this.#pending}`);
      this.#pending += latin1(this.#buffer.subarray(0, n));
    }
  }

  [Symbol.dispose](): void {
    this.#conn.close();
  }
}

for (const dispatch of DISPATCHES) {
  Deno.test(`[${dispatch}] memcache: memcached's own answers, across 2 workers`, async () => {
    await using server = await startCache(dispatch);
    for (const [input, expected] of TRANSCRIPTS) {
      assert.equal(
        await transcript(server.port, input),
        expected,
        JSON.stringify(input.slice(0, 80)),
      );
    }
  });
}

Deno.test({
  name: `memcache transcripts are what a real memcached answers${
    MEMCACHED === undefined && !REQUIRED ? " (SKIPPED: memcached not installed)" : ""
  }`,
  ignore: MEMCACHED === undefined && !REQUIRED,
  fn: async () => {
    assert.ok(MEMCACHED, "memcached is required (REQUIRE_MEMCACHED_TOOLS=1) but missing");
    await using memcached = await startMemcached(MEMCACHED, 2);
    for (const [input, expected] of TRANSCRIPTS) {
      assert.equal(
        await transcript(memcached.port, input),
        expected,
        JSON.stringify(input.slice(0, 80)),
      );
    }
  },
});

withTool(
  "memcache: libmemcached's memccapable passes every ASCII test",
  MEMCAPABLE,
  "memccapable",
  async (dispatch) => {
    await using server = await startCache(dispatch);
    const output = await new Deno.Command(MEMCAPABLE!, {
      args: ["-h", "127.0.0.1", "-p", String(server.port), "-a", "-t", "10"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.match(text, /All tests passed/, text);
    assert.equal(output.code, 0, text);
  },
);

withTool(
  "memcache: pymemcache drives every command, values to the size limit, expiry",
  PYTHON,
  "python3-pymemcache",
  async (dispatch) => {
    await using server = await startCache(dispatch);
    const output = await new Deno.Command(PYTHON!, {
      args: [
        new URL("./clients/pymemcache_check.py", import.meta.url).pathname,
        "127.0.0.1",
        String(server.port),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, text);
    assert.match(text, /pymemcache: \d+ checks passed/);
  },
);

withTool(
  "memcache: two instances under pymemcache's HashClient lose no key",
  PYTHON,
  "python3-pymemcache",
  async (dispatch) => {
    // memcached scales past one machine by clients sharding keys over servers; two of ours here.
    await using first = await startCache(dispatch);
    await using second = await startCache(dispatch);
    const output = await new Deno.Command(PYTHON!, {
      args: [
        new URL("./clients/pymemcache_hash.py", import.meta.url).pathname,
        `127.0.0.1:${first.port}`,
        `127.0.0.1:${second.port}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, text);
    assert.match(text, /hashclient: 5000 keys over 2 servers/);
  },
);

for (const dispatch of DISPATCHES) {
  Deno.test(`[${dispatch}] memcache: cas races between connections on both workers lose no update`, async () => {
    await using server = await startCache(dispatch, "--log-level", "debug");
    // Counters raced by clients spread over both workers.
    const keys = ["race-a", "race-b", "race-c", "race-d", "race-e"];
    const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(server.port)));
    try {
      for (const key of keys) await clients[0]!.ask(`set ${key} 0 0 1\r\n0\r\n`);
      const rounds = 25;
      let conflicts = 0;
      await Promise.all(clients.map(async (client) => {
        for (let round = 0; round < rounds; round++) {
          for (const key of keys) {
            while (true) {
              const reply = await client.ask(`gets ${key}\r\n`, /^END$/);
              const match = /^VALUE \S+ 0 \d+ (\d+)\r\n(\d+)\r\nEND\r\n$/.exec(reply);
              assert.ok(match, reply);
              const [, cas, value] = match;
              const next = String(Number(value) + 1);
              const answer = await client.ask(
                `cas ${key} 0 0 ${next.length} ${cas}\r\n${next}\r\n`,
              );
              if (answer === "STORED\r\n") break;
              assert.equal(answer, "EXISTS\r\n");
              conflicts++;
            }
          }
        }
      }));
      for (const key of keys) {
        const reply = await clients[0]!.ask(`get ${key}\r\n`, /^END$/);
        assert.match(
          reply,
          new RegExp(`\\r\\n${clients.length * rounds}\\r\\nEND`),
          `${key}: ${reply}`,
        );
      }
      assert.ok(conflicts > 0, "the clients never raced: the test proved nothing");
    } finally {
      for (const client of clients) client[Symbol.dispose]();
    }
  });

  Deno.test(`[${dispatch}] memcache: a get of 1,000 keys answers in key order`, async () => {
    await using server = await startCache(dispatch);
    const keys = Array.from({ length: 1000 }, (_, i) => `many:${i}`);
    let sets = "";
    for (const [i, key] of keys.entries()) {
      sets += `set ${key} ${i} 0 ${String(i).length} noreply\r\n${i}\r\n`;
    }
    const reply = await transcript(server.port, sets + `get ${keys.join(" ")} nothere\r\n`);
    let expected = "";
    for (const [i, key] of keys.entries()) {
      expected += `VALUE ${key} ${i} ${String(i).length}\r\n${i}\r\n`;
    }
    assert.equal(reply, expected + "END\r\n");
  });

  Deno.test(`[${dispatch}] memcache: under the memory cap, the oldest items go, counted in stats`, async () => {
    await using server = await startCache(dispatch, "--handler-option", "memory-limit=2m");
    const value = "v".repeat(10_000);
    let sets = "";
    for (let i = 0; i < 600; i++) {
      sets += `set evict:${i} 0 0 ${value.length} noreply\r\n${value}\r\n`;
    }
    await transcript(server.port, sets);
    const stats = Object.fromEntries(
      [...(await transcript(server.port, "stats\r\n")).matchAll(/^STAT (\S+) (\S+)\r$/gm)]
        .map(([, name, v]) => [name!, Number(v)]),
    );
    assert.equal(stats.limit_maxbytes, 2 * 1024 * 1024);
    assert.ok(stats.bytes! <= stats.limit_maxbytes!, `bytes ${stats.bytes}`);
    assert.ok(
      stats.evictions! > 0 && stats.evictions! + stats.curr_items! === 600,
      JSON.stringify(stats),
    );
    // The most recent items are still there; the first ones are gone.
    const recent = await transcript(server.port, "get evict:599 evict:598 evict:0\r\n");
    assert.match(recent, /VALUE evict:599 [\s\S]*VALUE evict:598 /);
    assert.doesNotMatch(recent, /VALUE evict:0 /);
  });

  Deno.test(`[${dispatch}] memcache: a worker that dies loses no keys; its replacement serves them`, async () => {
    await using server = await startCache(
      dispatch,
      "--handler",
      "tests/fixtures/memcache_with_faults.ts",
    );
    const keys = Array.from({ length: 40 }, (_, i) => `survivor:${i}`);
    let sets = "";
    for (const key of keys) sets += `set ${key} 0 0 2 noreply\r\nok\r\n`;
    await transcript(server.port, sets);
    // Ends whichever worker serves this connection; the cache is in memory the workers share.
    await transcript(server.port, "crash-this-worker\r\n");
    await server.waitForLog(/worker-\d died/);
    await server.waitForLog(/worker-\d replaced/);
    // Enough connections that both workers, the replacement among them, answer some.
    for (let i = 0; i < 6; i++) {
      const reply = await transcript(server.port, `get ${keys.join(" ")}\r\n`);
      assert.equal(reply.split("VALUE ").length - 1, keys.length, reply);
    }
    const stats = await transcript(server.port, "stats\r\n");
    assert.match(stats, /^STAT curr_items 40\r$/m);
  });
}
