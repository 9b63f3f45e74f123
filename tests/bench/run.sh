#!/usr/bin/env bash
# Runs the benchmark: installs nginx and valgrind (Debian packages) if
# missing, then
#   cargo bench --bench proxy [-- --quick]
# Prints a Markdown table and writes target/bench/report.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing nginx"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  else
    echo "nginx is missing and cannot be installed here; its column will be empty" >&2
  fi
fi
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing valgrind"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null \
      || echo "valgrind could not be installed: the instructions-per-GET row will be empty" >&2
  else
    echo "valgrind is missing: the instructions-per-GET row will be empty" >&2
  fi
fi
# The packaged nginx service is not needed; the bench runs its own.
systemctl stop nginx >/dev/null 2>&1 || true
exec cargo bench --bench proxy -- "$@"
