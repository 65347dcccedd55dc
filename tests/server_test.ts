/**
 * End-to-end tests: each starts the real server process on port 0 with 2 workers and talks to
 * it over loopback.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseCommandLine } from "../lib/main_thread/config.ts";
import {
  bothModes,
  connectToWorker,
  pattern,
  readBytes,
  runServer,
  scrape,
  startServer,
  text,
  utf8,
  writeAll,
} from "./helpers.ts";

/** Two workers, in the given dispatch mode. */
const twoWorkers = (dispatch: string) => ["--workers", "2", "--dispatch", dispatch];
/** Windows has no SIGTERM to send: the signal tests run elsewhere. */
const POSIX = Deno.build.os !== "windows";

bothModes(
  "server echoes many lines on 100 concurrent connections, byte-exact",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    const clients = Array.from({ length: 100 }, async (_, c) => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      for (let line = 0; line < 20; line++) {
        const message = utf8(`client ${c} line ${line} ${"x".repeat(line * 7)}\r\n`);
        await writeAll(conn, message);
        assert.deepEqual(await readBytes(conn, message.length), message);
      }
    });
    await Promise.all(clients);
  },
);

bothModes(
  "server echoes all 256 byte values, binary and invalid UTF-8 included",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const all = new Uint8Array(256 * 4).map((_, i) => (i * 37) % 256);
    all.set([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xed, 0xa0, 0x80], 0);
    await writeAll(conn, all);
    assert.deepEqual(await readBytes(conn, all.length), all);
  },
);

bothModes(
  "server echoes a large transfer in order and flushes it all on half-close",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const payload = pattern(8 * 1024 * 1024, 3);
    const reading = readBytes(conn, Infinity);
    await writeAll(conn, payload);
    await conn.closeWrite();
    const echoed = await reading;
    assert.equal(echoed.length, payload.length);
    assert.ok(echoed.every((b, i) => b === payload[i]), "echo differs from what was sent");
  },
);

bothModes(
  "bulk echoes on 8 concurrent connections each get back their own bytes",
  async (dispatch) => {
    // Bulk buffers are recycled between connections on the main thread: a buffer reused while
    // still queued would show up here as one connection's bytes in another's echo.
    await using server = await startServer(twoWorkers(dispatch));
    const clients = Array.from({ length: 8 }, async (_, c) => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const payload = pattern(4 * 1024 * 1024, 11 + c);
      const reading = readBytes(conn, Infinity);
      for (let at = 0; at < payload.length; at += 64 * 1024) {
        await writeAll(conn, payload.subarray(at, at + 64 * 1024));
      }
      await conn.closeWrite();
      const echoed = await reading;
      assert.equal(echoed.length, payload.length, `connection ${c}`);
      assert.ok(echoed.every((b, i) => b === payload[i]), `connection ${c}: echo differs`);
    });
    await Promise.all(clients);
  },
);

bothModes(
  "half-close: every byte sent before the client's FIN comes back, then EOF",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("hi\nthere"));
    await conn.closeWrite();
    assert.equal(text(await readBytes(conn, Infinity)), "hi\nthere");
  },
);

bothModes(
  "quit closes only its own connection; the others and the server carry on",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using quitter = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    using others = await Promise.all(
      [1, 2, 3].map(() => Deno.connect({ hostname: "127.0.0.1", port: server.port })),
    ).then((conns) =>
      Object.assign(conns, { [Symbol.dispose]: () => conns.forEach((c) => c.close()) })
    );

    await writeAll(quitter, utf8("before\r\nquit\r\nafter\r\n"));
    assert.equal(text(await readBytes(quitter, Infinity)), "before\r\n", "not closed after quit");

    for (const conn of others) {
      await writeAll(conn, utf8("still here\n"));
      assert.equal(text(await readBytes(conn, 11)), "still here\n");
    }
    using late = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    // "qu" is echoed before "it\n" is sent, so the two arrive apart however busy the machine.
    await writeAll(late, utf8("qu"));
    assert.equal(text(await readBytes(late, 2)), "qu");
    await writeAll(late, utf8("it\n"));
    assert.equal(text(await readBytes(late, Infinity)), "", "split quit line not seen");
    // The server itself carries on: a new client is served.
    using after = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(after, utf8("after quit\n"));
    assert.equal(text(await readBytes(after, 11)), "after quit\n");
  },
);

