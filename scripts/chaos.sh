#!/usr/bin/env bash
# Runs the chaos scenarios against real node processes and prints one line per scenario.
#
#   scripts/chaos.sh                 all five: kill-server kill-coordinator stop-20s restart-loop partition
#   scripts/chaos.sh kill-server     only the named ones
#   scripts/chaos.sh --smoke         kill-server and partition with small numbers (CI)
#
# Needs root for the partition (network namespaces, nftables); installs iproute2 and nftables
# if they are missing. Exits non-zero if any scenario failed. Every namespace and process it
# made is removed on exit, whatever happened.
set -uo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# CHAOS_PROFILE=debug uses the debug binaries; the default is release. CHAOS_BUILD=0 builds
# nothing and runs the binaries already there (CI: the ones `cargo test` built; a `cargo build`
# after `cargo test` would rebuild much of the tree, since dev-dependencies unify features).
PROFILE="${CHAOS_PROFILE:-release}"
# The longest one scenario may run (the full ones take about a minute each).
SCENARIO_LIMIT="${CHAOS_SCENARIO_LIMIT:-600}"
if [[ "$PROFILE" == debug ]]; then BIN="$TARGET_DIR/debug"; BUILD_FLAGS=(); else BIN="$TARGET_DIR/release"; BUILD_FLAGS=(--release); fi
NETNS=(imgc-h1 imgc-h2 imgc-h3 imgc-lb)
CHAOS_PID=""

cleanup() {
    if [[ -n "$CHAOS_PID" ]] && kill -0 "$CHAOS_PID" 2>/dev/null; then
        kill -TERM "$CHAOS_PID" 2>/dev/null
        sleep 1
        kill -KILL "$CHAOS_PID" 2>/dev/null
    fi
    if command -v ip >/dev/null 2>&1; then
        for ns in "${NETNS[@]}"; do
            if ip netns list 2>/dev/null | grep -q "^$ns\b"; then
                for pid in $(ip netns pids "$ns" 2>/dev/null); do
                    kill -KILL "$pid" 2>/dev/null
                done
                ip netns del "$ns" 2>/dev/null
            fi
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SMOKE=0
SCENARIOS=()
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) SCENARIOS+=("$arg") ;;
    esac
done
if [[ $SMOKE == 1 ]]; then
    SCENARIOS=(kill-server partition)
    FLAGS=(--clients 4 --requests 10 --restart-after 2 --cut-for 10)
else
    [[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(kill-server kill-coordinator stop-20s restart-loop partition)
    FLAGS=()
fi

needs_net=0
for s in "${SCENARIOS[@]}"; do [[ $s == partition ]] && needs_net=1; done
if [[ $needs_net == 1 ]]; then
    if [[ $(id -u) != 0 ]]; then
        echo "chaos.sh: the partition scenario needs root (network namespaces, nftables)" >&2
        exit 2
    fi
    missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "chaos.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        # Without a package index, install fails: update it only then.
        if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
            { apt-get update -q && apt-get install -y -q "${missing[@]}"; } >/dev/null \
                || { echo "chaos.sh: cannot install ${missing[*]}" >&2; exit 2; }
        fi
    fi
fi

if [[ "${CHAOS_BUILD:-1}" == 0 ]]; then
    for bin in chaos cloud-node; do
        [[ -x "$BIN/$bin" ]] || { echo "chaos.sh: $BIN/$bin is missing (CHAOS_BUILD=0)" >&2; exit 2; }
    done
else
    echo "chaos.sh: building the $PROFILE binaries" >&2
    cargo build "${BUILD_FLAGS[@]}" --bin chaos --bin cloud-node >&2 || exit 2
fi

status=0
for s in "${SCENARIOS[@]}"; do
    started=$(date +%s)
    RUST_LOG="${RUST_LOG:-warn,imgcloud::chaos=info}" \
        timeout --kill-after=10 "$SCENARIO_LIMIT" "$BIN/chaos" "$s" "${FLAGS[@]}" &
    CHAOS_PID=$!
    wait "$CHAOS_PID"
    code=$?
    [[ $code == 124 ]] && echo "chaos.sh: $s still running after $SCENARIO_LIMIT s; stopped" >&2
    [[ $code != 0 ]] && status=1
    CHAOS_PID=""
    echo "chaos.sh: $s took $(( $(date +%s) - started )) s" >&2
    cleanup
done
exit $status
