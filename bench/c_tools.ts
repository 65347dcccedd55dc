/**
 * The benchmark's C programs: the closed-loop echo client (`c/echo_load.c`, the default load
 * generator for echo scenarios) and the C epoll echo server (`c/epoll_echo.c`, a peer). Both are
 * built once per run with the machine's C compiler into `bench/results/.bin/`; without one the
 * benchmark falls back to its TypeScript client and leaves the peer out.
 *
 * Runs on the benchmark's main thread.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const ROOT = new URL("../", import.meta.url);
const BIN = new URL("bench/results/.bin/", ROOT);
const decoder = new TextDecoder();

/**
 * Compiles one of the C programs, once per run.
 *
 * @param name `echo_load` or `epoll_echo`.
 * @returns The executable's path, or undefined where there is no working C compiler.
 */
export async function buildC(name: "echo_load" | "epoll_echo"): Promise<string | undefined> {
  Deno.mkdirSync(BIN, { recursive: true });
  const output = fileURLToPath(new URL(name, BIN));
  const source = fileURLToPath(new URL(`bench/c/${name}.c`, ROOT));
  for (const cc of ["cc", "gcc", "clang"]) {
    const result = await new Deno.Command(cc, {
      args: ["-O2", "-o", output, source],
      stdout: "null",
      stderr: "piped",
    }).output().catch(() => undefined);
    if (result?.success) return output;
  }
  return undefined;
}

/** What one run of the C client reports. */
export interface CClientReport {
  roundTrips: number;
  errors: number;
  mismatches: number;
  connectFailures: number;
  p50: number;
  p99: number;
  p999: number;
  firstError: string | null;
  /** CPU seconds the client itself spent in the measured window. */
  clientCpuSeconds: number;
}

/** One run of the C client. */
export interface CClientJob {
  hostname: string;
  port: number;
  connections: number;
  size: number;
  warmupS: number;
  durationS: number;
  /** Connection 0 is a bystander (64 B every 10 ms) and the latencies are its own. */
  probe: boolean;
}

/**
 * Runs the C client against a server, calling `window.start` and `window.stop` at the edges of
 * its measured window (after its connects and warm-up), so that the server's CPU is read over
 * exactly the round trips counted.
 *
 * @param binary The client's path ({@linkcode buildC}).
 * @param job What to run.
 * @param window Called at the start and at the end of the measured window.
 * @returns Its report.
 */
export async function runCClient(
  binary: string,
  job: CClientJob,
  window: { start(): Promise<void>; stop(): Promise<void> },
): Promise<CClientReport> {
  const child = new Deno.Command(binary, {
    args: [
      job.hostname,
      String(job.port),
      String(job.connections),
      String(job.size),
      String(job.warmupS),
      String(job.durationS),
      job.probe ? "1" : "0",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  let pending = "";
  for await (const chunk of child.stderr) {
    pending += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line === "measuring") await window.start();
      else if (line === "stopped") await window.stop();
    }
  }
  const status = await child.status;
  const text = await stdout;
  if (!status.success) throw new Error(`C client failed (exit ${status.code}): ${pending}`);
  return JSON.parse(text) as CClientReport;
}
