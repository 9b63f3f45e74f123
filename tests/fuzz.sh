#!/usr/bin/env bash
# Differential fuzzing of the request reading path (issue 9): the seeded
# generator of tests/http_fuzz.rs against the crate's head parser and body
# decoder, compared with the reference reader of RFC 9112 in the same file,
# in release mode, for SECONDS (default 3600).
#   tests/fuzz.sh [SECONDS]
# Environment: LITE_FUZZ_SEED (default: from the clock, printed) repeats a
# run; mismatches are saved under target/fuzz-failures/ and replay with
#   LITE_FUZZ_REPLAY=target/fuzz-failures cargo test --test http_fuzz fuzz -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-3600}"
mkdir -p target
log=target/fuzz.log
echo "== fuzzing the request reader for ${secs} s (release build first; log: ${log})"
status=0
LITE_FUZZ_SECS="$secs" cargo test --release --test http_fuzz fuzz -- --nocapture \
  >"$log" 2>&1 || status=$?
grep -E "^http_fuzz: seed [0-9]+:" "$log" || { tail -n 40 "$log"; echo "fuzz: no summary (build failed?)"; exit 1; }
if [ "$status" -eq 0 ]; then
  echo "fuzz: ok (no mismatch, no panic, no hang)"
else
  sed -n '/^http_fuzz: seed [0-9]*:/,/^$/p' "$log" | grep -E "^ +[0-9]+  " | head -n 40 || true
  echo "fuzz: FAILED (exit ${status}); cases saved in target/fuzz-failures/"
fi
exit "$status"
