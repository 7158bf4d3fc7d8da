#!/usr/bin/env bash
# The engine's kernels on a 64-bit ARM CPU (their NEON copies: Apple
# silicon, AWS Graviton, arm64 CI runners), under QEMU's user-mode
# emulation on an x86 machine: cross-builds the library's unit tests and
# the integration tests that hold the kernels to naive loops, candle's ops
# and finite differences (engine_agreement, audit, divergence) for
# aarch64-unknown-linux-gnu, and runs them with qemu-aarch64.
#
# Installs what it needs when missing: the target's standard library
# (rustup), a cross gcc and qemu-user (apt-get, with sudo when not root).
# Where one cannot be installed it says so and exits 0 ("SKIPPED"), so
# that .ci/run does not depend on them; a failing test exits non-zero.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
skip() { echo "== SKIPPED the aarch64 tests: $*"; exit 0; }

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  echo "== installing the $TARGET standard library (rustup)"
  rustup target add "$TARGET" >/dev/null 2>&1 || skip "rustup target add $TARGET failed"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "== installing gcc-aarch64-linux-gnu and qemu-user (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu \
      g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null; } \
    || skip "apt-get could not install the cross compiler and qemu-user"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

# Two unit tests are left out, for the emulation's sake, not the code's:
# one runs its own binary as a child process (qemu-user runs no aarch64
# child without binfmt_misc), and one needs file:line in a captured
# backtrace (not symbolised under qemu).
echo "== cargo test --release --target $TARGET (under qemu-aarch64) $*"
cargo test --release -p gevaldi --target "$TARGET" --no-fail-fast \
  --lib --test engine_agreement --test audit --test divergence "$@" -- \
  --skip allocator::tests::purge_delay_is_the_option_mimalloc_reads_from_its_variable \
  --skip error::tests::candle_backtraces_stay_out_of_messages
