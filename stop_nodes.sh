#!/usr/bin/env bash
# Stops exactly the nodes that run_nodes.sh started (the pids in .nodes.pids).
set -uo pipefail
cd "$(dirname "$0")"
[ -f .nodes.pids ] || { echo "stop_nodes.sh: no .nodes.pids; nothing to stop"; exit 0; }
pids=$(cat .nodes.pids)
for pid in $pids; do kill -TERM "$pid" 2>/dev/null && echo "stopping pid $pid"; done
for _ in $(seq 30); do
  alive=0
  for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null && echo "killed pid $pid"; done
rm -f .nodes.pids
