#!/usr/bin/env bash
# The GPU machine's half of bench/gpu.sh, copied there as .gpu/run.sh: runs
# the CUDA binaries built by bench/gpu.sh beside PyTorch (and JAX) on the
# GPU, each part under its own `timeout` and the whole under a deadline,
# logs into $OUT.
#
# On the GPU machine (no Rust; /opt/torch/.venv with torch, torchvision,
# jax), from the repository's root, with .gpu carried:
#
#   bash .gpu/run.sh                      # every part, in this order:
#   bash .gpu/run.sh tests mnist step profile candle imagenet
#
# Parts:
#   tests     generic_path's ReLU backward past 2^30 elements alone (an
#             ignored test: 35 GiB), then the test binaries (TESTS: audit
#             search imagenet_zoo biggan generic_path) with
#             GEVALDI_DEVICE=cuda, side by side, each one
#             test at a time (--test-threads 1: see `parallel`), while the
#             ImageNet weights are made on the CPU (PyTorch, seeded)
#   mnist     benches/search.rs on CUDA at batch 64 and 256 (100 steps)
#             beside bench/jax_reference.py (jit, on the GPU); and again
#             with GEVALDI_BENCH_CUDA_EVENTS=off ("gevaldi-noevents":
#             cudarc's two unused CUDA events per buffer not made, see
#             src/suite/device.rs), and with GEVALDI_BENCH_CUDA_POOL=release
#             ("gevaldi-release": CUDA's memory pool left to hand its memory
#             back at every read-back, src/engine/cuda/pool.rs); then every
#             divergence's gradient
#             through the search on CUDA against PyTorch's autograd
#             (bench/check_gradients.py), and GEVALDI_PROFILE's sections
#             of the search at batch 64
#   step      the paper's step (BigGAN-deep-128 -> preprocessing ->
#             GoogLeNet vs AlexNet -> KL -> gradient w.r.t. z) at batch 8
#             and 32, gevaldi (`auto`: gevaldi's CUDA kernels), gevaldi on
#             GEVALDI_ENGINE=generic (the same path on candle's ops alone:
#             "gevaldi-generic"), `auto` with GEVALDI_BENCH_CUDA_EVENTS=off
#             ("gevaldi-noevents"), `auto` with GEVALDI_BENCH_CUDA_POOL=release
#             ("gevaldi-release"), at batch 8 `auto` with candle's backward
#             instead of the search's own (GEVALDI_BENCH_BACKWARD=candle:
#             "gevaldi-candle-backward") and PyTorch alternately, each process alone
#             with its peak GPU memory (nvidia-smi every 50 ms, less the
#             idle figure)
#   profile   where a step's time goes: GEVALDI_PROFILE=1 (each engine op
#             synchronised and timed) on the paper's step, batch 8 and 32
#   candle    the paper's step at batch 8 on candle's ops and autograd
#             (GEVALDI_ENGINE=candle: what ran on a GPU before the engine)
#   imagenet  bench/compare-imagenet.sh with GEVALDI_DEVICE=cuda on the
#             other workloads (each classifier, BigGAN), one round
#   parallel  (not by default) the audit and generic_path test binaries
#             with libtest's parallel threads sharing one CUDA device, which
#             hung on 2026-12-04; every thread's stack (cuda-gdb) where one
#             hangs
#
# Settings: DEADLINE (seconds, 480): a part that would start past it is
# skipped and a running part is cut at it; TESTS; VENV (/opt/torch/.venv).
#
# Files in $OUT (at most 8 come back): summary.txt (the figures), and
# setup.log, tests.log, mnist.log, step.log, profile.log, imagenet.log.
set -uo pipefail
GPU=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$GPU/.." && pwd)
cd "$ROOT"
OUT="${OUT:-/tmp/gevaldi-gpu-out}"
mkdir -p "$OUT"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(tests mnist step profile candle imagenet)
TESTS="${TESTS:-audit search imagenet_zoo biggan generic_path}"
DEADLINE="${DEADLINE:-480}"
VENV="${VENV:-/opt/torch/.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3
DIR="${DIR:-/tmp/imagenet-bench}"
BIN="$GPU/bin"
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
# Seconds left before the deadline, at most $1.
left() {
  local l=$((DEADLINE - SECONDS))
  [ "$l" -lt "$1" ] || l=$1
  [ "$l" -gt 1 ] || l=1
  echo "$l"
}

