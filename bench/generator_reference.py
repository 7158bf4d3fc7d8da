#!/usr/bin/env python3
"""PyTorch reference for benches/generator.rs: networks a user builds from
gevaldi's layer vocabulary (NetBuilder), with seeded random weights,
timed in eager fp32.

    python bench/generator_reference.py make --dir DIR
    python bench/generator_reference.py time --dir DIR [--batch N] [WORKLOAD ...]

Workloads (weights frozen: requires_grad False; batch norms in eval mode,
their running statistics those of a calibration batch):

  dcgan     PyTorch's DCGAN example generator (nz=100, ngf=64, nc=3, 64x64):
            ConvTranspose2d(100,512,4,1,0) BN ReLU, (512,256,4,2,1) BN ReLU,
            (256,128,4,2,1) BN ReLU, (128,64,4,2,1) BN ReLU, (64,3,4,2,1)
            Tanh, bias=False; forward + gradient w.r.t. z [B,100] of
            sum(image * r)
  upsample  the same widths with nearest x2 upsampling + 3x3 conv (padding
            1, bias=False) in place of each stride-2 transposed conv (the
            first layer as DCGAN's); forward + gradient w.r.t. z
  lenet5    LeNet-5 on [B,1,32,32]: conv 6@5x5 tanh, avg pool 2, conv
            16@5x5 tanh, avg pool 2, flatten, 120 tanh, 84 tanh, 10;
            forward + gradient w.r.t. x of sum(logits * r)
  mobilenet_v2
            torchvision's MobileNetV2 (width 1.0, 1000 classes) on
            [B,3,224,224]: depthwise 3x3 convs, batch norms, ReLU6,
            inverted residuals; forward + gradient w.r.t. x of
            sum(logits * r)
  shufflenet_v2
            torchvision's ShuffleNetV2 x1.0 on [B,3,224,224]: units that
            split the channels in halves (chunk), stride-2 units with two
            branches, depthwise 3x3 convs, channel shuffles; the same step
  inception_v3
            torchvision's Inception-v3 (aux_logits=False, init_weights=True,
            transform_input False) on [B,3,299,299]: BasicConv2d (conv
            without bias, batch norm eps 0.001, ReLU), InceptionA..E with
            their 1x7/7x1 and 1x3/3x1 convs and avg_pool2d(3, 1, 1)
            branches (count_include_pad, PyTorch's default), max pools;
            the same step
  vit_b_16  torchvision's ViT-B/16 on [B,3,224,224]: 16x16 patches, a class
            token, a position embedding, 12 pre-norm blocks of 12 heads
            (nn.MultiheadAttention) and an exact-GELU MLP; the same step.
            torchvision initialises the class token, the head and the
            attention's biases with zeros, which would leave the head's
            output 0 and its gradient 0, and the class token and the
            biases' split unchecked: they are drawn from N(0, 0.02) here
            (the head as nn.Linear's default), and the layer norms' weights
            and biases as 1 + N(0, 0.02) and N(0, 0.02)

`make` writes, under DIR: weights/<workload>.safetensors (PyTorch's state
dict), inputs.safetensors (z [8,100], x [8,1,32,32], r_img [8,3,64,64],
r_logits [8,10], image [8,3,224,224], r_1000 [8,1000], image299
[8,3,299,299]) and reference/<workload>.safetensors (PyTorch's output and
gradient at batch 8, which the Rust bench compares with). `time` prints one
line per workload, as bench/imagenet_reference.py does:

  pytorch workload=dcgan device=cpu batch=8 steps=5 seconds=1.234 steps_per_s=4.05
"""

import os
import resource

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from torch_bench import arguments, time_workload

BATCH = 8
NZ, NGF, NC = 100, 64, 3
WORKLOADS = ["dcgan", "upsample", "lenet5", "mobilenet_v2", "shufflenet_v2", "inception_v3", "vit_b_16"]
CLASSIFIERS = ["lenet5", "mobilenet_v2", "shufflenet_v2", "inception_v3", "vit_b_16"]


def seeded(name):
    """A seed per model name, the same on every run."""
    return sum(ord(ch) * 31**i for i, ch in enumerate(name)) % (2**31)


def dcgan():
    def block(cin, cout, k, s, p):
        return [nn.ConvTranspose2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

    return nn.Sequential(
        *block(NZ, NGF * 8, 4, 1, 0),
        *block(NGF * 8, NGF * 4, 4, 2, 1),
        *block(NGF * 4, NGF * 2, 4, 2, 1),
        *block(NGF * 2, NGF, 4, 2, 1),
        nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def upsample():
    def up(cin, cout, last=False):
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
        return layers + ([nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(True)])

    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(NGF * 8),
        nn.ReLU(True),
        *up(NGF * 8, NGF * 4),
        *up(NGF * 4, NGF * 2),
        *up(NGF * 2, NGF),
        *up(NGF, NC, last=True),
    )


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
    )


def mobilenet_v2():
    import torchvision

    return torchvision.models.mobilenet_v2(weights=None)


