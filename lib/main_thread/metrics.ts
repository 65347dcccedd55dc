/**
 * The server's counters in Prometheus text format, and the HTTP endpoint that serves them.
 *
 * Runs on the main thread, which reads every worker slot's counters from shared memory: the
 * series are the same in every dispatch mode.
 *
 * @module
 */

import { CLOSE_REASONS } from "../shared/close_reason.ts";
import { Counter } from "../shared/counters.ts";
import { workerNumber } from "../shared/worker_slot.ts";
import type { ServerSnapshot } from "./server.ts";

/** What `echoserver_build_info` says of the running server. */
export interface BuildInfo {
  /** The server's version (deno.json). */
  version: string;
  /** The dispatch mode. */
  dispatch: string;
  /** The handler, as given on the command line. */
  handler: string;
}

/**
 * Renders a snapshot in the Prometheus text exposition format (version 0.0.4).
 *
 * @param snapshot The server's counters and gauges.
 * @param build What the build-info series says.
 * @returns The text of a `/metrics` response.
 *
 * @example
 * ```ts ignore
 * const text = renderMetrics(server.snapshot(), { version, dispatch, handler });
 * ```
 */
export function renderMetrics(snapshot: ServerSnapshot, build: BuildInfo): string {
  const { counters } = snapshot;
  const lines: string[] = [];
  const series = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [labels: string, value: number][],
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      lines.push(`${name}${labels ? `{${labels}}` : ""} ${value}`);
    }
  };
  const metric = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [labels: string, value: number][],
  ) => series(`echoserver_${name}`, type, help, samples);
  const perWorker = (field: typeof Counter.accepted | typeof Counter.active) =>
    Array.from(
      { length: counters.workers },
      (_, slot) =>
        [`worker="${workerNumber(slot)}"`, counters.perSlot(field, slot)] as [string, number],
    );

  metric(
    "connections_accepted_total",
    "counter",
    "Connections accepted and handed to a worker.",
    perWorker(Counter.accepted),
  );
  metric(
    "connections_active",
    "gauge",
    "Connections open now.",
    perWorker(Counter.active),
  );
  metric(
    "connections_rejected_total",
    "counter",
    "Connections closed on accept because --max-connections was reached.",
    [["", counters.sum(Counter.rejected)]],
  );
  metric(
    "connections_rejected_per_ip_total",
    "counter",
    "Connections closed on accept because their address had --max-connections-per-ip open.",
    [["", counters.sum(Counter.perAddressRejected)]],
  );
  metric(
    "buffered_bytes",
    "gauge",
    "Bytes held for clients now: input not yet consumed by handlers, output not yet taken by sockets.",
    [["", counters.sum(Counter.buffered)]],
  );
  metric(
    "connections_reset_total",
    "counter",
    "Connections the server closed with a reset (RST): input or output was still pending.",
    [["", counters.sum(Counter.resets)]],
  );
  metric(
    "connections_closed_total",
    "counter",
    "Connections closed, by reason.",
    CLOSE_REASONS.map((reason) => [`reason="${reason}"`, counters.sumClosed(reason)]),
  );
  metric(
    "accept_failures_total",
    "counter",
    "accept() calls that failed, such as on EMFILE (too many open files).",
    [["", counters.sum(Counter.acceptFailures)]],
  );
  metric(
    "accept_peer_aborts_total",
    "counter",
    "Connections the peer reset or abandoned before accept() returned them (not a fault here).",
    [["", counters.sum(Counter.acceptAborted)]],
  );
  metric(
    "proxy_header_rejected_total",
    "counter",
    "Connections closed because their PROXY protocol header was missing or malformed.",
    [["", counters.sum(Counter.proxyRejected)]],
  );
  metric(
    "tls_handshake_failures_total",
    "counter",
    "TLS handshakes that failed (not TLS, no valid client certificate, aborted) or timed out.",
    [["", counters.sum(Counter.tlsHandshakeFailures)]],
  );
  metric("received_bytes_total", "counter", "Bytes read from clients.", [[
    "",
    counters.sum(Counter.bytesIn),
  ]]);
  metric("sent_bytes_total", "counter", "Bytes written to clients.", [[
    "",
    counters.sum(Counter.bytesOut),
  ]]);
  metric(
    "worker_restarts_total",
    "counter",
    "Workers that died and were replaced.",
    [["", snapshot.workerRestarts]],
  );
  metric(
    "reloads_total",
    "counter",
    "Rolling reloads (SIGUSR2), by result: ok, or failed (the old workers kept serving).",
    [['result="ok"', snapshot.reloads.ok], ['result="failed"', snapshot.reloads.failed]],
  );
  metric("workers", "gauge", "Size of the worker pool.", [["", counters.workers]]);
  metric("build_info", "gauge", "Always 1; the labels say what is running.", [[
    `version="${_label(build.version)}",deno="${_label(Deno.version.deno)}",` +
    `dispatch="${_label(build.dispatch)}",handler="${_label(build.handler)}"`,
    1,
  ]]);
  // The process series every Prometheus client library exports.
  series("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [[
    "",
    Deno.memoryUsage().rss,
  ]]);
  series(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since the Unix epoch, in seconds.",
    [["", Math.floor(performance.timeOrigin / 1000)]],
  );
  const fds = _openFds();
  if (fds !== undefined) {
    series("process_open_fds", "gauge", "Number of open file descriptors.", [["", fds]]);
  }
  return lines.join("\n") + "\n";
}

/** A label value, escaped as the exposition format wants (backslash, quote, newline). */
function _label(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/**
 * Open descriptors, from /proc/self/fd on Linux. Deno 2.9.6 lets a program read that folder only
 * with --allow-all, which the server does not ask for: the series is then left out.
 */
function _openFds(): number | undefined {
  try {
    let count = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) count++;
    return count;
  } catch {
    return undefined;
  }
}
