#!/usr/bin/env bash
# meson test --wrapper for the sanitizer build: run the test, then fail it if
# any sanitizer report appears in its stderr, even one printed by a child
# process whose exit status the test runner ignores (Criterion's forked
# workers print LeakSanitizer reports but still count as passed).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>"$log"
rc=$?
cat "$log" >&2
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
  echo "san-check: sanitizer report above: failing" >&2
  exit 1
fi
exit $rc
