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

# --incluster-address adds its IP over rtnetlink: the unit allows exactly
# that (CAP_NET_ADMIN, AF_NETLINK) and keeps every other restriction.
unit="$root/lib/systemd/system/lite-apiserver.service"
grep -qx 'CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_NET_BIND_SERVICE CAP_NET_ADMIN' "$unit" ||
  fail "CapabilityBoundingSet: $(grep '^CapabilityBoundingSet=' "$unit")"
grep -qx 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK' "$unit" ||
  fail "RestrictAddressFamilies: $(grep '^RestrictAddressFamilies=' "$unit")"
for h in NoNewPrivileges=yes ProtectSystem=strict ReadWritePaths=/etc/kubernetes/cache ProtectHome=yes \
  PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes \
  ProtectControlGroups=yes ProtectClock=yes ProtectHostname=yes RestrictNamespaces=yes RestrictRealtime=yes \
  RestrictSUIDSGID=yes LockPersonality=yes MemoryDenyWriteExecute=yes SystemCallArchitectures=native UMask=0077; do
  grep -qx "$h" "$unit" || fail "hardening lost: $h"
done
[ "$(grep -c '^CapabilityBoundingSet=\|^RestrictAddressFamilies=\|^AmbientCapabilities=\|^PrivateNetwork=' "$unit")" = 2 ] ||
  fail "one CapabilityBoundingSet and one RestrictAddressFamilies, no ambient capabilities or private network"

# The command line systemd builds: EnvironmentFile assignments, then each
# unquoted $VAR of ExecStart split at whitespace (an unset one vanishes).
cmdline() {
  (
    set +u -a
    # shellcheck disable=SC1090 # the default file under test
    . "$1"
    eval "set -- $(sed -n 's/^ExecStart=//p' "$unit")"
    printf '%s\n' "$*"
  )
}
base="/usr/bin/lite-apiserver --server https://CHANGE-ME:6443 --ca-file /etc/kubernetes/pki/ca.crt --tls-cert-file /etc/lite-apiserver/serving.crt --tls-private-key-file /etc/lite-apiserver/serving.key --client-ca-file /etc/kubernetes/pki/ca.crt --identity /var/lib/kubelet/pki/kubelet-client-current.pem,/var/lib/kubelet/pki/kubelet-client-current.pem --cache-dir /etc/kubernetes/cache"
got=$(cmdline "$root/etc/default/lite-apiserver")
[ "$got" = "$base" ] || fail "default command line:
got:      $got
expected: $base"
examples=$(grep -c '^#LITE_APISERVER_INCLUSTER_ARGS=' "$root/etc/default/lite-apiserver")
[ "$examples" = 2 ] || fail "expected two commented LITE_APISERVER_INCLUSTER_ARGS examples, found $examples"
edited="$root/default.incluster"
sed '0,/^#LITE_APISERVER_INCLUSTER_ARGS=/s//LITE_APISERVER_INCLUSTER_ARGS=/' "$root/etc/default/lite-apiserver" > "$edited"
got=$(cmdline "$edited")
[ "$got" = "$base --incluster-address 169.254.2.1:10268" ] || fail "first example uncommented:
got: $got"
sed 's/^#LITE_APISERVER_INCLUSTER_ARGS=/LITE_APISERVER_INCLUSTER_ARGS=/' "$root/etc/default/lite-apiserver" > "$edited"
got=$(cmdline "$edited")
[ "$got" = "$base --incluster-address 169.254.2.1:10268 --cache-agents-configmap edge-system/lite-apiserver" ] ||
  fail "second example uncommented:
got: $got"

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
