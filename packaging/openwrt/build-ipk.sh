#!/usr/bin/env bash
# Builds an installable OpenWrt .ipk straight from a cross-built static
# binary, without the SDK: an ar archive of debian-binary, control.tar.gz
# and data.tar.gz, the layout opkg expects.
#   packaging/openwrt/build-ipk.sh [aarch64|armv7 ...]   (default: both)
# Override the opkg architecture with IPK_ARCH_aarch64 / IPK_ARCH_armv7
# (defaults: aarch64_generic, arm_cortex-a7_neon-vfpv4).
# Output: target/dist/lite-apiserver_VERSION_OPKGARCH.ipk
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "packaging/openwrt/build-ipk.sh: $*" >&2; exit 1; }
command -v ar >/dev/null || die "ar is missing (binutils; run cross/setup.sh)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(aarch64 armv7)
for a in "${arches[@]}"; do
  case "$a" in
    aarch64) target=aarch64-unknown-linux-musl; opkg_arch=${IPK_ARCH_aarch64:-aarch64_generic} ;;
    armv7) target=armv7-unknown-linux-musleabihf; opkg_arch=${IPK_ARCH_armv7:-arm_cortex-a7_neon-vfpv4} ;;
    *) die "unknown architecture $a (aarch64, armv7)" ;;
  esac
  bin="$root/target/dist/lite-apiserver-$target"
  [ -f "$bin" ] || die "$bin is missing (run cross/build.sh $target)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/data/usr/bin" "$work/data/etc/init.d" "$work/data/etc/config" "$work/control"
  install -m 0755 "$bin" "$work/data/usr/bin/lite-apiserver"
  install -m 0755 "$here/lite-apiserver/files/lite-apiserver.init" "$work/data/etc/init.d/lite-apiserver"
  install -m 0600 "$here/lite-apiserver/files/lite-apiserver.config" "$work/data/etc/config/lite-apiserver"
  size=$(du -sb "$work/data" | cut -f1)
  cat > "$work/control/control" <<CTRL
Package: lite-apiserver
Version: $version-1
Depends: libc
Source: packaging/openwrt/lite-apiserver
SourceName: lite-apiserver
License: Apache-2.0
Section: net
Architecture: $opkg_arch
Installed-Size: $size
Maintainer: lite-apiserver maintainers
Description: Node-local caching proxy for the Kubernetes API (edge autonomy)
CTRL
  echo "/etc/config/lite-apiserver" > "$work/control/conffiles"
  cat > "$work/control/postinst" <<'POST'
#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] || { mkdir -p /etc/kubernetes/cache && chmod 0700 /etc/kubernetes/cache; /etc/init.d/lite-apiserver enable; }
exit 0
POST
  cat > "$work/control/prerm" <<'PRERM'
#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] || { /etc/init.d/lite-apiserver stop; /etc/init.d/lite-apiserver disable; }
exit 0
PRERM
  chmod 0755 "$work/control/postinst" "$work/control/prerm"
  tar --numeric-owner --owner=0 --group=0 -C "$work/control" -czf "$work/control.tar.gz" .
  tar --numeric-owner --owner=0 --group=0 -C "$work/data" -czf "$work/data.tar.gz" .
  echo "2.0" > "$work/debian-binary"
  out="$root/target/dist/lite-apiserver_${version}-1_${opkg_arch}.ipk"
  rm -f "$out"
  (cd "$work" && ar rc "$out" debian-binary control.tar.gz data.tar.gz)
  rm -rf "$work"
  trap - EXIT
  echo "$out"
done
