#!/bin/sh
# Runs the OpenWrt init script's start_service under sh with stubbed
# procd/UCI helpers, on a sample UCI file, and asserts the exact command
# line it builds; also that a disabled config starts nothing and that a
# reload trigger is registered.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
init="$here/../../packaging/openwrt/lite-apiserver/files/lite-apiserver.init"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "test_init: $*" >&2; exit 1; }

cat > "$work/uci" <<'UCI'
config lite-apiserver 'main'
	option enabled '1'
	list server 'https://10.0.0.1:6443'
	list server 'https://10.0.0.2:6443'
	list listen '127.0.0.1:51003'
	list listen '169.254.20.10:51003'
	option ca_file '/etc/kubernetes/pki/ca.crt'
	option tls_cert_file '/etc/lite-apiserver/serving.crt'
	option tls_private_key_file '/etc/lite-apiserver/serving.key'
	option client_ca_file '/etc/kubernetes/pki/ca.crt'
	list identity '/var/lib/kubelet/pki/kubelet-client-current.pem,/var/lib/kubelet/pki/kubelet-client-current.pem'
	option cache_agents 'kubelet,kube-proxy,coredns'
	option cache_ttl '3d'
	option health_interval '2'
	option proxy 'http://proxy.lan:3128'
	option incluster_address '169.254.2.1:10268'
	option cache_agents_configmap 'edge-system/agents'
	option verbose '1'
UCI

# A UCI section as shell assignments: options set, lists appended.
cat > "$work/uci.awk" <<'AWK'
/^config / { cur = $3; gsub(/'/, "", cur); next }
cur == want && ($1 == "option" || $1 == "list") {
	v = $0
	sub(/^[ \t]*(option|list)[ \t]+[^ \t]+[ \t]+/, "", v)
	gsub(/'/, "", v)
	if ($1 == "option") printf "%s=\"%s\"\n", $2, v
	else printf "%s=\"${%s:+$%s }%s\"\n", $2, $2, $2, v
}
AWK

# Stand-ins for OpenWrt's procd and UCI shell helpers.
cat > "$work/stubs.sh" <<'STUBS'
CMDLINE=""
ARGV=""
procd_open_instance() { CMDLINE=""; ARGV=""; }
# ARGV keeps each argument in <>, so an empty one shows.
argv() { for a in "$@"; do ARGV="$ARGV<$a>"; done; }
procd_set_param() { if [ "$1" = command ]; then shift; CMDLINE="$*"; argv "$@"; fi; }
procd_append_param() { if [ "$1" = command ]; then shift; CMDLINE="$CMDLINE $*"; argv "$@"; fi; }
procd_close_instance() { echo "START $CMDLINE"; echo "ARGV $ARGV"; }
procd_add_reload_trigger() { echo "TRIGGER $1"; }
config_load() { :; }
config_foreach() {
	cb=$1; type=$2; shift 2
	for s in $(awk -v t="$type" '$1 == "config" && $2 == t { n = $3; gsub(/\047/, "", n); print n }' "$UCI_FILE"); do
		"$cb" "$s" "$@"
	done
}
uci_load_validate() {
	section=$3; cb=$4; shift 4
	for spec in "$@"; do
		name=${spec%%:*}; rest=${spec#*:}; default=""
		case "$rest" in *:*) default=${rest#*:} ;; esac
		eval "$name=\$default"
	done
	eval "$(awk -v want="$section" -f "$UCI_AWK" "$UCI_FILE")"
	"$cb" "$section" 0
}
STUBS

run() {
	# $1: a UCI file. Prints each instance's command line and the triggers.
	UCI_FILE=$1 UCI_AWK="$work/uci.awk" INIT="$init" STUBS="$work/stubs.sh" \
		sh -c '. "$STUBS"; . "$INIT"; start_service; service_triggers'
}

out=$(run "$work/uci")
expected="START /usr/bin/lite-apiserver --server https://10.0.0.1:6443 --server https://10.0.0.2:6443 --listen 127.0.0.1:51003 --listen 169.254.20.10:51003 --ca-file /etc/kubernetes/pki/ca.crt --tls-cert-file /etc/lite-apiserver/serving.crt --tls-private-key-file /etc/lite-apiserver/serving.key --client-ca-file /etc/kubernetes/pki/ca.crt --identity /var/lib/kubelet/pki/kubelet-client-current.pem,/var/lib/kubelet/pki/kubelet-client-current.pem --cache-dir /etc/kubernetes/cache --cache-agents kubelet,kube-proxy,coredns --cache-ttl 3d --health-interval 2 --proxy http://proxy.lan:3128 --incluster-address 169.254.2.1:10268 --cache-agents-configmap edge-system/agents -v"
echo "$out" | grep -qxF "$expected" || fail "command line differs:
got:      $(echo "$out" | grep START)
expected: $expected"
echo "$out" | grep -qx "TRIGGER lite-apiserver" || fail "no reload trigger"

# The shipped defaults are disabled: nothing starts.
shipped="$here/../../packaging/openwrt/lite-apiserver/files/lite-apiserver.config"
out=$(run "$shipped")
echo "$out" | grep -q START && fail "the default config must not start the service"

# Enabled as shipped: no in-cluster flags (the daemon's defaults apply).
sed "s/option enabled '0'/option enabled '1'/" "$shipped" > "$work/enabled"
out=$(run "$work/enabled")
echo "$out" | grep -q '^START ' || fail "the enabled shipped config starts nothing"
echo "$out" | grep -q -e '--incluster-address' -e '--cache-agents-configmap' &&
	fail "in-cluster flags without their options: $(echo "$out" | grep START)"

# The shipped commented examples, uncommented, give the flags.
sed "s/^\t#option incluster_address /\toption incluster_address /; s/^\t#option cache_agents_configmap /\toption cache_agents_configmap /" \
	"$work/enabled" > "$work/incluster"
grep -q "^	option incluster_address '169.254.2.1:10268'" "$work/incluster" || fail "no incluster_address example in the shipped config"
grep -q "^	option cache_agents_configmap 'kube-system/lite-apiserver'" "$work/incluster" || fail "no cache_agents_configmap example in the shipped config"
out=$(run "$work/incluster")
echo "$out" | grep -q '^ARGV .*<--admin-listen><127.0.0.1:51004><--incluster-address><169.254.2.1:10268><--cache-agents-configmap><kube-system/lite-apiserver>' ||
	fail "shipped examples uncommented: $(echo "$out" | grep ARGV)"

# 'off' passes an empty value (the daemon's "disabled").
sed "s/'kube-system\/lite-apiserver'/'off'/" "$work/incluster" > "$work/off"
out=$(run "$work/off")
echo "$out" | grep -q '^ARGV .*<--cache-agents-configmap><>' || fail "cache_agents_configmap off: $(echo "$out" | grep ARGV)"
echo "test_init: ok"
