/**
 * The handler contract survives the mistakes ordinary handler authors make: un-awaited writes,
 * throwing with writes queued, connections closed under queued writes, ignoring backpressure,
 * modules that never finish loading or fail to. Each test runs in both dispatch modes.
 */

import assert from "node:assert/strict";
import {
  bothModes,
  readBytes,
  runServer,
  scrape,
  startServer,
  text,
  utf8,
  waitForMetric,
  writeAll,
} from "./helpers.ts";

const twoWorkers = (dispatch: string) => ["--workers", "2", "--dispatch", dispatch];

const careless = (dispatch: string, ...extra: string[]) => [
  "--workers",
  "1",
  "--dispatch",
  dispatch,
  "--handler",
  "tests/fixtures/careless_handler.ts",
  "--metrics-port",
  "0",
  ...extra,
];

bothModes(
  "a handler that writes without awaiting and returns still delivers every byte",
  async (dispatch) => {
    await using server = await startServer(careless(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("flood 12 1024\n"));
    const received = await readBytes(conn, Infinity);
    assert.equal(received.length, 12 * 1024 * 1024, "bytes lost");
    for (let i = 0; i < 12; i++) {
      assert.equal(received[i * 1024 * 1024], i % 251, `chunk ${i} out of place`);
    }
  },
);

bothModes(
  "a handler that throws with a write queued closes only its connection",
  async (dispatch) => {
    await using server = await startServer(careless(dispatch));
    using bystander = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(bystander, utf8("flood 1 1\n"));
    using victim = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(victim, utf8("throw 4 1024\n"));
    await readBytes(victim, Infinity);
    await server.waitForLog(/handler failed: careless handler gave up/);
    // The worker is alive: it still serves, and was never replaced.
    using later = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(later, utf8("flood 2 1\n"));
    assert.equal((await readBytes(later, Infinity)).length, 2048);
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 0, server.log());
    assert.doesNotMatch(server.log(), /died/);
  },
);

bothModes(
  "a connection closed under un-awaited writes does not end its worker",
  async (dispatch) => {
    await using server = await startServer(careless(dispatch, "--write-timeout", "1"));
    {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8("hold 8 1024\n"));
      // Never read: the write timeout closes the connection with 8 MiB still queued.
      await waitForMetric(
        server.metricsPort!,
        'echoserver_connections_closed_total{reason="write-timeout"}',
        1,
      );
    }
    using later = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(later, utf8("flood 1 1\n"));
    assert.equal((await readBytes(later, Infinity)).length, 1024);
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get('echoserver_connections_closed_total{reason="write-timeout"}'), 1);
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 0, server.log());
  },
);

bothModes(
  "a handler that ignores backpressure is cut off at 16 MiB of queued output, counted",
  async (dispatch) => {
    await using server = await startServer(careless(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    // 100 MiB written without awaiting to a client that reads nothing yet.
    await writeAll(conn, utf8("hold 100 1024\n"));
    await server.waitForLog(/more than 16777216 B of output wait for the client/);
    // The main thread counts it once the worker's word reaches it: wait for that.
    const metrics = await waitForMetric(
      server.metricsPort!,
      'echoserver_connections_closed_total{reason="output-overflow"}',
      1,
    );
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 0);
    // What reached the client before the cut is a prefix of what was written, never more.
    const received = await readBytes(conn, Infinity);
    assert.ok(received.length < 100 * 1024 * 1024);
  },
);

bothModes(
  "a handler module that never finishes loading fails start-up in time, exit 2",
  async (dispatch) => {
    const { code, stderr } = await runServer([
      "--dispatch",
      dispatch,
      "--handler",
      "tests/fixtures/never_loads.ts",
      "--handler-timeout",
      "1",
    ]);
    assert.equal(code, 2, stderr);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr, /never_loads\.ts.*did not finish loading within 1 s/);
  },
);

