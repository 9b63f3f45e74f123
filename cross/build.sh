#!/usr/bin/env bash
# Builds static, stripped, size-optimised lite-apiserver binaries:
#   cross/build.sh [TARGET...]   (default: all three)
# into target/dist/lite-apiserver-TARGET, and prints each size.
# It installs nothing: run cross/setup.sh first. Honours CARGO_TARGET_DIR.
#
# On top of .cargo/config.toml's flags it links these release binaries
#  - without unwind tables (.eh_frame, .eh_frame_hdr, .gcc_except_table,
#    .ARM.exidx/.ARM.extab: -213 KB on aarch64, -33 KB on armv7). The release
#    profile is panic=abort, so nothing unwinds; a panic still prints its
#    message and location and aborts, only RUST_BACKTRACE shows no frames
#    (it showed no names anyway: the binary is stripped). Skipped when the
#    release profile is not panic=abort (e.g. CARGO_PROFILE_RELEASE_PANIC).
#  - with rust-lld and --icf=all, which folds identical functions
#    (-5 KB on aarch64, -8 KB on armv7). Skipped when the toolchain has no
#    rust-lld; Rust does not promise distinct function addresses.
#  - with the build machine's path prefixes remapped out of panic locations.
# The first two are here rather than in .cargo/config.toml: the first breaks
# panic=unwind builds (tests cross-run with cargo's runner, OpenWrt's feed),
# and the second needs the toolchain's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-target}

TOOLCHAIN=1.93.0
ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

die() { echo "cross/build.sh: $*" >&2; exit 1; }

rustup toolchain list | grep -q "^$TOOLCHAIN" || die "Rust $TOOLCHAIN is missing (run cross/setup.sh)"
mkdir -p target/dist

# The release profile's panic strategy, as cargo will see it.
panic=${CARGO_PROFILE_RELEASE_PANIC:-$(sed -n '/^\[profile\.release\]/,/^\[/s/^panic *= *"\(.*\)".*/\1/p' Cargo.toml)}
extra=()
if [ "$panic" = abort ]; then
  # A fragment added to the linker's default script: the unwind tables of
  # every object go, except crtbegin/crtend's (their __do_init refers to its
  # own .eh_frame, and a discarded referenced section fails the link).
  script="$root/target/no-unwind-tables.ld"
  cat > "$script" <<'LD'
SECTIONS {
  /DISCARD/ : {
    *(EXCLUDE_FILE(*crtbegin.o *crtbeginS.o *crtbeginT.o *crtend.o *crtendS.o) .eh_frame)
    *(.gcc_except_table .gcc_except_table.*)
    *(.ARM.extab* .ARM.exidx*)
  }
} INSERT BEFORE .text;
LD
  extra+=("-C" "link-arg=-Wl,-T,$script")
else
  echo "cross/build.sh: release profile is panic=${panic:-unwind}: keeping the unwind tables" >&2
fi
gcc_ld="$(rustc +"$TOOLCHAIN" --print sysroot)/lib/rustlib/$(rustc +"$TOOLCHAIN" -vV | sed -n 's/^host: //p')/bin/gcc-ld"
if [ -x "$gcc_ld/ld.lld" ]; then
  extra+=("-C" "link-arg=-fuse-ld=lld" "-C" "link-arg=-B$gcc_ld" "-C" "link-arg=-Wl,--icf=all")
else
  echo "cross/build.sh: no rust-lld in the toolchain: linking with the C compiler's ld" >&2
fi
# Panic locations name their source files; without the build machine's
# prefixes they are shorter (-7 KB on aarch64) and the same on every machine:
# ring-0.17.14/src/aead/quic.rs, src/server.rs.
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  [ -d "$d" ] && extra+=("--remap-path-prefix=$d=")
done
extra+=("--remap-path-prefix=$root/=")
# As one TOML array; cargo appends it to .cargo/config.toml's rustflags.
flags=""
for f in "${extra[@]}"; do flags="$flags\"$f\","; done

for t in "${targets[@]}"; do
  case "$t" in
    x86_64-unknown-linux-musl) cc=x86_64-linux-musl-gcc ;;
    aarch64-unknown-linux-musl) cc=aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-musleabihf) cc=arm-linux-gnueabihf-gcc ;;
    *) die "unknown target $t (one of: ${ALL[*]})" ;;
  esac
  command -v "$cc" >/dev/null || die "$cc is missing for $t (run cross/setup.sh)"
  rustup +"$TOOLCHAIN" target list --installed | grep -qx "$t" || die "the $t standard library is missing (run cross/setup.sh)"
  start=$(date +%s)
  cargo +"$TOOLCHAIN" build --quiet --release --locked --target "$t" --bin lite-apiserver \
    --config "target.$t.rustflags=[${flags%,}]"
  out="target/dist/lite-apiserver-$t"
  cp "$target_dir/$t/release/lite-apiserver" "$out"
  file -b "$out" | grep -qE "statically linked|static-pie linked" || die "$out is not statically linked: $(file -b "$out")"
  printf '%-34s %9d bytes  (%ds)\n' "$t" "$(stat -c %s "$out")" "$(( $(date +%s) - start ))"
done
