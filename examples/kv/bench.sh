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
# node 1, which forwards writes for shards it does not lead.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
CLUSTER_MODE=${CLUSTER_MODE:-true}
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
peer_addr = "127.0.0.1:$((17000 + i))"
client_addr = "127.0.0.1:$((16000 + i))"
ca_cert = "$DIR/certs/ca.pem"
node_cert = "$DIR/certs/node-$i.pem"
node_key = "$DIR/certs/node-$i.key"
bootstrap = $boot
cluster_mode = $CLUSTER_MODE
TOML
  "$T/flotilla-kv" --config "$DIR/node$i.toml" > "$DIR/node$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 1
"$T/flotilla-admin" --seed 127.0.0.1:16001 add-servers 127.0.0.1:16002 127.0.0.1:16003
"$T/flotilla-rebalance" --seed 127.0.0.1:16001 --by count --rate 100 | tail -4
redis-server --port 16379 --save '' --appendonly no --daemonize no > "$DIR/redis.log" 2>&1 &
PIDS+=($!)
mkdir -p "$DIR/aof"
redis-server --port 16380 --save '' --appendonly yes --appendfsync always --dir "$DIR/aof" --daemonize no > "$DIR/redis-aof.log" 2>&1 &
PIDS+=($!)
sleep 0.5
FLOTILLA="flotilla-kv (3 nodes, via node 1):16001:"
[ "$CLUSTER_MODE" = true ] && FLOTILLA="flotilla-kv (3 nodes, cluster mode):16001:--cluster"
# TAIL_ONLY=1 skips the throughput runs.
for target in "$FLOTILLA" "redis-server (no persistence):16379:" "redis-server (appendfsync always):16380:"; do
  [ -n "${TAIL_ONLY:-}" ] && break
  IFS=: read -r name port flag <<< "$target"
  for p in 1 16; do
    echo "== $name, 50 clients, pipeline $p"
    redis-benchmark -p "$port" $flag -c 50 -n "$N" -P "$p" -r 100000 -t set,get -q 2>&1 | tr "\r" "\n" | grep "requests per second" || true
  done
done
# The tail under load: 16 KiB values, pipelined 16 deep, 50 clients (latency in ms).
for target in "$FLOTILLA" "redis-server (appendfsync always):16380:"; do
  IFS=: read -r name port flag <<< "$target"
  echo "== $name, SET of 16 KiB values, 50 clients, pipeline 16: avg min p50 p95 p99 max (ms)"
  redis-benchmark -p "$port" $flag -c 50 -n "$N" -P 16 -d 16384 -r 100000 -t set 2>&1 | tr "\r" "\n" \
    | grep -A2 "latency summary" | tail -1 || true
done
