#!/usr/bin/env bash
# gevaldi vs PyTorch eager fp32 on networks a user builds from the layer
# vocabulary (NetBuilder), measured in one run on this machine: PyTorch's
# DCGAN example generator, the same widths with upsampling + 3x3 convs,
# LeNet-5 with average pools, torchvision's MobileNetV2 (ReLU6,
# depthwise convs), ShuffleNetV2 x1.0 (channel halves as narrows, channel
# shuffles), Inception-v3 (1x7/7x1 and 1x3/3x1 convs, average-pool
# branches) and ViT-B/16 (class token and position embedding as
# constants, 12 heads from narrowed channels); the same seeded random
# weights and
# inputs (bench/generator_reference.py makes them), forward + gradient
# w.r.t. the input (z for the generators) of sum(y * r)
# (benches/generator.rs, bench/generator_reference.py).
#
#   bash bench/compare-generator.sh                 # every workload, batch 8 and 64
#   BATCHES=8 bash bench/compare-generator.sh dcgan # some
#
# ViT-B/16 runs only at the batches of BATCHES that VIT_BATCHES ("8")
# also names: at batch 64 one step took 17 s in gevaldi and 46 s in
# PyTorch on this repository's 2-core machine, which would add some 15
# minutes to the default run (VIT_BATCHES="8 64" runs it there too).
# The default run (ROUNDS=3, every workload) took 11.6 minutes there
# (2026-12-06, with other sessions' builds running).
#
# Settings (environment): ROUNDS (3), BATCHES ("8 64"), VIT_BATCHES ("8"), WARMUP (2),
# MIN_STEPS (3), MAX_STEPS (50), BUDGET_S (4: seconds of timed steps per
# workload after MIN_STEPS), THREADS (nproc), PYTHON
# (bench/.venv/bin/python), DIR (target/generator-bench).
#
# Each round runs each workload in gevaldi and in PyTorch back to back
# (which one first alternates between rounds), so that the machine's
# drift falls on both sides alike; the best of the rounds of each is
# kept. One line per workload and batch, ending in ratio=gevaldi/pytorch
# (steps per second: > 1 means gevaldi is faster). At batch 8 gevaldi's
# output and input gradient are compared with PyTorch's (check=, see
# benches/generator.rs); a MISMATCH fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
BATCHES="${BATCHES:-8 64}"
THREADS="${THREADS:-$(nproc)}"
DIR="${DIR:-target/generator-bench}"
TIMING=(--warmup "${WARMUP:-2}" --min-steps "${MIN_STEPS:-3}" --max-steps "${MAX_STEPS:-50}"
  --budget-s "${BUDGET_S:-4}")
WORKLOADS=("$@")
# A workload's own batch list, where it has one (see above).
declare -A ONLY=([vit_b_16]="${VIT_BATCHES:-8}")
runs_at() { # runs_at WORKLOAD BATCH: whether the workload runs at that batch
  [ -z "${ONLY[$1]+set}" ] || [[ " ${ONLY[$1]} " == *" $2 "* ]]
}
if [ -z "${PYTHON:-}" ]; then
  bash bench/setup_torch.sh
  PYTHON=bench/.venv/bin/python
fi
cargo bench --bench generator --no-run -q 2>/dev/null
gevaldi() { RAYON_NUM_THREADS="$THREADS" cargo bench -q --bench generator -- "$@"; }
pytorch() { "$PYTHON" bench/generator_reference.py "$@"; }
read -r -a ALL < <("$PYTHON" -c 'import sys; sys.path.insert(0, "bench"); import generator_reference as r; print(" ".join(r.WORKLOADS))')
# Made again where a workload added since has no weights.
for w in "${ALL[@]}"; do
  [ -f "$DIR/weights/$w.safetensors" ] || rm -f "$DIR/complete"
done
if [ ! -f "$DIR/complete" ]; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  pytorch make --dir "$DIR"
  touch "$DIR/complete"
fi
if [ ${#WORKLOADS[@]} = 0 ]; then
  WORKLOADS=("${ALL[@]}")
fi
field() { # field NAME LINE
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}
declare -A best_g best_p line_g
keep() { # keep SIDE KEY LINE: the line if its steps/s beat the side's best so far
  local -n best=best_$1
  local s
  [ -n "$3" ] || return 0
  s=$(field steps_per_s "$3")
  if [ -z "${best[$2]:-}" ] || awk -v a="$s" -v b="${best[$2]}" 'BEGIN { exit !(a > b) }'; then
    best[$2]=$s
    [ "$1" = g ] && line_g[$2]=$3
  fi
  return 0
}
run_g() { gevaldi --dir "$DIR" --batch "$2" "${TIMING[@]}" "$1" | grep '^gevaldi' || true; }
run_p() { pytorch time --dir "$DIR" --threads "$THREADS" --batch "$2" "${TIMING[@]}" "$1" | grep '^pytorch' || true; }
started=$SECONDS
for round in $(seq "$ROUNDS"); do
  for b in $BATCHES; do
    for w in "${WORKLOADS[@]}"; do
      runs_at "$w" "$b" || continue
      for side in $([ $((round % 2)) = 1 ] && echo g p || echo p g); do
        l=$(run_"$side" "$w" "$b")
        printf '%s\n' "$l" >&2
        keep "$side" "$w/$b" "$l"
      done
    done
  done
done
echo
echo "machine: $(nproc) cores ($THREADS threads), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)'); $ROUNDS rounds, best of each; $((SECONDS - started)) s in all"
mismatch=0
for b in $BATCHES; do
  for w in "${WORKLOADS[@]}"; do
    runs_at "$w" "$b" || continue
    k=$w/$b g=${best_g[$w/$b]:-} p=${best_p[$w/$b]:-}
    if [ -z "$g" ] || [ -z "$p" ]; then
      echo "$w batch=$b: no figure (gevaldi ${g:-none}, pytorch ${p:-none})"
      mismatch=1
      continue
    fi
    check=$(field check "${line_g[$k]}")
    [ "$check" = MISMATCH ] && mismatch=1
    printf '%-13s batch=%-3s gevaldi_steps_per_s=%s pytorch_steps_per_s=%s out_rel=%s grad_rel=%s grad_agree=%s check=%s ratio=%s\n' \
      "$w" "$b" "$g" "$p" "$(field out_rel "${line_g[$k]}")" "$(field grad_rel "${line_g[$k]}")" \
      "$(field grad_agree "${line_g[$k]}")" "$check" "$(awk -v g="$g" -v p="$p" 'BEGIN { printf "%.2f", g / p }')"
  done
done
if [ "$mismatch" = 1 ]; then
  echo
  echo "!!! MISMATCH (or a run that printed nothing): see above"
  exit 1
fi
