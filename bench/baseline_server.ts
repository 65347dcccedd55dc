/**
 * The benchmark's baseline: the plainest fast Deno echo server, in one isolate. An accept loop
 * and, per connection, a `conn.read` / `conn.write` loop with its own 64 KiB buffer; no workers,
 * no limits, no quit. It is what the multi-threaded server is compared with.
 *
 * Usage: deno run --allow-net bench/baseline_server.ts [port]
 *
 * @module
 */

const port = Number(Deno.args[0] ?? 0);
const listener = Deno.listen({ hostname: "::", port });

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let offset = 0;
      while (offset < n) offset += await conn.write(buffer.subarray(offset, n));
    }
  } catch {
    // Reset by peer: nothing to do but close.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
Deno.stderr.writeSync(
  new TextEncoder().encode(`baseline listening on [::]:${listener.addr.port}\n`),
);
while (true) {
  try {
    serve(await listener.accept());
  } catch {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
