/**
 * Starts the servers `bench:memcache` compares: ours with the `memcache` handler in either
 * dispatch mode, or Debian's memcached, each with 2 threads on a free loopback port.
 *
 * Runs in the benchmark's process, never inside the server.
 *
 * @module
 */

import { findMemcached, startMemcached } from "../launcher/memcached.ts";
import { startServer } from "../launcher/server_process.ts";

/** The servers compared, memcached first (the reference). */
export const CACHE_SERVERS = ["memcached", "kernel", "main"] as const;

/** One of {@linkcode CACHE_SERVERS}. */
export type CacheServer = (typeof CACHE_SERVERS)[number];

/** A started server: where it listens, which process to weigh, how to stop it. */
export interface StartedCache {
  port: number;
  pid: number;
  stop(): Promise<unknown>;
}

/**
 * Starts `kind` with 2 threads and `memoryMb` of cache.
 *
 * @param kind Which server.
 * @param memoryMb The cache's memory limit (memcached's `-m`, our `memory-limit`).
 * @returns The server, or undefined when memcached is not installed.
 */
export async function startCache(
  kind: CacheServer,
  memoryMb = 64,
): Promise<StartedCache | undefined> {
  if (kind === "memcached") {
    const program = findMemcached();
    if (program === undefined) return undefined;
    const memcached = await startMemcached(program, 2, memoryMb);
    return { port: memcached.port, pid: memcached.process.pid, stop: () => memcached.stop() };
  }
  const server = await startServer([
    "--dispatch",
    kind,
    "--workers",
    "2",
    "--handler",
    "memcache",
    "--handler-option",
    `memory-limit=${memoryMb}m`,
  ]);
  return { port: server.port, pid: server.process.pid, stop: () => server.stop() };
}
