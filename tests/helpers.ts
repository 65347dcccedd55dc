/**
 * Test helpers: start the real server as a child process on a free port, and talk to it.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { LAUNCH_FLAGS } from "../scripts/launch_flags.ts";

// fileURLToPath, not URL.pathname: on Windows the latter gives "/D:/...".
const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const decoder = new TextDecoder();

/** A server process started by {@linkcode startServer}. Stop it with `await using`. */
export interface ServerProcess extends AsyncDisposable {
  /** The port it listens on. */
  port: number;
  /** The metrics endpoint's port, if `--metrics-port` was given. */
  metricsPort: number | undefined;
  /** The child process. */
  process: Deno.ChildProcess;
  /** Everything it wrote to stderr so far (its log). */
  log(): string;
  /** Waits until the log matches `pattern`, or fails after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Options for {@linkcode startServer}. */
export interface StartOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Limit on open files for the server process (`ulimit -n`), to provoke EMFILE. */
  maxOpenFiles?: number;
  /** Run from this directory. */
  cwd?: string;
}

/**
 * Starts `main.ts` with `args` (plus `--port 0` unless a port is given) and waits until it
 * logs that it is listening.
 *
 * @param args Server flags.
 * @param options Environment.
 * @returns The running server.
 */
export async function startServer(
  args: string[] = [],
  options: StartOptions = {},
): Promise<ServerProcess> {
  const hasPort = args.some((a) => a === "-p" || a === "--port" || a.startsWith("--port="));
  const serverArgs = [
    "run",
    "--allow-net",
    "--allow-read",
    ...LAUNCH_FLAGS,
    MAIN,
    ...(hasPort ? [] : ["--port", "0"]),
    ...args,
  ];
  // ulimit is a shell builtin: wrap the server in sh when a limit is asked for.
  const [program, programArgs] = options.maxOpenFiles === undefined
    ? [Deno.execPath(), serverArgs]
    : ["sh", [
      "-c",
      `ulimit -n ${options.maxOpenFiles} && exec "$0" "$@"`,
      Deno.execPath(),
      ...serverArgs,
    ]];
  const command = new Deno.Command(program, {
    args: programArgs,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const process = command.spawn();
  let text = "";
  const waiters = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      for (const wake of waiters) wake();
    }
  };
  const pumps = Promise.all([pump(process.stdout), pump(process.stderr)]);
  let status: Deno.CommandStatus | undefined;
  const exited = process.status.then((s) => {
    status = s;
    for (const wake of waiters) wake();
    return s;
  });

  const waitForLog = (pattern: RegExp, timeoutMs = 15_000): Promise<string> => {
    return new Promise((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(text);
        if (match) return finish(() => resolve(match[0]));
        if (status !== undefined) {
          return finish(() =>
            reject(new Error(`Server exited (${status!.code}) before ${pattern}:\n${text}`))
          );
        }
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`Timed out waiting for ${pattern}:\n${text}`))),
        timeoutMs,
      );
      const finish = (then: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        then();
      };
      waiters.add(check);
      check();
    });
  };

  const stop = async (signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> => {
    if (status === undefined) {
      try {
        process.kill(signal);
      } catch {
        // Already exited.
      }
    }
    const result = await exited;
    await pumps;
    return result;
  };

  let port = 0;
  let metricsPort: number | undefined;
  try {
    const line = await waitForLog(/listening on \S+:(\d+)/);
    port = Number(/:(\d+)$/.exec(line.split(" ").pop()!)![1]);
    if (args.includes("--metrics-port")) {
      const metricsLine = await waitForLog(/Metrics on http:\/\/\S+:(\d+)\/metrics/);
      metricsPort = Number(/:(\d+)\/metrics/.exec(metricsLine)![1]);
    }
  } catch (error) {
    await stop("SIGKILL");
    throw error;
  }
  return {
    port,
    metricsPort,
    process,
    log: () => text,
    waitForLog,
    stop,
    async [Symbol.asyncDispose]() {
      if (status === undefined) {
        const timer = setTimeout(() => {
          try {
            process.kill("SIGKILL");
          } catch { /* gone */ }
        }, 15_000);
        await stop("SIGTERM");
        clearTimeout(timer);
      } else {
        await pumps;
      }
    },
  };
}

