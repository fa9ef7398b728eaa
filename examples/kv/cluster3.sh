# Sourced by bench.sh and thread_cost.sh (from the repository root): a 3-node flotilla-kv
# cluster on loopback ports 16001-3 (clients) and 17001-3 (peers), node 1 founding it.
# Expects T (the release binaries), DIR (a scratch directory) and PIDS (an array).
#   start_three_nodes "EXTRA TOML LINES"   writes the configs and starts the nodes
#   cleanup                                stops every process in PIDS, removes DIR
# `@ID@` in the extra lines is replaced by each node's id.

# Stops every server and waits for it to exit (a node shuts down cleanly within its
# shutdown timeout), so that a run right after this one finds the ports free.
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}

start_three_nodes() {
  local extra=$1 i boot
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
${extra//@ID@/$i}
TOML
    "$T/flotilla-kv" --config "$DIR/node$i.toml" > "$DIR/node$i.log" 2>&1 &
    PIDS+=($!)
  done
}
