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

import { indexOfByte } from "../bytes.ts";
import type { HandlerContext, HandlerOption, Socket, SocketHandler } from "../handler.ts";
import { sizeOption } from "../handler_options.ts";
import { isQuit, LineReader } from "../lines.ts";

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
  /**
   * The lines, each with its line end, in one buffer of its own (cloning a view copies its
   * whole buffer, so the lines are not views of anything larger).
   */
  lines: Uint8Array;
}

const NEWLINE = new Uint8Array([0x0a]);
const encoder = new TextEncoder();

/** This worker's clients, by connection id. */
const clients = new Map<number, Socket<LineReader>>();

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
  let count = 0;
  for (let at = indexOfByte(lines, 0x0a); at >= 0; at = indexOfByte(lines, 0x0a, at + 1)) count++;
  const bytes = new Uint8Array(lines.length + count * prefix.length);
  let out = 0;
  for (let start = 0; start < lines.length;) {
    const end = indexOfByte(lines, 0x0a, start) + 1;
    bytes.set(prefix, out);
    bytes.set(lines.subarray(start, end), out + prefix.length);
    out += prefix.length + end - start;
    start = end;
  }
  for (const [id, socket] of clients) {
    // A client past max-backlog (its outputLimit) is disconnected by the write itself; a slow
    // one just has its output wait. Either way the others are not held up.
    if (id !== from) socket.write(bytes);
  }
}

/**
 * Serves chat clients: each chunk's complete lines are broadcast, and the chunk's call holds
 * the client's next chunk back until every worker has taken them.
 */
export const handler: SocketHandler<LineReader> = {
  open(socket) {
    const { options } = socket.context;
    socket.outputLimit = options["max-backlog"] as number;
    socket.data = new LineReader(options["max-line"] as number);
    clients.set(socket.id, socket);
  },
  data(socket, bytes) {
    const reader = socket.data;
    reader.push(bytes);
    const lines: Uint8Array[] = [];
    for (let line = reader.next(true); line !== undefined; line = reader.next(true)) {
      if (isQuit(line)) {
        reader.keep();
        return relay(socket, lines).then(() => socket.end());
      }
      lines.push(line);
    }
    if (!reader.keep()) {
      // Refused, not relayed; the lines before it are.
      return relay(socket, lines).then(() => {
        socket.write(encoder.encode("ERR line too long\n"));
        socket.end();
      });
    }
    if (lines.length > 0) return relay(socket, lines);
  },
  end(socket) {
    // What came after the last newline is relayed as a line.
    const rest = socket.data.rest;
    if (rest.length === 0) {
      socket.end();
      return;
    }
    const line = new Uint8Array(rest.length + 1);
    line.set(rest);
    line.set(NEWLINE, rest.length);
    return relay(socket, [line]).then(() => socket.end());
  },
  close(socket) {
    clients.delete(socket.id);
  },
};

/**
 * Broadcasts a chunk's lines and waits until every worker has taken them: a sender is read no
 * faster than the room takes its lines. A worker being replaced has lost its clients, and the
 * lines meant for them with it; that is logged, and the sender carries on.
 */
async function relay(socket: Socket, lines: Uint8Array[]): Promise<void> {
  if (lines.length === 0) return;
  // One copy of the lines (they view the lent chunk): this worker's clients get it uncopied.
  let size = 0;
  for (const line of lines) size += line.length;
  const joined = new Uint8Array(size);
  let at = 0;
  for (const line of lines) {
    joined.set(line, at);
    at += line.length;
  }
  const message: ChatLines = { from: socket.id, lines: joined };
  try {
    await socket.context.peers.broadcast(message);
  } catch (error) {
    socket.log.debug("lines not delivered to every worker: {reason}", {
      reason: (error as Error).message,
    });
  }
}
