/**
 * TLS end to end, in both dispatch modes, with certificates made by `openssl` for each test:
 * echo and half-close over TLS, `openssl s_client`, rotation on SIGHUP under load, a bad
 * reload, clients that are not TLS or stall, bad files at start-up, mutual TLS, and a PROXY
 * header before the handshake.
 */

import assert from "node:assert/strict";
import tls from "node:tls";
import { type Certificates, haveOpenssl, makeCertificates } from "../launcher/certificates.ts";
import {
  delay,
  DISPATCHES,
  pattern,
  readBytes,
  runServer,
  scrape,
  type ServerProcess,
  startServer,
  text,
  total,
  utf8,
  waitForTotal,
  writeAll,
} from "./helpers.ts";

const OPENSSL = haveOpenssl();

/** One test per dispatch mode, each with fresh certificates in a folder removed afterwards. */
function tlsTest(name: string, fn: (dispatch: string, certs: Certificates) => Promise<void>) {
  for (const dispatch of DISPATCHES) {
    Deno.test({
      name: `[${dispatch}] TLS: ${name}${OPENSSL ? "" : " (SKIPPED: openssl not installed)"}`,
      ignore: !OPENSSL,
      fn: async () => {
        const dir = await Deno.makeTempDir({ prefix: "echoserver-tls-" });
        try {
          await fn(dispatch, await makeCertificates(dir));
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      },
    });
  }
}

/** Starts the server with TLS from `files` (paths of a certificate and its key). */
function serveTls(
  dispatch: string,
  files: { cert: string; key: string },
  ...extra: string[]
): Promise<ServerProcess> {
  return startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--tls-cert",
    files.cert,
    "--tls-key",
    files.key,
    "--metrics-port",
    "0",
    ...extra,
  ]);
}

/** Starts the server with TLS from the test's first server certificate. */
function start(dispatch: string, certs: Certificates, ...extra: string[]): Promise<ServerProcess> {
  return serveTls(dispatch, certs.serverA, ...extra);
}

function connectTls(port: number, certs: Certificates, client?: { cert: string; key: string }) {
  return Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [Deno.readTextFileSync(certs.ca)],
    ...(client === undefined
      ? {}
      : { cert: Deno.readTextFileSync(client.cert), key: Deno.readTextFileSync(client.key) }),
  });
}

/** The subject CN of the certificate the server presents to a new connection. */
function servedName(port: number, certs: Certificates): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: [Deno.readTextFileSync(certs.ca)],
    }, () => {
      resolve(String((socket.getPeerCertificate() as { subject: { CN: string } }).subject.CN));
      socket.destroy();
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("closed before the TLS handshake finished")));
    // A handshake that never ends fails the test instead of hanging it.
    socket.setTimeout(10_000, () => {
      socket.destroy();
      reject(new Error("no TLS handshake within 10 s"));
    });
  });
}

/** The first 50 bytes of a ClientHello: a handshake record of 512 bytes, TLS 1.2, the rest. */
function partialClientHello(): Uint8Array {
  const hello = new Uint8Array(50).fill(0x2a);
  hello.set([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
  return hello;
}

/** Echoes one message on a connection and checks it. */
async function echoOnce(conn: Deno.Conn, message: Uint8Array): Promise<void> {
  const reading = readBytes(conn, message.length);
  await writeAll(conn, message);
  assert.deepEqual(await reading, message);
}

tlsTest(
  "echo is byte-exact, and a half-closed client gets its whole echo",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs);
    const conn = await connectTls(server.port, certs);
    try {
      const payload = pattern(1024 * 1024, 5);
      const reading = readBytes(conn, Infinity);
      await writeAll(conn, payload);
      await conn.closeWrite(); // TLS close_notify, then FIN: the server echoes the rest, then ends
      const echoed = await reading;
      assert.equal(echoed.length, payload.length);
      assert.ok(echoed.every((b, i) => b === payload[i]), "echo differs");
    } finally {
      conn.close();
    }
  },
);

