"""Drives a memcached-compatible server with pymemcache, a real client library.

Usage: python3 pymemcache_check.py <host> <port>. Exits 0 when every check passes; otherwise
prints the first failed check and exits 1. The server is flushed first.
"""

import os
import sys
import time

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

host, port = sys.argv[1], int(sys.argv[2])
c = Client((host, port), connect_timeout=5, timeout=10)
c2 = Client((host, port), connect_timeout=5, timeout=10)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print("FAILED: " + what)
        sys.exit(1)
    checks += 1


c.flush_all()
check(c.version().startswith(b"1.6"), "version")

# set / get / gets / delete, with flags
check(c.set(b"alpha", b"one", expire=0, noreply=False), "set")
check(c.get(b"alpha") == b"one", "get")
check(c.get(b"missing") is None, "miss")
check(c.set(b"flagged", b"x", noreply=False, flags=123456) and c.get(b"flagged") == b"x", "flags")
value, cas = c.gets(b"alpha")
check(value == b"one" and cas is not None, "gets")
check(c.delete(b"alpha", noreply=False), "delete hit")
check(not c.delete(b"alpha", noreply=False), "delete miss")

# many keys over the shards, in one get
many = {b"key:%d" % i: b"value:%d" % i for i in range(500)}
check(c.set_many(many, noreply=False) == [], "set_many")
check(c.get_many(list(many)) == many, "get_many across shards")
check(c.get_many([b"key:1", b"nope", b"key:2"]) == {b"key:1": b"value:1", b"key:2": b"value:2"},
      "get_many with misses")
check(c.delete_many(list(many)[:100], noreply=False), "delete_many")
check(c.get(b"key:5") is None and c.get(b"key:200") == b"value:200", "after delete_many")

# add / replace / append / prepend
check(c.add(b"fresh", b"1", noreply=False), "add new")
check(not c.add(b"fresh", b"2", noreply=False), "add existing")
check(c.replace(b"fresh", b"3", noreply=False), "replace existing")
check(not c.replace(b"nothere", b"3", noreply=False), "replace missing")
check(c.append(b"fresh", b"tail", noreply=False) and c.prepend(b"fresh", b"head", noreply=False),
      "append, prepend")
check(c.get(b"fresh") == b"head3tail", "append/prepend value")

# cas between two connections
c.set(b"counter", b"10", noreply=False)
v1, cas1 = c.gets(b"counter")
v2, cas2 = c2.gets(b"counter")
check(c.cas(b"counter", b"11", cas1, noreply=False), "first cas wins")
check(c2.cas(b"counter", b"12", cas2, noreply=False) is False, "second cas sees EXISTS")
check(c.cas(b"nokey", b"1", b"1", noreply=False) is None, "cas on a missing key")

# incr / decr
c.set(b"n", b"5", noreply=False)
check(c.incr(b"n", 10) == 15 and c.decr(b"n", 100) == 0, "incr, decr floor")
c.set(b"big", b"18446744073709551615", noreply=False)
check(c.incr(b"big", 1) == 0, "incr wraps at 2^64")
check(c.incr(b"nokey", 1) is None, "incr miss")
try:
    c.incr(b"fresh", 1)
    check(False, "incr on a non-number must fail")
except Exception as error:  # pymemcache raises MemcacheClientError
    check("non-numeric" in str(error), "incr non-numeric error")

# binary values, empty values, values up to the item size limit
binary = bytes(range(256)) * 4 + b"\r\nEND\r\n"
check(c.set(b"bin", binary, noreply=False) and c.get(b"bin") == binary, "binary value")
check(c.set(b"empty", b"", noreply=False) and c.get(b"empty") == b"", "empty value")
limit = 1024 * 1024
# memcached counts its item header against the limit; this server counts the value alone.
big = os.urandom(limit - 100)
check(c.set(b"large", big, noreply=False) and c.get(b"large") == big, "value near the size limit")
try:
    c.set(b"toolarge", os.urandom(limit + 1), noreply=False)
    check(False, "a value over the limit must be refused")
except MemcacheServerError as error:
    check("too large" in str(error), "over the limit: SERVER_ERROR")
check(c.get(b"toolarge") is None and c.get(b"alpha") is None, "connection fine after refusal")

# expiry: relative seconds, absolute Unix time, touch, gat
check(c.set(b"short", b"v", expire=1, noreply=False) and c.get(b"short") == b"v", "ttl set")
check(c.set(b"abs", b"v", expire=int(time.time()) + 2, noreply=False) and c.get(b"abs") == b"v",
      "absolute time set")
check(c.set(b"past", b"v", expire=int(time.time()) - 10, noreply=False) and c.get(b"past") is None,
      "absolute time in the past")
check(c.set(b"kept", b"v", expire=1, noreply=False) and c.touch(b"kept", 100, noreply=False),
      "touch")
deadline = time.time() + 10
while c.get(b"short") is not None and time.time() < deadline:
    time.sleep(0.1)
check(c.get(b"short") is None, "relative ttl expired")
while c.get(b"abs") is not None and time.time() < deadline:
    time.sleep(0.1)
check(c.get(b"abs") is None, "absolute time expired")
check(c.get(b"kept") == b"v", "touched item outlives its first ttl")

# noreply pipelining
for i in range(100):
    c.set(b"q:%d" % i, b"%d" % i, noreply=True)
check(c.get(b"q:99") == b"99", "noreply sets then get")

# stats
stats = c.stats()
check(stats[b"threads"] >= 1 and stats[b"curr_items"] > 0 and stats[b"get_hits"] > 0, "stats")
check(c.stats("settings")[b"item_size_max"] == limit, "stats settings")

# flush_all
check(c.flush_all(noreply=False) and c.get(b"bin") is None, "flush_all")
print("pymemcache: %d checks passed" % checks)
