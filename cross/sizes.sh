#!/usr/bin/env bash
# Prints the size table of the binaries in target/dist against the budget
# (DESIGN section 8: <= 1.5 MB on aarch64 and armv7).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=1572864
printf '| target | bytes | budget | within |\n|---|---:|---:|---|\n'
for f in target/dist/lite-apiserver-*; do
  [ -f "$f" ] || continue
  t=${f#target/dist/lite-apiserver-}
  size=$(stat -c %s "$f")
  case "$t" in
    aarch64*|armv7*) b=$budget; ok=$([ "$size" -le "$budget" ] && echo yes || echo NO) ;;
    *) b="-"; ok="-" ;;
  esac
  printf '| %s | %d | %s | %s |\n' "$t" "$size" "$b" "$ok"
done
