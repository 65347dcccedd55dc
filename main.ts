/**
 * Entry point of the echo server: parses the command line, starts the worker pool and the
 * listener, and turns SIGINT/SIGTERM into a graceful drain.
 *
 * Runs on the main thread.
 *
 * @module
 */

import { fileURLToPath, pathToFileURL } from "node:url";
import denoJson from "./deno.json" with { type: "json" };
import { resolveHandlerSpec } from "./lib/handlers/registry.ts";
import { type Config, parseCommandLine, USAGE, UsageError } from "./lib/main_thread/config.ts";
import { renderMetrics } from "./lib/main_thread/metrics.ts";
import { type MetricsHttpServer, serveMetricsHttp } from "./lib/main_thread/metrics_server.ts";
import { ListenError } from "./lib/main_thread/listen.ts";
import type { Server, ServerConfig } from "./lib/main_thread/server.ts";
import { KernelDispatch } from "./lib/dispatch/kernel/main_thread/kernel_dispatch.ts";
import { MainDispatch } from "./lib/dispatch/main/main_thread/main_dispatch.ts";
import { startNodeWorker } from "./lib/main_thread/node_worker.ts";
import { checkPidFile, writePidFile } from "./lib/main_thread/pid_file.ts";
import { type LoadedTls, loadTls, TlsFileError } from "./lib/main_thread/tls_files.ts";
import {
  ReloadError,
  type SpawnOptions,
  type WorkerFactory,
  type WorkerHandle,
  WorkerStartError,
} from "./lib/main_thread/worker_pool.ts";
import { errorReason, formatAddr } from "./lib/sockets/address.ts";
import { getLog, printError, printOut, setupLogging } from "./lib/log.ts";

/** Exit code for a bad command line (or a handler that cannot be loaded). */
const EXIT_USAGE = 2;
/** Exit code when the server cannot run: address unusable, a permission missing. */
const EXIT_CANNOT_RUN = 1;
/** Exit code when the drain's deadline cut connections that had input or output pending. */
const EXIT_CUT = 3;
/**
 * A second SIGINT/SIGTERM this soon after the first is the same request delivered twice, not a
 * person insisting: a deliberate second Ctrl-C takes longer than this.
 */
const SIGNAL_REPEAT_WINDOW_MS = 250;

const WORKER_MODULE = new URL("./workers/connection_worker.ts", import.meta.url);

function spawnConnectionWorker(name: string, options: SpawnOptions): WorkerHandle {
  // A young-generation cap is only honoured for node:worker_threads workers (kernel dispatch).
  if (options.youngGenerationMb !== undefined) {
    return startNodeWorker(WORKER_MODULE, name, options.youngGenerationMb);
  }
  return new Worker(WORKER_MODULE, { type: "module", name });
}

/** Listens for `signal` where the platform has it (Windows has only SIGINT of these). */
function onSignalIfAny(signal: Deno.Signal, listener: () => void): void {
  try {
    Deno.addSignalListener(signal, listener);
  } catch {
    // This platform cannot deliver it.
  }
}

/** The server for the configured dispatch mode. */
function createServer(config: ServerConfig, spawn: WorkerFactory): Server {
  return config.dispatch === "kernel"
    ? new KernelDispatch(config, spawn)
    : new MainDispatch(config, spawn);
}

function parse(): Config {
  try {
    const command = parseCommandLine(Deno.args, {
      cpus: navigator.hardwareConcurrency,
      os: Deno.build.os,
      // Deno exposes its unstable network APIs only under --unstable-net.
      unstableNet: "listenDatagram" in Deno,
    });
    switch (command.kind) {
      case "help":
        printOut(USAGE);
        Deno.exit(0);
        break;
      case "version":
        printOut(`echoserver ${denoJson.version}`);
        Deno.exit(0);
        break;
      case "serve":
        return command.config;
      default: {
        const _never: never = command;
        throw new TypeError(`Unknown command: ${JSON.stringify(_never)}`);
      }
    }
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    printError(`echoserver: ${error.message}`);
    if (error.showHint) printError("Try 'echoserver --help' for the list of options.");
    Deno.exit(EXIT_USAGE);
  }
}

