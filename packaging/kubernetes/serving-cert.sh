#!/bin/sh
# Makes the serving certificate for lite-apiserver's listeners: the one pods
# reach through --incluster-address (KUBERNETES_SERVICE_HOST/PORT) and the one
# kubelet reaches on 127.0.0.1. Pods verify it with their service-account
# ca.crt, so it must be signed by the cluster CA and carry the names they dial.
#
# Without --kubeconfig: writes the key and a CSR (sign it with your CA).
# With --kubeconfig: also submits the CSR as a certificates.k8s.io/v1
# CertificateSigningRequest for the signer kubernetes.io/kubelet-serving
# (kube-controller-manager signs it with the cluster CA once approved),
# optionally approves it, waits for the certificate and writes it.
#
# Needs only openssl, kubectl (with --kubeconfig) and a POSIX sh (dash,
# busybox ash, bash). Run with --help for the options.
set -euf  # -f: no globbing; lists below are split on spaces only
# pipefail where the shell has it (bash, busybox ash, newer dash).
# shellcheck disable=SC3040
(set -o pipefail) 2>/dev/null && set -o pipefail

prog=serving-cert.sh
die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

usage() {
	cat <<'USAGE'
Usage: serving-cert.sh [OPTIONS]

Makes a private key and a CSR for lite-apiserver's serving certificate, with
the names InClusterConfig pods and kubelet use:
  IP   the --incluster-address IP (169.254.2.1), the kubernetes Service
       ClusterIP (10.96.0.1, or read from the cluster), 127.0.0.1
  DNS  kubernetes, kubernetes.default, kubernetes.default.svc,
       kubernetes.default.svc.CLUSTER_DOMAIN
Subject: CN=system:node:NODE, O=system:nodes (what the kubelet-serving
signer requires).

With --kubeconfig it submits the CSR to the cluster (signerName
kubernetes.io/kubelet-serving, signed with the cluster CA by
kube-controller-manager once approved), waits for the certificate and
writes it. These requests are never approved automatically: approve it
yourself (kubectl certificate approve NAME) or pass --approve with a
kubeconfig allowed to.

Files:
  --out-dir DIR           where to write serving.key, serving.csr, serving.crt [.]
  --key FILE              the private key [DIR/serving.key]; kept if it exists
  --csr FILE              the CSR (PEM) [DIR/serving.csr]
  --cert FILE             the signed certificate (PEM) [DIR/serving.crt]
  --new-key               make a new key even if --key exists
  --rsa                   RSA 2048 instead of EC P-256 (for a new key)

Names:
  --incluster-ip IP       the link-local address pods dial [169.254.2.1]
  --service-ip IP         the kubernetes Service ClusterIP, repeatable
                          [10.96.0.1; with --kubeconfig: read from
                          default/kubernetes .spec.clusterIPs]
  --cluster-domain NAME   [cluster.local]
  --ip IP                 one more IP SAN, repeatable
  --dns NAME              one more DNS SAN, repeatable
  --node-name NAME        the node, for the subject [hostname, lowercased]

Cluster:
  --kubeconfig FILE       submit the CSR with this kubeconfig and fetch the certificate
  --csr-name NAME         the CertificateSigningRequest's name
                          [lite-apiserver-serving-NODE]
  --approve               approve it (needs update on certificatesigningrequests/approval
                          and approve on signers/kubernetes.io/kubelet-serving)
  --expiration-seconds N  requested lifetime (spec.expirationSeconds, >= 600);
                          the signer caps it at its --cluster-signing-duration
  --timeout SECS          how long to wait for the certificate [300]

  -h, --help              this text

Environment: OPENSSL, KUBECTL name the tools [openssl, kubectl].
USAGE
}

# --- options -----------------------------------------------------------------
out_dir=.
key='' csr='' cert=''
new_key=0 rsa=0
incluster_ip=169.254.2.1
service_ips=''
cluster_domain=cluster.local
extra_ips='' extra_dns=''
node_name=
kubeconfig='' csr_name='' approve=0 expiration='' timeout=300
OPENSSL=${OPENSSL:-openssl}
KUBECTL=${KUBECTL:-kubectl}

