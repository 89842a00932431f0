#!/usr/bin/env bash
# The soak: a million requests through three nodes, memory and links read from outside, then a
# node restarted after it. Prints one line of figures per check and a verdict; exits non-zero
# if a check fails.
#
#   scripts/soak.sh                   1,000,000 requests (50 clients x 20,000), release build
#   SOAK_REQUESTS=4000 scripts/soak.sh   requests per client (50 clients)
#
# Checks (issue 27): every request answered once (the stress report: lost 0, duplicates 0);
# every node's RSS <= 96 MB and growing <= 16 MB from 200k requests to the end; no link
# re-connected (imgcloud_link_reconnects_total 0); a node restarted after the soak is
# Active within 1 s of its start. Every process it starts is stopped on exit.
set -uo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release"
PER_CLIENT="${SOAK_REQUESTS:-20000}"
CLIENTS=50
RSS_LIMIT_KB=$((96 * 1024))
GROWTH_LIMIT_KB=$((16 * 1024))
MARK=200000

cargo build --release --bins --quiet || exit 1

WORK=$(mktemp -d)
PIDS=()
SAMPLER=""
cleanup() {
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

# A free base port: node i uses BASE+i-1 for members and clients, and 1000 above for HTTP.
free_base() {
    for _ in $(seq 50); do
        local base=$((20000 + RANDOM % 9000))
        local busy=0
        for p in $base $((base + 1)) $((base + 2)) $((base + 1000)) $((base + 1001)) $((base + 1002)); do
            if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then busy=1; fi
        done
        [[ $busy == 0 ]] && { echo "$base"; return; }
    done
    echo "no free ports" >&2
    exit 1
}
BASE=$(free_base)
http() { echo "127.0.0.1:$((BASE + 1000 + $1 - 1))"; }

start_node() {
    "$BIN/cloud-node" "$1" --nodes 3 --base-port "$BASE" --failures off \
        --data-dir "$WORK/node-$1" >>"$WORK/node-$1.log" 2>&1 &
    PIDS[$1]=$!
}

rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() { curl -s --max-time 2 "http://$(http "$1")/metrics" | awk -v m="$2" '$1 ~ "^"m"[{ ]" {print $2}'; }
state() { curl -s --max-time 1 "http://$(http "$1")/status" | grep -o '"state":"[A-Za-z]*"' | head -1 | cut -d'"' -f4; }

for i in 1 2 3; do start_node "$i"; done
for _ in $(seq 100); do
    [[ "$(state 1)$(state 2)$(state 3)" == ActiveActiveActive ]] && break
    sleep 0.1
done

# Sample RSS and the encryptions done every second, from outside the nodes.
(
    while true; do
        done_total=0
        for i in 1 2 3; do done_total=$((done_total + $(metric "$i" imgcloud_encryptions_total | cut -d. -f1))); done
        echo "$(date +%s) $done_total $(rss_kb "${PIDS[1]}") $(rss_kb "${PIDS[2]}") $(rss_kb "${PIDS[3]}")"
        sleep 1
    done
) >"$WORK/samples" 2>/dev/null &
SAMPLER=$!

TOTAL=$((CLIENTS * PER_CLIENT))
echo "soak: $TOTAL requests ($CLIENTS clients x $PER_CLIENT) through 3 nodes (base port $BASE, logs in $WORK)"
timeout 1800 "$BIN/client" stress --nodes 3 --base-port "$BASE" --clients "$CLIENTS" --requests "$PER_CLIENT" \
    --no-verify --limit-secs 0 --report "$WORK/report.json" --plot "$WORK/report.png" >"$WORK/stress.log" 2>&1
STRESS=$?
sleep 2
kill "$SAMPLER" 2>/dev/null
SAMPLER=""

FAIL=0
check() { # name ok(0/1) figures
    if [[ $2 == 1 ]]; then echo "  ok    $1: $3"; else echo "  FAIL  $1: $3"; FAIL=1; fi
}
succeeded=$(grep -o '"succeeded": *[0-9]*' "$WORK/report.json" | grep -o '[0-9]*$')
lost=$(grep -o '"lost": *[0-9]*' "$WORK/report.json" | grep -o '[0-9]*$')
dups=$(grep -o '"duplicates": *[0-9]*' "$WORK/report.json" | grep -o '[0-9]*$')
rate=$(grep -o 'Throughput: *[0-9.]*' "$WORK/stress.log" | grep -o '[0-9.]*$')
check "answered once" $([[ $STRESS == 0 && "$succeeded" == "$TOTAL" && "$lost" == 0 && "$dups" == 0 ]] && echo 1 || echo 0) \
    "stress exit $STRESS, ${succeeded:-?} of $TOTAL succeeded, lost ${lost:-?}, duplicates ${dups:-?}, ${rate:-?} req/s"

for i in 1 2 3; do
    col=$((i + 2))
    at_mark=$(awk -v m=$MARK -v c=$col '$2 >= m {print $c; exit}' "$WORK/samples")
    peak=$(awk -v c=$col 'BEGIN{p=0} $c > p {p=$c} END{print p}' "$WORK/samples")
    end=$(tail -1 "$WORK/samples" | awk -v c=$col '{print $c}')
    at_mark=${at_mark:-$end}
    growth=$((end - at_mark))
    ok=$([[ $peak -le $RSS_LIMIT_KB && $growth -le $GROWTH_LIMIT_KB ]] && echo 1 || echo 0)
    check "node $i memory" "$ok" "RSS $((at_mark / 1024)) MB at ${MARK} requests, $((end / 1024)) MB at the end, peak $((peak / 1024)) MB, growth $((growth / 1024)) MB"
done

reconnects=0
for i in 1 2 3; do reconnects=$((reconnects + $(metric "$i" imgcloud_link_reconnects_total | cut -d. -f1))); done
entries=$(metric 1 imgcloud_request_log_entries | cut -d. -f1)
check "links" $([[ $reconnects == 0 ]] && echo 1 || echo 0) "$reconnects re-connections; node 1's request log holds $entries entries"

# A node restarted after the soak: Active within 1 s of its start.
kill -KILL "${PIDS[3]}" 2>/dev/null
wait "${PIDS[3]}" 2>/dev/null
for _ in $(seq 100); do
    [[ "$(curl -s --max-time 1 "http://$(http 1)/status" | grep -c '"state":"Failed"\|"state":"Recovering"')" != 0 ]] && break
    sleep 0.05
done
started=$(date +%s%N)
start_node 3
active_ms=""
while (( ($(date +%s%N) - started) / 1000000 < 10000 )); do
    if [[ "$(state 3)" == Active ]]; then active_ms=$(( ($(date +%s%N) - started) / 1000000 )); break; fi
    sleep 0.02
done
check "restart" $([[ -n "$active_ms" && $active_ms -le 1000 ]] && echo 1 || echo 0) \
    "node 3 Active ${active_ms:-never (10 s)} ms after its start"

if [[ $FAIL == 0 ]]; then echo "soak: ok"; else echo "soak: FAILED (logs in $WORK)"; trap - EXIT; cleanup; exit 1; fi
