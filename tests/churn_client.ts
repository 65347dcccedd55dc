/**
 * Clients that notice a lost connection, for the reload and hand-over tests: a loop opening
 * short connections continuously (each reads the greeting of a versioned handler if asked,
 * echoes a message and checks every byte, then half-closes and waits for the server's end), and
 * long-lived connections that keep echoing mid-stream until told to finish. Every failure is
 * counted by kind: refused, reset, short (the server ended before the whole answer) or other.
 *
 * Runs in the test process (or in a scenario script inside a network namespace); never in the
 * server.
 *
 * @module
 */

import { pattern, readBytes, writeAll } from "./helpers.ts";

/** How each connection ended. */
export interface ChurnReport {
  /** Connections that completed, byte-exact. */
  ok: number;
  refused: number;
  reset: number;
  /** The server ended the connection before the whole greeting or echo. */
  short: number;
  other: number;
  /** The first few failures, one line each. */
  failures: string[];
  /** Greetings seen (the handler's version), in the order the connections started. */
  versions: string[];
}

/** Options for {@linkcode Churn} and {@linkcode Stream}. */
export interface ClientOptions {
  /** Address of the server. */
  hostname?: string;
  /** Read a greeting line first (a versioned handler's), and record it. */
  greeting?: boolean;
  /** Bytes each message has. */
  size?: number;
}

const READ_DEADLINE_MS = 10_000;
const MESSAGE = 256;

function emptyReport(): ChurnReport {
  return { ok: 0, refused: 0, reset: 0, short: 0, other: 0, failures: [], versions: [] };
}

/** Sorts a failure into its kind. */
function count(report: ChurnReport, error: unknown): void {
  const message = (error as Error)?.message?.split("\n")[0] ?? String(error);
  if (error instanceof Deno.errors.ConnectionRefused) report.refused++;
  else if (
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe
  ) report.reset++;
  else if (error instanceof ShortAnswer) report.short++;
  else report.other++;
  if (report.failures.length < 5) report.failures.push(message);
}

/** The server ended a connection before the whole answer. */
class ShortAnswer extends Error {}

/** Reads exactly `n` bytes, or throws: a reset as such, an early end as {@linkcode ShortAnswer}. */
async function readExactly(conn: Deno.Conn, n: number, what: string): Promise<Uint8Array> {
  const bytes = await readBytesOrReset(conn, n);
  if (bytes.length < n) throw new ShortAnswer(`${what}: ${bytes.length} of ${n} bytes, then EOF`);
  return bytes;
}

/** Like `readBytes`, but a reset is thrown rather than taken for the end. */
function readBytesOrReset(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  return readBytes(conn, n, READ_DEADLINE_MS, { resetIsEnd: false });
}

