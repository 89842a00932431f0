#!/usr/bin/env bash
# Runs the stress test and the users' story on a "multi-host" cluster built out of network
# namespaces on this machine: cloud hosts imgm-cloud1..N (10.78.0.1..N, one cloud-node each) and
# client hosts imgm-client1..H (10.78.0.101..), each with its own address on one bridge (br0 in
# namespace imgm-br). Every client host runs one `client stress --client-processes P`, all
# started together once the cluster has elected its first coordinator; each writes its own
# report and plot. Then every client host runs --users real `peer` processes that share across
# hosts, through a whole-cloud kill -9 and a cut-off host (scripts/multihost-users.sh tells the
# story). The script prints one combined summary.
#
# Usage: scripts/multihost.sh [FLAGS]          (needs root; installs iproute2, curl, jq if missing)
#
#   --clients N            clients in all, split over the client hosts as evenly as possible
#                          (the first N mod H hosts take one more)                    [50]
#   --requests N           requests per client                                        [200]
#   --client-hosts H       client hosts (namespaces)                                  [3]
#   --client-processes P   client OS processes per client host                        [3]
#   --nodes N              cloud hosts, one node each                                 [3]
#   --failures on|off      the nodes' simulated failures (elected victim)             [on]
#   --failure-period SECS  seconds between two simulated failures                     [30]
#   --failure-max SECS     longest simulated failure                                  [20]
#   --delay-ms MS          simulated processing delay per encryption                  [0]
#   --deadline SECS        a request without a reply after this long is lost          [30]
#   --no-verify            do not decrypt and compare every reply (verified by default)
#   --users N              users (peer processes) per client host; 0: no users' part   [10]
#   --out DIR              output directory                                 [multihost-out]
#   --election-wait SECS   bound on the wait for the first election                   [30]
#   --timeout SECS         bound on the whole load phase                              [900]
#   --no-build             use the binaries already built ($CARGO_TARGET_DIR or target)
#   --profile P            the cargo profile whose binaries run: release or debug     [release]
#   -h, --help             this text
#
# Output in DIR: cluster.toml (the generated config, secret included, mode 600), per client host
# clientH-report.json, clientH-report.png and clientH.log, per node cloudI.log, per user
# users/hH-uK.log (the peer's output) and users/directory.json. Exits 0 only if every request
# succeeded (verified), none was lost or duplicated, the cluster's replicated request log has
# exactly one entry per request, and every user's step held with no overdraw and nothing lost
# after the restart; 1 if the run failed, 2 if it could not start.
# A trap removes every namespace and process it made, also on failure or Ctrl-C; if the script is
# SIGKILLed, a guardian process does it, and the next run removes anything still left.
# Under sudo, keep cargo on the PATH: sudo env "PATH=$PATH" scripts/multihost.sh
set -uo pipefail
export LC_ALL=C

ME="multihost.sh"
ORIG_PWD=$PWD
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

NS_PREFIX=imgm-
BRIDGE_NS=imgm-br
SUBNET=10.78.0            # bench/chaos/lab.rs uses 10.77.0.0/24
CLIENT_BASE=100           # client host h is $SUBNET.(CLIENT_BASE + h)
NODE_PORT=8001            # members and clients, on every cloud host
HTTP_PORT=9001            # HTTP API, on every cloud host
LOCK_FILE=/tmp/imgcloud-multihost.lock

CLIENTS=50 REQUESTS=200 HOSTS=3 PROCS=3 NODES=3
FAILURES=on FAILURE_PERIOD=30 FAILURE_MAX=20 DELAY_MS=0 DEADLINE=30
VERIFY=1 OUT=multihost-out ELECTION_WAIT=30 TIMEOUT=900 BUILD=1 USERS=10 PROFILE=release

say() { echo "$ME: $*" >&2; }
die() { say "$*"; exit 2; }
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }
run() { "$@" || die "failed: $*"; }
is_num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
float() { if [[ $1 == *.* ]]; then echo "$1"; else echo "$1.0"; fi; }

