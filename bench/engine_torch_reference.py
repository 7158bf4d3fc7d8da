"""gevaldi's engine vocabulary (`gevaldi::engine::NetBuilder`) against PyTorch
in float64: every op, on every engine path (the CPU kernels under `auto`,
the device-generic path, candle's ops), in f32 and f64, forward and the
input gradient of a random linear functional.

tests/random_nets.rs holds the three paths to each other and to candle's
ops, so an error shared with candle passes there; here the reference is
PyTorch (F.conv2d, F.conv_transpose2d, F.max_pool2d with ceil_mode,
F.avg_pool2d, F.adaptive_avg_pool2d, F.interpolate (nearest),
F.layer_norm, the exact F.gelu, F.leaky_relu, ...), on the same f32
weights and inputs read as float64 (LeakyReLU's slope, an f32 in
`Activation::LeakyRelu`, too). Convs with stride, padding, dilation,
groups and depthwise, non-square kernels and inputs, 1-pixel images,
batch 1, and with each setting differing across from down
(`Conv2dSettings`: Inception-v3's 1x7 and 7x1 with padding (0, 3) and
(3, 0), strides (2, 1), (1, 3), (3, 2), (2, 4), dilation (2, 1) and
(1, 2), grouped and depthwise, a 64-channel 3x3 with padding (1, 0), 1x1
strided or padded on one axis, and InceptionC's factorised 7x7 branch
with batch norms and ReLUs beside a 1x1 branch, concatenated); transposed convs with strides 1-4, output padding up to s - 1,
dilation 2-3, padding past the kernel's reach, kernels smaller than the
stride, 1-pixel inputs, Winograd-sized channels (16 -> 64, 3x3, s1 p1),
and with each setting differing across from down (`ConvTranspose2dSettings`:
strides (2, 1) and (1, 3), padding past the kernel's reach along one axis,
dilation (2, 1), a 1x4 kernel of stride (1, 2), a Winograd-sized one padded
(1, 0));
linear layers flat and per pixel; max-pools with padding, ceil mode and
ties; average pools with k != s, padding up to k/2, non-dividing sizes and
1x1 outputs; pools with their settings per axis (`Pool2dSettings`:
(3, 1) and (1, 3) max and average pools with padding along one axis,
dilated max-pools in ceil mode, ResNet-D's AvgPool2d(2, 2, ceil_mode=True,
count_include_pad=False) on odd sizes and in its shortcut, averages in
ceil mode whose last window hangs over the padding, with and without the
padding counted); adaptive pools to smaller, larger and non-dividing sizes;
upsampling by 1-4; LeakyReLU at slopes 0, 0.01, 0.2, 1.5 on inputs at 0
and up to 1e4; concat, add, reshape, flatten, LayerNorm (channels and
flat), affine, activations, SiLU, ReLU6/hardtanh, hardswish and
hardsigmoid (at their kinks exactly: PyTorch's subgradients there),
products and channel gates (a squeeze-and-excitation block), attention
over pixels (against F.scaled_dot_product_attention: self-attention at
three scales, one pixel, queries pooled, SAGAN's block); narrows and
concats along channels, rows and columns, channel shuffles (against
nn.ChannelShuffle) and constants repeated over the batch; and nets a user
builds: ShuffleNetV2's units, a two-block vision transformer (class
token, position embedding, two heads from narrowed channels), DCGAN generators
(linear -> reshape -> transposed convs, folded batch norms, tanh, to 32x32
and 64x64; the paper's from a 1x1 latent image), upsample -> conv blocks,
LeNet-5 with average pools, U-Net-like skips (a value read by an upsample
path and a concat or add), MobileNetV2's inverted residual and
MobileNetV3's block, affines, LayerNorms and activations before and after
them. f32 must agree within 2e-5 of the largest value, f64 within 1e-10;
223 nets, worst 3.1e-6 in f32 (the sigmoid's input gradient at |x| up to
100) and 2.2e-15 in f64 (2026-12-06, with per-axis pools and transposed
convs: the pools' 1.9e-7 and 2.1e-16, the transposed convs' 7.7e-7 and
1.7e-15, the same or below with GEVALDI_CUDA_OPS_ON_CPU=1; with 217 nets,
before the transposed convs, 9.6e-6 (the sigmoid's, under the
functionals the new cases redrew) and 3.8e-15; the 202 nets before the
pools, run alone on this build, 1.5e-6 and 2.2e-15 as before; with 202
nets, with per-axis convs, narrows, shuffles and constants: theirs 6.7e-7 and
4.4e-7; with 192 nets, before the narrows, 3.6e-6, the sigmoid's input
gradient at |x| up to 100; with 177 nets, before per-axis convs,
1.3e-5 in f32, the sigmoid's input gradient at |x| up to 100, under the
functionals the new cases redrew, attention's worst below it, and
2.2e-15 in f64; with 171 nets, before attention,
1.9e-6 and 2.4e-15; with 161 nets, before the hard activations, 3.3e-6
and 2.2e-15; with 154 nets, before
SiLU and products, 6.6e-6, the sigmoid's input gradient at |x| up to 100,
the transposed convs' worst 1.4e-6). The figures move with the random
functionals, which a new case redraws. PyTorch 2.15's float64 backward of
F.hardsigmoid takes 1/6 as a float32 (0.16666667163, 3e-8 off); the
reference here computes hardsigmoid itself (`hardsigmoid` below).

candle 0.11's own conv2d backward fails ("shape mismatch in add") for a
strided conv whose input's height and width leave different remainders
(README, "Which engine runs the models"); the `candle` path works around
it since 2026-12-06, and those 14 cases, listed as known failures until
then, are held to PyTorch as the others are.

Run (about a minute):
    cargo build --release --example net_spec
    bench/.venv/bin/python bench/engine_torch_reference.py [-v]
and with GEVALDI_CUDA_OPS_ON_CPU=1, the generic path running gevaldi's CUDA
ops' CPU twins (the max-pools' among them).
Exits 1 on any difference or error.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.manual_seed(0)
W = {}
cases = []


def T(name, *shape, scale=1.0):
    W[name] = (torch.randn(*shape, dtype=torch.float64) * scale).float()
    return name


class Case:
    def __init__(self, name, xshape, xgen=None):
        self.name = name
        self.nodes = []
        x = torch.randn(*xshape, dtype=torch.float64) if xgen is None else xgen(xshape)
        W[name + ".x"] = x.float()

    def add(self, op, inp, **kw):
        n = {"op": op, "in": inp if isinstance(inp, list) else [inp]}
        n.update(kw)
        self.nodes.append(n)
        return len(self.nodes)

    def done(self):
        cases.append(self)


def conv_node(c, i, name, cin, cout, kh, kw, stride=1, padding=0, dilation=1, groups=1, bias=True):
    w = T(f"{c.name}.{name}.w", cout, cin // groups, kh, kw, scale=1 / math.sqrt(cin // groups * kh * kw))
    b = T(f"{c.name}.{name}.b", cout) if bias else None
    return c.add("conv", i, w=w, b=b, stride=stride, padding=padding, dilation=dilation, groups=groups)


# --- convs
c = Case("conv_s2p1_nonsq_b1", (1, 3, 13, 9)); conv_node(c, 0, "c", 3, 5, 3, 3, 2, 1); c.done()
c = Case("conv_dil2_k3x5_s3", (2, 4, 17, 11)); conv_node(c, 0, "c", 4, 6, 3, 5, 3, 2, 2); c.done()
c = Case("conv_groups2_s2", (2, 4, 10, 7)); conv_node(c, 0, "c", 4, 6, 3, 3, 2, 1, 1, 2); c.done()
c = Case("conv_depthwise7", (2, 8, 9, 12)); conv_node(c, 0, "c", 8, 8, 7, 7, 1, 3, 1, 8); c.done()
c = Case("conv_depthwise_s2", (2, 8, 9, 12)); conv_node(c, 0, "c", 8, 8, 3, 3, 2, 1, 1, 8); c.done()
c = Case("conv_dw_mult2", (2, 4, 9, 6)); conv_node(c, 0, "c", 4, 8, 3, 3, 1, 1, 1, 4); c.done()
c = Case("conv_1px_1x1", (3, 5, 1, 1)); conv_node(c, 0, "c", 5, 4, 1, 1); c.done()
c = Case("conv_1px_3x3p1", (1, 5, 1, 1)); conv_node(c, 0, "c", 5, 4, 3, 3, 1, 1); c.done()
c = Case("conv_winograd64", (2, 64, 11, 13)); conv_node(c, 0, "c", 64, 16, 3, 3, 1, 1); c.done()
c = Case("conv_winograd64_p0", (1, 64, 9, 6)); conv_node(c, 0, "c", 64, 8, 3, 3, 1, 0, bias=False); c.done()
c = Case("conv_winograd64_1px", (1, 64, 1, 1)); conv_node(c, 0, "c", 64, 8, 3, 3, 1, 1); c.done()
c = Case("conv_1x1_s2", (2, 6, 7, 9)); conv_node(c, 0, "c", 6, 10, 1, 1, 2, 0); c.done()
c = Case("conv_11x11_s4_p2", (1, 3, 31, 29)); conv_node(c, 0, "c", 3, 4, 11, 11, 4, 2); c.done()
c = Case("conv_k1x7", (2, 3, 5, 12)); conv_node(c, 0, "c", 3, 4, 1, 7, 1, 3); c.done()
c = Case("conv_s2_dil2_g3", (2, 6, 15, 14)); conv_node(c, 0, "c", 6, 9, 3, 3, 2, 2, 2, 3); c.done()
# --- linear
c = Case("linear_flat", (3, 7)); c.add("linear", 0, w=T("linear_flat.w", 5, 7), b=T("linear_flat.b", 5)); c.done()
c = Case("linear_flat_nobias_b1", (1, 7)); c.add("linear", 0, w=T("lfn.w", 5, 7), b=None); c.done()
c = Case("linear_pixel", (2, 6, 3, 5)); c.add("linear", 0, w=T("linear_pixel.w", 4, 6), b=T("linear_pixel.b", 4)); c.done()
c = Case("linear_pixel_relu_conv", (2, 6, 4, 3)); n = c.add("linear", 0, w=T("lprc.w", 8, 6), b=T("lprc.b", 8)); n = c.add("relu", n); conv_node(c, n, "c", 8, 3, 3, 3, 1, 1); c.done()
c = Case("flatten_linear", (2, 3, 4, 5)); n = c.add("flatten", 0); c.add("linear", n, w=T("fl.w", 6, 60), b=T("fl.b", 6)); c.done()
c = Case("conv_flatten_linear_1px", (1, 3, 1, 1)); n = conv_node(c, 0, "c", 3, 4, 1, 1); n = c.add("flatten", n); c.add("linear", n, w=T("cfl.w", 2, 4), b=T("cfl.b", 2)); c.done()
# --- pools
for (h, w_, k, s, p, ceil) in [(13, 13, 3, 2, 0, True), (14, 11, 3, 2, 0, True), (7, 8, 3, 2, 1, False), (9, 10, 3, 2, 1, True), (5, 7, 2, 2, 0, False), (5, 7, 2, 2, 0, True), (6, 5, 3, 1, 1, False), (1, 1, 1, 1, 0, False), (1, 1, 3, 2, 1, True), (2, 3, 3, 2, 1, True), (10, 10, 4, 3, 2, True), (8, 8, 2, 2, 0, False)]:
    name = f"maxpool_{h}x{w_}_k{k}s{s}p{p}{'c' if ceil else ''}"
    c = Case(name, (2, 3, h, w_)); c.add("maxpool", 0, k=k, s=s, p=p, ceil=ceil); c.done()
# ties: quantised input
c = Case("maxpool_ties", (2, 2, 6, 7), xgen=lambda s: torch.randint(0, 3, s).double()); c.add("maxpool", 0, k=3, s=2, p=1, ceil=True); c.done()
c = Case("maxpool_ties_22", (2, 2, 6, 8), xgen=lambda s: torch.randint(0, 2, s).double()); c.add("maxpool", 0, k=2, s=2, p=0, ceil=False); c.done()
c = Case("maxpool_allneg_pad", (1, 2, 3, 3), xgen=lambda s: -1 - torch.rand(s, dtype=torch.float64)); c.add("maxpool", 0, k=3, s=2, p=1, ceil=True); c.done()
for (h, w_, oh, ow) in [(7, 5, 3, 2), (1, 1, 6, 6), (5, 3, 7, 4), (2, 3, 1, 1), (6, 6, 6, 6), (13, 13, 6, 6), (3, 3, 6, 6), (4, 9, 3, 5)]:
    c = Case(f"aap_{h}x{w_}_to_{oh}x{ow}", (2, 3, h, w_)); c.add("aap", 0, oh=oh, ow=ow); c.done()
# --- structure
c = Case("concat_add", (2, 4, 6, 5))
a = conv_node(c, 0, "a", 4, 3, 1, 1); bb = conv_node(c, 0, "b", 4, 2, 3, 3, 1, 1); cc = c.add("maxpool", 0, k=3, s=1, p=1)
cat = c.add("concat", [a, bb, cc]); d = conv_node(c, cat, "d", 9, 4, 1, 1); c.add("add", [d, 0]); c.done()
c = Case("concat_flat", (2, 5)); a = c.add("linear", 0, w=T("cf.a", 3, 5), b=None); bb = c.add("tanh", 0); c.add("concat", [a, bb, a]); c.done()
c = Case("reshape_flat_to_chw", (2, 12)); n = c.add("linear", 0, w=T("rf.w", 24, 12), b=T("rf.b", 24)); n = c.add("reshape", n, dims=[2, 3, 4]); conv_node(c, n, "c", 2, 3, 3, 3, 1, 1); c.done()
c = Case("reshape_chw_to_flat", (2, 2, 3, 4)); n = c.add("reshape", 0, dims=[24]); c.add("sigmoid", n); c.done()
c = Case("reshape_chw_to_chw", (2, 2, 3, 4)); n = c.add("reshape", 0, dims=[4, 6, 1]); conv_node(c, n, "c", 4, 2, 3, 1, 1, 1); c.done()
# --- norms, activations
c = Case("ln_channels", (2, 6, 3, 5)); c.add("ln", 0, w=T("lnc.w", 6), b=T("lnc.b", 6), eps=1e-6); c.done()
c = Case("ln_flat", (3, 7)); c.add("ln", 0, w=T("lnf.w", 7), b=T("lnf.b", 7), eps=1e-5); c.done()
c = Case("ln_after_dw", (2, 8, 5, 4)); n = conv_node(c, 0, "c", 8, 8, 7, 7, 1, 3, 1, 8); n = c.add("ln", n, w=T("lad.w", 8), b=T("lad.b", 8), eps=1e-6); n = c.add("linear", n, w=T("lad.l", 16, 8), b=T("lad.lb", 16)); n = c.add("gelu", n); c.add("linear", n, w=T("lad.l2", 8, 16), b=None); c.done()
c = Case("affine_conv", (2, 3, 5, 6)); n = conv_node(c, 0, "c", 3, 4, 3, 3, 1, 1, bias=False); n = c.add("affine", n, scale=T("ac.s", 4), shift=T("ac.t", 4)); c.add("relu", n); c.done()
c = Case("affine_flat", (2, 4)); c.add("affine", 0, scale=T("af.s", 4), shift=T("af.t", 4)); c.done()
c = Case("affine_first", (2, 3, 4, 4)); n = c.add("affine", 0, scale=T("a1.s", 3), shift=T("a1.t", 3)); conv_node(c, n, "c", 3, 4, 3, 3, 1, 1); c.done()
for act in ["relu", "sigmoid", "tanh", "gelu"]:
    c = Case(f"act_{act}", (2, 3, 4, 5), xgen=lambda s: torch.where(torch.rand(s) < 0.2, torch.zeros(s, dtype=torch.float64), 3 * torch.randn(s, dtype=torch.float64))); c.add(act, 0); c.done()
    c = Case(f"act_{act}_flat", (3, 6)); c.add(act, 0); c.done()
c = Case("act_big", (1, 8), xgen=lambda s: torch.tensor([[-100., -30, -10, -5, 5, 10, 30, 100]], dtype=torch.float64)); n = c.add("gelu", 0); c.done()
c = Case("act_big_sig", (1, 8), xgen=lambda s: torch.tensor([[-100., -30, -10, -5, 5, 10, 30, 100]], dtype=torch.float64)); n = c.add("sigmoid", 0); c.done()
c = Case("conv_relu_fused", (2, 3, 6, 6)); n = conv_node(c, 0, "c", 3, 5, 3, 3, 1, 1); n = c.add("relu", n); n = c.add("maxpool", n, k=2, s=2, p=0, ceil=False); n = conv_node(c, n, "d", 5, 4, 3, 3, 2, 1); n = c.add("sigmoid", n); n = c.add("aap", n, oh=1, ow=1); n = c.add("flatten", n); c.add("linear", n, w=T("crf.w", 3, 4), b=T("crf.b", 3)); c.done()
c = Case("conv_gelu_tanh", (2, 64, 6, 6)); n = conv_node(c, 0, "c", 64, 8, 3, 3, 1, 1); n = c.add("gelu", n); n = conv_node(c, n, "d", 8, 8, 1, 1); c.add("tanh", n); c.done()

c = Case("identity", (2, 3, 4, 4)); c.done()
c = Case("identity_flat", (2, 3)); c.done()
c = Case("add_self", (2, 3, 4, 4)); c.add("add", [0, 0]); c.done()
c = Case("concat_self", (2, 3, 4, 4)); c.add("concat", [0, 0]); c.done()
c = Case("relu_add_self", (2, 3, 4, 4)); n = c.add("relu", 0); c.add("add", [n, n]); c.done()
c = Case("conv_add_self_flat", (2, 5)); n = c.add("linear", 0, w=T("cas.w", 5, 5), b=None); n2 = c.add("add", [n, 0]); c.add("add", [n2, n]); c.done()
c = Case("maxpool_then_aap_up", (1, 2, 5, 5)); n = c.add("maxpool", 0, k=2, s=2, p=0, ceil=True); c.add("aap", n, oh=5, ow=7); c.done()
c = Case("affine_ln_flat_tail", (2, 4, 3, 3)); n = c.add("aap", 0, oh=1, ow=1); n = c.add("flatten", n); n = c.add("ln", n, w=T("alf.w", 4), b=T("alf.b", 4), eps=1e-5); c.add("affine", n, scale=T("alf.s", 4), shift=T("alf.t", 4)); c.done()
c = Case("ln4d_then_flatten", (2, 4, 1, 1)); n = c.add("ln", 0, w=T("l4f.w", 4), b=T("l4f.b", 4), eps=1e-6); n = c.add("flatten", n); c.add("linear", n, w=T("l4f.l", 3, 4), b=None); c.done()

# --- transposed convs (weight [Cin, Cout, kh, kw])
def convt_node(c, i, name, cin, cout, kh, kw, stride=1, padding=0, output_padding=0, dilation=1, bias=True):
    sh, sw = stride if isinstance(stride, list) else (stride, stride)
    w = T(f"{c.name}.{name}.w", cin, cout, kh, kw, scale=1 / math.sqrt(cin * kh * kw / max(sh * sw, 1)))
    b = T(f"{c.name}.{name}.b", cout) if bias else None
    return c.add("convT", i, w=w, b=b, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)


for (bsz, cin, cout, h, w_, kh, kw, s, p, op, d, bias) in [
    (2, 3, 4, 5, 6, 3, 3, 1, 0, 0, 1, True),
    (2, 3, 4, 5, 6, 3, 3, 1, 1, 0, 1, False),
    (2, 4, 3, 4, 4, 4, 4, 2, 1, 0, 1, True),      # DCGAN's
    (1, 4, 3, 4, 5, 4, 4, 2, 1, 1, 1, True),      # output padding
    (2, 3, 5, 3, 4, 3, 3, 2, 1, 1, 1, True),
    (2, 3, 2, 4, 3, 3, 3, 3, 0, 0, 1, True),
    (2, 3, 2, 4, 3, 3, 3, 3, 1, 2, 1, True),      # op = s - 1
    (1, 2, 3, 3, 5, 5, 5, 4, 2, 3, 1, True),
    (2, 2, 3, 5, 4, 2, 2, 4, 0, 0, 1, False),     # k < s: gaps
    (2, 3, 2, 6, 5, 3, 3, 1, 1, 0, 2, True),      # dilation 2
    (2, 3, 2, 5, 6, 3, 3, 2, 2, 1, 3, True),      # dilation 3, stride 2
    (1, 2, 2, 4, 4, 3, 2, 3, 1, 0, 3, True),      # dilation 3, non-square kernel
    (2, 3, 4, 4, 7, 1, 3, 2, 0, 1, 1, True),      # non-square kernel 1x3
    (2, 3, 4, 6, 3, 5, 2, 2, 1, 0, 1, True),
    (2, 4, 3, 5, 5, 3, 3, 2, 3, 0, 1, True),      # padding past the kernel's reach
    (1, 3, 2, 7, 6, 3, 3, 1, 3, 0, 1, True),      # padding > k - 1, stride 1
    (1, 2, 3, 6, 5, 2, 2, 3, 4, 2, 1, True),
    (1, 2, 2, 6, 6, 3, 3, 2, 5, 1, 2, True),      # dilated, padding past the reach
    (1, 5, 4, 1, 1, 4, 4, 1, 0, 0, 1, True),      # 1 pixel (DCGAN's first layer)
    (3, 5, 4, 1, 1, 3, 3, 2, 1, 1, 1, True),
    (1, 5, 4, 1, 1, 1, 1, 1, 0, 0, 1, True),      # 1x1, 1 pixel
    (2, 16, 64, 6, 7, 3, 3, 1, 1, 0, 1, True),    # Winograd-eligible
    (1, 16, 64, 5, 5, 3, 3, 1, 1, 0, 1, False),
    (1, 64, 16, 4, 6, 3, 3, 1, 1, 0, 1, True),
    (2, 64, 8, 1, 1, 3, 3, 1, 1, 0, 1, True),
    (2, 32, 32, 3, 3, 3, 3, 1, 0, 0, 1, True),
    (2, 6, 6, 5, 5, 1, 1, 1, 0, 0, 1, True),      # 1x1 stride 1 (a pointwise conv)
    (2, 3, 4, 4, 5, 1, 1, 3, 0, 2, 1, True),      # 1x1 strided: zero insertion
]:
    name = f"convT_b{bsz}_{cin}to{cout}_{h}x{w_}_k{kh}x{kw}s{s}p{p}op{op}d{d}{'' if bias else '_nobias'}"
    c = Case(name, (bsz, cin, h, w_)); convt_node(c, 0, "t", cin, cout, kh, kw, s, p, op, d, bias); c.done()
# --- average pools (count_include_pad, no ceil)
for (h, w_, k, s, p) in [(8, 8, 2, 2, 0), (7, 9, 2, 2, 0), (7, 9, 3, 2, 1), (9, 7, 3, 3, 1), (10, 11, 5, 2, 2), (6, 6, 4, 3, 2), (5, 5, 3, 1, 1), (1, 1, 1, 1, 0), (1, 1, 3, 2, 1), (2, 2, 2, 2, 1), (3, 3, 3, 3, 0), (3, 4, 3, 2, 1), (12, 5, 2, 3, 1), (6, 8, 3, 1, 0), (5, 5, 5, 5, 2)]:
    c = Case(f"avgpool_{h}x{w_}_k{k}s{s}p{p}", (2, 3, h, w_)); c.add("avgpool", 0, k=k, s=s, p=p); c.done()
# --- upsampling
for sc in [1, 2, 3, 4]:
    c = Case(f"upsample_x{sc}", (2, 3, 3, 5)); c.add("upsample", 0, scale=sc); c.done()
c = Case("upsample_1px_x4", (1, 2, 1, 1)); c.add("upsample", 0, scale=4); c.done()
# --- LeakyReLU
for sl in [0.0, 0.01, 0.2, 1.5]:
    c = Case(f"leaky_{sl}", (2, 3, 4, 5), xgen=lambda s: torch.where(torch.rand(s) < 0.25, torch.zeros(s, dtype=torch.float64), 3 * torch.randn(s, dtype=torch.float64))); c.add("leaky", 0, slope=sl); c.done()
    c = Case(f"leaky_{sl}_big_flat", (1, 9), xgen=lambda s: torch.tensor([[-1e4, -100., -30, -1e-3, 0, 1e-3, 30, 100, 1e4]], dtype=torch.float64)); c.add("leaky", 0, slope=sl); c.done()
c = Case("conv_leaky_fused", (2, 3, 6, 6)); n = conv_node(c, 0, "c", 3, 5, 3, 3, 1, 1); n = c.add("leaky", n, slope=0.2); conv_node(c, n, "d", 5, 4, 4, 4, 2, 1); c.done()
c = Case("convT_leaky_fused", (2, 4, 3, 3)); n = convt_node(c, 0, "t", 4, 5, 4, 4, 2, 1); n = c.add("leaky", n, slope=0.2); c.add("leaky", n, slope=0.0); c.done()


# --- composites a user builds
def dcgan(name, nz, ngf, nc, size, bsz, act_last="tanh", leaky=None):
    c = Case(name, (bsz, nz))
    n = c.add("linear", 0, w=T(f"{name}.fc.w", ngf * 8 * 16, nz, scale=1 / math.sqrt(nz)), b=T(f"{name}.fc.b", ngf * 8 * 16))
    n = c.add("reshape", n, dims=[ngf * 8, 4, 4])
    ch, hw, i = ngf * 8, 4, 0
    while hw * 2 < size:
        n = convt_node(c, n, f"t{i}", ch, ch // 2, 4, 4, 2, 1, bias=False)
        n = c.add("affine", n, scale=T(f"{name}.bn{i}.s", ch // 2, scale=0.3), shift=T(f"{name}.bn{i}.t", ch // 2, scale=0.1))
        n = c.add("relu", n) if leaky is None else c.add("leaky", n, slope=leaky)
        ch, hw, i = ch // 2, hw * 2, i + 1
    n = convt_node(c, n, "out", ch, nc, 4, 4, 2, 1, bias=False)
    c.add(act_last, n); c.done()


dcgan("dcgan_32", 100, 4, 3, 32, 2)
dcgan("dcgan_64_b1", 100, 4, 3, 64, 1)
dcgan("dcgan_32_leaky_grey", 16, 8, 1, 32, 3, leaky=0.2)
# the DCGAN paper's generator from a 1x1 latent image: convT 4x4 s1 p0 first
c = Case("dcgan_paper_1px", (2, 20, 1, 1)); n = convt_node(c, 0, "t0", 20, 32, 4, 4, 1, 0, bias=False); n = c.add("affine", n, scale=T("dp.s0", 32), shift=T("dp.t0", 32)); n = c.add("relu", n)
n = convt_node(c, n, "t1", 32, 16, 4, 4, 2, 1, bias=False); n = c.add("affine", n, scale=T("dp.s1", 16), shift=T("dp.t1", 16)); n = c.add("relu", n)
n = convt_node(c, n, "t2", 16, 3, 4, 4, 2, 1, bias=False); c.add("tanh", n); c.done()
# upsample -> conv blocks (a generator without transposed convs)
c = Case("upsample_conv_block", (2, 8, 4, 4)); n = c.add("upsample", 0, scale=2); n = conv_node(c, n, "c", 8, 6, 3, 3, 1, 1); n = c.add("affine", n, scale=T("ucb.s", 6), shift=T("ucb.t", 6)); n = c.add("leaky", n, slope=0.2)
n = c.add("upsample", n, scale=2); n = conv_node(c, n, "d", 6, 1, 3, 3, 1, 1); c.add("tanh", n); c.done()
c = Case("upsample_conv_winograd", (1, 16, 3, 4)); n = c.add("upsample", 0, scale=2); n = conv_node(c, n, "c", 16, 64, 3, 3, 1, 1); c.add("relu", n); c.done()
c = Case("linear_reshape_upsample3_conv", (2, 10)); n = c.add("linear", 0, w=T("lru.w", 4 * 3 * 3, 10), b=T("lru.b", 36)); n = c.add("reshape", n, dims=[4, 3, 3]); n = c.add("upsample", n, scale=3); n = conv_node(c, n, "c", 4, 2, 5, 5, 1, 2); c.add("sigmoid", n); c.done()
# LeNet-5 with average pools
c = Case("lenet_avgpool", (2, 1, 28, 28)); n = conv_node(c, 0, "c1", 1, 6, 5, 5, 1, 2); n = c.add("tanh", n); n = c.add("avgpool", n, k=2, s=2, p=0)
n = conv_node(c, n, "c2", 6, 16, 5, 5); n = c.add("tanh", n); n = c.add("avgpool", n, k=2, s=2, p=0); n = c.add("flatten", n)
n = c.add("linear", n, w=T("ln.f1", 120, 400, scale=0.05), b=T("ln.b1", 120)); n = c.add("tanh", n); n = c.add("linear", n, w=T("ln.f2", 84, 120, scale=0.1), b=T("ln.b2", 84)); n = c.add("tanh", n)
c.add("linear", n, w=T("ln.f3", 10, 84, scale=0.1), b=T("ln.b3", 10)); c.done()
c = Case("avgpool_overlap_conv", (2, 3, 11, 9)); n = c.add("avgpool", 0, k=3, s=2, p=1); n = conv_node(c, n, "c", 3, 4, 3, 3, 1, 1); n = c.add("avgpool", n, k=3, s=1, p=1); c.done()
# U-Net-like: a value read by an upsample path and by a concat / add
c = Case("unet_concat", (2, 3, 8, 8)); e1 = conv_node(c, 0, "e1", 3, 4, 3, 3, 1, 1); e1 = c.add("relu", e1); d = c.add("maxpool", e1, k=2, s=2, p=0)
e2 = conv_node(c, d, "e2", 4, 8, 3, 3, 1, 1); e2 = c.add("leaky", e2, slope=0.1); u = c.add("upsample", e2, scale=2); u = conv_node(c, u, "u", 8, 4, 3, 3, 1, 1)
cat = c.add("concat", [u, e1]); n = conv_node(c, cat, "o", 8, 2, 3, 3, 1, 1); c.done()
c = Case("unet_convT_add", (2, 4, 8, 8)); e1 = conv_node(c, 0, "e1", 4, 6, 3, 3, 1, 1); d = c.add("avgpool", e1, k=2, s=2, p=0); e2 = conv_node(c, d, "e2", 6, 8, 3, 3, 1, 1)
u = convt_node(c, e2, "up", 8, 6, 2, 2, 2, 0); s_ = c.add("add", [u, e1]); u2 = c.add("upsample", e2, scale=2); cat = c.add("concat", [s_, u2, e1]); conv_node(c, cat, "o", 20, 3, 1, 1); c.done()
c = Case("upsample_read_twice", (2, 3, 4, 4)); n = c.add("upsample", 0, scale=2); a = conv_node(c, n, "a", 3, 3, 3, 3, 1, 1); c.add("add", [a, n]); c.done()
c = Case("upsample_input_and_skip", (2, 3, 4, 4)); u = c.add("upsample", 0, scale=2); dd = c.add("avgpool", u, k=2, s=2, p=0); c.add("concat", [dd, 0, dd]); c.done()

# affines around the new ops (the CPU engine folds an affine into the conv
# or linear layer before it, never into a transposed conv or a pool)
c = Case("affine_then_convT", (2, 3, 4, 5)); n = c.add("affine", 0, scale=T("atc.s", 3), shift=T("atc.t", 3)); convt_node(c, n, "t", 3, 4, 3, 3, 2, 1, 1); c.done()
c = Case("convT_bias_affine_leaky", (2, 3, 4, 4)); n = convt_node(c, 0, "t", 3, 4, 4, 4, 2, 1); n = c.add("affine", n, scale=T("cbal.s", 4), shift=T("cbal.t", 4)); c.add("leaky", n, slope=0.1); c.done()
c = Case("affine_then_avgpool_pad", (2, 3, 7, 6)); n = c.add("affine", 0, scale=T("aap2.s", 3), shift=T("aap2.t", 3)); c.add("avgpool", n, k=3, s=2, p=1); c.done()
c = Case("conv_affine_avgpool_affine", (2, 3, 8, 8)); n = conv_node(c, 0, "c", 3, 4, 3, 3, 1, 1); n = c.add("affine", n, scale=T("caaa.s", 4), shift=T("caaa.t", 4)); n = c.add("avgpool", n, k=2, s=2, p=1); c.add("affine", n, scale=T("caaa.s2", 4), shift=T("caaa.t2", 4)); c.done()
c = Case("upsample_affine_relu", (2, 3, 3, 4)); n = c.add("upsample", 0, scale=3); n = c.add("affine", n, scale=T("uar.s", 3), shift=T("uar.t", 3)); c.add("relu", n); c.done()
c = Case("convT_two_readers", (2, 3, 4, 4)); t = convt_node(c, 0, "t", 3, 4, 4, 4, 2, 1); a = c.add("leaky", t, slope=0.3); bb = c.add("affine", t, scale=T("ctr.s", 4), shift=T("ctr.t", 4)); c.add("add", [a, bb]); c.done()
# --- SiLU, products and channel gates (squeeze and excitation)
c = Case("act_silu", (2, 3, 4, 5), xgen=lambda s: torch.where(torch.rand(s) < 0.2, torch.zeros(s, dtype=torch.float64), 3 * torch.randn(s, dtype=torch.float64))); c.add("silu", 0); c.done()
c = Case("act_silu_big_flat", (1, 9), xgen=lambda s: torch.tensor([[-1e4, -100., -30, -1e-3, 0, 1e-3, 30, 100, 1e4]], dtype=torch.float64)); c.add("silu", 0); c.done()
c = Case("conv_silu_linear_silu", (2, 3, 5, 4)); n = conv_node(c, 0, "c", 3, 4, 3, 3, 1, 1); n = c.add("silu", n); n = c.add("linear", n, w=T("csl.w", 2, 4), b=T("csl.b", 2)); c.add("silu", n); c.done()
c = Case("mul_self", (2, 3, 4, 5)); c.add("mul", [0, 0]); c.done()
c = Case("mul_flat", (3, 6)); n = c.add("linear", 0, w=T("mf.w", 4, 6), b=None); t = c.add("tanh", n); c.add("mul", [t, n]); c.done()
c = Case("mul_gate_1px", (2, 4, 1, 1)); g = c.add("sigmoid", 0); c.add("mul", [0, g]); c.done()
c = Case("se_block", (2, 3, 7, 6)); h = conv_node(c, 0, "c", 3, 8, 3, 3, 1, 1); h = c.add("affine", h, scale=T("se.s", 8), shift=T("se.t", 8)); h = c.add("silu", h); dw = conv_node(c, h, "dw", 8, 8, 3, 3, 2, 1, 1, 8); dw = c.add("silu", dw)
sq = c.add("aap", dw, oh=1, ow=1); sq = conv_node(c, sq, "r", 8, 2, 1, 1); sq = c.add("silu", sq); sq = conv_node(c, sq, "e", 2, 8, 1, 1); sq = c.add("sigmoid", sq); n = c.add("mul", [dw, sq]); n = conv_node(c, n, "p", 8, 3, 1, 1, bias=False); c.done()
# --- hard activations (MobileNetV2's ReLU6, MobileNetV3's hardswish and gate): their kinks, exactly, and beside them
kinks = lambda s: torch.cat([torch.tensor([-1e4, -6, -3.0000002, -3, -2.9999998, -1e-3, 0, 1e-3, 0.5, 2.9999998, 3, 3.0000002, 5.9999995, 6, 6.0000005, 1e4], dtype=torch.float64), 5 * torch.randn(s[0] * s[1] * s[2] * s[3] - 16, dtype=torch.float64)]).reshape(s)
for act in ["hardswish", "hardsigmoid"]:
    c = Case(f"act_{act}", (2, 3, 4, 5), xgen=kinks); c.add(act, 0); c.done()
for (lo, hi) in [(0.0, 6.0), (-1.0, 1.0), (-0.5, 2.25), (-3.0, 3.0)]:
    c = Case(f"act_hardtanh_{lo}_{hi}", (2, 3, 4, 5), xgen=kinks); c.add("hardtanh", 0, min=lo, max=hi); c.done()
c = Case("conv_relu6_fused", (2, 3, 6, 6)); n = conv_node(c, 0, "c", 3, 5, 3, 3, 1, 1); n = c.add("hardtanh", n, min=0.0, max=6.0); c.add("linear", n, w=T("cr6.w", 2, 5), b=T("cr6.b", 2)); c.done()
c = Case("linear_hardswish_hardsigmoid", (3, 7)); n = c.add("linear", 0, w=T("lhh.w", 6, 7), b=T("lhh.b", 6)); n = c.add("hardswish", n); n = c.add("linear", n, w=T("lhh.v", 4, 6), b=None); c.add("hardsigmoid", n); c.done()
# MobileNetV2's inverted residual (expand 1x1, BN, ReLU6, depthwise 3x3, BN, ReLU6, project 1x1, BN, + input)
c = Case("mobilenet_v2_block", (2, 8, 7, 9)); h = conv_node(c, 0, "e", 8, 24, 1, 1, bias=False); h = c.add("affine", h, scale=T("mb2.s1", 24), shift=T("mb2.t1", 24)); h = c.add("hardtanh", h, min=0.0, max=6.0)
h = conv_node(c, h, "dw", 24, 24, 3, 3, 1, 1, 1, 24, bias=False); h = c.add("affine", h, scale=T("mb2.s2", 24), shift=T("mb2.t2", 24)); h = c.add("hardtanh", h, min=0.0, max=6.0)
h = conv_node(c, h, "p", 24, 8, 1, 1, bias=False); h = c.add("affine", h, scale=T("mb2.s3", 8), shift=T("mb2.t3", 8)); c.add("add", [h, 0]); c.done()
# MobileNetV3's block (hardswish, a strided depthwise conv, a squeeze-and-excitation gate through hardsigmoid)
c = Case("mobilenet_v3_block", (2, 6, 9, 8)); h = conv_node(c, 0, "e", 6, 16, 1, 1, bias=False); h = c.add("affine", h, scale=T("mb3.s1", 16), shift=T("mb3.t1", 16)); h = c.add("hardswish", h)
h = conv_node(c, h, "dw", 16, 16, 5, 5, 2, 2, 1, 16, bias=False); h = c.add("affine", h, scale=T("mb3.s2", 16), shift=T("mb3.t2", 16)); h = c.add("hardswish", h)
sq = c.add("aap", h, oh=1, ow=1); sq = conv_node(c, sq, "r", 16, 8, 1, 1); sq = c.add("relu", sq); sq = conv_node(c, sq, "x", 8, 16, 1, 1); sq = c.add("hardsigmoid", sq); h = c.add("mul", [h, sq])
h = conv_node(c, h, "p", 16, 6, 1, 1, bias=False); c.add("affine", h, scale=T("mb3.s3", 6), shift=T("mb3.t3", 6)); c.done()
# --- attention over pixels: self-attention, scales, keys and values pooled to fewer pixels (SAGAN's block), one pixel, queries of another size
for sc in [1.0, 0.5, 0.125]:
    c = Case(f"attention_self_{sc}", (2, 4, 3, 5)); c.add("attention", [0, 0, 0], scale=sc); c.done()
c = Case("attention_1px", (3, 2, 1, 1)); c.add("attention", [0, 0, 0], scale=1.0); c.done()
c = Case("sagan_block", (2, 8, 6, 4)); q = conv_node(c, 0, "q", 8, 2, 1, 1, bias=False); k = conv_node(c, 0, "k", 8, 2, 1, 1, bias=False); k = c.add("maxpool", k, k=2, s=2, p=0)
v = conv_node(c, 0, "v", 8, 4, 1, 1, bias=False); v = c.add("maxpool", v, k=2, s=2, p=0); o = c.add("attention", [q, k, v], scale=1.0); o = conv_node(c, o, "o", 4, 8, 1, 1, bias=False); c.add("add", [o, 0]); c.done()
c = Case("attention_queries_pooled", (2, 3, 4, 6)); qq = c.add("avgpool", 0, k=2, s=2, p=0); c.add("attention", [qq, 0, 0], scale=0.7); c.done()
c = Case("ln_then_convT", (2, 6, 3, 3)); n = c.add("ln", 0, w=T("lct.w", 6), b=T("lct.b", 6), eps=1e-6); convt_node(c, n, "t", 6, 4, 3, 3, 2, 0); c.done()
# --- narrow (chunks) and channel shuffles: torchvision's ShuffleNetV2 units,
# heads of a multi-head attention, flat values
c = Case("shufflenet_unit", (2, 8, 6, 5)); x1 = c.add("narrow", 0, dim=1, start=0, len=4); x2 = c.add("narrow", 0, dim=1, start=4, len=4)
n = conv_node(c, x2, "a", 4, 4, 1, 1, bias=False); n = c.add("affine", n, scale=T("su.s0", 4), shift=T("su.t0", 4)); n = c.add("relu", n)
n = conv_node(c, n, "dw", 4, 4, 3, 3, 1, 1, 1, 4, bias=False); n = c.add("affine", n, scale=T("su.s1", 4), shift=T("su.t1", 4))
n = conv_node(c, n, "b", 4, 4, 1, 1, bias=False); n = c.add("affine", n, scale=T("su.s2", 4), shift=T("su.t2", 4)); n = c.add("relu", n)
n = c.add("concat", [x1, n]); c.add("shuffle", n, groups=2); c.done()
c = Case("shufflenet_down", (2, 6, 7, 8)); a = conv_node(c, 0, "dw1", 6, 6, 3, 3, 2, 1, 1, 6, bias=False); a = c.add("affine", a, scale=T("sd.s0", 6), shift=T("sd.t0", 6))
a = conv_node(c, a, "p1", 6, 6, 1, 1, bias=False); a = c.add("relu", a)
bb = conv_node(c, 0, "p2", 6, 6, 1, 1); bb = c.add("relu", bb); bb = conv_node(c, bb, "dw2", 6, 6, 3, 3, 2, 1, 1, 6); bb = conv_node(c, bb, "p3", 6, 6, 1, 1); bb = c.add("relu", bb)
n = c.add("concat", [a, bb]); n = c.add("shuffle", n, groups=2); n = c.add("narrow", n, dim=1, start=3, len=6); c.add("shuffle", n, groups=3); c.done()
c = Case("narrow_flat_shuffle3", (3, 12)); n = c.add("narrow", 0, dim=1, start=2, len=9); n = c.add("shuffle", n, groups=3); c.add("linear", n, w=T("nfs.w", 4, 9), b=None); c.done()
c = Case("narrow_relu_narrow", (2, 7, 3, 4)); n = conv_node(c, 0, "c", 7, 9, 3, 3, 1, 1); n = c.add("narrow", n, dim=1, start=1, len=7); n = c.add("relu", n); n = c.add("narrow", n, dim=1, start=6, len=1); c.add("add", [n, n]); c.done()
c = Case("narrow_whole_shuffle_1_and_c", (2, 6, 2, 3)); n = c.add("narrow", 0, dim=1, start=0, len=6); n = c.add("shuffle", n, groups=1); n = c.add("shuffle", n, groups=6); c.add("sigmoid", n); c.done()
c = Case("shuffle_read_twice", (2, 6, 3, 3)); n = c.add("shuffle", 0, groups=3); a = c.add("narrow", n, dim=1, start=0, len=2); bb = c.add("narrow", n, dim=1, start=2, len=2); c.add("concat", [bb, a, n]); c.done()
c = Case("two_head_attention", (2, 8, 4, 3)); q = conv_node(c, 0, "q", 8, 8, 1, 1); k = conv_node(c, 0, "k", 8, 8, 1, 1); v = conv_node(c, 0, "v", 8, 8, 1, 1)
heads = [c.add("attention", [c.add("narrow", t0, dim=1, start=h, len=4) for t0 in (q, k, v)], scale=0.5) for h in (0, 4)]
n = c.add("concat", heads); n = conv_node(c, n, "o", 8, 8, 1, 1); c.add("add", [n, 0]); c.done()
# --- joins and narrows along rows and columns, constants repeated over the
# batch: a small vision transformer (patches as the rows of [B, D, N, 1], a
# class token in front, a position embedding, two pre-norm blocks of two
# heads, the class token's row to the head), and rows/columns cut and joined
c = Case("vit_two_blocks", (2, 3, 8, 8)); D = 16
n = conv_node(c, 0, "patch", 3, D, 4, 4, 4, 0); n = c.add("reshape", n, dims=[D, 4, 1])
cls = c.add("constant", 0, value=T("vit.cls", 1, D, 1, 1)); n = c.add("concat_dim", [cls, n], dim=2)
pos = c.add("constant", 0, value=T("vit.pos", 1, D, 5, 1, scale=0.1)); n = c.add("add", [n, pos])
for blk in range(2):
    p = f"vit.b{blk}."
    h = c.add("ln", n, w=T(p + "ln1.w", D), b=T(p + "ln1.b", D), eps=1e-6)
    qkv = [c.add("linear", h, w=T(p + t + ".w", D, D, scale=D ** -0.5), b=T(p + t + ".b", D, scale=0.1)) for t in "qkv"]
    heads = [c.add("attention", [c.add("narrow", t0, dim=1, start=hd * 8, len=8) for t0 in qkv], scale=8 ** -0.5) for hd in (0, 1)]
    h = c.add("concat", heads); h = c.add("linear", h, w=T(p + "o.w", D, D, scale=D ** -0.5), b=T(p + "o.b", D, scale=0.1)); n = c.add("add", [n, h])
    h = c.add("ln", n, w=T(p + "ln2.w", D), b=T(p + "ln2.b", D), eps=1e-6); h = c.add("linear", h, w=T(p + "m1.w", 2 * D, D, scale=D ** -0.5), b=T(p + "m1.b", 2 * D, scale=0.1))
    h = c.add("gelu", h); h = c.add("linear", h, w=T(p + "m2.w", D, 2 * D, scale=(2 * D) ** -0.5), b=T(p + "m2.b", D, scale=0.1)); n = c.add("add", [n, h])
n = c.add("ln", n, w=T("vit.ln.w", D), b=T("vit.ln.b", D), eps=1e-6); n = c.add("narrow", n, dim=2, start=0, len=1); n = c.add("flatten", n)
c.add("linear", n, w=T("vit.head.w", 10, D, scale=D ** -0.5), b=T("vit.head.b", 10)); c.done()
c = Case("rows_cols_cut_and_joined", (2, 3, 5, 6)); a = c.add("narrow", 0, dim=2, start=1, len=3); bb = c.add("narrow", 0, dim=2, start=0, len=2)
n = c.add("concat_dim", [a, bb, 0], dim=2); l = c.add("narrow", n, dim=3, start=4, len=2); r = c.add("narrow", n, dim=3, start=0, len=3)
n = c.add("concat_dim", [l, r, l], dim=3); n = conv_node(c, n, "c", 3, 4, 3, 3, 1, 1); c.add("relu", n); c.done()
c = Case("constant_flat", (3, 5)); k = c.add("constant", 0, value=T("cflat.k", 1, 2)); n = c.add("concat", [k, 0, k]); c.add("linear", n, w=T("cflat.w", 4, 9), b=None); c.done()
# --- convs whose settings differ across from down (PyTorch's Conv2d(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))),
# drawn after every other case so that theirs stay as they were: Inception-v3's 1x7 and 7x1 with padding (0, 3) and (3, 0),
# strides (2, 1) and (1, 3), dilation (2, 1), grouped and depthwise ones, a 3x3 with 64 channels in (Winograd's shape but
# for its padding (1, 0)), 1x1 strided or padded along one axis, odd sizes, batch 1
c = Case("conv_axes_1x7_p03", (2, 3, 7, 9)); conv_node(c, 0, "c", 3, 4, 1, 7, 1, [0, 3]); c.done()
c = Case("conv_axes_7x1_p30", (2, 3, 9, 7)); conv_node(c, 0, "c", 3, 4, 7, 1, 1, [3, 0]); c.done()
c = Case("conv_axes_s21", (2, 4, 9, 8)); conv_node(c, 0, "c", 4, 5, 3, 3, [2, 1], 1); c.done()
c = Case("conv_axes_s13_d21", (1, 4, 11, 13)); conv_node(c, 0, "c", 4, 5, 3, 3, [1, 3], [2, 0], [2, 1]); c.done()
c = Case("conv_axes_s32_d12", (1, 2, 10, 15)); conv_node(c, 0, "c", 2, 3, 2, 3, [3, 2], [2, 0], [1, 2]); c.done()
c = Case("conv_axes_s24_d2", (2, 3, 11, 17)); conv_node(c, 0, "c", 3, 4, 3, 3, [2, 4], [1, 2], 2); c.done()
c = Case("conv_axes_g2_3x1_s12", (2, 4, 7, 8)); conv_node(c, 0, "c", 4, 6, 3, 1, [1, 2], [1, 0], 1, 2); c.done()
c = Case("conv_axes_1x1_s12", (1, 4, 5, 7)); conv_node(c, 0, "c", 4, 6, 1, 1, [1, 2]); c.done()
c = Case("conv_axes_1x1_p01", (2, 4, 4, 5)); conv_node(c, 0, "c", 4, 6, 1, 1, 1, [0, 1]); c.done()
c = Case("conv_axes_winograd64_p10", (1, 64, 6, 7)); conv_node(c, 0, "c", 64, 16, 3, 3, 1, [1, 0]); c.done()
c = Case("conv_axes_dw_3x5_s21_d12", (2, 6, 9, 11)); conv_node(c, 0, "c", 6, 6, 3, 5, [2, 1], [1, 2], [1, 2], 6); c.done()
c = Case("conv_axes_dw32_1x7_d12", (1, 32, 6, 17)); conv_node(c, 0, "c", 32, 32, 1, 7, 1, [0, 3], [1, 2], 32); c.done()
c = Case("conv_axes_dw16_7x1", (2, 16, 9, 6)); conv_node(c, 0, "c", 16, 16, 7, 1, 1, [3, 0], 1, 16); c.done()
c = Case("conv_axes_dw6_1x3_p11", (1, 6, 5, 6)); conv_node(c, 0, "c", 6, 6, 1, 3, 1, [1, 1], 1, 6); c.done()
# Inception-v3's factorised 7x7 (InceptionC's branch: 1x1, 1x7, 7x1, each with a batch norm and ReLU) beside a 1x1 branch, concatenated
c = Case("inception_c_branches", (2, 8, 9, 9))
a = conv_node(c, 0, "a1", 8, 6, 1, 1, bias=False); a = c.add("affine", a, scale=T("icb.s1", 6), shift=T("icb.t1", 6)); a = c.add("relu", a)
a = conv_node(c, a, "a2", 6, 6, 1, 7, 1, [0, 3], bias=False); a = c.add("affine", a, scale=T("icb.s2", 6), shift=T("icb.t2", 6)); a = c.add("relu", a)
a = conv_node(c, a, "a3", 6, 5, 7, 1, 1, [3, 0], bias=False); a = c.add("affine", a, scale=T("icb.s3", 5), shift=T("icb.t3", 5)); a = c.add("relu", a)
bb = conv_node(c, 0, "b1", 8, 4, 1, 1, bias=False); bb = c.add("affine", bb, scale=T("icb.s4", 4), shift=T("icb.t4", 4)); bb = c.add("relu", bb)
c.add("concat", [a, bb]); c.done()
# --- pools whose settings differ across from down, dilated, in ceil mode, or not counting the padding (PyTorch's
# MaxPool2d(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), ceil_mode) and AvgPool2d(...,
# ceil_mode, count_include_pad)), drawn after every other case: ResNet-D's shortcut AvgPool2d(2, 2, ceil_mode=True,
# count_include_pad=False) on odd sizes (the last window one wide) and its block; (3, 1) and (1, 3) pools with padding
# along one axis; a dilated max-pool in ceil mode; averages in ceil mode counting the padding where the last window
# hangs over it (divided by the window clipped to input + padding); ties in a per-axis max-pool
c = Case("avgpool_resnet_d_7x9", (2, 3, 7, 9)); c.add("avgpool", 0, k=2, s=2, p=0, ceil=True, cip=False); c.done()
c = Case("avgpool_resnet_d_5x5_b1", (1, 4, 5, 5)); c.add("avgpool", 0, k=2, s=2, ceil=True, cip=False); c.done()
c = Case("resnet_d_shortcut", (2, 4, 9, 7)); a = conv_node(c, 0, "a", 4, 6, 3, 3, 2, 1); s = c.add("avgpool", 0, k=2, s=2, ceil=True, cip=False); s = conv_node(c, s, "s", 4, 6, 1, 1, bias=False); c.add("add", [a, s]); c.done()
c = Case("maxpool_3x1_s21_p10", (2, 3, 9, 6)); c.add("maxpool", 0, k=[3, 1], s=[2, 1], p=[1, 0]); c.done()
c = Case("maxpool_1x3_s12_p01_ceil", (2, 3, 5, 8)); c.add("maxpool", 0, k=[1, 3], s=[1, 2], p=[0, 1], ceil=True); c.done()
c = Case("avgpool_3x1_s21_p10", (2, 3, 9, 6)); c.add("avgpool", 0, k=[3, 1], s=[2, 1], p=[1, 0]); c.done()
c = Case("avgpool_1x3_p01_nocip_ceil", (2, 3, 5, 8)); c.add("avgpool", 0, k=[1, 3], s=[1, 2], p=[0, 1], ceil=True, cip=False); c.done()
c = Case("avgpool_1x2", (2, 3, 4, 7)); c.add("avgpool", 0, k=[1, 2]); c.done()
c = Case("maxpool_dil2_ceil", (2, 3, 10, 9)); c.add("maxpool", 0, k=3, s=2, p=1, d=2, ceil=True); c.done()
c = Case("maxpool_dil31_2x3", (1, 2, 7, 8)); c.add("maxpool", 0, k=[2, 3], s=[1, 2], p=[1, 1], d=[3, 1]); c.done()
c = Case("maxpool_dil12_ceil_s32", (2, 2, 8, 7)); c.add("maxpool", 0, k=[3, 2], s=[3, 2], p=[0, 1], d=[1, 2], ceil=True); c.done()
c = Case("avgpool_ceil_cip_hangs_over", (2, 3, 6, 6)); c.add("avgpool", 0, k=3, s=2, p=1, ceil=True); c.done()
c = Case("avgpool_ceil_cip_2x3", (2, 3, 5, 8)); c.add("avgpool", 0, k=[2, 3], s=[2, 2], p=[1, 1], ceil=True); c.done()
c = Case("avgpool_ceil_nocip_2x3", (2, 3, 5, 8)); c.add("avgpool", 0, k=[2, 3], s=[2, 2], p=[1, 1], ceil=True, cip=False); c.done()
c = Case("maxpool_axes_ties", (2, 2, 9, 8), xgen=lambda s: torch.randint(0, 3, s).double()); c.add("maxpool", 0, k=[3, 2], s=[2, 1], p=[1, 1], d=[1, 2], ceil=True); c.done()
# --- transposed convs whose settings differ across from down (PyTorch's ConvTranspose2d(stride=(sh, sw), padding=(ph, pw),
# output_padding=(oh, ow), dilation=(dh, dw))), after every other case: strides (2, 1) and (1, 3), padding past the
# kernel's reach along one axis, dilation (2, 1), a 1x4 kernel of stride (1, 2), a Winograd-sized one padded (1, 0)
c = Case("convT_axes_s21_op10", (2, 3, 4, 5)); convt_node(c, 0, "t", 3, 4, 3, 3, [2, 1], [1, 0], [1, 0]); c.done()
c = Case("convT_axes_s13_op02", (1, 2, 5, 3)); convt_node(c, 0, "t", 2, 3, 4, 2, [1, 3], [1, 1], [0, 2]); c.done()
c = Case("convT_axes_p31_past_reach", (2, 3, 5, 4)); convt_node(c, 0, "t", 3, 2, 3, 3, [2, 2], [3, 1], [1, 0]); c.done()
c = Case("convT_axes_d21", (1, 2, 4, 5)); convt_node(c, 0, "t", 2, 4, 3, 3, [2, 1], [1, 2], 0, [2, 1]); c.done()
c = Case("convT_axes_1x4_s12", (2, 4, 3, 4)); convt_node(c, 0, "t", 4, 3, 1, 4, [1, 2], [0, 1], [0, 1]); c.done()
c = Case("convT_axes_winograd_p10", (1, 16, 4, 5)); convt_node(c, 0, "t", 16, 64, 3, 3, 1, [1, 0]); c.done()


def pair(v):
    return tuple(v) if isinstance(v, list) else v


def tw(k):
    return None if k is None else W[k].double()

def hardsigmoid(x):
    """F.hardsigmoid, whose float64 backward takes 1/6 as a float32
    (0.16666667163, PyTorch 2.15): (x + 3)/6 strictly inside (-3, 3), 1 from
    3 up, 0 at and below -3; the gradient 1/6 inside, as F.hardsigmoid's."""
    inside = (x > -3) & (x < 3)
    return torch.where(inside, (x + 3) / 6, (x >= 3).to(x.dtype))


