#!/usr/bin/env bash
# Installs what cross/build.sh needs on a Debian machine (as root), and
# nothing it already has: the Rust 1.93.0 toolchain with the three musl
# targets (1.93 is the newest release with a prebuilt armv7 musl std), the
# Debian cross C compilers ring needs, musl-tools, qemu-user-static to run
# the ARM binaries, and the packaging tools (dpkg-dev, lintian, file).
set -euo pipefail

TOOLCHAIN=1.93.0
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross musl-tools qemu-user-static dpkg-dev lintian file binutils)

die() { echo "cross/setup.sh: $*" >&2; exit 1; }

command -v rustup >/dev/null || die "rustup is missing: install Rust with rustup first"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
  [ "$(id -u)" = 0 ] || die "run as root to install ${missing[*]}"
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  echo "installing Rust $TOOLCHAIN"
  rustup toolchain install "$TOOLCHAIN" --profile minimal >/dev/null
fi
installed=$(rustup +"$TOOLCHAIN" target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup +"$TOOLCHAIN" target add "$t" >/dev/null
done
echo "cross/setup.sh: ready (Rust $TOOLCHAIN, ${TARGETS[*]})"
