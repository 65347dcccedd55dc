/**
 * `stats`, `stats settings`, `stats items`, `stats slabs` and `stats reset`, with memcached's
 * field names and order wherever a field means here what it means in memcached, so that the
 * exporters and dashboards written for memcached read this server. A field memcached has and this
 * server does not (libevent, the LRU crawler, slab rebalancing, extstore, the segmented LRU's
 * hot/warm/cold split) is left out rather than faked; the README lists the subset.
 *
 * Runs inside a worker; the figures are the whole server's (every worker's counters summed).
 *
 * @module
 */

import process from "node:process";
import type { Reply } from "./reply.ts";
import type { Session } from "./session.ts";
import { ClassStat, type SharedStore, Stat } from "./shared_store.ts";
import type { Tokens } from "./tokens.ts";

/** memcached's `ITEM_UPDATE_INTERVAL`, which its `uptime` subtracts from its clock. */
const ITEM_UPDATE_INTERVAL = 60;

/** What the stats need that the store does not know. */
export interface StatsInfo {
  /** What `version` answers. */
  version: string;
  /** Number of workers (memcached's `threads`). */
  threads: number;
}

/**
 * Runs a `stats` command (memcached's `process_stat`).
 *
 * @param session The connection.
 * @param t The command line's tokens.
 * @param info Figures from outside the store.
 */
export function processStats(session: Session, t: Tokens, info: StatsInfo): void {
  const { store, reply } = session;
  if (t.count === 2) {
    general(reply, store, info);
  } else if (t.is(1, "reset")) {
    store.lock();
    try {
      store.resetStats();
    } finally {
      store.unlock();
    }
    return session.out("RESET");
  } else if (t.is(1, "settings")) {
    settings(reply, store, info);
  } else if (t.is(1, "items")) {
    items(reply, store);
  } else if (t.is(1, "slabs")) {
    slabs(reply, store);
  } else {
    // memcached's answer to a subcommand it does not know (detail, cachedump, conns and
    // sizes are memcached's and not this server's).
    return session.out("ERROR");
  }
  reply.ascii("END\r\n");
}

function stat(reply: Reply, name: string, value: string | number): void {
  reply.ascii("STAT ");
  reply.ascii(name);
  reply.byte(0x20);
  reply.ascii(typeof value === "number" ? String(value) : value);
  reply.crlf();
}

/** Seconds as memcached prints rusage: `%ld.%06ld`. */
function seconds(micros: number): string {
  const whole = Math.floor(micros / 1e6);
  return `${whole}.${String(Math.floor(micros - whole * 1e6)).padStart(6, "0")}`;
}

function general(reply: Reply, store: SharedStore, info: StatsInfo): void {
  const now = store.now();
  const usage = process.cpuUsage();
  const sum = (field: number) => store.sum(field);
  const classSum = (field: number) => store.classCount(field);
  stat(reply, "pid", Deno.pid);
  stat(reply, "uptime", now - ITEM_UPDATE_INTERVAL);
  stat(reply, "time", now + store.started);
  stat(reply, "version", info.version);
  stat(reply, "pointer_size", 64);
  stat(reply, "rusage_user", seconds(usage.user));
  stat(reply, "rusage_system", seconds(usage.system));
  stat(reply, "curr_connections", store.currentConnections());
  stat(reply, "total_connections", sum(Stat.total_connections));
  stat(reply, "cmd_get", sum(Stat.cmd_get));
  stat(reply, "cmd_set", classSum(ClassStat.cmd_set));
  stat(reply, "cmd_flush", sum(Stat.cmd_flush));
  stat(reply, "cmd_touch", sum(Stat.cmd_touch));
  stat(reply, "cmd_meta", sum(Stat.cmd_meta));
  stat(reply, "get_hits", classSum(ClassStat.get_hits));
  stat(reply, "get_misses", sum(Stat.get_misses));
  stat(reply, "get_expired", sum(Stat.get_expired));
  stat(reply, "get_flushed", sum(Stat.get_flushed));
  stat(reply, "delete_misses", sum(Stat.delete_misses));
  stat(reply, "delete_hits", classSum(ClassStat.delete_hits));
  stat(reply, "incr_misses", sum(Stat.incr_misses));
  stat(reply, "incr_hits", classSum(ClassStat.incr_hits));
  stat(reply, "decr_misses", sum(Stat.decr_misses));
  stat(reply, "decr_hits", classSum(ClassStat.decr_hits));
  stat(reply, "cas_misses", sum(Stat.cas_misses));
  stat(reply, "cas_hits", classSum(ClassStat.cas_hits));
  stat(reply, "cas_badval", classSum(ClassStat.cas_badval));
  stat(reply, "touch_hits", classSum(ClassStat.touch_hits));
  stat(reply, "touch_misses", sum(Stat.touch_misses));
  stat(reply, "store_too_large", sum(Stat.store_too_large));
  stat(reply, "store_no_memory", sum(Stat.store_no_memory));
  stat(reply, "bytes_read", sum(Stat.bytes_read));
  stat(reply, "bytes_written", sum(Stat.bytes_written));
  stat(reply, "limit_maxbytes", store.memory);
  stat(reply, "threads", info.threads);
  stat(reply, "hash_power_level", Math.log2(store.buckets));
  stat(reply, "hash_bytes", store.buckets * 4);
  stat(reply, "hash_is_expanding", 0);
  const globals = store.globals();
  stat(reply, "bytes", globals.bytes);
  stat(reply, "curr_items", globals.curr_items);
  stat(reply, "total_items", globals.total_items);
  stat(reply, "expired_unfetched", globals.expired_unfetched);
  stat(reply, "evicted_unfetched", globals.evicted_unfetched);
  stat(reply, "evicted_active", globals.evicted_active);
  stat(reply, "evictions", globals.evictions);
  stat(reply, "reclaimed", globals.reclaimed);
}

