/**
 * `deno task soak`: a mixed load against the real server for a fixed time, then the checks
 * that show nothing leaks: zero mismatched bytes, RSS at the end within 10% of RSS after
 * warm-up, open descriptors back to where they started, counters consistent
 * (accepted = closed + active). Then the drain under load: 20 clients that have sent 2 MiB each
 * and read none of the echo when SIGTERM comes read it afterwards and must get all of it, and
 * the server must exit 0 with none cut.
 *
 * Usage: deno task soak [--duration 60] [--warmup 30] [--dispatch main|kernel]
 *
 * Runs on the main thread of the soak process; traffic goes to loopback only.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openFiles, rssKiB, scrape, total } from "../launcher/probes.ts";
import { startServer } from "../launcher/server_process.ts";

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();

function say(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    duration: { type: "string" },
    warmup: { type: "string" },
    dispatch: { type: "string" },
  },
});
const duration = Number(values.duration ?? 60);
// The V8 heaps of the three isolates grow for the first ~20 s of load, then hold: the
// RSS check compares against RSS after that, so that it catches leaks, not heap sizing.
const warmup = Number(values.warmup ?? 30);
if (!(duration > 0 && warmup >= 0)) {
  say("soak: '--duration' and '--warmup' must be positive numbers of seconds");
  Deno.exit(2);
}

const rssMb = async (pid: number) => (await rssKiB(pid)) / 1024;

// --- the server ---
const dispatch = values.dispatch ?? "main";
const server = await startServer([
  "--workers",
  "2",
  "--metrics-port",
  "0",
  "--dispatch",
  dispatch,
]);
const { port } = server;
const metricsPort = server.metricsPort!;
const pid = server.process.pid;
const fdsAtStart = await openFiles(pid);

// --- the load ---
let stopping = false;
const counts = {
  roundTrips: 0,
  mismatched: 0,
  errors: 0,
  shorts: 0,
  halfCloses: 0,
  resets: 0,
  slow: 0,
};
let seed = 42;
const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
function message(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) {
    const b = Math.floor(random() * 256);
    bytes[i] = b === 0x0a ? 0x0b : b; // no newline: no line can read "quit"
  }
  return bytes;
}
async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error("early EOF");
    at += got;
  }
  return out;
}
const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);
const connect = () => Deno.connect({ hostname: "127.0.0.1", port });

async function guarded(body: () => Promise<void>) {
  try {
    await body();
  } catch {
    if (!stopping) counts.errors++;
  }
}

async function longLived() {
  while (!stopping) {
    await guarded(async () => {
      using conn = await connect();
      for (let i = 0; i < 500 && !stopping; i++) {
        const m = message(1 + Math.floor(random() * 2000));
        await writeAll(conn, m);
        if (!same(await readExactly(conn, m.length), m)) counts.mismatched++;
        counts.roundTrips++;
      }
    });
  }
}
async function shortLived() {
  while (!stopping) {
    await guarded(async () => {
      using conn = await connect();
      const m = message(64);
      await writeAll(conn, m);
      if (!same(await readExactly(conn, m.length), m)) counts.mismatched++;
      counts.shorts++;
    });
  }
}
async function halfCloser() {
  while (!stopping) {
    await guarded(async () => {
      using conn = await connect();
      const m = message(1 + Math.floor(random() * 100_000));
      const reading = (async () => {
        const got = await readExactly(conn, m.length);
        if ((await conn.read(new Uint8Array(1))) !== null) throw new Error("no EOF after echo");
        return got;
      })();
      await writeAll(conn, m);
      await conn.closeWrite();
      if (!same(await reading, m)) counts.mismatched++;
      counts.halfCloses++;
    });
  }
}
async function resetter() {
  while (!stopping) {
    await guarded(async () => {
      const conn = await connect();
      await writeAll(conn, message(1 + Math.floor(random() * 50_000)));
      conn.close(); // unread echo: the kernel answers with a reset
      counts.resets++;
      await new Promise((r) => setTimeout(r, 20));
    });
  }
}
async function slowReader() {
  while (!stopping) {
    await guarded(async () => {
      using conn = await connect();
      const m = message(2 * 1024 * 1024);
      const writing = writeAll(conn, m);
      await new Promise((r) => setTimeout(r, 1000)); // read nothing for a while
      if (!same(await readExactly(conn, m.length), m)) counts.mismatched++;
      await writing;
      counts.slow++;
    });
  }
}

const loops = [
  ...Array.from({ length: 40 }, longLived),
  ...Array.from({ length: 8 }, shortLived),
  ...Array.from({ length: 4 }, halfCloser),
  ...Array.from({ length: 2 }, resetter),
  ...Array.from({ length: 2 }, slowReader),
];
say(`soak: ${duration} s of mixed load (warm-up ${warmup} s) against port ${port}`);
await new Promise((r) => setTimeout(r, warmup * 1000));
const rssAfterWarmup = await rssMb(pid);
const started = performance.now();
const ticker = setInterval(async () => {
  const elapsed = ((performance.now() - started) / 1000).toFixed(0);
  say(
    `  ${elapsed} s: ${counts.roundTrips} round trips, ${counts.shorts} short, ` +
      `${counts.halfCloses} half-closed, ${counts.resets} reset, ${counts.slow} slow; ` +
      `RSS ${(await rssMb(pid)).toFixed(0)} MB`,
  );
}, 10_000);
await new Promise((r) => setTimeout(r, duration * 1000));
stopping = true;
clearInterval(ticker);
await Promise.all(loops);
await new Promise((r) => setTimeout(r, 3000)); // let the server finish closing
const rssAtEnd = await rssMb(pid);
const fdsAtEnd = await openFiles(pid);
const m = await scrape(metricsPort);

// --- the drain, with slow readers ---
const DRAIN_CLIENTS = 20;
const DRAIN_BYTES = 2 * 1024 * 1024;
const drainClients = await Promise.all(
  Array.from({ length: DRAIN_CLIENTS }, () => Deno.connect({ hostname: "127.0.0.1", port })),
);
const drainPayloads = drainClients.map(() => message(DRAIN_BYTES));
const drainSends = drainClients.map((conn, i) => writeAll(conn, drainPayloads[i]!));
await new Promise((r) => setTimeout(r, 300));
server.process.kill("SIGTERM");
await new Promise((r) => setTimeout(r, 1000)); // nobody reads for a second after the signal
const drainEchoes = drainClients.map((conn) => readExactly(conn, DRAIN_BYTES).catch(() => null));
await Promise.all(drainSends);
await Promise.all(drainClients.map((conn) => conn.closeWrite()));
const echoes = await Promise.all(drainEchoes);
const drainExact =
  echoes.filter((e, i) => e !== null && e.every((b, j) => b === drainPayloads[i]![j])).length;
for (const conn of drainClients) conn.close();
const status = await server.stop("SIGTERM");
const drainLine = /Stopped: .*/.exec(server.log())?.[0] ?? "no Stopped line";