bothModes("default host serves IPv4 127.0.0.1 and IPv6 ::1", async (dispatch) => {
  await using server = await startServer(twoWorkers(dispatch));
  for (const hostname of ["127.0.0.1", "::1"]) {
    using conn = await Deno.connect({ hostname, port: server.port });
    await writeAll(conn, utf8(`via ${hostname}\n`));
    assert.equal(text(await readBytes(conn, 5 + hostname.length)), `via ${hostname}\n`);
  }
});

Deno.test("[main] connections are spread round-robin over every worker", async () => {
  await using server = await startServer([...twoWorkers("main"), "--log-level", "debug"]);
  for (let i = 0; i < 4; i++) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("x"));
    await readBytes(conn, 1);
  }
  await server.waitForLog(/Connection 4 from \S+ to worker-2/);
  const workers = [...server.log().matchAll(/Connection (\d+) from \S+ to worker-(\d)/g)]
    .map((m) => [Number(m[1]), Number(m[2])]);
  assert.deepEqual(workers, [[1, 1], [2, 2], [3, 1], [4, 2]]);
});

Deno.test({
  name: "[kernel] the kernel spreads connections over every worker, each serving its own",
  ignore: Deno.build.os !== "linux",
}, async () => {
  await using server = await startServer([...twoWorkers("kernel"), "--log-level", "debug"]);
  // The kernel picks a listener by a hash of the connection's addresses: 40 connections all on
  // one of two workers would happen once in 2^39 runs.
  for (let i = 0; i < 40; i++) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, utf8("x"));
    await readBytes(conn, 1);
  }
  await server.waitForLog(/Connection 40 from/);
  const workers = [
    ...server.log().matchAll(/echoserver.worker-(\d): Connection \d+ from \S+ to worker-(\d)/g),
  ];
  assert.equal(workers.length, 40);
  // Each connection is logged by the worker that accepted it: no thread relays another's.
  assert.ok(workers.every((m) => m[1] === m[2]));
  assert.deepEqual(new Set(workers.map((m) => m[2])), new Set(["1", "2"]));
});

bothModes(
  "backpressure: a client that never reads is stopped, and gets every byte later",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const chunk = pattern(64 * 1024, 5);
    const limit = 256 * 1024 * 1024;
    let sent = 0;
    let stalled: Promise<void> | undefined;
    // Write until a write makes no progress for a second: the server has stopped reading.
    while (sent < limit) {
      const write = writeAll(conn, chunk);
      const progressed = await Promise.race([
        write.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 1000)),
      ]);
      if (!progressed) {
        stalled = write;
        break;
      }
      sent += chunk.length;
    }
    assert.ok(
      stalled !== undefined,
      `server kept reading ${sent} bytes from a client that reads nothing`,
    );
    // Kernel buffers on both sides take some megabytes; the server itself holds under 1 MiB.
    assert.ok(sent < 64 * 1024 * 1024, `${sent} bytes accepted before the stall`);
    const expected = sent + chunk.length;
    const echoed = await readBytes(conn, expected);
    await stalled;
    assert.equal(echoed.length, expected);
    for (let i = 0; i < echoed.length; i += chunk.length) {
      assert.deepEqual(echoed.subarray(i, i + chunk.length), chunk, `mismatch at ${i}`);
    }
  },
);

Deno.test("bad flags exit 2 with a one-line message and a hint, no stack trace", async () => {
  for (
    const [args, message] of [
      [["--bogus"], "Unknown option '--bogus'"],
      [["--port", "99999"], `'--port' must be an integer from 0 to 65535, got "99999"`],
      [["--workers", "none"], `'--workers' must be an integer`],
      [
        ["--log-level", "verbose"],
        `'--log-level' must be one of trace, debug, info, warning, error, fatal`,
      ],
    ] as const
  ) {
    const { code, stderr, stdout } = await runServer([...args]);
    assert.equal(code, 2, `${args}: exit ${code}`);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 2, `${args}: ${stderr}`);
    assert.ok(lines[0]!.includes(message), `${args}: ${lines[0]}`);
    assert.match(lines[1]!, /--help/);
    assert.doesNotMatch(stderr, /\bat .*:\d+:\d+/);
    assert.equal(stdout, "");
  }
});

