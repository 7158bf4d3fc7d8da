#!/usr/bin/env bash
# gevaldi vs PyTorch eager fp32 on the paper's ImageNet models, measured in
# one run on this machine: the same seeded random weights of the real sizes
# (torchvision, pytorch-pretrained-biggan), the same inputs, the same
# workloads (benches/imagenet.rs, bench/imagenet_reference.py): forward +
# input gradient of each classifier at batch 8, BigGAN-deep-128 forward +
# gradient w.r.t. z, and the paper's step (BigGAN -> preprocessing ->
# GoogLeNet vs AlexNet -> KL -> gradient w.r.t. z).
#
#   bash bench/compare-imagenet.sh                   # CPU, every workload
#   bash bench/compare-imagenet.sh step resnet18     # some workloads
#   GEVALDI_DEVICE=cuda bash bench/compare-imagenet.sh   # on a GPU (--features cuda)
#
# Settings (environment): ROUNDS (2), BATCH (8), WARMUP, MIN_STEPS,
# MAX_STEPS, BUDGET_S (seconds of timed steps per workload after MIN_STEPS;
# CPU: 1 warm-up step, then 1..10 steps within 8 s; CUDA: 3 warm-up, 20
# timed), THREADS (nproc), PYTHON (bench/.venv/bin/python, installed by
# bench/setup_torch.sh), GEVALDI_BENCH_BIN (a prebuilt bench binary: no
# cargo; bench/gpu.sh's run.sh uses it), DIR (target/imagenet-bench).
#
# The weights and inputs are made once (DIR, about 800 MB) with PyTorch's
# outputs and gradients on them, which the Rust bench compares with its own
# on every run (out_rel, grad_rel: a loader or op that disagrees prints
# check=MISMATCH). Each round runs each workload in gevaldi and in PyTorch
# back to back (which one first alternates between rounds), so that the
# machine's drift over minutes (up to 2x on a shared 2-core VM) falls on
# both sides alike; the best of the rounds of each is kept. One line per
# workload, ending in ratio=gevaldi/pytorch (steps per second: > 1 means
# gevaldi is faster); rss_mib=G/P is each process's peak resident memory
# (weights included; gevaldi's mimalloc keeps freed memory).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${GEVALDI_DEVICE:-cpu}"
ROUNDS="${ROUNDS:-2}"
BATCH="${BATCH:-8}"
THREADS="${THREADS:-$(nproc)}"
DIR="${DIR:-target/imagenet-bench}"
if [ "$DEVICE" = cuda ]; then
  WARMUP="${WARMUP:-3}" MIN_STEPS="${MIN_STEPS:-20}" MAX_STEPS="${MAX_STEPS:-20}" BUDGET_S="${BUDGET_S:-0}"
  FEATURES=(--features cuda)
else
  WARMUP="${WARMUP:-1}" MIN_STEPS="${MIN_STEPS:-1}" MAX_STEPS="${MAX_STEPS:-10}" BUDGET_S="${BUDGET_S:-8}"
  FEATURES=()
fi
TIMING=(--device "$DEVICE" --batch "$BATCH" --warmup "$WARMUP" --min-steps "$MIN_STEPS"
  --max-steps "$MAX_STEPS" --budget-s "$BUDGET_S")
WORKLOADS=("$@")

if [ -z "${PYTHON:-}" ]; then
  bash bench/setup_torch.sh
  PYTHON=bench/.venv/bin/python
fi
if [ -n "${GEVALDI_BENCH_BIN:-}" ]; then
  gevaldi() { RAYON_NUM_THREADS="$THREADS" "$GEVALDI_BENCH_BIN" "$@"; }
else
  cargo bench --bench imagenet "${FEATURES[@]}" --no-run -q 2>/dev/null
  gevaldi() { RAYON_NUM_THREADS="$THREADS" cargo bench -q --bench imagenet "${FEATURES[@]}" -- "$@"; }
