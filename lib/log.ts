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
  getJsonLinesFormatter,
  getLogger,
  getLogLevels,
  getTextFormatter,
  type Logger,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

/** Log levels a user may pick with `--log-level`: LogTape's own list, least severe first. */
export const LOG_LEVELS: readonly LogLevelName[] = getLogLevels();

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevelName = LogLevel;

/** Formats a user may pick with `--log-format`. */
export const LOG_FORMATS = ["text", "json"] as const;

/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

const encoder = new TextEncoder();
const FORMATTERS: Record<LogFormat, (record: LogRecord) => string> = {
  // An ASCII category separator ("echoserver.worker-1"), so that lines grep well.
  text: getTextFormatter({ timestamp: "date-time-timezone", value: "bare", category: "." }),
  // One JSON object a line: @timestamp, level, message, logger, and the structured fields.
  json: getJsonLinesFormatter(),
};
let formatter = FORMATTERS.text;

/**
 * Routes log records of `level` and above to stderr, each tagged with `thread`.
 *
 * @param level Least severe level logged.
 * @param thread Name of the calling thread, such as `main` or `worker-1`.
 * @param format Line format.
 *
 * @example
 * ```ts
 * import { getLog, setupLogging } from "./log.ts";
 * setupLogging("warning", "main");
 * getLog().debug("not shown");
 * ```
 */
export function setupLogging(
  level: LogLevelName,
  thread: string,
  format: LogFormat = "text",
): void {
  formatter = FORMATTERS[format];
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
