#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine
# (cargo-nextest, cargo-insta, Chromium), then runs the whole test suite in
# release mode. Extra arguments go to `cargo test`.
#
# - cargo-nextest: tests/harness.rs runs the harness under nextest.
# - cargo-insta: tests/snapshot_policy.rs accepts a new snapshot with it.
# - Chromium: cargo-gevaldi/tests/report.rs opens the HTML report headless
#   (Debian's `chromium` package through apt-get, with sudo when not root;
#   or name a browser in GEVALDI_CHROMIUM).
# - A C++20 compiler (g++ through apt-get where `c++` is missing):
#   tests/cuda_kernels.rs runs the CUDA kernels' source on the CPU.
# Every test binary runs even when an earlier one fails (--no-fail-fast).
set -euo pipefail
cd "$(dirname "$0")/.."

need_cargo_tool() { # <cargo subcommand> <crate>
  if ! cargo "$1" --version >/dev/null 2>&1; then
    echo "== installing $2 (cargo install --locked $2)"
    cargo install --locked "$2"
  fi
}
need_cargo_tool nextest cargo-nextest
need_cargo_tool insta cargo-insta

if [ -z "${GEVALDI_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "== installing chromium (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# tests/cuda_kernels.rs compiles the CUDA kernels as C++20 (CXX, else c++).
if [ -z "${CXX:-}" ] && ! command -v c++ >/dev/null 2>&1; then
  echo "== installing g++ (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi

echo "== cargo test --release --workspace --no-fail-fast $*"
cargo test --release --workspace --no-fail-fast "$@"
