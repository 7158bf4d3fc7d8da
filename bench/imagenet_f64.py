"""How far gevaldi's and PyTorch's f32 results of the ImageNet workloads
are from the same workloads computed by PyTorch in float64.

    cargo bench --bench imagenet -- --dir DIR --batch 8 --warmup 0 \
        --min-steps 1 --max-steps 1 --save SAVED [WORKLOAD ...]
    bench/.venv/bin/python bench/imagenet_f64.py DIR SAVED [WORKLOAD ...]

DIR is what `bench/imagenet_reference.py make --dir DIR` wrote (weights,
inputs, PyTorch's f32 results in DIR/reference); SAVED is where the bench's
`--save` wrote gevaldi's first step (output and input gradient). Prints,
per workload, the relative L2 error of each side's output and gradient
against float64. The f32 results differ from float64 by rounding alone;
through max-pools, a window whose two largest inputs are within rounding
of each other routes the gradient to another input, so gradients differ
more than outputs.
"""

import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagenet_reference as R  # noqa: E402


class Preprocess64(R.Preprocess):
    """The reference's preprocessing, in float64."""

    def __init__(self, side_in, side_out, device):
        super().__init__(side_in, side_out, device)
        for name in ["rh", "rw_t", "mean", "std"]:
            setattr(self, name, getattr(self, name).double())


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    d, saved, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.set_num_threads(os.cpu_count())
    models = {k: v.double() for k, v in R.load_models(d, names, "cpu").items()}
    inputs = {k: v.double() for k, v in load_file(os.path.join(d, "inputs.safetensors")).items()}
    R.Preprocess = Preprocess64
    work = R.workloads(models, inputs, "cpu")

    def rel(a, b):
        return float((a.double() - b).norm() / b.norm())

    for n in names:
        out, grad = work[n](keep=True)
        out = out.detach()
        torch32 = load_file(os.path.join(d, "reference", f"{n}.safetensors"))
        ours = load_file(os.path.join(saved, f"{n}.safetensors"))
        print(
            f"{n}: against float64, output: pytorch_f32 {rel(torch32['out'], out):.3g} "
            f"gevaldi {rel(ours['out'], out):.3g}; gradient: pytorch_f32 "
            f"{rel(torch32['grad'], grad):.3g} gevaldi {rel(ours['grad'], grad):.3g}"
        )


if __name__ == "__main__":
    main()
