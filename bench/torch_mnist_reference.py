"""The MDS search of benches/search.rs in PyTorch eager (CPU, fp32): the
second reference gevaldi's MNIST speed is compared with (bench/compare.sh).

The same work as bench/jax_reference.py, line for line: the committed
fixtures (VAE decoder 8-256-256-784 with a sigmoid; CNNs conv3x3-relu-
maxpool2 twice, then two linear layers), the objective per sample
KL(p_cnn_a || p_cnn_b) + lambda * log N(z; 0, I) with log-probabilities
floored at -100, Adam (beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected),
the starting latents z0 the Rust benchmark wrote. The weights are frozen
(requires_grad False), so autograd computes the gradient with respect to z
only, as gevaldi does; the per-step figures (mean objective, mean
divergence, mean dz) are read back every step, as gevaldi does.
torch.set_num_threads(nproc) (or --threads).

Prints a line in the benchmark's format:
    pytorch batch=64 steps=100 seconds=5.31 steps_per_s=18.8 sample_steps_per_s=1205 mean_kl_before=... mean_kl_after=...
"""

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

LOG_PROB_FLOOR = -1e4  # gevaldi::divergence::LOG_PROB_FLOOR


def load(path):
    return {k: v.float() for k, v in load_file(path).items()}


def linear(p, name, x):
    return F.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])


def cnn(p, x):
    x = F.max_pool2d(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, p["conv2.weight"], p["conv2.bias"], padding=1)), 2)
    x = F.relu(linear(p, "fc1", x.flatten(1)))
    return linear(p, "fc2", x)


def decode(p, z):
    h = F.relu(linear(p, "decoder.fc1", z))
    h = F.relu(linear(p, "decoder.fc2", h))
    return torch.sigmoid(linear(p, "decoder.out", h)).reshape(z.shape[0], 1, 28, 28)


def log_probs(logits):
    return torch.clamp(F.log_softmax(logits, dim=1), min=LOG_PROB_FLOOR)


def per_sample(vae, a, b, lam, z):
    """(objective, divergence) per sample."""
    x = decode(vae, z)
    lp, lq = log_probs(cnn(a, x)), log_probs(cnn(b, x))
    kl = torch.sum(torch.exp(lp) * (lp - lq), dim=1)
    d = z.shape[1]
    log_prior = -0.5 * torch.sum(z * z, dim=1) - 0.5 * d * math.log(2 * math.pi)
    return kl + lam * log_prior, kl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="fixtures/mnist")
    ap.add_argument("--z0", required=True, help="z0 file written by the Rust benchmark (safetensors, tensor `z0`)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    f = args.fixtures
    vae, a, b = (load(f"{f}/{n}.safetensors") for n in ("vae", "cnn_a", "cnn_b"))
    z0 = load_file(args.z0)["z0"].float()
    batch = z0.shape[0]
    beta1, beta2, eps, lr, lam = 0.9, 0.999, 1e-8, args.lr, args.lam

    def step(z, m, v, t):
        z = z.detach().requires_grad_(True)
        obj, kl = per_sample(vae, a, b, lam, z)
        (g,) = torch.autograd.grad(obj.sum(), z)
        with torch.no_grad():
            dz = torch.linalg.norm(z - z0, dim=1) / torch.linalg.norm(z, dim=1)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat = m / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            z = z + lr * m_hat / (torch.sqrt(v_hat) + eps)
        return z.detach(), m, v, obj.mean().item(), kl.mean().item(), dz.mean().item()

    zero = torch.zeros_like(z0)
    # One warm-up step outside the timing, as the other two sides.
    step(z0, zero, zero, 1)
    with torch.no_grad():
        _, kl0 = per_sample(vae, a, b, lam, z0)
    z, m, v = z0, zero, zero
    start = time.perf_counter()
    for t in range(1, args.steps + 1):
        z, m, v, _, _, _ = step(z, m, v, t)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        _, kl = per_sample(vae, a, b, lam, z)
    print(
        f"pytorch batch={batch} steps={args.steps} seconds={seconds:.3f} "
        f"steps_per_s={args.steps / seconds:.2f} sample_steps_per_s={batch * args.steps / seconds:.0f} "
        f"mean_kl_before={float(kl0.mean()):.4f} mean_kl_after={float(kl.mean()):.4f} "
        f"torch={torch.__version__} threads={args.threads}"
    )


if __name__ == "__main__":
    main()
