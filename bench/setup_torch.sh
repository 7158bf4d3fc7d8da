#!/usr/bin/env bash
# Installs PyTorch, torchvision and pytorch-pretrained-biggan (with scipy,
# which it imports without declaring it; safetensors, numpy) into
# bench/.venv from PyPI, for bench/imagenet_reference.py. Idempotent: does nothing when they import.
#
# PyPI's Linux torch wheel is the CUDA build (about 5 GB with its nvidia-*
# wheels); it runs on the CPU as well, and the same venv then serves a GPU.
set -euo pipefail
cd "$(dirname "$0")"
check='import torch, torchvision, pytorch_pretrained_biggan, safetensors, numpy'
if [ -x .venv/bin/python ] && .venv/bin/python -c "$check" 2>/dev/null; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch torchvision pytorch-pretrained-biggan scipy safetensors numpy
.venv/bin/python -c "$check; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