async function main(): Promise<void> {
  const parsed = parse();
  setupLogging(parsed.logLevel, "main", parsed.logFormat);
  const log = getLog();
  const config = {
    ...parsed,
    handler: resolveHandlerSpec(parsed.handler, [
      () => pathToFileURL(Deno.cwd() + "/"),
      () => new URL("./", import.meta.url), // handlers embedded in a compiled binary
    ]),
  };
  // Without read access to a module it must load, Deno prints its own "Uncaught (in worker)"
  // lines from every worker: say it once, in one line, before starting any.
  const modules = [WORKER_MODULE];
  if (config.handler.startsWith("file:")) modules.push(new URL(config.handler));
  const unreadable = modules.find((url) =>
    url.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: url }).state !== "granted"
  );
  if (unreadable !== undefined) {
    log.error(
      "Cannot start: no permission to read {path}; run Deno with --allow-read (deno task serve " +
        "and the compiled binary have it)",
      { path: fileURLToPath(unreadable) },
    );
    Deno.exit(EXIT_CANNOT_RUN);
  }
  /** Runs a step whose failure (one line) means the server cannot run. */
  const orExit = (step: () => void) => {
    try {
      step();
    } catch (error) {
      log.error((error as Error).message);
      Deno.exit(EXIT_CANNOT_RUN);
    }
  };
  const pidFile = config.pidFile;
  if (pidFile !== undefined) orExit(() => checkPidFile(pidFile));
  let tls: LoadedTls | undefined;
  if (parsed.tls !== undefined) {
    try {
      tls = loadTls(parsed.tls);
    } catch (error) {
      if (!(error instanceof TlsFileError)) throw error;
      log.error(error.message);
      Deno.exit(EXIT_USAGE);
    }
  }
  const server = createServer({ ...config, tls: tls?.settings }, spawnConnectionWorker);
  /** Set once the server serves: the signals below act on it from then on. */
  let started = false;
  let metrics: MetricsHttpServer | undefined;

  // Every signal is handled before the port is bound: one that came while the workers start
  // would otherwise end the process with no line said.
  let signalledAt: number | undefined;
  const onSignal = (signal: Deno.Signal) => {
    if (!started) {
      log.info("{signal} received during start-up: exiting", { signal });
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    }
    if (signalledAt !== undefined) {
      // One Ctrl-C under `deno task` arrives twice within a millisecond (the terminal signals
      // the whole foreground group, and the task runner forwards it again): that is one request.
      if (performance.now() - signalledAt < SIGNAL_REPEAT_WINDOW_MS) return;
      log.warning("{signal} again: exiting now", { signal });
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    }
    signalledAt = performance.now();
    log.info("{signal} received: stopping (send it again to exit at once)", { signal });
    server.shutdown(config.shutdownTimeout).then(async ({ finished, idle, cut }) => {
      await metrics?.shutdown();
      if (cut > 0) {
        log.warning(
          "Stopped: {cut} connection(s) cut at --shutdown-timeout with input or output pending " +
            "(reset), {finished} finished, {idle} idle closed",
          { cut, finished, idle },
        );
        Deno.exit(EXIT_CUT);
      }
      log.info("Stopped: {finished} connection(s) finished, {idle} idle closed, none cut", {
        finished,
        idle,
      });
      Deno.exit(0);
    });
  };
  let reloads = Promise.resolve();
  /** Reloads asked for and not yet finished, the running one included. */
  let pending = 0;
  const reload = async () => {
    try {
      await reloadOnce();
    } finally {
      pending--;
    }
  };
  const reloadOnce = async () => {
    if (!started) {
      log.info("No reload: the server is still starting (it loads the handler as it starts)");
      return;
    }
    if (signalledAt !== undefined) {
      log.info("No reload: the server is stopping");
      return;
    }
    log.info("Reloading the workers (handler {handler} loaded anew)", {
      handler: parsed.handler,
    });
    let outcome;
    try {
      outcome = await server.reload();
    } catch (error) {
      if (!(error instanceof ReloadError)) throw error;
      log.error("Reload failed; the workers that were serving still are: {reason}", {
        reason: error.message,
      });
      for (const line of error.detail.split("\n").filter((l) => l.trim() !== "")) {
        log.debug("  {line}", { line });
      }
      return;
    }
    log.info(
      "Reloaded: {workers} fresh workers take new connections; {finishing} connection(s) " +
        "finish on the old ones (up to {timeout} s)",
      { workers: config.workers, finishing: outcome.finishing, timeout: config.shutdownTimeout },
    );
    const { finished, idle, cut } = await outcome.retired;
    const done = "Old workers ended: {finished} connection(s) finished, {idle} idle closed, " +
      "{cut} cut";
    if (cut > 0) log.warning(done + " at --shutdown-timeout (reset)", { finished, idle, cut });
    else log.info(done, { finished, idle, cut });
  };
  // A reload waits for the previous one's old workers to end: run them one after another.
  onSignalIfAny("SIGUSR2", () => {
    log.info(
      pending++ === 0
        ? "SIGUSR2 received"
        : "SIGUSR2 received: it runs once the reload before it has finished",
    );
    reloads = reloads.then(reload);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    onSignalIfAny(signal, () => onSignal(signal));
  }
  // A closed terminal or SSH session sends SIGHUP, whose default is to end the process at
  // once with no drain. A server keeps running; with TLS, SIGHUP is the certificate reload.
  onSignalIfAny("SIGHUP", async () => {
    if (!started) {
      log.info("SIGHUP received during start-up: nothing to reload yet, still starting");
      return;
    }
    if (parsed.tls === undefined) {
      log.info("SIGHUP received: nothing to reload (no TLS), still serving");
      return;
    }
    try {
      const reloaded = loadTls(parsed.tls);
      // Said once every thread that accepts connections uses it: a client that connects after
      // this line gets the new certificate.
      await server.reloadTls(reloaded.settings);
      log.info(
        "SIGHUP: TLS certificate reloaded ({subject}, valid until {validTo}) for new connections",
        {
          subject: reloaded.subject,
          validTo: reloaded.validTo,
        },
      );
    } catch (error) {
      if (!(error instanceof TlsFileError)) throw error;
      log.error("SIGHUP: TLS reload failed, still serving the previous certificate: {reason}", {
        reason: error.message,
      });
    }
  });
  // Their default is to end the process at once, with no drain: a stray one (a log rotation
  // script's SIGUSR1, nginx's "reopen logs"; a terminal's Ctrl-\; an alarm) must not cut every
  // connection. Logs go to stdout and stderr, so there is nothing to reopen.
  for (const signal of ["SIGUSR1", "SIGQUIT", "SIGALRM"] as const) {
    onSignalIfAny(signal, () => {
      log.info("{signal} received: ignored, still serving (SIGTERM or SIGINT stops){note}", {
        signal,
        // Deno 2.9.2+ does this itself, whatever the program does (as Node does).
        note: signal === "SIGUSR1" ? "; Deno opens its inspector on 127.0.0.1:9229" : "",
      });
    });
  }
  let addr: Deno.NetAddr;
  try {
    addr = await server.start();
  } catch (error) {
    if (error instanceof ListenError) {
      log.error(error.message);
      Deno.exit(EXIT_CANNOT_RUN);
    }
    if (error instanceof WorkerStartError) {
      log.error(error.message);
      for (const line of error.detail.split("\n").filter((l) => l.trim() !== "")) {
        log.debug("  {line}", { line });
      }
      Deno.exit(EXIT_USAGE);
    }
    throw error;
  }
  started = true;

  if (config.metricsPort !== undefined) {
    try {
      const build = {
        version: denoJson.version,
        dispatch: config.dispatch,
        handler: parsed.handler,
      };
      metrics = serveMetricsHttp({
        hostname: config.metricsHost,
        port: config.metricsPort,
        render: () => renderMetrics(server.snapshot(), build),
        log,
      });
    } catch (error) {
      log.error("Cannot serve metrics on {address}: {reason}", {
        address: formatAddr(config.metricsHost, config.metricsPort),
        reason: errorReason(error),
      });
      Deno.exit(EXIT_CANNOT_RUN);
    }
    log.info("Metrics on http://{address}/metrics", {
      address: formatAddr(metrics.addr.hostname, metrics.addr.port),
    });
  }

  if (tls !== undefined) {
    log.info("TLS certificate {subject}, valid until {validTo}{mutual}", {
      subject: tls.subject,
      validTo: tls.validTo,
      mutual: tls.settings.ca === undefined ? "" : "; client certificates required (mutual TLS)",
    });
  }

  if (pidFile !== undefined) orExit(() => writePidFile(pidFile));

  log.info(
    "echoserver {version} listening on {address} with {workers} workers ({handler}, {dispatch} dispatch{tls})",
    {
      version: denoJson.version,
      address: formatAddr(addr.hostname, addr.port),
      workers: config.workers,
      handler: parsed.handler,
      dispatch: config.dispatch,
      tls: tls === undefined ? "" : ", TLS",
    },
  );
}

if (import.meta.main) await main();
