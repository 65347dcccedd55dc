/**
 * The `memcache` handler against a real memcached (Debian's 1.6.18), byte for byte: the same
 * command streams (scripted, and seeded random ones from `fixtures/memcache_streams.ts`: classic
 * and meta commands, noreply and quiet mode, pipelining, bad input) go to both, written in pieces
 * cut at random byte positions, and every answer must be the same.
 *
 * Streams go in groups of pipelined commands, each group closed by `mn` (whose `MN` says the
 * group's answers are all in); CAS values seen in memcached's answers feed later `cas`, `C` and
 * `ms ... C` commands, so CAS matches happen. The two servers give the same CAS values as long as
 * they count the same events, so a difference there shows too.
 *
 * What the comparison forgives, because protocol.txt allows either answer:
 * - a number an incr/decr made shorter may be padded with spaces, or not (memcached pads when it
 *   rewrites the item in place, which depends on whether an earlier answer still holds it; an
 *   incr after a fetch of its key in the same group is sent in a group of its own, so that the
 *   item's hit flag agrees too);
 * - remaining TTL and last-access seconds (`t`, `l`, `exp=`, `la=`) may differ by one second,
 *   since each server's clock ticks on its own.
 *
 * Kept differences (the README lists them), not generated here: `version` and `stats` answers;
 * binary protocol (closed here); and a memcached bug: a `get` refused for a key over 250 bytes
 * makes memcached drop the answers it had not yet sent to the commands pipelined before it
 * (`conn_release_items`), which leaves a client one answer short. This server answers each of
 * them, so such a `get` is sent here at the head of its own group.
 */

import assert from "node:assert/strict";
import { findMemcached, startMemcached } from "../launcher/memcached.ts";
import { CommandGenerator, type Observed, Random } from "./fixtures/memcache_streams.ts";
import { DISPATCHES, startServer } from "./helpers.ts";

const REQUIRED = Deno.env.get("REQUIRE_MEMCACHED_TOOLS") === "1";
const MEMCACHED = findMemcached();
const SKIP = MEMCACHED === undefined && !REQUIRED;
/** Random streams per dispatch mode, and the first seed (`SEED=n` runs another range). */
const STREAMS = 300;
const FIRST_SEED = Number(Deno.env.get("SEED") ?? 1);
/** A group's answers must come within this. */
const ANSWER_DEADLINE_MS = 20_000;

const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
const fromLatin1 = (bytes: Uint8Array) => {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
};

