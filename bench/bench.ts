/**
 * `deno task bench`: measures the server against the plainest Deno server (one isolate, a
 * read/write loop: `baseline`), scenario by scenario, alternating them so that drift hits all
 * alike, and prints a table per scenario with the CPU each thread class spends per round trip,
 * that CPU as a multiple of the baseline's, and the throughput ceiling it implies on a machine
 * with more cores. The servers: `kernel-1w` (kernel dispatch, one worker, the built-in
 * byte-level echo), `kernel-1w-streams` (the same with a Web Streams echo written as a user
 * would: `readable.pipeTo(writable)`), `kernel` and `main` (`--workers` workers), `baseline`;
 * with `--peers`, the field too: Node's `net`, a C epoll server and Bun's `Bun.listen` (when a
 * `bun` binary is found). Results also go to `bench/results/latest.json`, `latest.md` and
 * `latest.svg` (a chart).
 *
 * Usage: deno task bench [--quick] [--scenarios S1,S3] [--duration 5] [--warmup 2]
 *        [--rounds 2] [--clients 2] [--workers 2] [--servers kernel-1w,main,baseline]
 *        [--peers] [--bun path] [--client c|deno] [--cores 16] [--external host:port]
 *
 * Runs on the main thread of the benchmark process; the load comes from the C client
 * (`bench/c/echo_load.c`, built here with the machine's C compiler) for echo scenarios, and
 * from `bench/load_worker.ts` threads otherwise (and with `--client deno`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { type Certificates, haveOpenssl, makeCertificates } from "../launcher/certificates.ts";
import { findMemcached, startMemcached } from "../launcher/memcached.ts";
import { serverCommand, startProcess } from "../launcher/server_process.ts";
import { buildC, runCClient } from "./c_tools.ts";
import { memcslapTable } from "./memcslap.ts";
import { type ChartBar, renderChart } from "./chart.ts";
import type { LoadJob, LoadReport } from "./load_worker.ts";
import { peakRssMb, type ThreadCpu, threadCpu } from "./proc.ts";
import { readProc } from "../launcher/probes.ts";

interface Scenario {
  name: string;
  connections: number;
  size: number;
  /**
   * `hash`: the computing handler, on 1 and 2 workers instead of ours vs baseline.
   * `memcache`: the memcache handler in both dispatch modes vs a real memcached.
   */
  mode: "echo" | "hash" | "memcache";
  /** Over TLS: every server with a certificate, the load generator verifying it. */
  tls?: boolean;
  /** One connection is a bystander (64 B every 10 ms); the latency columns are its own. */
  probe?: boolean;
}

/**
 * SHA-256 rounds per line in S5: at about 4 us a round (`node:crypto`, measured here) about
 * 0.4 ms of work per line, so the workers dominate.
 */
const S5_ROUNDS = 100;

const SCENARIOS: Scenario[] = [
  { name: "S1", connections: 50, size: 64, mode: "echo" },
  { name: "S2", connections: 1000, size: 64, mode: "echo" },
  { name: "S3", connections: 8, size: 64 * 1024, mode: "echo" },
  { name: "S4", connections: 10_000, size: 16, mode: "echo" },
  { name: "S5", connections: 50, size: 64, mode: "hash" },
  { name: "S6", connections: 50, size: 100, mode: "memcache" },
  { name: "S1T", connections: 50, size: 64, mode: "echo", tls: true },
  { name: "S3B", connections: 100, size: 64 * 1024, mode: "echo", probe: true },
];

/** Debian's memcached, when installed: S6's reference, started with `--workers` threads. */
const MEMCACHED = findMemcached();

interface Result {
  scenario: string;
  server: string;
  round: number;
  connections: number;
  size: number;
  seconds: number;
  roundTrips: number;
  roundTripsPerSec: number;
  mbPerSec: number;
  p50: number;
  p99: number;
  p999: number;
  errors: number;
  mismatches: number;
  connectFailures: number;
  peakRssMb: number | null;
  serverCpuPct: number | null;
  /** Server CPU per round trip in microseconds, by thread class (measured window). */
  cpuUs: ThreadCpu | null;
  clientCpuPct: number;
  firstError: string | undefined;
}

