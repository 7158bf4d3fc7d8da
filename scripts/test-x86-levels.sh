#!/usr/bin/env bash
# The engine's kernels and the committed suite's snapshots on x86-64 CPUs
# older than this machine's, under QEMU's user-mode emulation: the `gemm`
# crate's kernels and the engine's loops (src/engine/kernels/simd.rs) pick
# their code at run time (AVX-512, AVX2 with FMA, plain SSE2), with other
# roundings (fused or not) and other accumulation tiles, and a snapshot or
# verdict committed on one must hold on the others.
#
# Runs each chosen test binary under `qemu-x86_64 -cpu Haswell-v4` (AVX2 +
# FMA, no AVX-512: pulp's V3, gemm's `fma` kernels) and `-cpu Nehalem`
# (SSE4.2: no AVX, no FMA; pulp's Scalar, gemm's `scalar` kernels), and
# first checks, from inside the emulated process, that the emulation hid
# what it should (the kernels' copy is printed by
# `the_widest_copy_this_cpu_has_runs`).
#
# What runs, per CPU (X86_LEVELS chooses):
# - kernels (the default): the library's kernel, Adam and divergence unit
#   tests, tests/divergence.rs and tests/engine_agreement.rs's MNIST
#   models (about 3 minutes for both CPUs on this repository's 2 cores);
# - quick: those and the committed MNIST suite's two pairs
#   (tests/gevaldi.rs) against their committed snapshots (under
#   emulation about 20 minutes a pair with AVX2, longer on Nehalem);
# - all: every engine_agreement test (the ImageNet nets too) and all four
#   trials of the suite (the ensemble and the 7-model tournament take
#   several times a pair's time: hours).
# X86_LEVELS_CPUS chooses the CPU models (default "Haswell-v4 Nehalem");
# each command is stopped after X86_LEVELS_TIMEOUT seconds (default 3600).
#
# Installs qemu-user (apt-get, with sudo when not root) when missing;
# where it cannot be installed, or this is not an x86-64 machine, it says
# so and exits 0 ("SKIPPED"). A failing test exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "== SKIPPED the x86-64 level tests: $*"; exit 0; }

[ "$(uname -m)" = x86_64 ] || skip "this machine is $(uname -m), not x86_64"
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "== installing qemu-user (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user >/dev/null; } \
    || skip "apt-get could not install qemu-user"
fi
CPUS=${X86_LEVELS_CPUS:-Haswell-v4 Nehalem}
models=$(qemu-x86_64 -cpu help || true) # it exits 1 after the list
for cpu in $CPUS; do
  grep -qw -- "$cpu" <<<"$models" || skip "qemu-x86_64 knows no CPU model $cpu"
done
LIMIT=${X86_LEVELS_TIMEOUT:-3600}
case "${X86_LEVELS:-kernels}" in
  kernels) AGREE_FILTER=(mnist_models_agree) SUITE_FILTER=() ;;
  quick) AGREE_FILTER=(mnist_models_agree) SUITE_FILTER=(pair::) ;;
  all) AGREE_FILTER=() SUITE_FILTER=(::) ;;
  *) echo "X86_LEVELS is kernels, quick or all, not ${X86_LEVELS}" >&2; exit 2 ;;
esac

# A changed snapshot must fail, never be written.
export INSTA_UPDATE=no CI=1
unset INSTA_FORCE_PASS

echo "== building the test binaries (cargo test --release --no-run)"
cargo test --release -p gevaldi --no-run --lib --test engine_agreement --test divergence \
  --test gevaldi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# cargo runs each test binary through the runner, with the environment
# and working directory it always gives them. qemu's warnings about
# host-only CPUID bits it does not emulate are left out.
under() { # <cpu> <cargo test arguments...>
  local cpu=$1
  shift
  echo "== [$cpu] cargo test --release -p gevaldi $*"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="timeout $LIMIT qemu-x86_64 -cpu $cpu" \
    cargo test --release -p gevaldi "$@" 2>&1 \
    | grep -v "TCG doesn't support requested feature" | tee "$log"
}

for cpu in $CPUS; do
  start=$SECONDS
  under "$cpu" --lib -- engine::kernels search::update divergence:: --nocapture
  case "$cpu" in
    Haswell*|Broadwell*|Skylake-Client*) want=V3 ;;
    Nehalem*|Westmere*|Penryn*|Conroe*|qemu64*) want=Scalar ;;
    *) want="" ;;
  esac
  # The unit test holds the dispatch to the features the CPU reports; if
  # this qemu does not emulate them (TCG has AVX2 from qemu 7.2), the
  # model tests another path than it is named for.
  if [ -n "$want" ] && ! grep -q "the kernels run pulp's $want\$" "$log"; then
    echo "== SKIPPED the rest for $cpu: this qemu's $cpu did not give the kernels pulp's $want (see above; qemu >= 7.2 needed for AVX2)"
    continue
  fi
  under "$cpu" --test divergence
  under "$cpu" --test engine_agreement -- "${AGREE_FILTER[@]}"
  if [ ${#SUITE_FILTER[@]} -gt 0 ]; then
    under "$cpu" --test gevaldi -- "${SUITE_FILTER[@]}"
  fi
  echo "== [$cpu] passed in $((SECONDS - start)) s"
done
