#!/usr/bin/env bash
# Every test of the project, on a fresh machine of this kind:
#   1. cargo test (unit tests, and integration tests that run the real binary
#      against the kube-apiserver double over TLS, driven by kubectl and the
#      Python kubernetes client, installed here from PyPI if missing);
#   2. a minute of differential fuzzing of the HTTP request reader;
#   3. the demo;
#   4. the static musl cross-builds, and the ARM binaries under qemu-user
#      against the double;
#   5. the .deb and .ipk packages and the OpenWrt init script.
# cross/setup.sh installs what 4 and 5 need (idempotent; apt as root).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p target
if ! python3 -c "import kubernetes" 2>/dev/null; then
  echo "== installing the Python kubernetes client (a real client for the tests)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes
fi
echo "== cargo test"
cargo test --all-targets 2>&1 | tee target/cargo-test.log
grep -q "test result: ok" target/cargo-test.log
if grep -q "test result: FAILED" target/cargo-test.log; then exit 1; fi
echo "== doc examples (cargo test --all-targets leaves them out)"
cargo test --doc

echo "== one minute of differential fuzzing of the HTTP reader"
tests/fuzz.sh 60

echo "== the demo (the main job)"
cargo run --quiet --release --example demo

echo "== cross builds (static musl: x86_64, aarch64, armv7)"
cross/setup.sh
cross/build.sh
cross/sizes.sh
echo "== ARM binaries under qemu against the double"
cargo test --test qemu -- --ignored 2>&1 | tee target/qemu-test.log
grep -q "test result: ok. 2 passed" target/qemu-test.log
for t in tests/packaging/*.sh; do
  [ -e "$t" ] || continue
  echo "== $t"
  bash "$t"
done
echo "all tests passed"
