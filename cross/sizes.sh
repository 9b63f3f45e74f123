#!/usr/bin/env bash
# Prints the size table of the binaries in target/dist against the budget
# (DESIGN section 8: <= 1.5 MB on aarch64 and armv7), and fails when one
# of those is over it.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=1500000
over=0
printf '| target | bytes | budget | within |\n|---|---:|---:|---|\n'
for f in target/dist/lite-apiserver-*; do
  [ -f "$f" ] || continue
  t=${f#target/dist/lite-apiserver-}
  size=$(stat -c %s "$f")
  case "$t" in
    aarch64*|armv7*) b=$budget; if [ "$size" -le "$budget" ]; then ok=yes; else ok=NO; over=1; fi ;;
    *) b="-"; ok="-" ;;
  esac
  printf '| %s | %d | %s | %s |\n' "$t" "$size" "$b" "$ok"
done
if [ "$over" = 1 ]; then
  echo "cross/sizes.sh: an ARM binary is over the 1,500,000-byte budget" >&2
  exit 1
fi