/** Reads a greeting line (`v3\n`). */
async function readGreeting(conn: Deno.Conn): Promise<string> {
  let line = "";
  while (!line.endsWith("\n")) {
    // One byte at a time: nothing of the echo may be read here.
    const got = await readBytesOrReset(conn, 1);
    if (got.length === 0) throw new ShortAnswer(`greeting: EOF after "${line}"`);
    line += String.fromCharCode(got[0]!);
    if (line.length > 64) throw new Error(`greeting too long: "${line}"`);
  }
  return line.trim();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Short connections opened one after another by a few concurrent loops, until
 * {@linkcode Churn.stop}.
 */
export class Churn {
  #report = emptyReport();
  #stopped = false;
  #loops: Promise<void>[];

  /**
   * Starts the loops.
   *
   * @param port The server's port.
   * @param loops How many connections are in flight at a time.
   * @param options Address, greeting, message size.
   */
  constructor(port: number, loops = 3, options: ClientOptions = {}) {
    this.#loops = Array.from({ length: loops }, (_, i) => this.#loop(port, i, options));
  }

  /** How many connections have completed so far. */
  get completed(): number {
    return this.#report.ok;
  }

  /** The report so far (a copy). */
  get report(): ChurnReport {
    return structuredClone(this.#report);
  }

  /**
   * Stops the loops once their connections in flight are done.
   *
   * @returns The report.
   */
  async stop(): Promise<ChurnReport> {
    this.#stopped = true;
    await Promise.all(this.#loops);
    return this.#report;
  }

  async #loop(port: number, seed: number, options: ClientOptions): Promise<void> {
    const message = pattern(options.size ?? MESSAGE, seed);
    while (!this.#stopped) {
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
        if (options.greeting) this.#report.versions.push(await readGreeting(conn));
        await writeAll(conn, message);
        const echo = await readExactly(conn, message.length, "echo");
        if (!sameBytes(echo, message)) throw new Error("echo differs");
        await conn.closeWrite();
        const rest = await readBytesOrReset(conn, 1);
        if (rest.length > 0) throw new Error("bytes after the echo");
        this.#report.ok++;
      } catch (error) {
        count(this.#report, error);
        // A failing server must not turn the loop into a spin.
        await new Promise((resolve) => setTimeout(resolve, 5));
      } finally {
        try {
          conn?.close();
        } catch {
          // Closed already.
        }
      }
    }
  }
}

/**
 * A long-lived connection that keeps echoing a message every `intervalMs` until
 * {@linkcode Stream.finish}: mid-stream whenever something happens to the server.
 */
export class Stream implements AsyncDisposable {
  /** The greeting it got (the handler's version when it connected), if asked for. */
  readonly version: string | undefined;
  #conn: Deno.TcpConn;
  #report = emptyReport();
  #stopped = false;
  #pumping: Promise<void>;
  #finished: Promise<ChurnReport> | undefined;
  #message: Uint8Array;

  private constructor(conn: Deno.TcpConn, version: string | undefined, seed: number, size: number) {
    this.#conn = conn;
    this.version = version;
    this.#message = pattern(size, seed);
    this.#pumping = this.#pump();
  }

  /**
   * Connects (reading the greeting if asked) and starts echoing.
   *
   * @param port The server's port.
   * @param seed Varies the bytes.
   * @param options Address, greeting, message size.
   * @returns The stream.
   */
  static async open(port: number, seed: number, options: ClientOptions = {}): Promise<Stream> {
    const conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
    const version = options.greeting ? await readGreeting(conn) : undefined;
    return new Stream(conn, version, seed, options.size ?? MESSAGE);
  }

  /** Round trips completed so far. */
  get echoes(): number {
    return this.#report.ok;
  }

  async #pump(): Promise<void> {
    while (!this.#stopped) {
      try {
        await writeAll(this.#conn, this.#message);
        const echo = await readExactly(this.#conn, this.#message.length, "echo");
        if (!sameBytes(echo, this.#message)) throw new Error("echo differs");
        this.#report.ok++;
      } catch (error) {
        count(this.#report, error);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /**
   * Stops echoing, half-closes, and waits for the server to end the connection.
   *
   * @returns What happened to it: `ok` is its round trips, and any failure is counted.
   */
  finish(): Promise<ChurnReport> {
    return this.#finished ??= this.#finish();
  }

  /** Finishes it, if not yet done. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.finish();
  }

  async #finish(): Promise<ChurnReport> {
    this.#stopped = true;
    await this.#pumping;
    try {
      await this.#conn.closeWrite();
      const rest = await readBytesOrReset(this.#conn, Infinity);
      if (rest.length > 0) throw new Error(`${rest.length} bytes after the last echo`);
    } catch (error) {
      count(this.#report, error);
    } finally {
      try {
        this.#conn.close();
      } catch {
        // Closed already.
      }
    }
    return this.#report;
  }
}

/**
 * The failures of reports, added up.
 *
 * @param reports Reports.
 * @returns Refused, reset, short and other, summed.
 */
export function failures(...reports: ChurnReport[]): number {
  return reports.reduce((sum, r) => sum + r.refused + r.reset + r.short + r.other, 0);
}