tlsTest("openssl s_client gets its lines echoed", async (dispatch, certs) => {
  await using server = await start(dispatch, certs);
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-CAfile",
      certs.ca,
      "-servername",
      "localhost",
      "-verify_return_error",
      "-quiet",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(utf8("hello over openssl\nsecond line\nquit\n"));
  await writer.close();
  const output = await child.output();
  assert.equal(text(output.stdout), "hello over openssl\nsecond line\n", text(output.stderr));
});

tlsTest(
  "SIGHUP rotates the certificate under load: new connections get it, none fail",
  async (dispatch, certs) => {
    // The server reads these paths; the test swaps what is in them.
    const cert = `${certs.dir}/live.crt`;
    const key = `${certs.dir}/live.key`;
    await Deno.copyFile(certs.serverA.cert, cert);
    await Deno.copyFile(certs.serverA.key, key);
    await using server = await serveTls(dispatch, { cert, key });
    assert.equal(await servedName(server.port, certs), "server-a");
    using early = await connectTls(server.port, certs); // opened before any rotation
    await echoOnce(early, utf8("before\n"));
    let stop = false;
    let served = 0;
    let failed = 0;
    const failures: string[] = [];
    const load = Array.from({ length: 8 }, async (_, i) => {
      while (!stop) {
        try {
          const conn = await connectTls(server.port, certs);
          try {
            await echoOnce(conn, pattern(256, i));
          } finally {
            conn.close();
          }
          served++;
        } catch (error) {
          // Kept short: a loop that fails fast must not fill the test's memory.
          if (failed++ < 5) failures.push((error as Error).message.split("\n")[0]!);
          await delay(10);
        }
      }
    });
    try {
      for (
        const [round, next] of [[1, certs.serverB], [2, certs.serverA], [3, certs.serverB]] as const
      ) {
        await Deno.copyFile(next.cert, cert);
        await Deno.copyFile(next.key, key);
        server.process.kill("SIGHUP");
        await server.waitForLog(new RegExp(`(TLS certificate reloaded[\\s\\S]*){${round}}`));
        const expected = next === certs.serverA ? "server-a" : "server-b";
        assert.equal(await servedName(server.port, certs), expected, `after rotation ${round}`);
      }
    } finally {
      // The load stops however the rotations went, before the certificates are removed.
      stop = true;
      await Promise.all(load);
    }
    assert.equal(failed, 0, `${failed} connections failed during rotations: ${failures}`);
    assert.ok(served > 0, "the load never ran");
    await echoOnce(early, utf8("after three rotations\n")); // untouched by them
  },
);

tlsTest(
  "a bad file on SIGHUP is one line, and the old certificate stays in use",
  async (dispatch, certs) => {
    const cert = `${certs.dir}/live.crt`;
    await Deno.copyFile(certs.serverA.cert, cert);
    await using server = await serveTls(dispatch, { cert, key: certs.serverA.key });
    await Deno.writeTextFile(cert, "not a certificate\n");
    server.process.kill("SIGHUP");
    const line = await server.waitForLog(/SIGHUP: TLS reload failed[^\n]*/);
    assert.match(
      line,
      /still serving the previous certificate: Cannot use TLS certificate '.*live\.crt': not a PEM certificate/,
    );
    assert.equal(await servedName(server.port, certs), "server-a");
    using conn = await connectTls(server.port, certs);
    await echoOnce(conn, utf8("still fine\n"));
  },
);