while [[ $# -gt 0 ]]; do
    flag=$1
    case "$flag" in
        -h|--help) usage; exit 0 ;;
        --no-verify) VERIFY=0; shift; continue ;;
        --no-build) BUILD=0; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || die "$flag needs a value (see --help)"
    value=$2
    shift 2
    case "$flag" in
        --clients) CLIENTS=$value ;;
        --requests) REQUESTS=$value ;;
        --client-hosts) HOSTS=$value ;;
        --client-processes) PROCS=$value ;;
        --nodes) NODES=$value ;;
        --failures) FAILURES=$value ;;
        --failure-period) FAILURE_PERIOD=$value ;;
        --failure-max) FAILURE_MAX=$value ;;
        --delay-ms) DELAY_MS=$value ;;
        --deadline) DEADLINE=$value ;;
        --out) OUT=$value ;;
        --election-wait) ELECTION_WAIT=$value ;;
        --timeout) TIMEOUT=$value ;;
        --users) USERS=$value ;;
        --profile) PROFILE=$value ;;
        *) die "unknown flag $flag (see --help)" ;;
    esac
done
for pair in "--clients:$CLIENTS" "--requests:$REQUESTS" "--client-hosts:$HOSTS" \
    "--client-processes:$PROCS" "--nodes:$NODES" "--delay-ms:$DELAY_MS" \
    "--election-wait:$ELECTION_WAIT" "--timeout:$TIMEOUT" "--users:$USERS"; do
    if ! is_int "${pair#*:}" || [[ $((10#${pair#*:})) == 0 && ${pair%%:*} != --delay-ms && ${pair%%:*} != --users ]]; then
        die "${pair%%:*} wants a positive integer, not '${pair#*:}'"
    fi
done
# Base 10 from here on (a leading zero would otherwise read as octal).
CLIENTS=$((10#$CLIENTS)) REQUESTS=$((10#$REQUESTS)) HOSTS=$((10#$HOSTS)) PROCS=$((10#$PROCS))
NODES=$((10#$NODES)) DELAY_MS=$((10#$DELAY_MS)) ELECTION_WAIT=$((10#$ELECTION_WAIT)) TIMEOUT=$((10#$TIMEOUT))
USERS=$((10#$USERS))
[[ $PROFILE == release || $PROFILE == debug ]] || die "--profile wants release or debug, not '$PROFILE'"
[[ $USERS == 0 || $HOSTS -ge 2 ]] || die "the users' part needs at least 2 client hosts (viewers are on the next host)"
[[ $USERS -le 100 ]] || die "at most 100 users per client host"
for pair in "--failure-period:$FAILURE_PERIOD" "--failure-max:$FAILURE_MAX" "--deadline:$DEADLINE"; do
    is_num "${pair#*:}" || die "${pair%%:*} wants a number of seconds, not '${pair#*:}'"
done
[[ $FAILURES == on || $FAILURES == off ]] || die "--failures wants on or off, not '$FAILURES'"
[[ $NODES -le 50 && $HOSTS -le 50 ]] || die "at most 50 nodes and 50 client hosts"
[[ $CLIENTS -ge $HOSTS ]] || die "--clients ($CLIENTS) must be at least --client-hosts ($HOSTS)"
[[ $OUT == /* ]] || OUT="$ORIG_PWD/$OUT"

[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 or later (EPOCHREALTIME)"
if [[ $(id -u) != 0 ]]; then
    die "needs root: it creates network namespaces, veth pairs and a bridge (try: sudo env \"PATH=\$PATH\" $0)"
fi

# Tools: install only what is missing, with one package index update.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
[[ $USERS -gt 0 ]] && ! command -v nft >/dev/null 2>&1 && missing+=(nftables)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q "${missing[@]}"; } >&2 \
        || die "cannot install ${missing[*]} (apt-get failed)"
fi
# Everything below talks to namespace addresses only: no proxy may intercept it.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
# The generated config carries the secret; an inherited one would override it.
unset IMGCLOUD_SECRET

# One run at a time: a second run would tear down the first one's namespaces. (The lock also
# waits for the guardian of a run that was killed to finish its clean-up.)
exec 9>"$LOCK_FILE"
if command -v flock >/dev/null 2>&1 && ! flock -w 30 9; then
    die "another multihost.sh still holds $LOCK_FILE after 30 s"
fi

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/$PROFILE"
if [[ $BUILD == 1 ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is not on the PATH (under sudo: sudo env \"PATH=\$PATH\" $0)"
    say "building the $PROFILE binaries (cloud-node, client, peer)"
    PROFILE_FLAG=(--release)
    [[ $PROFILE == debug ]] && PROFILE_FLAG=()
    cargo build "${PROFILE_FLAG[@]}" --bin cloud-node --bin client --bin peer >&2 || die "cargo build failed"
fi
for b in cloud-node client peer; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (build it, or drop --no-build)"
done

# --- clean-up: every namespace named imgm-* is ours; the processes in them too -------------
NODE_PIDS=()
HOST_PIDS=()
PEER_PIDS=()
RUN_DIR=""
GUARD_PID=""

our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS_PREFIX" || true; }

teardown() {
    local pid ns left i
    # Closing the lifeline is the nodes' stop signal (--parent-watch: standard input ends).
    # SIGTERM alone is not enough: a node that reads its standard input exits only once it ends.
    exec 3>&-
    for pid in "${HOST_PIDS[@]}" "${PEER_PIDS[@]}" "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for ns in $(our_namespaces); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    done
    # Up to 3 s for a clean exit, then SIGKILL whatever is left.
    for ((i = 0; i < 30; i++)); do
        left=0
        for ns in $(our_namespaces); do
            [[ -n $(ip netns pids "$ns" 2>/dev/null) ]] && left=1
        done
        [[ $left == 0 ]] && break
        sleep 0.1
    done
    for ns in $(our_namespaces); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for pid in "${HOST_PIDS[@]}" "${PEER_PIDS[@]}" "${NODE_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # Deleting a namespace deletes its end of every veth pair, and so the pair, and the bridge.
    for ns in $(our_namespaces); do
        ip netns del "$ns" 2>/dev/null || say "could not delete namespace $ns"
    done
    [[ -n $RUN_DIR ]] && rm -rf "$RUN_DIR"
    NODE_PIDS=() HOST_PIDS=() PEER_PIDS=() RUN_DIR=""
}
# shellcheck disable=SC2317  # reached through the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $GUARD_PID ]]; then
        kill -TERM "$GUARD_PID" 2>/dev/null
        wait "$GUARD_PID" 2>/dev/null
    fi
    teardown
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# Leftovers of a run that could not clean up (SIGKILL, power loss).
if [[ -n $(our_namespaces) ]]; then
    say "removing leftovers of an earlier run: $(our_namespaces | tr '\n' ' ')"
    teardown
fi

# --- the lifeline ------------------------------------------------------------------------------
# A FIFO whose only writer is this script (fd 3). The nodes read it as their standard input
# (--parent-watch: a node exits when it ends), and so does a guardian in the background: if
# this script dies without running its trap (SIGKILL), the FIFO ends, the nodes exit, and the
# guardian removes every process and namespace left. The trap stops the guardian first.
RUN_DIR=$(mktemp -d /tmp/imgm-multihost.XXXXXX) || die "mktemp failed"
run mkfifo "$RUN_DIR/lifeline"
exec 3<>"$RUN_DIR/lifeline"
(
    trap '' INT
    while IFS= read -r _; do :; done
    teardown
) <"$RUN_DIR/lifeline" >/dev/null 2>&1 3>&- &
GUARD_PID=$!

# --- the lab: a bridge namespace and one namespace per host ---------------------------------
add_host() { # NAMESPACE VETH ADDRESS
    run ip netns add "$1"
    run ip -n "$1" link set lo up
    run ip -n "$BRIDGE_NS" link add "$2" type veth peer name eth0 netns "$1"
    run ip -n "$BRIDGE_NS" link set "$2" master br0 up
    run ip -n "$1" addr add "$3/24" dev eth0
    run ip -n "$1" link set eth0 up
}
say "building $NODES cloud hosts and $HOSTS client hosts on $SUBNET.0/24"
run ip netns add "$BRIDGE_NS"
run ip -n "$BRIDGE_NS" link set lo up
run ip -n "$BRIDGE_NS" link add br0 type bridge
run ip -n "$BRIDGE_NS" link set br0 up
for ((i = 1; i <= NODES; i++)); do add_host "${NS_PREFIX}cloud$i" "n$i" "$SUBNET.$i"; done
for ((h = 1; h <= HOSTS; h++)); do add_host "${NS_PREFIX}client$h" "c$h" "$SUBNET.$((CLIENT_BASE + h))"; done

# --- the config: one file for every node and every client ----------------------------------
run mkdir -p "$OUT"
rm -rf "$OUT"/users
rm -f "$OUT"/cluster.toml "$OUT"/cloud*.log "$OUT"/client*-report.json "$OUT"/client*-report.png "$OUT"/client*.log
CONFIG="$OUT/cluster.toml"
SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
[[ ${#SECRET} == 64 ]] || die "cannot read 32 random bytes from /dev/urandom"
(
    umask 077
    {
        echo "# Generated by scripts/multihost.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); the secret is fresh for this run."
        echo "secret = \"$SECRET\""
        echo "delay_ms = $DELAY_MS"
        echo "data_dir = \"$RUN_DIR/data\""
        for ((i = 1; i <= NODES; i++)); do
            printf '\n[[nodes]]\nid = %d\naddr = "%s:%d"\nhttp = "%s:%d"\n' \
                "$i" "$SUBNET.$i" "$NODE_PORT" "$SUBNET.$i" "$HTTP_PORT"
        done
        printf '\n[failures]\nenabled = %s\nperiod_s = %s\nmax_s = %s\n' \
            "$([[ $FAILURES == on ]] && echo true || echo false)" "$(float "$FAILURE_PERIOD")" "$(float "$FAILURE_MAX")"
    } >"$CONFIG"
) || die "cannot write $CONFIG"

# --- the nodes (standard input: the lifeline) ------------------------------------------------
start_node() { # I: starts (or restarts) node I on cloud host I; its output appends to cloudI.log
    RUST_LOG="${RUST_LOG:-info,imgcloud::lb=warn}" \
        ip netns exec "${NS_PREFIX}cloud$1" "$BIN/cloud-node" "$1" --config "$CONFIG" --parent-watch \
        <"$RUN_DIR/lifeline" >>"$OUT/cloud$1.log" 2>&1 3>&- 9>&- &
    NODE_PIDS[$1 - 1]=$!
}
for ((i = 1; i <= NODES; i++)); do start_node "$i"; done

# /status of node I as "state epoch coordinator digest request_log served lb_decisions
# elections failures", asked from inside client host 1.
status_of() {
    ip netns exec "${NS_PREFIX}client1" curl -s --max-time 1 "http://$SUBNET.$1:$HTTP_PORT/status" 2>/dev/null \
        | jq -r '[.state, .epoch, (.coordinator // "none"), .digest, .request_log, .served,
                  .lb_decisions, .elections, .failures] | map(tostring) | join(" ")' 2>/dev/null
}
nodes_alive() {
    local i
    for ((i = 1; i <= NODES; i++)); do
        if ! kill -0 "${NODE_PIDS[i - 1]}" 2>/dev/null; then
            say "node $i exited; the end of $OUT/cloud$i.log:"
            tail -n 15 "$OUT/cloud$i.log" >&2
            return 1
        fi
    done
}
# Succeeds if every node is Active and names the same coordinator and epoch (and, given
# "digest", holds the same replicated state); sets VIEW to "coordinator epoch".
agreed() {
    local i s first="" key state epoch coord digest
    for ((i = 1; i <= NODES; i++)); do
        s=$(status_of "$i")
        read -r state epoch coord digest _ <<<"$s"
        [[ ${state:-} == Active && ${coord:-none} != none ]] || return 1
        key="$coord $epoch"
        [[ ${1:-} == digest ]] && key="$key $digest"
        [[ -z $first ]] && first=$key
        [[ $key == "$first" ]] || return 1
    done
    VIEW=$first
}

# Kills every node with SIGKILL, restarts them all, and waits (at most ELECTION_WAIT s) until
# they agree on a coordinator again.
restart_cloud() {
    local i deadline=$((SECONDS + ELECTION_WAIT))
    for ((i = 1; i <= NODES; i++)); do
        kill -KILL "${NODE_PIDS[i - 1]}" 2>/dev/null
        wait "${NODE_PIDS[i - 1]}" 2>/dev/null
    done
    for ((i = 1; i <= NODES; i++)); do start_node "$i"; done
    until agreed; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

say "waiting (at most ${ELECTION_WAIT} s) for the first election"
started=$EPOCHREALTIME
deadline=$((SECONDS + ELECTION_WAIT))
until agreed; do
    nodes_alive || exit 1
    if ((SECONDS >= deadline)); then
        say "no agreed coordinator after ${ELECTION_WAIT} s; node states:"
        for ((i = 1; i <= NODES; i++)); do say "  node $i: $(status_of "$i")"; done
        exit 1
    fi
    sleep 0.2
done
read -r coord epoch <<<"$VIEW"
say "$(awk -v a="$started" -v b="$EPOCHREALTIME" -v c="$coord" -v e="$epoch" \
    'BEGIN { printf "first election after %.1f s: node %s coordinates epoch %s", b - a, c, e }')"

# --- the load: every client host at once -----------------------------------------------------
stamp() { # prefixes each line with the time it arrived
    local line
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}
VERIFY_FLAG=()
[[ $VERIFY == 0 ]] && VERIFY_FLAG=(--no-verify)
HOST_CLIENTS=()
for ((h = 1; h <= HOSTS; h++)); do
    HOST_CLIENTS[h]=$((CLIENTS / HOSTS + (h <= CLIENTS % HOSTS ? 1 : 0)))
done
say "load: $CLIENTS clients x $REQUESTS requests on $HOSTS client hosts (${HOST_CLIENTS[*]} clients), $PROCS processes each"
for ((h = 1; h <= HOSTS; h++)); do
    (
        RUST_LOG="${RUST_LOG:-warn}" ip netns exec "${NS_PREFIX}client$h" "$BIN/client" stress \
            --config "$CONFIG" --clients "${HOST_CLIENTS[h]}" --requests "$REQUESTS" \
            --client-processes "$PROCS" --deadline "$DEADLINE" --limit-secs 0 "${VERIFY_FLAG[@]}" \
            --report "$OUT/client$h-report.json" --plot "$OUT/client$h-report.png" \
            </dev/null 2>&1 | stamp >"$OUT/client$h.log"
        echo "${PIPESTATUS[0]}" >"$RUN_DIR/client$h.rc"
    ) 3>&- 9>&- &
    HOST_PIDS+=($!)
done

deadline=$((SECONDS + TIMEOUT))
next_note=$((SECONDS + 15))
while :; do
    running=0
    for pid in "${HOST_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
    [[ $running == 0 ]] && break
    if ((SECONDS >= deadline)); then
        say "the load did not finish within --timeout ${TIMEOUT} s ($running client hosts still running)"
        exit 1
    fi
    if ((SECONDS >= next_note)); then
        say "$running of $HOSTS client hosts still running"
        next_note=$((SECONDS + 15))
    fi
    sleep 0.2
done
for pid in "${HOST_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
HOST_PIDS=()

# --- the cluster's side: wait until it settles, then read its replicated request log ---------
problems=()
nodes_alive || problems+=("a node process exited during the run")
settle=15
[[ $FAILURES == on ]] && settle=$((settle + ${FAILURE_MAX%.*}))
deadline=$((SECONDS + settle))
converged=0
while ((SECONDS < deadline)); do
    if agreed digest; then converged=1; break; fi
    sleep 0.2
done
CLUSTER=()
for ((i = 1; i <= NODES; i++)); do CLUSTER[i]=$(status_of "$i"); done
[[ $converged == 1 ]] || problems+=("the nodes did not all become Active with equal state within $settle s")

# --- the users -------------------------------------------------------------------------------
if [[ $USERS -gt 0 ]]; then
    # shellcheck source=scripts/multihost-users.sh
    source "$ROOT/scripts/multihost-users.sh"
    users_phase
fi

# --- the combined summary ----------------------------------------------------------------------
reports=()
for ((h = 1; h <= HOSTS; h++)); do
    r="$OUT/client$h-report.json"
    rc=$(cat "$RUN_DIR/client$h.rc" 2>/dev/null || echo "?")
    if ! jq -e .total "$r" >/dev/null 2>&1; then
        problems+=("client host $h wrote no report (exit $rc); see $OUT/client$h.log")
        continue
    fi
    [[ $rc == 0 ]] || problems+=("client host $h exited with $rc")
    reports+=("$r")
done
[[ ${#reports[@]} -gt 0 ]] || { say "no client host wrote a report"; for p in "${problems[@]}"; do say "  $p"; done; exit 1; }

# The common wall time: from the first host starting its load to the last host's last reply,
# by the arrival times of their "Stressing ..." and "trial 1: ..." lines.
# Start-up of a host's client processes is inside it; the spread says how together they began.
first_start="" last_start="" last_end=""
for ((h = 1; h <= HOSTS; h++)); do
    s=$(awk '$2 == "Stressing" { print $1; exit }' "$OUT/client$h.log" 2>/dev/null)
    e=$(awk '$2 == "trial" && $3 == "1:" { print $1; exit }' "$OUT/client$h.log" 2>/dev/null)
    [[ -n $s && -n $e ]] || continue
    first_start=$(awk -v a="${first_start:-$s}" -v b="$s" 'BEGIN { print (b < a ? b : a) }')
    last_start=$(awk -v a="${last_start:-$s}" -v b="$s" 'BEGIN { print (b > a ? b : a) }')
    last_end=$(awk -v a="${last_end:-$e}" -v b="$e" 'BEGIN { print (b > a ? b : a) }')
done
wall=$(awk -v a="${first_start:-0}" -v b="${last_end:-0}" 'BEGIN { printf "%.3f", b - a }')
spread=$(awk -v a="${first_start:-0}" -v b="${last_start:-0}" 'BEGIN { printf "%.0f", (b - a) * 1000 }')

echo
echo "=== multihost: $NODES cloud hosts, $HOSTS client hosts x $PROCS processes, $CLIENTS clients x $REQUESTS requests, failures $FAILURES ==="
for ((h = 1; h <= HOSTS; h++)); do
    r="$OUT/client$h-report.json"
    [[ -f $r ]] || { echo "client$h  $SUBNET.$((CLIENT_BASE + h))  no report"; continue; }
    jq -r --arg name "client$h" --arg addr "$SUBNET.$((CLIENT_BASE + h))" --arg n "${HOST_CLIENTS[h]}" '
        "\($name)  \($addr)  \($n) clients: total \(.total)  ok \(.succeeded)  failed \(.failed)  lost \(.lost)  dup \(.duplicates)  \(.throughput_rps * 10 | round / 10) req/s over \(.duration_s * 100 | round / 100) s  p50/p95/p99/max \(.latency_ms.p50 | round)/\(.latency_ms.p95 | round)/\(.latency_ms.p99 | round)/\(.latency_ms.max | round) ms"' "$r"
done
summary=$(jq -s -r --arg wall "$wall" --arg expected "$((CLIENTS * REQUESTS))" '
    (map(.total) | add) as $total | (map(.succeeded) | add) as $ok
    | ($wall | tonumber) as $w
    | [ $total, $ok, (map(.failed) | add), (map(.lost) | add), (map(.duplicates) | add),
        (if $total > 0 then $ok / $total * 100 else 0 end),
        (if $w > 0 then $ok / $w else 0 end), (map(.throughput_rps) | add),
        (map(.latency_ms.p95) | max), (map(.latency_ms.p99) | max),
        (map(.verified) | all), ($expected | tonumber),
        (map(.failed_by_cause | to_entries[]) | group_by(.key)
         | map("\(.[0].key)=\(map(.value) | add)") | join(",")) ]
    | map(tostring) | join(" ")' "${reports[@]}")
read -r total ok failed lost dup rate rps rps_sum p95 p99 verified expected causes <<<"$summary"
awk -v t="$total" -v o="$ok" -v f="$failed" -v l="$lost" -v d="$dup" -v r="$rate" -v w="$wall" \
    -v x="$rps" -v s="$rps_sum" -v p="$p95" -v q="$p99" -v g="$spread" 'BEGIN {
    printf "total %d  succeeded %d  failed %d  lost %d  duplicated %d  success rate %.2f %%\n", t, o, f, l, d, r
    printf "throughput %.1f req/s combined: %d succeeded over the common wall time %.2f s (first host start to last reply; hosts started within %d ms)\n", x, o, w, g
    printf "  (for comparison, the hosts own rates, each over its own run, sum to %.1f req/s)\n", s
    printf "latency worst host: p95 %.0f ms  p99 %.0f ms\n", p, q }'
served="" log_sizes="" lb=0 elections=0 failures_sim=0
for ((i = 1; i <= NODES; i++)); do
    read -r state _ _ _ log srv lbd el fl <<<"${CLUSTER[i]:-down}"
    served+="${served:+/}${srv:-?}"
    log_sizes+="${log_sizes:+/}${log:-?}"
    [[ ${state:-down} == Active ]] || log_sizes+="(${state:-down})"
    lb=$((lb + ${lbd:-0}))
    ((${el:-0} > elections)) && elections=$el
    ((${fl:-0} > failures_sim)) && failures_sim=$fl
done
echo "cluster: request log entries per node $log_sizes, served by node 1..$NODES $served, lb decisions $lb, elections $elections, simulated failures $failures_sim"
if [[ $VERIFY == 1 ]]; then
    echo "verified: $( [[ $verified == true ]] && echo "yes, every reply decrypted and compared with the original" || echo NO)"
else
    echo "verified: no (--no-verify)"
fi
echo "reports: $OUT/client{1..$HOSTS}-report.{json,png}"
[[ $USERS -gt 0 ]] && users_summary

[[ $failed == 0 ]] || problems+=("$failed requests failed ($causes)")
[[ $lost == 0 ]] || problems+=("$lost requests lost")
[[ $dup == 0 ]] || problems+=("$dup duplicate replies")
[[ $total == "$expected" ]] || problems+=("$total requests sent, $expected expected")
[[ $VERIFY == 0 || $verified == true ]] || problems+=("not every host verified its replies")
if [[ $converged == 1 ]]; then
    for ((i = 1; i <= NODES; i++)); do
        read -r _ _ _ _ log _ <<<"${CLUSTER[i]}"
        [[ $log == "$ok" ]] || problems+=("node $i's request log has $log entries for $ok succeeded requests")
    done
fi
if [[ ${#problems[@]} -gt 0 ]]; then
    for p in "${problems[@]}"; do echo "FAIL: $p"; done
    exit 1
fi
echo "PASS"
exit 0