/** The servers a run compares by default (the issue's four shapes of echo, and ours at scale). */
const SERVERS = ["kernel-1w", "kernel-1w-streams", "kernel", "main", "baseline"];
/** The field, with `--peers`: each where it can run here. */
const PEERS = ["node", "c-epoll", "bun"];
/** The Web Streams echo the `kernel-1w-streams` server runs. */
const STREAMS_ECHO = fileURLToPath(new URL("handlers/streams_echo.ts", import.meta.url));

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();

function say(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

function usage(message: string): never {
  say(`bench: ${message}`);
  say(
    "Usage: deno task bench [--quick] [--scenarios S1,S2,S3,S4,S5,S6,S1T,S3B] [--duration s]",
  );
  say("       [--warmup s]");
  say(`       [--rounds n] [--clients n] [--workers n] [--servers ${SERVERS.join(",")}]`);
  say("       [--peers] [--bun path] [--client c|deno] [--cores n] [--external host:port]");
  Deno.exit(2);
}

function parse() {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        quick: { type: "boolean" },
        scenarios: { type: "string" },
        duration: { type: "string" },
        warmup: { type: "string" },
        rounds: { type: "string" },
        clients: { type: "string" },
        workers: { type: "string" },
        servers: { type: "string" },
        peers: { type: "boolean" },
        bun: { type: "string" },
        client: { type: "string" },
        cores: { type: "string" },
        external: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    usage((error as Error).message.split("\n")[0]!);
  }
  if (values.help) usage("measures round trips/s, MB/s and latency of echo servers");
  const quick = values.quick ?? false;
  const number = (flag: string, raw: string | undefined, fallback: number) => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value <= 0) usage(`'--${flag}' must be a positive number`);
    return value;
  };
  const names = (values.scenarios ?? "S1,S2,S3,S4,S5,S6,S1T,S3B").split(",").map((s) =>
    s.trim().toUpperCase()
  );
  const scenarios = names.map((name) =>
    SCENARIOS.find((s) => s.name === name) ?? usage(`unknown scenario '${name}'`)
  );
  const servers = (values.servers ?? SERVERS.join(",")).split(",").map((s) => s.trim());
  if (values.peers) servers.push(...PEERS.filter((p) => !servers.includes(p)));
  for (const s of servers) {
    if (!SERVERS.includes(s) && !PEERS.includes(s)) usage(`unknown server '${s}'`);
  }
  const client = values.client ?? "c";
  if (client !== "c" && client !== "deno") usage("'--client' must be c or deno");
  if (values.external !== undefined && !/^\[?[\w.:-]+\]?:\d+$/.test(values.external)) {
    usage("'--external' must be host:port");
  }
  return {
    quick,
    scenarios,
    servers,
    external: values.external,
    client,
    bun: values.bun,
    duration: number("duration", values.duration, quick ? 1 : 5),
    warmup: number("warmup", values.warmup, quick ? 0.3 : 2),
    rounds: Math.round(number("rounds", values.rounds, quick ? 1 : 2)),
    clients: Math.round(number("clients", values.clients, 2)),
    workers: Math.round(number("workers", values.workers, 2)),
    cores: Math.round(number("cores", values.cores, 16)),
  };
}

type Options = ReturnType<typeof parse>;

interface RunningServer {
  hostname: string;
  port: number;
  pid: number | null;
  stop(): Promise<void>;
}

/** The servers a scenario compares. */
function serversFor(scenario: Scenario, servers: string[]): string[] {
  if (scenario.mode === "hash") return ["hash-1w", "hash-2w"];
  if (scenario.mode === "memcache") {
    const others = servers.filter((s) => s === "external"); // any memcached-compatible server
    return ["memcache-main", "memcache-kernel", ...(MEMCACHED ? ["memcached"] : []), ...others];
  }
  // The peers speak no TLS.
  return scenario.tls ? servers.filter((s) => !PEERS.includes(s)) : servers;
}

