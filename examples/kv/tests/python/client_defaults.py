"""pip's `redis` (8.x) at its defaults against one flotilla-kv node: no protocol argument,
so the client opens its connection with HELLO 3 and sends CLIENT SETINFO.

Usage: python3 client_defaults.py HOST PORT. Exits 0 when every reply is what the
client expects; an exception (the client's own error) fails the run."""
import sys

import redis

host, port = sys.argv[1], int(sys.argv[2])
assert redis.__version__.split(".")[0] == "8", f"pip's redis 8.x expected, found {redis.__version__}"
r = redis.Redis(host=host, port=port, socket_timeout=15)
assert r.ping() is True
assert r.set("py:k", "v") is True
assert r.get("py:k") == b"v"
assert r.incr("py:n") == 1
assert r.incrby("py:n", 4) == 5
assert r.mget(["py:k", "py:n", "py:none"]) == [b"v", b"5", None]
assert r.get("py:none") is None
assert r.delete("py:k") == 1
assert r.exists("py:k") == 0
hello = r.execute_command("HELLO")
assert hello[b"proto"] == 3 if isinstance(hello, dict) and b"proto" in hello else hello["proto"] == 3, hello
r.client_setname("py-test")
assert r.client_getname() in ("py-test", b"py-test")
assert isinstance(r.client_id(), int)
print("ok")
