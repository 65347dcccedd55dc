/**
 * Rolling reloads (SIGUSR2) end to end, in both dispatch modes: a handler module changed on disk
 * and reloaded five times under a continuous loop of short connections and with long-lived ones
 * mid-stream (none refused, reset or cut; new connections get the new code, the long-lived ones
 * finish on the old), a module that fails to load or set up (the reload is refused, the old code
 * serves on), state handed from each old worker to its successor, `memcache` keeping its keys,
 * and `chat` keeping one room across the two generations.
 */

import assert from "node:assert/strict";
import { serverCommand, startProcess } from "../launcher/server_process.ts";
import { Churn, failures, Stream } from "./churn_client.ts";
import {
  bothModes,
  delay,
  runServer,
  scrape,
  type ServerProcess,
  startServer,
  text,
  utf8,
  waitForTotal,
  writeAll,
} from "./helpers.ts";

const RELOAD_SCRIPT = new URL("../scripts/reload.ts", import.meta.url).pathname;

/** A handler module that greets each connection with its version, then echoes. */
function versioned(version: number, extra = ""): string {
  return `// Written by reload_test.ts.
const greeting = new TextEncoder().encode("v${version}\\n");
${extra}
export default {
  open(socket) { socket.write(greeting); },
  data(socket, bytes) { socket.write(bytes); },
};
`;
}

/** Starts a server on `module`, with room for long-lived connections to finish. */
function serve(dispatch: string, module: string, ...extra: string[]): Promise<ServerProcess> {
  return startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--handler",
    module,
    "--metrics-port",
    "0",
    "--shutdown-timeout",
    "30",
    ...extra,
  ]);
}

/** Sends SIGUSR2 and waits for the `n`-th reload's outcome line. */
async function reload(server: ServerProcess, n: number): Promise<string> {
  server.process.kill("SIGUSR2");
  return await server.waitForLog(
    new RegExp(`((Reloaded|Reload failed)[^\\n]*\\n[\\s\\S]*){${n}}`),
  );
}

