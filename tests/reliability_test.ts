/**
 * The server's promises under load, faults and hostile peers, each against the real server
 * process on loopback, read back through `/metrics` where something must be counted.
 */

import assert from "node:assert/strict";
import { serverCommand } from "../launcher/server_process.ts";
import {
  bothModes,
  connectToWorker,
  delay,
  openFiles,
  pattern,
  readBytes,
  rssKiB,
  runServer,
  scrape,
  startServer,
  text,
  total,
  utf8,
  waitForMetric,
  waitForTotal,
  writeAll,
} from "./helpers.ts";

/** How close a repeated signal must follow the first to count as the same one (main.ts). */
const REPEAT_WINDOW_MS = 250;

/** Two workers in the given dispatch mode, and the metrics endpoint on a free port. */
const base = (dispatch: string) => [
  "--workers",
  "2",
  "--dispatch",
  dispatch,
  "--metrics-port",
  "0",
];

/**
 * These tests read /proc, raise limits with sh's ulimit and send POSIX signals: Linux only.
 * Each runs once per dispatch mode.
 */
function test(name: string, fn: (dispatch: "main" | "kernel") => Promise<void>): void {
  bothModes(name, fn, { ignore: Deno.build.os !== "linux" });
}
const connect = (port: number) => Deno.connect({ hostname: "127.0.0.1", port });

/** The handlers that can be told to hold their worker's thread, one per handler contract. */
const BLOCKING = {
  socket: "tests/fixtures/blocking_handler.ts",
  streams: "tests/fixtures/blocking_stream_handler.ts",
} as const;

/** One worker whose handler (of either contract) can be told to hold its thread. */
function startBlocking(dispatch: string, contract: keyof typeof BLOCKING, ...extra: string[]) {
  return startServer([
    "--workers",
    "1",
    "--dispatch",
    dispatch,
    "--handler",
    BLOCKING[contract],
    ...extra,
  ]);
}

/** Opens `n` connections, a few hundred at a time, closing them all on dispose. */
async function connectMany(port: number, n: number) {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = Array.from({ length: Math.min(500, n - i) }, () => connect(port));
    conns.push(...await Promise.all(batch));
  }
  return Object.assign(conns, {
    [Symbol.dispose]() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  });
}

/** Resolves with how the connection ended: "eof", "reset", or "open" if still open after `ms`. */
async function endOf(conn: Deno.Conn, ms: number): Promise<"eof" | "reset" | "open"> {
  const buffer = new Uint8Array(64 * 1024);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const read = conn.read(buffer).then((n) => n === null ? "eof" : "data", () => "reset");
    const result = await Promise.race([read, delay(deadline - Date.now()).then(() => "open")]);
    if (result === "eof" || result === "reset" || result === "open") {
      return result as "eof" | "reset" | "open";
    }
  }
  return "open";
}

test("slow reader: 64 MiB unread costs the server under 16 MiB; others are served", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  using slow = await connect(server.port);
  using other = await connect(server.port);
  await writeAll(other, utf8("warm\n"));
  await readBytes(other, 5);
  const before = await rssKiB(server.process.pid);

  const payload = pattern(64 * 1024 * 1024, 1);
  const sending = writeAll(slow, payload).catch(() => {});
  await delay(3000); // the server stops reading long before 64 MiB
  for (let i = 0; i < 20; i++) {
    const line = utf8(`line ${i} while the slow reader stalls\n`);
    await writeAll(other, line);
    assert.deepEqual(await readBytes(other, line.length), line);
  }
  const grown = (await rssKiB(server.process.pid)) - before;
  assert.ok(grown < 16 * 1024, `server RSS grew by ${grown} KiB`);
  const metrics = await scrape(server.metricsPort!);
  assert.ok(
    total(metrics, "echoserver_received_bytes_total") < 32 * 1024 * 1024,
    "the server read most of what the slow reader sent",
  );
  slow.close();
  await sending;
});

