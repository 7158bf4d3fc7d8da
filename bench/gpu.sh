#!/usr/bin/env bash
# Builds gevaldi's `--features cuda` benches and tests here (no GPU, no
# CUDA toolkit needed: ../shared/tools/cuda's recipe), ships them stripped
# and xz-compressed into .gpu/ (gitignored, at most 64 MiB) with
# .gpu/run.sh (bench/gpu-run.sh), which runs them on a GPU machine beside
# PyTorch and JAX.
#
#   bash bench/gpu.sh            # here: build, pack (first build ~10-25 min)
#   bash bench/gpu.sh --check    # only `cargo check` the same targets with
#                                # the cuda feature (proves they compile; no pack)
#   (both first compile src/engine/cuda/kernels.cu with NVRTC and assemble
#   it with ptxas for sm_90, as the engine compiles it at run time:
#   bench/nvrtc_check.py)
#   # on the GPU machine, from the repository's root, .gpu carried:
#   bash .gpu/run.sh             # logs and figures in $OUT (summary.txt)
#
# Binaries: benches imagenet and search; the test binaries of TESTS
# (default: audit search imagenet_zoo biggan generic_path: the gradient
# audit of every built-in model, the search, the ImageNet zoo's
# per-architecture audits, BigGAN, and the engine's device-generic path,
# which is what runs on a GPU, against candle's CUDA ops). Settings (environment): CUDA_TOOLS (../shared/tools/cuda),
# CUDA_DIR (/tmp/cuda13), CK_DIR (/tmp/ck), GPU_TARGET (/tmp/gpu-target),
# TESTS.
#
# GPU-CHECK BUILD, NOT FOR RELEASE: candle-kernels is patched (PTX for
# sm_90a only: H100/H200; MoE/GGUF-MMQ kernels abort). Cargo.lock, which
# the patched build rewrites, is restored after.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T="${CUDA_TOOLS:-$ROOT/../shared/tools/cuda}"
[ -f "$T/setup.sh" ] || T=/work/shared/tools/cuda
T=$(realpath "$T")
CUDA_DIR="${CUDA_DIR:-/tmp/cuda13}"
CK="${CK_DIR:-/tmp/ck}"
TARGET="${GPU_TARGET:-/tmp/gpu-target}"
TESTS="${TESTS:-audit search imagenet_zoo biggan generic_path}"

# 1. Toolchain and patched candle-kernels (idempotent, seconds when done).
bash "$T/setup.sh" "$CUDA_DIR" >/dev/null
. "$CUDA_DIR/env.sh"
nice -n 15 bash "$T/patch-candle-kernels.sh" "$CK" >/dev/null

# 2. Build. Cargo.lock is put back however the build ends.
lock=$(mktemp)
cp Cargo.lock "$lock"
trap 'cp "$lock" Cargo.lock; rm -f "$lock"' EXIT
cuda_cargo() {
  nice -n 15 cargo "$@" --release --features cuda --config "$CK/cargo-config.toml" \
    --target-dir "$TARGET" --message-format=json-render-diagnostics
}
# The executables' paths, from cargo's JSON messages.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])
'
}
# The CUDA 13 wheels' nvidia/cu13 folder in $CUDA_DIR.
python_nvidia_dir() {
  "$CUDA_DIR/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))'
}
test_args=()
for t in $TESTS; do test_args+=(--test "$t"); done
# The kernels' source through NVRTC and ptxas, as the engine compiles it
# at run time (no GPU needed).
python3 bench/nvrtc_check.py "$(python_nvidia_dir)"
if [ "${1:-}" = --check ]; then
  nice -n 15 cargo check --release --features cuda --config "$CK/cargo-config.toml" \
    --target-dir "$TARGET" --bench imagenet --bench search "${test_args[@]}"
  echo "the cuda feature's benches and tests compile (cargo check)"
  exit 0
fi
list=$(mktemp)
cuda_cargo build --bench imagenet --bench search | executables >"$list"
cuda_cargo test --no-run "${test_args[@]}" | executables >>"$list"

# 3. Pack: stripped, xz'd; the files run.sh needs beside them.
rm -rf .gpu
mkdir -p .gpu/bin .gpu/py
while read -r name kind exe; do
  case "$kind" in
    bench) out=".gpu/bin/$name" ;;
    test) out=".gpu/bin/test-$name" ;;
    *) continue ;;
  esac
  strip -o "$out" "$exe"
  needed=$(readelf -d "$exe" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  glibc=$(objdump -T "$exe" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
  xz -9 -f -T1 "$out"
  echo "$out.xz: $(du -h "$out.xz" | cut -f1); needs $needed; newest $glibc"
done <"$list"
rm -f "$list"
cp bench/gpu-run.sh .gpu/run.sh
cp "$T/remote-env.sh" .gpu/remote-env.sh
# pytorch-pretrained-biggan is not on the GPU machine: its pure-Python
# package travels (bench/imagenet_reference.py stubs the boto3 it imports).
bash bench/setup_torch.sh >/dev/null
site=$(bench/.venv/bin/python -c 'import pytorch_pretrained_biggan, os; print(os.path.dirname(pytorch_pretrained_biggan.__file__))')
cp -r "$site" .gpu/py/
find .gpu/py -name __pycache__ -prune -exec rm -rf {} +
# The source path compiled into the binaries (fixtures/ is found through
# it); run.sh links it to the checkout there.
echo "$ROOT" >.gpu/build-root.txt
size=$(du -sm .gpu | cut -f1)
echo ".gpu: ${size} MiB"
if [ "$size" -gt 64 ]; then
  echo "error: .gpu is over 64 MiB" >&2
  exit 1
fi
echo "on the GPU machine, from the repository's root with .gpu carried: bash .gpu/run.sh"
