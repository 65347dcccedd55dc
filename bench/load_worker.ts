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

import { answer } from "../lib/handlers/builtin/hash.ts";

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
  /**
   * The first connection is a bystander: 64 B every 10 ms instead of the closed loop; the
   * reported latencies are its own.
   */
  probe?: boolean;
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

/**
 * One round trip: send, read the whole reply, and check it.
 *
 * @returns Undefined if the reply was the one expected, else what was wrong with it.
 */
type RoundTrip = () => Promise<string | undefined>;

/** Sends and reads until `length` bytes have arrived into `into`. */
async function exchange(conn: Deno.Conn, message: Uint8Array, into: Uint8Array, length: number) {
  let written = 0;
  while (written < message.length) written += await conn.write(message.subarray(written));
  let got = 0;
  while (got < length) {
    const n = await conn.read(into.subarray(got, length));
    if (n === null) throw new Error("server closed the connection");
    got += n;
  }
}

/**
 * Runs round trips until the end, counting them and their latencies in the measured window;
 * stops the connection at its first wrong reply or error.
 *
 * @param totals Where to count.
 * @param trip One round trip.
 * @param pace Between round trips (a bystander's pause); none for a closed loop.
 */
async function loop(totals: Totals, trip: RoundTrip, pace?: () => Promise<void>) {
  try {
    while (!totals.stopping) {
      const started = performance.now();
      const wrong = await trip();
      const elapsed = performance.now() - started;
      if (wrong !== undefined) {
        totals.mismatches++;
        totals.firstError ??= wrong;
        break;
      }
      totals.progress++;
      if (totals.measuring) {
        if (totals.roundTrips < totals.latencies.length) {
          totals.latencies[totals.roundTrips] = elapsed;
        }
        totals.roundTrips++;
      }
      await pace?.();
    }
  } catch (error) {
    if (!totals.stopping) {
      totals.errors++;
      totals.firstError ??= (error as Error).message;
    }
  }
}

/** The round trips of one connection, by the job's mode. */
function roundTrip(conn: Deno.Conn, job: LoadJob, index: number): RoundTrip {
  if (job.mode === "memcache") {
    const versions: number[] = [];
    const buffer = new Uint8Array(job.size + 256);
    let counter = 0;
    return async () => {
      const { request, reply } = memcacheStep(job, index, counter++, versions);
      await exchange(conn, request, buffer, reply.length);
      if (same(reply, buffer.subarray(0, reply.length))) return undefined;
      return `reply differs: ${
        JSON.stringify(new TextDecoder().decode(buffer.subarray(0, Math.min(reply.length, 80))))
      }`;
    };
  }
  const { messages, replies, stamped } = script(job, index);
  const buffers = replies.map((reply) => new Uint8Array(reply.length));
  let counter = 0;
  return async () => {
    const turn = counter % messages.length;
    const message = messages[turn]!;
    if (stamped) stamp(message, counter);
    counter++;
    await exchange(conn, message, buffers[turn]!, replies[turn]!.length);
    return same(replies[turn]!, buffers[turn]!) ? undefined : "reply differs from the one expected";
  };
}

/** A connection to the server under test, over TLS when the job says so. */
function connect(job: LoadJob): Promise<Deno.TcpConn | Deno.TlsConn> {
  if (job.tlsCa === undefined) return Deno.connect({ hostname: job.hostname, port: job.port });
  return Deno.connectTls({ hostname: job.hostname, port: job.port, caCerts: [job.tlsCa] });
}

function newTotals(): Totals {
  return {
    measuring: false,
    stopping: false,
    roundTrips: 0,
    progress: 0,
    errors: 0,
    mismatches: 0,
    latencies: new Float32Array(4_000_000),
    firstError: undefined,
  };
}

async function run(job: LoadJob, post: (report: LoadReport, transfer?: Transferable[]) => void) {
  const totals = newTotals();
  /** The bystander's, when the job has one (`probe`). */
  const probeTotals = newTotals();
  const phase = (measuring: boolean, stopping: boolean) => {
    for (const t of [totals, probeTotals]) Object.assign(t, { measuring, stopping });
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
  const loops = conns.map((conn, i) => {
    if (!(job.probe && i === 0)) return loop(totals, roundTrip(conn, job, i));
    // The bystander: 64 B every 10 ms among the bulk connections; its latencies are the ones
    // recorded, and the bulk connections count their bytes only.
    return loop(
      probeTotals,
      roundTrip(conn, { ...job, size: 64, mode: "echo" }, i),
      () => new Promise((resolve) => setTimeout(resolve, 10)),
    );
  });
  const progress = setInterval(() => post({ type: "progress", roundTrips: totals.progress }), 500);
  await new Promise((resolve) => setTimeout(resolve, job.warmupMs));
  phase(true, false);
  await new Promise((resolve) => setTimeout(resolve, job.durationMs));
  phase(false, true);
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
  const timed = job.probe ? probeTotals : totals;
  const latencies = timed.latencies.slice(0, Math.min(timed.roundTrips, timed.latencies.length));
  post({
    type: "done",
    roundTrips: totals.roundTrips,
    errors: totals.errors + probeTotals.errors,
    mismatches: totals.mismatches + probeTotals.mismatches,
    connectFailures,
    latencies,
    firstError: totals.firstError ?? probeTotals.firstError,
  }, [latencies.buffer]);
}

const scope = self as unknown as {
  onmessage: (event: MessageEvent<LoadJob>) => void;
  postMessage: (message: LoadReport, transfer?: Transferable[]) => void;
};
scope.onmessage = (event) => {
  run(event.data, (report, transfer) => scope.postMessage(report, transfer ?? []));
};
