/**
 * The benchmark's baseline: the plainest fast Deno echo server, in one isolate. An accept loop
 * and, per connection, a `conn.read` / `conn.write` loop; no workers, no limits, no quit. It is
 * what the multi-threaded server is compared with.
 *
 * To be fair on memory as well as speed, each connection's buffer starts at 1 KiB and doubles
 * on every read that fills it, up to 64 KiB (as the server's own connections do): a fixed
 * 64 KiB buffer would make 10,000 idle connections cost 640 MB here.
 *
 * With a certificate and key, it serves TLS with Deno's own `Deno.listenTls` (rustls in Rust),
 * the fastest TLS a Deno program has: the reference for what the server's `node:tls` costs.
 *
 * Usage: deno run --allow-net [--allow-read] bench/baseline_server.ts [port] [cert.pem key.pem]
 *
 * @module
 */

const port = Number(Deno.args[0] ?? 0);
const [certFile, keyFile] = [Deno.args[1], Deno.args[2]];
const listener: Deno.Listener = certFile === undefined || keyFile === undefined
  ? Deno.listen({ hostname: "::", port })
  : Deno.listenTls({
    hostname: "::",
    port,
    cert: Deno.readTextFileSync(certFile),
    key: Deno.readTextFileSync(keyFile),
  });

async function serve(conn: Deno.Conn): Promise<void> {
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  let buffer = new Uint8Array(1024);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let offset = 0;
      while (offset < n) offset += await conn.write(buffer.subarray(offset, n));
      if (n === buffer.length && n < 64 * 1024) buffer = new Uint8Array(n * 2);
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
  new TextEncoder().encode(
    `baseline listening on [::]:${(listener.addr as Deno.NetAddr).port}\n`,
  ),
);
while (true) {
  try {
    serve(await listener.accept());
  } catch {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