{
  date -u
  nvidia-smi || true
  for f in "$BIN"/*.xz "$GPU"/dbg/*.xz; do
    [ -f "$f" ] || continue
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
  export PYTHONPATH="$GPU/py${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import torch, torchvision, pytorch_pretrained_biggan; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"
} >"$OUT/setup.log" 2>&1
export PYTHONPATH="$GPU/py${PYTHONPATH:+:$PYTHONPATH}"
. "$GPU/remote-env.sh" >/dev/null 2>&1
summary "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1); $(nproc) cores"
summary "torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)"

# The weights, inputs and PyTorch's reference outputs (CPU, 12 threads),
# in the background from the start; `weights` waits for them.
weights_pid=
if [ ! -f "$DIR/complete" ]; then
  mkdir -p "$DIR"
  (timeout 300 "$PY" bench/imagenet_reference.py make --dir "$DIR" --threads 12 >"$OUT/weights.log" 2>&1 &&
    touch "$DIR/complete"
    summary "weights: made in $SECONDS s") &
  weights_pid=$!
fi
weights() {
  [ -n "$weights_pid" ] && wait "$weights_pid"
  weights_pid=
  [ -f "$DIR/complete" ] || { summary "weights: not made (see weights.log)"; return 1; }
}

# "$@" alone on the GPU, with the peak of nvidia-smi's used memory (MiB)
# less the idle figure appended to its last output line.
with_peak() {
  local idle log pid status line
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$log" &
  pid=$!
  line=$("$@" 2>>"$OUT/step.log" | grep -E '^(gevaldi|pytorch) ' | tail -1)
  status=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "$line peak_gpu_mib=$(sort -n "$log" | tail -1 | awk -v i="$idle" '{ print $1 - i }') exit=$status"
  rm -f "$log"
}

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

for part in "${PARTS[@]}"; do
  started=$SECONDS
  if [ "$SECONDS" -ge "$DEADLINE" ]; then
    summary "== $part: skipped (deadline ${DEADLINE}s)"
    continue
  fi
  case "$part" in
    tests)
      # First, alone (about 35 GiB): gevaldi's CUDA kernels past 2^30
      # elements (their grid-stride loops' indices past an int's range).
      b="$BIN/test-generic_path"
      if [ -x "$b" ]; then
        f="$OUT/test-past-2-30.log"
        GEVALDI_DEVICE=cuda timeout "$(left 60)" "$b" --ignored --exact \
          a_relu_backward_past_2_30_elements_is_exact_on_cuda >"$f" 2>&1
        status=$?
        summary "test past 2^30 elements on cuda: exit $status ($(grep -E '^test result' "$f" | tail -1))"
        grep -E 'panicked|^test .* FAILED' "$f" | head -5 | sed 's/^/  /' | tee -a "$OUT/summary.txt"
        { echo "== past 2^30 elements"; cat "$f"; } >>"$OUT/tests.log"
        rm -f "$f"
      fi
      pids=()
      for t in $TESTS; do
        b="$BIN/test-$t"
        [ -x "$b" ] || { summary "test $t: no binary"; continue; }
        (GEVALDI_DEVICE=cuda timeout "$(left 150)" "$b" --test-threads 1 >"$OUT/test-$t.log" 2>&1
          echo "exit $?" >>"$OUT/test-$t.log") &
        pids+=($!)
      done
      wait "${pids[@]}"
      for t in $TESTS; do
        f="$OUT/test-$t.log"
        [ -f "$f" ] || continue
        summary "test $t on cuda: $(tail -1 "$f") ($(grep -E '^test result' "$f" | tail -1))"
        grep -E '^test .* FAILED|^failures:|panicked' "$f" | head -5 | sed 's/^/  /' | tee -a "$OUT/summary.txt"
        { echo "== $t"; cat "$f"; } >>"$OUT/tests.log"
        rm -f "$f"
      done
      ;;
    mnist)
      {
        z0=$(mktemp -d)
        for batch in 64 256; do
          GEVALDI_DEVICE=cuda timeout "$(left 60)" "$BIN/search" --batch "$batch" --steps 100 --save-z0 "$z0"
          GEVALDI_DEVICE=cuda GEVALDI_BENCH_CUDA_EVENTS=off timeout "$(left 60)" "$BIN/search" --batch "$batch" --steps 100 |
            sed 's/^gevaldi /gevaldi-noevents /'
          GEVALDI_DEVICE=cuda GEVALDI_BENCH_CUDA_POOL=release timeout "$(left 60)" "$BIN/search" --batch "$batch" --steps 100 |
            sed 's/^gevaldi /gevaldi-release /'
          JAX_PLATFORMS=cuda timeout "$(left 90)" "$PY" bench/jax_reference.py --z0 "$z0/z0-b$batch.safetensors" --steps 100
        done
        # Every divergence's gradient through the search on CUDA (`auto`:
        # the head's and Adam's kernels; `generic`) against PyTorch's
        # autograd in float64 (bench/check_gradients.py).
        grads=$(mktemp -d)
        for engine in auto generic; do
          GEVALDI_DEVICE=cuda GEVALDI_ENGINE=$engine timeout "$(left 30)" "$BIN/search" --gradients "$grads"
        done
        timeout "$(left 60)" "$PY" bench/check_gradients.py "$grads"
        # Where the MNIST step's time goes on CUDA: GEVALDI_PROFILE's
        # sections of the search (decode, classifiers, head, read,
        # backward, update), each synchronised.
        echo "== mnist profile, batch 64"
        GEVALDI_DEVICE=cuda GEVALDI_PROFILE=1 timeout "$(left 60)" "$BIN/search" --batch 64 --steps 20
      } >"$OUT/mnist.log" 2>&1
      grep -E '^(gevaldi[a-z-]*|jax) |^largest relative' "$OUT/mnist.log" | tee -a "$OUT/summary.txt"
      sed -n '/^== mnist profile/,/^engine profile/p' "$OUT/mnist.log" | tee -a "$OUT/summary.txt"
      ;;
    step)
      weights || continue
      for batch in 8 32; do
        T=(--device cuda --batch "$batch" --warmup 3 --min-steps 20 --max-steps 20 --budget-s 0)
        sides="g n e r b p p b r e n g"
        [ "$batch" = 8 ] || sides="g r e p"
        for side in $sides; do
          case "$side" in
            g) l=$(with_peak timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" "${T[@]}" step) ;;
            n) l=$(with_peak env GEVALDI_ENGINE=generic timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" "${T[@]}" step)
               l="${l/#gevaldi /gevaldi-generic }" ;;
            e) l=$(with_peak env GEVALDI_BENCH_CUDA_EVENTS=off timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" "${T[@]}" step)
               l="${l/#gevaldi /gevaldi-noevents }" ;;
            b) l=$(with_peak env GEVALDI_BENCH_BACKWARD=candle timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" "${T[@]}" step)
               l="${l/#gevaldi /gevaldi-candle-backward }" ;;
            r) l=$(with_peak env GEVALDI_BENCH_CUDA_POOL=release timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" "${T[@]}" step)
               l="${l/#gevaldi /gevaldi-release }" ;;
            p) l=$(with_peak timeout "$(left 90)" "$PY" bench/imagenet_reference.py time --dir "$DIR" "${T[@]}" step) ;;
          esac
          echo "$l" >>"$OUT/step.log"
          summary "$(sed 's/ torch=[^ ]*//; s/ threads=[^ ]*//' <<<"$l")"
        done
      done
      ;;
    profile)
      # Where a step's time goes: GEVALDI_PROFILE=1 (src/engine/profile.rs:
      # each engine op synchronised and timed) on the paper's step, batch 8
      # and 32.
      weights || continue
      for batch in 8 32; do
        echo "== batch $batch"
        GEVALDI_PROFILE=1 timeout "$(left 60)" "$BIN/imagenet" --dir "$DIR" --device cuda --batch "$batch" \
          --warmup 2 --min-steps 3 --max-steps 3 --budget-s 0 step 2>&1 | grep -v '^device'
      done >"$OUT/profile.log" 2>&1
      grep -E '^== |^step sections|^engine profile|^gevaldi ' "$OUT/profile.log" | tee -a "$OUT/summary.txt"
      ;;
    candle)
      weights || continue
      GEVALDI_ENGINE=candle timeout "$(left 90)" "$BIN/imagenet" --dir "$DIR" --device cuda \
        --warmup 2 --min-steps 10 --max-steps 10 --budget-s 0 step 2>>"$OUT/step.log" |
        sed 's/^gevaldi /gevaldi-candle-ops /' | tee -a "$OUT/step.log" | grep '^gevaldi' | tee -a "$OUT/summary.txt"
      ;;
    imagenet)
      weights || continue
      GEVALDI_DEVICE=cuda PYTHON="$PY" DIR="$DIR" GEVALDI_BENCH_BIN="$BIN/imagenet" ROUNDS=1 \
        timeout "$(left 400)" bash bench/compare-imagenet.sh biggan googlenet alexnet resnet50 convnext_tiny \
        resnet18 squeezenet1_0 squeezenet1_1 >"$OUT/imagenet.log" 2>&1
      grep -E 'ratio=|^machine|^torch|MISMATCH' "$OUT/imagenet.log" | tee -a "$OUT/summary.txt"
      ;;
    parallel)
      # The test binaries with libtest's parallel test threads, which share
      # one CUDA device: audit and generic_path hung there (2026-12-04, no
      # test finished in 150 s) and the determinism tests saw other bits;
      # where one hangs, every thread's stack (cuda-gdb attached; for
      # symbols, put xz'd unstripped copies in .gpu/dbg/test-NAME.xz).
      for t in audit generic_path; do
        b="$GPU/dbg/test-$t"
        [ -x "$b" ] || b="$BIN/test-$t"
        GEVALDI_DEVICE=cuda RUST_BACKTRACE=1 "$b" >"$OUT/hang-$t.log" 2>&1 &
        pid=$!
        limit=$(left 30)
        for _ in $(seq "$limit"); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
          echo "== still running after ${limit}s: stacks" >>"$OUT/hang-$t.log"
          timeout 25 cuda-gdb -p "$pid" -batch -ex "info threads" -ex "thread apply all bt 30" \
            >>"$OUT/hang-$t.log" 2>&1
          kill -9 "$pid"
        fi
        wait "$pid"
        summary "test $t on cuda, parallel threads: exit $? ($(grep -E '^test result' "$OUT/hang-$t.log" | tail -1))"
        grep -E '^test ' "$OUT/hang-$t.log" | tail -3 | sed 's/^/  /' | tee -a "$OUT/summary.txt"
        { echo "== $t"; cat "$OUT/hang-$t.log"; } >>"$OUT/tests.log"
        rm -f "$OUT/hang-$t.log"
      done
      ;;
    *)
      summary "unknown part $part (tests mnist step profile candle imagenet)"
      ;;
  esac
  summary "== $part: $((SECONDS - started)) s"
done
