/**
 * The `memcache` protocol: the memcached text protocol as real clients use it, over a cache
 * sharded across the workers. It is the example of a handler that shards state the way
 * Seastar's shards do: each worker owns the keys that `peers.ownerOf(key)` gives it (its
 * {@linkcode ShardStore}), and a connection on any worker asks the owner of each key it touches.
 *
 * Runs inside a worker, as a built-in handler (`--handler memcache`).
 *
 * How a connection is served:
 * - The bytes it sends are parsed into commands as they arrive; every command of a chunk goes
 *   out at once, batched: one request per owning worker, holding that owner's operations in
 *   order. So pipelined commands cost one message per owner, not one per command, and two
 *   commands on one key always reach its owner in the order sent.
 * - Replies are written in the order of the commands, in one write per chunk, whichever owner
 *   answered first. The next chunk is read once that write is taken: a client that does not
 *   read its replies stops being read (backpressure).
 * - An owner being replaced (its worker died) answers nothing: commands that need it get
 *   `SERVER_ERROR <why>`; its keys are lost, as when a memcached server restarts.
 *
 * Not supported: the binary protocol, meta commands (`mg`, `ms`, ...), SASL, `cache_memlimit`
 * and the other administrative commands: they answer `ERROR`.
 *
 * @module
 */

import process from "node:process";
import type { HandlerContext, HandlerOption, Socket, SocketHandler } from "../handler.ts";
import { sizeOption } from "../handler_options.ts";
import { ByteQueue } from "./byte_queue.ts";
import { type Command, parseCommand } from "./commands.ts";
import {
  type ConnectionStats,
  type Hit,
  serveOps,
  type ShardOp,
  type ShardResult,
} from "./shard_ops.ts";
import { type ShardStats, ShardStore, type StoreResult } from "./store.ts";

/** What `version` answers: the protocol level it speaks, and who speaks it. */
export const VERSION = "1.6.0-echoserver";
/** Longest command line; memcached closes the connection on a longer one, and so does this. */
const MAX_LINE = 64 * 1024;
/** The first byte of every binary-protocol request. */
const BINARY_MAGIC = 0x80;

/** Settings for `--handler-option`. */
export const options: Record<string, HandlerOption> = {
  memory: sizeOption(
    "cache size over all workers (each owns an equal share), as memcached's -m",
    "64m",
    { min: 1024 * 1024, max: 1024 ** 4 },
  ),
  "max-item-size": sizeOption("largest value accepted, as memcached's -I", "1m", {
    min: 1024,
    max: 128 * 1024 * 1024,
  }),
};

/** This worker's shard. */
let store: ShardStore;
/** This worker's connections, for `stats`. */
const connections: ConnectionStats = {
  curr_connections: 0,
  total_connections: 0,
  bytes_read: 0,
  bytes_written: 0,
  cmd_flush: 0,
};
let startedAt = 0;
/** What `verbosity` last set: kept and reported, as memcached's is; it changes no logging. */
let verbosity = 0;

/**
 * Creates this worker's shard and answers the other workers' requests for its keys.
 *
 * @param context The worker's context.
 */
export function setup(context: HandlerContext): void {
  const total = context.options.memory as number;
  store = new ShardStore(Math.floor(total / context.workers), context.worker, context.workers);
  startedAt = Date.now();
  context.peers.onRequest((ops) => serveOps(store, ops as ShardOp[], connections));
}

/** One client's state: what it sent and has not been parsed yet, and a data block to come. */
interface Client {
  input: ByteQueue;
  /** A data block still to come: to store, or (too large) to skip. */
  block: { command: StoreCommand | undefined; need: number } | undefined;
}

/**
 * Serves memcached clients. Each chunk's commands are parsed at once (a partial command is kept
 * for the next chunk); their replies go out in one write, after the owners of their keys have
 * answered; the client's next chunk waits until then, so pipelined commands stay in order.
 */
export const handler: SocketHandler<Client> = {
  open(socket) {
    connections.curr_connections++;
    connections.total_connections++;
    socket.data = { input: new ByteQueue(), block: undefined };
  },
  data(socket, bytes) {
    connections.bytes_read += bytes.length;
    const client = socket.data;
    client.input.push(bytes);
    const turn = new Turn(socket.context);
    const quit = parse(socket, client, turn);
    // The chunk is lent: what is left of it (a partial command) is kept as a copy.
    client.input.keep();
    const rendered = turn.render();
    if (rendered instanceof Promise) return rendered.then((reply) => answer(socket, reply, quit));
    answer(socket, rendered, quit);
  },
  close() {
    connections.curr_connections--;
  },
};

