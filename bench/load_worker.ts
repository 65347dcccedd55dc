/**
 * One thread of the load generator: opens its share of the connections and drives each in a
 * closed loop (send a message, wait for its whole echo, verify every byte, repeat), recording
 * round trips and latencies during the measured window. In `memcache` mode each round trip is
 * one `get` or `set` of the memcached text protocol, and every reply is checked byte for byte
 * against what the connection last stored.
 *
 * Runs inside a worker started by `bench/bench.ts`.
 *
 * @module
 */

import { answer } from "../lib/handlers/hash.ts";

/** Work for one load worker. */
export interface LoadJob {
  type: "run";
  /**
   * `echo`: expect each message back. `hash`: send `#rounds <text>` lines to the hash handler
   * and expect each line's digest. `memcache`: a get/set mix on keys of the connection's own.
   */
  mode: "echo" | "hash" | "memcache";
  /** For `hash`: SHA-256 rounds per line. */
  rounds: number;
  hostname: string;
  port: number;
  connections: number;
  /** Message size in bytes (at least 8); in `memcache` mode, the value size. */
  size: number;
  warmupMs: number;
  durationMs: number;
  /** Distinguishes this worker's messages from other workers'. */
  seed: number;
  /** Connect with TLS, trusting this CA certificate (PEM); plain TCP when absent. */
  tlsCa?: string;
}

/** What a load worker reports. */
export type LoadReport =
  | { type: "progress"; roundTrips: number }
  | {
    type: "done";
    roundTrips: number;
    errors: number;
    mismatches: number;
    connectFailures: number;
    /** Round-trip latencies in ms, measured window only. */
    latencies: Float32Array;
    firstError: string | undefined;
  };

const CONNECT_CONCURRENCY = 200;
const HEX = new TextEncoder().encode("0123456789abcdef");

interface Totals {
  measuring: boolean;
  stopping: boolean;
  roundTrips: number;
  progress: number;
  errors: number;
  mismatches: number;
  latencies: Float32Array;
  firstError: string | undefined;
}

/** A message body with no newline, so that no line of it can ever read `quit`. */
function makeMessage(size: number, seed: number): Uint8Array {
  const message = new Uint8Array(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const byte = x >>> 24;
    message[i] = byte === 0x0a ? 0x0b : byte;
  }
  return message;
}

