#!/usr/bin/env bash
# Runs the demo (it starts and stops its own nodes). Arguments go to the demo, e.g.
#   ./run_demo.sh --clients 10 --requests 50 --delay-ms 500
set -euo pipefail
cd "$(dirname "$0")"
exec cargo run --release --bin demo -- "$@"
