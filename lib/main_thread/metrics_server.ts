/**
 * The HTTP endpoint that serves `/metrics`: one request per connection, answered and closed, on
 * the same accept loop as the echo listener, so that a shortage of descriptors makes it back off
 * and retry instead of ending the process (`Deno.serve`'s own accept loop cannot be caught when
 * it fails with EMFILE). It is small on purpose: a scraper sends `GET /metrics` and reads the
 * answer; nothing else needs serving.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { closeQuietly } from "../sockets/address.ts";
import { acceptLoop } from "../sockets/accept_loop.ts";

/** Longest request head read; a longer one is refused with 431. */
const MAX_HEAD = 8 * 1024;
/** How long a client may take to send its request head. */
const HEADER_TIMEOUT_MS = 5000;
/** How long the answer may take to be written (a scraper that does not read is dropped). */
const WRITE_TIMEOUT_MS = 10_000;
/** Most scrape connections open at once; more are closed on accept. */
const MAX_CONNECTIONS = 16;

const encoder = new TextEncoder();

/** Options for {@linkcode serveMetricsHttp}. */
export interface MetricsHttpOptions {
  /** Address to bind. */
  hostname: string;
  /** Port; 0 picks a free one. */
  port: number;
  /** The body of each `/metrics` answer, made per scrape. */
  render: () => string;
  /** Where accept failures are reported (at most one line a second). */
  log: Logger;
}

/** A running metrics endpoint. */
export interface MetricsHttpServer {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Stops listening and closes open scrape connections. */
  shutdown(): Promise<void>;
}

/**
 * Listens and serves `GET /metrics` (and `HEAD`) in the Prometheus text format.
 *
 * @param options Address, body, log.
 * @returns The running endpoint.
 * @throws {Deno.errors.AddrInUse} And the other listen errors, if the address is unusable.
 */
export function serveMetricsHttp(options: MetricsHttpOptions): MetricsHttpServer {
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const open = new Set<Deno.TcpConn>();
  let stopping = false;
  const done = acceptLoop(listener, {
    onConnection: (conn) => {
      if (open.size >= MAX_CONNECTIONS) {
        closeQuietly(conn);
        return;
      }
      open.add(conn);
      _answer(conn, options.render).finally(() => {
        open.delete(conn);
        closeQuietly(conn);
      });
    },
    onFailure: () => {},
    stopping: () => stopping,
    log: options.log,
  });
  return {
    addr: listener.addr,
    async shutdown() {
      stopping = true;
      closeQuietly(listener);
      await done;
      for (const conn of open) closeQuietly(conn);
    },
  };
}

/** Reads one request head and writes the answer. Never throws. */
async function _answer(conn: Deno.TcpConn, render: () => string): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), HEADER_TIMEOUT_MS);
  let head: string;
  try {
    head = await _readHead(conn);
  } catch {
    return; // silent, late, or gone: the connection is closed by the caller
  } finally {
    clearTimeout(timer);
  }
  const [method = "", target = ""] = head.split("\r\n", 1)[0]!.split(" ");
  const path = target.split("?", 1)[0];
  let status = "200 OK";
  let body = "";
  const headers: string[] = ["content-type: text/plain; version=0.0.4; charset=utf-8"];
  if (head.length > MAX_HEAD) {
    status = "431 Request Header Fields Too Large";
  } else if (path !== "/metrics") {
    status = "404 Not Found";
    body = "Not found: try /metrics\n";
  } else if (method !== "GET" && method !== "HEAD") {
    status = "405 Method Not Allowed";
    body = "Method not allowed\n";
    headers.push("allow: GET, HEAD");
  } else {
    body = render();
  }
  const bytes = encoder.encode(body);
  const response = encoder.encode(
    `HTTP/1.1 ${status}\r\n${headers.join("\r\n")}\r\ncontent-length: ${bytes.length}\r\n` +
      `connection: close\r\n\r\n`,
  );
  const writeTimer = setTimeout(() => closeQuietly(conn), WRITE_TIMEOUT_MS);
  try {
    await _writeAll(conn, response);
    if (method !== "HEAD") await _writeAll(conn, bytes);
    await conn.closeWrite();
  } catch {
    // The scraper went away or was too slow.
  } finally {
    clearTimeout(writeTimer);
  }
}

/** Reads until the blank line that ends a request head (or more than `MAX_HEAD` bytes). */
async function _readHead(conn: Deno.TcpConn): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(2048);
  let head = "";
  while (!head.includes("\r\n\r\n") && head.length <= MAX_HEAD) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("closed before the request was complete");
    head += decoder.decode(buffer.subarray(0, n), { stream: true });
  }
  return head;
}

async function _writeAll(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}
