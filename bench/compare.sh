#!/usr/bin/env bash
# gevaldi vs JAX (jit, XLA, CPU) and PyTorch eager (CPU, fp32) on the same
# MDS search, measured in one run on this machine: cnn_a vs cnn_b over the
# VAE of the committed MNIST fixtures, kl, Adam, lr 0.05, λ 0.01, the same
# z0, at batch 64 and 256 (bench/jax_reference.py,
# bench/torch_mnist_reference.py).
#
#   bash bench/compare.sh            # 100 steps per run, 2 rounds
#   STEPS=200 ROUNDS=3 bash bench/compare.sh
#   BATCHES="8 1024" bash bench/compare.sh   # other batch sizes (default "64 256")
#
# Installs JAX into bench/.venv on first use (bench/setup_jax.sh); the
# PyTorch column runs where bench/.venv has PyTorch (bench/setup_torch.sh,
# about 5 GB, which bench/compare-imagenet.sh installs), else it says so.
# Each batch size runs gevaldi, JAX and PyTorch in turn, ROUNDS times, and
# reports the best run of each (this machine's timings drift by up to 2x
# within minutes, as the hypervisor lends it more or less time; alternating
# keeps the sides in the same moments).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"
ROUNDS="${ROUNDS:-2}"
BATCHES="${BATCHES:-64 256}"
Z0=target/bench-z0

bash bench/setup_jax.sh >/dev/null
if bench/.venv/bin/python -c 'import torch' 2>/dev/null; then
  TORCH=1
else
  TORCH=0
  echo "no PyTorch in bench/.venv (bash bench/setup_torch.sh): no PyTorch column" >&2
fi
cargo bench --bench search --no-run -q 2>/dev/null
mkdir -p "$Z0"

field() { # field NAME LINE
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

best() { # best LINE...: the line with the most steps/s
  local top="$1" l
  for l in "$@"; do
    if awk -v a="$(field steps_per_s "$l")" -v b="$(field steps_per_s "$top")" 'BEGIN { exit !(a > b) }'; then
      top="$l"
    fi
  done
  echo "$top"
}

rows=()
for batch in $BATCHES; do
  gs=()
  js=()
  ts=()
  for _ in $(seq "$ROUNDS"); do
    g=$(cargo bench -q --bench search -- --batch "$batch" --steps "$STEPS" --save-z0 "$Z0" | grep '^gevaldi')
    echo "$g"
    gs+=("$g")
    j=$(bench/.venv/bin/python bench/jax_reference.py --z0 "$Z0/z0-b$batch.safetensors" --steps "$STEPS" | grep '^jax')
    echo "$j"
    js+=("$j")
    if [ "$TORCH" = 1 ]; then
      t=$(bench/.venv/bin/python bench/torch_mnist_reference.py --z0 "$Z0/z0-b$batch.safetensors" --steps "$STEPS" | grep '^pytorch')
      echo "$t"
      ts+=("$t")
    fi
  done
  g=$(best "${gs[@]}")
  j=$(best "${js[@]}")
  t=-
  tkl=-
  if [ "$TORCH" = 1 ]; then
    tl=$(best "${ts[@]}")
    t=$(field steps_per_s "$tl")
    tkl=$(field mean_kl_after "$tl")
  fi
  rows+=("$batch $(field steps_per_s "$g") $(field steps_per_s "$j") $t $(field mean_kl_after "$g") $(field mean_kl_after "$j") $tkl")
done

ratio() { # ratio A B: A / B to two places, or - where B is -
  if [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%-6s %9s %9s %9s %8s %8s\n' batch gevaldi jax pytorch vs_jax vs_torch
for r in "${rows[@]}"; do
  read -r batch g j t gkl jkl tkl <<<"$r"
  printf '%-6s %9s %9s %9s %8s %8s   kl_after %s / %s / %s\n' "$batch" "$g" "$j" "$t" \
    "$(ratio "$g" "$j")" "$(ratio "$g" "$t")" "$gkl" "$jkl" "$tkl"
done
echo "(steps per second; vs_jax, vs_torch: gevaldi's steps/s over theirs; kl_after: mean KL after the search, gevaldi / JAX / PyTorch)"

# Peak memory of a batch-256 search (issue 8: under 1 GiB).
if [ -x /usr/bin/time ]; then
  bin=$(ls -t target/release/deps/search-* | grep -v '\.d$' | head -1)
  rss=$(/usr/bin/time -v "$bin" --batch 256 --steps "$STEPS" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p')
  echo "peak memory of the batch-256 search ($STEPS steps): $((rss / 1024)) MiB"
fi
