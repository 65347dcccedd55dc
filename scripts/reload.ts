/**
 * `deno task reload`: asks a running server for a rolling reload, by sending SIGUSR2 to the
 * process whose id its `--pid-file` holds. The server logs the outcome and counts it in
 * `echoserver_reloads_total{result}`; a reload that cannot happen changes nothing.
 *
 * Usage: deno task reload [--pid-file <file>]   (default: echoserver.pid, as in
 *        `deno task serve --pid-file echoserver.pid`)
 *
 * Runs in a process of its own, never in the server.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { printError, printOut } from "../lib/log.ts";

/** The pid file `deno task serve --pid-file echoserver.pid` writes, in the working folder. */
const DEFAULT_PID_FILE = "echoserver.pid";

function fail(message: string): never {
  printError(`reload: ${message}`);
  Deno.exit(1);
}

/**
 * Sends SIGUSR2 to the server named by the pid file.
 *
 * @param args The command line.
 */
export function reload(args: string[]): void {
  let pidFile: string;
  try {
    const { values } = parseArgs({
      args,
      options: { "pid-file": { type: "string", default: DEFAULT_PID_FILE } },
      strict: true,
    });
    pidFile = values["pid-file"];
  } catch (error) {
    fail(`${(error as Error).message}; usage: deno task reload [--pid-file <file>]`);
  }
  let text: string;
  try {
    text = Deno.readTextFileSync(pidFile);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file (start the server with --pid-file, or send SIGUSR2 to its process)"
      : (error as Error).message.split("\n")[0];
    fail(`cannot read ${pidFile}: ${reason}`);
  }
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) fail(`${pidFile} holds no process id: "${text}"`);
  try {
    Deno.kill(pid, "SIGUSR2");
  } catch (error) {
    fail(`cannot signal process ${pid} (from ${pidFile}): ${(error as Error).message}`);
  }
  printOut(
    `Sent SIGUSR2 to process ${pid}: the server logs the reload's outcome ` +
      "(echoserver_reloads_total counts it)",
  );
}

if (import.meta.main) reload(Deno.args);
