#!/usr/bin/env bash
# A flood of huge uploads against one node, from outside the project's code (curl), and what
# it did to the cluster: one summary line.
#
#   scripts/flood.sh                 30 concurrent 27 MB uploads to node 1 of three nodes
#   FLOOD_UPLOADS=12 FLOOD_MB=20 FLOOD_BUDGET_MB=256 scripts/flood.sh   (default budget: 64)
#
# Prints: uploads answered 200 / refused (503 with Retry-After) / other answers; served (the
# request log's entries); elections (epoch before and after); the slowest GET /status of the
# flooded node during the flood (its runtime's responsiveness: what heartbeats wait for);
# each node's RSS when idle before, its peak (VmHWM) and its RSS 3 s after the flood.
# FLOOD_STRESS=N also runs `client stress` with N multicast clients, 3 requests each of the
# same huge image, during the flood (they are refused by busy nodes and retry): its success
# rate, duplicates and lost requests are added to the summary.
# FLOOD_PROFILE=debug uses the debug binaries (default release); FLOOD_BUILD=0 builds nothing;
# FLOOD_KEEP=1 keeps the run folder (node logs, answers' headers).
# Needs curl and python3 (to write a PNG of noise). Every process it started is stopped on exit.
set -uo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PROFILE="${FLOOD_PROFILE:-release}"
UPLOADS="${FLOOD_UPLOADS:-30}"
MB="${FLOOD_MB:-27}"
BUDGET_MB="${FLOOD_BUDGET_MB:-64}"
if [[ "$PROFILE" == debug ]]; then BIN="$TARGET_DIR/debug"; BUILD_FLAGS=(); else BIN="$TARGET_DIR/release"; BUILD_FLAGS=(--release); fi
for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "flood.sh: needs $tool" >&2; exit 2; }
done
if [[ "${FLOOD_BUILD:-1}" != 0 ]]; then
    cargo build -q "${BUILD_FLAGS[@]}" --bin cloud-node --bin client || exit 2
fi

RUN="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [[ "${FLOOD_KEEP:-0}" == 1 ]]; then echo "flood.sh: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports: node i uses BASE+i-1 (members) and BASE+999+i (HTTP).
BASE=$((20000 + RANDOM % 20000))
python3 - "$RUN/big.png" "$MB" <<'EOF'
import os, struct, sys, zlib
path, mb = sys.argv[1], int(sys.argv[2])
side = int((mb * 2**20 / 3) ** 0.5)
raw = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
open(path, "wb").write(png)
EOF
for id in 1 2 3; do
    "$BIN/cloud-node" "$id" --nodes 3 --base-port "$BASE" --secret flood-secret --failures off \
        --payload-budget-mb "$BUDGET_MB" --data-dir "$RUN/node-$id" >"$RUN/node-$id.log" 2>&1 &
    PIDS+=($!)
done
status() { curl -s --max-time 2 "http://127.0.0.1:$((BASE + 999 + $1))/status"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))" 2>/dev/null; }
for _ in $(seq 150); do
    [[ "$(status 1 | field coordinator)" =~ ^[0-9]+$ ]] && break
    sleep 0.1
done
epoch_before=$(status 1 | field epoch)
[[ -n "$epoch_before" ]] || { echo "flood.sh: the cluster did not elect a coordinator" >&2; exit 1; }

rss_of() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null; }
idle=()
for i in 0 1 2; do idle+=("$(rss_of "${PIDS[$i]}")"); done

# The probe: GET /status of node 1, back to back, while the uploads run.
probe() {
    while [[ ! -e "$RUN/done" ]]; do
        curl -s -o /dev/null -w '%{time_total}\n' --max-time 10 \
            "http://127.0.0.1:$((BASE + 1000))/status" >>"$RUN/probe" 2>/dev/null
        sleep 0.05
    done
}
probe &
PROBE=$!
PIDS+=("$PROBE")
url="http://127.0.0.1:$((BASE + 1000))/encrypt"
start=$(date +%s.%N)
CURLS=()
STRESS="${FLOOD_STRESS:-0}"
if [[ "$STRESS" != 0 ]]; then
    "$BIN/client" stress --nodes 3 --base-port "$BASE" --secret flood-secret --clients "$STRESS" \
        --requests "${FLOOD_STRESS_REQUESTS:-200}" --limit-secs 0 --deadline 60 \
        --report "$RUN/stress.json" --plot "$RUN/stress.png" >"$RUN/stress.out" 2>&1 &
    CURLS+=($!)
fi
for i in $(seq "$UPLOADS"); do
    curl -s -o /dev/null -D "$RUN/h$i" -w '%{http_code}\n' --max-time 120 \
        -F "image=@$RUN/big.png" -F owner=alice "$url" >"$RUN/code$i" 2>/dev/null &
    CURLS+=($!)
done
wait "${CURLS[@]}" 2>/dev/null
touch "$RUN/done"
wait "$PROBE" 2>/dev/null
took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")

ok=0; refused=0; other=0
for i in $(seq "$UPLOADS"); do
    code=$(cat "$RUN/code$i" 2>/dev/null)
    if [[ "$code" == 200 ]]; then ok=$((ok + 1))
    elif [[ "$code" == 503 ]] && grep -qi '^retry-after:' "$RUN/h$i"; then refused=$((refused + 1))
    else other=$((other + 1)); fi
done
sleep 3
served=$(status 1 | field request_log)
epoch_after=$(status 1 | field epoch)
status_max=$(sort -g "$RUN/probe" 2>/dev/null | tail -1 | awk '{printf "%d", $1 * 1000}')
probes=$(wc -l <"$RUN/probe" 2>/dev/null)
rss=""
for i in 0 1 2; do
    hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/${PIDS[$i]}/status" 2>/dev/null)
    rss+="node$((i + 1))=${idle[$i]:-?}/${hwm:-?}/$(rss_of "${PIDS[$i]}")MB "
done
stress=""
if [[ "$STRESS" != 0 ]]; then
    stress=$(python3 -c "import json; r = json.load(open('$RUN/stress.json')); print(f\"stress_clients=$STRESS success={r['success_rate']} dup={r['duplicates']} lost={r['lost']} \")" 2>/dev/null || echo "stress=failed ")
fi
echo "$stress""flood uploads=$UPLOADS size_mb=$MB budget_mb=$BUDGET_MB answered_200=$ok refused_503=$refused other=$other served=$served epoch=$epoch_before->$epoch_after took_s=$took status_max_ms=${status_max:-?} (of ${probes:-0}) rss_idle/peak/after: $rss"
stress_ok=1
[[ "$STRESS" == 0 || "$stress" == *"success=1.0 dup=0 lost=0 "* ]] || stress_ok=0
served_http=$served
[[ "$STRESS" != 0 ]] && served_http=$((served - ${FLOOD_STRESS_REQUESTS:-200} * STRESS))
[[ $other == 0 && "$served_http" == "$ok" && "$epoch_before" == "$epoch_after" && $stress_ok == 1 ]]
