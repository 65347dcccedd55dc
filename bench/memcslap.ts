/**
 * memcached's own load tool against ours and memcached, in one alternated run: `memcslap -t get
 * -c 8 -e 20000` and `-t set` (Debian's libmemcached-tools), each server with 2 threads, the
 * server's CPU per operation read from /proc. Part of `deno task bench:memcache`.
 *
 * Also part of `deno task bench` (after S6, unless `--quick`).
 *
 * Runs in the benchmark's process, never inside the server.
 *
 * @module
 */

import { findMemcached } from "../launcher/memcached.ts";
import { CACHE_SERVERS, type CacheServer, startCache } from "./cache_servers.ts";
import { threadCpu } from "./proc.ts";

const TESTS = ["get", "set"] as const;
/** memcslap's clients and its execute count. */
const CLIENTS = 8;
const EXECUTE = 20_000;

/** Whether memcslap is on the PATH. */
function haveMemcslap(): boolean {
  try {
    return new Deno.Command("memcslap", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

interface Figure {
  opsPerSec: number;
  cpuUsPerOp: number;
}

async function measure(kind: CacheServer, test: string): Promise<Figure> {
  const server = (await startCache(kind))!;
  try {
    const before = await threadCpu(server.pid);
    const output = await new Deno.Command("memcslap", {
      args: [
        `--servers=127.0.0.1:${server.port}`,
        `--test=${test}`,
        `--concurrency=${CLIENTS}`,
        `--execute-number=${EXECUTE}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const after = await threadCpu(server.pid);
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    const match = new RegExp(
      `Time to ${test}\\s+(\\d+) keys by\\s+\\d+ threads:\\s+([\\d.]+) seconds`,
    )
      .exec(text);
    if (!output.success || match === null || /error/i.test(text)) {
      throw new Error(`memcslap against ${kind}: ${text.trim().split("\n").slice(-3).join(" | ")}`);
    }
    const keys = Number(match[1]);
    // A get test first loads its keys with sets: the CPU counts those operations too.
    const operations = keys + (test === "get" ? EXECUTE : 0);
    const cpu = before && after
      ? (after.main + after.workers + after.other - before.main - before.workers - before.other)
      : NaN;
    return { opsPerSec: keys / Number(match[2]), cpuUsPerOp: cpu / operations * 1e6 };
  } finally {
    await server.stop();
  }
}

/**
 * Runs `rounds` alternated rounds and returns a Markdown table of medians.
 *
 * @param rounds Rounds of every server and test.
 * @returns The table, or a line saying why not.
 */
export async function memcslapTable(rounds = 3): Promise<string> {
  if (findMemcached() === undefined) return "memcslap: memcached not installed, skipped";
  if (!haveMemcslap()) return "memcslap: not installed (Debian's libmemcached-tools), skipped";
  const figures = new Map<string, Figure[]>();
  for (let round = 0; round < rounds; round++) {
    for (const test of TESTS) {
      for (const kind of CACHE_SERVERS) {
        const key = `${kind} ${test}`;
        figures.set(key, [...(figures.get(key) ?? []), await measure(kind, test)]);
      }
    }
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const rows = [
    `memcslap -c ${CLIENTS} -e ${EXECUTE}, ${rounds} alternated rounds, medians (each round's figures in brackets); servers with 2 threads.`,
    "",
    "| server | get ops/s | get vs memcached | get CPU us/op | set ops/s | set vs memcached | set CPU us/op |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const kind of CACHE_SERVERS) {
    const cells = TESTS.flatMap((test) => {
      const all = figures.get(`${kind} ${test}`)!;
      const reference = median(figures.get(`memcached ${test}`)!.map((f) => f.opsPerSec));
      const ops = median(all.map((f) => f.opsPerSec));
      return [
        `${Math.round(ops).toLocaleString("en-US")} [${
          all.map((f) => Math.round(f.opsPerSec / 1000) + "k").join(", ")
        }]`,
        `${(ops / reference).toFixed(2)}x`,
        median(all.map((f) => f.cpuUsPerOp)).toFixed(1),
      ];
    });
    rows.push(`| ${kind} | ${cells.join(" | ")} |`);
  }
  return rows.join("\n");
}
