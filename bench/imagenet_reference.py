#!/usr/bin/env python3
"""PyTorch reference for benches/imagenet.rs: the paper's ImageNet models
with seeded random weights of the real sizes, timed in eager fp32.

    python bench/imagenet_reference.py make --dir DIR
    python bench/imagenet_reference.py time --dir DIR [--device cpu|cuda] [WORKLOAD ...]

`make` writes, under DIR:

  weights/<name>.safetensors   state dicts in the tensor names gevaldi's zoo
                               loads (torchvision's; pytorch-pretrained-biggan's)
  inputs.safetensors           x [8,3,224,224], proj [1000], z [8,128],
                               c [8,1000] (one-hot), img_proj [8,3,128,128]
  reference/<workload>.safetensors
                               PyTorch's output and gradient on those inputs
                               (CPU, fp32), which the Rust bench compares with

`time` runs each workload (warm-up steps, then timed steps: at least
--min-steps, then more while under --budget-s seconds, at most --max-steps)
and prints one line each:

  pytorch workload=alexnet device=cpu batch=8 steps=5 seconds=1.234 steps_per_s=4.05

Workloads (batch 8, weights frozen: requires_grad False):

  <classifier>  forward + gradient w.r.t. the input of sum(logits @ proj)
                (alexnet googlenet squeezenet1_0 squeezenet1_1 resnet18
                resnet50 convnext_tiny)
  biggan        BigGAN-deep-128 forward (truncation 1) + gradient w.r.t. z
                of sum(image * img_proj)
  step          the paper's step: BigGAN -> gevaldi's ImageNet preprocessing
                (src/preprocess.rs: [-1, 1] -> [0, 1], bilinear resize to 224
                as two matrix products, mean/std) -> GoogLeNet and AlexNet ->
                log_softmax, clamped at -100 -> KL(googlenet || alexnet) per
                sample, summed -> gradient w.r.t. z

Each step ends with one read-back of two numbers (the scalar and the
gradient's sum), so a GPU step is finished when it is timed.

The weights are random but realistic in scale: batch norms carry the
statistics of a calibration batch (so no activation blows up or vanishes),
BigGAN's spectral norms carry converged power-iteration vectors and its
conditional batch norms the statistics of its own activations (all 51
truncation rows alike), ConvNeXt's layer scale is 0.1 (torchvision's 1e-6
would leave the blocks out of the comparison), and GoogLeNet has
torchvision's `transform_input=True`, as gevaldi's `googlenet` arch (and
torchvision's pretrained weights) expect.
"""

import math
import os
import resource
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from torch_bench import arguments, time_workload

BATCH = 8
CLASSIFIERS = [
    "alexnet",
    "googlenet",
    "squeezenet1_0",
    "squeezenet1_1",
    "resnet18",
    "resnet50",
    "convnext_tiny",
]
WORKLOADS = CLASSIFIERS + ["biggan", "step"]
TRUNCATION = 1.0
LOG_PROB_FLOOR = -1e4  # gevaldi::divergence::LOG_PROB_FLOOR


def seeded(name):
    """A seed per model name, the same on every run."""
    return sum(ord(ch) * 31**i for i, ch in enumerate(name)) % (2**31)


def classifier(name):
    import torchvision.models as tvm

    torch.manual_seed(seeded(name))
    if name == "googlenet":
        # gevaldi's `googlenet` arch runs torchvision's transform_input.
        model = tvm.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True)
    else:
        model = getattr(tvm, name)(weights=None)
    if name.startswith("convnext"):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("layer_scale"):
                    p.fill_(0.1)
    return model


