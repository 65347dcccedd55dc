/**
 * The `chat` protocol: every line a client sends goes to every other client connected to the
 * server, on every worker, prefixed by the sender's connection id (`17: hello`). It is the
 * example of handlers on different workers talking to each other: each line is broadcast to
 * every worker over {@linkcode Peers}, and each worker hands it to its own clients.
 *
 * Runs inside a worker, as a built-in handler (`--handler chat`).
 *
 * What it promises:
 * - Each sender's lines reach every other client in the order they were sent (links between
 *   workers are ordered, and a worker delivers in the order it receives).
 * - Nothing is dropped silently. A sender whose lines a busy worker has not taken yet waits
 *   (its connection stops being read), so a flood slows the flooder, not the room.
 * - A client that does not read falls behind alone: its output waits in the server up to
 *   `max-backlog` bytes, then it is disconnected (counted as `output-overflow`). Delivery to
 *   the others never waits for it.
 * - A line `quit` closes the sender's connection and is not relayed. A line longer than
 *   `max-line` gets `ERR line too long` and closes it. What a client sends after its last
 *   newline is relayed as a line when it half-closes.
 *
 * @module
 */

import type { Connection, Handler, HandlerContext, HandlerOption } from "./handler.ts";
import { sizeOption } from "./handler_options.ts";

/** Settings for `--handler-option`. */
export const options: Record<string, HandlerOption> = {
  "max-backlog": sizeOption(
    "output that may wait for a client that does not read before it is disconnected",
    "1m",
    { min: 4096, max: 1024 ** 3 },
  ),
  "max-line": sizeOption("longest line a client may send", "64k", { min: 16, max: 16 * 1024 ** 2 }),
};

/** What a worker broadcasts: the complete lines of one chunk a client sent. */
interface ChatLines {
  /** The sender's connection id. */
  from: number;
  /** The lines, each with its line end. */
  lines: Uint8Array[];
}

const NEWLINE = 0x0a;
const encoder = new TextEncoder();

/** This worker's clients, by connection id, with the writer that delivers to each. */
const clients = new Map<number, WritableStreamDefaultWriter<Uint8Array>>();

/**
 * Listens for the lines every worker broadcasts (this one's included).
 *
 * @param context The worker's context.
 */
export function setup(context: HandlerContext): void {
  context.peers.onMessage((message) => deliver(message as ChatLines));
}

/** Hands lines to every client of this worker but their sender; never waits for any of them. */
function deliver({ from, lines }: ChatLines): void {
  if (clients.size === 0 || (clients.size === 1 && clients.has(from))) return;
  const prefix = encoder.encode(`${from}: `);
  let size = 0;
  for (const line of lines) size += prefix.length + line.length;
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const line of lines) {
    bytes.set(prefix, at);
    bytes.set(line, at + prefix.length);
    at += prefix.length + line.length;
  }
  for (const [id, writer] of clients) {
    // A client closed meanwhile rejects the write; the guard closes one that falls too far
    // behind (max-backlog). Either way the others are not held up.
    if (id !== from) writer.write(bytes).catch(() => {});
  }
}

/**
 * Serves one chat client.
 *
 * @param connection The client.
 * @param context The worker's context.
 */
export const handler: Handler = async (connection: Connection, context: HandlerContext) => {
  const maxLine = context.options["max-line"] as number;
  connection.outputLimit = context.options["max-backlog"] as number;
  const writer = connection.writable.getWriter();
  clients.set(connection.id, writer);
  try {
    let pending = new Uint8Array(0);
    read: for await (const chunk of connection.readable) {
      const data = pending.length === 0 ? chunk : concat(pending, chunk);
      const lines: Uint8Array[] = [];
      let start = 0;
      for (let end = data.indexOf(NEWLINE); end >= 0; end = data.indexOf(NEWLINE, start)) {
        const line = data.subarray(start, end + 1);
        start = end + 1;
        if (isQuit(line)) {
          await relay(connection, context, lines);
          break read;
        }
        lines.push(line);
      }
      await relay(connection, context, lines);
      pending = data.slice(start);
      if (pending.length > maxLine) {
        pending = new Uint8Array(0); // refused: not relayed
        await writer.write(encoder.encode("ERR line too long\n"));
        break;
      }
    }
    if (pending.length > 0) await relay(connection, context, [concat(pending, [NEWLINE])]);
  } finally {
    clients.delete(connection.id);
  }
  await writer.close();
};

/**
 * Broadcasts a chunk's lines and waits until every worker has taken them: a sender is read no
 * faster than the room takes its lines. A worker being replaced has lost its clients, and the
 * lines meant for them with it; that is logged, and the sender carries on.
 */
async function relay(connection: Connection, context: HandlerContext, lines: Uint8Array[]) {
  if (lines.length === 0) return;
  // Copies of their own: a line views the chunk, which cloning would copy whole.
  const message: ChatLines = { from: connection.id, lines: lines.map((line) => line.slice()) };
  try {
    await context.peers.broadcast(message);
  } catch (error) {
    connection.log.debug("lines not delivered to every worker: {reason}", {
      reason: (error as Error).message,
    });
  }
}

function isQuit(line: Uint8Array): boolean {
  const length = line.length - (line[line.length - 2] === 0x0d ? 2 : 1);
  return length === 4 && line[0] === 0x71 && line[1] === 0x75 && line[2] === 0x69 &&
    line[3] === 0x74;
}

function concat(a: Uint8Array, b: ArrayLike<number>): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}
