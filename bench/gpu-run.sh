#!/usr/bin/env bash
# The GPU machine's half of bench/gpu.sh, copied there as .gpu/run.sh: runs
# the CUDA binaries built by bench/gpu.sh beside PyTorch (and JAX) on the
# GPU, each part under its own `timeout`, logs into $OUT.
#
# On the GPU machine (no Rust; /opt/torch/.venv with torch, torchvision,
# jax), from the repository's root, with .gpu carried:
#
#   bash .gpu/run.sh                 # every part, in this order:
#   bash .gpu/run.sh imagenet mnist memory tests
#
# Parts:
#   imagenet  bench/compare-imagenet.sh with GEVALDI_DEVICE=cuda on the
#             prebuilt bench (every workload, batch 8: 3 warm-up, 20 timed
#             steps, 2 rounds), then the paper's step alone at batch 32,
#             then at batch 8 with GEVALDI_ENGINE=candle (candle's ops and
#             autograd, what ran on a GPU before the generic path);
#             the weights are made there first (PyTorch, CPU, about a minute)
#   mnist     benches/search.rs on CUDA at batch 64 and 256 (100 steps)
#             beside bench/jax_reference.py (jit, on the GPU)
#   memory    peak GPU memory (nvidia-smi, sampled every 50 ms, less the
#             idle figure) of the paper's step at batch 8 and 32, gevaldi
#             and PyTorch each alone
#   tests     the test binaries (TESTS: audit search imagenet_zoo biggan
#             generic_path)
#             with GEVALDI_DEVICE=cuda
#
# Files in $OUT (at most 8 come back): summary.txt (the figures), and
# imagenet.log, mnist.log, memory.log, tests.log, setup.log.
set -uo pipefail
GPU=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$GPU/.." && pwd)
cd "$ROOT"
OUT="${OUT:-/tmp/gevaldi-gpu-out}"
mkdir -p "$OUT"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(imagenet mnist memory tests)
TESTS="${TESTS:-audit search imagenet_zoo biggan generic_path}"
VENV="${VENV:-/opt/torch/.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3
DIR="${DIR:-/tmp/imagenet-bench}"
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }

{
  date -u
  nvidia-smi || true
  # Binaries: unpacked once.
  for f in "$GPU"/bin/*.xz; do
    b="${f%.xz}"
    [ -x "$b" ] && continue
    xz -dkf "$f" 2>/dev/null ||
      "$PY" -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$b"
    chmod +x "$b"
  done
  # CUDA 13 libraries from the venv's nvidia wheels.
  . "$GPU/remote-env.sh"
  # The binaries find fixtures/ through the source path compiled into
  # them (CARGO_MANIFEST_DIR): that path points at this checkout here.
  built=$(cat "$GPU/build-root.txt")
  if [ "$built" != "$ROOT" ] && [ ! -e "$built/fixtures" ]; then
    mkdir -p "$(dirname "$built")"
    rm -rf "$built"
    ln -s "$ROOT" "$built"
  fi
  echo "build root $built -> $ROOT"
  # pytorch-pretrained-biggan (pure Python), carried.
  export PYTHONPATH="$GPU/py${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import torch, torchvision, pytorch_pretrained_biggan; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"
} >"$OUT/setup.log" 2>&1
export PYTHONPATH="$GPU/py${PYTHONPATH:+:$PYTHONPATH}"
. "$GPU/remote-env.sh" >/dev/null 2>&1
summary "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
summary "torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)"

make_weights() {
  if [ ! -f "$DIR/complete" ]; then
    mkdir -p "$DIR"
    timeout 300 "$PY" bench/imagenet_reference.py make --dir "$DIR" && touch "$DIR/complete"
  fi
}

# The peak of nvidia-smi's used memory (MiB) while "$@" runs, less before.
peak_mib() {
  local idle log pid status
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$log" &
  pid=$!
  "$@" >>"$OUT/memory.log" 2>&1
  status=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "$(sort -n "$log" | tail -1) $idle $status" | awk '{ printf "%d MiB (exit %d)", $1 - $2, $3 }'
  rm -f "$log"
}

for part in "${PARTS[@]}"; do
  started=$SECONDS
  case "$part" in
    imagenet)
      {
        make_weights
        # One round: each workload starts a process per side (CUDA set-up,
        # PyTorch's import, the weights), 18 starts in all.
        GEVALDI_DEVICE=cuda PYTHON="$PY" DIR="$DIR" GEVALDI_BENCH_BIN="$GPU/bin/imagenet" ROUNDS=1 \
          timeout 360 bash bench/compare-imagenet.sh
        echo "== the paper's step at batch 32"
        GEVALDI_DEVICE=cuda PYTHON="$PY" DIR="$DIR" GEVALDI_BENCH_BIN="$GPU/bin/imagenet" BATCH=32 ROUNDS=1 \
          timeout 180 bash bench/compare-imagenet.sh step
        echo "== the paper's step at batch 8 on candle's ops and autograd (before the generic path)"
        GEVALDI_ENGINE=candle timeout 120 "$GPU/bin/imagenet" --dir "$DIR" --device cuda \
          --warmup 2 --min-steps 10 --max-steps 10 step | sed 's/^gevaldi /gevaldi-candle-ops /'
      } >"$OUT/imagenet.log" 2>&1
      grep -E 'ratio=|^machine|^torch|MISMATCH|^gevaldi-candle-ops' "$OUT/imagenet.log" | tee -a "$OUT/summary.txt"
      ;;
    mnist)
      {
        z0=$(mktemp -d)
        for batch in 64 256; do
          GEVALDI_DEVICE=cuda timeout 120 "$GPU/bin/search" --batch "$batch" --steps 100 --save-z0 "$z0"
          JAX_PLATFORMS=cuda timeout 120 "$PY" bench/jax_reference.py --z0 "$z0/z0-b$batch.safetensors" --steps 100
        done
      } >"$OUT/mnist.log" 2>&1
      grep -E '^(gevaldi|jax) ' "$OUT/mnist.log" | tee -a "$OUT/summary.txt"
      ;;
    memory)
      make_weights >>"$OUT/memory.log" 2>&1
      for batch in 8 32; do
        g=$(peak_mib env GEVALDI_DEVICE=cuda timeout 120 "$GPU/bin/imagenet" --dir "$DIR" --device cuda \
          --batch "$batch" --warmup 1 --min-steps 3 --max-steps 3 step)
        p=$(peak_mib timeout 120 "$PY" bench/imagenet_reference.py time --dir "$DIR" --device cuda \
          --batch "$batch" --warmup 1 --min-steps 3 --max-steps 3 step)
        summary "peak GPU memory of the paper's step, batch $batch: gevaldi $g, pytorch $p"
      done
      ;;
    tests)
      for t in $TESTS; do
        b="$GPU/bin/test-$t"
        if [ ! -x "$b" ]; then
          summary "test $t: no binary"
          continue
        fi
        echo "== $t" >>"$OUT/tests.log"
        GEVALDI_DEVICE=cuda timeout 240 "$b" >>"$OUT/tests.log" 2>&1
        summary "test $t on cuda: exit $? ($(grep -E '^test result' "$OUT/tests.log" | tail -1))"
      done
      ;;
    *)
      summary "unknown part $part (imagenet, mnist, memory, tests)"
      ;;
  esac
  summary "== $part: $((SECONDS - started)) s"
done
