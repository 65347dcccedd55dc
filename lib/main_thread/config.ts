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
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName } from "../log.ts";

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
  /**
   * During a drain, seconds of silence after which a connection with nothing pending counts as
   * finished and is closed; 0 = none is, all wait for the end of `shutdownTimeout`.
   */
  drainIdle: number;
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
  /** Detach each buffer lent to a byte handler's `data` call once the call is over. */
  debugBuffers: boolean;
  /** Where to write the process id (for `kill -USR2`), removed at exit; undefined: nowhere. */
  pidFile: string | undefined;
  /**
   * Listen beside the server already on the port (`SO_REUSEPORT`) and take its new connections:
   * a hand-over. Without it a port in use is refused.
   */
  join: boolean;
  /**
   * Whether the listening sockets set `SO_REUSEPORT` (Linux, under `--unstable-net`): always in
   * `kernel` dispatch; in `main` dispatch so that a new release can listen on the port while
   * this one drains (see README, Upgrading).
   */
  reusePort: boolean;
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

/**
 * One command-line flag: the single place its spelling, value, default and help live. The
 * parser reads its default from here, `--help` is generated from these, and a test checks the
 * README's flag table against them.
 */
export interface Flag {
  /** The long name, without `--`. */
  name: string;
  /** The one-letter short form, if any. */
  short?: string;
  /** How `--help` shows the value (`<n>`); none for a switch. */
  value?: string;
  /** Repeatable (`--handler-option`). */
  multiple?: boolean;
  /** The default, as `--help` and the README say it (empty: none to speak of). */
  shown: string;
  /** What it does, for `--help`: one sentence; `\n` starts an indented continuation line. */
  help: string;
}

/** Every flag the server takes, in `--help` order. */
export const FLAGS: readonly Flag[] = [
  { name: "port", short: "p", value: "<n>", shown: "5555", help: "TCP port; 0 picks a free port" },
  {
    name: "host",
    value: "<addr>",
    shown: "all interfaces, IPv4 and IPv6 (::)",
    help: "listen address",
  },
  {
    name: "workers",
    short: "w",
    value: "<n>",
    shown: "CPU cores",
    help: "worker threads, 1 to 256",
  },
  {
    name: "dispatch",
    value: "<mode>",
    shown: "main",
    help: "how connections reach the workers\n" +
      "main:   the main thread accepts and relays each connection's bytes\n" +
      "        to a worker (any OS)\n" +
      "kernel: every worker listens on the port (SO_REUSEPORT), the kernel\n" +
      "        spreads connections, and each worker does its own socket I/O:\n" +
      "        scales with cores (Linux only)",
  },
  {
    name: "join",
    shown: "off",
    help: "listen beside the echoserver already on the port and take its new connections (a " +
      "hand-over to a new release: see Upgrading); without it a port in use is refused",
  },
  {
    name: "idle-timeout",
    value: "<s>",
    shown: "300",
    help: "close a connection idle this many seconds; 0 = never",
  },
  {
    name: "max-connections",
    value: "<n>",
    shown: "10000",
    help: "beyond it new connections are closed at once",
  },
  {
    name: "max-connections-per-ip",
    value: "<n>",
    shown: "0 (no limit)",
    help: "most open connections from one address (the PROXY header's client with " +
      "--proxy-protocol)",
  },
  {
    name: "max-buffered",
    value: "<MiB>",
    shown: "64",
    help: "bytes held for clients, server-wide, before the heaviest connections stop being read",
  },
  {
    name: "shutdown-timeout",
    value: "<s>",
    shown: "10",
    help: "on SIGINT/SIGTERM, how long to let connections drain",
  },
  {
    name: "drain-idle",
    value: "<s>",
    shown: "1",
    help: "while draining, close a connection silent this long with nothing pending; 0 = keep " +
      "it until --shutdown-timeout",
  },
  {
    name: "write-timeout",
    value: "<s>",
    shown: "30",
    help: "disconnect a client that reads none of its pending output this long; 0 = never",
  },
  {
    name: "metrics-port",
    value: "<n>",
    shown: "off",
    help: "serve Prometheus metrics on http://<metrics-host>:<n>/metrics",
  },
  {
    name: "metrics-host",
    value: "<addr>",
    shown: "127.0.0.1",
    help: "address of the metrics endpoint",
  },
  {
    name: "proxy-protocol",
    shown: "off",
    help: "require a PROXY protocol v1/v2 header (behind HAProxy or similar) and use the client " +
      "address it carries",
  },
  {
    name: "tls-cert",
    value: "<file>",
    shown: "off",
    help: "serve TLS with this certificate chain (PEM, leaf first); needs --tls-key; SIGHUP " +
      "re-reads both for new connections",
  },
  { name: "tls-key", value: "<file>", shown: "", help: "the certificate's private key (PEM)" },
  {
    name: "tls-ca",
    value: "<file>",
    shown: "off",
    help: "mutual TLS: require client certificates that chain to these CAs",
  },
  {
    name: "tls-handshake-timeout",
    value: "<s>",
    shown: "10",
    help: "close a client that has not finished its TLS handshake",
  },
  {
    name: "log-level",
    value: "<level>",
    shown: "info",
    help: `${LOG_LEVELS.join(" | ")}; debug logs each connection's open and close`,
  },
  {
    name: "log-format",
    value: "<format>",
    shown: "text",
    help: "text | json (one JSON object per line)",
  },
  {
    name: "handler",
    value: "<name|path>",
    shown: "echo",
    help: `protocol handler: ${Object.keys(BUILTIN_HANDLERS).join(", ")}, or a module path or URL`,
  },
  {
    name: "handler-option",
    value: "<name=value>",
    multiple: true,
    shown: "(per handler)",
    help: "a setting for the handler; repeat for more (see below)",
  },
  {
    name: "handler-timeout",
    value: "<s>",
    shown: "10",
    help: "how long a handler module may take to load and set up",
  },
  {
    name: "pid-file",
    value: "<file>",
    shown: "off",
    help: "write the process id to this file (for kill -USR2, deno task reload); removed at exit",
  },
  {
    name: "debug-buffers",
    shown: "off",
    help: "detach every buffer lent to a byte handler's data callback once the call is over, so " +
      "that a handler that keeps one fails loudly (for handlers' tests; costs a copy per chunk)",
  },
  { name: "help", short: "h", shown: "", help: "show this help" },
  { name: "version", short: "V", shown: "", help: "print the version" },
];

