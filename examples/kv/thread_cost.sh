#!/usr/bin/env bash
# Where a request's server CPU and wake-ups go, per thread: starts a 3-node flotilla-kv
# cluster on loopback as bench.sh does (cluster mode, leaders evened out), runs one
# redis-benchmark test with 50 clients, and prints per request: each server thread kind's
# CPU µs and context switches (from /proc/<pid>/task/*), the engine's WAL batches, syncs
# and applied entries (from /metrics), and the UDP datagrams the nodes exchanged (from
# /proc/net/snmp, so other UDP traffic on the machine counts too). Needs redis-tools.
#   bash examples/kv/thread_cost.sh [set|get] [REQUESTS] [PIPELINE]
# EXTRA='engine_workers = 1' adds a line to every node's config.
set -euo pipefail
cd "$(dirname "$0")/../.."
TEST=${1:-set}
N=${2:-300000}
P=${3:-1}
T=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p flotilla-kv -p flotilla-net
DIR=$(mktemp -d)
PIDS=()
source examples/kv/cluster3.sh
trap cleanup EXIT
start_three_nodes "metrics_addr = \"127.0.0.1:1810@ID@\"
cluster_mode = true
${EXTRA:-}"
sleep 1
"$T/flotilla-admin" --seed 127.0.0.1:16001 add-servers 127.0.0.1:16002 127.0.0.1:16003 >/dev/null
"$T/flotilla-rebalance" --seed 127.0.0.1:16001 --by count --rate 100 >/dev/null
if [ "$TEST" = get ]; then
  redis-benchmark -p 16001 --cluster -c 50 -n 100000 -r 100000 -t set -q >/dev/null 2>&1
fi
sleep 0.5
# One line per figure: "name value" (values of one name are summed).
snapshot() {
  local i p t
  for i in 1 2 3; do
    curl -s "127.0.0.1:$((18100 + i))/metrics" \
      | grep -E "^flotilla_engine_(wal_batches|wal_syncs|wal_inline_writes|applied_entries|applied_inline)_total " || true
  done
  awk '/^Udp:/ { if (++n == 2) print "udp_datagrams_sent", $5 }' /proc/net/snmp
  for p in "${PIDS[@]}"; do
    for t in /proc/"$p"/task/*; do
      # Thread kinds: the name without a trailing number (kv-exec-12 -> kv-exec).
      local name; name=$(sed -E 's/[-0-9]*$//' "$t/comm" | tr ' ' '_')
      awk -v n="$name" '/ctxt_switches/ { s += $2 } END { print "switches:" n, s }' "$t/status"
      awk -v n="$name" '{ print "ticks:" n, $14 + $15 }' "$t/stat"
    done
  done
}
snapshot > "$DIR/before"
redis-benchmark -p 16001 --cluster -c 50 -n "$N" -P "$P" -r 100000 -t "$TEST" -q 2>&1 | tr "\r" "\n" | grep "per second"
snapshot > "$DIR/after"
awk -v n="$N" -v hz="$(getconf CLK_TCK)" '
  FNR == NR { before[$1] += $2; next }
  { after[$1] += $2 }
  END {
    for (k in after) {
      d = after[k] - before[k]
      if (k ~ /^ticks:/) { split(k, a, ":"); cpu[a[2]] = d * 1e6 / hz / n; total += cpu[a[2]] }
      else if (k ~ /^switches:/) { split(k, a, ":"); sw[a[2]] = d / n; swt += d / n }
      else printf "%-40s %8.3f per request\n", k, d / n
    }
    printf "%-24s %10s %12s\n", "thread", "CPU us", "switches"
    for (t in cpu) if (cpu[t] >= 0.05 || sw[t] >= 0.005) printf "%-24s %10.1f %12.3f\n", t, cpu[t], sw[t]
    printf "%-24s %10.1f %12.3f\n", "all server threads", total, swt
  }' "$DIR/before" "$DIR/after"
