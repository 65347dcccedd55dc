/**
 * The server's counters in Prometheus text format, and the HTTP endpoint that serves them.
 *
 * Runs on the main thread, which reads every worker slot's counters from shared memory: the
 * series are the same in every dispatch mode.
 *
 * @module
 */

import { CLOSE_REASONS } from "../sockets/close_reason.ts";
import { Counter } from "../threads/counters.ts";
import { workerNumber } from "../threads/worker_slot.ts";
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

/** One series of `/metrics`: the single place its name, type, labels and meaning live. */
export interface MetricSpec {
  /** Full name, as scraped. */
  name: string;
  type: "counter" | "gauge";
  /** Label names, if any. */
  labels: readonly string[];
  /** What it counts: the `# HELP` text, and the documentation's. */
  help: string;
}

/**
 * Every series the endpoint serves, in order. `renderMetrics` takes name, type and help from
 * here, and a test checks the list in `docs/reliability.md` against it.
 */
export const METRICS: readonly MetricSpec[] = [
  [
    "echoserver_connections_accepted_total",
    "counter",
    ["worker"],
    "Connections accepted and handed to a worker.",
  ],
  ["echoserver_connections_active", "gauge", ["worker"], "Connections open now."],
  [
    "echoserver_connections_rejected_total",
    "counter",
    [],
    "Connections closed on accept because --max-connections was reached.",
  ],
  [
    "echoserver_connections_rejected_per_ip_total",
    "counter",
    [],
    "Connections closed on accept because their address had --max-connections-per-ip open.",
  ],
  [
    "echoserver_buffered_bytes",
    "gauge",
    [],
    "Bytes held for clients now: input not yet consumed by handlers, output not yet taken by sockets.",
  ],
  [
    "echoserver_connections_reset_total",
    "counter",
    [],
    "Connections the server closed with a reset (RST): input or output was still pending.",
  ],
  [
    "echoserver_connections_closed_total",
    "counter",
    ["reason"],
    `Connections closed, by reason (${CLOSE_REASONS.join(", ")}).`,
  ],
  [
    "echoserver_accept_failures_total",
    "counter",
    [],
    "accept() calls that failed, such as on EMFILE (too many open files).",
  ],
  [
    "echoserver_accept_peer_aborts_total",
    "counter",
    [],
    "Connections the peer reset or abandoned before accept() returned them (not a fault here).",
  ],
  [
    "echoserver_proxy_header_rejected_total",
    "counter",
    [],
    "Connections closed because their PROXY protocol header was missing or malformed.",
  ],
  [
    "echoserver_tls_handshake_failures_total",
    "counter",
    [],
    "TLS handshakes that failed (not TLS, no valid client certificate, aborted) or timed out.",
  ],
  ["echoserver_received_bytes_total", "counter", [], "Bytes read from clients."],
  ["echoserver_sent_bytes_total", "counter", [], "Bytes written to clients."],
  ["echoserver_worker_restarts_total", "counter", [], "Workers that died and were replaced."],
  [
    "echoserver_reloads_total",
    "counter",
    ["result"],
    "Rolling reloads (SIGUSR2), by result: ok, or failed (the old workers kept serving).",
  ],
  ["echoserver_workers", "gauge", [], "Size of the worker pool."],
  [
    "echoserver_build_info",
    "gauge",
    ["version", "deno", "dispatch", "handler"],
    "Always 1; the labels say what is running.",
  ],
  ["process_resident_memory_bytes", "gauge", [], "Resident memory size in bytes."],
  [
    "process_start_time_seconds",
    "gauge",
    [],
    "Start time of the process since the Unix epoch, in seconds.",
  ],
  [
    "process_open_fds",
    "gauge",
    [],
    "Number of open file descriptors (only where the process may read /proc/self/fd).",
  ],
].map(([name, type, labels, help]) => ({ name, type, labels, help }) as MetricSpec);

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
  const series = (name: string, samples: [labels: string, value: number][]) => {
    const spec = METRICS.find((m) => m.name === name);
    if (spec === undefined) throw new RangeError(`No metric ${name} in METRICS`);
    lines.push(`# HELP ${name} ${spec.help}`, `# TYPE ${name} ${spec.type}`);
    for (const [labels, value] of samples) {
      lines.push(`${name}${labels ? `{${labels}}` : ""} ${value}`);
    }
  };
  const total = (name: string, value: number) => series(`echoserver_${name}`, [["", value]]);
  const perWorker = (field: typeof Counter.accepted | typeof Counter.active) =>
    Array.from(
      { length: counters.workers },
      (_, slot) =>
        [`worker="${workerNumber(slot)}"`, counters.perSlot(field, slot)] as [string, number],
    );

  series("echoserver_connections_accepted_total", perWorker(Counter.accepted));
  series("echoserver_connections_active", perWorker(Counter.active));
  total("connections_rejected_total", counters.sum(Counter.rejected));
  total("connections_rejected_per_ip_total", counters.sum(Counter.perAddressRejected));
  total("buffered_bytes", counters.sum(Counter.buffered));
  total("connections_reset_total", counters.sum(Counter.resets));
  series(
    "echoserver_connections_closed_total",
    CLOSE_REASONS.map((reason) => [`reason="${reason}"`, counters.sumClosed(reason)]),
  );
  total("accept_failures_total", counters.sum(Counter.acceptFailures));
  total("accept_peer_aborts_total", counters.sum(Counter.acceptAborted));
  total("proxy_header_rejected_total", counters.sum(Counter.proxyRejected));
  total("tls_handshake_failures_total", counters.sum(Counter.tlsHandshakeFailures));
  total("received_bytes_total", counters.sum(Counter.bytesIn));
  total("sent_bytes_total", counters.sum(Counter.bytesOut));
  total("worker_restarts_total", snapshot.workerRestarts);
  series("echoserver_reloads_total", [
    ['result="ok"', snapshot.reloads.ok],
    ['result="failed"', snapshot.reloads.failed],
  ]);
  total("workers", counters.workers);
  series("echoserver_build_info", [[
    `version="${_label(build.version)}",deno="${_label(Deno.version.deno)}",` +
    `dispatch="${_label(build.dispatch)}",handler="${_label(build.handler)}"`,
    1,
  ]]);
  // The process series every Prometheus client library exports.
  series("process_resident_memory_bytes", [["", Deno.memoryUsage().rss]]);
  series("process_start_time_seconds", [["", Math.floor(performance.timeOrigin / 1000)]]);
  const fds = _openFds();
  if (fds !== undefined) series("process_open_fds", [["", fds]]);
  return lines.join("\n") + "\n";
}

/**
 * The documentation's table of the series, made from {@linkcode METRICS}.
 *
 * @returns Markdown table rows, header first.
 */
export function metricsTable(): string[] {
  return [
    "| series | labels | meaning |",
    "| --- | --- | --- |",
    ...METRICS.map((m) =>
      `| \`${m.name}\` | ${m.labels.map((l) => `\`${l}\``).join(", ")} | ${m.help} |`
    ),
  ];
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
