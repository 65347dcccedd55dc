/**
 * Test helpers: talk to the real server, run each test in both dispatch modes. Starting and
 * probing the server live in `launcher/`, shared with the benchmark.
 *
 * @module
 */

import type { Connection, HandlerContext, HandlerLog } from "../lib/handlers/handler.ts";
import { loneWorker } from "../lib/worker/memory_socket.ts";
import { openFiles, readProc, rssKiB, scrape, total } from "../launcher/probes.ts";
import {
  serverCommand,
  type ServerProcess,
  type StartOptions,
  startProcess,
  startServer,
} from "../launcher/server_process.ts";

export { openFiles, readProc, rssKiB, scrape, startProcess, startServer, total };
export type { ServerProcess, StartOptions };

const decoder = new TextDecoder();

/** How long {@linkcode runServer} lets the server run before it kills it and fails. */
const RUN_DEADLINE_MS = 60_000;

/**
 * Runs `main.ts` with `args` to completion (for flags that make it exit).
 *
 * @param args Flags.
 * @param options `freePort: false` runs it on the port `args` give, or on the default one.
 * @returns Exit code and output.
 * @throws {Error} If it is still running after a minute (it is killed then).
 */
export async function runServer(
  args: string[],
  options: { freePort?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  // A free port unless the test names one: the suite must pass while 5555 is taken.
  const { program, args: programArgs } = serverCommand(args, options);
  const child = new Deno.Command(program, {
    args: programArgs,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, RUN_DEADLINE_MS);
  const output = await child.output();
  clearTimeout(timer);
  const result = {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
  if (killed) {
    throw new Error(
      `the server was expected to exit but ran for ${RUN_DEADLINE_MS / 1000} s (killed):\n` +
        result.stderr,
    );
  }
  return result;
}

/** How long {@linkcode readBytes} waits for the bytes it was asked for, by default. */
export const READ_DEADLINE_MS = 60_000;

/** Options for {@linkcode readBytes}. */
export interface ReadOptions {
  /**
   * A reset ends the read like an EOF (the bytes so far are returned); false: it is thrown, for
   * clients that count resets apart.
   * @default {true}
   */
  resetIsEnd?: boolean;
}

/**
 * Reads from `conn` until `length` bytes have arrived or the peer closes; fails after
 * `timeoutMs` instead of hanging the test when neither happens. It never reads past `length`:
 * what follows is left for the next read.
 *
 * @param conn A connection.
 * @param length Bytes wanted; `Infinity` reads to EOF.
 * @param timeoutMs Deadline for the whole read.
 * @param options What a reset means.
 * @returns The bytes read.
 * @throws {Error} At the deadline, saying how much had arrived.
 */
export async function readBytes(
  conn: Deno.Conn,
  length: number,
  timeoutMs = READ_DEADLINE_MS,
  options: ReadOptions = {},
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const deadline = Date.now() + timeoutMs;
  while (total < length) {
    const buffer = new Uint8Array(Math.min(length - total, 64 * 1024));
    let n: number | null;
    const read = conn.read(buffer);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), Math.max(0, deadline - Date.now()));
    });
    try {
      const first = await Promise.race([read, late]);
      if (first === "late") {
        read.catch(() => {}); // settles when the test closes the connection
        throw new Error(
          `readBytes: ${total} of ${length} bytes after ${timeoutMs} ms, and no end of input`,
        );
      }
      n = first;
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset && options.resetIsEnd !== false) break;
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (n === null) break;
    chunks.push(buffer.subarray(0, n));
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
 * @returns The connection and its server-side id.
 */
export async function connectOnWorker(
  server: ServerProcess,
  worker: number,
): Promise<{ conn: Deno.TcpConn; id: number }> {
  for (let attempt = 0; attempt < 64; attempt++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const local = (conn.localAddr as Deno.NetAddr).port;
    const line = await server.waitForLog(
      new RegExp(`Connection \\d+ from 127\\.0\\.0\\.1:${local} to worker-\\d+`),
    );
    const [, id, on] = /Connection (\d+) .* to worker-(\d+)/.exec(line)!;
    if (Number(on) === worker) return { conn, id: Number(id) };
    conn.close();
    await server.waitForLog(new RegExp(`Connection ${id} closed`));
  }
  throw new Error(`no connection landed on worker-${worker} in 64 tries`);
}

/**
 * Like {@linkcode connectOnWorker}, for tests that need only the connection.
 *
 * @param server A server started with `--log-level debug`.
 * @param worker Worker number, from 1.
 * @returns The connection.
 */
export async function connectToWorker(
  server: ServerProcess,
  worker: number,
): Promise<Deno.TcpConn> {
  return (await connectOnWorker(server, worker)).conn;
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
export function waitForMetric(
  port: number,
  sample: string,
  value: number,
  timeoutMs = 10_000,
): Promise<Map<string, number>> {
  return waitForSamples(port, (samples) => samples.get(sample), value, sample, timeoutMs);
}

/**
 * Like {@linkcode waitForMetric}, for the sum of a metric over all its labels (every worker's
 * `echoserver_connections_active`, say).
 *
 * @param port The metrics port.
 * @param name Metric name without labels.
 * @param value The sum to wait for.
 * @param timeoutMs Deadline.
 * @returns The samples at that moment.
 */
export function waitForTotal(
  port: number,
  name: string,
  value: number,
  timeoutMs = 10_000,
): Promise<Map<string, number>> {
  return waitForSamples(port, (samples) => total(samples, name), value, name, timeoutMs);
}

async function waitForSamples(
  port: number,
  read: (samples: Map<string, number>) => number | undefined,
  value: number,
  what: string,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const samples = await scrape(port);
    if (read(samples) === value) return samples;
    if (Date.now() > deadline) {
      throw new Error(`${what} is ${read(samples)}, not ${value}, after ${timeoutMs} ms`);
    }
    await delay(50);
  }
}

/** A logger that drops everything, for handlers called directly in unit tests. */
export const silentLog: HandlerLog = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/**
 * The context a handler gets on a one-worker server, for calling handlers directly.
 *
 * @param options The handler's parsed options.
 * @returns The context; its peers are this worker alone.
 */
export function handlerContext(options: Record<string, unknown> = {}): HandlerContext {
  return loneWorker(options);
}

/**
 * A connection made of the given streams, for calling handlers directly.
 *
 * @param readable What the client sends.
 * @param writable Where the handler's output goes.
 * @returns The connection.
 */
export function streamConnection(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
): Connection {
  return {
    id: 1,
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    readable,
    writable,
    signal: new AbortController().signal,
    log: silentLog,
    outputLimit: 16 * 1024 * 1024,
  };
}