function answer(socket: Socket, reply: Uint8Array, quit: boolean): void {
  if (reply.length > 0) {
    connections.bytes_written += reply.length;
    socket.write(reply);
  }
  if (quit) socket.end();
}

/**
 * Parses the commands complete in the client's input into the turn.
 *
 * @returns Whether the connection must end (quit, a binary request, a line too long).
 */
function parse(socket: Socket, client: Client, turn: Turn): boolean {
  const maxItem = socket.context.options["max-item-size"] as number;
  const input = client.input;
  while (true) {
    const block = client.block;
    if (block !== undefined) {
      if (block.command === undefined) {
        const skipped = Math.min(block.need, input.length);
        input.skip(skipped);
        block.need -= skipped;
        if (block.need > 0) return false;
        client.block = undefined;
        continue;
      }
      if (input.length < block.need) return false;
      const data = input.take(block.need);
      const command = block.command;
      client.block = undefined;
      if (data[data.length - 2] !== 0x0d || data[data.length - 1] !== 0x0a) {
        turn.reply("CLIENT_ERROR bad data chunk\r\n");
      } else turn.store(command, data.subarray(0, data.length - 2));
      continue;
    }
    if (input.first() === BINARY_MAGIC) {
      // A binary-protocol client would wait forever for an answer it cannot read.
      socket.log.debug("binary protocol request: not supported, closing");
      return true;
    }
    const newline = input.indexOf(0x0a);
    if (newline < 0 || newline > MAX_LINE) {
      if (input.length > MAX_LINE) {
        turn.reply("CLIENT_ERROR line too long\r\n");
        return true;
      }
      return false;
    }
    const command = parseCommand(input.takeLine(newline), Date.now());
    if (command.kind === "quit") return true;
    if (command.kind === "store") {
      if (command.bytes > maxItem) {
        // memcached's answer, and the block that follows is not a command: skip it.
        turn.reply("SERVER_ERROR object too large for cache\r\n");
        client.block = { command: undefined, need: command.bytes + 2 };
      } else client.block = { command, need: command.bytes + 2 };
    } else turn.command(command);
  }
}

type StoreCommand = Extract<Command, { kind: "store" }>;
/** A part of a reply: text (Latin-1) or a value's bytes. */
type Part = string | Uint8Array;
/** Renders a command's reply from its owners' results. */
type Render = (results: (ShardResult[] | Error)[]) => Part[];

/**
 * The commands of one chunk: their operations, batched per owning worker, and how to render
 * each reply once the owners have answered.
 */
class Turn {
  #context: HandlerContext;
  #ops: ShardOp[][];
  #transfer: Transferable[][];
  #replies: (Part | Render)[] = [];

  constructor(context: HandlerContext) {
    this.#context = context;
    this.#ops = Array.from({ length: context.workers }, () => []);
    this.#transfer = Array.from({ length: context.workers }, () => []);
  }

  /** A reply that needs no owner. */
  reply(text: string): void {
    this.#replies.push(text);
  }

