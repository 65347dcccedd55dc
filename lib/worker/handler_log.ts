/**
 * The loggers handlers get: the worker's own (its lines say `echoserver.worker-N`), and one per
 * connection whose lines start with `Connection <id>:` like the server's own connection lines.
 *
 * Runs inside a worker only.
 *
 * @module
 */

import type { HandlerLog } from "../handlers/handler.ts";
import { getLog } from "../log.ts";

type Properties = Record<string, unknown> | undefined;

/**
 * The worker's logger, as a handler sees it.
 *
 * @returns A logger that follows `--log-level` and `--log-format`.
 */
export function workerLog(): HandlerLog {
  const log = getLog();
  return {
    trace: (message, properties) => log.trace(message, properties ?? {}),
    debug: (message, properties) => log.debug(message, properties ?? {}),
    info: (message, properties) => log.info(message, properties ?? {}),
    warn: (message, properties) => log.warning(message, properties ?? {}),
    error: (message, properties) => log.error(message, properties ?? {}),
  };
}

/**
 * A logger for one connection: `Connection <id>: ` before each message, and the id in the
 * record's properties (`connection`, for JSON logs).
 *
 * @param id The connection's id.
 * @returns The logger.
 */
export function connectionLog(id: number): HandlerLog {
  const log = getLog();
  const props = (properties: Properties) => ({ ...properties, connection: id });
  const text = (message: string) => `Connection {connection}: ${message}`;
  return {
    trace: (message, properties) => log.trace(text(message), props(properties)),
    debug: (message, properties) => log.debug(text(message), props(properties)),
    info: (message, properties) => log.info(text(message), props(properties)),
    warn: (message, properties) => log.warning(text(message), props(properties)),
    error: (message, properties) => log.error(text(message), props(properties)),
  };
}
