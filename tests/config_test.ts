import { metricsTable } from "../lib/main_thread/metrics.ts";
import assert from "node:assert/strict";
import { FLAGS, parseCommandLine, USAGE, UsageError } from "../lib/main_thread/config.ts";

const parse = (args: string[]) => parseCommandLine(args, { cpus: 3 });

function serveConfig(args: string[]) {
  const command = parse(args);
  assert.equal(command.kind, "serve");
  return command.kind === "serve" ? command.config : undefined!;
}

Deno.test("parseCommandLine() gives the documented defaults", () => {
  assert.deepEqual(serveConfig([]), {
    port: 5555,
    host: undefined,
    workers: 3,
    dispatch: "main",
    idleTimeout: 300,
    maxConnections: 10000,
    maxConnectionsPerIp: 0,
    maxBuffered: 64 * 1024 * 1024,
    shutdownTimeout: 10,
    drainIdle: 1,
    join: false,
    writeTimeout: 30,
    metricsPort: undefined,
    metricsHost: "127.0.0.1",
    proxyProtocol: false,
    tls: undefined,
    tlsHandshakeTimeout: 10,
    logLevel: "info",
    logFormat: "text",
    handler: "echo",
    handlerOptions: {},
    handlerTimeout: 10,
    debugBuffers: false,
    pidFile: undefined,
    reusePort: true,
  });
  // SO_REUSEPORT needs Linux and Deno's --unstable-net.
  const reusePort = (options: { os?: string; unstableNet?: boolean }) => {
    const command = parseCommandLine([], { cpus: 1, ...options });
    return command.kind === "serve" && command.config.reusePort;
  };
  assert.equal(reusePort({ os: "darwin" }), false);
  assert.equal(reusePort({ unstableNet: false }), false);
});

Deno.test("parseCommandLine() reads every flag, long and short", () => {
  assert.deepEqual(
    serveConfig([
      "-p",
      "0",
      "--host",
      "127.0.0.1",
      "-w",
      "8",
      "--idle-timeout",
      "0",
      "--max-connections=5",
      "--max-connections-per-ip",
      "3",
      "--max-buffered",
      "16",
      "--drain-idle",
      "0",
      "--join",
      "--shutdown-timeout",
      "2.5",
      "--log-level",
      "debug",
      "--handler",
      "./h.ts",
      "--handler-option",
      "size=1",
      "--handler-option=mode=a=b",
      "--handler-option",
      "size=2",
      "--write-timeout",
      "0",
      "--metrics-port",
      "9100",
      "--metrics-host",
      "::",
      "--proxy-protocol",
      "--dispatch",
      "kernel",
      "--tls-cert",
      "c.pem",
      "--tls-key",
      "k.pem",
      "--tls-ca",
      "ca.pem",
      "--tls-handshake-timeout",
      "3",
      "--debug-buffers",
      "--pid-file",
      "/run/echoserver.pid",
    ]),
    {
      port: 0,
      host: "127.0.0.1",
      workers: 8,
      dispatch: "kernel",
      idleTimeout: 0,
      maxConnections: 5,
      maxConnectionsPerIp: 3,
      maxBuffered: 16 * 1024 * 1024,
      shutdownTimeout: 2.5,
      drainIdle: 0,
      join: true,
      writeTimeout: 0,
      metricsPort: 9100,
      metricsHost: "::",
      proxyProtocol: true,
      tls: { cert: "c.pem", key: "k.pem", ca: "ca.pem" },
      tlsHandshakeTimeout: 3,
      logLevel: "debug",
      logFormat: "text",
      handler: "./h.ts",
      // A module's options are its own to check (in the worker); the last of a name wins.
      handlerOptions: { size: "2", mode: "a=b" },
      handlerTimeout: 10,
      debugBuffers: true,
      pidFile: "/run/echoserver.pid",
      reusePort: true,
    },
  );
  assert.equal(serveConfig(["--port", "65535", "--workers", "1"]).port, 65535);
});

Deno.test("parseCommandLine() checks --handler-option against a built-in handler's options", () => {
  assert.throws(() => parse(["--handler-option", "novalue"]), /must be name=value, got "novalue"/);
  assert.throws(() => parse(["--handler-option", "=x"]), /must be name=value/);
  assert.throws(
    () => parse(["--handler", "hash", "--handler-option", "rounds=5"]),
    (error: unknown) =>
      error instanceof UsageError &&
      error.message === "Handler 'hash' takes no options, got '--handler-option rounds=...'",
  );
});

Deno.test("parseCommandLine() takes --tls-cert and --tls-key together, and --tls-ca only with them", () => {
  assert.throws(() => parse(["--tls-cert", "c.pem"]), /'--tls-cert' and '--tls-key' go together/);
  assert.throws(() => parse(["--tls-key", "k.pem"]), /'--tls-cert' and '--tls-key' go together/);
  assert.throws(() => parse(["--tls-ca", "ca.pem"]), /'--tls-ca' needs '--tls-cert'/);
  assert.throws(
    () => parse(["--tls-cert", "c", "--tls-key", "k", "--tls-handshake-timeout", "0"]),
    /'--tls-handshake-timeout' must be a number of seconds from 0.1/,
  );
  assert.deepEqual(serveConfig(["--tls-cert", "c", "--tls-key", "k"]).tls, {
    cert: "c",
    key: "k",
    ca: undefined,
  });
});