/** The server each scenario's ratios are taken against. */
function referenceFor(scenario: Scenario): string {
  return scenario.mode === "hash"
    ? "hash-1w"
    : scenario.mode === "memcache"
    ? "memcached"
    : "baseline";
}

/** The certificates of the TLS scenarios, made once per run (see `main`). */
let certificates: Certificates | undefined;
/** How to start each peer that can run here (see `findPeers`). */
const peerCommands = new Map<string, { program: string; args: string[] }>();
/** The C client's path, when it was built (see `main`). */
let cClient: string | undefined;

async function startServer(
  kind: string,
  options: Options,
  scenario: Scenario,
): Promise<RunningServer> {
  if (kind === "external") {
    const [, host, port] = /^\[?(.+?)\]?:(\d+)$/.exec(options.external!)!;
    return { hostname: host!, port: Number(port), pid: null, stop: () => Promise.resolve() };
  }
  if (kind === "memcached") {
    const memcached = await startMemcached(MEMCACHED!, options.workers);
    return {
      hostname: "127.0.0.1",
      port: memcached.port,
      pid: memcached.process.pid,
      stop: memcached.stop,
    };
  }
  const tls = scenario.tls ? certificates! : undefined;
  const tlsFlags = tls === undefined
    ? []
    : ["--tls-cert", tls.serverA.cert, "--tls-key", tls.serverA.key];
  const ours = (workers: number, ...extra: string[]) =>
    serverCommand(["--workers", String(workers), ...tlsFlags, ...extra]);
  const memcache = /^memcache-(main|kernel)$/.exec(kind)?.[1];
  let command: { program: string; args: string[] };
  if (memcache !== undefined) {
    command = ours(options.workers, "--dispatch", memcache, "--handler", "memcache");
  } else {
    switch (kind) {
      case "kernel-1w":
        command = ours(1, "--dispatch", "kernel");
        break;
      case "kernel-1w-streams":
        command = ours(1, "--dispatch", "kernel", "--handler", STREAMS_ECHO);
        break;
      case "main":
      case "kernel":
        command = ours(options.workers, "--dispatch", kind);
        break;
      case "hash-1w":
        command = ours(1, "--handler", "hash");
        break;
      case "hash-2w":
        command = ours(2, "--handler", "hash");
        break;
      case "baseline":
        command = {
          program: Deno.execPath(),
          args: [
            "run",
            "--allow-net",
            "--allow-read",
            fileURLToPath(new URL("bench/baseline_server.ts", ROOT)),
            "0",
            ...(tls === undefined ? [] : [tls.serverA.cert, tls.serverA.key]),
          ],
        };
        break;
      default: {
        const peer = peerCommands.get(kind);
        if (peer === undefined) throw new Error(`no command for server '${kind}'`);
        command = peer;
      }
    }
  }
  const { program, args } = command;
  const server = await startProcess(program, args);
  return {
    hostname: "127.0.0.1",
    port: server.port,
    pid: server.process.pid,
    async stop() {
      await server.stop("SIGKILL");
    },
  };
}

