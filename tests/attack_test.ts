/**
 * Attacks from the outside, each bounded and on loopback: a slowloris against the per-address
 * cap, many slow readers against the buffer budget, a `hash` flood against a bystander, and a
 * reset that must really be a reset.
 *
 * @module
 */

import assert from "node:assert/strict";
import { answer } from "../lib/handlers/builtin/hash.ts";
import { resetAndClose } from "../lib/sockets/socket_reset.ts";
import { MAX_READ } from "../lib/sockets/read_size.ts";
import { WINDOW } from "../lib/dispatch/main/frames.ts";
import { HIGH_WATER } from "../lib/dispatch/kernel/worker/owned_socket.ts";
import {
  bothModes,
  delay,
  pattern,
  readBytes,
  scrape,
  startServer,
  text,
  utf8,
  waitForMetric,
  writeAll,
} from "./helpers.ts";

/** Starts the server with 2 workers in `dispatch` mode plus `flags`. */
function serve(dispatch: string, ...flags: string[]) {
  return startServer(["--dispatch", dispatch, "--workers", "2", ...flags]);
}

/** Connects from 127.0.0.1 or ::1: on loopback these are the two client addresses we have. */
function connectFrom(address: "127.0.0.1" | "::1", port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: address, port });
}

/**
 * For a connection that has sent something: whether the server refused it (EOF or reset on
 * the first read) rather than echoing.
 */
async function refused(conn: Deno.Conn): Promise<boolean> {
  try {
    return await conn.read(new Uint8Array(1)) === null;
  } catch {
    return true;
  }
}

bothModes(
  "slowloris: --max-connections-per-ip keeps new clients from other addresses served",
  async (dispatch) => {
    // The attacker's address may hold 20 of the 30 places; without the cap its 40 connections
    // would take all 30 and lock everyone else out.
    await using server = await serve(
      dispatch,
      "--max-connections",
      "30",
      "--max-connections-per-ip",
      "20",
      "--metrics-port",
      "0",
    );
    const attack: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 40; i++) attack.push(await connectFrom("127.0.0.1", server.port));
      // One byte each, as a slowloris trickles, so every connection is really open and busy.
      for (const conn of attack) await conn.write(utf8("x")).catch(() => 0);
      const samples = await waitForMetric(
        server.metricsPort!,
        "echoserver_connections_rejected_per_ip_total",
        20,
      );
      assert.equal(samples.get("echoserver_connections_rejected_total"), 0);
      let served = 0;
      for (let i = 0; i < 8; i++) {
        using client = await connectFrom("::1", server.port);
        await writeAll(client, utf8(`hello ${i}\n`));
        if (text(await readBytes(client, 8)) === `hello ${i}\n`) served++;
      }
      assert.equal(served, 8);
      // A refused attacker connection is closed at once; an admitted one is served.
      const admitted = [];
      for (const conn of attack) admitted.push(!(await refused(conn)));
      assert.equal(admitted.filter((a) => a).length, 20);
    } finally {
      for (const conn of attack) conn.close();
    }
    // Closing frees the address's places.
    await waitForMetric(
      server.metricsPort!,
      'echoserver_connections_closed_total{reason="done"}',
      28,
    );
    using again = await connectFrom("127.0.0.1", server.port);
    await writeAll(again, utf8("back\n"));
    assert.equal(text(await readBytes(again, 5)), "back\n");
  },
);

bothModes(
  "--max-connections-per-ip with --proxy-protocol counts the client the header names",
  async (dispatch) => {
    await using server = await serve(
      dispatch,
      "--proxy-protocol",
      "--max-connections-per-ip",
      "2",
    );
    const open: Deno.TcpConn[] = [];
    const viaProxy = async (client: string) => {
      const conn = await connectFrom("127.0.0.1", server.port);
      open.push(conn);
      await writeAll(conn, utf8(`PROXY TCP4 ${client} 192.0.2.99 40000 5555\r\nping\n`));
      return conn;
    };
    try {
      // All arrive from the proxy's one address; two clients behind it each get their two.
      for (const client of ["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"]) {
        const conn = await viaProxy(client);
        assert.equal(text(await readBytes(conn, 5)), "ping\n", client);
      }
      assert.ok(await refused(await viaProxy("192.0.2.1")), "a third from 192.0.2.1");
    } finally {
      for (const conn of open) conn.close();
    }
  },
);

/** Slow readers in the --max-buffered test. */
const CLIENTS = 20;

/** Sends 8 KiB pieces on `conn` until `stopped()` or the connection fails; reads nothing. */
async function sendUntil(conn: Deno.Conn, seed: number, stopped: () => boolean): Promise<void> {
  const piece = pattern(8 * 1024, seed);
  try {
    while (!stopped()) await writeAll(conn, piece);
  } catch {
    // Closed by the test at the end.
  }
}

/**
 * Waits until the server has taken in all it will from clients that do not read (the
 * kernel's buffers are full): bytes have arrived and their count has stood still for a second.
 * (On a busy machine the clients may not have sent anything for a second yet: that is not
 * "stood still".)
 *
 * @returns The peak of `echoserver_buffered_bytes` seen meanwhile.
 */
async function peakBufferedOnceSettled(metricsPort: number): Promise<number> {
  let last = -1;
  let peak = 0;
  const deadline = Date.now() + 60_000;
  for (let stable = 0; stable < 4;) {
    assert.ok(Date.now() < deadline, "the server's intake never settled");
    await delay(250);
    const samples = await scrape(metricsPort);
    const received = samples.get("echoserver_received_bytes_total") ?? 0;
    peak = Math.max(peak, samples.get("echoserver_buffered_bytes") ?? 0);
    stable = received === last && received > 0 ? stable + 1 : 0;
    last = received;
  }
  return peak;
}

