#!/usr/bin/env bash
# The OpenWrt .ipk files: an ar archive with debian-binary, control.tar.gz
# and data.tar.gz; control fields; the file list and modes; the binary is
# static and of the right architecture.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "test_ipk: $*" >&2; exit 1; }

mapfile -t ipks < <(packaging/openwrt/build-ipk.sh aarch64 armv7)
[ ${#ipks[@]} = 2 ] || fail "expected two packages"
for ipk in "${ipks[@]}"; do
  work=$(mktemp -d)
  [ "$(ar t "$ipk" | tr '\n' ' ')" = "debian-binary control.tar.gz data.tar.gz " ] || fail "$ipk members: $(ar t "$ipk")"
  (cd "$work" && ar x "$ipk")
  [ "$(cat "$work/debian-binary")" = "2.0" ] || fail "debian-binary"
  mkdir "$work/control" "$work/data"
  tar -xzf "$work/control.tar.gz" -C "$work/control"
  tar -xzf "$work/data.tar.gz" -C "$work/data"
  ctl="$work/control/control"
  grep -qx "Package: lite-apiserver" "$ctl" || fail "Package field"
  grep -q "^Version: [0-9]" "$ctl" || fail "Version field"
  grep -q "^Architecture: " "$ctl" || fail "Architecture field"
  grep -q "^Installed-Size: [0-9]" "$ctl" || fail "Installed-Size field"
  grep -qx "/etc/config/lite-apiserver" "$work/control/conffiles" || fail "conffiles"
  [ -x "$work/control/postinst" ] && [ -x "$work/control/prerm" ] || fail "maintainer scripts"
  files=$(cd "$work/data" && find . -type f | sort | tr '\n' ' ')
  [ "$files" = "./etc/config/lite-apiserver ./etc/init.d/lite-apiserver ./usr/bin/lite-apiserver " ] || fail "file list: $files"
  [ "$(stat -c %a "$work/data/usr/bin/lite-apiserver")" = 755 ] || fail "binary mode"
  [ "$(stat -c %a "$work/data/etc/init.d/lite-apiserver")" = 755 ] || fail "init mode"
  # The packaged init script passes the in-cluster options (tests/packaging/
  # test_init.sh checks the command line it builds), the config documents them,
  # and nothing narrows the root instance's capabilities (CAP_NET_ADMIN).
  initf="$work/data/etc/init.d/lite-apiserver"
  conf="$work/data/etc/config/lite-apiserver"
  for o in incluster_address cache_agents_configmap; do
    grep -q "'$o:string'" "$initf" || fail "init script does not validate $o"
    grep -q "^	#option $o '" "$conf" || fail "config does not document $o"
  done
  grep -q 'append_flag --incluster-address "$incluster_address"' "$initf" || fail "init script drops incluster_address"
  grep -q -e 'procd_set_param user' -e 'procd_set_param capabilities' -e 'procd_set_param no_new_privs' "$initf" &&
    fail "the instance must keep root's capabilities (CAP_NET_ADMIN for incluster_address)"
  [ "$(tar -tvzf "$work/data.tar.gz" ./usr/bin/lite-apiserver | awk '{print $2}')" = "0/0" ] || fail "owner not root"
  kind=$(file -b "$work/data/usr/bin/lite-apiserver")
  case "$ipk" in
    *aarch64*) echo "$kind" | grep -q "ARM aarch64" || fail "not aarch64: $kind" ;;
    *arm_*) echo "$kind" | grep -q "32-bit LSB.*ARM" || fail "not armv7: $kind" ;;
  esac
  echo "$kind" | grep -q "statically linked" || fail "not static: $kind"
  rm -rf "$work"
  echo "test_ipk: ok ($(basename "$ipk"))"
done