function percentile(sorted: Float32Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

async function measure(
  scenario: Scenario,
  kind: string,
  round: number,
  options: Options,
): Promise<Result> {
  if (cClient !== undefined && scenario.mode === "echo" && !scenario.tls) {
    return await measureWithC(cClient, scenario, kind, round, options);
  }
  const server = await startServer(kind, options, scenario);
  const clients = Math.min(options.clients, scenario.connections);
  const workers = Array.from(
    { length: clients },
    () => new Worker(new URL("./load_worker.ts", import.meta.url), { type: "module" }),
  );
  const progress = new Array(clients).fill(0);
  const label = `${scenario.name} ${kind}${options.rounds > 1 ? ` (round ${round + 1})` : ""}`;
  const ticker = setInterval(() => {
    const total = progress.reduce((a, b) => a + b, 0);
    say(`  ${label}: ${total.toLocaleString("en-US")} round trips so far`);
  }, 1000);
  const cpuClientStart = process.cpuUsage();
  const cpuServerStart: { cpu?: ThreadCpu; at?: number } = {};
  const measureStart = setTimeout(async () => {
    const cpu = server.pid === null ? null : await threadCpu(server.pid);
    if (cpu !== null) Object.assign(cpuServerStart, { cpu, at: performance.now() });
  }, options.warmup * 1000);
  const started = performance.now();
  const reports = await Promise.all(
    workers.map((worker, i) =>
      new Promise<Extract<LoadReport, { type: "done" }>>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<LoadReport>) => {
          if (event.data.type === "progress") progress[i] = event.data.roundTrips;
          else resolve(event.data);
        };
        worker.onerror = (event) => {
          event.preventDefault();
          reject(new Error(`load worker failed: ${event.message}`));
        };
        const share = Math.floor(scenario.connections / clients) +
          (i < scenario.connections % clients ? 1 : 0);
        const job: LoadJob = {
          type: "run",
          mode: scenario.mode,
          rounds: S5_ROUNDS,
          hostname: server.hostname,
          port: server.port,
          connections: share,
          size: scenario.size,
          warmupMs: options.warmup * 1000,
          durationMs: options.duration * 1000,
          seed: i + 1,
          ...(scenario.tls ? { tlsCa: Deno.readTextFileSync(certificates!.ca) } : {}),
          probe: scenario.probe === true && i === 0,
        };
        worker.postMessage(job);
      })
    ),
  );
  const wall = (performance.now() - started) / 1000;
  clearInterval(ticker);
  clearTimeout(measureStart);
  const cpuServerEnd = server.pid === null ? null : await threadCpu(server.pid);
  const cpuServerEndAt = performance.now();
  const cpuClient = process.cpuUsage(cpuClientStart);
  const rss = server.pid === null ? null : await peakRssMb(server.pid);
  await server.stop();
  for (const worker of workers) worker.terminate();

  const roundTrips = reports.reduce((a, r) => a + r.roundTrips, 0);
  const latencies = new Float32Array(reports.reduce((a, r) => a + r.latencies.length, 0));
  let offset = 0;
  for (const r of reports) {
    latencies.set(r.latencies, offset);
    offset += r.latencies.length;
  }
  latencies.sort();
  const seconds = options.duration;
  const start = cpuServerStart.cpu;
  const used = start !== undefined && cpuServerEnd !== null
    ? {
      main: cpuServerEnd.main - start.main,
      workers: cpuServerEnd.workers - start.workers,
      other: cpuServerEnd.other - start.other,
    }
    : null;
  const perTrip = (s: number) => roundTrips > 0 ? (s / roundTrips) * 1e6 : NaN;
  return {
    scenario: scenario.name,
    server: kind,
    round,
    connections: scenario.connections,
    size: scenario.size,
    seconds,
    roundTrips,
    roundTripsPerSec: roundTrips / seconds,
    mbPerSec: (roundTrips * scenario.size) / seconds / 1e6,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    p999: percentile(latencies, 0.999),
    errors: reports.reduce((a, r) => a + r.errors, 0),
    mismatches: reports.reduce((a, r) => a + r.mismatches, 0),
    connectFailures: reports.reduce((a, r) => a + r.connectFailures, 0),
    peakRssMb: rss,
    // Sampled from warm-up end to after the last round trip, by the wall clock between samples.
    serverCpuPct: used !== null
      ? ((used.main + used.workers + used.other) / ((cpuServerEndAt - cpuServerStart.at!) / 1000)) *
        100
      : null,
    cpuUs: used === null
      ? null
      : { main: perTrip(used.main), workers: perTrip(used.workers), other: perTrip(used.other) },
    clientCpuPct: ((cpuClient.user + cpuClient.system) / 1e6 / wall) * 100,
    firstError: reports.find((r) => r.firstError !== undefined)?.firstError,
  };
}