def ref(case, x):
    vals = [x]
    for n in case.nodes:
        a = [vals[i] for i in n["in"]]; op = n["op"]
        if op == "conv": y = F.conv2d(a[0], tw(n["w"]), tw(n.get("b")), n["stride"], n["padding"], n["dilation"], n["groups"])
        elif op == "convT": y = F.conv_transpose2d(a[0], tw(n["w"]), tw(n.get("b")), pair(n["stride"]), pair(n["padding"]), pair(n["output_padding"]), 1, pair(n["dilation"]))
        elif op == "avgpool": y = F.avg_pool2d(a[0], pair(n["k"]), pair(n.get("s", n["k"])), pair(n.get("p", 0)), ceil_mode=n.get("ceil", False), count_include_pad=n.get("cip", True))
        elif op == "upsample": y = F.interpolate(a[0], scale_factor=n["scale"], mode="nearest")
        elif op == "leaky": y = F.leaky_relu(a[0], float(torch.tensor(n["slope"], dtype=torch.float32)))  # the slope is an f32, as the weights
        elif op == "linear":
            if a[0].dim() == 4: y = F.linear(a[0].permute(0, 2, 3, 1), tw(n["w"]), tw(n.get("b"))).permute(0, 3, 1, 2)
            else: y = F.linear(a[0], tw(n["w"]), tw(n.get("b")))
        elif op == "affine":
            sh = [1, -1] + [1] * (a[0].dim() - 2)
            y = a[0] * tw(n["scale"]).view(sh) + tw(n["shift"]).view(sh)
        elif op == "relu": y = F.relu(a[0])
        elif op == "sigmoid": y = torch.sigmoid(a[0])
        elif op == "tanh": y = torch.tanh(a[0])
        elif op == "gelu": y = F.gelu(a[0])
        elif op == "silu": y = F.silu(a[0])
        elif op == "hardswish": y = F.hardswish(a[0])
        elif op == "hardsigmoid": y = hardsigmoid(a[0])
        elif op == "hardtanh": y = F.hardtanh(a[0], float(torch.tensor(n["min"], dtype=torch.float32)), float(torch.tensor(n["max"], dtype=torch.float32)))  # f32 bounds, as the weights
        elif op == "maxpool": y = F.max_pool2d(a[0], pair(n["k"]), pair(n.get("s", n["k"])), pair(n.get("p", 0)), pair(n.get("d", 1)), ceil_mode=n.get("ceil", False))
        elif op == "aap": y = F.adaptive_avg_pool2d(a[0], (n["oh"], n["ow"]))
        elif op == "flatten": y = a[0].flatten(1)
        elif op == "reshape": y = a[0].reshape([a[0].shape[0]] + n["dims"])
        elif op == "concat": y = torch.cat(a, 1)
        elif op == "narrow": y = a[0].narrow(n["dim"], n["start"], n["len"])
        elif op == "concat_dim": y = torch.cat(a, n["dim"])
        elif op == "constant": v = tw(n["value"]); y = v.expand(x.shape[0], *v.shape[1:])
        elif op == "shuffle":  # PyTorch's own ChannelShuffle on images; torchvision's view/transpose on flat values
            if a[0].dim() == 4: y = torch.nn.ChannelShuffle(n["groups"])(a[0])
            else: y = a[0].view(a[0].shape[0], n["groups"], -1).transpose(1, 2).reshape(a[0].shape)
        elif op == "add": y = a[0] + a[1]
        elif op == "mul": y = a[0] * a[1]
        elif op == "attention":  # PyTorch's own attention over the pixels: queries [B, N, K], keys [B, M, K], values [B, M, C]
            q, k, v = (t.flatten(2).transpose(1, 2) for t in a)
            sc = float(torch.tensor(n["scale"], dtype=torch.float32))  # an f32, as the weights
            y = F.scaled_dot_product_attention(q, k, v, scale=sc).transpose(1, 2).reshape(a[0].shape[0], a[2].shape[1], *a[0].shape[2:])
        elif op == "ln":
            if a[0].dim() == 4: y = F.layer_norm(a[0].permute(0, 2, 3, 1), (a[0].shape[1],), tw(n["w"]), tw(n["b"]), n["eps"]).permute(0, 3, 1, 2)
            else: y = F.layer_norm(a[0], (a[0].shape[1],), tw(n["w"]), tw(n["b"]), n["eps"])
        vals.append(y)
    return vals[-1]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target", "release", "examples", "net_spec")
    spec = {"cases": []}
    refs = {}
    for c in cases:
        x = W[c.name + ".x"].double().requires_grad_()
        y = ref(c, x)
        W[c.name + ".r"] = torch.randn(y.shape, dtype=torch.float64).float()
        (y * W[c.name + ".r"].double()).sum().backward()
        refs[c.name] = (y.detach(), x.grad.detach())
        spec["cases"].append({"name": c.name, "input": c.name + ".x", "r": c.name + ".r", "nodes": c.nodes})
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, f) for f in ["spec.json", "w.safetensors", "out.safetensors", "err.json"]]
        json.dump(spec, open(paths[0], "w"))
        save_file({k: v.contiguous() for k, v in W.items()}, paths[1])
        subprocess.run([binary, *paths], check=True, env={**os.environ, "RUST_BACKTRACE": "0"})
        out = load_file(paths[2])
        errs = json.load(open(paths[3]))
    bad = 0
    worst = {}
    for c in cases:
        ry, rg = refs[c.name]
        for dt, tol in [("f32", 2e-5), ("f64", 1e-10)]:
            for eng in ["auto", "generic", "candle"]:
                k = f"{c.name}.{eng}.{dt}"
                if k in errs:
                    msg = errs[k].splitlines()[0]
                    print(f"ERROR {k}: {msg}")
                    bad += 1
                    continue
                y, g = out[k + ".y"], out[k + ".gx"]
                if tuple(y.shape) != tuple(ry.shape):
                    print(f"SHAPE {k}: {tuple(y.shape)}, PyTorch {tuple(ry.shape)}")
                    bad += 1
                    continue
                ey = ((y - ry).abs().max() / ry.abs().max().clamp_min(1e-30)).item()
                eg = ((g - rg).abs().max() / rg.abs().max().clamp_min(1e-30)).item()
                key = (eng, dt)
                worst[key] = max(worst.get(key, 0.0), ey, eg)
                if not (ey < tol and eg < tol):
                    print(f"DIFF {k}: output {ey:.2e}, input gradient {eg:.2e} (of the largest)")
                    bad += 1
                elif "-v" in sys.argv:
                    print(f"ok {k}: output {ey:.2e}, input gradient {eg:.2e}")
    for (eng, dt), e in sorted(worst.items()):
        print(f"{eng:8} {dt}: worst relative difference {e:.1e}")
    print(f"{len(cases)} nets; {bad} differences or errors")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