Deno.test("--help and --version print to stdout and exit 0", async () => {
  const help = await runServer(["--help"]);
  assert.equal(help.code, 0);
  for (const flag of ["--port", "--host", "--workers", "--idle-timeout", "--max-connections"]) {
    assert.ok(help.stdout.includes(flag), `help lacks ${flag}`);
  }
  const version = await runServer(["-V"]);
  assert.equal(version.code, 0);
  const { default: config } = await import("../deno.json", { with: { type: "json" } });
  assert.equal(version.stdout.trim(), `echoserver ${config.version}`);
});

bothModes("a port in use exits 1 with one line naming the address", async (dispatch) => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { code, stderr } = await runServer([
    "--host",
    "127.0.0.1",
    "--port",
    `${taken.addr.port}`,
    "--dispatch",
    dispatch,
  ]);
  assert.equal(code, 1);
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.match(
    lines[0]!,
    new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${taken.addr.port}: .*in use`),
  );
});

bothModes(
  "a port another echoserver listens on is refused (exit 1, one line) unless --join",
  async (dispatch) => {
    // The running one listens with SO_REUSEPORT (both modes, on Linux), which would let a second
    // process of the same user share the port and take half of its clients.
    await using running = await startServer(["--dispatch", dispatch, "--workers", "1"]);
    const { code, stderr } = await runServer([
      "--port",
      `${running.port}`,
      "--dispatch",
      dispatch,
      "--workers",
      "1",
    ]);
    assert.equal(code, 1, stderr);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0]!, /Cannot listen on .*:\d+: .*in use.*start with --join/);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: running.port });
    await writeAll(conn, utf8("still the only one\n"));
    assert.equal(text(await readBytes(conn, 19)), "still the only one\n");
  },
  { ignore: Deno.build.os !== "linux" },
);

bothModes(
  "every built-in handler loads from its file as a user's module does",
  async (dispatch) => {
    // The built-ins are templates: a copy of one, given by path, serves as the built-in does.
    const cases: [string, string, (line: string) => string][] = [
      ["echo", "hello\n", (line) => line],
      [
        "hash",
        "abc\n",
        () => `${"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}\n`,
      ],
    ];
    for (const [name, line, expected] of cases) {
      for (const spec of [name, `./lib/handlers/builtin/${name}.ts`]) {
        await using server = await startServer([
          "--dispatch",
          dispatch,
          "--workers",
          "1",
          "--handler",
          spec,
        ]);
        using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        await writeAll(conn, utf8(line));
        const want = expected(line);
        assert.equal(text(await readBytes(conn, want.length)), want, `${spec}`);
      }
    }
    for (const name of ["chat", "memcache"]) {
      await using server = await startServer([
        "--dispatch",
        dispatch,
        "--workers",
        "1",
        "--handler",
        `lib/handlers/builtin/${name === "memcache" ? "memcache/memcache" : name}.ts`,
      ]);
      assert.match(server.log(), /listening on/);
    }
  },
);

bothModes("a bad listen address exits 1 with one line", async (dispatch) => {
  const { code, stderr } = await runServer([
    "--host",
    "256.1.1.1",
    "--port",
    "0",
    "--dispatch",
    dispatch,
  ]);
  assert.equal(code, 1);
  assert.match(stderr.trim(), /^[^\n]*Cannot listen on 256\.1\.1\.1:0: [^\n]+$/);
});

bothModes(
  "a handler module that exports no handler of either shape fails start-up with exit 2",
  async (dispatch) => {
    const { code, stderr } = await runServer([
      "--handler",
      "tests/fixtures/not_a_handler.ts",
      "--dispatch",
      dispatch,
    ]);
    assert.equal(code, 2);
    assert.match(
      stderr.trim(),
      /^[^\n]*Cannot load handler .*not_a_handler\.ts.*a function \(Web Streams\) or an object with a data\(socket, bytes\) method[^\n]*$/,
    );
  },
);

bothModes(
  "a handler module that is missing or throws on load fails start-up with exit 2",
  async (dispatch) => {
    for (
      const [path, reason] of [
        ["tests/fixtures/no_such_handler.ts", /Cannot load handler .*no_such_handler\.ts/],
        ["tests/fixtures/throws_on_load.ts", /Cannot load handler .*this module refuses to load/],
      ] as const
    ) {
      const { code, stderr } = await runServer(["--handler", path, "--dispatch", dispatch]);
      assert.equal(code, 2, stderr);
      assert.equal(stderr.trim().split("\n").length, 1, stderr);
      assert.match(stderr, reason);
    }
  },
);