/** A measurement driven by the C client, which marks its measured window itself. */
async function measureWithC(
  binary: string,
  scenario: Scenario,
  kind: string,
  round: number,
  options: Options,
): Promise<Result> {
  const server = await startServer(kind, options, scenario);
  let start: { cpu: ThreadCpu; at: number } | undefined;
  let end: { cpu: ThreadCpu; at: number } | undefined;
  const sample = async () => {
    const cpu = server.pid === null ? null : await threadCpu(server.pid);
    return cpu === null ? undefined : { cpu, at: performance.now() };
  };
  let report;
  let rss: number | null = null;
  try {
    report = await runCClient(binary, {
      hostname: server.hostname,
      port: server.port,
      connections: scenario.connections,
      size: scenario.size,
      warmupS: options.warmup,
      durationS: options.duration,
      probe: scenario.probe === true,
    }, {
      start: async () => void (start = await sample()),
      stop: async () => void (end = await sample()),
    });
  } finally {
    rss = server.pid === null ? null : await peakRssMb(server.pid);
    await server.stop();
  }
  const seconds = options.duration;
  const used = start !== undefined && end !== undefined
    ? {
      main: end.cpu.main - start.cpu.main,
      workers: end.cpu.workers - start.cpu.workers,
      other: end.cpu.other - start.cpu.other,
    }
    : null;
  const perTrip = (s: number) => report.roundTrips > 0 ? (s / report.roundTrips) * 1e6 : NaN;
  const window = start !== undefined && end !== undefined ? (end.at - start.at) / 1000 : seconds;
  return {
    scenario: scenario.name,
    server: kind,
    round,
    connections: scenario.connections,
    size: scenario.size,
    seconds,
    roundTrips: report.roundTrips,
    roundTripsPerSec: report.roundTrips / seconds,
    mbPerSec: (report.roundTrips * scenario.size) / seconds / 1e6,
    p50: report.p50,
    p99: report.p99,
    p999: report.p999,
    errors: report.errors,
    mismatches: report.mismatches,
    connectFailures: report.connectFailures,
    peakRssMb: rss,
    serverCpuPct: used === null ? null : ((used.main + used.workers + used.other) / window) * 100,
    cpuUs: used === null
      ? null
      : { main: perTrip(used.main), workers: perTrip(used.workers), other: perTrip(used.other) },
    clientCpuPct: (report.clientCpuSeconds / window) * 100,
    firstError: report.firstError ?? undefined,
  };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function summarize(results: Result[], scenario: Scenario, servers: string[]) {
  return servers.map((server) => {
    const runs = results.filter((r) => r.scenario === scenario.name && r.server === server);
    const nullable = (pick: (r: Result) => number | null) => {
      const values = runs.map(pick).filter((v): v is number => v !== null);
      return values.length === 0 ? null : values;
    };
    const rss = nullable((r) => r.peakRssMb);
    const cpu = nullable((r) => r.serverCpuPct);
    const cpuUs = runs.every((r) => r.cpuUs !== null)
      ? {
        main: mean(runs.map((r) => r.cpuUs!.main)),
        workers: mean(runs.map((r) => r.cpuUs!.workers)),
        other: mean(runs.map((r) => r.cpuUs!.other)),
      }
      : null;
    return {
      server,
      roundTripsPerSec: mean(runs.map((r) => r.roundTripsPerSec)),
      mbPerSec: mean(runs.map((r) => r.mbPerSec)),
      p50: mean(runs.map((r) => r.p50)),
      p99: mean(runs.map((r) => r.p99)),
      p999: mean(runs.map((r) => r.p999)),
      errors: runs.reduce((a, r) => a + r.errors + r.connectFailures, 0),
      mismatches: runs.reduce((a, r) => a + r.mismatches, 0),
      peakRssMb: rss === null ? null : Math.max(...rss),
      serverCpuPct: cpu === null ? null : mean(cpu),
      cpuUs,
      clientCpuPct: mean(runs.map((r) => r.clientCpuPct)),
    };
  });
}

/** All the server's CPU per round trip, or null where it was not read. */
function totalCpu(cpuUs: ThreadCpu | null): number | null {
  return cpuUs === null ? null : cpuUs.main + cpuUs.workers + cpuUs.other;
}

/**
 * Round trips per second that `cores` cores allow by the CPU figures: every round trip passes
 * through the main thread once (in `main` dispatch it relays, in the baseline it is the whole
 * isolate), so that thread caps throughput at 1 / its CPU per trip; all the CPU of a trip,
 * spread over the cores, caps it at `cores` / total CPU per trip. The lower cap wins.
 */
function ceiling(cpuUs: ThreadCpu | null, cores: number): number | null {
  if (cpuUs === null) return null;
  const total = cpuUs.main + cpuUs.workers + cpuUs.other;
  if (!(total > 0)) return null;
  const serial = cpuUs.main > 0 ? 1e6 / cpuUs.main : Infinity;
  return Math.min(serial, (cores * 1e6) / total);
}

function table(scenario: Scenario, rows: ReturnType<typeof summarize>, cores: number): string {
  // S5 compares 2 workers with 1, S6 with memcached; the others with the single-isolate baseline.
  const reference = referenceFor(scenario);
  const baseline = rows.find((r) => r.server === reference);
  const fixed = (v: number | null, digits = 1) =>
    v === null || Number.isNaN(v) ? "-" : v.toFixed(digits);
  const count = (v: number | null) => v === null ? "-" : Math.round(v).toLocaleString("en-US");
  const lines = [
    `### ${scenario.name}: ${scenario.connections.toLocaleString("en-US")} connections x ${
      scenario.size >= 1024 ? `${scenario.size / 1024} KiB` : `${scenario.size} B`
    }${scenario.tls ? ", over TLS (baseline: Deno.listenTls)" : ""}${
      scenario.probe
        ? " bulk echo, and a bystander sending 64 B every 10 ms: the latencies are the bystander's"
        : ""
    }${scenario.mode === "hash" ? `, hash handler (${S5_ROUNDS} SHA-256 rounds per line)` : ""}${
      scenario.mode === "memcache"
        ? `, memcache handler vs memcached: 9 gets to 1 set, values verified${
          MEMCACHED ? "" : " (memcached not installed: no reference)"
        }`
        : ""
    }`,
    "",
    `| server | round trips/s | MB/s | p50 ms | p99 ms | p99.9 ms | errors | mismatched | peak RSS MB | server CPU % | client CPU % | CPU us/trip main | workers | other | total | CPU/trip vs ${reference} | ${cores}-core ceiling/s | round trips vs ${reference} |`,
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const baseCpu = baseline === undefined ? null : totalCpu(baseline.cpuUs);
  for (const row of rows) {
    const ratio = baseline && row.server !== reference && baseline.roundTripsPerSec > 0
      ? `${(row.roundTripsPerSec / baseline.roundTripsPerSec).toFixed(2)}x`
      : "-";
    const cpu = totalCpu(row.cpuUs);
    const cpuRatio = cpu !== null && baseCpu !== null && baseCpu > 0 && row.server !== reference
      ? `${(cpu / baseCpu).toFixed(2)}x`
      : "-";
    lines.push(
      `| ${row.server} | ${count(row.roundTripsPerSec)} | ${fixed(row.mbPerSec)} | ${
        fixed(row.p50, 2)
      } | ${fixed(row.p99, 2)} | ${fixed(row.p999, 2)} | ${row.errors} | ${row.mismatches} | ${
        fixed(row.peakRssMb, 0)
      } | ${fixed(row.serverCpuPct, 0)} | ${fixed(row.clientCpuPct, 0)} | ${
        fixed(row.cpuUs?.main ?? null)
      } | ${fixed(row.cpuUs?.workers ?? null)} | ${fixed(row.cpuUs?.other ?? null)} | ${
        fixed(cpu, 2)
      } | ${cpuRatio} | ${count(ceiling(row.cpuUs, cores))} | ${ratio} |`,
    );
  }
  // The figure the hot path is judged by: each shape of our echo against the bare isolate.
  if (baseCpu !== null && baseCpu > 0 && reference === "baseline") {
    const ratios = ["kernel-1w", "kernel-1w-streams", "main", "kernel"].flatMap((server) => {
      const cpu = totalCpu(rows.find((r) => r.server === server)?.cpuUs ?? null);
      return cpu === null ? [] : [`${server} ${(cpu / baseCpu).toFixed(2)}x`];
    });
    if (ratios.length > 0) {
      lines.push(
        "",
        `CPU per round trip, as a multiple of the bare isolate's: ${ratios.join(", ")}`,
      );
    }
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const options = parse();
  if (options.scenarios.some((s) => s.tls)) {
    if (!haveOpenssl()) {
      say("bench: openssl is not installed: skipping the TLS scenarios");
      options.scenarios = options.scenarios.filter((s) => !s.tls);
    } else {
      const dir = new URL("bench/results/.tls/", ROOT);
      Deno.mkdirSync(dir, { recursive: true });
      certificates = await makeCertificates(fileURLToPath(dir).replace(/\/$/, ""));
      globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    }
  }
  if (options.client === "c") {
    cClient = await buildC("echo_load");
    if (cClient === undefined) say("bench: no C compiler: the echo scenarios use the Deno client");
  }
  const available = await findPeers(options.servers.filter((s) => PEERS.includes(s)), options);
  const servers = [
    ...options.servers.filter((s) => !PEERS.includes(s) || available.includes(s)),
    ...(options.external ? ["external"] : []),
  ];
  const machine = await describeMachine();
  const clientText = cClient === undefined
    ? `${options.clients} TypeScript load-generator threads`
    : `the C client (one thread, epoll) for echo and ${options.clients} TypeScript load-generator threads for the rest`;
  say(
    `bench: ${options.scenarios.map((s) => s.name).join(", ")}; servers ${servers.join(", ")}; ` +
      `${options.rounds} round(s) of ${options.warmup} s warm-up + ${options.duration} s; ` +
      `${clientText}; ${machine}`,
  );
  const results: Result[] = [];
  for (const scenario of options.scenarios) {
    for (let round = 0; round < options.rounds; round++) {
      // Alternate the order each round so that drift (thermal, noise) hits every server alike.
      const compared = serversFor(scenario, servers);
      const order = round % 2 === 0 ? compared : [...compared].reverse();
      for (const server of order) {
        const result = await measure(scenario, server, round, options);
        results.push(result);
        say(
          `  ${scenario.name} ${server}: ${
            Math.round(result.roundTripsPerSec).toLocaleString("en-US")
          } rt/s, ` +
            `${result.errors + result.connectFailures} errors, ${result.mismatches} mismatched` +
            (result.firstError ? ` (${result.firstError})` : ""),
        );
      }
    }
  }
  const summaries = options.scenarios.map((s) => ({
    scenario: s,
    rows: summarize(results, s, serversFor(s, servers)),
  }));
  const sections = summaries.map(({ scenario, rows }) => table(scenario, rows, options.cores));
  if (!options.quick && options.scenarios.some((s) => s.name === "S6")) {
    // S6's mix in memcached's own load tool, get and set apart (as `deno task bench:memcache`).
    say("  S6 memcslap: get and set, 3 alternated rounds");
    sections.push(`### S6 memcslap: get and set, against memcached\n\n${await memcslapTable(3)}`);
  }
  const header = [
    `## Benchmark run ${new Date().toISOString()}`,
    "",
    `Measured on: ${machine}; Deno ${Deno.version.deno}, ${Deno.build.target}. ` +
    `Servers: ${options.workers} workers unless named -1w, default settings; load from ` +
    `${clientText}, on the same machine; ${options.rounds} round(s) of ${options.warmup} s warm-up + ` +
    `${options.duration} s per server, alternating; closed loop, every echoed byte verified. ` +
    `CPU per round trip is read from /proc/<pid>/task/*/schedstat over the measured window: ` +
    `main = the main thread, workers = threads named worker-N, other = V8 and Deno helpers. ` +
    `The ${options.cores}-core ceiling is min(1 / main-thread CPU per trip, ` +
    `${options.cores} / total CPU per trip).`,
    "",
  ].join("\n");
  const markdown = `${header}\n${sections.join("\n\n")}\n`;
  Deno.stdout.writeSync(encoder.encode("\n" + markdown));
  if (!options.quick) {
    const dir = new URL("bench/results/", ROOT);
    Deno.mkdirSync(dir, { recursive: true });
    Deno.writeTextFileSync(new URL("latest.md", dir), markdown);
    const bars: ChartBar[] = summaries.flatMap(({ scenario, rows }) => {
      const base = totalCpu(rows.find((r) => r.server === referenceFor(scenario))?.cpuUs ?? null);
      return rows.map((row) => {
        const cpu = totalCpu(row.cpuUs);
        return {
          scenario: scenario.name,
          server: row.server,
          measured: row.roundTripsPerSec,
          cpuUs: cpu,
          cpuRatio: cpu === null || base === null || base <= 0 ? null : cpu / base,
        };
      });
    });
    Deno.writeTextFileSync(
      new URL("latest.svg", dir),
      renderChart(
        bars,
        `${new Date().toISOString().slice(0, 10)}, ${machine}, Deno ${Deno.version.deno}; ` +
          `load generator on the same machine`,
      ),
    );
    Deno.writeTextFileSync(
      new URL("latest.json", dir),
      JSON.stringify({ date: new Date().toISOString(), options, results }, null, 2) + "\n",
    );
    say("bench: wrote bench/results/latest.md, latest.json and latest.svg");
  }
  const bad = results.filter((r) => r.errors + r.connectFailures + r.mismatches > 0);
  if (bad.length > 0) {
    for (const r of bad) {
      say(
        `bench: FAILED ${r.scenario} ${r.server}: ${r.errors + r.connectFailures} errors, ` +
          `${r.mismatches} mismatched (${r.firstError})`,
      );
    }
    Deno.exit(1);
  }
  say(`bench: ${results.length} runs, 0 errors, 0 mismatched bytes`);
}

/** Which of the requested peers can run here; builds the C one and finds Bun. */
async function findPeers(requested: string[], options: Options): Promise<string[]> {
  const found: string[] = [];
  for (const peer of requested) {
    if (peer === "node") {
      const ok = await new Deno.Command("node", { args: ["--version"], stdout: "null" }).output()
        .then((o) => o.success, () => false);
      if (ok) {
        const script = fileURLToPath(new URL("peers/node_echo.mjs", import.meta.url));
        peerCommands.set(peer, { program: "node", args: [script, "0"] });
      }
    } else if (peer === "c-epoll") {
      const binary = await buildC("epoll_echo");
      if (binary !== undefined) peerCommands.set(peer, { program: binary, args: ["0"] });
    } else if (peer === "bun") {
      const bun = options.bun ?? await locate("bun") ??
        fileURLToPath(new URL("node_modules/@oven/bun-linux-x64/bin/bun", ROOT));
      const ok = await new Deno.Command(bun, { args: ["--version"], stdout: "null" }).output()
        .then((o) => o.success, () => false);
      if (ok) {
        const script = fileURLToPath(new URL("peers/bun_echo.ts", import.meta.url));
        peerCommands.set(peer, { program: bun, args: [script, "0"] });
      }
    }
    if (peerCommands.has(peer)) found.push(peer);
    else say(`bench: peer '${peer}' cannot run here: left out`);
  }
  return found;
}

/** A program's path from the shell's PATH, or undefined. */
async function locate(program: string): Promise<string | undefined> {
  const output = await new Deno.Command("sh", {
    args: ["-c", `command -v ${program}`],
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  const path = output?.success ? new TextDecoder().decode(output.stdout).trim() : "";
  return path === "" ? undefined : path;
}

/** What the figures were measured on: CPU model and count, memory, kernel. */
async function describeMachine(): Promise<string> {
  // Deno 2.9.6 lets a program that may run subprocesses read /proc only with --allow-all.
  const read = (path: string) => readProc(path).catch(() => "");
  const cpuinfo = await read("/proc/cpuinfo");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? Deno.build.arch;
  const kib = Number(/^MemTotal:\s*(\d+)/m.exec(await read("/proc/meminfo"))?.[1] ?? NaN);
  const kernel = (await read("/proc/sys/kernel/osrelease")).trim();
  return `${navigator.hardwareConcurrency} x ${model}` +
    (Number.isNaN(kib) ? "" : `, ${Math.round(kib / 1024 / 1024)} GiB`) +
    (kernel === "" ? "" : `, Linux ${kernel}`);
}

if (import.meta.main) await main();
