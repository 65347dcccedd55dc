/**
 * Command-line parsing for the server: turns `Deno.args` into a validated {@linkcode Config}.
 *
 * Runs on the main thread only. Pure: it reads nothing but its arguments, so every error path is
 * unit-tested without starting a process.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  describeHandlerOptions,
  HandlerOptionError,
  parseHandlerOptions,
} from "../handlers/handler_options.ts";
import { BUILTIN_HANDLERS } from "../handlers/registry.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName } from "../shared/log.ts";

/** The server's settings, after validation. */
export interface Config {
  /** TCP port to listen on; 0 asks the OS for a free one. */
  port: number;
  /** Listen address; `undefined` means all interfaces, IPv4 and IPv6. */
  host: string | undefined;
  /** Number of worker threads. */
  workers: number;
  /**
   * How connections reach the workers: `main`, the main thread accepts and relays their bytes;
   * `kernel` (Linux), every worker listens with `SO_REUSEPORT` and owns its sockets.
   */
  dispatch: DispatchMode;
  /** Seconds of silence after which a connection is closed; 0 disables the timeout. */
  idleTimeout: number;
  /** Most connections served at once; the ones past it are closed on accept. */
  maxConnections: number;
  /**
   * Most connections open at once from one client address (the PROXY header's source when
   * `proxyProtocol` is on); 0 = no limit.
   */
  maxConnectionsPerIp: number;
  /**
   * Most bytes held for clients (input not yet consumed by handlers, output not yet taken by
   * sockets), server-wide; past it the heaviest connections stop being read.
   */
  maxBuffered: number;
  /** Seconds that SIGINT/SIGTERM lets open connections drain before they are closed. */
  shutdownTimeout: number;
  /** Seconds a client may leave its pending echo wholly unread before it is disconnected; 0 = never. */
  writeTimeout: number;
  /** Port of the Prometheus `/metrics` endpoint; `undefined` = off. */
  metricsPort: number | undefined;
  /** Address the metrics endpoint binds. */
  metricsHost: string;
  /** Require a PROXY protocol (v1 or v2) header on every connection. */
  proxyProtocol: boolean;
  /**
   * TLS: the files of the certificate chain and its key (PEM), and of the CAs that client
   * certificates must chain to (mutual TLS); undefined: plain TCP.
   */
  tls: TlsFiles | undefined;
  /** Seconds a TLS client may take to complete its handshake. */
  tlsHandshakeTimeout: number;
  /** Least severe level that is logged. */
  logLevel: LogLevelName;
  /** `text` (one readable line per record) or `json` (one JSON object per line). */
  logFormat: LogFormat;
  /** Protocol handler: a built-in name (`echo`) or a module path or URL. */
  handler: string;
  /**
   * `--handler-option name=value` settings, as typed (each worker parses them); checked here
   * already for a built-in handler.
   */
  handlerOptions: Record<string, string>;
  /** Seconds a handler module may take to load in each worker before start-up fails. */
  handlerTimeout: number;
}

/** The TLS files given on the command line (paths as typed). */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string | undefined;
}

/** The values of `--dispatch`. */
export const DISPATCH_MODES = ["main", "kernel"] as const;

/** One of {@linkcode DISPATCH_MODES}. */
export type DispatchMode = typeof DISPATCH_MODES[number];

/** What the command line asked for: run the server, or print help or the version and exit. */
export type Command =
  | { kind: "serve"; config: Config }
  | { kind: "help" }
  | { kind: "version" };

/**
 * A command line the server cannot run with. The message is one line, meant for the user as is.
 *
 * @example Catching a bad flag
 * ```ts
 * import { parseCommandLine, UsageError } from "./config.ts";
 * try {
 *   parseCommandLine(["--port", "http"], { cpus: 2 });
 * } catch (error) {
 *   if (!(error instanceof UsageError)) throw error;
 * }
 * ```
 */
export class UsageError extends Error {
  /** Whether a hint to read `--help` should follow the message (not when the flags are fine). */
  readonly showHint: boolean;