tlsTest(
  "TLS ghosts (connect, maybe part of a ClientHello, then FIN) give their slots back at once",
  async (dispatch, certs) => {
    // A handshake timeout far longer than the test: only the peer's EOF can free the slots.
    await using server = await start(
      dispatch,
      certs,
      "--max-connections",
      "50",
      "--tls-handshake-timeout",
      "600",
    );
    const hello = partialClientHello();
    await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      if (i % 2 === 1) await writeAll(conn, hello);
      conn.close();
    }));
    await waitForTotal(server.metricsPort!, "echoserver_tls_handshake_failures_total", 50, 30_000);
    await waitForTotal(server.metricsPort!, "echoserver_connections_active", 0);
    using real = await connectTls(server.port, certs);
    await echoOnce(real, utf8("served after the ghosts\n"));
  },
);

tlsTest(
  "a drain counts the handshakes under way at the signal: the last line adds up",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs, "--tls-handshake-timeout", "3");
    using real = await connectTls(server.port, certs);
    await echoOnce(real, utf8("served\n"));
    // Ten clients in the middle of their handshakes (half a ClientHello, then nothing).
    const hello = partialClientHello();
    const stalled = await Promise.all(Array.from({ length: 10 }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, hello);
      return conn;
    }));
    try {
      // Accepted by now, or at the latest while the stop empties the listen queue.
      server.process.kill("SIGTERM");
      await server.waitForLog(/draining 11 connection/);
      await real.closeWrite();
      const status = await server.exited();
      assert.equal(status.code, 0, server.log());
      // The stalled ones end at the handshake timeout: finished, as far as the server is
      // concerned (the client never completed its part).
      assert.match(server.log(), /Stopped: 11 connection\(s\) finished, 0 idle closed, none cut/);
    } finally {
      for (const conn of stalled) conn.close();
    }
  },
);

tlsTest(
  "a plain-text client and a stalled handshake are dropped and counted; others served",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs, "--tls-handshake-timeout", "1");
    using plain = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(plain, utf8("GET / HTTP/1.0\r\n\r\n"));
    using stalled = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    // Meanwhile a TLS client is served at once.
    using good = await connectTls(server.port, certs);
    await echoOnce(good, utf8("served\n"));
    // Neither gets anything but the end of its connection (the stalled one after 1 s).
    assert.equal(text(await readBytes(plain, Infinity)).includes("GET"), false);
    assert.equal((await readBytes(stalled, Infinity)).length, 0);
    await waitForTotal(server.metricsPort!, "echoserver_tls_handshake_failures_total", 2);
    await server.waitForLog(/TLS handshake with 127\.0\.0\.1:\d+ failed/);
    const metrics = await scrape(server.metricsPort!);
    assert.equal(total(metrics, "echoserver_connections_active"), 1, "only the TLS client is open");
  },
);