const HELP_WIDTH = 100;
const HELP_INDENT = 29;

/** `--help`'s lines for one flag: name and value, then the help wrapped under it. */
function _usageOf(flag: Flag): string {
  const head = `  ${flag.short === undefined ? "    " : `-${flag.short}, `}--${flag.name}` +
    (flag.value === undefined ? "" : ` ${flag.value}`);
  const [first = "", ...continued] = flag.help.split("\n");
  const shown = flag.shown === "" || flag.shown === "(per handler)"
    ? ""
    : `; default ${flag.shown}`;
  const words = (first + shown).split(" ");
  const lines: string[] = [];
  let line = "";
  for (const word of words) {
    if (line !== "" && HELP_INDENT + line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line, ...continued.map((text) => `  ${text}`));
  const pad = " ".repeat(HELP_INDENT);
  const out = head.length < HELP_INDENT - 1
    ? [head.padEnd(HELP_INDENT) + lines[0], ...lines.slice(1).map((l) => pad + l)]
    : [head, ...lines.map((l) => pad + l)];
  return out.join("\n");
}

/** The usage text printed by `--help`, made from {@linkcode FLAGS}. */
export const USAGE = `Usage: echoserver [options]

A multi-threaded TCP echo server: the main thread accepts connections and hands them
round-robin to a pool of worker threads, each serving many connections at once.

Options:
${FLAGS.map(_usageOf).join("\n")}

Handler options:
${_builtinOptions()}

Signals:
  SIGINT, SIGTERM  drain (--shutdown-timeout), then exit; a second one exits at once
  SIGUSR2          rolling reload: fresh workers load the handler anew and take new
                   connections; the old ones finish theirs, then end
  SIGHUP           re-read the TLS certificate and key (ignored without TLS)
  SIGUSR1, SIGQUIT, SIGALRM  logged and ignored

Exit status:
  0    stopped on SIGINT/SIGTERM after draining: no connection was cut
  1    cannot run: the address is in use or invalid, or a permission is missing
  2    bad command line, or a handler that cannot be loaded
  3    stopped, but --shutdown-timeout cut connections with input or output pending
  130  a second SIGINT (143: SIGTERM) cut the drain short

Try it: telnet localhost 5555, type a line, see it echoed; type quit to leave.`;

/** `node:util` parseArgs's options, made from {@linkcode FLAGS}. */
const OPTIONS = Object.fromEntries(FLAGS.map((flag) => [flag.name, {
  type: flag.value === undefined ? "boolean" : "string",
  ...(flag.short === undefined ? {} : { short: flag.short }),
  ...(flag.multiple ? { multiple: true } : {}),
}])) as Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

/** A flag's default as the parser uses it: the number or text that {@linkcode FLAGS} shows. */
function _default(name: string): string {
  const flag = FLAGS.find((f) => f.name === name);
  if (flag === undefined) throw new RangeError(`No flag --${name}`);
  return flag.shown;
}

/** A numeric default from {@linkcode FLAGS} ("0 (no limit)" is 0). */
function _number(name: string): number {
  return Number.parseFloat(_default(name));
}

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
  let parsed: Record<string, string | boolean | string[] | undefined>;
  try {
    parsed = parseArgs({ args: [...args], options: OPTIONS, strict: true }).values as typeof parsed;
  } catch (error) {
    throw new UsageError(_describeParseError(error), { cause: error });
  }
  const text = (name: string) => parsed[name] as string | undefined;
  const on = (name: string) => parsed[name] === true;
  if (on("help")) return { kind: "help" };
  if (on("version")) return { kind: "version" };

  const host = text("host") === undefined
    ? undefined
    : _nonEmpty("--host", text("host"), "", "an address such as 127.0.0.1 or ::");
  const logLevel = text("log-level") ?? _default("log-level");
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(
      `'--log-level' must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`,
    );
  }
  const dispatch = text("dispatch") ?? _default("dispatch");
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
  if (on("join") && (os !== "linux" || options.unstableNet === false)) {
    throw new UsageError(
      "'--join' shares the port with SO_REUSEPORT, which needs Linux and Deno's --unstable-net",
      { showHint: false },
    );
  }
  const handler = _nonEmpty(
    "--handler",
    text("handler"),
    _default("handler"),
    "a built-in name such as echo, or a module path",
  );
  const handlerOptions = _handlerOptions((parsed["handler-option"] as string[] | undefined) ?? []);
  const builtin = BUILTIN_HANDLERS[handler];
  if (builtin !== undefined) {
    try {
      parseHandlerOptions(handler, builtin.options, handlerOptions);
    } catch (error) {
      if (!(error instanceof HandlerOptionError)) throw error;
      throw new UsageError(error.message, { cause: error });
    }
  }
  const integer = (name: string, min: number, max: number, fallback = _number(name)) =>
    _integer(`--${name}`, text(name), fallback, min, max);
  const seconds = (name: string, min: number) =>
    _seconds(`--${name}`, text(name), _number(name), min);
  return {
    kind: "serve",
    config: {
      port: integer("port", 0, 65535),
      host,
      workers: integer("workers", 1, 256, Math.max(1, options.cpus)),
      dispatch: dispatch as DispatchMode,
      idleTimeout: seconds("idle-timeout", 0),
      maxConnections: integer("max-connections", 1, 1e7),
      maxConnectionsPerIp: integer("max-connections-per-ip", 0, 1e7),
      maxBuffered: integer("max-buffered", 1, 1024 * 1024) * 1024 * 1024,
      shutdownTimeout: seconds("shutdown-timeout", 0),
      drainIdle: seconds("drain-idle", 0),
      writeTimeout: seconds("write-timeout", 0),
      metricsPort: text("metrics-port") === undefined
        ? undefined
        : integer("metrics-port", 0, 65535, 0),
      metricsHost: _nonEmpty(
        "--metrics-host",
        text("metrics-host"),
        _default("metrics-host"),
        "an address such as 127.0.0.1 or ::",
      ),
      proxyProtocol: on("proxy-protocol"),
      tls: _tlsFiles(text("tls-cert"), text("tls-key"), text("tls-ca")),
      tlsHandshakeTimeout: seconds("tls-handshake-timeout", 0.1),
      logLevel: logLevel as LogLevelName,
      logFormat: _oneOf("--log-format", text("log-format"), "text", LOG_FORMATS),
      handler,
      handlerOptions,
      handlerTimeout: seconds("handler-timeout", 0.1),
      debugBuffers: on("debug-buffers"),
      pidFile: text("pid-file") === undefined
        ? undefined
        : _nonEmpty("--pid-file", text("pid-file"), "", "a file path"),
      join: on("join"),
      reusePort: os === "linux" && options.unstableNet !== false,
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
