/**
 * Runs the README's test command (`deno task test`) with a time bound, optionally beside
 * CPU-bound processes that make the machine busy, as a loaded CI runner or laptop is.
 *
 * - `--busy <n>`: start n processes that spin on a core each for the whole run (default 0);
 *   `deno task test:busy` is this with 2, one per core of the 2-core machines we test on.
 * - `--time-limit <s>`: past it, the suite is interrupted with SIGINT, on which Deno lists the
 *   tests still running, and this exits 124 (default 900). A hang then costs minutes and says
 *   where it is, instead of eating CI's whole limit in silence.
 *
 * Exits with the suite's own code otherwise. The busy processes are killed however it ends.
 *
 * Runs in a process of its own, never in the server.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { printError, printOut } from "../lib/log.ts";

/** After SIGINT, how long the suite may take to report and stop before it is killed. */
const GRACE_MS = 30_000;

function fail(message: string): never {
  printError(`run_tests: ${message}`);
  printError("usage: deno run -A scripts/run_tests.ts [--busy <n>] [--time-limit <s>]");
  Deno.exit(2);
}

/**
 * Makes this process the reaper of its orphaned descendants (Linux `prctl`), so that servers
 * left by tests that a SIGINT cut short can still be found, and stopped, once the suite ends.
 *
 * @returns Whether it could.
 */
function becomeSubreaper(): boolean {
  const PR_SET_CHILD_SUBREAPER = 36;
  try {
    const libc = Deno.dlopen("libc.so.6", {
      prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
    });
    const ok = libc.symbols.prctl(PR_SET_CHILD_SUBREAPER, 1n, 0n, 0n, 0n) === 0;
    libc.close();
    return ok;
  } catch {
    return false;
  }
}

/** The processes descended from `root`, as `ps` lists them (none if it cannot). */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  try {
    const ps = new Deno.Command("ps", { args: ["-eo", "pid=,ppid="], stderr: "null" }).outputSync();
    for (const line of new TextDecoder().decode(ps.stdout).split("\n")) {
      const [pid, ppid] = line.trim().split(/\s+/).map(Number);
      if (pid !== undefined && ppid !== undefined) parents.set(pid, ppid);
    }
  } catch {
    return [];
  }
  const found: number[] = [];
  const wanted = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (wanted.has(ppid) && !wanted.has(pid)) {
        wanted.add(pid);
        found.push(pid);
        grew = true;
      }
    }
  }
  return found;
}

function count(flag: string, raw: string, min: number): number {
  const value = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    fail(`--${flag} must be an integer of at least ${min}, got "${raw}"`);
  }
  return value;
}

/**
 * Runs the suite as the command line says.
 *
 * @param args The command line.
 * @returns The exit code: the suite's, or 124 when it ran out of time.
 */
export async function runTests(args: string[]): Promise<number> {
  let values: { busy: string; "time-limit": string };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        busy: { type: "string", default: "0" },
        "time-limit": { type: "string", default: "900" },
      },
      strict: true,
    }));
  } catch (error) {
    fail((error as Error).message);
  }
  const busy = count("busy", values.busy, 0);
  const limitS = count("time-limit", values["time-limit"], 1);

  const reaper = becomeSubreaper();
  const spinners = Array.from({ length: busy }, () =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "for (;;) {}"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn());
  if (busy > 0) printOut(`run_tests: ${busy} CPU-bound process(es) run beside the suite`);
  let timedOut = false;
  let killer: ReturnType<typeof setTimeout> | undefined;
  try {
    const suite = new Deno.Command(Deno.execPath(), {
      args: ["task", "test"],
      stdin: "null",
    }).spawn();
    const limit = setTimeout(() => {
      timedOut = true;
      printError(
        `run_tests: the suite ran past --time-limit ${limitS} s: interrupting it (SIGINT); ` +
          "Deno lists the tests still running",
      );
      suite.kill("SIGINT");
      killer = setTimeout(() => suite.kill("SIGKILL"), GRACE_MS);
    }, limitS * 1000);
    const status = await suite.status;
    clearTimeout(limit);
    if (timedOut) {
      // Servers and clients the interrupted tests started outlive them unless stopped here:
      // orphaned, they are this process's children now (without prctl they cannot be found).
      const spinning = new Set(spinners.map((spinner) => spinner.pid));
      const strays = reaper ? descendants(Deno.pid) : [];
      for (const pid of strays.filter((pid) => !spinning.has(pid))) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* ended with the suite */ }
      }
      printError(`run_tests: stopped after ${limitS} s: a test hangs or the suite is too slow`);
      return 124;
    }
    return status.code;
  } finally {
    clearTimeout(killer);
    for (const spinner of spinners) {
      try {
        spinner.kill("SIGKILL");
      } catch { /* already gone */ }
      await spinner.status;
    }
  }
}

if (import.meta.main) Deno.exit(await runTests(Deno.args));