  /** A storage command with its data block. */
  store(command: StoreCommand, value: Uint8Array): void {
    const { mode, key, flags, expiresAt, cas, noreply } = command;
    const owner = this.#context.peers.ownerOf(key);
    const at = this.#add(owner, { op: "store", mode, key, flags, expiresAt, value, cas });
    // The value is a copy of its own: hand its buffer over instead of copying it again.
    if (owner !== this.#context.worker) this.#transfer[owner]!.push(value.buffer as ArrayBuffer);
    this.#replies.push((results) => {
      const result = this.#result(results, owner, at);
      if (noreply) return [];
      if (result instanceof Error) return [serverError(result)];
      const stored = result as StoreResult;
      return [
        stored === "NO_MEMORY" ? "SERVER_ERROR out of memory storing object\r\n" : `${stored}\r\n`,
      ];
    });
  }

  /** Any other command. */
  command(command: Exclude<Command, StoreCommand | { kind: "quit" }>): void {
    switch (command.kind) {
      case "get":
        this.#get(command);
        break;
      case "delete":
        this.#single(
          command.key,
          { op: "delete", key: command.key },
          command.noreply,
          (found) => found ? "DELETED\r\n" : "NOT_FOUND\r\n",
        );
        break;
      case "arith": {
        const { key, incr, delta } = command;
        this.#single(
          key,
          { op: "arith", key, incr, delta },
          command.noreply,
          (result) =>
            result === "NON_NUMERIC"
              ? "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
              : `${result}\r\n`,
        );
        break;
      }
      case "touch": {
        const { key, expiresAt } = command;
        this.#single(
          key,
          { op: "touch", key, expiresAt },
          command.noreply,
          (found) => found ? "TOUCHED\r\n" : "NOT_FOUND\r\n",
        );
        break;
      }
      case "flush": {
        connections.cmd_flush++;
        const refs = this.#everyOwner({ op: "flush", at: command.at });
        this.#replies.push((results) => {
          const failed = refs.map(([owner, at]) => this.#result(results, owner, at))
            .find((r) => r instanceof Error);
          if (command.noreply) return [];
          return [failed instanceof Error ? serverError(failed) : "OK\r\n"];
        });
        break;
      }
      case "stats":
        this.#stats(command.args);
        break;
      case "version":
        this.#replies.push(`VERSION ${VERSION}\r\n`);
        break;
      case "verbosity":
        verbosity = command.level ?? verbosity;
        if (!command.noreply) this.#replies.push("OK\r\n");
        break;
      case "error":
        this.#replies.push(command.reply);
        break;
      default: {
        const _never: never = command;
        throw new TypeError(`Unknown command: ${JSON.stringify(_never)}`);
      }
    }
  }

  /**
   * Serves this worker's own operations at once, sends each other owner its operations (one
   * request per owner), and renders every reply in order.
   *
   * @returns The bytes to write (empty if there is nothing to say); at once when no other
   *   worker was asked, which is the common case with one worker.
   */
  render(): Uint8Array | Promise<Uint8Array> {
    const self = this.#context.worker;
    const results: (ShardResult[] | Error)[] = this.#ops.map((ops, owner) =>
      owner === self && ops.length > 0 ? serveOps(store, ops, connections) : []
    );
    const asked = this.#ops.flatMap((ops, owner) =>
      owner === self || ops.length === 0 ? [] : [owner]
    );
    if (asked.length === 0) return this.#join(results);
    const peers = this.#context.peers;
    return Promise.allSettled(
      asked.map((owner) =>
        peers.request<ShardResult[]>(owner, this.#ops[owner], { transfer: this.#transfer[owner]! })
      ),
    ).then((answers) => {
      answers.forEach((answer, i) => {
        results[asked[i]!] = answer.status === "fulfilled" ? answer.value : answer.reason as Error;
      });
      return this.#join(results);
    });
  }

  #join(results: (ShardResult[] | Error)[]): Uint8Array {
    const parts: Part[] = [];
    for (const reply of this.#replies) {
      if (typeof reply === "function") parts.push(...reply(results));
      else parts.push(reply);
    }
    return join(parts);
  }

  #add(owner: number, op: ShardOp): number {
    const ops = this.#ops[owner]!;
    ops.push(op);
    return ops.length - 1;
  }

  #everyOwner(op: ShardOp): [owner: number, at: number][] {
    return this.#ops.map((_, owner) => [owner, this.#add(owner, op)]);
  }

  #result(results: (ShardResult[] | Error)[], owner: number, at: number): ShardResult | Error {
    const answer = results[owner]!;
    return answer instanceof Error ? answer : answer[at]!;
  }

  /** A command on one key, answered by its owner with one line. */
  #single(
    key: string,
    op: ShardOp,
    noreply: boolean,
    line: (result: ShardResult) => string,
  ): void {
    const owner = this.#context.peers.ownerOf(key);
    const at = this.#add(owner, op);
    this.#replies.push((results) => {
      if (noreply) return [];
      const result = this.#result(results, owner, at);
      return [result instanceof Error ? serverError(result) : line(result)];
    });
  }

  #get(command: Extract<Command, { kind: "get" }>): void {
    const peers = this.#context.peers;
    // Each owner gets one operation with its keys; hits come back per key, in order.
    const owners = command.keys.map((key) => peers.ownerOf(key));
    const keysOf = new Map<number, string[]>();
    command.keys.forEach((key, i) => {
      const list = keysOf.get(owners[i]!) ?? [];
      list.push(key);
      keysOf.set(owners[i]!, list);
    });
    const refs = new Map<number, number>();
    for (const [owner, keys] of keysOf) {
      const op: ShardOp = command.touch === undefined
        ? { op: "get", keys }
        : { op: "get", keys, touch: command.touch };
      refs.set(owner, this.#add(owner, op));
    }
    this.#replies.push((results) => {
      const answers = new Map<number, (Hit | null)[]>();
      for (const [owner, at] of refs) {
        const result = this.#result(results, owner, at);
        if (result instanceof Error) return [serverError(result)];
        answers.set(owner, [...(result as (Hit | null)[])]);
      }
      const parts: Part[] = [];
      for (const owner of owners) {
        const hit = answers.get(owner)!.shift();
        if (hit === null || hit === undefined) continue;
        const [key, flags, value, cas] = hit;
        parts.push(
          `VALUE ${key} ${flags} ${value.length}${command.cas ? ` ${cas}` : ""}\r\n`,
          value,
          "\r\n",
        );
      }
      parts.push("END\r\n");
      return parts;
    });
  }

  #stats(args: string[]): void {
    const context = this.#context;
    const [sub] = args;
    if (sub === undefined) {
      const refs = this.#everyOwner({ op: "stats" });
      this.#replies.push((results) => {
        const shards: (ShardStats & ConnectionStats)[] = [];
        for (const [owner, at] of refs) {
          const result = this.#result(results, owner, at);
          if (result instanceof Error) return [serverError(result)];
          shards.push(result as ShardStats & ConnectionStats);
        }
        return [renderStats(shards, context.workers)];
      });
    } else if (sub === "settings") {
      const settings: [string, string | number][] = [
        ["maxbytes", context.options.memory as number],
        ["item_size_max", context.options["max-item-size"] as number],
        ["num_threads", context.workers],
        ["verbosity", verbosity],
        ["evictions", "on"],
        ["cas_enabled", "yes"],
      ];
      this.#replies.push(
        settings.map(([name, value]) => `STAT ${name} ${value}\r\n`).join("") +
          "END\r\n",
      );
    } else if (sub === "reset") {
      this.#everyOwner({ op: "reset" });
      this.#replies.push("RESET\r\n");
    } else if (["items", "slabs", "sizes", "conns"].includes(sub)) {
      this.#replies.push("END\r\n"); // nothing of the kind to list: no slabs here
    } else {
      this.#replies.push("ERROR\r\n");
    }
  }
}