test("write timeout: a client that reads none of its echo is disconnected and counted", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--write-timeout", "1"]);
  using stuck = await connect(server.port);
  using healthy = await connect(server.port);
  // Reading would take the echo; the client learns of the disconnect when its writes fail.
  // (The 30 s race only keeps a broken server from hanging the test.)
  const outcome = await Promise.race([
    writeAll(stuck, pattern(256 * 1024 * 1024, 2)).then(() => "all written", () => "reset"),
    delay(30_000).then(() => "still open"),
  ]);
  assert.equal(outcome, "reset");
  await writeAll(healthy, utf8("still fine\n"));
  assert.equal(text(await readBytes(healthy, 11)), "still fine\n");
  const metrics = await scrape(server.metricsPort!);
  assert.equal(metrics.get('echoserver_connections_closed_total{reason="write-timeout"}'), 1);
});

/**
 * The open-file limit that this test process and the servers it starts inherit: 10,000
 * connections need about 10,100 descriptors on each side.
 */
const FD_LIMIT = Deno.build.os === "linux"
  ? Number(
    new TextDecoder().decode(
      new Deno.Command("sh", { args: ["-c", "ulimit -n"], stdout: "piped" }).outputSync().stdout,
    ).trim(),
  ) || 0
  : 0;
const ENOUGH_FDS = FD_LIMIT >= 10_500;

bothModes(
  ENOUGH_FDS
    ? "10,000 concurrent connections each echo correctly"
    : `10,000 concurrent connections each echo correctly (SKIPPED: ulimit -n is ${FD_LIMIT}, ` +
      "below 10,500; raise it to run this test)",
  (dispatch) => tenThousand(dispatch),
  { ignore: Deno.build.os !== "linux" || !ENOUGH_FDS },
);

async function tenThousand(dispatch: string): Promise<void> {
  await using server = await startServer(base(dispatch));
  using conns = await connectMany(server.port, 10_000);
  let mismatched = 0;
  await Promise.all(conns.map(async (conn, i) => {
    const message = utf8(`conn ${i.toString().padStart(5, "0")}!\n`);
    await writeAll(conn, message);
    const echoed = await readBytes(conn, message.length);
    if (text(echoed) !== text(message)) mismatched++;
  }));
  assert.equal(mismatched, 0);
  const metrics = await scrape(server.metricsPort!);
  assert.equal(total(metrics, "echoserver_connections_active"), 10_000);
  assert.equal(total(metrics, "echoserver_connections_rejected_total"), 0);
}

test("connection limit: the 101st is closed at once and counted; the 100 carry on", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--max-connections", "100"]);
  {
    using first = await connectMany(server.port, 100);
    for (const conn of first) await writeAll(conn, utf8("hi\n"));
    for (const conn of first) assert.equal(text(await readBytes(conn, 3)), "hi\n");

    using extra = await connect(server.port);
    assert.notEqual(await endOf(extra, 3000), "open", "the 101st was not closed");
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get("echoserver_connections_rejected_total"), 1);
    assert.equal(total(metrics, "echoserver_connections_active"), 100);
    for (const conn of first) await writeAll(conn, utf8("again\n"));
    for (const conn of first) assert.equal(text(await readBytes(conn, 6)), "again\n");
  }
  // The 100 have left: new connections are accepted again.
  for (let i = 0; i < 50; i++) {
    const metrics = await scrape(server.metricsPort!);
    if (total(metrics, "echoserver_connections_active") === 0) break;
    await delay(100);
  }
  using late = await connect(server.port);
  await writeAll(late, utf8("back\n"));
  assert.equal(text(await readBytes(late, 5)), "back\n");
});

test("descriptor exhaustion: failed accepts are counted and service resumes", async (dispatch) => {
  await using server = await startServer(base(dispatch), { maxOpenFiles: 128 });
  {
    using _flood = await connectMany(server.port, 200);
    await delay(500);
    // Some of the flood got in; the rest wait in the backlog while accept() fails.
  }
  await delay(1500);
  using conn = await connect(server.port);
  await writeAll(conn, utf8("served again\n"));
  assert.equal(text(await readBytes(conn, 13)), "served again\n");
  const metrics = await scrape(server.metricsPort!);
  assert.ok(
    metrics.get("echoserver_accept_failures_total")! > 0,
    `no failed accept counted:\n${server.log()}`,
  );
  await server.waitForLog(/Accept failed: too many open files/i);
});

