/**
 * Logging set-up, and the only place that writes to the terminal.
 *
 * Runs on both threads: the main thread and every worker call {@linkcode setupLogging} once, with
 * their own name, so each line says which thread wrote it. Lines go to stderr, written
 * synchronously so that a line logged just before exit is not lost.
 *
 * @module
 */

import {
  configureSync,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
} from "@logtape/logtape";

/** Log levels a user may pick with `--log-level`. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevelName = typeof LOG_LEVELS[number];

const encoder = new TextEncoder();
const formatter = getTextFormatter({ timestamp: "date-time-timezone", value: "bare" });

/**
 * Routes log records of `level` and above to stderr, each tagged with `thread`.
 *
 * @param level Least severe level logged.
 * @param thread Name of the calling thread, such as `main` or `worker-1`.
 *
 * @example
 * ```ts
 * import { getLog, setupLogging } from "./log.ts";
 * setupLogging("warning", "main");
 * getLog().debug("not shown");
 * ```
 */
export function setupLogging(level: LogLevelName, thread: string): void {
  configureSync({
    reset: true,
    sinks: { stderr: _stderrSink },
    loggers: [
      { category: ["echoserver"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
  threadName = thread;
}

let threadName = "main";

/**
 * The logger for this thread's lines (category `echoserver` · thread name).
 *
 * @returns A LogTape logger.
 */
export function getLog(): Logger {
  return getLogger(["echoserver", threadName]);
}

/**
 * Writes text to stdout as is, for `--help` and `--version`.
 *
 * @param text The text; a newline is added.
 */
export function printOut(text: string): void {
  _writeAll(Deno.stdout, text + "\n");
}

/**
 * Writes text to stderr as is, for command-line errors reported before logging is set up.
 *
 * @param text The text; a newline is added.
 */
export function printError(text: string): void {
  _writeAll(Deno.stderr, text + "\n");
}

function _stderrSink(record: LogRecord): void {
  _writeAll(Deno.stderr, formatter(record));
}

function _writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
  } catch {
    // A closed stderr or stdout (the reader went away) must not take the server down.
  }
}