const accepted = total(m, "echoserver_connections_accepted_total");
const active = total(m, "echoserver_connections_active");
const closed = total(m, "echoserver_connections_closed_total");
const rssChange = (rssAtEnd - rssAfterWarmup) / rssAfterWarmup;
const checks: [string, boolean, string][] = [
  ["zero mismatched bytes", counts.mismatched === 0, `${counts.mismatched} mismatched`],
  ["no client errors", counts.errors === 0, `${counts.errors} errors`],
  [
    "RSS at the end within 10% of RSS after warm-up",
    Math.abs(rssChange) <= 0.1,
    `${rssAfterWarmup.toFixed(1)} MB -> ${rssAtEnd.toFixed(1)} MB (${
      (rssChange * 100).toFixed(1)
    }%)`,
  ],
  ["open descriptors back to the start", fdsAtEnd <= fdsAtStart, `${fdsAtStart} -> ${fdsAtEnd}`],
  [
    "accepted = closed + active",
    accepted === closed + active,
    `${accepted} accepted, ${closed} closed, ${active} active`,
  ],
  [
    `SIGTERM with ${DRAIN_CLIENTS} slow readers (2 MiB each unread): every echo whole, exit 0`,
    drainExact === DRAIN_CLIENTS && status.code === 0,
    `${drainExact} of ${DRAIN_CLIENTS} exact, exit ${status.code}; "${drainLine}"`,
  ],
];
const report = [
  `## Soak run ${new Date().toISOString()} (${dispatch} dispatch)`,
  "",
  `${duration} s after ${warmup} s warm-up; 40 long-lived echo loops, 8 short-connection loops, ` +
  `4 half-closers, 2 resetters, 2 slow readers (2 MiB unread for 1 s). ` +
  `${counts.roundTrips} long-lived round trips, ${counts.shorts} short connections, ` +
  `${counts.halfCloses} half-closes, ${counts.resets} resets, ${counts.slow} slow reads.`,
  "",
  "| check | result | measured |",
  "|---|---|---|",
  ...checks.map(([name, ok, detail]) => `| ${name} | ${ok ? "pass" : "FAIL"} | ${detail} |`),
  "",
].join("\n");
Deno.stdout.writeSync(encoder.encode("\n" + report));
Deno.mkdirSync(new URL("bench/results/", ROOT), { recursive: true });
Deno.writeTextFileSync(new URL("bench/results/soak.md", ROOT), report);
Deno.exit(checks.every(([, ok]) => ok) ? 0 : 1);