bothModes(
  "a slow reader holds at most one window in the server, input and output together",
  async (dispatch) => {
    await using server = await serve(dispatch, "--metrics-port", "0");
    const conn = await connectFrom("127.0.0.1", server.port);
    let stop = false;
    const sending = sendUntil(conn, 1, () => stop);
    try {
      const peak = await peakBufferedOnceSettled(server.metricsPort!);
      // Past the mark the connection stops being read; the read in hand still lands.
      const bound = (dispatch === "kernel" ? HIGH_WATER : WINDOW) + MAX_READ;
      assert.ok(peak > 0, "the gauge moved");
      assert.ok(peak <= bound, `buffered ${peak} B, bound ${bound} B`);
    } finally {
      stop = true;
      conn.close();
      await sending;
    }
  },
);

bothModes(
  "slow readers: --max-buffered bounds what the server holds, a bystander is still served",
  async (dispatch) => {
    await using server = await serve(
      dispatch,
      "--max-buffered",
      "1",
      "--metrics-port",
      "0",
    );
    const readers: Deno.TcpConn[] = [];
    const sending: Promise<unknown>[] = [];
    let stop = false;
    try {
      // 20 clients send in 8 KiB pieces until told to stop, and read none of the echo. The
      // kernel's socket buffers take tens of MB of each (loopback buffers grow to 32 MiB here)
      // before the server must hold anything; without the budget it would then hold a window
      // of each.
      for (let i = 0; i < CLIENTS; i++) {
        const conn = await connectFrom("127.0.0.1", server.port);
        readers.push(conn);
        sending.push(sendUntil(conn, i, () => stop));
      }
      const peak = await peakBufferedOnceSettled(server.metricsPort!);
      // The budget is 1 MiB; past it each heavy connection may still finish the chunk in hand
      // (up to 64 KiB in kernel mode, a window's remainder and a read in main mode).
      const each = dispatch === "kernel" ? MAX_READ : WINDOW + MAX_READ;
      const bound = 1024 * 1024 + CLIENTS * each;
      assert.ok(peak > 0, "the gauge moved");
      assert.ok(peak <= bound, `buffered ${peak} B, bound ${bound} B`);
      using bystander = await connectFrom("::1", server.port);
      await writeAll(bystander, utf8("still here\n"));
      assert.equal(text(await readBytes(bystander, 11)), "still here\n");
    } finally {
      stop = true;
      for (const conn of readers) conn.close();
      await Promise.all(sending);
    }
    // Everything held is given back when the slow readers leave.
    await waitForMetric(server.metricsPort!, "echoserver_buffered_bytes", 0);
  },
);

Deno.test("resetAndClose() sends a reset where a plain close would end a short echo with a FIN", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  // Output pending that the client has not read: 16 MiB cannot fit in loopback's buffers.
  const outcome = async (close: (conn: Deno.Conn) => void) => {
    using client = await Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept();
    const writing = server.write(new Uint8Array(16 * 1024 * 1024)).catch(() => 0);
    await delay(200);
    close(server);
    await writing;
    let got = 0;
    try {
      const buffer = new Uint8Array(64 * 1024);
      for (let n = await client.read(buffer); n !== null; n = await client.read(buffer)) got += n;
      return `EOF after ${got} B`;
    } catch (error) {
      return (error as Error).name;
    }
  };
  try {
    assert.match(await outcome((conn) => conn.close()), /^EOF after \d+ B$/);
    assert.equal(await outcome((conn) => resetAndClose(conn)), "ConnectionReset");
  } finally {
    listener.close();
  }
});

bothModes(
  "hash flood: a bystander on the flooded worker is answered while the flood still runs",
  async (dispatch) => {
    // One worker, so that the bystander shares it with the flood.
    await using server = await startServer([
      "--dispatch",
      dispatch,
      "--workers",
      "1",
      "--handler",
      "hash",
    ]);
    const lines = 100;
    const flood = (i: number) => {
      let text = "";
      for (let k = 0; k < lines; k++) text += `#2500 flood ${i}.${k}\n`; // the most rounds a line may ask
      return utf8(text);
    };
    // Two flooders send 100 costly lines each, in one write: some 2 s of work queued at once.
    const flooders = await Promise.all(
      [0, 1].map(() => Deno.connect({ hostname: "127.0.0.1", port: server.port })),
    );
    try {
      let floodReplies = 0;
      const floods = flooders.map(async (conn, i) => {
        await writeAll(conn, flood(i));
        const decoder = new TextDecoder();
        const buffer = new Uint8Array(64 * 1024);
        let seen = "";
        let mine = 0;
        while (mine < lines) {
          const n = await conn.read(buffer);
          if (n === null) break;
          seen += decoder.decode(buffer.subarray(0, n), { stream: true });
          const complete = seen.split("\n").length - 1;
          mine += complete;
          floodReplies += complete;
          seen = seen.slice(seen.lastIndexOf("\n") + 1);
        }
      });
      // Flood answers streaming in prove the worker is in the middle of the flood.
      while (floodReplies === 0) await delay(5);
      using bystander = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(bystander, utf8("abc\n"));
      const reply = text(await readBytes(bystander, 65));
      const whenAnswered = floodReplies;
      assert.equal(reply, answer(utf8("abc")) + "\n");
      await Promise.all(floods);
      // Without yielding between lines, the worker would finish the other flooder's whole chunk
      // (1 s of work) before it read the bystander's line: all 200 answers before its own.
      assert.ok(
        whenAnswered < lines,
        `the bystander was answered only after ${whenAnswered} flood lines`,
      );
      assert.equal(floodReplies, 2 * lines);
    } finally {
      for (const conn of flooders) conn.close();
    }
  },
);