function settings(reply: Reply, store: SharedStore, info: StatsInfo): void {
  stat(reply, "maxbytes", store.memory);
  stat(reply, "verbosity", store.verbosity);
  stat(reply, "evictions", "on");
  stat(reply, "shutdown_command", "no");
  stat(reply, "growth_factor", "1.25");
  stat(reply, "chunk_size", 48);
  stat(reply, "num_threads", info.threads);
  stat(reply, "cas_enabled", "yes");
  stat(reply, "binding_protocol", "ascii");
  stat(reply, "item_size_max", store.itemSizeMax);
  stat(reply, "slab_reassign", "no");
  stat(reply, "slab_chunk_max", store.pageSize / 2);
  stat(reply, "hash_algorithm", "fnv1a");
  stat(reply, "flush_enabled", "yes");
  stat(reply, "lru_segmented", "no");
  stat(reply, "temp_lru", "no");
}

function items(reply: Reply, store: SharedStore): void {
  store.lock();
  try {
    for (let c = 1; c < store.classes; c++) {
      const k = store.classStats(c);
      if (k.items === 0) continue;
      const name = (field: string) => `items:${c}:${field}`;
      stat(reply, name("number"), k.items);
      stat(reply, name("age"), k.oldestAge);
      stat(reply, name("mem_requested"), k.requested);
      stat(reply, name("evicted"), k.evicted);
      stat(reply, name("outofmemory"), k.outOfMemory);
      stat(reply, name("reclaimed"), k.reclaimed);
    }
  } finally {
    store.unlock();
  }
}

function slabs(reply: Reply, store: SharedStore): void {
  store.lock();
  try {
    let active = 0;
    for (let c = 1; c < store.classes; c++) {
      const k = store.classStats(c);
      if (k.totalPages === 0) continue;
      active++;
      const name = (field: string) => `${c}:${field}`;
      stat(reply, name("chunk_size"), k.chunkSize);
      stat(reply, name("chunks_per_page"), k.chunksPerPage);
      stat(reply, name("total_pages"), k.totalPages);
      stat(reply, name("total_chunks"), k.totalChunks);
      stat(reply, name("used_chunks"), k.usedChunks);
      stat(reply, name("free_chunks"), k.freeChunks);
      stat(reply, name("free_chunks_end"), 0); // counted in free_chunks, as memcached 1.6 does
      stat(reply, name("get_hits"), store.classCount(ClassStat.get_hits, c));
      stat(reply, name("cmd_set"), store.classCount(ClassStat.cmd_set, c));
      stat(reply, name("delete_hits"), store.classCount(ClassStat.delete_hits, c));
      stat(reply, name("incr_hits"), store.classCount(ClassStat.incr_hits, c));
      stat(reply, name("decr_hits"), store.classCount(ClassStat.decr_hits, c));
      stat(reply, name("cas_hits"), store.classCount(ClassStat.cas_hits, c));
      stat(reply, name("cas_badval"), store.classCount(ClassStat.cas_badval, c));
      stat(reply, name("touch_hits"), store.classCount(ClassStat.touch_hits, c));
    }
    stat(reply, "active_slabs", active);
    stat(reply, "total_malloced", store.globals().total_malloced);
  } finally {
    store.unlock();
  }
}