def shufflenet_v2():
    import torchvision

    return torchvision.models.shufflenet_v2_x1_0(weights=None)


def inception_v3():
    import torchvision

    return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)


def vit_b_16():
    import torchvision

    m = torchvision.models.vit_b_16(weights=None)
    # What torchvision sets to zeros (or ones), drawn (see the docstring).
    with torch.no_grad():
        m.class_token.normal_(0.0, 0.02)
        m.heads.head.reset_parameters()
        for mod in m.modules():
            if isinstance(mod, nn.MultiheadAttention):
                mod.in_proj_bias.normal_(0.0, 0.02)
                mod.out_proj.bias.normal_(0.0, 0.02)
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.normal_(1.0, 0.02)
                mod.bias.normal_(0.0, 0.02)
    return m


MAKERS = {
    "dcgan": dcgan,
    "upsample": upsample,
    "lenet5": lenet5,
    "mobilenet_v2": mobilenet_v2,
    "shufflenet_v2": shufflenet_v2,
    "inception_v3": inception_v3,
    "vit_b_16": vit_b_16,
}


def model(name):
    torch.manual_seed(seeded(name))
    m = MAKERS[name]()
    if name not in CLASSIFIERS:
        # DCGAN's weights_init: conv N(0, 0.02), batch norm weight N(1, 0.02).
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                    mod.weight.normal_(0.0, 0.02)
                elif isinstance(mod, nn.BatchNorm2d):
                    mod.weight.normal_(1.0, 0.02)
                    mod.bias.normal_(0.0, 0.02)
    return m


def calibrate(m, x):
    """Each batch norm's running statistics: those of the batch x."""
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()


def frozen(m):
    m = m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def inputs_for(name, inputs):
    """(input, output weights r) of a workload."""
    if name == "lenet5":
        return inputs["x"], inputs["r_logits"]
    if name == "inception_v3":
        return inputs["image299"], inputs["r_1000"]
    if name in CLASSIFIERS:
        return inputs["image"], inputs["r_1000"]
    return inputs["z"].reshape(-1, NZ, 1, 1), inputs["r_img"]


def step_fn(m, x0, r):
    def step(keep=False):
        x = x0.detach().requires_grad_(True)
        y = m(x)
        s = (y * r).sum()
        (g,) = torch.autograd.grad(s, x)
        if keep:
            return y.detach(), g
        return torch.stack([s.detach(), g.sum()]).tolist()

    return step


def make(d):
    os.makedirs(os.path.join(d, "weights"), exist_ok=True)
    os.makedirs(os.path.join(d, "reference"), exist_ok=True)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "z": torch.randn(BATCH, NZ, generator=g),
        "x": torch.randn(BATCH, 1, 32, 32, generator=g),
        "r_img": torch.randn(BATCH, NC, 64, 64, generator=g),
        "r_logits": torch.randn(BATCH, 10, generator=g),
    }
    # A calibration batch of its own for the batch norms.
    zc = torch.randn(64, NZ, 1, 1, generator=g)
    # Drawn after the others, which keep their values.
    inputs["image"] = torch.randn(BATCH, 3, 224, 224, generator=g)
    inputs["r_1000"] = torch.randn(BATCH, 1000, generator=g)
    images = torch.randn(16, 3, 224, 224, generator=g)
    inputs["image299"] = torch.randn(BATCH, 3, 299, 299, generator=g)
    images299 = torch.randn(16, 3, 299, 299, generator=g)
    save_file(inputs, os.path.join(d, "inputs.safetensors"))
    for name in WORKLOADS:
        m = model(name)
        if name in ("mobilenet_v2", "shufflenet_v2"):
            calibrate(m, images)
        elif name == "inception_v3":
            calibrate(m, images299)
        elif name not in CLASSIFIERS:
            calibrate(m, zc)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(d, "weights", f"{name}.safetensors"))
        x, r = inputs_for(name, inputs)
        y, grad = step_fn(frozen(m), x, r)(keep=True)
        if name not in CLASSIFIERS:
            grad = grad.reshape(BATCH, NZ)
        save_file({"out": y.contiguous(), "grad": grad.contiguous()}, os.path.join(d, "reference", f"{name}.safetensors"))


def repeat_rows(t, batch):
    return t[torch.arange(batch) % BATCH].contiguous()


def main():
    args = arguments(__doc__, WORKLOADS, BATCH)
    if args.mode == "make":
        make(args.dir)
        return
    names = args.names
    inputs = {k: repeat_rows(v, args.batch) for k, v in load_file(os.path.join(args.dir, "inputs.safetensors")).items()}
    for name in names:
        m = MAKERS[name]()
        m.load_state_dict(load_file(os.path.join(args.dir, "weights", f"{name}.safetensors")))
        step = step_fn(frozen(m), *inputs_for(name, inputs))
        n, seconds = time_workload(step, args)
        print(
            f"pytorch workload={name} device={args.device} batch={args.batch} steps={n} "
            f"seconds={seconds:.3f} steps_per_s={n / seconds:.3f} "
            f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} "
            f"torch={torch.__version__} threads={torch.get_num_threads()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