/** The general `stats`, summed over the shards, in memcached's names and order. */
function renderStats(shards: (ShardStats & ConnectionStats)[], workers: number): string {
  const sum = (name: keyof (ShardStats & ConnectionStats)) =>
    shards.reduce((total, shard) => total + shard[name], 0);
  const cpu = process.cpuUsage();
  const now = Date.now();
  const lines: [string, string | number][] = [
    ["pid", Deno.pid],
    ["uptime", Math.floor((now - startedAt) / 1000)],
    ["time", Math.floor(now / 1000)],
    ["version", VERSION],
    ["pointer_size", 64],
    ["rusage_user", (cpu.user / 1e6).toFixed(6)],
    ["rusage_system", (cpu.system / 1e6).toFixed(6)],
    ["curr_connections", sum("curr_connections")],
    ["total_connections", sum("total_connections")],
    ["cmd_get", sum("cmd_get")],
    ["cmd_set", sum("cmd_set")],
    ["cmd_flush", sum("cmd_flush")],
    ["cmd_touch", sum("cmd_touch")],
    ["get_hits", sum("get_hits")],
    ["get_misses", sum("get_misses")],
    ["get_expired", sum("get_expired")],
    ["get_flushed", sum("get_flushed")],
    ["delete_misses", sum("delete_misses")],
    ["delete_hits", sum("delete_hits")],
    ["incr_misses", sum("incr_misses")],
    ["incr_hits", sum("incr_hits")],
    ["decr_misses", sum("decr_misses")],
    ["decr_hits", sum("decr_hits")],
    ["cas_misses", sum("cas_misses")],
    ["cas_hits", sum("cas_hits")],
    ["cas_badval", sum("cas_badval")],
    ["touch_hits", sum("touch_hits")],
    ["touch_misses", sum("touch_misses")],
    ["bytes_read", sum("bytes_read")],
    ["bytes_written", sum("bytes_written")],
    ["limit_maxbytes", sum("limit_maxbytes")],
    ["threads", workers],
    ["bytes", sum("bytes")],
    ["curr_items", sum("curr_items")],
    ["total_items", sum("total_items")],
    ["evictions", sum("evictions")],
    ["reclaimed", sum("reclaimed")],
  ];
  return lines.map(([name, value]) => `STAT ${name} ${value}\r\n`).join("") + "END\r\n";
}

function serverError(error: Error): string {
  return `SERVER_ERROR ${error.message.split("\n")[0]}\r\n`;
}

/** The parts as one array: text as Latin-1 (keys come back byte for byte), values as they are. */
function join(parts: Part[]): Uint8Array {
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    if (typeof part === "string") {
      for (let i = 0; i < part.length; i++) out[at + i] = part.charCodeAt(i);
    } else out.set(part, at);
    at += part.length;
  }
  return out;
}
