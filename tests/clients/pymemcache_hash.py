"""Shards keys over several memcached-compatible servers with pymemcache's HashClient
(consistent hashing, as memcached is deployed past one machine) and checks that nothing is lost.

Usage: python3 pymemcache_hash.py <host:port> <host:port> [...]. Exits 0 and prints
"hashclient: N keys over M servers" when every key reads back from the server it went to and
every server holds a share; otherwise prints what failed and exits 1.
"""

import sys

from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

servers = []
for arg in sys.argv[1:]:
    host, port = arg.rsplit(":", 1)
    servers.append((host, int(port)))

# ignore_exc=False: a server that fails must fail the check, not read as a miss.
client = HashClient(servers, connect_timeout=5, timeout=10, ignore_exc=False, retry_attempts=1)
keys = {f"user:{i}": f"value-{i}".encode() * (1 + i % 7) for i in range(5000)}

for key, value in keys.items():
    if not client.set(key, value, noreply=False):
        print(f"FAILED: set {key}")
        sys.exit(1)
got = client.get_many(list(keys))
missing = [key for key in keys if got.get(key) != keys[key]]
if missing:
    print(f"FAILED: {len(missing)} keys lost or wrong, first {missing[:5]}")
    sys.exit(1)

# Each server holds exactly its own share, and all shares add up.
total = 0
for host, port in servers:
    direct = Client((host, port), connect_timeout=5, timeout=10)
    items = int(direct.stats()[b"curr_items"])
    if items == 0:
        print(f"FAILED: server {host}:{port} holds no keys: the client did not shard")
        sys.exit(1)
    total += items
    direct.close()
if total != len(keys):
    print(f"FAILED: the servers hold {total} items, not {len(keys)}")
    sys.exit(1)

# Deleting through the hash client removes each key from its own server.
for key in list(keys)[:500]:
    client.delete(key, noreply=False)
if any(v is not None for v in client.get_many(list(keys)[:500]).values()):
    print("FAILED: a deleted key still reads back")
    sys.exit(1)
print(f"hashclient: {len(keys)} keys over {len(servers)} servers")