test("idle timeout: not closed before the deadline, then closed, socket really released", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--idle-timeout", "1"]);
  const fdsBefore = await openFiles(server.process.pid);
  using conn = await connect(server.port);
  await writeAll(conn, utf8("x"));
  await readBytes(conn, 1);
  const lastActivity = Date.now();
  assert.equal(await endOf(conn, 30_000), "eof");
  // Never early (timers do not fire before their time); how late depends on the machine.
  const after = Date.now() - lastActivity;
  assert.ok(after >= 950, `closed ${after} ms after the last byte`);
  await waitForMetric(server.metricsPort!, 'echoserver_connections_closed_total{reason="idle"}', 1);
  let fds = await openFiles(server.process.pid);
  for (let i = 0; i < 100 && fds !== fdsBefore; i++) {
    await delay(50);
    fds = await openFiles(server.process.pid);
  }
  assert.equal(fds, fdsBefore, "descriptor leaked");
});

for (const contract of ["socket", "streams"] as const) {
  test(`idle timeout (${contract} handler): input waiting for a held worker thread is not idle`, async (dispatch) => {
    await using server = await startBlocking(dispatch, contract, "--idle-timeout", "1");
    using waiting = await connect(server.port);
    using blocker = await connect(server.port);
    await writeAll(blocker, utf8("block 3000\n"));
    await server.waitForLog(/blocking for 3000 ms/);
    // Read at once (main dispatch) or left in the kernel (kernel dispatch), then not touched
    // for longer than --idle-timeout while the thread is held: still echoed.
    await writeAll(waiting, utf8("waiting\n"));
    assert.equal(text(await readBytes(waiting, 8)), "waiting\n");
    assert.equal(text(await readBytes(blocker, 11)), "block 3000\n");
  });
}

test("drain: on SIGTERM 1,000 connections keep being served until they finish, exit 0", async (dispatch) => {
  // --drain-idle 0: every connection is served until its client finishes, however long a busy
  // machine holds the client back (the idle rule has tests of its own).
  await using server = await startServer([
    ...base(dispatch),
    "--shutdown-timeout",
    "120",
    "--drain-idle",
    "0",
  ]);
  using conns = await connectMany(server.port, 1000);
  let stop = false;
  const conversing: Promise<void>[] = [];
  const results = conns.map(async (conn, i) => {
    const message = pattern(512, i);
    // The first echo proves the server serves this connection before the signal comes.
    const first = writeAll(conn, message).then(() => readBytes(conn, message.length));
    conversing.push(first.then(() => {}));
    const firstEcho = await first;
    let sent = message.length;
    const reading = readBytes(conn, Infinity);
    // Every 50 ms: 20,000 writes/s in all, or fewer on a busy machine.
    while (!stop) {
      await delay(50);
      await writeAll(conn, message);
      sent += message.length;
    }
    // Done: half-close, and the server ends the connection once the echo is out.
    await conn.closeWrite();
    const rest = await reading;
    const echoed = firstEcho.length + rest.length;
    const exact = [firstEcho, rest].every((part) => part.every((b, j) => b === message[j % 512]));
    return { sent, echoed, exact };
  });
  await Promise.all(conversing);
  server.process.kill("SIGTERM");
  await server.waitForLog(/SIGTERM received/);
  // The clients go on sending for a while after the signal: the server still reads and echoes.
  await delay(500);
  stop = true;
  const outcomes = await Promise.all(results);
  const status = await server.exited();
  assert.equal(status.code, 0, server.log());
  assert.match(server.log(), /Stopped: 1000 connection\(s\) finished, 0 idle closed, none cut/);
  const short = outcomes.filter((o) => o.echoed !== o.sent || !o.exact);
  assert.equal(
    short.length,
    0,
    `${short.length} connections lost bytes: ${JSON.stringify(short[0])}\n${server.log()}`,
  );
});