bothModes(
  "with the default port held by another process, a bad handler still exits 2: it is loaded before the port is bound",
  async (dispatch) => {
    const command = parseCommandLine([], { cpus: 1 });
    const port = command.kind === "serve" ? command.config.port : 0;
    assert.ok(port > 0);
    // Held here, or already held by someone's own server: taken either way. (The server listens
    // on [::] dual-stack, which an IPv4 listener on the port refuses too.)
    let holder: Deno.Listener | undefined;
    try {
      holder = Deno.listen({ hostname: "0.0.0.0", port });
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    }
    try {
      // The control: a server that loads finds the port taken.
      const busy = await runServer(["--dispatch", dispatch], { freePort: false });
      assert.equal(busy.code, 1, busy.stderr);
      for (
        const [path, reason] of [
          ["tests/fixtures/no_such_handler.ts", /Cannot load handler .*no_such_handler\.ts/],
          ["tests/fixtures/throws_on_load.ts", /this module refuses to load/],
          ["tests/fixtures/not_a_handler.ts", /Cannot load handler .*not_a_handler\.ts/],
        ] as const
      ) {
        const { code, stderr } = await runServer(["--handler", path, "--dispatch", dispatch], {
          freePort: false,
        });
        assert.equal(code, 2, stderr);
        assert.equal(stderr.trim().split("\n").length, 1, stderr);
        assert.match(stderr, reason);
      }
    } finally {
      holder?.close();
    }
  },
);

bothModes(
  "a handler that throws closes only its own connection, logged and counted",
  async (dispatch) => {
    await using server = await startServer([
      ...twoWorkers(dispatch),
      "--handler",
      "tests/fixtures/throwing_handler.ts",
      "--metrics-port",
      "0",
    ]);
    using victim = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    using neighbour = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(victim, utf8("boom\n"));
    assert.equal((await readBytes(victim, Infinity)).length, 0);
    await writeAll(neighbour, utf8("fine\n"));
    assert.equal(text(await readBytes(neighbour, 5)), "fine\n");
    await server.waitForLog(/Connection \d+: handler failed: boom requested/);
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get('echoserver_connections_closed_total{reason="handler-error"}'), 1);
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 0);
  },
);

bothModes(
  "SIGTERM: stops accepting, a client mid-echo gets its bytes, exit 0",
  async (dispatch) => {
    await using server = await startServer(twoWorkers(dispatch));
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const payload = pattern(1024 * 1024, 9);
    const sending = writeAll(conn, payload);
    // The first echoed bytes prove the server serves the connection (a connection still in
    // the listen queue when the listener closes is reset by the kernel).
    const first = await readBytes(conn, 1);
    const rest = readBytes(conn, Infinity);
    await sending;
    const status = await server.stop("SIGTERM");
    const echoed = new Uint8Array([...first, ...await rest]);
    assert.equal(status.code, 0);
    assert.equal(echoed.length, payload.length);
    assert.ok(echoed.every((b, i) => b === payload[i]));
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.port }));
  },
  { ignore: !POSIX },
);

bothModes(
  "SIGINT with idle connections open: they end with the drain, not at its deadline, exit 0",
  async (dispatch) => {
    await using server = await startServer([...twoWorkers(dispatch), "--shutdown-timeout", "30"]);
    using _idle = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const status = await server.stop("SIGINT");
    assert.equal(status.code, 0);
    // An idle connection has nothing to finish: it is closed when input stops, not cut at the
    // 30 s deadline (which would log the timeout).
    assert.doesNotMatch(server.log(), /Shutdown timeout/);
    assert.match(server.log(), /Stopped/);
  },
  { ignore: !POSIX },
);

