#!/usr/bin/env bash
# A skewed write workload against a 3-node flotilla-kv cluster on loopback (cluster mode,
# 6 shards), before rebalancing, after load-aware rebalancing, and after splitting the hot
# shards and rebalancing again, in one run (issue 15 point 5). Needs python3 (the client
# is inline below: plain sockets, no packages) and redis-cli (Debian's redis-tools).
#   bash examples/kv/skew_bench.sh [SECONDS_PER_ROUND] [CLIENTS]
# Builds the release binaries, starts the cluster in a temporary directory (node 1 founds
# it, nodes 2 and 3 are added), has node 1 lead the 2 hot shards (1000, 1001) and nodes 2
# and 3 two cold shards each, and runs the client round by round: CLIENTS connections
# (default 32) each sending SET of 100-byte values, one at a time, to the leader of the
# key's shard (following -MOVED), 80% of them to keys of the 2 hot shards and 20% to the
# other 4, random keys from a fixed pool spread over every slot. Rounds:
#   uniform       the same client with every key equally likely (leaders evened by count)
#   skewed        80% of the writes on the hot shards, node 1 leading both
#   rebalanced    after `flotilla-rebalance` (by measured load)
#   split         after `flotilla-admin split` of both hot shards (the halves start led
#                 by node 1)
#   split+rebal.  after `flotilla-rebalance` again
# Each round prints requests/s, p50 and p99 latency (ms), and the per-node leader write
# load max/min ratio as the rebalancer measures it. Stops everything at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-15}
CLIENTS=${2:-32}
T=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p flotilla-kv -p flotilla-net
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
"$T/flotilla-certs" init "$DIR/certs" --nodes 1,2,3 >/dev/null
for i in 1 2 3; do
  boot=false; [ "$i" = 1 ] && boot=true
  cat > "$DIR/node$i.toml" <<TOML
node_id = $i
data_dir = "$DIR/data$i"
peer_addr = "127.0.0.1:$((17100 + i))"
client_addr = "127.0.0.1:$((16100 + i))"
ca_cert = "$DIR/certs/ca.pem"
node_cert = "$DIR/certs/node-$i.pem"
node_key = "$DIR/certs/node-$i.key"
bootstrap = $boot
cluster_mode = true
shards = 6
load_half_life_ms = 3000
TOML
  "$T/flotilla-kv" --config "$DIR/node$i.toml" > "$DIR/node$i.log" 2>&1 &
  PIDS+=($!)
done
SEED=127.0.0.1:16101
ADMIN="$T/flotilla-admin --seed $SEED"
sleep 1
$ADMIN add-servers 127.0.0.1:16102 127.0.0.1:16103 >/dev/null
"$T/flotilla-rebalance" --seed $SEED --by count --rate 100 >/dev/null

cat > "$DIR/load.py" <<'PY'
# The skewed SET load: threads, each one connection per node, RESP over plain sockets.
import random, socket, sys, threading, time
ports, secs, clients, hot = [int(p) for p in sys.argv[1].split(",")], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

def crc16(b):
    c = 0
    for x in b:
        c ^= x << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
    return c

SHARDS = 6
keys = [b"k%d" % i for i in range(6000)]
slot_of = {k: crc16(k) % 16384 for k in keys}
shard = lambda k: ((slot_of[k] + 1) * SHARDS - 1) // 16384
hot_keys = [k for k in keys if shard(k) < 2]
cold_keys = [k for k in keys if shard(k) >= 2]
slot_port = {}
value = b"v" * 100

def resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

def reply(f):
    line = f.readline()
    if line[:1] == b"$" and int(line[1:]) >= 0:
        line += f.read(int(line[1:]) + 2)
    elif line[:1] == b"*":
        return line, [reply(f) for _ in range(int(line[1:]))]
    return line, None

def refresh():
    s = socket.create_connection(("127.0.0.1", ports[0]))
    f = s.makefile("rb")
    s.sendall(resp(b"CLUSTER", b"SLOTS"))
    _, ranges = reply(f)
    for r in ranges:
        lo, hi, node = int(r[1][0][0][1:]), int(r[1][1][0][1:]), r[1][2][1]
        port = int(node[1][0][1:])
        for sl in range(lo, hi + 1):
            slot_port[sl] = port
    s.close()

lat, errors, lock = [], [0], threading.Lock()

def run(seed):
    rnd, conns, mine = random.Random(seed), {}, []
    end = time.time() + secs
    while time.time() < end:
        k = rnd.choice(hot_keys if rnd.random() < hot else cold_keys)
        port = slot_port.get(slot_of[k], ports[0])
        for _ in range(5):
            if port not in conns:
                s = socket.create_connection(("127.0.0.1", port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[port] = (s, s.makefile("rb"))
            s, f = conns[port]
            t0 = time.perf_counter()
            s.sendall(resp(b"SET", k, value))
            line, _ = reply(f)
            if line.startswith(b"-MOVED"):
                port = int(line.split()[2].rsplit(b":", 1)[1])
                with lock:
                    slot_port[slot_of[k]] = port
                continue
            if line.startswith(b"+OK"):
                mine.append(time.perf_counter() - t0)
            else:
                with lock:
                    errors[0] += 1
            break
    with lock:
        lat.extend(mine)

refresh()
ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
t0 = time.time()
for t in ts: t.start()
for t in ts: t.join()
el = time.time() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
print("%8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d errors)" % (len(lat) / el, q(0.50), q(0.99), errors[0]))
PY

# The per-node leader write load max/min ratio, as the rebalancer's dry run prints it.
# Measured at the end of each round (the rates' half-life is 3 s).
ratio() { "$T/flotilla-rebalance" --seed $SEED --dry-run | grep -o "leader load max/min: [0-9.a-z]*" | cut -d" " -f4 || true; }
round() { # NAME HOT_SHARE
  printf "== %-13s %s  leader load max/min %s\n" "$1" \
    "$(python3 "$DIR/load.py" 16101,16102,16103 "$SECS" "$CLIENTS" "$2")" "$(ratio)"
}
round uniform 0.3333
# Node 1 leads the hot shards 1000 and 1001, node 2 1002 and 1003, node 3 1004 and 1005.
for g in 1000:1 1001:1 1002:2 1003:2 1004:3 1005:3; do
  $ADMIN transfer-leader --group "${g%:*}" --to "${g#*:}" >/dev/null
done
round skewed 0.8
"$T/flotilla-rebalance" --seed $SEED --rate 100 | grep -E "^plan|^summary|^leader load" | tail -2 || true
round rebalanced 0.8
# One split at a time: the new shard's group is the next one the proposing node knows of,
# so the second split waits until node 1 shows the first's shard (CLUSTER SHARDS).
shards() { redis-cli -p 16101 CLUSTER SHARDS | grep -c '"slots"' || true; }
for g in 1000 1001; do
  want=$(( $(shards) + 1 ))
  $ADMIN split $g
  for _ in $(seq 300); do [ "$(shards)" -ge "$want" ] && break; sleep 0.1; done
done
round split 0.8
"$T/flotilla-rebalance" --seed $SEED --rate 100 | grep -E "^plan|^summary|^leader load" | tail -2 || true
round split+rebal. 0.8