/** Stamps the round-trip counter into the first 8 bytes, so a stale echo cannot pass. */
function stamp(message: Uint8Array, counter: number): void {
  for (let i = 0; i < 8; i++) message[i] = HEX[(counter >>> (28 - 4 * i)) & 0xf]!;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const words = a.length >>> 2;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && words > 16) {
    const a32 = new Uint32Array(a.buffer, a.byteOffset, words);
    const b32 = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let i = 0; i < words; i++) if (a32[i] !== b32[i]) return false;
    for (let i = words * 4; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Messages a connection sends in turn, and the reply expected for each. */
interface Script {
  messages: Uint8Array[];
  replies: Uint8Array[];
  /** Whether to stamp a counter into each message (echo only: its reply is the message). */
  stamped: boolean;
}

const HASH_LINES_PER_CONNECTION = 4;

function script(job: LoadJob, index: number): Script {
  const seed = job.seed * 100_003 + index;
  if (job.mode === "echo") {
    const message = makeMessage(job.size, seed);
    return { messages: [message], replies: [message], stamped: true };
  }
  // Expected digests cost as much as the server's work: compute a few per connection once,
  // then cycle through them (a stale or misrouted reply still shows as a mismatch).
  const encoder = new TextEncoder();
  const messages: Uint8Array[] = [];
  const replies: Uint8Array[] = [];
  for (let k = 0; k < HASH_LINES_PER_CONNECTION; k++) {
    const text = `${seed}-${k}-${"x".repeat(Math.max(0, job.size - 30))}`;
    messages.push(encoder.encode(`#${job.rounds} ${text}\n`));
    replies.push(encoder.encode(answer(encoder.encode(`#${job.rounds} ${text}`)) + "\n"));
  }
  return { messages, replies, stamped: false };
}

/** Keys each `memcache` connection cycles through (its own: no other connection writes them). */
const MEMCACHE_KEYS = 16;
/** One round trip in this many is a `set`; the rest are `get`s, as in a read-mostly cache. */
const MEMCACHE_SET_EVERY = 10;

/**
 * The next memcache round trip of a connection: the request, and the exact reply expected from
 * what the connection stored last (a miss before its first set of a key).
 */
function memcacheStep(
  job: LoadJob,
  index: number,
  counter: number,
  versions: number[],
): { request: Uint8Array; reply: Uint8Array } {
  const slot = (counter * 7) % MEMCACHE_KEYS;
  const key = `bench:${job.seed}:${index}:${slot}`;
  if (counter % MEMCACHE_SET_EVERY === 0 || versions[slot] === undefined) {
    const version = counter;
    versions[slot] = version;
    const value = makeMessage(job.size, job.seed * 1_000_003 + index * 101 + version);
    const request = concat(encoder.encode(`set ${key} 0 0 ${value.length}\r\n`), value, CRLF);
    return { request, reply: encoder.encode("STORED\r\n") };
  }
  const value = makeMessage(job.size, job.seed * 1_000_003 + index * 101 + versions[slot]!);
  return {
    request: encoder.encode(`get ${key}\r\n`),
    reply: concat(encoder.encode(`VALUE ${key} 0 ${value.length}\r\n`), value, END),
  };
}

const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");
const END = encoder.encode("\r\nEND\r\n");

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function drive(conn: Deno.Conn, job: LoadJob, index: number, totals: Totals) {
  if (job.mode === "memcache") return driveMemcache(conn, job, index, totals);
  const { messages, replies, stamped } = script(job, index);
  const buffers = replies.map((reply) => new Uint8Array(reply.length));
  let counter = 0;
  try {
    while (!totals.stopping) {
      const turn = counter % messages.length;
      const message = messages[turn]!;
      const expected = replies[turn]!;
      const echo = buffers[turn]!;
      if (stamped) stamp(message, counter);
      counter++;
      const started = performance.now();
      let written = 0;
      while (written < message.length) written += await conn.write(message.subarray(written));
      let got = 0;
      while (got < echo.length) {
        const n = await conn.read(echo.subarray(got));
        if (n === null) throw new Error("server closed the connection");
        got += n;
      }
      const elapsed = performance.now() - started;
      if (!same(expected, echo)) {
        totals.mismatches++;
        totals.firstError ??= "reply differs from the one expected";
        break;
      }
      totals.progress++;
      if (totals.measuring) {
        if (totals.roundTrips < totals.latencies.length) {
          totals.latencies[totals.roundTrips] = elapsed;
        }
        totals.roundTrips++;
      }
    }
  } catch (error) {
    if (!totals.stopping) {
      totals.errors++;
      totals.firstError ??= (error as Error).message;
    }
  }
}

/** The memcache closed loop: one verified get or set per round trip. */
async function driveMemcache(conn: Deno.Conn, job: LoadJob, index: number, totals: Totals) {
  const versions: number[] = [];
  const buffer = new Uint8Array(job.size + 256);
  let counter = 0;
  try {
    while (!totals.stopping) {
      const { request, reply } = memcacheStep(job, index, counter++, versions);
      const started = performance.now();
      let written = 0;
      while (written < request.length) written += await conn.write(request.subarray(written));
      let got = 0;
      while (got < reply.length) {
        const n = await conn.read(buffer.subarray(got, reply.length));
        if (n === null) throw new Error("server closed the connection");
        got += n;
        // A wrong answer may be shorter than the right one: stop at its first wrong byte.
        if (!same(reply.subarray(got - n, got), buffer.subarray(got - n, got))) break;
      }
      const elapsed = performance.now() - started;
      if (!same(reply, buffer.subarray(0, reply.length))) {
        totals.mismatches++;
        totals.firstError ??= `reply differs: ${
          JSON.stringify(new TextDecoder().decode(buffer.subarray(0, Math.min(got, 80))))
        }`;
        break;
      }
      totals.progress++;
      if (totals.measuring) {
        if (totals.roundTrips < totals.latencies.length) {
          totals.latencies[totals.roundTrips] = elapsed;
        }
        totals.roundTrips++;
      }
    }
  } catch (error) {
    if (!totals.stopping) {
      totals.errors++;
      totals.firstError ??= (error as Error).message;
    }
  }
}

/** A connection to the server under test, over TLS when the job says so. */
function connect(job: LoadJob): Promise<Deno.TcpConn | Deno.TlsConn> {
  if (job.tlsCa === undefined) return Deno.connect({ hostname: job.hostname, port: job.port });
  return Deno.connectTls({ hostname: job.hostname, port: job.port, caCerts: [job.tlsCa] });
}

async function run(job: LoadJob, post: (report: LoadReport, transfer?: Transferable[]) => void) {
  const totals: Totals = {
    measuring: false,
    stopping: false,
    roundTrips: 0,
    progress: 0,
    errors: 0,
    mismatches: 0,
    latencies: new Float32Array(4_000_000),
    firstError: undefined,
  };
  const conns: Deno.Conn[] = [];
  let connectFailures = 0;
  for (let i = 0; i < job.connections; i += CONNECT_CONCURRENCY) {
    const batch = Array.from(
      { length: Math.min(CONNECT_CONCURRENCY, job.connections - i) },
      () => connect(job),
    );
    for (const result of await Promise.allSettled(batch)) {
      if (result.status === "fulfilled") {
        if ("setNoDelay" in result.value) result.value.setNoDelay(true);
        conns.push(result.value);
      } else {
        connectFailures++;
        totals.firstError ??= `connect: ${(result.reason as Error).message}`;
      }
    }
  }
  const loops = conns.map((conn, i) => drive(conn, job, i, totals));
  const progress = setInterval(() => post({ type: "progress", roundTrips: totals.progress }), 500);
  await new Promise((resolve) => setTimeout(resolve, job.warmupMs));
  totals.measuring = true;
  await new Promise((resolve) => setTimeout(resolve, job.durationMs));
  totals.measuring = false;
  totals.stopping = true;
  clearInterval(progress);
  // Let round trips in flight finish; one that never does counts as an error (a stall).
  const settled = await Promise.race([
    Promise.all(loops).then(() => true),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 15_000)),
  ]);
  if (!settled) {
    totals.errors++;
    totals.firstError ??= "round trips still unanswered 15 s after the end";
  }
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
  const latencies = totals.latencies.slice(0, Math.min(totals.roundTrips, totals.latencies.length));
  post({
    type: "done",
    roundTrips: totals.roundTrips,
    errors: totals.errors,
    mismatches: totals.mismatches,
    connectFailures,
    latencies,
    firstError: totals.firstError,
  }, [latencies.buffer]);
}

const scope = self as unknown as {
  onmessage: (event: MessageEvent<LoadJob>) => void;
  postMessage: (message: LoadReport, transfer?: Transferable[]) => void;
};
scope.onmessage = (event) => {
  run(event.data, (report, transfer) => scope.postMessage(report, transfer ?? []));
};