/**
 * Runs `main.ts` with `args` to completion (for flags that make it exit).
 *
 * @param args Flags.
 * @returns Exit code and output.
 */
export async function runServer(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", ...LAUNCH_FLAGS, MAIN, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Reads from `conn` until `length` bytes have arrived or the peer closes.
 *
 * @param conn A connection.
 * @param length Bytes wanted; `Infinity` reads to EOF.
 * @returns The bytes read.
 */
export async function readBytes(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  while (total < length) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) break;
      throw error;
    }
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const result = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    result.set(chunk, offset);
    offset += chunk.length;
  }
  return result;
}

/**
 * Writes all of `bytes` to `conn`.
 *
 * @param conn A connection.
 * @param bytes What to send.
 */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** Encodes text as UTF-8. */
export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Decodes UTF-8 text. */
export function text(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * Bytes `0..n-1` of a fixed pattern that is not periodic in small powers of two, so that a
 * dropped, duplicated or reordered chunk shows as a mismatch.
 *
 * @param n Length.
 * @param seed Varies the pattern between connections.
 * @returns The bytes.
 */
export function pattern(n: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 7 + seed + (i >> 8)) % 251;
  return bytes;
}

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

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The dispatch modes every end-to-end test runs in (`kernel` only where it exists: Linux). */
export const DISPATCHES: readonly ("main" | "kernel")[] = Deno.build.os === "linux"
  ? ["main", "kernel"]
  : ["main"];

/**
 * Registers one test per dispatch mode, named `[mode] name`.
 *
 * @param name Test name.
 * @param fn The test, given the mode (pass `--dispatch <mode>` to the server).
 * @param options `ignore` for tests that cannot run on this platform.
 */
export function bothModes(
  name: string,
  fn: (dispatch: "main" | "kernel") => Promise<void>,
  options: { ignore?: boolean } = {},
): void {
  for (const dispatch of DISPATCHES) {
    Deno.test({
      name: `[${dispatch}] ${name}`,
      ignore: options.ignore ?? false,
      fn: () => fn(dispatch),
    });
  }
}

/**
 * Opens a connection that the server serves on worker `worker`, whichever dispatch mode runs:
 * the server must log at debug level, which names each connection's worker. Connections that
 * land elsewhere are closed, and their close awaited, before the next try.
 *
 * @param server A server started with `--log-level debug`.
 * @param worker Worker number, from 1.
 * @returns The connection.
 */
export async function connectToWorker(
  server: ServerProcess,
  worker: number,
): Promise<Deno.TcpConn> {
  for (let attempt = 0; attempt < 64; attempt++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const local = (conn.localAddr as Deno.NetAddr).port;
    const line = await server.waitForLog(
      new RegExp(`Connection \\d+ from 127\\.0\\.0\\.1:${local} to worker-\\d+`),
    );
    const [, id, on] = /Connection (\d+) .* to worker-(\d+)/.exec(line)!;
    if (Number(on) === worker) return conn;
    conn.close();
    await server.waitForLog(new RegExp(`Connection ${id} closed`));
  }
  throw new Error(`no connection landed on worker-${worker} in 64 tries`);
}

/**
 * Scrapes `/metrics` until `sample` reaches `value`, or fails after `timeoutMs`: counters that
 * another thread updates are awaited, never read once and hoped for.
 *
 * @param port The metrics port.
 * @param sample A sample name with labels, as printed.
 * @param value The value to wait for.
 * @param timeoutMs Deadline.
 * @returns The samples at that moment.
 */
export async function waitForMetric(
  port: number,
  sample: string,
  value: number,
  timeoutMs = 10_000,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const samples = await scrape(port);
    if (samples.get(sample) === value) return samples;
    if (Date.now() > deadline) {
      throw new Error(`${sample} is ${samples.get(sample)}, not ${value}, after ${timeoutMs} ms`);
    }
    await delay(50);
  }
}
