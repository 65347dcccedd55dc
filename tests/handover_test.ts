/**
 * Replacing the process (a new release) without a gap, in both dispatch modes: a second server
 * starts on the same port, the first is sent SIGTERM and drains, and a loop of short
 * connections plus long-lived ones mid-stream go on throughout (`fixtures/handover_scenario.ts`).
 * Each run happens in a network namespace of its own, made with `unshare -n` (root only), with
 * `net.ipv4.tcp_migrate_req` set there: on (the kernel moves what waits in a closing
 * listener's queue) and off (the server's own steering must make up for it). Skipped, and named
 * so, where namespaces cannot be made.
 */

import assert from "node:assert/strict";
import { DISPATCHES } from "./helpers.ts";

const SCENARIO = new URL("./fixtures/handover_scenario.ts", import.meta.url).pathname;

/** Why the namespace runs cannot happen here, or undefined if they can. */
function cannotRun(): string | undefined {
  if (Deno.build.os !== "linux") return "Linux only";
  // Tried rather than guessed: root, and tools that CI installs.
  try {
    const probe = new Deno.Command("unshare", {
      args: ["-n", "sh", "-c", "ip link set lo up && sysctl -n net.ipv4.tcp_migrate_req"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return probe.success
      ? undefined
      : "cannot make a network namespace with the sysctl (needs root, ip, Linux 5.14+)";
  } catch {
    return "unshare is not installed";
  }
}

const SKIP = cannotRun();

/** What the scenario reports. */
interface Outcome {
  lost: number;
  report: { ok: number; failures: string[] };
  streams: number[];
  aExit: number;
  afterA: number;
  handOver: string[];
}

/** Runs the scenario in a new network namespace with the sysctl set, and reads its outcome. */
async function handOver(dispatch: string, migrate: 0 | 1): Promise<Outcome> {
  const script = "ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req=$1 && " +
    'exec "$0" run -A "$2" "$3"';
  const output = await new Deno.Command("unshare", {
    args: ["-n", "sh", "-c", script, Deno.execPath(), String(migrate), SCENARIO, dispatch],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    // Whatever happens, the run and its servers end.
    signal: AbortSignal.timeout(120_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, `the scenario failed:\n${stdout}\n${stderr}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as Outcome;
}

for (const dispatch of DISPATCHES) {
  for (const migrate of [1, 0] as const) {
    Deno.test({
      name: `[${dispatch}] hand-over to a new process on the same port loses nothing, ` +
        `tcp_migrate_req=${migrate}${SKIP === undefined ? "" : ` (SKIPPED: ${SKIP})`}`,
      ignore: SKIP !== undefined,
      fn: async () => {
        const outcome = await handOver(dispatch, migrate);
        assert.equal(outcome.lost, 0, JSON.stringify(outcome));
        assert.equal(outcome.aExit, 0, "the old process did not drain cleanly");
        assert.ok(outcome.streams.every((n) => n > 2), "the long-lived ones did not go on");
        assert.ok(outcome.afterA > 0, "nothing was served after the old process left");
        assert.match(outcome.handOver.join("\n"), /new connections come to this one now/);
      },
    });
  }
}
