"""Holds gevaldi's search to PyTorch's autograd in float64, for every
divergence, on the committed MNIST fixtures (cnn_a vs cnn_b over the VAE):
the divergence per sample at z0 and the objective's gradient,
D + 0.01 log N(z; 0, I), which one SGD step of lr 1 makes z - z0.

    for e in auto generic candle; do
      GEVALDI_ENGINE=$e cargo bench --bench search -- --gradients target/gradients
    done
    bench/.venv/bin/python bench/check_gradients.py target/gradients

Prints one line per engine and divergence with the largest differences
relative to the largest value, and exits 1 above 1e-4 (f32 rounding is
about 1e-6; a wrong or missing gradient term is off by far more).
Needs PyTorch in bench/.venv (bench/setup_torch.sh).
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_mnist_reference import LOG_PROB_FLOOR, cnn, decode, load  # noqa: E402

TOLERANCE = 1e-4
LAMBDA = 0.01  # SearchConfig's default λ
JS_WEIGHTS = (0.25, 0.75)  # the bench's js weights 1 : 3, normalised


def divergence(name, lp, lq):
    p, q = lp.exp(), lq.exp()
    if name == "kl":
        return (p * (lp - lq)).sum(1)
    if name == "reverse-kl":
        return (q * (lq - lp)).sum(1)
    if name == "jeffreys":
        return ((p - q) * (lp - lq)).sum(1)
    if name == "tv":
        return 0.5 * (p - q).abs().sum(1)
    if name == "js":
        w1, w2 = JS_WEIGHTS
        log_mix = torch.log(w1 * p + w2 * q)
        return w1 * (p * (lp - log_mix)).sum(1) + w2 * (q * (lq - log_mix)).sum(1)
    raise SystemExit(f"unknown divergence {name}")


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mnist")
    a, b, vae = ({k: v.double() for k, v in load(os.path.join(root, f"{n}.safetensors")).items()}
                 for n in ("cnn_a", "cnn_b", "vae"))
    folder = sys.argv[1]
    worst = 0.0
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".json"):
            continue
        engine = file[:-5]
        for name, rec in json.load(open(os.path.join(folder, file))).items():
            z0 = torch.tensor(rec["z0"], dtype=torch.float64, requires_grad=True)
            x = decode(vae, z0)
            lp = torch.clamp(F.log_softmax(cnn(a, x), 1), min=LOG_PROB_FLOOR)
            lq = torch.clamp(F.log_softmax(cnn(b, x), 1), min=LOG_PROB_FLOOR)
            d = divergence(name, lp, lq)
            log_prior = -0.5 * (z0 * z0).sum(1) - 0.5 * z0.shape[1] * math.log(2 * math.pi)
            (d + LAMBDA * log_prior).sum().backward()
            ours = torch.tensor(rec["z"], dtype=torch.float64) - z0.detach()
            grad = (ours - z0.grad).abs().max().item() / z0.grad.abs().max().item()
            ours_d = torch.tensor(rec["divergence"], dtype=torch.float64)
            div = (ours_d - d.detach()).abs().max().item() / d.abs().max().item()
            worst = max(worst, grad, div)
            print(f"{engine:8s} {name:10s} divergence {div:.1e} gradient {grad:.1e}")
    print(f"largest relative difference {worst:.1e} (tolerance {TOLERANCE:.0e})")
    sys.exit(1 if not worst <= TOLERANCE else 0)


if __name__ == "__main__":
    main()
