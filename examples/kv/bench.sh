#!/usr/bin/env bash
# redis-benchmark against a 3-node flotilla-kv cluster on loopback, beside a single
# redis-server on the same machine (without persistence, and with appendfsync always, the
# durable single-node choice). Needs Debian's redis-tools and redis-server.
#   bash examples/kv/bench.sh [REQUESTS]
# Builds the release binaries, starts the cluster in a temporary directory (node 1 founds
# it, nodes 2 and 3 are added, leaders are evened out), runs SET and GET with 50 clients,
# not pipelined and pipelined 16 deep, and stops everything. With CLUSTER_MODE=true (the
# default) the nodes speak the Redis Cluster protocol and `redis-benchmark --cluster`
# sends each key to its shard's leader; with CLUSTER_MODE=false every request goes to
# node 1, which forwards writes for shards it does not lead. Each throughput line ends with
# the CPU time the server processes used per request (the three nodes together; one
# redis-server), from /proc: on these small machines the client and the servers share
# the cores, so CPU per request is the steadier figure. LEASE_READS=true serves the
# leaders' reads under their lease (`lease_reads`) instead of a ReadIndex round each.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
CLUSTER_MODE=${CLUSTER_MODE:-true}
T=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p flotilla-kv -p flotilla-net
DIR=$(mktemp -d)
PIDS=()
source examples/kv/cluster3.sh
trap cleanup EXIT
start_three_nodes "cluster_mode = $CLUSTER_MODE
lease_reads = ${LEASE_READS:-false}"
KV_PIDS="${PIDS[*]}"
# CPU time (clock ticks, user + system) of the processes listed.
ticks() { local s=0 p u st; for p in "$@"; do read -r u st < <(awk '{print $14, $15}' "/proc/$p/stat"); s=$((s + u + st)); done; echo "$s"; }
# One redis-benchmark test against the processes $1 (a list of pids), printing its
# throughput line and the CPU µs they used per request.
# $2 is the number of requests.
run_one() {
  local pids=$1 n=$2 c0 c1 line; shift 2
  c0=$(ticks $pids)
  line=$(redis-benchmark -n "$n" "$@" -q 2>&1 | tr "\r" "\n" | grep "requests per second" || true)
  c1=$(ticks $pids)
  awk -v l="$line" -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" \
    'BEGIN { printf "%s; server CPU %.1f us/request\n", l, t * 1e6 / hz / n }'
}
sleep 1
"$T/flotilla-admin" --seed 127.0.0.1:16001 add-servers 127.0.0.1:16002 127.0.0.1:16003
"$T/flotilla-rebalance" --seed 127.0.0.1:16001 --by count --rate 100 | tail -4
redis-server --port 16379 --save '' --appendonly no --daemonize no > "$DIR/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
mkdir -p "$DIR/aof"
redis-server --port 16380 --save '' --appendonly yes --appendfsync always --dir "$DIR/aof" --daemonize no > "$DIR/redis-aof.log" 2>&1 &
PIDS+=($!)
AOF_PID=$!
sleep 0.5
FLOTILLA="flotilla-kv (3 nodes, via node 1):16001::$KV_PIDS"
[ "$CLUSTER_MODE" = true ] && FLOTILLA="flotilla-kv (3 nodes, cluster mode):16001:--cluster:$KV_PIDS"
# TAIL_ONLY=1 skips the throughput runs.
for target in "$FLOTILLA" "redis-server (no persistence):16379::$REDIS_PID" "redis-server (appendfsync always):16380::$AOF_PID"; do
  [ -n "${TAIL_ONLY:-}" ] && break
  IFS=: read -r name port flag pids <<< "$target"
  for p in 1 16; do
    echo "== $name, 50 clients, pipeline $p"
    # `--cluster` runs redis-benchmark's threads, which end a test only at their next
    # 250 ms progress tick, so its time is rounded up to a multiple of 250 ms (100,000
    # pipelined SETs that take 0.3 s read as 0.5 s). Longer runs keep that within a few
    # percent: REQUESTS x3 not pipelined, x20 pipelined 16 deep (every target alike).
    n=$((N * 3)); [ "$p" = 16 ] && n=$((N * 20))
    for t in set get; do
      run_one "$pids" "$n" -p "$port" $flag -c 50 -P "$p" -r 100000 -t "$t"
    done
  done
done
# The tail under load: 16 KiB values, pipelined 16 deep, 50 clients (latency in ms).
for target in "$FLOTILLA" "redis-server (appendfsync always):16380::$AOF_PID"; do
  IFS=: read -r name port flag _ <<< "$target"
  echo "== $name, SET of 16 KiB values, 50 clients, pipeline 16: avg min p50 p95 p99 max (ms)"
  redis-benchmark -p "$port" $flag -c 50 -n "$N" -P 16 -d 16384 -r 100000 -t set 2>&1 | tr "\r" "\n" \
    | grep -A2 "latency summary" | tail -1 || true
done
