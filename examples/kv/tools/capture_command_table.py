"""Captures Redis 7.0's own COMMAND INFO and COMMAND DOCS replies (RESP3) for the commands
flotilla-kv serves, into examples/kv/src/command_info.resp and command_docs.resp, which the
server embeds to answer COMMAND (src/command_table.rs). The subcommands of CLIENT, CONFIG
and COMMAND are cut down to the ones flotilla-kv serves.

Usage (from the repository root, with a redis-server 7.0 listening on PORT):
    python3 examples/kv/tools/capture_command_table.py PORT
"""
import os
import socket
import sys

# Keep in step with the server's commands (command_table.rs's test checks every name here
# is one the server answers, and tests/redis_compat.rs compares the replies).
COMMANDS = [
    "append", "auth", "client", "command", "config", "dbsize", "decr", "decrby", "del",
    "echo", "exists", "flushdb", "get", "getdel", "getset", "hello", "incr", "incrby", "info",
    "keys", "mget", "scan",
    "mset", "ping", "quit", "select", "set", "setnx", "strlen", "type",
    "setex", "psetex", "getex", "incrbyfloat",
    "hset", "hmset", "hsetnx", "hget", "hmget", "hdel", "hgetall", "hlen", "hexists", "hkeys", "hvals",
    "hstrlen", "hincrby", "hincrbyfloat",
    "expire", "pexpire", "expireat", "pexpireat", "persist", "ttl", "pttl", "expiretime", "pexpiretime",
    "multi", "exec", "discard", "watch", "unwatch",
]
SUBCOMMANDS = {
    "client": ["client|id", "client|setname", "client|getname"],  # SETINFO is Redis 7.2, not in 7.0's table
    "config": ["config|get"],
    "command": ["command|count", "command|info", "command|docs", "command|list"],
}


def enc(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Reader:
    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def exact(self, n):
        while len(self.buf) < n:
            self.buf += self.s.recv(65536)
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def value(self):
        """One value as (type, payload), payload a list for aggregates."""
        l = self.line()
        t, rest = l[:1], l[1:]
        if t in (b"$", b"=", b"!"):
            n = int(rest)
            if n < 0:
                return (t, None)
            b = self.exact(n + 2)[:-2]
            return (t, b)
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return (t, None if n < 0 else [self.value() for _ in range(n)])
        if t == b"%":
            return (t, [(self.value(), self.value()) for _ in range(int(rest))])
        return (t, rest)


def write(v, out):
    t, p = v
    if t in (b"$", b"=", b"!"):
        out += t + (b"-1\r\n" if p is None else b"%d\r\n%s\r\n" % (len(p), p))
    elif t in (b"*", b"~", b">"):
        out += t + b"%d\r\n" % len(p)
        for x in p:
            write(x, out)
    elif t == b"%":
        out += t + b"%d\r\n" % len(p)
        for k, x in p:
            write(k, out)
            write(x, out)
    else:
        out += t + p + b"\r\n"


def main():
    port = int(sys.argv[1])
    s = socket.create_connection(("127.0.0.1", port))
    r = Reader(s)
    s.sendall(enc("HELLO", "3"))
    r.value()
    s.sendall(enc("COMMAND", "INFO", *COMMANDS))
    infos = r.value()[1]
    for i, name in enumerate(COMMANDS):
        t, fields = infos[i]
        assert t == b"*" and fields[0][1] == name.encode(), (name, infos[i])
        if name in SUBCOMMANDS:
            subs = fields[9][1]
            keep = [x for x in subs if x[1][0][1].decode() in SUBCOMMANDS[name]]
            assert len(keep) == len(SUBCOMMANDS[name]), (name, [x[1][0][1] for x in subs])
            fields[9] = (b"*", keep)
    s.sendall(enc("COMMAND", "DOCS", *COMMANDS))
    docs = r.value()[1]
    byname = {k[1].decode(): v for k, v in docs}
    assert sorted(byname) == sorted(COMMANDS), sorted(byname)
    for name, subs in SUBCOMMANDS.items():
        t, kv = byname[name]
        for i, (k, v) in enumerate(kv):
            if k[1] == b"subcommands":
                kv[i] = (k, (v[0], [(sk, sv) for sk, sv in v[1] if sk[1].decode() in subs]))
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    info_out, docs_out = bytearray(), bytearray()
    write((b"*", infos), info_out)
    write((b"%", [((b"$", n.encode()), byname[n]) for n in COMMANDS]), docs_out)
    open(os.path.join(here, "command_info.resp"), "wb").write(info_out)
    open(os.path.join(here, "command_docs.resp"), "wb").write(docs_out)
    print(f"{len(COMMANDS)} commands: {len(info_out)} bytes of COMMAND INFO, {len(docs_out)} of COMMAND DOCS")


main()
