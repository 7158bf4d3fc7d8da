"""The MDS search of benches/search.rs, in JAX (jit, XLA, CPU): the reference
gevaldi's speed is compared with (see bench/compare.sh).

Identical to gevaldi's search on the MNIST fixtures: the committed weights
(fixtures/mnist/{cnn_a,cnn_b,vae}.safetensors), the same architectures
(VAE decoder 8-256-256-784 with a sigmoid; CNNs conv3x3-relu-maxpool2 twice,
then two linear layers), the same objective per sample,
KL(p_cnn_a || p_cnn_b) + lambda * log N(z; 0, I) with log-probabilities
floored at -100, the same Adam ascent (beta1 0.9, beta2 0.999, eps 1e-8,
bias-corrected), and the same starting latents z0, read from the file the
Rust benchmark wrote. One jitted step computes the objective, its gradient
with respect to z and the update; the per-step figures gevaldi records
(mean divergence, dz) are computed too, so both do the same work.

Prints, per batch size, a line in the benchmark's format:
    jax batch=64 steps=100 seconds=5.31 steps_per_s=18.8 sample_steps_per_s=1205 mean_kl_before=... mean_kl_after=...
"""

import argparse
import math
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

LOG_PROB_FLOOR = -1e4  # gevaldi::divergence::LOG_PROB_FLOOR


def load(path):
    return {k: jnp.asarray(v) for k, v in load_file(path).items()}


def linear(p, name, x):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def conv3x3(p, name, x):
    y = jax.lax.conv_general_dilated(
        x,
        p[f"{name}.weight"],
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return y + p[f"{name}.bias"][None, :, None, None]


def max_pool2(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def cnn(p, x):
    x = max_pool2(jax.nn.relu(conv3x3(p, "conv1", x)))
    x = max_pool2(jax.nn.relu(conv3x3(p, "conv2", x)))
    x = jax.nn.relu(linear(p, "fc1", x.reshape(x.shape[0], -1)))
    return linear(p, "fc2", x)


def decode(p, z):
    h = jax.nn.relu(linear(p, "decoder.fc1", z))
    h = jax.nn.relu(linear(p, "decoder.fc2", h))
    return jax.nn.sigmoid(linear(p, "decoder.out", h)).reshape(z.shape[0], 1, 28, 28)


def log_probs(logits):
    return jnp.maximum(jax.nn.log_softmax(logits, axis=1), LOG_PROB_FLOOR)


def per_sample(params, z):
    """(objective, divergence) per sample."""
    vae, a, b, lam = params
    x = decode(vae, z)
    lp, lq = log_probs(cnn(a, x)), log_probs(cnn(b, x))
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), axis=1)
    d = z.shape[1]
    log_prior = -0.5 * jnp.sum(z * z, axis=1) - 0.5 * d * math.log(2 * math.pi)
    return kl + lam * log_prior, kl


def make_step(lr, beta1=0.9, beta2=0.999, eps=1e-8):
    def total(z, params):
        obj, kl = per_sample(params, z)
        return jnp.sum(obj), (obj, kl)

    grad_fn = jax.value_and_grad(total, has_aux=True)

    @jax.jit
    def step(z, z0, m, v, t, params):
        (_, (obj, kl)), g = grad_fn(z, params)
        dz = jnp.linalg.norm(z - z0, axis=1) / jnp.linalg.norm(z, axis=1)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        z = z + lr * m_hat / (jnp.sqrt(v_hat) + eps)
        return z, m, v, jnp.mean(obj), jnp.mean(kl), jnp.mean(dz)

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="fixtures/mnist")
    ap.add_argument("--z0", required=True, help="z0 file written by the Rust benchmark (safetensors, tensor `z0`)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--lam", type=float, default=0.01)
    args = ap.parse_args()

    f = args.fixtures
    params = (
        load(f"{f}/vae.safetensors"),
        load(f"{f}/cnn_a.safetensors"),
        load(f"{f}/cnn_b.safetensors"),
        args.lam,
    )
    z0 = jnp.asarray(load_file(args.z0)["z0"])
    batch = z0.shape[0]
    step = make_step(args.lr)
    # Compile (and warm up) outside the timing, as the Rust side loads its
    # models outside it.
    zero = jnp.zeros_like(z0)
    jax.block_until_ready(step(z0, z0, zero, zero, 1.0, params))

    _, kl0 = per_sample(params, z0)
    z, m, v = z0, zero, zero
    start = time.perf_counter()
    for t in range(1, args.steps + 1):
        z, m, v, mean_obj, mean_kl, mean_dz = step(z, z0, m, v, float(t), params)
        # gevaldi reads the per-step figures back every step; so does this.
        float(mean_obj), float(mean_kl), float(mean_dz)
    jax.block_until_ready(z)
    seconds = time.perf_counter() - start
    _, kl = per_sample(params, z)
    print(
        f"jax batch={batch} steps={args.steps} seconds={seconds:.3f} "
        f"steps_per_s={args.steps / seconds:.2f} sample_steps_per_s={batch * args.steps / seconds:.0f} "
        f"mean_kl_before={float(jnp.mean(kl0)):.4f} mean_kl_after={float(jnp.mean(kl)):.4f}"
    )


if __name__ == "__main__":
    main()
