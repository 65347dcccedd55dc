/**
 * `deno task bench:slow-readers`: what a slow reader costs the server. N clients (200 by default)
 * each send in 8 KiB pieces and never read their echo, in each dispatch mode; once the server's
 * intake has stood still (the kernel's buffers and `--max-buffered` are full), it reports the
 * server's RSS growth per client and `echoserver_buffered_bytes`. Written to
 * `bench/results/slow_readers.md`.
 *
 * Usage: deno task bench:slow-readers [--clients 200]
 *
 * Runs in a process of its own, never in the server.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { rssKiB, scrape } from "../launcher/probes.ts";
import { startServer } from "../launcher/server_process.ts";
import { printOut } from "../lib/log.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { clients: { type: "string", default: "200" } },
  strict: true,
});
const clients = Number(values.clients);

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One run in one mode: RSS before and at the peak, and what the server says it holds. */
async function measure(dispatch: string) {
  await using server = await startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--metrics-port",
    "0",
  ]);
  await delay(1000);
  const before = await rssKiB(server.process.pid);
  const conns: Deno.TcpConn[] = [];
  const piece = new Uint8Array(8192).fill(0x41);
  let stop = false;
  const writers: Promise<void>[] = [];
  try {
    for (let i = 0; i < clients; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      conns.push(conn);
      writers.push((async () => {
        try {
          while (!stop) await conn.write(piece);
        } catch { /* closed at the end */ }
      })());
    }
    let last = -1;
    let peak = before;
    let buffered = 0;
    // Settled: the bytes received have not moved for 4 s (60 s at most).
    for (let stable = 0, i = 0; stable < 8 && i < 120; i++) {
      await delay(500);
      const samples = await scrape(server.metricsPort!);
      const received = samples.get("echoserver_received_bytes_total") ?? 0;
      buffered = Math.max(buffered, samples.get("echoserver_buffered_bytes") ?? 0);
      stable = received === last ? stable + 1 : 0;
      last = received;
      peak = Math.max(peak, await rssKiB(server.process.pid));
    }
    return { dispatch, before, peak, perClient: (peak - before) / clients, buffered };
  } finally {
    stop = true;
    for (const conn of conns) conn.close();
    await Promise.all(writers);
  }
}

const rows: string[] = [];
for (const dispatch of ["main", "kernel"]) {
  const r = await measure(dispatch);
  rows.push(
    `| ${r.dispatch} | ${(r.before / 1024).toFixed(0)} MB | ${(r.peak / 1024).toFixed(0)} MB | ` +
      `${r.perClient.toFixed(0)} KiB | ${(r.buffered / 1024 / 1024).toFixed(1)} MiB |`,
  );
}
const report = `# Slow readers

Run ${new Date().toISOString()} on ${navigator.hardwareConcurrency} cores: ${clients} clients each
send in 8 KiB pieces and never read; 2 workers, \`--max-buffered\` 64 MiB (the default). RSS of the
server process before and at its peak; \`buffered\` is the peak of \`echoserver_buffered_bytes\`.

| dispatch | RSS before | RSS peak | RSS per client | buffered |
| --- | --- | --- | --- | --- |
${rows.join("\n")}
`;
await Deno.writeTextFile(new URL("./results/slow_readers.md", import.meta.url), report);
printOut(report);