for (const contract of ["socket", "streams"] as const) {
  test(`drain (${contract} handler): input that arrives while the worker's thread is held is echoed, not closed as idle`, async (dispatch) => {
    // A thread held longer than the drain's idle rule (a handler that computes, a machine that
    // starves the worker): the input that waits meanwhile, in the kernel or relayed, is served.
    await using server = await startBlocking(dispatch, contract, "--shutdown-timeout", "30");
    using talker = await connect(server.port);
    using blocker = await connect(server.port);
    await writeAll(blocker, utf8("hello\n"));
    assert.equal(text(await readBytes(blocker, 6)), "hello\n");
    server.process.kill("SIGTERM");
    await server.waitForLog(/SIGTERM received/);
    // The talker converses throughout, so that the drain has seen it active just before.
    let stop = false;
    let echoed = 0;
    const talking = (async () => {
      for (let i = 0; !stop; i++) {
        const message = utf8(`message ${i}\n`);
        await writeAll(talker, message);
        assert.equal(text(await readBytes(talker, message.length)), text(message), `message ${i}`);
        echoed++;
        await delay(20);
      }
    })();
    try {
      while (echoed < 20) await Promise.race([talking, delay(20)]);
      await writeAll(blocker, utf8("block 3000\n"));
      await server.waitForLog(/blocking for 3000 ms/);
      const before = echoed;
      // The talker's next message waits for the held thread; then it goes on being echoed.
      while (echoed < before + 5) await Promise.race([talking, delay(20)]);
    } finally {
      stop = true;
      await talking.catch(() => {});
    }
    await talking; // fails here with what the talker saw, if it lost an echo
    talker.closeWrite();
    blocker.closeWrite();
    assert.equal(text(await readBytes(blocker, Infinity)), "block 3000\n");
    const status = await server.exited();
    assert.equal(status.code, 0, server.log());
    assert.match(server.log(), /Stopped: 2 connection\(s\) finished, 0 idle closed, none cut/);
  });
}

test("drain: during a connect storm every client is served or refused, never reset, and the last line adds up", async (dispatch) => {
  await using server = await startServer([
    ...base(dispatch),
    "--shutdown-timeout",
    "60",
    "--drain-idle",
    "0",
  ]);
  let served = 0;
  let refused = 0;
  const broken: string[] = [];
  let stop = false;
  // Each client connects, echoes one line and closes, again and again, until it is refused.
  const clients = Array.from({ length: 16 }, async (_, i) => {
    const message = utf8(`client ${i}\n`);
    while (!stop) {
      let conn: Deno.TcpConn;
      try {
        conn = await connect(server.port);
      } catch (error) {
        if (error instanceof Deno.errors.ConnectionRefused) refused++;
        else broken.push(`connect: ${(error as Error).message}`);
        return;
      }
      try {
        await writeAll(conn, message);
        const echo = await readBytes(conn, message.length, 60_000, { resetIsEnd: false });
        if (echo.length !== message.length) broken.push(`EOF after ${echo.length} bytes`);
        else served++;
      } catch (error) {
        broken.push(`${(error as Error).name}: ${(error as Error).message}`);
      } finally {
        conn.close();
      }
      if (broken.length > 0) return;
    }
  });
  try {
    for (const deadline = Date.now() + 60_000; served < 300;) {
      assert.ok(Date.now() < deadline && broken.length === 0, `storm: ${served} served ${broken}`);
      await delay(10);
    }
    server.process.kill("SIGTERM");
    const status = await server.exited(90_000);
    assert.equal(status.code, 0, server.log());
  } finally {
    stop = true;
    await Promise.all(clients);
  }
  assert.deepEqual(broken, [], `clients saw a connection broken after it was accepted`);
  assert.equal(refused, 16, "every client ends refused once the server has stopped");
  const draining = Number(/draining (\d+) connection/.exec(server.log())?.[1] ?? 0);
  const [, finished, idle] = /Stopped: (\d+) connection\(s\) finished, (\d+) idle closed, none cut/
    .exec(server.log()) ?? [];
  assert.equal(Number(finished) + Number(idle), draining, server.log());
});

test("drain: a connection silent for --drain-idle with nothing pending is closed and counted", async (dispatch) => {
  await using server = await startServer([
    ...base(dispatch),
    "--shutdown-timeout",
    "120",
    "--drain-idle",
    "0.5",
  ]);
  using quiet = await connect(server.port); // a telnet session left open
  await writeAll(quiet, utf8("hello\n"));
  assert.equal(text(await readBytes(quiet, 6)), "hello\n");
  server.process.kill("SIGTERM");
  assert.equal((await readBytes(quiet, Infinity)).length, 0, "closed with a FIN, nothing more");
  const status = await server.exited();
  assert.equal(status.code, 0, server.log());
  assert.match(server.log(), /Stopped: 0 connection\(s\) finished, 1 idle closed, none cut/);
});

