#!/usr/bin/env bash
# The amd64 .deb: fields, files, modes, conffiles, lintian without errors,
# maintainer scripts that work in a throwaway root, and the unit verified
# by systemd-analyze where available.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "test_deb: $*" >&2; exit 1; }

deb=$(packaging/deb/build.sh amd64 | tail -1)
[ -f "$deb" ] || fail "no package built"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = lite-apiserver ] || fail "Package field"
[ "$(field Architecture)" = amd64 ] || fail "Architecture field"
field Version | grep -q '^[0-9]' || fail "Version field"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
mode() { stat -c %a "$root/$1"; }
[ "$(mode usr/bin/lite-apiserver)" = 755 ] || fail "binary mode $(mode usr/bin/lite-apiserver)"
[ "$(mode etc/default/lite-apiserver)" = 644 ] || fail "default file mode"
[ "$(mode lib/systemd/system/lite-apiserver.service)" = 644 ] || fail "unit mode"
grep -qx /etc/default/lite-apiserver "$root/DEBIAN/conffiles" || fail "conffiles"
for s in postinst prerm postrm; do [ -x "$root/DEBIAN/$s" ] || fail "$s not executable"; done
grep -q '^Restart=on-failure' "$root/lib/systemd/system/lite-apiserver.service" || fail "Restart=on-failure"
grep -q '^ReadWritePaths=/etc/kubernetes/cache' "$root/lib/systemd/system/lite-apiserver.service" || fail "cache dir writable"
file -b "$root/usr/bin/lite-apiserver" | grep -qE 'statically linked|static-pie' || fail "binary not static"
"$root/usr/bin/lite-apiserver" --version | grep -q '^lite-apiserver ' || fail "binary does not run"
grep -q -- '--cache-dir /etc/kubernetes/cache' "$root/etc/default/lite-apiserver" || fail "default args"

# postinst, run against a scratch root: it creates the cache dir 0700.
fake=$(mktemp -d)
sed "s#/etc/kubernetes/cache#$fake/etc/kubernetes/cache#g; s#/run/systemd/system#$fake/no-systemd#g" "$root/DEBIAN/postinst" > "$fake/postinst"
sh "$fake/postinst" configure
[ "$(stat -c %a "$fake/etc/kubernetes/cache")" = 700 ] || fail "postinst cache dir mode"
rm -rf "$fake"

if command -v lintian >/dev/null; then
  lintian --fail-on error "$deb" >/dev/null 2>&1 || { lintian "$deb" >&2; fail "lintian reports errors"; }
fi
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify --root="$root" lib/systemd/system/lite-apiserver.service 2>&1 | grep -v -e 'Failed to' -e 'not found' >&2 || true
  unit_errors=$(systemd-analyze verify --root="$root" lib/systemd/system/lite-apiserver.service 2>&1 | grep -ci 'unknown key\|invalid\|bad' || true)
  [ "$unit_errors" = 0 ] || fail "systemd-analyze found problems in the unit"
else
  echo "test_deb: systemd-analyze not available; unit syntax not verified"
fi
echo "test_deb: ok ($deb)"