  /**
   * Creates the error with a one-line, user-facing message.
   *
   * @param message The line.
   * @param options The cause, and whether to hint at `--help` (default true).
   */
  constructor(message: string, options?: ErrorOptions & { showHint?: boolean }) {
    super(message, options);
    this.name = "UsageError";
    this.showHint = options?.showHint ?? true;
  }
}

/** Options for {@linkcode parseCommandLine}. */
export interface ParseOptions {
  /** CPU count, the default for `--workers`. */
  cpus: number;
  /**
   * The operating system, as `Deno.build.os` names it (`kernel` dispatch is Linux-only).
   * @default {"linux"}
   */
  os?: string;
  /**
   * Whether Deno runs with `--unstable-net`, which `Deno.listen({ reusePort })` needs in Deno
   * 2.9.6 (`kernel` dispatch); without it Deno would end the process with exit code 70.
   * @default {true}
   */
  unstableNet?: boolean;
}

/** The usage text printed by `--help`. */
export const USAGE = `Usage: echoserver [options]

A multi-threaded TCP echo server: the main thread accepts connections and hands them
round-robin to a pool of worker threads, each serving many connections at once.

Options:
  -p, --port <n>             TCP port; default 5555; 0 picks a free port
      --host <addr>          listen address; default all interfaces, IPv4 and IPv6 ("::")
  -w, --workers <n>          worker threads; default: CPU cores
      --dispatch <mode>      how connections reach the workers; default main
                               main:   the main thread accepts and relays each connection's
                                       bytes to a worker (any OS)
                               kernel: every worker listens on the port (SO_REUSEPORT), the
                                       kernel spreads connections, and each worker does its
                                       own socket I/O: scales with cores (Linux only)
      --idle-timeout <s>     close a connection idle this many seconds; default 300; 0 = never
      --max-connections <n>  default 10000; beyond it new connections are closed at once
      --max-connections-per-ip <n>
                             most open connections from one address (the PROXY header's
                             client with --proxy-protocol); default 0 = no limit
      --max-buffered <MiB>   bytes held for clients, server-wide, before the heaviest
                             connections stop being read; default 64
      --shutdown-timeout <s> on SIGINT/SIGTERM, how long to let connections drain; default 10
      --write-timeout <s>    disconnect a client that reads none of its echo this long; default 30;
                             0 = never
      --metrics-port <n>     serve Prometheus metrics on http://<metrics-host>:<n>/metrics; off
                             by default
      --metrics-host <addr>  address of the metrics endpoint; default 127.0.0.1
      --proxy-protocol       require a PROXY protocol v1/v2 header (behind HAProxy or
                             similar) and use the client address it carries; off by default
      --tls-cert <file>      serve TLS with this certificate chain (PEM, leaf first); needs
                             --tls-key; SIGHUP re-reads both for new connections
      --tls-key <file>       the certificate's private key (PEM)
      --tls-ca <file>        mutual TLS: require client certificates that chain to these CAs
      --tls-handshake-timeout <s>
                             close a client that has not finished its TLS handshake; default 10
      --log-level <level>    trace | debug | info | warning | error | fatal; default info
      --log-format <format>  text | json (one JSON object per line); default text
      --handler <name|path>  protocol handler: echo (default), hash, chat, memcache, or a
                             module path or URL
      --handler-option <name=value>
                             a setting for the handler; repeat for more (see below)
      --handler-timeout <s>  how long a handler module may take to load and set up; default 10
  -h, --help                 show this help
  -V, --version              print the version

Handler options:
${_builtinOptions()}

Exit status:
  0    stopped on SIGINT/SIGTERM after draining: no connection was cut
  1    cannot run: the address is in use or invalid, or a permission is missing
  2    bad command line, or a handler that cannot be loaded
  3    stopped, but --shutdown-timeout cut connections with input or output pending
  130  a second SIGINT (143: SIGTERM) cut the drain short

Try it: telnet localhost 5555, type a line, see it echoed; type quit to leave.`;

