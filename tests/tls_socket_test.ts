/**
 * The TLS connection adapter in one process: a reader that pauses (as the main thread does
 * when a connection's window is full) keeps getting data, half-close ends with close_notify,
 * and `update` changes the certificate for new handshakes only.
 */

import assert from "node:assert/strict";
import { haveOpenssl, makeCertificates } from "../launcher/certificates.ts";
import { TlsTerminator } from "../lib/sockets/tls_socket.ts";

Deno.test({
  name: `TlsServerConn keeps delivering after its reader pauses, and ends with close_notify${
    haveOpenssl() ? "" : " (SKIPPED: openssl not installed)"
  }`,
  ignore: !haveOpenssl(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "echoserver-tls-" });
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const certs = await makeCertificates(dir);
      const read = (path: string) => Deno.readTextFileSync(path);
      const terminator = new TlsTerminator(
        { cert: read(certs.serverA.cert), key: read(certs.serverA.key) },
        5000,
      );
      // The server echoes, and stops reading for 50 ms after every 256 KiB.
      const serving = (async () => {
        const conn = await terminator.upgrade(await listener.accept());
        const buffer = new Uint8Array(64 * 1024);
        const writes: Promise<number>[] = [];
        let sincePause = 0;
        while (true) {
          const n = await conn.read(buffer);
          if (n === null) break;
          writes.push(conn.write(buffer.slice(0, n)));
          sincePause += n;
          if (sincePause >= 256 * 1024) {
            sincePause = 0;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
        await Promise.all(writes);
        await conn.closeWrite();
        conn.close();
      })();
      const client = await Deno.connectTls({
        hostname: "localhost",
        port: (listener.addr as Deno.NetAddr).port,
        caCerts: [read(certs.ca)],
      });
      const payload = Uint8Array.from({ length: 2 * 1024 * 1024 }, (_, i) => (i * 7) % 251);
      const reading = (async () => {
        const chunks: Uint8Array[] = [];
        const buffer = new Uint8Array(64 * 1024);
        // A clean end needs close_notify: rustls reports its absence as an error here.
        for (let n = await client.read(buffer); n !== null; n = await client.read(buffer)) {
          chunks.push(buffer.slice(0, n));
        }
        return chunks;
      })();
      let offset = 0;
      while (offset < payload.length) offset += await client.write(payload.subarray(offset));
      await client.closeWrite();
      // A stall is the failure this guards against: fail in time rather than hang.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("echo stalled for 20 s")), 20_000);
      });
      const chunks = await Promise.race([reading, stalled]).finally(() => clearTimeout(timer));
      client.close();
      await serving;
      const echoed = new Uint8Array(payload.length);
      let at = 0;
      for (const chunk of chunks) {
        echoed.set(chunk, at);
        at += chunk.length;
      }
      assert.equal(at, payload.length);
      assert.deepEqual(echoed, payload);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
