#!/usr/bin/env bash
# meson test --wrapper for the ThreadSanitizer build (./dev.sh test
# --threads): run the test with every TSan report of every process it starts
# written to a file of its own, then fail the test if any report was
# written. The daemons of the e2e tests keep running after a report
# (halt_on_error=0), so one run shows every race, and a report from a
# daemon the test stopped by signal is not lost with its stderr.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export TSAN_OPTIONS="log_path=$dir/tsan halt_on_error=0 second_deadlock_stack=1${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
"$@"
rc=$?
if compgen -G "$dir/tsan.*" >/dev/null; then
  cat "$dir"/tsan.* >&2
  echo "tsan-check: ThreadSanitizer report above: failing" >&2
  exit 1
fi
exit $rc