test("drain: clients slow to read when the signal comes still get their whole echo", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--shutdown-timeout", "10"]);
  using conns = await connectMany(server.port, 50);
  // Each sends 2 MiB and reads none of it yet: most of the echo waits in the server and in
  // the kernel's buffers when the signal comes.
  const payloads = conns.map((_, i) => pattern(2 * 1024 * 1024, i));
  const sending = conns.map((conn, i) => writeAll(conn, payloads[i]!));
  // Accepted, and data in flight: a connection still in the listen queue when the listener
  // closes is reset by the kernel, which is not what this test is about.
  await waitForTotal(server.metricsPort!, "echoserver_connections_active", 50);
  server.process.kill("SIGTERM");
  await server.waitForLog(/SIGTERM received/);
  await delay(1000);
  const echoes = conns.map((conn) => readBytes(conn, Infinity));
  await Promise.all(sending);
  await Promise.all(conns.map((conn) => conn.closeWrite()));
  const echoed = await Promise.all(echoes);
  const status = await server.exited();
  assert.equal(status.code, 0, server.log());
  for (const [i, bytes] of echoed.entries()) {
    assert.equal(bytes.length, payloads[i]!.length, `connection ${i}`);
    assert.ok(bytes.every((b, j) => b === payloads[i]![j]), `connection ${i} echo differs`);
  }
});

test("drain: at --shutdown-timeout a connection with output pending is reset, exit 3", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--shutdown-timeout", "1"]);
  using stuck = await connect(server.port);
  using quiet = await connect(server.port);
  // Sends far more than the kernel's buffers hold and never reads its echo.
  let writeError: unknown;
  const sending = writeAll(stuck, pattern(64 * 1024 * 1024, 3)).catch((e) => writeError = e);
  await waitForTotal(server.metricsPort!, "echoserver_connections_active", 2);
  const status = await server.stop("SIGTERM");
  await sending;
  let readError: unknown;
  let got = 0;
  try {
    got = (await readBytes(stuck, Infinity)).length;
  } catch (error) {
    readError = error;
  }
  // The client learns that its echo was cut: a reset on its write or its read, never an echo
  // that ends in a FIN as if it were complete.
  const reset = [writeError, readError].some((e) => e instanceof Deno.errors.ConnectionReset);
  assert.ok(reset, `no reset seen (read ${got} B, then EOF)`);
  assert.equal(status.code, 3, server.log());
  assert.match(server.log(), /Stopped: 1 connection\(s\) cut at --shutdown-timeout/);
  // The quiet client had nothing pending: closed with a FIN, not counted as cut.
  assert.equal((await readBytes(quiet, Infinity)).length, 0);
});

test("drain: a second signal exits at once", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--shutdown-timeout", "30"]);
  using stuck = await connect(server.port);
  const sending = writeAll(stuck, pattern(32 * 1024 * 1024, 4)).catch(() => {});
  await waitForTotal(server.metricsPort!, "echoserver_connections_active", 1);
  server.process.kill("SIGTERM");
  await server.waitForLog(/SIGTERM received/);
  // A repeat within the server's repeat window counts as the same signal (see the next test):
  // a deliberate second one comes later.
  await delay(REPEAT_WINDOW_MS + 100);
  const status = await server.stop("SIGTERM");
  // It exited on the second signal, without finishing the 30 s drain.
  assert.equal(status.code, 143);
  assert.match(server.log(), /SIGTERM again: exiting now/);
  assert.doesNotMatch(server.log(), /Stopped/);
  stuck.close();
  await sending;
});

