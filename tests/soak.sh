#!/bin/sh
# Kill -9 soak of the cache (issue 10, item 6), on demand, not in CI:
# ROUNDS rounds (default 1000) of SIGKILL at a random moment while a watch
# stream, paged LISTs and object GETs are being cached, each followed by a
# check of every entry file and a restart (tests/soak.rs). Release build.
# Prints the torn entry count (goal 0) and the rounds per minute.
#   tests/soak.sh [ROUNDS]          LITE_SOAK_SEED=N repeats the kill moments
set -eu
cd "$(dirname "$0")/.."
ROUNDS="${1:-1000}"
case "$ROUNDS" in
  ''|*[!0-9]*) echo "usage: $0 [ROUNDS]" >&2; exit 2 ;;
esac
LITE_SOAK_ROUNDS="$ROUNDS" exec cargo test --release --test soak -- \
  --ignored --nocapture --test-threads 1
