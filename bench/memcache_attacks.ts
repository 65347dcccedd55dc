/**
 * The attacks of the memcache issue, as a hostile client makes them, against any server that
 * speaks memcached's text protocol (ours in either dispatch mode, or memcached itself), with the
 * server's memory read from /proc:
 *
 * - `multiget`: a 30 KB value, then `get k k k ...` (30,000 keys) on 3 connections that never
 *   read;
 * - `stalled`: 200 connections each send the header of a 1 MB `set` and all but 10 bytes of it;
 * - `flood`: sets of new keys far past the memory limit, the set rate measured per window, so the
 *   rate after a million evictions can be set against the first.
 *
 * `deno task bench:memcache` runs them all and prints a table (after memcslap's figures,
 * `memcslap.ts`), written to `bench/results/memcache.md`; `tests/memcache_attack_test.ts`
 * runs them smaller and asserts the bounds. Traffic goes to loopback only, and every attack
 * ends by itself.
 *
 * Runs in the benchmark's or a test's process, never inside the server.
 *
 * @module
 */

import { readProc, rssKiB } from "../launcher/probes.ts";
import { CACHE_SERVERS, startCache } from "./cache_servers.ts";
import { memcslapTable } from "./memcslap.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("latin1");

/** A server under attack: where it listens and which process to weigh. */
export interface Target {
  port: number;
  pid: number;
}

/** What an attack did to the server's memory. */
export interface MemoryFigure {
  /** RSS before the attack, MB. */
  beforeMb: number;
  /** Highest RSS seen while it held, MB. */
  peakMb: number;
}

async function rssMb(pid: number): Promise<number> {
  return await rssKiB(pid) / 1024;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** One request, its whole reply up to a line equal to `last`. */
async function ask(port: number, request: string, last: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, encoder.encode(request));
    const buffer = new Uint8Array(64 * 1024);
    let reply = "";
    const deadline = Date.now() + 30_000;
    while (!reply.endsWith(last + "\r\n")) {
      if (Date.now() > deadline) throw new Error(`no '${last}' in 30 s; got ${reply.slice(-200)}`);
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`connection closed; got ${reply.slice(-200)}`);
      reply += decoder.decode(buffer.subarray(0, n));
    }
    return reply;
  } finally {
    conn.close();
  }
}

/**
 * The server's `stats` as numbers.
 *
 * @param port Its port.
 * @returns Each `STAT name value` with a numeric value.
 */
export async function stats(port: number): Promise<Record<string, number>> {
  const reply = await ask(port, "stats\r\n", "END");
  return Object.fromEntries(
    [...reply.matchAll(/^STAT (\S+) (-?[\d.]+)\r$/gm)].map(([, name, value]) => [
      name!,
      Number(value),
    ]),
  );
}

/**
 * Waits until `read()` stops growing between two readings 250 ms apart (the server is blocked
 * on clients that do not read, or done), sampling RSS meanwhile. A reading of `stats` counts its
 * own request and reply, so "still" is less than 4 KiB more.
 */
async function untilSteady(
  target: Target,
  read: () => Promise<number>,
  peak: { mb: number },
  deadlineMs: number,
): Promise<void> {
  let last = await read();
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    peak.mb = Math.max(peak.mb, await rssMb(target.pid));
    const now = await read();
    if (now - last < 4096) return;
    last = now;
  }
}

/**
 * Multi-get amplification: `connections` clients each ask for `keys` copies of one
 * `valueBytes` value and never read, until the server stops writing.
 *
 * @param target The server.
 * @param options Sizes (the issue's: 3 connections, 30,000 keys, 30,000 bytes).
 * @returns RSS before and at the peak.
 */
export async function multiget(
  target: Target,
  options = { connections: 3, keys: 30_000, valueBytes: 30_000 },
): Promise<MemoryFigure> {
  const value = "v".repeat(options.valueBytes);
  await ask(target.port, `set amp 0 0 ${value.length}\r\n${value}\r\n`, "STORED");
  const beforeMb = await rssMb(target.pid);
  const peak = { mb: beforeMb };
  const line = encoder.encode(`get ${"amp ".repeat(options.keys)}\r\n`);
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < options.connections; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
      conns.push(conn);
      await writeAll(conn, line);
    }
    // The server has written all it can once its bytes_written stands still.
    await untilSteady(
      target,
      async () => (await stats(target.port)).bytes_written ?? 0,
      peak,
      30_000,
    );
    peak.mb = Math.max(peak.mb, await rssMb(target.pid));
  } finally {
    for (const conn of conns) conn.close();
  }
  return { beforeMb, peakMb: peak.mb };
}

/**
 * Stalled value bodies: `connections` clients each send a `set` header for `valueBytes` and all
 * but 10 bytes of the value, then wait.
 *
 * @param target The server.
 * @param options Sizes (the issue's: 200 connections, 1,000,000 bytes).
 * @returns RSS before and at the peak.
 */
export async function stalled(
  target: Target,
  options = { connections: 200, valueBytes: 1_000_000 },
): Promise<MemoryFigure> {
  const beforeMb = await rssMb(target.pid);
  const peak = { mb: beforeMb };
  const conns: Deno.TcpConn[] = [];
  const body = new Uint8Array(options.valueBytes - 10).fill(0x73);
  try {
    for (let i = 0; i < options.connections; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
      conns.push(conn);
      await writeAll(conn, encoder.encode(`set stall${i} 0 0 ${options.valueBytes}\r\n`));
      await writeAll(conn, body);
    }
    // Every byte sent has been read once bytes_read stands still.
    await untilSteady(target, async () => (await stats(target.port)).bytes_read ?? 0, peak, 30_000);
    peak.mb = Math.max(peak.mb, await rssMb(target.pid));
  } finally {
    for (const conn of conns) conn.close();
  }
  return { beforeMb, peakMb: peak.mb };
}

