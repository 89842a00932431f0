#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ one after another, each for SECS seconds, on one core.
#
#   scripts/fuzz.sh SECS [TARGET...]      (targets: member_frame reveal hide_cover; default all)
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets it accept the nightly flags cargo-fuzz passes.
# Set FUZZ_SANITIZER=none if the address sanitizer is not available. New inputs that reach new
# code go to fuzz/corpus/<target>/ (not committed unless minimised: see DESIGN.md, "Fuzzing");
# crashes go to fuzz/artifacts/<target>/. Exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECS [TARGET...]   (targets: member_frame reveal hide_cover)" >&2
  exit 2
fi
secs=$1
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(member_frame reveal hide_cover)

export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked || exit 1
fi

# Largest input per target: frames and images stay small so the fuzzer explores parsing, not
# decompression of big pictures.
max_len() {
  case $1 in
    member_frame) echo 4096 ;;
    *) echo 65536 ;;
  esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
  log=fuzz/artifacts/$target.log
  mkdir -p "fuzz/artifacts/$target" "fuzz/corpus/$target"
  echo "== $target: ${secs}s" >&2
  # Build once, then run the binary itself (as `cargo fuzz run` does) so no rebuild can happen.
  cargo fuzz build -O --sanitizer "$sanitizer" "$target" || { failed+=("$target"); continue; }
  bin=$(ls fuzz/target/*/release/"$target" | head -1)
  "$bin" "fuzz/corpus/$target" -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$secs" -max_len="$(max_len "$target")" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 2>&1 | tee "$log" |
    grep -E '^(#[0-9]+.*DONE|==[0-9]+==|SUMMARY|Test unit written)' >&2
  status=${PIPESTATUS[0]}
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    result="nothing found"
  else
    result="CRASH (exit $status): $(grep -m1 -o 'Test unit written to .*' "$log" || echo "see $log")"
    failed+=("$target")
  fi
  summary+=("$target: ${runs:-?} executions, ${rate:-?} exec/s, ${secs}s: $result")
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
