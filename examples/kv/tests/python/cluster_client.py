"""pip's `redis` (8.x) RedisCluster at its default settings against flotilla-kv nodes in
cluster mode, while the test moves leaderships and adds and removes a node.

Usage: python3 cluster_client.py HOST PORT STOP_FILE MAX_SECONDS. Runs SET, GET, INCR and
MGET with hash tags over keys of every shard until STOP_FILE exists (or MAX_SECONDS pass),
checking every reply: a value read is the one last written, an INCR counts exactly the
INCRs made, MGET agrees; then SCAN (sent to every primary) returns every key. Any exception (the client's own, after its default retries) fails
the run. Prints a JSON summary on success."""
import json
import os
import sys
import time

import redis
from redis.cluster import RedisCluster

host, port, stop_file, max_seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
assert redis.__version__.split(".")[0] == "8", f"pip's redis 8.x expected, found {redis.__version__}"
rc = RedisCluster(host=host, port=port)
tags = [f"t{k}" for k in range(16)]
counts = {t: 0 for t in tags}
start = time.monotonic()
ops = 0
i = 0
while not os.path.exists(stop_file) and time.monotonic() - start < max_seconds:
    t = tags[i % len(tags)]
    s, n = f"{{{t}}}s", f"{{{t}}}n"
    assert rc.set(s, str(i)) is True
    assert rc.get(s) == str(i).encode(), (s, i)
    counts[t] += 1
    assert rc.incr(n) == counts[t], (n, counts[t])
    assert rc.mget([s, n]) == [str(i).encode(), str(counts[t]).encode()]
    ops += 4
    i += 1
for t in tags:
    if counts[t]:
        assert int(rc.get(f"{{{t}}}n")) == counts[t]
# SCAN goes to every node the client takes for a primary; each node's scan covers every
# key (a key may come once per node, as Redis's SCAN contract allows), so none is missed.
keys = list(rc.scan_iter(match="{t*", count=20))
assert set(keys) == {f"{{{t}}}{x}".encode() for t in tags if counts[t] for x in "sn"}, sorted(keys)
assert rc.dbsize() >= len(set(keys))
nodes = sorted(f"{n.host}:{n.port}" for n in rc.get_nodes())
print(json.dumps({"ops": ops, "rounds": i, "nodes": nodes}))
