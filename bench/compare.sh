#!/usr/bin/env bash
# gevaldi vs JAX (jit, XLA, CPU) on the same MDS search, measured in one run
# on this machine: cnn_a vs cnn_b over the VAE of the committed MNIST
# fixtures, kl, Adam, lr 0.05, λ 0.01, the same z0, at batch 64 and 256.
#
#   bash bench/compare.sh            # 100 steps per run
#   STEPS=200 bash bench/compare.sh
#
# Installs JAX into bench/.venv on first use (bench/setup_jax.sh). Each
# batch size runs gevaldi, then JAX, then gevaldi and JAX again, and reports
# the better of the two runs of each (this machine's timings vary by ±15%).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"
Z0=target/bench-z0

bash bench/setup_jax.sh >/dev/null
cargo bench --bench search --no-run -q 2>/dev/null
mkdir -p "$Z0"

field() { # field NAME LINE
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

best() { # best LINE LINE: the line with more steps/s
  if awk -v a="$(field steps_per_s "$1")" -v b="$(field steps_per_s "$2")" 'BEGIN { exit !(a >= b) }'; then
    echo "$1"
  else
    echo "$2"
  fi
}

rows=()
for batch in 64 256; do
  runs=()
  for round in 1 2; do
    g=$(cargo bench -q --bench search -- --batch "$batch" --steps "$STEPS" --save-z0 "$Z0" | grep '^gevaldi')
    j=$(bench/.venv/bin/python bench/jax_reference.py --z0 "$Z0/z0-b$batch.safetensors" --steps "$STEPS" | grep '^jax')
    echo "$g"
    echo "$j"
    runs+=("$g" "$j")
  done
  g=$(best "${runs[0]}" "${runs[2]}")
  j=$(best "${runs[1]}" "${runs[3]}")
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
