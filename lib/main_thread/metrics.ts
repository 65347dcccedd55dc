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
import type { ServerSnapshot } from "./server.ts";

/**
 * Renders a snapshot in the Prometheus text exposition format (version 0.0.4).
 *
 * @param snapshot The server's counters and gauges.
 * @returns The text of a `/metrics` response.
 *
 * @example
 * ```ts ignore
 * const text = renderMetrics(server.snapshot());
 * ```
 */
export function renderMetrics(snapshot: ServerSnapshot): string {
  const { counters } = snapshot;
  const lines: string[] = [];
  const metric = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [labels: string, value: number][],
  ) => {
    lines.push(`# HELP echoserver_${name} ${help}`, `# TYPE echoserver_${name} ${type}`);
    for (const [labels, value] of samples) {
      lines.push(`echoserver_${name}${labels ? `{${labels}}` : ""} ${value}`);
    }
  };
  const perWorker = (field: typeof Counter.accepted | typeof Counter.active) =>
    Array.from(
      { length: counters.workers },
      (_, slot) => [`worker="${slot + 1}"`, counters.slot(slot).get(field)] as [string, number],
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
    "proxy_header_rejected_total",
    "counter",
    "Connections closed because their PROXY protocol header was missing or malformed.",
    [["", counters.sum(Counter.proxyRejected)]],
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
  metric("workers", "gauge", "Size of the worker pool.", [["", counters.workers]]);
  return lines.join("\n") + "\n";
}

/** Options for {@linkcode serveMetrics}. */
export interface MetricsServerOptions {
  /** Address to bind. */
  hostname: string;
  /** Port; 0 picks a free one. */
  port: number;
  /** Called per scrape for the current numbers. */
  snapshot: () => ServerSnapshot;
}

/**
 * Serves `GET /metrics` over HTTP with `Deno.serve`.
 *
 * @param options Where to listen and what to serve.
 * @returns The HTTP server; `shutdown()` it to stop.
 * @throws {Deno.errors.AddrInUse} And the other listen errors, if the address is unusable.
 */
export function serveMetrics(options: MetricsServerOptions): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: () => {},
  }, (request) => {
    const { pathname } = new URL(request.url);
    if (pathname !== "/metrics") return new Response("Not found: try /metrics\n", { status: 404 });
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    return new Response(renderMetrics(options.snapshot()), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
}
