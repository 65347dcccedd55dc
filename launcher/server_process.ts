/**
 * One launcher for the real server process, shared by the tests, the benchmark, the soak and the
 * release smoke test: start it on a free port, wait for its ready line, keep its log, stop it.
 *
 * Runs in whatever process starts servers (a test, the benchmark); never inside the server.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { LAUNCH_FLAGS } from "./launch_flags.ts";

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
  /** Waits for the process to exit by itself (sends nothing), or fails after `timeoutMs`. */
  exited(timeoutMs?: number): Promise<Deno.CommandStatus>;
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
 * The command that runs this project's server (`main.ts`) with `args`, with the permissions and
 * runtime flags it is launched with everywhere (`launch_flags.ts`).
 *
 * @param args Server flags.
 * @param options `freePort` (default true): add `--port 0` unless `args` gives a port.
 * @returns Program and arguments.
 */
export function serverCommand(
  args: string[] = [],
  options: { freePort?: boolean } = {},
): { program: string; args: string[] } {
  const hasPort = options.freePort === false ||
    args.some((a) => a === "-p" || a === "--port" || a.startsWith("--port="));
  return {
    program: Deno.execPath(),
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      ...LAUNCH_FLAGS,
      MAIN,
      ...(hasPort ? [] : ["--port", "0"]),
      ...args,
    ],
  };
}

/**
 * Starts this project's server with `args` (see {@linkcode serverCommand}) and waits until it
 * logs that it is listening.
 *
 * @param args Server flags.
 * @param options Environment.
 * @returns The running server.
 */
export function startServer(
  args: string[] = [],
  options: StartOptions = {},
): Promise<ServerProcess> {
  const { program, args: programArgs } = serverCommand(args);
  return startProcess(program, programArgs, options);
}

/**
 * Starts any server program (the project's server, a compiled binary, the benchmark's
 * baseline) and waits until it logs `listening on <host>:<port>`; its stdout and stderr are
 * kept as its log. With `--metrics-port` among the arguments, it also waits for the metrics
 * line.
 *
 * @param program The executable.
 * @param serverArgs Its arguments.
 * @param options Environment, descriptor limit, working directory.
 * @returns The running server.
 * @throws {Error} If it exits or stays silent before listening; it is then killed.
 */
export async function startProcess(
  program: string,
  serverArgs: string[],
  options: StartOptions = {},
): Promise<ServerProcess> {
  const args = serverArgs;
  // ulimit is a shell builtin: wrap the server in sh when a limit is asked for.
  const [command0, commandArgs] = options.maxOpenFiles === undefined
    ? [program, serverArgs]
    : ["sh", [
      "-c",
      `ulimit -n ${options.maxOpenFiles} && exec "$0" "$@"`,
      program,
      ...serverArgs,
    ]];
  const command = new Deno.Command(command0, {
    args: commandArgs,
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
  const exitedBy = async (timeoutMs = 30_000): Promise<Deno.CommandStatus> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Server still running after ${timeoutMs} ms:\n${text}`)),
        timeoutMs,
      );
    });
    try {
      const result = await Promise.race([exited, late]);
      await pumps;
      return result;
    } finally {
      clearTimeout(timer);
    }
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
    exited: exitedBy,
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
