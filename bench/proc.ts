/**
 * What the benchmark reads of a server process from Linux's /proc: CPU time by thread class,
 * and peak memory. Elsewhere every reading is null.
 *
 * Runs on the benchmark's main thread.
 *
 * @module
 */

const decoder = new TextDecoder();

/** CPU time in seconds spent so far by a server's threads, grouped by what they do. */
export interface ThreadCpu {
  /** The main thread (accepts and relays in `main` dispatch; the whole isolate in the baseline). */
  main: number;
  /** The connection workers: threads named `worker-N` (ours) or `mc-worker` (memcached). */
  workers: number;
  /** Everything else: V8's GC helpers, Deno's blocking-task threads. */
  other: number;
}

/**
 * Reads every thread's CPU time (`schedstat`, nanoseconds) in one shell call (Deno grants
 * /proc only to --allow-all; `sh` is allowed by --allow-run).
 *
 * @param pid The server's process id.
 * @returns CPU seconds by thread class, or null where /proc is not there.
 */
export async function threadCpu(pid: number): Promise<ThreadCpu | null> {
  const script = `cd /proc/${pid}/task 2>/dev/null || exit 1
for t in *; do printf '%s %s %s\\n' "$t" "$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null || echo 0)" "$(cat "$t/comm" 2>/dev/null)"; done`;
  const output = await new Deno.Command("sh", { args: ["-c", script], stderr: "null" })
    .output()
    .catch(() => null);
  if (output === null || !output.success) return null;
  const cpu: ThreadCpu = { main: 0, workers: 0, other: 0 };
  for (const line of decoder.decode(output.stdout).split("\n")) {
    const [tid, ns, ...name] = line.split(" ");
    if (tid === undefined || ns === undefined || ns === "") continue;
    const seconds = Number(ns) / 1e9;
    if (Number(tid) === pid) cpu.main += seconds;
    else if (/^(worker-|mc-worker)/.test(name.join(" "))) cpu.workers += seconds;
    else cpu.other += seconds;
  }
  return cpu;
}

/**
 * Peak resident set size of a process in MB (VmHWM).
 *
 * @param pid Process id.
 * @returns MB, or null where /proc is not there.
 */
export async function peakRssMb(pid: number): Promise<number | null> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stderr: "null" })
    .output()
    .catch(() => null);
  if (output === null || !output.success) return null;
  const kb = /VmHWM:\s+(\d+) kB/.exec(decoder.decode(output.stdout))?.[1];
  return kb === undefined ? null : Number(kb) / 1024;
}