for (const dispatch of DISPATCHES) {
  Deno.test({
    name: `[${dispatch}] TLS: unusable files at start-up exit 2 with one line${
      OPENSSL ? "" : " (SKIPPED: openssl not installed)"
    }`,
    ignore: !OPENSSL,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "echoserver-tls-" });
      try {
        const certs = await makeCertificates(dir);
        await Deno.writeTextFile(`${dir}/garbage.pem`, "garbage\n");
        // A file that never ends, and one far too large to be a certificate: refused before
        // they are read (they were read whole: 3 GB in 7 s from /dev/zero).
        await Deno.symlink("/dev/zero", `${dir}/zero.crt`);
        await Deno.writeFile(`${dir}/huge.crt`, new Uint8Array(5 * 1024 * 1024).fill(0x41));
        const cases: [string[], RegExp][] = [
          [
            ["--tls-cert", `${dir}/zero.crt`, "--tls-key", certs.serverA.key],
            /Cannot read TLS certificate '.*zero\.crt': not a regular file/,
          ],
          [
            ["--tls-cert", `${dir}/huge.crt`, "--tls-key", certs.serverA.key],
            /Cannot read TLS certificate '.*huge\.crt': 5242880 bytes, more than the 4 MiB/,
          ],
          [
            ["--tls-cert", `${dir}/missing.crt`, "--tls-key", certs.serverA.key],
            /Cannot read TLS certificate '.*missing\.crt': no such file/,
          ],
          [
            ["--tls-cert", certs.serverA.cert, "--tls-key", `${dir}/garbage.pem`],
            /Cannot use TLS key '.*garbage\.pem': not a PEM private key/,
          ],
          [
            ["--tls-cert", certs.serverA.cert, "--tls-key", certs.serverB.key],
            /Cannot use TLS key '.*server-b\.key': it does not match the certificate/,
          ],
          [["--tls-cert", certs.serverA.cert], /'--tls-cert' and '--tls-key' go together/],
          [["--tls-ca", certs.ca], /'--tls-ca' needs '--tls-cert' and '--tls-key'/],
        ];
        for (const [flags, reason] of cases) {
          const { code, stderr } = await runServer([
            "--dispatch",
            dispatch,
            "--port",
            "0",
            ...flags,
          ]);
          assert.equal(code, 2, stderr);
          assert.match(stderr, reason);
          assert.equal(stderr.trim().split("\n")[0]!.length > 0, true);
          assert.doesNotMatch(stderr, /^\s+at /m, "a stack trace");
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

tlsTest(
  "--tls-ca requires client certificates: with one, served; without, refused and counted",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs, "--tls-ca", certs.ca);
    using withCert = await connectTls(server.port, certs, certs.client);
    await echoOnce(withCert, utf8("mutual\n"));
    let refused: unknown;
    try {
      const conn = await connectTls(server.port, certs);
      try {
        await echoOnce(conn, utf8("no certificate\n"));
      } finally {
        conn.close();
      }
    } catch (error) {
      refused = error;
    }
    assert.ok(refused instanceof Error, "a client without a certificate was served");
    await waitForTotal(server.metricsPort!, "echoserver_tls_handshake_failures_total", 1);
  },
);

tlsTest(
  "--proxy-protocol reads the PROXY header in clear, then serves TLS",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs, "--proxy-protocol", "--log-level", "debug");
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(tcp, utf8("PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"));
    const conn = await Deno.startTls(tcp, {
      hostname: "localhost",
      caCerts: [Deno.readTextFileSync(certs.ca)],
    });
    try {
      await echoOnce(conn, utf8("behind a balancer\n"));
    } finally {
      conn.close();
    }
    await server.waitForLog(/Connection \d+ from 203\.0\.113\.7:40000 to worker-\d/);
  },
);

tlsTest(
  "at --shutdown-timeout a client with its echo pending is cut, never ended cleanly",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs, "--shutdown-timeout", "1");
    const conn = await connectTls(server.port, certs);
    try {
      // Sends far more than the buffers hold and reads none of its echo.
      const sending = writeAll(conn, pattern(64 * 1024 * 1024, 8)).catch((e) => e);
      await waitForTotal(server.metricsPort!, "echoserver_connections_active", 1);
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 3, server.log());
      await sending;
      // Reading what arrived must end in an error (reset, or TLS's missing close_notify), not
      // in a clean end of the session that would make a short echo look complete.
      let error: unknown;
      try {
        while ((await conn.read(new Uint8Array(64 * 1024))) !== null) { /* drain */ }
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof Error, "the cut echo ended cleanly");
    } finally {
      conn.close();
    }
  },
);

tlsTest(
  "a client that reads nothing for a while still gets its whole echo",
  async (dispatch, certs) => {
    await using server = await start(dispatch, certs);
    const conn = await connectTls(server.port, certs);
    try {
      const payload = pattern(4 * 1024 * 1024, 11);
      const sending = writeAll(conn, payload);
      // The echo backs up into the server, which stops reading; then the client reads it all.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const reading = readBytes(conn, payload.length);
      await sending;
      const echoed = await reading;
      assert.equal(echoed.length, payload.length);
      assert.ok(echoed.every((b, i) => b === payload[i]), "echo differs");
    } finally {
      conn.close();
    }
  },
);