fi
pytorch() { "$PYTHON" bench/imagenet_reference.py "$@"; }

if [ ! -f "$DIR/complete" ]; then
  echo "making the weights, inputs and PyTorch's reference outputs in $DIR (once)" >&2
  rm -rf "$DIR"
  mkdir -p "$DIR"
  pytorch make --dir "$DIR" --threads "$THREADS"
  touch "$DIR/complete"
fi

show() { # stdin to stdout and, as it comes, to stderr (`tee /dev/stderr`
  # would reopen, and so truncate, a log file that stderr points to)
  while IFS= read -r l; do
    printf '%s\n' "$l" >&2
    printf '%s\n' "$l"
  done
}

field() { # field NAME LINE
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

declare -A best_g best_p line_g line_p
if [ ${#WORKLOADS[@]} = 0 ]; then
  read -r -a WORKLOADS < <("$PYTHON" -c 'import sys; sys.path.insert(0, "bench"); import imagenet_reference as r; print(" ".join(r.WORKLOADS))')
fi
order=("${WORKLOADS[@]}")

keep() { # keep SIDE LINE: the line if its steps/s beat the side's best so far
  local -n best=best_$1 line=line_$1
  local w s
  [ -n "$2" ] || return 0
  w=$(field workload "$2")
  s=$(field steps_per_s "$2")
  if [ -z "${best[$w]:-}" ] || awk -v a="$s" -v b="${best[$w]}" 'BEGIN { exit !(a > b) }'; then
    best[$w]=$s line[$w]=$2
  fi
}
run_g() { gevaldi --dir "$DIR" "${TIMING[@]}" "$1" | grep --line-buffered '^gevaldi' | show; }
run_p() { pytorch time --dir "$DIR" --threads "$THREADS" "${TIMING[@]}" "$1" | grep --line-buffered '^pytorch' | show; }

started=$SECONDS
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    for side in $([ $((round % 2)) = 1 ] && echo g p || echo p g); do
      l=$(run_"$side" "$w")
      keep "$side" "$l"
    done
  done
done

echo
if [ "$DEVICE" = cuda ]; then
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
  echo "machine: $gpu; host $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
else
  echo "machine: $(nproc) cores ($THREADS threads), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
fi
echo "torch: $(field torch "${line_p[${order[0]}]}"); batch $BATCH; $ROUNDS rounds, best of each; $WARMUP warm-up step(s), then $MIN_STEPS..$MAX_STEPS timed (budget ${BUDGET_S}s); $((SECONDS - started)) s in all"
mismatch=0
for w in "${order[@]}"; do
  g=${best_g[$w]} p=${best_p[$w]:-}
  if [ -z "$p" ]; then
    echo "$w: no PyTorch figure"
    continue
  fi
  check=$(field check "${line_g[$w]}")
  [ "$check" = MISMATCH ] && mismatch=1
  peak=""
  pk=$(field peak_gib "${line_p[$w]}")
  [ -n "$pk" ] && peak=" pytorch_peak_gib=$pk"
  rg=$(field peak_rss_mib "${line_g[$w]}") rp=$(field peak_rss_mib "${line_p[$w]}")
  [ -n "$rg" ] && [ -n "$rp" ] && peak="$peak rss_mib=$rg/$rp"
  printf '%-14s device=%s batch=%s gevaldi_steps_per_s=%s pytorch_steps_per_s=%s out_rel=%s grad_rel=%s check=%s%s ratio=%s\n' \
    "$w" "$DEVICE" "$BATCH" "$g" "$p" "$(field out_rel "${line_g[$w]}")" "$(field grad_rel "${line_g[$w]}")" \
    "$check" "$peak" "$(awk -v g="$g" -v p="$p" 'BEGIN { printf "%.2f", g / p }')"
done
if [ "$mismatch" = 1 ]; then
  echo
  echo "!!! MISMATCH: gevaldi's outputs or input gradients differ from PyTorch's on the same weights and inputs (see check= above)"
  exit 1
fi
