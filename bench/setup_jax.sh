#!/usr/bin/env bash
# Installs JAX for the CPU (and safetensors, numpy) into bench/.venv from
# PyPI, for bench/jax_reference.py. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "jax[cpu]" safetensors numpy
.venv/bin/python -c "import jax; print('jax', jax.__version__, jax.devices())"