# need_arg OPTION COUNT: the option takes a value.
need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
	case "$1" in
		-h | --help) usage; exit 0 ;;
		--out-dir) need_arg "$1" $#; out_dir=$2; shift ;;
		--key) need_arg "$1" $#; key=$2; shift ;;
		--csr) need_arg "$1" $#; csr=$2; shift ;;
		--cert) need_arg "$1" $#; cert=$2; shift ;;
		--new-key) new_key=1 ;;
		--rsa) rsa=1 ;;
		--incluster-ip) need_arg "$1" $#; incluster_ip=$2; shift ;;
		--service-ip) need_arg "$1" $#; service_ips="$service_ips $2"; shift ;;
		--cluster-domain) need_arg "$1" $#; cluster_domain=$2; shift ;;
		--ip) need_arg "$1" $#; extra_ips="$extra_ips $2"; shift ;;
		--dns) need_arg "$1" $#; extra_dns="$extra_dns $2"; shift ;;
		--node-name) need_arg "$1" $#; node_name=$2; shift ;;
		--kubeconfig) need_arg "$1" $#; kubeconfig=$2; shift ;;
		--csr-name) need_arg "$1" $#; csr_name=$2; shift ;;
		--approve) approve=1 ;;
		--expiration-seconds) need_arg "$1" $#; expiration=$2; shift ;;
		--timeout) need_arg "$1" $#; timeout=$2; shift ;;
		--*=*) die "write '${1%%=*} ${1#*=}' (a space, not '=')" ;;
		*) die "unknown option '$1' (see --help)" ;;
	esac
	shift
done

# --- checks ------------------------------------------------------------------
is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
# is_ipv4 ADDR: four dot-separated decimal octets.
is_ipv4() {
	case "$1" in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
	# shellcheck disable=SC2046 # split on purpose (set -f: no globbing)
	set -- $(echo "$1" | tr . ' ')
	[ $# = 4 ] || return 1
	for n in "$@"; do [ ${#n} -le 3 ] && [ "$n" -le 255 ] || return 1; done
}
# is_ipv6 ADDR: hex digits, colons (at least two) and dots only.
is_ipv6() {
	case "$1" in *[!0-9a-fA-F:.]*) return 1 ;; *:*:*) return 0 ;; *) return 1 ;; esac
}
check_ip() { is_ipv4 "$2" || is_ipv6 "$2" || die "$1: '$2' is not an IP address"; }
check_dns() {
	case "$2" in
		'' | *[!a-z0-9.-]* | .* | *. | -* | *..*) die "$1: '$2' is not a lowercase DNS name" ;;
	esac
}

command -v "$OPENSSL" >/dev/null || die "$OPENSSL not found (install openssl)"
check_ip --incluster-ip "$incluster_ip"
check_dns --cluster-domain "$cluster_domain"
for ip in $service_ips; do check_ip --service-ip "$ip"; done
for ip in $extra_ips; do check_ip --ip "$ip"; done
for d in $extra_dns; do check_dns --dns "$d"; done
{ is_uint "$timeout" && [ "$timeout" -gt 0 ]; } || die "--timeout: '$timeout' is not a positive number of seconds"
if [ -n "$expiration" ]; then
	{ is_uint "$expiration" && [ "$expiration" -ge 600 ]; } ||
		die "--expiration-seconds: '$expiration' must be a number >= 600 (the API's minimum)"
fi
# kubelet names its node after the kernel's hostname, lowercased.
[ -n "$node_name" ] || node_name=$(uname -n | tr '[:upper:]' '[:lower:]')
check_dns --node-name "$node_name"
[ -n "$csr_name" ] || csr_name="lite-apiserver-serving-$node_name"
check_dns --csr-name "$csr_name"
if [ -n "$kubeconfig" ]; then
	[ -r "$kubeconfig" ] || die "--kubeconfig: cannot read $kubeconfig"
	command -v "$KUBECTL" >/dev/null || die "$KUBECTL not found (needed with --kubeconfig)"
else
	[ "$approve" = 0 ] || die "--approve needs --kubeconfig"
fi

[ -n "$key" ] || key=$out_dir/serving.key
[ -n "$csr" ] || csr=$out_dir/serving.csr
[ -n "$cert" ] || cert=$out_dir/serving.crt
for f in "$key" "$csr" "$cert"; do
	d=$(dirname "$f")
	[ -d "$d" ] || mkdir -p "$d" || die "cannot create directory $d"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/serving-cert.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

kc() { "$KUBECTL" --kubeconfig "$kubeconfig" --request-timeout=20s "$@"; }
oneline() { tr '\n' ' ' <"$1"; }

# --- the kubernetes Service ClusterIP(s) --------------------------------------
if [ -z "$service_ips" ]; then
	if [ -n "$kubeconfig" ]; then
		# clusterIPs holds both families on a dual-stack cluster.
		service_ips=$(kc get service kubernetes -n default -o 'jsonpath={.spec.clusterIPs[*]}' 2>"$work/err") ||
			die "cannot read the default/kubernetes Service ($(oneline "$work/err")); pass --service-ip"
		[ -n "$service_ips" ] || service_ips=$(kc get service kubernetes -n default -o 'jsonpath={.spec.clusterIP}')
		for ip in $service_ips; do check_ip "default/kubernetes .spec.clusterIPs" "$ip"; done
		[ -n "$service_ips" ] || die "default/kubernetes has no ClusterIP; pass --service-ip"
		# shellcheck disable=SC2086 # one word per address
		note "kubernetes Service ClusterIP:$(printf ' %s' $service_ips)"
	else
		service_ips=10.96.0.1
	fi