def calibrate_batch_norms(model, x):
    """Sets each batch norm's running statistics to those of a batch."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def biggan_classes():
    """pytorch-pretrained-biggan's BigGAN and BigGANConfig. The package
    imports boto3 for downloads it never makes here: where boto3 is missing
    (the GPU machine, which carries the package's wheel alone), a stub
    stands in."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        import types

        exceptions = types.ModuleType("botocore.exceptions")
        exceptions.ClientError = Exception
        sys.modules.update(
            {
                "boto3": types.ModuleType("boto3"),
                "botocore": types.ModuleType("botocore"),
                "botocore.exceptions": exceptions,
            }
        )
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    return BigGAN, BigGANConfig


def biggan():
    BigGAN, BigGANConfig = biggan_classes()

    torch.manual_seed(seeded("biggan-deep-128"))
    model = BigGAN(BigGANConfig())  # the port's default: BigGAN-deep-128
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            # Power iteration to convergence, so that W / sigma is spectrally
            # normalised (random u, v would give a tiny sigma).
            if hasattr(m, "weight_orig"):
                w = m.weight_orig.reshape(m.weight_orig.shape[0], -1)
                u, v = m.weight_u, m.weight_v
                for _ in range(30):
                    v.copy_(F.normalize(w.t() @ u, dim=0, eps=1e-12))
                    u.copy_(F.normalize(w @ v, dim=0, eps=1e-12))
            if type(m).__name__ == "BigGANBatchNorm" and not m.conditional:
                m.weight.fill_(1.0)  # torch.Tensor(n): uninitialised in the port
                m.bias.fill_(0.0)
            if type(m).__name__ == "SelfAttn":
                m.gamma.fill_(0.5)  # 0 in the port: attention would be skipped
    return model


def calibrate_biggan(model, z, c):
    """Standing statistics: each batch norm gets the per-channel mean and
    (biased) variance of its input, in one forward pass, all truncation rows
    alike (as gevaldi's `BigGan::calibrate`)."""
    hooks = []

    def pre(m, args):
        x = args[0]
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        m.running_means.copy_(mean.expand_as(m.running_means))
        m.running_vars.copy_(var.expand_as(m.running_vars))

    for m in model.modules():
        if type(m).__name__ == "BigGANBatchNorm":
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(z, c, TRUNCATION)
    for h in hooks:
        h.remove()


def biggan_state_dict(model):
    """The state dict under gevaldi's names (the port's own)."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def resize_matrix(inp, out):
    """src/preprocess.rs `resize_matrix`: PyTorch's bilinear,
    align_corners=False, as an [out, in] matrix."""
    m = np.zeros((out, inp), dtype=np.float32)
    scale = inp / out
    for i in range(out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), inp - 1)
        i1 = min(i0 + 1, inp - 1)
        w1 = np.float32(src - i0)
        m[i, i0] += np.float32(1.0) - w1
        m[i, i1] += w1
    return torch.from_numpy(m)


class Preprocess:
    """src/preprocess.rs `Preprocess::imagenet((-1, 1), 224)`, step by step."""

    def __init__(self, side_in, side_out, device):
        self.rh = resize_matrix(side_in, side_out).to(device)
        self.rw_t = resize_matrix(side_in, side_out).t().contiguous().to(device)
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).reshape(1, 3, 1, 1)

    def __call__(self, x):
        lo, hi = -1.0, 1.0
        x = x * (1.0 / (hi - lo)) + (-lo / (hi - lo))
        x = torch.matmul(self.rh, torch.matmul(x, self.rw_t))
        return (x - self.mean) / self.std


def kl_sum(logits_p, logits_q):
    lp = F.log_softmax(logits_p, dim=1).clamp(min=LOG_PROB_FLOOR)
    lq = F.log_softmax(logits_q, dim=1).clamp(min=LOG_PROB_FLOOR)
    return (lp.exp() * (lp - lq)).sum(dim=-1)


def frozen(model, device):
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make(d):
    os.makedirs(os.path.join(d, "weights"), exist_ok=True)
    os.makedirs(os.path.join(d, "reference"), exist_ok=True)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "x": torch.randn(BATCH, 3, 224, 224, generator=g),
        "proj": torch.randn(1000, generator=g),
        # The truncated prior: standard normal within [-2, 2].
        "z": torch.randn(BATCH, 128, generator=g).clamp(-2.0, 2.0),
        "c": F.one_hot(torch.randint(0, 1000, (BATCH,), generator=g), 1000).float(),
        "img_proj": torch.randn(BATCH, 3, 128, 128, generator=g),
    }
    save_file(inputs, os.path.join(d, "inputs.safetensors"))
    models = {}
    for name in CLASSIFIERS:
        m = classifier(name)
        calibrate_batch_norms(m, inputs["x"])
        sd = {k: v.contiguous() for k, v in m.state_dict().items()}
        save_file(sd, os.path.join(d, "weights", f"{name}.safetensors"))
        models[name] = frozen(m, "cpu")
        print(f"made {name}: {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters", file=sys.stderr)
    g = biggan()
    calibrate_biggan(g, inputs["z"], inputs["c"])
    save_file(biggan_state_dict(g), os.path.join(d, "weights", "biggan-deep-128.safetensors"))
    models["biggan"] = frozen(g, "cpu")
    print(f"made biggan-deep-128: {sum(p.numel() for p in g.parameters()) / 1e6:.1f}M parameters", file=sys.stderr)
    work = workloads(models, inputs, "cpu")
    for name, step in work.items():
        out, grad = step(keep=True)
        save_file(
            {"out": out.detach().contiguous(), "grad": grad.contiguous()},
            os.path.join(d, "reference", f"{name}.safetensors"),
        )


def load_models(d, names, device):
    """The saved weights loaded back into fresh modules (so `time` measures
    exactly what `make` wrote)."""
    models = {}
    need = set()
    for n in names:
        need |= {"step": {"biggan", "googlenet", "alexnet"}}.get(n, {n})
    for n in need:
        if n == "biggan":
            BigGAN, BigGANConfig = biggan_classes()
            m = BigGAN(BigGANConfig())
            m.load_state_dict(load_file(os.path.join(d, "weights", "biggan-deep-128.safetensors")))
        else:
            m = classifier(n)
            m.load_state_dict(load_file(os.path.join(d, "weights", f"{n}.safetensors")))
        models[n] = frozen(m, device)
    return models


def workloads(models, inputs, device):
    """name -> step(keep) returning (output, gradient) when keep, else the
    two read-back numbers."""
    inputs = {k: v.to(device) for k, v in inputs.items()}
    out = {}

    def finish(scalar, out_value, grad, keep):
        if keep:
            return out_value, grad
        return torch.stack([scalar.detach(), grad.sum()]).tolist()

    for name in CLASSIFIERS:
        if name not in models:
            continue

        def step(keep=False, m=models[name]):
            x = inputs["x"].detach().requires_grad_(True)
            logits = m(x)
            s = (logits @ inputs["proj"]).sum()
            (g,) = torch.autograd.grad(s, x)
            return finish(s, logits, g, keep)

        out[name] = step
    if "biggan" in models:
        gen = models["biggan"]

        def step(keep=False):
            z = inputs["z"].detach().requires_grad_(True)
            img = gen(z, inputs["c"], TRUNCATION)
            s = (img * inputs["img_proj"]).sum()
            (g,) = torch.autograd.grad(s, z)
            return finish(s, img, g, keep)

        out["biggan"] = step
        if "googlenet" in models and "alexnet" in models:
            pre = Preprocess(128, 224, device)
            p, q = models["googlenet"], models["alexnet"]

            def step(keep=False):
                z = inputs["z"].detach().requires_grad_(True)
                x = pre(gen(z, inputs["c"], TRUNCATION))
                kl = kl_sum(p(x), q(x))
                s = kl.sum()
                (g,) = torch.autograd.grad(s, z)
                return finish(s, kl, g, keep)

            out["step"] = step
    return out


def repeat_rows(inputs, batch):
    """The batch inputs' rows repeated cyclically to `batch` rows."""
    rows = torch.arange(batch) % BATCH
    return {k: (v if k == "proj" else v[rows].contiguous()) for k, v in inputs.items()}


def main():
    args = arguments(__doc__, WORKLOADS, BATCH)
    # fp32 throughout: no TF32 on a GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.mode == "make":
        make(args.dir)
        return
    names = args.names
    device = torch.device(args.device)
    models = load_models(args.dir, names, device)
    inputs = repeat_rows(load_file(os.path.join(args.dir, "inputs.safetensors")), args.batch)
    work = workloads(models, inputs, device)
    for name in names:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        steps, seconds = time_workload(work[name], args)
        extra = ""
        if device.type == "cuda":
            extra = f" peak_gib={torch.cuda.max_memory_allocated() / 2**30:.2f}"
        # The process's peak resident memory (KiB on Linux), as gevaldi's bench prints it.
        extra += f" peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10}"
        print(
            f"pytorch workload={name} device={args.device} batch={args.batch} steps={steps} "
            f"seconds={seconds:.3f} steps_per_s={steps / seconds:.3f}{extra} "
            f"torch={torch.__version__} threads={torch.get_num_threads()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