bothModes(
  "a worker that dies is replaced: only its connections close, new ones are served",
  async (dispatch) => {
    await using server = await startServer([
      ...twoWorkers(dispatch),
      "--handler",
      "tests/fixtures/crash_handler.ts",
      "--log-level",
      "debug",
    ]);
    using onWorker1 = await connectToWorker(server, 1);
    using onWorker2 = await connectToWorker(server, 2);
    await writeAll(onWorker2, utf8("hello\n"));
    assert.equal(text(await readBytes(onWorker2, 6)), "hello\n");

    await writeAll(onWorker1, utf8("crash\n"));
    await readBytes(onWorker1, Infinity); // the echo, if any, then the close
    await server.waitForLog(/worker-1 died: .*crash requested by the test/);
    await server.waitForLog(/worker-1 replaced/);

    await writeAll(onWorker2, utf8("still served\n"));
    assert.equal(text(await readBytes(onWorker2, 13)), "still served\n");
    for (let i = 0; i < 4; i++) {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8(`new ${i}\n`));
      assert.equal(text(await readBytes(conn, 6)), `new ${i}\n`);
    }
    assert.doesNotMatch(server.log(), /\n\s+at /, `a stack trace was printed:\n${server.log()}`);
  },
);

Deno.test("resolveHandlerSpec() keeps names and URLs, and finds paths in the first base that has them", async () => {
  const { resolveHandlerSpec } = await import("../lib/handlers/registry.ts");
  const here = new URL("./", import.meta.url);
  const root = new URL("../", import.meta.url);
  assert.equal(resolveHandlerSpec("hash", [() => here]), "hash");
  assert.equal(
    resolveHandlerSpec("https://example.com/h.ts", [() => here]),
    "https://example.com/h.ts",
  );
  // Present in the second base only: resolved there.
  assert.equal(
    resolveHandlerSpec("tests/fixtures/crash_handler.ts", [() => here, () => root]),
    new URL("tests/fixtures/crash_handler.ts", root).href,
  );
  // Present nowhere: resolved from the first base, where the error will point.
  assert.equal(
    resolveHandlerSpec("nowhere.ts", [() => here, () => root]),
    new URL("nowhere.ts", here).href,
  );
});

Deno.test("--dispatch kernel without Deno's --unstable-net exits 2 with one line, not Deno's 70", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      fileURLToPath(new URL("../main.ts", import.meta.url)),
      "--port",
      "0",
      "--dispatch",
      "kernel",
    ],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 2, stderr);
  assert.equal(stderr.trim().split("\n").length, 1, stderr);
  assert.match(stderr, /'--dispatch kernel' needs Deno's --unstable-net flag/);
});

bothModes(
  "--log-format json: every log line is one JSON object with time, level, logger, message, fields",
  async (dispatch) => {
    const server = await startServer([
      ...twoWorkers(dispatch),
      "--log-format",
      "json",
      "--log-level",
      "debug",
    ]);
    {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8("hi\n"));
      assert.equal(text(await readBytes(conn, 3)), "hi\n");
    }
    await server.waitForLog(/Connection \d+ closed: \\"done/);
    await server.stop("SIGTERM");
    const lines = server.log().trim().split("\n");
    assert.ok(lines.length >= 4, server.log());
    const records = lines.map((line) => JSON.parse(line));
    for (const record of records) {
      for (const field of ["@timestamp", "level", "logger", "message"]) {
        assert.ok(field in record, `${field} missing: ${JSON.stringify(record)}`);
      }
    }
    const opened = records.find((r) => /Connection \d+ from/.test(r.message));
    // Opens are logged by the thread that accepts: the main thread, or the worker itself.
    assert.match(
      opened.logger,
      dispatch === "main" ? /^echoserver\.main$/ : /^echoserver\.worker-[12]$/,
    );
    assert.equal(typeof opened.properties.id, "number");
    assert.ok(
      records.some((r) => r.message.startsWith("Stopped:") && r.logger === "echoserver.main"),
    );
  },
);

Deno.test("a permission the server lacks exits 1 with one line, without Deno's worker errors", async () => {
  const main = fileURLToPath(new URL("../main.ts", import.meta.url));
  for (
    const [flags, reason] of [
      [["--allow-read", "--unstable-net"], /Cannot listen on .*requires net access/],
      [
        ["--allow-net", "--unstable-net"],
        /Cannot start: no permission to read .*connection_worker\.ts/,
      ],
    ] as const
  ) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, main, "--port", "0"],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 1, stderr);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr, reason);
    assert.doesNotMatch(stderr, /Uncaught/);
  }
});
