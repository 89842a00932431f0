#!/usr/bin/env bash
# Starts the default 3-node cluster in the background (node i on 127.0.0.1:800i, HTTP 900i),
# remembers their pids in .nodes.pids for stop_nodes.sh, and logs to logs/node-i.log.
# Extra arguments go to every node, e.g. ./run_nodes.sh --delay-ms 500 --failures off
set -euo pipefail
cd "$(dirname "$0")"
if [ -s .nodes.pids ]; then
  echo "run_nodes.sh: .nodes.pids exists; run ./stop_nodes.sh first" >&2
  exit 1
fi
cargo build --release --bin cloud-node
mkdir -p logs
: > .nodes.pids
for id in 1 2 3; do
  ./target/release/cloud-node "$id" "$@" > "logs/node-$id.log" 2>&1 &
  echo $! >> .nodes.pids
  echo "node $id: pid $!, log logs/node-$id.log, status http://127.0.0.1:900$id/status"
done