/** Waits until `condition` holds, or fails after `timeoutMs`. */
async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** A temporary folder for handler modules, removed afterwards. */
async function withModules(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "echoserver-reload-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The server's `reloads_total` by result. */
async function reloads(server: ServerProcess): Promise<{ ok: number; failed: number }> {
  const samples = await scrape(server.metricsPort!);
  return {
    ok: samples.get('echoserver_reloads_total{result="ok"}') ?? -1,
    failed: samples.get('echoserver_reloads_total{result="failed"}') ?? -1,
  };
}

bothModes(
  "reload: five rolling reloads under a client loop lose no connection; new code for new ones",
  (dispatch) =>
    withModules(async (dir) => {
      const module = `${dir}/versioned.js`;
      await Deno.writeTextFile(module, versioned(0));
      await using server = await serve(dispatch, module);
      const churn = new Churn(server.port, 3, { greeting: true });
      const streamReports = [];
      const opened: Stream[] = [];
      try {
        for (let k = 1; k <= 5; k++) {
          // Long-lived connections on the code before this reload, mid-stream across it.
          const streams = await Promise.all(
            [0, 1, 2, 3].map((i) => Stream.open(server.port, i, { greeting: true })),
          );
          opened.push(...streams);
          assert.deepEqual(streams.map((s) => s.version), Array(4).fill(`v${k - 1}`));
          await until(() => streams.every((s) => s.echoes >= 2), "the streams to echo");
          await Deno.writeTextFile(module, versioned(k));
          const line = await reload(server, k);
          assert.match(line, /Reloaded: 2 fresh workers take new connections/);
          const probe = await Stream.open(server.port, 9, { greeting: true });
          assert.equal(probe.version, `v${k}`, "a new connection did not get the new code");
          streamReports.push(await probe.finish());
          // The old code still serves the long-lived ones, which then end as they wish.
          const echoed = streams.map((s) => s.echoes);
          await until(() => streams.every((s, i) => s.echoes > echoed[i]!), "old-code echoes");
          streamReports.push(...await Promise.all(streams.map((s) => s.finish())));
          const ended = await server.waitForLog(
            new RegExp(`(Old workers ended[^\\n]*\\n[\\s\\S]*){${k}}`),
          );
          assert.match(
            ended,
            /Old workers ended: \d+ connection\(s\) finished, \d+ idle closed, 0 cut/,
          );
          await until(() => churn.completed > 20 * k, "the client loop to go on");
        }
      } finally {
        // However the test went, no client is left running.
        await Promise.all(opened.map((s) => s.finish()));
        const report = await churn.stop();
        assert.equal(
          failures(report, ...streamReports),
          0,
          `lost: ${JSON.stringify({ ...report, versions: undefined })} ` +
            `${JSON.stringify(streamReports.filter((r) => failures(r) > 0))}\n${server.log()}`,
        );
        const seen = new Set(report.versions);
        assert.deepEqual([...seen].sort(), ["v0", "v1", "v2", "v3", "v4", "v5"]);
        assert.equal(report.versions.at(-1), "v5");
      }
      assert.deepEqual(await reloads(server), { ok: 5, failed: 0 });
    }),
);

bothModes(
  "reload: a module that fails to load or to set up, or a refused handover, changes nothing",
  (dispatch) =>
    withModules(async (dir) => {
      const module = `${dir}/versioned.js`;
      // The running code refuses its first handover (each worker's), then hands over nothing.
      const refusing = "let asked = 0;\n" +
        "export function handover() { if (asked++ === 0) throw new Error('state is corrupt'); }";
      await Deno.writeTextFile(module, versioned(1, refusing));
      await using server = await serve(dispatch, module);
      await using before = await Stream.open(server.port, 1, { greeting: true });
      const attempts = [
        versioned(2), // refused by the running code's handover
        "export default {", // a syntax error
        versioned(2, "export function setup() { throw new Error('no database'); }"),
      ];
      for (const [i, source] of attempts.entries()) {
        await Deno.writeTextFile(module, source);
        const line = await reload(server, i + 1);
        assert.match(
          line.split("\n").filter((l) => l.includes("Reload failed")).at(-1)!,
          /Reload failed; the workers that were serving still are: .+/,
        );
        const after = await Stream.open(server.port, 2, { greeting: true });
        assert.equal(after.version, "v1", `reload ${i + 1} failed, yet changed the code`);
        assert.equal(failures(await after.finish()), 0);
      }
      const log = server.log();
      assert.match(log, /state is corrupt/);
      assert.match(log, /SyntaxError/);
      assert.match(log, /no database/);
      assert.equal(failures(await before.finish()), 0, "a failed reload cut a connection");
      assert.deepEqual(await reloads(server), { ok: 0, failed: 3 });
      // One line each: no stack trace at the default level.
      assert.doesNotMatch(log, /^\s+at /m);
    }),
);

bothModes(
  "reload: each worker's handover value is its successor's context.inherited (Web Streams)",
  (dispatch) =>
    withModules(async (dir) => {
      const module = `${dir}/counting.js`;
      const counting = (version: number) =>
        `let served = 0, inherited = "none";
export function setup(context) {
  if (context.inherited !== undefined) {
    inherited = String(context.inherited.served);
    served = context.inherited.served;
  }
}
export function handover() { return { served }; }
// The Web Streams shape, where the versioned module is byte-level: a reload serves both.
export default async function ({ readable, writable }) {
  served++;
  const writer = writable.getWriter();
  await writer.write(new TextEncoder().encode("v${version} " + inherited + "\\n"));
  writer.releaseLock();
  await readable.pipeTo(writable);
}
`;
      await Deno.writeTextFile(module, counting(1));
      await using server = await serve(dispatch, module, "--workers", "1");
      for (let i = 0; i < 3; i++) {
        const stream = await Stream.open(server.port, i, { greeting: true });
        assert.equal(stream.version, "v1 none");
        await stream.finish();
      }
      await Deno.writeTextFile(module, counting(2));
      await reload(server, 1);
      const after = await Stream.open(server.port, 0, { greeting: true });
      assert.equal(after.version, "v2 3", "the successor did not inherit the count");
      await after.finish();
    }),
);

/** A memcache client that sends a command and reads its reply up to `end`. */
async function ask(conn: Deno.TcpConn, command: string, end: RegExp): Promise<string> {
  await writeAll(conn, utf8(command));
  let reply = "";
  const buffer = new Uint8Array(64 * 1024);
  const deadline = Date.now() + 10_000;
  while (!end.test(reply)) {
    if (Date.now() > deadline) throw new Error(`no reply to ${command.slice(0, 40)}: ${reply}`);
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`connection closed; got ${reply}`);
    reply += text(buffer.subarray(0, n));
  }
  return reply;
}

bothModes("reload: memcache keeps every key", async (dispatch) => {
  await using server = await serve(dispatch, "memcache");
  const keys = Array.from({ length: 2000 }, (_, i) => `key-${i}`);
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const sets = keys.map((key) => `set ${key} 0 0 ${key.length}\r\n${key}\r\n`).join("");
    const stored = await ask(conn, sets, /(STORED\r\n){2000}$/);
    assert.equal(stored, "STORED\r\n".repeat(2000));
  }
  await reload(server, 1);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const reply = await ask(conn, `get ${keys.join(" ")}\r\n`, /END\r\n$/);
  const expected = keys.map((key) => `VALUE ${key} 0 ${key.length}\r\n${key}\r\n`).join("") +
    "END\r\n";
  assert.equal(reply, expected, "keys were lost across the reload");
});

