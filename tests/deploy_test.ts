/**
 * Deployment artefacts: the CI and release workflows, the systemd unit, and the HAProxy
 * configuration, the last run for real on loopback in front of two server instances.
 * Checks that need a tool this machine lacks are skipped, and their names say so.
 */

import assert from "node:assert/strict";
import { parse } from "yaml";
import denoJson from "../deno.json" with { type: "json" };
import { COMPILE_FLAGS, TARGETS } from "../scripts/compile.ts";
import { LAUNCH_FLAGS } from "../launcher/launch_flags.ts";
import { delay, readBytes, startServer, text, utf8, writeAll } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();
const read = (path: string) => Deno.readTextFileSync(new URL(path, ROOT));

function which(tool: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${tool}`).isFile) return `${dir}/${tool}`;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

type Step = { uses?: string; run?: string; with?: Record<string, string> };

Deno.test("ci.yml runs the README's test command with Deno 2.9.6 on Linux, macOS and Windows", () => {
  const ci = parse(read(".github/workflows/ci.yml"));
  assert.ok("push" in ci.on && "pull_request" in ci.on);
  const job = ci.jobs.test;
  assert.deepEqual(job.strategy.matrix.os, ["ubuntu-latest", "macos-latest", "windows-latest"]);
  assert.equal(job["runs-on"], "${{ matrix.os }}");
  const steps = job.steps as Step[];
  const setup = steps.find((s) => s.uses?.startsWith("denoland/setup-deno@"));
  assert.equal(setup?.with?.["deno-version"], "v2.9.6");
  assert.ok(steps.some((s) => s.run === "deno task test"));
  assert.match(read("README.md"), /deno task test/);
});

Deno.test("the binary, deno task serve and the benchmark launch with the same runtime flags", () => {
  // --unstable-net among them: without it '--dispatch kernel' cannot listen with reusePort.
  assert.ok(LAUNCH_FLAGS.includes("--unstable-net"));
  for (const flag of LAUNCH_FLAGS) {
    assert.ok(COMPILE_FLAGS.includes(flag), flag);
    assert.ok(denoJson.tasks.serve.split(" ").includes(flag), denoJson.tasks.serve);
  }
  // The tests, the benchmark, the soak and the smoke test all start servers through here.
  assert.ok(read("launcher/server_process.ts").includes("...LAUNCH_FLAGS,"));
  assert.ok(read("bench/bench.ts").includes("serverCommand("));
});

Deno.test("release.yml builds every target on a version tag, smoke-tests, and uploads", () => {
  const release = parse(read(".github/workflows/release.yml"));
  assert.deepEqual(release.on.push.tags, ["v*"]);
  const steps = release.jobs.release.steps as Step[];
  const runs = steps.map((s) => s.run ?? "").join("\n");
  assert.equal(
    steps.find((s) => s.uses?.startsWith("denoland/setup-deno@"))?.with?.["deno-version"],
    "v2.9.6",
  );
  assert.match(runs, /deno task compile:all/);
  assert.match(
    runs,
    /scripts\/smoke\.ts "dist\/echoserver-\$\{version\}-x86_64-unknown-linux-gnu"/,
  );
  assert.match(runs, /gh release upload .*dist\/echoserver-\* dist\/SHA256SUMS/);
  assert.match(denoJson.tasks["compile:all"], /scripts\/compile\.ts --all/);
  assert.equal(TARGETS.length, 5);
});

const systemdAnalyze = which("systemd-analyze");

/** Runs `systemd-analyze verify` on a unit, its binary pointed at one that exists here. */
async function verifyUnit(unit: string, name: string, binary: string): Promise<void> {
  // verify also checks that ExecStart exists; the binary is not installed here.
  const dir = await Deno.makeTempDir();
  const copy = `${dir}/${name}`;
  Deno.writeTextFileSync(copy, unit.replaceAll(binary, "/bin/true"));
  const output = await new Deno.Command(systemdAnalyze!, { args: ["verify", copy] }).output();
  const messages = decoder.decode(output.stderr);
  await Deno.remove(dir, { recursive: true });
  assert.ok(output.success, messages);
  assert.equal(messages.trim(), "", messages);
}

Deno.test({
  name: systemdAnalyze
    ? "systemd-analyze verify accepts deploy/echoserver.service"
    : "systemd-analyze verify accepts deploy/echoserver.service (SKIPPED: no systemd-analyze)",
  ignore: systemdAnalyze === undefined,
  async fn() {
    const unit = read("deploy/echoserver.service");
    for (
      const setting of [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        // systemctl reload: the rolling reload.
        "ExecReload=/bin/kill -USR2 $MAINPID",
      ]
    ) {
      assert.ok(unit.includes(`\n${setting}\n`), `missing ${setting}`);
    }
    const limit = Number(/\nLimitNOFILE=(\d+)\n/.exec(unit)?.[1]);
    const connections = Number(/--max-connections (\d+)/.exec(unit)?.[1]);
    assert.ok(limit > connections, `LimitNOFILE ${limit} does not fit ${connections} connections`);
    await verifyUnit(unit, "echoserver.service", "/usr/local/bin/echoserver");
  },
});

Deno.test({
  name: "echoserver@.service runs releases side by side for a hand-over, and upgrade.sh parses" +
    (systemdAnalyze ? "" : " (SKIPPED: no systemd-analyze)"),
  ignore: systemdAnalyze === undefined,
  async fn() {
    const unit = read("deploy/echoserver@.service");
    // Two instances share the port only if they run as one user: a dynamic user by name.
    for (const setting of ["DynamicUser=yes", "User=echoserver", "KillSignal=SIGTERM"]) {
      assert.ok(unit.includes(`\n${setting}\n`), `missing ${setting}`);
    }
    assert.ok(unit.includes("\nExecReload=/bin/kill -USR2 $MAINPID\n"));
    // A fixed metrics port would make the second instance fail to start.
    assert.doesNotMatch(unit, /^ExecStart=.*--metrics-port/m);
    await verifyUnit(unit, "echoserver@0.1.0.service", "/usr/local/lib/echoserver/%i/echoserver");
    const syntax = await new Deno.Command("bash", {
      args: ["-n", new URL("deploy/upgrade.sh", ROOT).pathname],
    }).output();
    assert.ok(syntax.success, decoder.decode(syntax.stderr));
    const script = read("deploy/upgrade.sh");
    // Start the new one, wait until it listens, and only then stop the old one.
    const start = script.indexOf('systemctl start "echoserver@$new"');
    const ready = script.indexOf("listening on");
    const stop = script.indexOf('systemctl stop "echoserver@$old"');
    assert.ok(start >= 0 && start < ready && ready < stop, "upgrade.sh does not wait");
  },
});

const haproxy = which("haproxy");

/** Whether a freshly spawned HAProxy answers on `port` (false if it exited: port taken). */
async function _answers(port: number, balancer: Deno.ChildProcess): Promise<boolean> {
  let exited = false;
  balancer.status.then(() => exited = true);
  for (let attempt = 0; attempt < 100 && !exited; attempt++) {
    try {
      using probe = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(probe, utf8("probe\n"));
      if (text(await readBytes(probe, 6)) === "probe\n") return true;
    } catch {
      // Not listening yet, or no instance up yet.
    }
    await delay(100);
  }
  if (!exited) balancer.kill("SIGKILL");
  await balancer.status;
  return false;
}

function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

Deno.test({
  name: haproxy
    ? "HAProxy from deploy/haproxy.cfg balances two instances and fails over"
    : "HAProxy from deploy/haproxy.cfg balances two instances and fails over (SKIPPED: no haproxy; apt-get install haproxy)",
  ignore: haproxy === undefined,
  async fn() {
    const args = ["--workers", "2", "--proxy-protocol", "--log-level", "debug"];
    await using one = await startServer(args);
    await using two = await startServer(args);
    const dir = await Deno.makeTempDir();
    // HAProxy must bind its front port itself, so the port is only known free a moment before:
    // if another program takes it meanwhile, HAProxy exits, and the test tries another port.
    let front = 0;
    let balancer: Deno.ChildProcess | undefined;
    for (let attempt = 0; balancer === undefined; attempt++) {
      front = freePort();
      const config = read("deploy/haproxy.cfg")
        .replace(/bind :5555/, `bind 127.0.0.1:${front}`)
        .replace("127.0.0.1:5601", `127.0.0.1:${one.port}`)
        .replace("127.0.0.1:5602", `127.0.0.1:${two.port}`)
        .replace(/maxconn \d+/, "maxconn 1000");
      Deno.writeTextFileSync(`${dir}/haproxy.cfg`, config);
      const check = await new Deno.Command(haproxy!, { args: ["-c", "-f", `${dir}/haproxy.cfg`] })
        .output();
      assert.ok(check.success, decoder.decode(check.stderr));
      const started = new Deno.Command(haproxy!, {
        args: ["-db", "-f", `${dir}/haproxy.cfg`],
        stdout: "null",
        stderr: "null",
      }).spawn();
      if (await _answers(front, started)) balancer = started;
      else if (attempt >= 4) throw new Error("HAProxy did not start on any of 5 ports");
    }
    try {
      // Both instances pass their health checks (rise 2, inter 1s) at their own pace: send
      // clients through until each instance has served one.
      const served = new Set<number>();
      for (let attempt = 0; served.size < 2; attempt++) {
        using conn = await Deno.connect({ hostname: "127.0.0.1", port: front });
        await writeAll(conn, utf8("warm\n"));
        assert.equal(text(await readBytes(conn, 5)), "warm\n");
        const mark = ` from 127.0.0.1:${conn.localAddr.port} to worker-`;
        // The instance logged the connection when it accepted it; its log may reach this
        // process a moment after the echo.
        for (let i = 0; i < 100 && !one.log().includes(mark) && !two.log().includes(mark); i++) {
          await delay(20);
        }
        if (one.log().includes(mark)) served.add(1);
        if (two.log().includes(mark)) served.add(2);
        if (attempt > 200) throw new Error(`only instance ${[...served]} was ever used`);
      }

      const ports: number[] = [];
      for (let i = 0; i < 10; i++) {
        using conn = await Deno.connect({ hostname: "127.0.0.1", port: front });
        ports.push(conn.localAddr.port);
        const line = utf8(`through the balancer ${i}\n`);
        await writeAll(conn, line);
        assert.equal(text(await readBytes(conn, line.length)), text(line));
      }
      // Each instance logged clients by their real address: the test's own sockets.
      const logged = (log: string) =>
        ports.filter((port) => log.includes(` from 127.0.0.1:${port} to worker-`)).length;
      const [onOne, onTwo] = [logged(one.log()), logged(two.log())];
      assert.ok(onOne > 0 && onTwo > 0, `not balanced: ${onOne} and ${onTwo} of 10`);
      assert.equal(onOne + onTwo, 10, "a client was logged under another address");

      // Stop one instance: new connections go to the other, without errors.
      assert.equal((await one.stop("SIGTERM")).code, 0);
      for (let i = 0; i < 10; i++) {
        using conn = await Deno.connect({ hostname: "127.0.0.1", port: front });
        const line = utf8(`after failover ${i}\n`);
        await writeAll(conn, line);
        assert.equal(text(await readBytes(conn, line.length)), text(line), `connection ${i}`);
      }
    } finally {
      balancer!.kill("SIGTERM");
      await balancer!.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
