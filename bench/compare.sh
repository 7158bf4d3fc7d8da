#!/usr/bin/env bash
# gevaldi vs JAX (jit, XLA, CPU) on the same MDS search, measured in one run
# on this machine: cnn_a vs cnn_b over the VAE of the committed MNIST
# fixtures, kl, Adam, lr 0.05, λ 0.01, the same z0, at batch 64 and 256.
#
#   bash bench/compare.sh            # 100 steps per run, 2 rounds
#   STEPS=200 ROUNDS=3 bash bench/compare.sh
#
# Installs JAX into bench/.venv on first use (bench/setup_jax.sh). Each
# batch size runs gevaldi, then JAX, ROUNDS times, and reports the best run
# of each (this machine's timings drift by up to 2x within minutes, as the
# hypervisor lends it more or less time; alternating keeps the two sides in
# the same moments).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"
ROUNDS="${ROUNDS:-2}"
Z0=target/bench-z0

bash bench/setup_jax.sh >/dev/null
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
for batch in 64 256; do
  gs=()
  js=()
  for _ in $(seq "$ROUNDS"); do
    g=$(cargo bench -q --bench search -- --batch "$batch" --steps "$STEPS" --save-z0 "$Z0" | grep '^gevaldi')
    j=$(bench/.venv/bin/python bench/jax_reference.py --z0 "$Z0/z0-b$batch.safetensors" --steps "$STEPS" | grep '^jax')
    echo "$g"
    echo "$j"
    gs+=("$g")
    js+=("$j")
  done
  g=$(best "${gs[@]}")
  j=$(best "${js[@]}")
  rows+=("$batch $(field steps_per_s "$g") $(field steps_per_s "$j") $(field mean_kl_after "$g") $(field mean_kl_after "$j")")
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%-6s %14s %14s %8s %16s %14s\n' batch gevaldi_steps/s jax_steps/s ratio gevaldi_kl_after jax_kl_after
for r in "${rows[@]}"; do
  read -r batch g j gkl jkl <<<"$r"
  ratio=$(awk -v g="$g" -v j="$j" 'BEGIN { printf "%.2f", g / j }')
  printf '%-6s %14s %14s %8s %16s %14s\n' "$batch" "$g" "$j" "$ratio" "$gkl" "$jkl"
done

# Peak memory of a batch-256 search (issue 8: under 1 GiB).
if [ -x /usr/bin/time ]; then
  bin=$(ls -t target/release/deps/search-* | grep -v '\.d$' | head -1)
  rss=$(/usr/bin/time -v "$bin" --batch 256 --steps "$STEPS" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p')
  echo "peak memory of the batch-256 search ($STEPS steps): $((rss / 1024)) MiB"
fi