/** What a flood did: memory, evictions, and the set rate at its start and its end. */
export interface FloodFigure extends MemoryFigure {
  sets: number;
  evictions: number;
  /** Sets/s over the first window. */
  firstRate: number;
  /** Sets/s over the last window. */
  lastRate: number;
}

/**
 * A flood of `set`s of new keys (pipelined, `noreply`, a `mn` after each window of `window`
 * sets to know they were done), far past the memory limit.
 *
 * @param target The server.
 * @param options How many sets, of what value size, measured in windows of how many.
 * @returns Memory, evictions and the rates of the first and last windows.
 */
export async function flood(
  target: Target,
  options = { sets: 1_200_000, valueBytes: 10, window: 100_000 },
): Promise<FloodFigure> {
  const beforeMb = await rssMb(target.pid);
  let peakMb = beforeMb;
  const value = "x".repeat(options.valueBytes);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
  const buffer = new Uint8Array(1024);
  const rates: number[] = [];
  try {
    for (let done = 0; done < options.sets;) {
      const count = Math.min(options.window, options.sets - done);
      const started = performance.now();
      // In batches of 1,000 sets, so that the client's own buffers stay small.
      for (let i = 0; i < count; i += 1000) {
        let batch = "";
        for (let j = i; j < Math.min(count, i + 1000); j++) {
          batch += `set flood:${done + j} 0 0 ${value.length} noreply\r\n${value}\r\n`;
        }
        await writeAll(conn, encoder.encode(batch));
      }
      await writeAll(conn, encoder.encode("mn\r\n"));
      let reply = "";
      while (!reply.endsWith("MN\r\n")) {
        const n = await conn.read(buffer);
        if (n === null) throw new Error(`connection closed during the flood: ${reply}`);
        reply += decoder.decode(buffer.subarray(0, n));
      }
      if (reply !== "MN\r\n") throw new Error(`a set failed: ${reply.slice(0, 200)}`);
      rates.push(count / ((performance.now() - started) / 1000));
      done += count;
      peakMb = Math.max(peakMb, await rssMb(target.pid));
    }
  } finally {
    conn.close();
  }
  const after = await stats(target.port);
  return {
    beforeMb,
    peakMb,
    sets: options.sets,
    evictions: after.evictions ?? 0,
    firstRate: rates[0]!,
    lastRate: rates.at(-1)!,
  };
}

async function main(): Promise<void> {
  const rows: string[] = [];
  const say = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));
  const slap = await memcslapTable();
  say(slap);
  for (const kind of CACHE_SERVERS) {
    const run = async <T>(memoryMb: number, attack: (target: Target) => Promise<T>) => {
      const server = await startCache(kind, memoryMb);
      if (server === undefined) return undefined;
      try {
        return await attack(server);
      } finally {
        await server.stop();
      }
    };
    const amp = await run(64, (t) => multiget(t));
    const stall = await run(64, (t) => stalled(t));
    const small = await run(64, (t) => flood(t));
    const evict = await run(
      16,
      (t) => flood(t, { sets: 1_500_000, valueBytes: 100, window: 100_000 }),
    );
    if (!amp || !stall || !small || !evict) {
      say(`${kind}: not installed, skipped`);
      continue;
    }
    const mb = (f: MemoryFigure) => `+${Math.round(f.peakMb - f.beforeMb)}`;
    rows.push(
      `| ${kind} | ${mb(amp)} | ${mb(stall)} | ${mb(small)} (${Math.round(small.peakMb)} peak, ${
        small.evictions.toLocaleString("en-US")
      } evictions) | ${Math.round(evict.firstRate).toLocaleString("en-US")} | ${
        Math.round(evict.lastRate).toLocaleString("en-US")
      } (${(evict.lastRate / evict.firstRate).toFixed(2)}x, after ${
        evict.evictions.toLocaleString("en-US")
      } evictions) |`,
    );
    say(rows.at(-1)!);
  }
  const cpu = (await readProc("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
  const report = [
    `## memcache against memcached, ${new Date().toISOString()}`,
    "",
    `Measured on: ${navigator.hardwareConcurrency} x ${cpu}; Deno ${Deno.version.deno}. Each attack on a fresh server with 2 workers (memcached: \`-t 2\`), memory limit 64 MB (the eviction flood: 16 MB). RSS from /proc, MB added over the server's RSS before the attack.`,
    "",
    "### memcslap",
    "",
    slap,
    "",
    "### Attacks",
    "",
    "| server | 3 unread 30,000-key multigets of 30 KB | 200 stalled 1 MB values | 1.2M sets of 10 B, 64 MB limit | sets/s, first 100k (16 MB limit, 100 B) | sets/s, last 100k of 1.5M |",
    "|---|---:|---:|---:|---:|---:|",
    ...rows,
    "",
  ].join("\n");
  await Deno.mkdir(new URL("results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(new URL("results/memcache.md", import.meta.url), report);
  say(report);
}

if (import.meta.main) await main();