Deno.test("parseCommandLine() refuses an unknown --dispatch, and kernel off Linux", () => {
  assert.throws(() => parse(["--dispatch", "threads"]), /'--dispatch' must be one of main, kernel/);
  for (const os of ["darwin", "windows", "freebsd"]) {
    assert.equal(
      serveConfig(["--dispatch", "main"]).dispatch,
      "main",
    );
    assert.throws(
      () => parseCommandLine(["--dispatch", "kernel"], { cpus: 2, os }),
      (error: unknown) =>
        error instanceof UsageError && !error.showHint &&
        error.message.includes(`needs Linux`) && error.message.includes(`on ${os}`),
    );
  }
  assert.throws(
    () => parseCommandLine(["--dispatch", "kernel"], { cpus: 2, unstableNet: false }),
    (error: unknown) =>
      error instanceof UsageError && !error.showHint && error.message.includes("--unstable-net"),
  );
  const command = parseCommandLine(["--dispatch", "kernel"], { cpus: 2, os: "linux" });
  assert.equal(command.kind === "serve" && command.config.dispatch, "kernel");
});

Deno.test("parseCommandLine() recognises --help and --version", () => {
  assert.deepEqual(parse(["--help"]), { kind: "help" });
  assert.deepEqual(parse(["-h", "--port", "x"]), { kind: "help" });
  assert.deepEqual(parse(["-V"]), { kind: "version" });
  assert.deepEqual(parse(["--version"]), { kind: "version" });
});

Deno.test("parseCommandLine() falls back to one worker when the CPU count is unknown", () => {
  const command = parseCommandLine([], { cpus: 0 });
  assert.equal(command.kind === "serve" && command.config.workers, 1);
});

const BAD: [string[], RegExp][] = [
  [["--foo"], /^Unknown option '--foo'$/],
  [["-x"], /^Unknown option '-x'$/],
  [["extra"], /^Unexpected argument 'extra'/],
  [["--port"], /^Option '--port' needs a value$/],
  [["-p"], /^Option '--port' needs a value$/],
  [["--help=yes"], /^Option '--help' does not take a value$/],
  [["--port", "http"], /^'--port' must be an integer from 0 to 65535, got "http"$/],
  [["--port", "65536"], /^'--port' must be an integer from 0 to 65535, got "65536"$/],
  [["--port", "-1"], /'--port'/],
  [["--port=1.5"], /^'--port' must be an integer/],
  [["--port="], /^'--port' must be an integer from 0 to 65535, got ""$/],
  [["--workers", "0"], /^'--workers' must be an integer from 1 to 256, got "0"$/],
  [["-w", "1000"], /^'--workers' must be an integer from 1 to 256/],
  [["--max-connections", "0"], /^'--max-connections' must be an integer from 1/],
  [["--idle-timeout", "-5"], /'--idle-timeout'/],
  [["--idle-timeout", "soon"], /^'--idle-timeout' must be a number of seconds from 0/],
  [["--shutdown-timeout", "1e3"], /^'--shutdown-timeout' must be a number of seconds/],
  [["--shutdown-timeout", "99999999"], /^'--shutdown-timeout' must be a number of seconds/],
  [
    ["--log-level", "loud"],
    /^'--log-level' must be one of trace, debug, info, warning, error, fatal, got "loud"$/,
  ],
  [["--host", ""], /^'--host' must be an address/],
  [["--handler", " "], /^'--handler' must be a built-in name/],
  [["--write-timeout", "x"], /^'--write-timeout' must be a number of seconds from 0/],
  [["--metrics-port", "70000"], /^'--metrics-port' must be an integer from 0 to 65535/],
  [["--metrics-port"], /^Option '--metrics-port' needs a value$/],
  [["--metrics-host", ""], /^'--metrics-host' must be an address/],
];

for (const [args, message] of BAD) {
  Deno.test(`parseCommandLine() rejects ${JSON.stringify(args)} with one line`, () => {
    assert.throws(() => parse(args), (error: unknown) => {
      assert.ok(error instanceof UsageError, `not a UsageError: ${error}`);
      assert.match(error.message, message);
      assert.ok(!error.message.includes("\n"), "message spans lines");
      return true;
    });
  });
}

Deno.test("USAGE lists every flag with its default, and the README's flag table agrees", () => {
  const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  const rows = new Map(
    [...readme.matchAll(/^\| `([^`]+)`\s*\|\s*([^|]*?)\s*\|/gm)].map((m) => [m[1]!, m[2]!]),
  );
  for (const flag of FLAGS) {
    const spelled = `${flag.short === undefined ? "" : `-${flag.short}, `}--${flag.name}` +
      (flag.value === undefined ? "" : ` ${flag.value.replaceAll("|", "\\|")}`);
    assert.ok(USAGE.includes(`--${flag.name}`), `--help lacks --${flag.name}`);
    assert.ok(rows.has(spelled), `README's flag table lacks ${spelled}`);
    // The README may quote values as code; the words must be the table's.
    assert.equal(
      rows.get(spelled)!.replaceAll("`", ""),
      flag.shown,
      `README's default of ${spelled}`,
    );
    if (flag.shown !== "" && flag.shown !== "(per handler)") {
      assert.ok(
        USAGE.includes(`default ${flag.shown}`),
        `--help lacks the default of --${flag.name}`,
      );
    }
  }
});

Deno.test("docs/reliability.md's metrics table is the one made from METRICS", () => {
  const doc = Deno.readTextFileSync(new URL("../docs/reliability.md", import.meta.url));
  // deno fmt pads the cells: compare them trimmed.
  const cells = (row: string) => row.split("|").slice(1, -1).map((cell) => cell.trim());
  const documented = doc.split("\n").filter((line) => /^\| `(echoserver|process)_/.test(line))
    .map(cells);
  const made = metricsTable().slice(2).map(cells);
  assert.deepEqual(documented, made);
});