test("drain: one Ctrl-C delivered twice at once (group and task runner) still drains", async (dispatch) => {
  // Under `deno task serve` one Ctrl-C reaches the server from the terminal and again from the
  // runner that forwards it, within a millisecond: that must not skip the drain.
  await using server = await startServer([...base(dispatch), "--shutdown-timeout", "10"]);
  using conn = await connect(server.port);
  const payload = pattern(1024 * 1024, 6);
  const sending = writeAll(conn, payload);
  // The first echoed bytes prove the server serves the connection (a connection still in the
  // listen queue when the listener closes is reset by the kernel).
  const first = await readBytes(conn, 1);
  // Two kill() calls in a row would merge into one pending signal; the runner's copy comes
  // just after the server has taken the first.
  server.process.kill("SIGINT");
  await server.waitForLog(/SIGINT received/);
  const rest = readBytes(conn, Infinity);
  await sending;
  const status = await server.stop("SIGINT");
  const echoed = first.length + (await rest).length;
  assert.equal(status.code, 0, server.log());
  assert.doesNotMatch(server.log(), /again: exiting now/);
  assert.match(server.log(), /Stopped/);
  assert.equal(echoed, payload.length);
});

for (const [how, line] of [["throws", "crash"], ["exits", "exit"]]) {
  test(`a worker that ${how} is replaced within a second; other workers' clients never notice`, async (dispatch) => {
    await using server = await startServer([
      ...base(dispatch),
      "--handler",
      "tests/fixtures/crash_handler.ts",
      "--log-level",
      "debug",
    ]);
    using victim = await connectToWorker(server, 1);
    using bystander = await connectToWorker(server, 2);
    await writeAll(bystander, utf8("before\n"));
    assert.equal(text(await readBytes(bystander, 7)), "before\n");

    await writeAll(victim, utf8(`${line}\n`));
    await server.waitForLog(/worker-1 replaced/);
    assert.notEqual(await endOf(victim, 2000), "open", "the dead worker's client stayed open");

    await writeAll(bystander, utf8("after\n"));
    assert.equal(text(await readBytes(bystander, 6)), "after\n");
    using fresh = await connect(server.port);
    await writeAll(fresh, utf8("new\n"));
    assert.equal(text(await readBytes(fresh, 4)), "new\n");
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get("echoserver_worker_restarts_total"), 1);
    assert.equal(metrics.get('echoserver_connections_closed_total{reason="worker-lost"}'), 1);
  });
}

test("hostile input: random bytes in random-sized writes come back byte-exact", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  using conn = await connect(server.port);
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < 24 * 1024 * 1024) {
    const chunk = new Uint8Array(1 + Math.floor(random() * random() * 1024 * 1024));
    for (let i = 0; i < chunk.length; i++) chunk[i] = random() * 256;
    chunks.push(chunk);
    size += chunk.length;
  }
  const reading = readBytes(conn, size);
  for (const chunk of chunks) await writeAll(conn, chunk);
  const echoed = await reading;
  assert.equal(echoed.length, size);
  let offset = 0;
  for (const chunk of chunks) {
    assert.ok(chunk.every((b, i) => echoed[offset + i] === b), `mismatch in chunk at ${offset}`);
    offset += chunk.length;
  }
});

test("hostile input: 16 MiB without a newline, 100,000 one-byte writes, split quit", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  {
    using conn = await connect(server.port);
    const blob = new Uint8Array(16 * 1024 * 1024).fill(0x61);
    const reading = readBytes(conn, blob.length);
    await writeAll(conn, blob);
    const echoed = await reading;
    assert.equal(echoed.length, blob.length);
    assert.ok(echoed.every((b) => b === 0x61));
  }
  {
    using conn = await connect(server.port);
    const reading = readBytes(conn, 100_000);
    const one = new Uint8Array(1);
    for (let i = 0; i < 100_000; i++) {
      one[0] = i % 251;
      await writeAll(conn, one);
    }
    const echoed = await reading;
    assert.equal(echoed.length, 100_000);
    assert.ok(echoed.every((b, i) => b === i % 251));
  }
  {
    using conn = await connect(server.port);
    // Each part's echo is read before the next part is sent, so the parts arrive apart
    // however busy the machine is. Echo never waits: the parts of the quit line that came
    // before its end were echoed; its end and what follows are not.
    for (const part of ["abc\nq", "u", "it", "\r"]) {
      await writeAll(conn, utf8(part));
      assert.equal(text(await readBytes(conn, part.length)), part);
    }
    await writeAll(conn, utf8("\nnot echoed\n"));
    assert.equal(text(await readBytes(conn, Infinity)), "");
  }
  using conn = await connect(server.port);
  await writeAll(conn, utf8("alive\n"));
  assert.equal(text(await readBytes(conn, 6)), "alive\n");
});

