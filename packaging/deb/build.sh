#!/usr/bin/env bash
# Builds lite-apiserver_VERSION_ARCH.deb from the cross-built static
# binaries (cross/build.sh) with dpkg-deb:
#   packaging/deb/build.sh [amd64|arm64|armhf ...]   (default: all three)
# Output: target/dist/lite-apiserver_VERSION_ARCH.deb
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "packaging/deb/build.sh: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (run cross/setup.sh)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 armhf)
for arch in "${archs[@]}"; do
  case "$arch" in
    amd64) target=x86_64-unknown-linux-musl ;;
    arm64) target=aarch64-unknown-linux-musl ;;
    armhf) target=armv7-unknown-linux-musleabihf ;;
    *) die "unknown architecture $arch (amd64, arm64, armhf)" ;;
  esac
  bin="$root/target/dist/lite-apiserver-$target"
  [ -f "$bin" ] || die "$bin is missing (run cross/build.sh $target)"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  install -D -m 0755 "$bin" "$stage/usr/bin/lite-apiserver"
  install -D -m 0644 "$here/lite-apiserver.service" "$stage/lib/systemd/system/lite-apiserver.service"
  install -D -m 0644 "$here/default" "$stage/etc/default/lite-apiserver"
  install -D -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/lite-apiserver"
  install -d -m 0755 "$stage/usr/share/doc/lite-apiserver"
  cat > "$stage/usr/share/doc/lite-apiserver/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lite-apiserver

Files: *
Copyright: the lite-apiserver authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPY
  printf 'lite-apiserver (%s-1) unstable; urgency=medium\n\n  * Package of the static %s binary.\n\n -- lite-apiserver maintainers <maintainers@lite-apiserver.invalid>  %s\n' \
    "$version" "$target" "$(date -R -d @0)" | gzip -9n > "$stage/usr/share/doc/lite-apiserver/changelog.Debian.gz"
  install -d -m 0755 "$stage/DEBIAN"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  cat > "$stage/DEBIAN/control" <<CTRL
Package: lite-apiserver
Version: $version-1
Architecture: $arch
Maintainer: lite-apiserver maintainers <maintainers@lite-apiserver.invalid>
Installed-Size: $size
Section: net
Priority: optional
Description: node-local caching proxy for the Kubernetes API
 lite-apiserver runs on an edge node between kubelet, kube-proxy, flannel,
 coredns and pods and the cloud kube-apiserver. Online it is a transparent
 TLS reverse proxy that caches GET/LIST answers per client; offline it
 answers from that cache so the node keeps running its pods, even after a
 reboot. Static binary, no dependencies.
CTRL
  echo "/etc/default/lite-apiserver" > "$stage/DEBIAN/conffiles"
  for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$stage/DEBIAN/$s"; done
  out="$root/target/dist/lite-apiserver_${version}-1_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
  rm -rf "$stage"
  trap - EXIT
  echo "$out"
done