Deno.test("handler load errors name the file, line and column; debug adds the stack", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/syntax.ts`,
      "export default function () {\n  const x = ;\n}\n",
    );
    await Deno.writeTextFile(
      `${dir}/throws.ts`,
      'const a = 1;\nthrow new Error("refuses to load " + a);\nexport default () => {};\n',
    );
    const syntax = await runServer(["--handler", `${dir}/syntax.ts`]);
    assert.equal(syntax.code, 2);
    assert.equal(syntax.stderr.trim().split("\n").length, 1, syntax.stderr);
    assert.match(syntax.stderr, /Expression expected .*syntax\.ts:2:13/);
    const throws = await runServer(["--handler", `${dir}/throws.ts`]);
    assert.equal(throws.code, 2);
    assert.equal(throws.stderr.trim().split("\n").length, 1, throws.stderr);
    assert.match(throws.stderr, /refuses to load 1 .*throws\.ts:2:7/);
    const debug = await runServer(["--handler", `${dir}/throws.ts`, "--log-level", "debug"]);
    assert.equal(debug.code, 2);
    assert.match(debug.stderr, /\[DBG\].*\s+at file:.*throws\.ts:2:7/, "no stack at debug level");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

bothModes(
  "a handler module gets its options, per-worker setup and teardown, a connection log, and peers",
  async (dispatch) => {
    await using server = await startServer([
      ...twoWorkers(dispatch),
      "--handler",
      "tests/fixtures/context_handler.ts",
      "--handler-option",
      "greeting=hi",
      "--log-level",
      "debug",
    ]);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("ask 0\nstray\nask 1\nask 7\n"));
    await conn.closeWrite();
    const lines = text(await readBytes(conn, Infinity)).trimEnd().split("\n");
    const line = await server.waitForLog(/Connection (\d+) from .* to worker-(\d+)/);
    const [, id, worker] = /Connection (\d+) from .* to worker-(\d+)/.exec(line)!;
    const self = Number(worker) - 1;
    assert.deepEqual(lines, [
      `hi from worker 0 of 2 to ${self}: ask 0`,
      "sent",
      `hi from worker 1 of 2 to ${self}: ask 1`,
      "error: 7 is not a worker index (0 to 1)",
    ]);
    await server.waitForLog(
      new RegExp(`worker-${worker}: Connection ${id}: asking for 127\\.0\\.0\\.1`),
    );
    await server.waitForLog(/A message to another worker failed, unawaited: 99 is not a worker/);
    assert.doesNotMatch(server.log(), /died/);
    assert.equal((await server.stop("SIGTERM")).code, 0);
    assert.match(server.log(), /worker-1: teardown of worker 0/);
    assert.match(server.log(), /worker-2: teardown of worker 1/);
  },
);

bothModes(
  "a handler module's bad option or failing setup stops start-up: one line, exit 2",
  async (dispatch) => {
    for (
      const [option, reason] of [
        [
          "colour=red",
          /Handler '.*context_handler\.ts' has no option 'colour'; it takes greeting, fail/,
        ],
        ["fail=maybe", /option 'fail' must be no or setup, got "maybe"/],
        ["fail=setup", /Cannot set up handler '.*context_handler\.ts': setup refused on purpose/],
      ] as const
    ) {
      const { code, stderr } = await runServer([
        "--dispatch",
        dispatch,
        "--port",
        "0",
        "--handler",
        "tests/fixtures/context_handler.ts",
        "--handler-option",
        option,
      ]);
      assert.equal(code, 2, stderr);
      assert.equal(stderr.trim().split("\n").length, 1, stderr);
      assert.match(stderr, reason);
    }
  },
);

const carelessBytes = (dispatch: string, ...extra: string[]) => [
  "--workers",
  "1",
  "--dispatch",
  dispatch,
  "--handler",
  "tests/fixtures/careless_socket_handler.ts",
  "--metrics-port",
  "0",
  ...extra,
];

bothModes(
  "a byte handler that ignores write()'s answer and ends still delivers every byte",
  async (dispatch) => {
    await using server = await startServer(carelessBytes(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("flood 12 1024\n"));
    const received = await readBytes(conn, Infinity);
    assert.equal(received.length, 12 * 1024 * 1024, "bytes lost");
    for (let i = 0; i < 12; i++) {
      assert.equal(received[i * 1024 * 1024], i % 251, `chunk ${i} out of place`);
    }
  },
);

bothModes(
  "a byte handler that writes past its output cap to a client that does not read is cut, counted",
  async (dispatch) => {
    await using server = await startServer(carelessBytes(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("hold 100 1024\n"));
    await server.waitForLog(/more than 16777216 B of output wait for the client/);
    const metrics = await waitForMetric(
      server.metricsPort!,
      'echoserver_connections_closed_total{reason="output-overflow"}',
      1,
    );
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 0);
    assert.ok((await readBytes(conn, Infinity)).length < 100 * 1024 * 1024);
  },
);

bothModes(
  "a byte handler that throws closes only its connection, counted as handler-error",
  async (dispatch) => {
    await using server = await startServer(carelessBytes(dispatch));
    using victim = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(victim, utf8("throw\n"));
    await readBytes(victim, Infinity);
    await server.waitForLog(/handler failed: careless byte handler gave up/);
    await waitForMetric(
      server.metricsPort!,
      'echoserver_connections_closed_total{reason="handler-error"}',
      1,
    );
    using later = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(later, utf8("flood 2 1\n"));
    assert.equal((await readBytes(later, Infinity)).length, 2048);
    assert.equal((await scrape(server.metricsPort!)).get("echoserver_worker_restarts_total"), 0);
  },
);

for (const debug of [false, true]) {
  bothModes(
    `an async byte handler keeps its lent view until its promise settles, in order${
      debug ? " (--debug-buffers)" : ""
    }`,
    async (dispatch) => {
      await using server = await startServer(
        carelessBytes(dispatch, ...(debug ? ["--debug-buffers"] : [])),
      );
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8("slow\n"));
      // Pipelined pieces, each echoed after a timer while other frames and reads go on: every
      // byte intact and in place (a buffer reused under a pending call would show here).
      const sent = Array.from({ length: 400 }, (_, i) => `piece ${i};`).join("");
      const reading = readBytes(conn, sent.length);
      for (let at = 0; at < sent.length; at += 37) {
        await writeAll(conn, utf8(sent.slice(at, at + 37)));
      }
      assert.equal(text(await reading), sent);
      assert.doesNotMatch(server.log(), /handler failed/);
    },
  );
}

bothModes(
  "--debug-buffers makes a byte handler that keeps a lent view fail loudly",
  async (dispatch) => {
    await using server = await startServer(carelessBytes(dispatch, "--debug-buffers"));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("keep\n"));
    assert.equal(text(await readBytes(conn, 5)), "kept\n"); // so the next piece is another call
    await writeAll(conn, utf8("next\n"));
    await readBytes(conn, Infinity);
    await server.waitForLog(
      /handler failed: Socket\.write was given a view lent to an earlier data call/,
    );
    await waitForMetric(
      server.metricsPort!,
      'echoserver_connections_closed_total{reason="handler-error"}',
      1,
    );
  },
);
