/**
 * Readings of a running server from outside: its `/metrics`, and its memory and descriptors
 * from Linux's /proc.
 *
 * Runs in whatever process watches servers (a test, the benchmark, the soak).
 *
 * @module
 */

const decoder = new TextDecoder();

/**
 * Reads the server's `/metrics` into a map from sample name (with labels, as printed) to value.
 *
 * @param port The metrics port.
 * @returns Samples such as `echoserver_connections_active{worker="1"}` → 3.
 */
export async function scrape(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, {
    signal: AbortSignal.timeout(5000),
  });
  const body = await response.text();
  if (!response.ok) throw new Error(`GET /metrics: ${response.status} ${body}`);
  const samples = new Map<string, number>();
  for (const line of body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/**
 * Sums every sample of a metric, across its labels.
 *
 * @param samples From {@linkcode scrape}.
 * @param name Metric name without labels.
 * @returns The sum.
 */
export function total(samples: Map<string, number>, name: string): number {
  let sum = 0;
  for (const [key, value] of samples) {
    if (key === name || key.startsWith(name + "{")) sum += value;
  }
  return sum;
}

/**
 * Reads a file of /proc through `cat` (Deno grants /proc only to --allow-all).
 *
 * @param path Such as `/proc/123/status`.
 * @returns Its text.
 */
export async function readProc(path: string): Promise<string> {
  const output = await new Deno.Command("cat", { args: [path] }).output();
  if (!output.success) throw new Error(`cannot read ${path}`);
  return decoder.decode(output.stdout);
}

/**
 * Resident set size of a process, in KiB (Linux).
 *
 * @param pid Process id.
 * @returns VmRSS.
 */
export async function rssKiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readProc(`/proc/${pid}/status`))![1]);
}

/**
 * Number of open file descriptors of a process (Linux).
 *
 * @param pid Process id.
 * @returns The count of entries in /proc/<pid>/fd.
 */
export async function openFiles(pid: number): Promise<number> {
  const output = await new Deno.Command("sh", { args: ["-c", `ls /proc/${pid}/fd | wc -l`] })
    .output();
  return Number(decoder.decode(output.stdout).trim());
}
