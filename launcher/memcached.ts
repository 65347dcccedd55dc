/**
 * Starts a real memcached (Debian's package) on a free loopback port, for the tests that
 * compare the `memcache` handler with it and for the benchmark.
 *
 * Runs in whatever process starts servers (a test, the benchmark); never inside the server.
 *
 * @module
 */

/** A running memcached. Stop it with `await using`. */
export interface MemcachedProcess extends AsyncDisposable {
  /** The port it listens on (127.0.0.1). */
  port: number;
  /** The child process. */
  process: Deno.ChildProcess;
  /** Stops it and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * The memcached binary, if one is installed.
 *
 * @returns Its path, or undefined.
 */
export function findMemcached(): string | undefined {
  for (const path of ["/usr/bin/memcached", "/usr/local/bin/memcached"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

/**
 * Starts memcached with `threads` worker threads and waits until it accepts connections.
 *
 * @param program The binary (see {@linkcode findMemcached}).
 * @param threads Worker threads (`-t`).
 * @param memoryMb Cache size (`-m`).
 * @returns The running memcached.
 * @throws {Error} If it does not accept connections within 10 s; it is then killed.
 */
export async function startMemcached(
  program: string,
  threads: number,
  memoryMb = 64,
): Promise<MemcachedProcess> {
  // memcached cannot be asked for port 0: take a free one from the kernel and hand it over.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const args = ["-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", String(threads)];
  // As root, memcached refuses to start unless told whom to run as; otherwise -u is ignored.
  args.push("-m", String(memoryMb), "-u", "nobody");
  const process = new Deno.Command(program, { args, stdout: "null", stderr: "null" }).spawn();
  let exited = false;
  process.status.then(() => exited = true);
  const stop = async () => {
    if (!exited) {
      try {
        process.kill("SIGKILL");
      } catch {
        // Gone already.
      }
    }
    await process.status;
  };
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch (error) {
      if (exited || Date.now() > deadline) {
        await stop();
        throw new Error(`memcached did not start on port ${port}: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { port, process, stop, [Symbol.asyncDispose]: stop };
}
