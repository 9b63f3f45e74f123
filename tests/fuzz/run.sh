#!/usr/bin/env bash
# Builds the libFuzzer target on stable Rust (SanitizerCoverage through
# -C passes; no nightly, no cargo-fuzz) and runs it for SECONDS (default
# 600) with the seeds in seeds/ (new inputs go to corpus/, crashes to artifacts/).
#   tests/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --target "$host" --bin split_requests
mkdir -p corpus artifacts
bin="${CARGO_TARGET_DIR:-target}/$host/release/split_requests"
"$bin" -max_total_time="$secs" -max_len=70000 -timeout=10 -artifact_prefix=artifacts/ corpus/ seeds/
