#!/usr/bin/env bash
# Run every libFuzzer target of a -Dfuzz=true build for SECONDS each, on a
# scratch copy of its seed corpus. With FUZZ_GROW=1 the inputs that add
# coverage are merged back into the tree's corpus afterwards (libFuzzer
# -merge=1), so long runs grow the seeds that CI replays.
# Crashing inputs land in fuzz-out/<target>/; the script fails if any target
# found one. Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
set -euo pipefail
build=${1:?build dir}; secs=${2:?seconds}; shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
mapfile -t targets < <(find "$build/tests" -type f -perm -u+x -name '*_fuzz_*' ! -name '*_replay' | sort)
[ ${#targets[@]} -gt 0 ] || { echo "run.sh: no fuzz targets in $build" >&2; exit 1; }
fail=0
for bin in "${targets[@]}"; do
  t=$(basename "$bin")            # e.g. filter_fuzz_name
  area=${t%%_fuzz_*}              # filter
  fuzz_name=fuzz_${t#*_fuzz_}     # fuzz_name
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$t"; then continue; fi
  seeds="$root/tests/$area/corpus/$fuzz_name"
  work=$(mktemp -d)
  [ -d "$seeds" ] && cp -r "$seeds/." "$work/"
  out="$root/fuzz-out/$t"; mkdir -p "$out"
  echo "== $t: ${secs}s" >&2
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/" "$work" 2> "$out/log.txt"; then
    echo "!! $t found a crash; see $out/ and $out/log.txt" >&2
    tail -n 30 "$out/log.txt" >&2
    fail=1
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$out/log.txt" | tail -n 2 >&2 || true
  fi
  if [ "${FUZZ_GROW:-0}" = 1 ]; then
    mkdir -p "$seeds"
    before=$(ls "$seeds" | wc -l)
    "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 "$seeds" "$work" 2>> "$out/log.txt" || fail=1
    echo "   corpus $seeds: $before -> $(ls "$seeds" | wc -l) inputs" >&2
  fi
  rm -rf "$work"
done
exit $fail