/** One connection, written in random pieces, read until `MN\r\n` or the end. */
class Wire {
  #conn: Deno.TcpConn;
  #pending = new Uint8Array(0);
  closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(port: number): Promise<Wire> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new Wire(conn);
  }

  /** Writes `bytes` in pieces cut at random positions, a short pause between pieces. */
  async send(bytes: Uint8Array, random: Random): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      const size = random.chance(0.3) ? 1 + random.int(8) : 1 + random.int(bytes.length);
      const end = Math.min(bytes.length, at + size);
      try {
        let written = at;
        while (written < end) written += await this.#conn.write(bytes.subarray(written, end));
      } catch {
        this.closed = true; // the server closed it (a junk line): what was sent is answered
        return;
      }
      at = end;
      if (at < bytes.length && random.chance(0.3)) await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * Reads until the answers end with the `expected`-th `MN\r\n` (or the server closes the
   * connection).
   */
  async answers(expected: number): Promise<string> {
    const deadline = Date.now() + ANSWER_DEADLINE_MS;
    const buffer = new Uint8Array(256 * 1024);
    while (!endsWithMn(this.#pending) || countMn(this.#pending) < expected) {
      if (this.closed) break;
      const timer = setTimeout(() => this.#conn.close(), Math.max(1, deadline - Date.now()));
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = null;
      } finally {
        clearTimeout(timer);
      }
      if (Date.now() >= deadline) throw new Error(`no MN within ${ANSWER_DEADLINE_MS} ms`);
      if (n === null) {
        this.closed = true;
        break;
      }
      const grown = new Uint8Array(this.#pending.length + n);
      grown.set(this.#pending);
      grown.set(buffer.subarray(0, n), this.#pending.length);
      this.#pending = grown;
    }
    const out = fromLatin1(this.#pending);
    this.#pending = new Uint8Array(0);
    return out;
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}

function countMn(bytes: Uint8Array): number {
  let count = 0;
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (
      bytes[i] === 0x4d && bytes[i + 1] === 0x4e && bytes[i + 2] === 0x0d &&
      bytes[i + 3] === 0x0a && (i === 0 || bytes[i - 1] === 0x0a)
    ) count++;
  }
  return count;
}

function endsWithMn(bytes: Uint8Array): boolean {
  const n = bytes.length;
  return n >= 4 && bytes[n - 4] === 0x4d && bytes[n - 3] === 0x4e && bytes[n - 2] === 0x0d &&
    bytes[n - 1] === 0x0a;
}

/** The answer stream cut into answers: a line, or a line and its value block. */
function records(text: string): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < text.length) {
    const eol = text.indexOf("\r\n", at);
    if (eol < 0) {
      out.push(text.slice(at));
      break;
    }
    const line = text.slice(at, eol);
    at = eol + 2;
    const value = /^VALUE \S+ \d+ (\d+)/.exec(line) ?? /^VA (\d+)/.exec(line);
    if (value !== null) {
      const size = Number(value[1]);
      out.push(line + "\r\n" + text.slice(at, at + size + 2));
      at += size + 2;
    } else out.push(line);
  }
  return out;
}

/** Forgives what protocol.txt allows to differ (see the module's documentation). */
function sameAnswer(ours: string, theirs: string): boolean {
  if (ours === theirs) return true;
  const unpad = (r: string) =>
    r.replace(
      /^(VALUE \S+ \d+ |VA )(\d+)([^\r]*)\r\n(\d+) +\r\n$/,
      (_, head, _n, rest, digits) => `${head}${digits.length}${rest}\r\n${digits}\r\n`,
    );
  if (unpad(ours) === unpad(theirs)) return true;
  // Seconds that may be one apart: meta t/l flags, me's exp= and la=.
  const a = ours.split(" ");
  const b = theirs.split(" ");
  if (a.length !== b.length) return false;
  return a.every((token, i) => {
    if (token === b[i]) return true;
    const x = /^(t|l|exp=|la=)(-?\d+)(\r?\n?.*)$/s.exec(token);
    const y = /^(t|l|exp=|la=)(-?\d+)(\r?\n?.*)$/s.exec(b[i]!);
    return x !== null && y !== null && x[1] === y[1] && x[3] === y[3] &&
      Math.abs(Number(x[2]) - Number(y[2])) <= 1;
  });
}

/** A get-family command that memcached refuses for a key longer than 250 bytes. */
function isRefusedGet(command: string): boolean {
  const tokens = command.replace(/\r\n$/, "").split(" ");
  return /^(get|gets|gat|gats|bget)$/.test(tokens[0]!) && tokens.some((t) => t.length > 250);
}

/** The keys a retrieval command fetches (get family, `mg`), as sent. */
function fetchedKeys(command: string): string[] {
  const tokens = command.replace(/\r\n$/, "").split(" ").filter((t) => t !== "");
  if (/^(get|gets|bget)$/.test(tokens[0]!)) return tokens.slice(1);
  if (/^(gat|gats)$/.test(tokens[0]!)) return tokens.slice(2);
  if (tokens[0] === "mg") return tokens.slice(1, 2);
  return [];
}

/**
 * Whether `command` is an incr, decr or `ma` of a key that an earlier command of its group
 * fetched: memcached then rewrites the number into a new item rather than in place (the earlier
 * answer still holds the old one until it is sent), which shows in padding and in `h`. Either is
 * allowed; the two servers cannot agree when it depends on how their reads fall, so such a
 * command goes in a group of its own.
 */
function rewritesFetched(before: string[], command: string): boolean {
  const tokens = command.split(" ");
  if (!/^(incr|decr|ma)$/.test(tokens[0]!)) return false;
  const key = tokens[1]!.replace(/\r\n$/, "");
  return before.some((earlier) => fetchedKeys(earlier).includes(key));
}

/** CAS values in memcached's answers, for later commands to use. */
function collectCas(text: string, observed: Observed): void {
  for (const match of text.matchAll(/^VALUE \S+ \d+ \d+ (\d+)\r$/gm)) {
    observed.cas.push(Number(match[1]));
  }
  for (const match of text.matchAll(/ c(\d+)(?= |\r)/g)) observed.cas.push(Number(match[1]));
  if (observed.cas.length > 64) observed.cas.splice(0, observed.cas.length - 64);
}

/** Runs `groups` of commands on a fresh connection to each server; returns the first mismatch. */
async function compare(
  oursPort: number,
  theirsPort: number,
  groups: string[][] | ((observed: Observed) => string[] | undefined),
  random: Random,
  observed: Observed,
): Promise<string | undefined> {
  const ours = await Wire.open(oursPort);
  const theirs = await Wire.open(theirsPort);
  const queued: string[][] = [];
  const history: string[] = [];
  try {
    for (let g = 0;;) {
      const next = queued.shift() ??
        (typeof groups === "function" ? groups(observed) : groups[g++]);
      if (next === undefined) return undefined;
      // A get with a key too long starts a group of its own (see the module's documentation).
      const cut = next.findIndex((command, i) =>
        i > 0 && (isRefusedGet(command) || rewritesFetched(next.slice(0, i), command))
      );
      const group = cut > 0 ? next.slice(0, cut) : next;
      if (cut > 0) queued.unshift(next.slice(cut));
      // A connection's first byte 0x80 is the binary protocol (not served here: a kept
      // difference); after the first byte it is an unknown command, as tested.
      if (history.length === 0 && group[0]?.startsWith("\x80")) group.unshift("mn\r\n");
      const bytes = latin1(group.join("") + "mn\r\n");
      history.push(group.join(""));
      const expected = group.filter((command) => command === "mn\r\n").length + 1;
      // The same cuts for both: one seed per group.
      const seed = random.int(2 ** 31);
      await Promise.all([ours.send(bytes, new Random(seed)), theirs.send(bytes, new Random(seed))]);
      const [a, b] = await Promise.all([
        ours.answers(expected).catch((e) => `<ours: ${e.message}>`),
        theirs.answers(expected).catch((e) => `<memcached: ${e.message}>`),
      ]);
      collectCas(b, observed);
      const ra = records(a);
      const rb = records(b);
      // memcached drops the answers it has not sent when it closes a connection (a line it
      // takes for junk): then ours may have answered more before closing too.
      const count = theirs.closed && ours.closed ? rb.length : Math.max(ra.length, rb.length);
      for (let i = 0; i < count; i++) {
        if (!sameAnswer(ra[i] ?? "<nothing>", rb[i] ?? "<nothing>")) {
          return `after ${JSON.stringify(history.slice(-3, -1).join(" | ").slice(-600))}\n` +
            `group ${JSON.stringify(group.join("").slice(0, 2000))}\n` +
            `answer ${i}: ours ${JSON.stringify((ra[i] ?? "<nothing>").slice(0, 300))}\n` +
            `memcached ${JSON.stringify((rb[i] ?? "<nothing>").slice(0, 300))}`;
        }
      }
      if (ours.closed !== theirs.closed) {
        return `group ${JSON.stringify(group.join("").slice(0, 500))}: connection closed by ` +
          (ours.closed ? "ours only" : "memcached only");
      }
      if (ours.closed) return undefined;
    }
  } finally {
    ours.close();
    theirs.close();
  }
}

/** Scripted streams: the differences once found, and each command's edge cases. */
const SCRIPTED: string[][] = [
  [`set ${"k".repeat(251)} 0 0 1\r\n\x80\r\n`, "get a\r\n"],
  ["set k 0 0 1 bogus extra\r\na\r\n", "get k\r\n"],
  ["set n 0 0 1\r\n5\r\n", "incr n 1 noreply x\r\n", "touch n 10 noreply x\r\n"],
  ["cas n 0 0 1 1 noreply x\r\n", "flush_all 0 0 0\r\n", "get n\r\n"],
  [
    "set f 0000000000000001 0 1\r\nx\r\n",
    "set g 0 0 4\r\n0005\r\n",
    "incr g 0001\r\n",
    "get f g\r\n",
  ],
  [`get ${Array.from({ length: 300 }, (_, i) => `${i}`.padStart(250, "k")).join(" ")}\r\n`],
  [
    "set big 0 0 600000\r\n" + "a".repeat(600000) + "\r\n",
    "append big 0 0 600000\r\n" + "b".repeat(600000) + "\r\n",
    "mg big s\r\n",
  ],
  [
    "set big 0 0 3\r\nold\r\n",
    "set big 0 0 1048577\r\n" + "c".repeat(1048577) + "\r\n",
    "get big\r\n",
  ],
  ["ms big 3\r\nold\r\n", "ms big 1048577 ME\r\n" + "c".repeat(1048577) + "\r\n", "mg big v\r\n"],
  [
    "mn\r\n",
    "mg\r\n",
    "mg a v c f t s k h l O123 q\r\n",
    "mg a N30 v c t\r\n",
    "mg a v c t Oabc q k\r\n",
  ],
  [
    "ms a 2 C99\r\nhi\r\n",
    "ms a 2 c\r\nhi\r\n",
    "ms a 2 C1 I c\r\nst\r\n",
    "mg a v c\r\n",
    "mg a v c\r\n",
  ],
  [
    "ms a 2 T60\r\nhi\r\n",
    "md a I T30\r\n",
    "mg a v c t\r\n",
    "mg a v c t\r\n",
    "md a q\r\n",
    "md a q\r\n",
  ],
  ["ma x\r\n", "ma x q\r\n", "ma x N0 J5 q\r\n", "ma x q\r\n", "ma x MD D3 v\r\n", "ma x MZ\r\n"],
  [
    "ms YWJj 2 b k c\r\nhi\r\n",
    "mg YWJj b v k\r\n",
    "mg abc v k\r\n",
    "me YWJj b\r\n",
    "mg !!! b\r\n",
  ],
  ["mg a 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\r\n", "mg a O" + "o".repeat(40) + "\r\n"],
  ["set a 0 0 2\r\nabc\r\n", "get a\r\n", "set b 0 0 2 noreply\r\nabcd\r\n", "get b\r\n"],
  ["set n 0 0 2\r\n10\r\n", "decr n 1\r\n", "get n\r\n", "incr n 91\r\n", "gets n\r\n"],
  ["delete a 0\r\n", "delete a 1\r\n", "delete a 0 noreply\r\n", "delete\r\n", "shutdown\r\n"],
  [
    "verbosity\r\n",
    "verbosity 1\r\n",
    "verbosity x\r\n",
    "flush_all x\r\n",
    "flush_all noreply\r\n",
  ],
];

for (const dispatch of DISPATCHES) {
  Deno.test({
    name: `[${dispatch}] memcache answers as memcached 1.6 does: scripted and ${STREAMS} ` +
      `seeded random streams, cut at random bytes${
        SKIP ? " (SKIPPED: memcached not installed)" : ""
      }`,
    ignore: SKIP,
    fn: async () => {
      assert.ok(MEMCACHED, "memcached is required (REQUIRE_MEMCACHED_TOOLS=1) but missing");
      await using memcached = await startMemcached(MEMCACHED, 2);
      await using server = await startServer([
        "--workers",
        "2",
        "--dispatch",
        dispatch,
        "--handler",
        "memcache",
      ]);
      const observed: Observed = { cas: [] };
      const random = new Random(7);
      for (const group of SCRIPTED) {
        const mismatch = await compare(server.port, memcached.port, [group], random, observed);
        assert.equal(mismatch, undefined, mismatch);
      }
      for (let seed = FIRST_SEED; seed < FIRST_SEED + STREAMS; seed++) {
        const generator = new CommandGenerator(seed);
        const r = generator.random;
        let groups = 1 + r.int(6);
        const mismatch = await compare(
          server.port,
          memcached.port,
          (seen) => {
            if (groups-- === 0) return undefined;
            return Array.from({ length: 1 + r.int(8) }, () => generator.command(seen));
          },
          r,
          observed,
        );
        assert.equal(mismatch, undefined, `seed ${seed}: ${mismatch}`);
      }
    },
  });
}
