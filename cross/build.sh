#!/usr/bin/env bash
# Builds static, stripped, size-optimised lite-apiserver binaries:
#   cross/build.sh [TARGET...]   (default: all three)
# into target/dist/lite-apiserver-TARGET, and prints each size.
# It installs nothing: run cross/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=1.93.0
ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

die() { echo "cross/build.sh: $*" >&2; exit 1; }

rustup toolchain list | grep -q "^$TOOLCHAIN" || die "Rust $TOOLCHAIN is missing (run cross/setup.sh)"
mkdir -p target/dist
for t in "${targets[@]}"; do
  case "$t" in
    x86_64-unknown-linux-musl) cc=x86_64-linux-musl-gcc ;;
    aarch64-unknown-linux-musl) cc=aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-musleabihf) cc=arm-linux-gnueabihf-gcc ;;
    *) die "unknown target $t (one of: ${ALL[*]})" ;;
  esac
  command -v "$cc" >/dev/null || die "$cc is missing for $t (run cross/setup.sh)"
  rustup +"$TOOLCHAIN" target list --installed | grep -qx "$t" || die "the $t standard library is missing (run cross/setup.sh)"
  start=$(date +%s)
  cargo +"$TOOLCHAIN" build --quiet --release --locked --target "$t" --bin lite-apiserver
  out="target/dist/lite-apiserver-$t"
  cp "target/$t/release/lite-apiserver" "$out"
  file -b "$out" | grep -qE "statically linked|static-pie linked" || die "$out is not statically linked: $(file -b "$out")"
  printf '%-34s %9d bytes  (%ds)\n' "$t" "$(stat -c %s "$out")" "$(( $(date +%s) - start ))"
done