Deno.test({
  name: "hostile command lines all exit 2 with one line and no stack trace",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const cases = [
    ["--port", "-5"],
    ["--port", "0x10"],
    ["--port", "5555", "extra"],
    ["--workers", "0"],
    ["--workers", "2.5"],
    ["--idle-timeout", "-1"],
    ["--idle-timeout", "NaN"],
    ["--max-connections", "1e9"],
    ["--shutdown-timeout", "forever"],
    ["--write-timeout", "-3"],
    ["--metrics-port", "http"],
    ["--log-level", "DEBUG"],
    ["--log-level"],
    ["--host="],
    ["--handler="],
    ["-p"],
    ["--help=yes"],
    ["---port", "1"],
    ["-z"],
  ];
  for (const args of cases) {
    const { code, stderr, stdout } = await runServer(args);
    assert.equal(code, 2, `${JSON.stringify(args)} exited ${code}: ${stderr}`);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 2, `${JSON.stringify(args)}: ${stderr}`);
    assert.match(lines[1]!, /--help/);
    assert.doesNotMatch(stderr, /\n\s+at /, `${JSON.stringify(args)}: stack trace`);
    assert.equal(stdout, "");
  }
});

test("metrics: Prometheus text whose counters add up", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  using kept = await connectMany(server.port, 5);
  for (const conn of kept) {
    await writeAll(conn, utf8("12345"));
    await readBytes(conn, 5);
  }
  for (let i = 0; i < 3; i++) {
    using conn = await connect(server.port);
    await writeAll(conn, utf8("abc\n"));
    await conn.closeWrite();
    await readBytes(conn, Infinity);
  }
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
  assert.match(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const body = await response.text();
  assert.match(body, /^# HELP echoserver_connections_accepted_total /m);
  assert.match(body, /^# TYPE echoserver_connections_active gauge$/m);
  const metrics = await scrape(server.metricsPort!);
  const accepted = total(metrics, "echoserver_connections_accepted_total");
  const active = total(metrics, "echoserver_connections_active");
  const closed = total(metrics, "echoserver_connections_closed_total");
  assert.equal(accepted, 8);
  assert.equal(active, 5);
  assert.equal(closed, 3);
  assert.equal(accepted, active + closed);
  const perWorker = [1, 2].map((w) =>
    metrics.get(`echoserver_connections_accepted_total{worker="${w}"}`)!
  );
  assert.equal(perWorker[0]! + perWorker[1]!, 8);
  // Round-robin in main dispatch; in kernel dispatch the kernel decides.
  if (dispatch === "main") assert.deepEqual(perWorker, [4, 4]);
  assert.equal(metrics.get("echoserver_received_bytes_total"), 5 * 5 + 3 * 4);
  assert.equal(metrics.get("echoserver_sent_bytes_total"), 5 * 5 + 3 * 4);
  assert.equal((await fetch(`http://127.0.0.1:${server.metricsPort}/other`)).status, 404);
  await (await fetch(`http://127.0.0.1:${server.metricsPort}/other`)).body?.cancel();
});

test("metrics: the process series and build info that Prometheus users expect", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  const metrics = await scrape(server.metricsPort!);
  const rss = metrics.get("process_resident_memory_bytes")!;
  assert.ok(rss > 10e6 && rss < 10e9, `rss ${rss}`);
  const started = metrics.get("process_start_time_seconds")!;
  assert.ok(Math.abs(started - Date.now() / 1000) < 600, `start time ${started}`);
  const build = [...metrics.keys()].find((k) => k.startsWith("echoserver_build_info{"));
  assert.ok(build !== undefined);
  assert.match(build, new RegExp(`dispatch="${dispatch}"`));
  assert.match(build, /version="\d+\.\d+\.\d+",deno="2\.9\.6"/);
  assert.equal(metrics.get(build), 1);
});

test("metrics: a scrape while the process is out of descriptors does not end it", async (dispatch) => {
  // The old endpoint (Deno.serve) died with "Too many open files" on its accept, and took the
  // whole server with it.
  await using server = await startServer(base(dispatch), { maxOpenFiles: 128 });
  {
    using _flood = await connectMany(server.port, 200);
    await delay(300);
    for (let i = 0; i < 5; i++) {
      await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`, {
        signal: AbortSignal.timeout(1000),
      })
        .then((r) => r.body?.cancel())
        .catch(() => {}); // refused or reset while out of descriptors: expected
    }
  }
  // The flood has gone: the endpoint answers again, and the server never exited.
  let served = false;
  for (let i = 0; i < 50 && !served; i++) {
    served = await scrape(server.metricsPort!).then(() => true, () => false);
    if (!served) await delay(100);
  }
  assert.ok(served, `metrics never came back:\n${server.log()}`);
  using conn = await connect(server.port);
  await writeAll(conn, utf8("alive\n"));
  assert.equal(text(await readBytes(conn, 6)), "alive\n");
});

test("SIGHUP (a closed terminal) does not end the server", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  server.process.kill("SIGHUP");
  await server.waitForLog(/SIGHUP received: nothing to reload \(no TLS\), still serving/);
  using conn = await connect(server.port);
  await writeAll(conn, utf8("still here\n"));
  assert.equal(text(await readBytes(conn, 11)), "still here\n");
});

test("SIGUSR1, SIGQUIT and SIGALRM are logged and survived: connections go on", async (dispatch) => {
  await using server = await startServer(base(dispatch));
  using conn = await connect(server.port);
  await writeAll(conn, utf8("before\n"));
  assert.equal(text(await readBytes(conn, 7)), "before\n");
  for (const signal of ["SIGUSR1", "SIGQUIT", "SIGALRM"] as const) {
    server.process.kill(signal);
    await server.waitForLog(new RegExp(`${signal} received: ignored, still serving`));
  }
  await writeAll(conn, utf8("after\n"));
  assert.equal(text(await readBytes(conn, 6)), "after\n");
  using fresh = await connect(server.port);
  await writeAll(fresh, utf8("new\n"));
  assert.equal(text(await readBytes(fresh, 4)), "new\n");
});

test("a SIGHUP as soon as the port accepts is survived: the signals are handled before it is bound", async (dispatch) => {
  // A free port, then the server started on it without waiting for its log line.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const { program, args } = serverCommand([...base(dispatch), "--port", `${port}`]);
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const log = new Response(child.stderr).text();
  try {
    let conn: Deno.TcpConn | undefined;
    for (const deadline = Date.now() + 60_000; conn === undefined;) {
      assert.ok(Date.now() < deadline, "the port never accepted");
      try {
        conn = await connect(port);
      } catch {
        await delay(5);
      }
    }
    using first = conn;
    child.kill("SIGHUP");
    await writeAll(first, utf8("first\n"));
    assert.equal(text(await readBytes(first, 6)), "first\n");
  } finally {
    child.kill("SIGTERM");
  }
  const status = await child.status;
  const text_ = await log;
  assert.equal(status.code, 0, text_);
  // Said as "during start-up" when the workers already listen but start() has not returned.
  assert.match(text_, /SIGHUP received[^\n]*still (serving|starting)/);
});

test("a flood of bad PROXY headers is counted in full but logged at most once a second", async (dispatch) => {
  await using server = await startServer([...base(dispatch), "--proxy-protocol"]);
  for (let i = 0; i < 60; i++) {
    using conn = await connect(server.port);
    await writeAll(conn, utf8("GET / HTTP/1.0\r\n\r\n"));
    await readBytes(conn, Infinity);
  }
  await waitForMetric(server.metricsPort!, "echoserver_proxy_header_rejected_total", 60);
  const lines = server.log().split("\n").filter((l) =>
    /rejected: no PROXY protocol header/.test(l)
  );
  // 60 rejections in well under the seconds it would take to log them all: each thread logged
  // at most a few lines (one a second), not 60.
  assert.ok(lines.length >= 1 && lines.length <= 10, `${lines.length} warning lines`);
});