bothModes("reload: chat is one room across the old workers and the new", async (dispatch) => {
  await using server = await serve(dispatch, "chat");
  const open = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const lines: string[] = [];
    const reading = (async () => {
      const buffer = new Uint8Array(4096);
      let partial = "";
      try {
        for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
          const parts = (partial + text(buffer.subarray(0, n))).split("\n");
          partial = parts.pop()!;
          lines.push(...parts);
        }
      } catch {
        // Closed by the test.
      }
    })();
    return { conn, lines, reading };
  };
  const before = await open(); // served by a worker the reload retires
  await waitForTotal(server.metricsPort!, "echoserver_connections_active", 1);
  // A client silent for a second counts as finished in a drain and is closed (see Stopping):
  // this one talks now and then, like a chat client on a busy machine must.
  const ticks = setInterval(() => writeAll(before.conn, utf8("tick\n")).catch(() => {}), 100);
  try {
    await reload(server, 1);
    const after = await open(); // served by a fresh one
    await waitForTotal(server.metricsPort!, "echoserver_connections_active", 2);
    await until(() => after.lines.some((l) => l.endsWith("tick")), "old to new");
    await writeAll(after.conn, utf8("from the new generation\n"));
    await until(
      () => before.lines.some((l) => l.endsWith("from the new generation")),
      "new to old",
    );
    clearInterval(ticks);
    // The old generation ends as soon as its last client leaves, though the other old worker,
    // with no clients, finished long before (it must not hold a broadcast up).
    await writeAll(before.conn, utf8("one more from the old\nquit\n"));
    await until(() => after.lines.some((l) => l.endsWith("one more from the old")), "last line");
    await before.reading;
    before.conn.close(); // as a client does once the server has ended the connection
    assert.match(
      await server.waitForLog(/Old workers ended[^\n]*/),
      /Old workers ended: 1 connection\(s\) finished, 0 idle closed, 0 cut/,
    );
    after.conn.close();
    await after.reading;
  } finally {
    clearInterval(ticks);
    try {
      before.conn.close();
    } catch {
      // Closed already.
    }
  }
});

Deno.test("--pid-file: deno task reload signals the server it names; the file goes at exit", async () => {
  await withModules(async (dir) => {
    const pidFile = `${dir}/echoserver.pid`;
    // Without permission to write it: one line, exit 1, before listening.
    const refused = await runServer(["--pid-file", pidFile]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Cannot write the pid file .*: no permission to write it/);
    assert.doesNotMatch(refused.stderr, /^\s+at /m);
    const command = serverCommand(["--pid-file", pidFile, "--workers", "1"]);
    // The server's own permissions, and the one the pid file needs ("run" stays first).
    const [run, ...rest] = command.args;
    await using server = await startProcess(command.program, [
      run!,
      `--allow-write=${pidFile}`,
      ...rest,
    ]);
    assert.equal(Deno.readTextFileSync(pidFile).trim(), String(server.process.pid));
    const reload = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-run", RELOAD_SCRIPT, "--pid-file", pidFile],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(reload.code, 0, new TextDecoder().decode(reload.stderr));
    await server.waitForLog(/Reloaded: 1 fresh workers take new connections/);
    assert.equal((await server.stop()).code, 0);
    assert.throws(() => Deno.statSync(pidFile), Deno.errors.NotFound);
    const gone = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-run", RELOAD_SCRIPT, "--pid-file", pidFile],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(gone.code, 1);
    assert.match(new TextDecoder().decode(gone.stderr), /reload: cannot read .*: no such file/);
  });
});

bothModes("reload: an old worker that dies during a reload fails it, and leaves no stray worker", (
  dispatch,
) =>
  withModules(async (dir) => {
    const module = `${dir}/versioned.js`;
    // The running code can be told to crash its worker (an error thrown outside any call).
    const crashable = versioned(1).replace(
      "data(socket, bytes) {",
      "data(socket, bytes) { if (bytes[0] === 0x21) setTimeout(() => { throw new Error('boom'); });",
    );
    await Deno.writeTextFile(module, crashable);
    await using server = await serve(dispatch, module);
    // The new code takes a while to set up: long enough for an old worker to die meanwhile.
    await Deno.writeTextFile(
      module,
      versioned(
        2,
        "export async function setup() { await new Promise((r) => setTimeout(r, 1500)); }",
      ),
    );
    server.process.kill("SIGUSR2");
    await server.waitForLog(/Reloading the workers/);
    const crash = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(crash, utf8("!"));
    crash.close();
    const line = await server.waitForLog(/Reload failed[^\n]*|Reloaded[^\n]*/);
    assert.match(line, /Reload failed; .*died during the reload/);
    await server.waitForLog(/replaced/);
    // Nothing of the new generation was left running: after a reload that succeeds, every new
    // connection gets the newest code.
    await Deno.writeTextFile(module, versioned(3));
    server.process.kill("SIGUSR2");
    await server.waitForLog(/Reloaded: 2 fresh workers/);
    for (let i = 0; i < 20; i++) {
      const probe = await Stream.open(server.port, i, { greeting: true });
      assert.equal(probe.version, "v3", `connection ${i} was served by stale code`);
      await probe.finish();
    }
  }));