const OPTIONS = {
  port: { type: "string", short: "p" },
  host: { type: "string" },
  workers: { type: "string", short: "w" },
  dispatch: { type: "string" },
  "idle-timeout": { type: "string" },
  "max-connections": { type: "string" },
  "max-connections-per-ip": { type: "string" },
  "max-buffered": { type: "string" },
  "shutdown-timeout": { type: "string" },
  "write-timeout": { type: "string" },
  "metrics-port": { type: "string" },
  "metrics-host": { type: "string" },
  "proxy-protocol": { type: "boolean" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-ca": { type: "string" },
  "tls-handshake-timeout": { type: "string" },
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  handler: { type: "string" },
  "handler-option": { type: "string", multiple: true },
  "handler-timeout": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/**
 * Parses and validates the command line.
 *
 * @param args The arguments after the program name, as in `Deno.args`.
 * @param options Where defaults come from.
 * @returns What to do: serve with a config, or print help or the version.
 * @throws {UsageError} On an unknown flag, a missing value or a value out of range.
 *
 * @example Defaults
 * ```ts
 * import { parseCommandLine } from "./config.ts";
 * import assert from "node:assert/strict";
 * const command = parseCommandLine([], { cpus: 4 });
 * assert.equal(command.kind, "serve");
 * if (command.kind === "serve") assert.equal(command.config.workers, 4);
 * ```
 */
export function parseCommandLine(args: readonly string[], options: ParseOptions): Command {
  let values;
  try {
    ({ values } = parseArgs({ args: [...args], options: OPTIONS, strict: true }));
  } catch (error) {
    throw new UsageError(_describeParseError(error), { cause: error });
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  const host = values.host === undefined
    ? undefined
    : _nonEmpty("--host", values.host, "", "an address such as 127.0.0.1 or ::");
  const logLevel = values["log-level"] ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(
      `'--log-level' must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`,
    );
  }
  const dispatch = values.dispatch ?? "main";
  if (!(DISPATCH_MODES as readonly string[]).includes(dispatch)) {
    throw new UsageError(
      `'--dispatch' must be one of ${DISPATCH_MODES.join(", ")}, got "${dispatch}"`,
    );
  }
  const os = options.os ?? "linux";
  if (dispatch === "kernel" && os !== "linux") {
    throw new UsageError(
      `'--dispatch kernel' needs Linux, where SO_REUSEPORT spreads connections over the ` +
        `workers; on ${os} use '--dispatch main'`,
      { showHint: false },
    );
  }
  if (dispatch === "kernel" && options.unstableNet === false) {
    throw new UsageError(
      "'--dispatch kernel' needs Deno's --unstable-net flag (deno task serve and the compiled " +
        "binary pass it; with deno run, add it before the script name)",
      { showHint: false },
    );
  }
  const handler = _nonEmpty(
    "--handler",
    values.handler,
    "echo",
    "a built-in name such as echo, or a module path",
  );
  const handlerOptions = _handlerOptions(values["handler-option"] ?? []);
  const builtin = BUILTIN_HANDLERS[handler];
  if (builtin !== undefined) {
    try {
      parseHandlerOptions(handler, builtin.options, handlerOptions);
    } catch (error) {
      if (!(error instanceof HandlerOptionError)) throw error;
      throw new UsageError(error.message, { cause: error });
    }
  }
  return {
    kind: "serve",
    config: {
      port: _integer("--port", values.port, 5555, 0, 65535),
      host,
      workers: _integer("--workers", values.workers, Math.max(1, options.cpus), 1, 256),
      dispatch: dispatch as DispatchMode,
      idleTimeout: _seconds("--idle-timeout", values["idle-timeout"], 300, 0),
      maxConnections: _integer("--max-connections", values["max-connections"], 10000, 1, 1e7),
      maxConnectionsPerIp: _integer(
        "--max-connections-per-ip",
        values["max-connections-per-ip"],
        0,
        0,
        1e7,
      ),
      maxBuffered: _integer("--max-buffered", values["max-buffered"], 64, 1, 1024 * 1024) *
        1024 * 1024,
      shutdownTimeout: _seconds("--shutdown-timeout", values["shutdown-timeout"], 10, 0),
      writeTimeout: _seconds("--write-timeout", values["write-timeout"], 30, 0),
      metricsPort: values["metrics-port"] === undefined
        ? undefined
        : _integer("--metrics-port", values["metrics-port"], 0, 0, 65535),
      metricsHost: _nonEmpty(
        "--metrics-host",
        values["metrics-host"],
        "127.0.0.1",
        "an address such as 127.0.0.1 or ::",
      ),
      proxyProtocol: values["proxy-protocol"] ?? false,
      tls: _tlsFiles(values["tls-cert"], values["tls-key"], values["tls-ca"]),
      tlsHandshakeTimeout: _seconds(
        "--tls-handshake-timeout",
        values["tls-handshake-timeout"],
        10,
        0.1,
      ),
      logLevel: logLevel as LogLevelName,
      logFormat: _oneOf("--log-format", values["log-format"], "text", LOG_FORMATS),
      handler,
      handlerOptions,
      handlerTimeout: _seconds("--handler-timeout", values["handler-timeout"], 10, 0.1),
    },
  };
}

function _tlsFiles(
  cert: string | undefined,
  key: string | undefined,
  ca: string | undefined,
): TlsFiles | undefined {
  if (cert === undefined && key === undefined) {
    if (ca !== undefined) {
      throw new UsageError("'--tls-ca' needs '--tls-cert' and '--tls-key': mutual TLS is TLS");
    }
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    throw new UsageError("'--tls-cert' and '--tls-key' go together: give both, or neither");
  }
  return {
    cert: _nonEmpty("--tls-cert", cert, "", "a file path"),
    key: _nonEmpty("--tls-key", key, "", "a file path"),
    ca: ca === undefined ? undefined : _nonEmpty("--tls-ca", ca, "", "a file path"),
  };
}

/** `name=value` pairs, the last one winning for a repeated name. */
function _handlerOptions(raw: readonly string[]): Record<string, string> {
  const options: Record<string, string> = {};
  for (const pair of raw) {
    const equals = pair.indexOf("=");
    if (equals <= 0) {
      throw new UsageError(`'--handler-option' must be name=value, got "${pair}"`);
    }
    options[pair.slice(0, equals).trim()] = pair.slice(equals + 1).trim();
  }
  return options;
}

/** The `--help` section that lists the built-in handlers' options. */
function _builtinOptions(): string {
  return Object.entries(BUILTIN_HANDLERS).map(([name, module]) => {
    const lines = describeHandlerOptions(module.options);
    return lines.length === 0 ? `  ${name}: none` : `  ${name}:\n${lines.join("\n")}`;
  }).join("\n");
}

function _integer(
  flag: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`'${flag}' must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function _oneOf<T extends string>(
  flag: string,
  raw: string | undefined,
  fallback: T,
  allowed: readonly T[],
): T {
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new UsageError(`'${flag}' must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

function _nonEmpty(flag: string, raw: string | undefined, fallback: string, what: string): string {
  if (raw === undefined) return fallback;
  if (raw.trim() === "") throw new UsageError(`'${flag}' must be ${what}, got "${raw}"`);
  return raw.trim();
}

function _seconds(flag: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined) return fallback;
  const value = /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : NaN;
  // Timers take a 32-bit millisecond count; longer than ~24 days would fire at once.
  const max = 2_000_000;
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new UsageError(
      `'${flag}' must be a number of seconds from ${min} to ${max}, got "${raw}"`,
    );
  }
  return value;
}

function _describeParseError(error: unknown): string {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  const quoted = /'([^']+)'/.exec(message)?.[1] ?? message;
  const option = /--[a-z][a-z-]*/.exec(quoted)?.[0] ?? quoted;
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `Unknown option '${option}'`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return message.includes("does not take")
        ? `Option '${option}' does not take a value`
        : `Option '${option}' needs a value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `Unexpected argument '${quoted}': the server takes only options`;
    default:
      return message.split("\n")[0] ?? "Bad command line";
  }
}