fi

# --- SANs, de-duplicated, in a stable order ------------------------------------
san_list=
add_san() {
	case ",$san_list," in *",$1,"*) return 0 ;; esac
	san_list=${san_list:+$san_list,}$1
}
add_san "IP:$incluster_ip"
for ip in $service_ips; do add_san "IP:$ip"; done
add_san "IP:127.0.0.1"
for ip in $extra_ips; do add_san "IP:$ip"; done
for d in kubernetes kubernetes.default kubernetes.default.svc "kubernetes.default.svc.$cluster_domain"; do
	add_san "DNS:$d"
done
for d in $extra_dns; do add_san "DNS:$d"; done

# --- the key -----------------------------------------------------------------
key_file=$key
if [ -f "$key" ] && [ "$new_key" = 0 ]; then
	"$OPENSSL" pkey -in "$key" -noout 2>/dev/null || die "$key exists but is not a private key (use --new-key to replace it)"
	note "keeping the existing key $key (--new-key makes a new one$([ "$rsa" = 0 ] || echo '; --rsa applies to a new key only'))"
else
	if [ "$rsa" = 1 ]; then
		(umask 077; "$OPENSSL" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key" 2>"$work/err") ||
			die "openssl could not make an RSA key: $(cat "$work/err")"
	else
		(umask 077; "$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
			-pkeyopt ec_param_enc:named_curve -out "$work/key" 2>"$work/err") ||
			die "openssl could not make an EC key: $(cat "$work/err")"
	fi
	# A running lite-apiserver still serves the old pair: with --kubeconfig the
	# new key goes live together with its certificate, not before.
	[ ! -f "$key" ] || [ -z "$kubeconfig" ] || key_file=$key.new
	# Written before the CSR is submitted (the certificate is useless without it).
	{ (umask 077; cp "$work/key" "$key_file.tmp") && mv -f "$key_file.tmp" "$key_file"; } || die "cannot write $key_file"
	note "new $( [ "$rsa" = 1 ] && echo 'RSA 2048' || echo 'EC P-256') key: $key_file"
fi
# RSA keys print a modulus; EC (and anything else) sign with digitalSignature only.
if "$OPENSSL" pkey -in "$key_file" -noout -text 2>/dev/null | grep -qi '^modulus:'; then
	key_type=rsa
else
	key_type=ec
fi

# --- the CSR -----------------------------------------------------------------
if [ "$key_type" = rsa ]; then
	key_usage="critical, digitalSignature, keyEncipherment"
	usages='["digital signature", "key encipherment", "server auth"]'
else
	key_usage="critical, digitalSignature"
	usages='["digital signature", "server auth"]'
fi
cat >"$work/req.cnf" <<CNF
[req]
prompt = no
distinguished_name = dn
req_extensions = ext
[dn]
O = system:nodes
CN = system:node:$node_name
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = $key_usage
extendedKeyUsage = serverAuth
subjectAltName = $san_list
CNF
"$OPENSSL" req -new -key "$key_file" -config "$work/req.cnf" -out "$work/csr" 2>"$work/err" ||
	die "openssl could not make the CSR: $(cat "$work/err")"
{ cp "$work/csr" "$csr.tmp" && mv -f "$csr.tmp" "$csr"; } || die "cannot write $csr"
note "CSR: $csr (CN=system:node:$node_name, O=system:nodes, SANs $san_list)"

if [ -z "$kubeconfig" ]; then
	note "sign $csr with the cluster CA (the one in pods' ca.crt), e.g. on a control-plane node:"
	note "  openssl x509 -req -in $csr -CA /etc/kubernetes/pki/ca.crt -CAkey /etc/kubernetes/pki/ca.key \\"
	note "    -CAcreateserial -days 365 -copy_extensions copyall -out $cert"
	note "or run again with --kubeconfig to have the cluster sign it"
	exit 0
fi

# --- submit ------------------------------------------------------------------
request=$("$OPENSSL" base64 -A -in "$work/csr")
{
	echo '{"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",'
	echo ' "metadata": {"name": "'"$csr_name"'", "labels": {"app.kubernetes.io/name": "lite-apiserver"}},'
	echo ' "spec": {"signerName": "kubernetes.io/kubelet-serving",'
	[ -z "$expiration" ] || echo '  "expirationSeconds": '"$expiration"','
	echo '  "usages": '"$usages"','
	echo '  "request": "'"$request"'"}}'
} >"$work/csr.json"
# --validate=false: the object is built here and the apiserver validates it
# anyway; client-side validation would need the server's OpenAPI document.
kc create --validate=false -f "$work/csr.json" >/dev/null 2>"$work/err" || {
	if grep -q AlreadyExists "$work/err"; then
		die "a CertificateSigningRequest named $csr_name already exists: delete it (kubectl delete csr $csr_name) or pass --csr-name"
	fi
	die "could not create the CertificateSigningRequest $csr_name: $(oneline "$work/err")"
}
note "submitted CertificateSigningRequest $csr_name (signer kubernetes.io/kubelet-serving)"
if [ "$approve" = 1 ]; then
	# What `kubectl certificate approve` does, as a strategic merge patch
	# (conditions merge by type) of the approval subresource: JSON on the
	# wire, where certificate approve sends protobuf; needs kubectl >= 1.24.
	approval='{"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "ServingCertApprove", "message": "Approved by serving-cert.sh --approve"}]}}'
	kc patch certificatesigningrequests.certificates.k8s.io "$csr_name" --subresource=approval \
		--type=strategic -p "$approval" >/dev/null 2>"$work/err" ||
		die "could not approve $csr_name (needs update on certificatesigningrequests/approval and approve on signers/kubernetes.io/kubelet-serving): $(oneline "$work/err")"
	note "approved $csr_name"
else
	note "waiting up to ${timeout}s for someone to approve it: kubectl certificate approve $csr_name"
fi

# --- wait for .status.certificate -----------------------------------------------
deadline=$(( $(date +%s) + timeout ))
view='jsonpath={.status.certificate}{"\n"}{range .status.conditions[*]}{.type}{" "}{.reason}{": "}{.message}{"\n"}{end}'
while :; do
	if kc get certificatesigningrequests.certificates.k8s.io "$csr_name" -o "$view" >"$work/status" 2>"$work/err"; then
		issued=$(head -n 1 "$work/status")
		[ -z "$issued" ] || break
		if grep -q '^Denied ' "$work/status"; then
			die "$csr_name was denied: $(grep '^Denied ' "$work/status" | head -n 1)"
		fi
		if grep -q '^Failed ' "$work/status"; then
			die "the signer failed $csr_name: $(grep '^Failed ' "$work/status" | head -n 1)"
		fi
	else
		# Said once per distinct error: a flaky link should not flood the terminal.
		msg=$(oneline "$work/err")
		[ "$msg" = "${last_err:-}" ] || note "reading $csr_name failed (retrying): $msg"
		last_err=$msg
	fi
	# -gt: at least the full timeout passes, whatever the second we started in.
	if [ "$(date +%s)" -gt "$deadline" ]; then
		if grep -q '^Approved ' "$work/status" 2>/dev/null; then
			die "timed out after ${timeout}s: $csr_name is approved but not signed; is kube-controller-manager's csrsigning controller running with --cluster-signing-cert-file?"
		fi
		die "timed out after ${timeout}s waiting for $csr_name to be approved and signed (kubectl certificate approve $csr_name)"
	fi
	sleep 1
done

# --- check and write the certificate ----------------------------------------------
printf '%s' "$issued" | "$OPENSSL" base64 -d -A >"$work/crt" 2>"$work/err" ||
	die "$csr_name: .status.certificate is not base64"
"$OPENSSL" x509 -in "$work/crt" -noout 2>/dev/null || die "$csr_name: .status.certificate is not a PEM certificate"
"$OPENSSL" x509 -in "$work/crt" -noout -pubkey >"$work/crt.pub"
"$OPENSSL" pkey -in "$key_file" -pubout >"$work/key.pub"
cmp -s "$work/crt.pub" "$work/key.pub" || die "$csr_name: the issued certificate is not for $key_file"

# Pods trust kube-root-ca.crt: a certificate from another CA would be refused.
if kc get configmap kube-root-ca.crt -n default -o 'jsonpath={.data.ca\.crt}' >"$work/root.pem" 2>/dev/null &&
	[ -s "$work/root.pem" ]; then
	"$OPENSSL" verify -CAfile "$work/root.pem" "$work/crt" >/dev/null 2>"$work/err" ||
		die "the certificate does not verify against default/kube-root-ca.crt (what pods trust): the kubelet-serving signer uses another CA (--cluster-signing-kubelet-serving-cert-file?): $(oneline "$work/err")"
	note "verified against default/kube-root-ca.crt (pods' ca.crt)"
else
	note "could not read default/kube-root-ca.crt; not verified against what pods trust"
fi
[ "$key_file" = "$key" ] || mv -f "$key_file" "$key" || die "cannot move $key_file to $key"
{ cp "$work/crt" "$cert.tmp" && mv -f "$cert.tmp" "$cert"; } || die "cannot write $cert"
note "certificate: $cert ($("$OPENSSL" x509 -in "$cert" -noout -enddate))"
