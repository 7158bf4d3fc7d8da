//! gevaldi's own CUDA kernels, for what candle's ops do in many launches
//! and passes over memory: a conv with one group (its input's columns in
//! the layout that makes one batched product per conv give the output
//! as `[B, Cout, H·W]`, then the bias and a ReLU after it in one pass;
//! candle's conv copies the product's output once more and adds the bias
//! and applies the ReLU in two more) and a linear layer likewise, a
//! conv's input gradient (the transposed
//! weight times the output's gradient as one batched product, then one
//! gather per input element: `col2im`), a max-pool forward (the first
//! maximum's position, then the values) and backward, a ReLU's backward,
//! BigGAN's conditional batch norm + ReLU (forward and the gradients of
//! its input, scale and shift) and residual join, and the search's head
//! for two models (log-softmaxes and divergence, and its backward) and
//! its Adam step.
//!
//! They run where the engine's `auto` runs the device-generic path on a
//! CUDA device with f32 tensors; `GEVALDI_ENGINE=generic` runs that path
//! on candle's ops alone (the reference they are tested against on a GPU:
//! `tests/generic_path.rs`). The source (`cuda/kernels.cu`) is compiled
//! once per process by NVRTC, which candle's `cuda` feature links; each
//! kernel writes every output element once, in a fixed order of additions
//! (no atomics), so a run gives the same bits every time.
//!
//! Each op is a candle custom op (`cuda/ops.rs`) that works out one plan
//! from its inputs' layouts: the kernel's sizes by name, in its order,
//! checked against the kernel's parameter list in `kernels.cu` by a test.
//! Its CUDA forward launches the kernel with the plan; its CPU forward is
//! the kernel's loop in Rust reading the same plan, which the engine
//! runs on the CPU only for the search's head and Adam step (a loop per
//! sample or element is all they need there; [`applies`] is false on the
//! CPU) and the tests run for every kernel: every
//! function here against candle's ops, and the generic path with these
//! ops against it without them (the glue around the kernels: shapes,
//! layouts, which ReLU a conv applies), on any machine;
//! `tests/cuda_kernels.rs` runs the CUDA source itself on the CPU.
//! Without the `cuda` feature [`applies`] is false.

// Kernel launches are foreign calls: the only unsafe code is the launch
// (ops.rs).
#![cfg_attr(feature = "cuda", allow(unsafe_code))]

use candle_core::{DType, Tensor};

use super::matmul::matmul;
use super::{Conv2dSettings, Engine};
use super::{Pool2dSettings, PoolKind};
use crate::zoo::{padded_len, MaxPoolPositions};
pub(crate) use ops::HeadKind;
use ops::{
    AdamStep, BiasAct, Col2Im, ConvShape, Elementwise, HeadBackward, HeadForward, Im2Col,
    PoolArgmax, PoolBackward, PoolGather, PoolShape, ScaleShiftDab, SkipAdd, SkipAddDx,
};

mod ops;
mod pool;

pub(crate) use pool::keep_pool_memory;

/// Whether gevaldi's CUDA kernels run for `x` under `engine`: an f32
/// tensor on a CUDA device, under `GEVALDI_ENGINE=auto`.
pub(crate) fn applies(x: &Tensor, engine: Engine) -> bool {
    #[cfg(test)]
    if tests::ON_CPU.with(|on| on.get()) {
        return x.device().is_cpu() && x.dtype() == DType::F32;
    }
    if engine == Engine::Generic && x.device().is_cpu() && x.dtype() == DType::F32 && on_cpu() {
        return true;
    }
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && x.dtype() == DType::F32
        && engine == Engine::Auto
}

/// Whether the search's own kernels (its head and Adam step) run for
/// `x` under `engine`: where [`applies`] holds, and for f32 tensors on the
/// CPU under `auto` too, through their CPU twins (a loop per sample or
/// element is all they need there).
pub(crate) fn search_kernels_apply(x: &Tensor, engine: Engine) -> bool {
    x.dtype() == DType::F32
        && ((engine == Engine::Auto && x.device().is_cpu()) || applies(x, engine))
}

/// `GEVALDI_CUDA_OPS_ON_CPU=1`, for the benches: the generic path
/// (`GEVALDI_ENGINE=generic`) on the CPU runs these ops through their CPU
/// twins, so that it makes the ops a GPU's `auto` makes, one for one (the
/// benches count them: `tensors_per_step`). Slow (the twins are naive
/// loops), and not a setting.
fn on_cpu() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GEVALDI_CUDA_OPS_ON_CPU").is_ok_and(|v| v == "1"))
}

/// Max-pooling (PyTorch's `MaxPool2d` with `settings`, per axis) on
/// `[B, C, H, W]` and where each maximum came from, as the candle-ops
/// version keeps it: two kernels.
pub(crate) fn max_pool2d(
    x: &Tensor,
    settings: &Pool2dSettings,
) -> candle_core::Result<(Tensor, MaxPoolPositions)> {
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let [ho, wo] = settings.output(PoolKind::Max, h, w)?;
    // The padded plane of the candle-ops version: every window inside it.
    let (r, col) = (settings.axis(0), settings.axis(1));
    let (hp, wp) = (padded_len(h, &r, ho), padded_len(w, &col, wo));
    let pool = PoolShape::new(settings, (ho, wo), wp);
    let index = x.apply_op1_no_bwd(&PoolArgmax(pool))?;
    let y = x.apply_op2_no_bwd(&index, &PoolGather(pool))?;
    let at = MaxPoolPositions {
        index,
        dims: (b, c, h, w),
        padded: (hp, wp),
        settings: *settings,
        out: (ho, wo),
    };
    Ok((y, at))
}

/// The input gradient of a max-pooling, `g` its output's: one kernel, the
/// same sums as the candle-ops version's `scatter_add`.
pub(crate) fn max_pool2d_backward(
    at: &MaxPoolPositions,
    g: &Tensor,
) -> candle_core::Result<Tensor> {
    let op = PoolBackward {
        dims: at.dims,
        pool: PoolShape::new(&at.settings, at.out, at.padded.1),
    };
    g.contiguous()?.apply_op2_no_bwd(&at.index, &op)
}

/// A ReLU's input gradient from its output `y` and the output's gradient
/// `g`: one kernel (0 where y ≤ 0, else g).
pub(crate) fn relu_backward(g: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?
        .apply_op2_no_bwd(&y.contiguous()?, &Elementwise::ReluBackward)
}

/// `relu(x · a + b)`, `ab` `[B, 2C]` (a sample's C scales, then its C
/// shifts): one kernel.
pub(crate) fn scale_shift_relu(x: &Tensor, ab: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&ab.contiguous()?, &Elementwise::ScaleShiftRelu)
}

/// The gradients of `x` and `ab` (`[B, 2C]`, laid out as `ab`) of
/// [`scale_shift_relu`], `g` its output's gradient: two kernels, which
/// work the output out again from `x` and `ab` (so the output need not be
/// kept: half of what BigGAN's backward keeps).
pub(crate) fn scale_shift_relu_backward(
    x: &Tensor,
    ab: &Tensor,
    g: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (g, x, ab) = (g.contiguous()?, x.contiguous()?, ab.contiguous()?);
    let dx = g.apply_op3_no_bwd(&x, &ab, &Elementwise::ScaleShiftReluDx)?;
    let dab = g.apply_op3_no_bwd(&x, &ab, &ScaleShiftDab)?;
    Ok((dx, dab))
}

/// BigGAN's residual join `h + up(x[:, :c])` (`up`: nearest ×2): one
/// kernel.
pub(crate) fn skip_add(h: &Tensor, x: &Tensor, up: bool) -> candle_core::Result<Tensor> {
    h.contiguous()?
        .apply_op2_no_bwd(&x.contiguous()?, &SkipAdd { up })
}

/// The gradient of [`skip_add`]'s `x` (`xc` channels), `g` its output's:
/// one kernel.
pub(crate) fn skip_add_dx(g: &Tensor, xc: usize, up: bool) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op1_no_bwd(&SkipAddDx { xc, up })
}

/// The search's head for two models' logits `[B, K]` (`w`: js's two
/// weights `[2]`): `[B + 2·B·K]`,
/// the divergence, then both models' log-probabilities. One kernel.
pub(crate) fn head_forward(
    l1: &Tensor,
    l2: &Tensor,
    w: &Tensor,
    kind: HeadKind,
) -> candle_core::Result<Tensor> {
    l1.contiguous()?
        .apply_op3_no_bwd(&l2.contiguous()?, w, &HeadForward { kind })
}

/// The gradients of both models' logits, `[2, B, K]`, from
/// [`head_forward`]'s output and the divergence's gradient `u` `[B]`. One
/// kernel.
pub(crate) fn head_backward(
    packed: &Tensor,
    u: &Tensor,
    w: &Tensor,
    kind: HeadKind,
) -> candle_core::Result<Tensor> {
    packed.apply_op3_no_bwd(&u.contiguous()?, w, &HeadBackward { kind })
}

/// Adam's step: the next state `[z | m | v]` (`[3n]`) from the gradient
/// `[n]`, the state and the hyperparameters `[8]` (see `adam_step` in
/// `kernels.cu`). One kernel.
pub(crate) fn adam_step(g: &Tensor, state: &Tensor, hyper: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op3_no_bwd(state, hyper, &AdamStep)
}

/// Whether a conv's weight `[Cout, Cin, kh, kw]` with `settings` maps a
/// sample by one product, `[Cout, Cin] · [Cin, H·W]`.
fn pointwise(weight: &Tensor, settings: Conv2dSettings) -> bool {
    weight.dim(2).is_ok_and(|k| k == 1)
        && weight.dim(3).is_ok_and(|k| k == 1)
        && settings.stride == [1; 2]
        && settings.padding == [0; 2]
}

/// A conv with one group, `weight` `[Cout, Cin, kh, kw]`, its bias and
/// (`relu`) the ReLU after it: the input's columns `[B, Cin·kh·kw, Ho·Wo]`
/// (`im2col`; a 1×1 stride-1 conv reads the input itself), one batched
/// product with the weight (cuBLAS), which lays the output out as
/// `[B, Cout, Ho·Wo]` already, and the bias and ReLU in one pass.
pub(crate) fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    settings: Conv2dSettings,
) -> candle_core::Result<Tensor> {
    let Conv2dSettings {
        stride,
        padding,
        dilation,
        ..
    } = settings;
    let (cout, cin, kh, kw) = weight.dims4()?;
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    if c != cin {
        candle_core::bail!(
            "conv2d: input {:?} for a weight {:?}",
            x.dims(),
            weight.dims()
        );
    }
    let span =
        |n: usize, k: usize, a: usize| (n + 2 * padding[a]).checked_sub(dilation[a] * (k - 1) + 1);
    let (Some(eh), Some(ew)) = (span(h, kh, 0), span(w, kw, 1)) else {
        candle_core::bail!(
            "conv2d: input {:?} is smaller than the kernel {:?}",
            x.dims(),
            weight.dims()
        );
    };
    let (ho, wo) = (eh / stride[0] + 1, ew / stride[1] + 1);
    let w2 = weight.reshape((cout, cin * kh * kw))?;
    let y = if pointwise(weight, settings) {
        matmul(&w2.broadcast_left(b)?, &x.reshape((b, cin, h * w))?)?
    } else {
        let shape = ConvShape::of(weight, (ho, wo), settings)?;
        in_chunks(b, shape.columns(cin), |start, m| {
            let cols = x.narrow(0, start, m)?.apply_op1_no_bwd(&Im2Col(shape))?;
            matmul(&w2.broadcast_left(m)?, &cols)
        })?
    };
    let y = match bias {
        Some(bias) => y.apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { relu })?,
        None if relu => y.elu(0.0)?,
        None => y,
    };
    y.reshape((b, cout, ho, wo))
}

/// A linear layer on `[B, In]` (or on the channels of `[B, In, H, W]`),
/// `weight` `[Out, In]`, its bias and (`relu`) the ReLU after it: the
/// product (cuBLAS), then the bias and the ReLU in one pass.
pub(crate) fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let out = weight.dim(0)?;
    let act = |y: Tensor| match bias {
        Some(bias) => y.apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { relu }),
        None if relu => y.elu(0.0),
        None => Ok(y),
    };
    match x.rank() {
        2 => act(matmul(x, &weight.t()?)?),
        4 => {
            let (b, c, h, w) = x.dims4()?;
            let rows = x
                .permute((0, 2, 3, 1))?
                .contiguous()?
                .reshape((b * h * w, c))?;
            act(matmul(&rows, &weight.t()?)?)?
                .reshape((b, h, w, out))?
                .permute((0, 3, 1, 2))
        }
        r => candle_core::bail!("linear: an input of rank {r} (2 or 4 expected)"),
    }
}

/// `weight` `[Cout, Cin, kh, kw]` as `Wᵀ` `[Cin·kh·kw, Cout]`, contiguous:
/// what [`conv_input_grad`] multiplies by.
pub(crate) fn transposed(weight: &Tensor) -> candle_core::Result<Tensor> {
    let (cout, cin, kh, kw) = weight.dims4()?;
    weight.reshape((cout, cin * kh * kw))?.t()?.contiguous()
}

/// The input gradient (`dims`: the input's) of a conv with one group,
/// `weight` `[Cout, Cin, kh, kw]` (`wt`: [`transposed`]), `g` its output's
/// gradient: the columns `Wᵀ · g` as one batched product (cuBLAS), then
/// `col2im` (a 1×1 stride-1 conv's columns are the gradient itself).
pub(crate) fn conv_input_grad(
    g: &Tensor,
    weight: &Tensor,
    wt: &Tensor,
    dims: &[usize],
    settings: Conv2dSettings,
) -> candle_core::Result<Tensor> {
    let (cout, cin, _, _) = weight.dims4()?;
    let (b, _, ho, wo) = g.dims4()?;
    let g = g.contiguous()?.reshape((b, cout, ho * wo))?;
    if pointwise(weight, settings) {
        return matmul(&wt.broadcast_left(b)?, &g)?.reshape((b, cin, dims[2], dims[3]));
    }
    let conv = ConvShape::of(weight, (ho, wo), settings)?;
    in_chunks(b, conv.columns(cin), |start, m| {
        let cols = matmul(&wt.broadcast_left(m)?, &g.narrow(0, start, m)?)?;
        cols.apply_op1_no_bwd(&Col2Im {
            dims: [m, dims[1], dims[2], dims[3]],
            conv,
        })
    })
}

/// The most bytes of a conv's columns (`im2col`'s, or its input
/// gradient's `Wᵀ · g`) made at a time: 256 MiB. Columns hold every
/// input value once per tap (BigGAN-deep-128's `conv_to_rgb`: 72 MiB a
/// sample, 2.3 GiB at batch 32, where PyTorch's cuDNN conv needs no such
/// buffer), so a larger batch runs in chunks of samples, each chunk's
/// columns freed before the next is made, and the chunks' outputs are
/// joined.
const COLUMNS_BYTES: usize = 256 << 20;

/// How many samples of a batch of `b` one chunk takes when each sample's
/// columns are `per_sample` f32s: as many as fit in [`COLUMNS_BYTES`], at
/// least one.
fn chunk_len(b: usize, per_sample: usize) -> usize {
    #[cfg(test)]
    let cap = tests::COLUMNS_CAP
        .with(|c| c.get())
        .unwrap_or(COLUMNS_BYTES);
    #[cfg(not(test))]
    let cap = COLUMNS_BYTES;
    (cap / (per_sample * 4).max(1)).clamp(1, b.max(1))
}

/// `f(start, len)` for the chunks of a batch of `b` ([`chunk_len`]), its
/// results joined along the batch: `f(0, b)` alone when one chunk takes
/// the whole batch.
fn in_chunks(
    b: usize,
    per_sample: usize,
    f: impl Fn(usize, usize) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let m = chunk_len(b, per_sample);
    if m >= b {
        return f(0, b);
    }
    let parts = (0..b)
        .step_by(m)
        .map(|start| f(start, m.min(b - start)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;

    use candle_core::{Device, Module, Tensor, Var};

    use super::super::reference;
    use super::super::tests::{randn, rel_err};
    use super::*;
    use crate::zoo::max_pool2d_backward as backward_on_candle_ops;
    use crate::zoo::{self, max_pool2d_indexed};

    thread_local! {
        /// Whether [`applies`] holds for f32 tensors on the CPU, on this
        /// thread: the generic path then runs these ops' CPU forwards.
        pub(super) static ON_CPU: Cell<bool> = const { Cell::new(false) };
    }

    /// `f()` with this thread's generic path running these ops.
    fn on_cpu<T>(f: impl FnOnce() -> T) -> T {
        ON_CPU.with(|on| on.set(true));
        let out = f();
        ON_CPU.with(|on| on.set(false));
        out
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The conv, its bias and ReLU, and its input gradient, against
    /// candle's conv and autograd (the reference path's conv, which
    /// rewrites a conv whose axes differ): strided, padded, dilated, 1×1,
    /// and each setting differing across from down (Inception's 1×7 and
    /// 7×1 with padding (0, 3) and (3, 0), stride (2, 1), dilation (2, 1),
    /// odd sizes).
    #[test]
    fn conv2d_and_its_input_gradient_match_candles_ops() {
        let square = |s, p, d| Conv2dSettings::square(s, p, d, 1);
        let axes = |stride, padding, dilation| Conv2dSettings {
            stride,
            padding,
            dilation,
            groups: 1,
        };
        // (cin, cout, [kh, kw], settings, bias, relu, [h, w])
        for (i, &(cin, cout, [kh, kw], c, bias, relu, [h, w])) in [
            (3, 8, [3, 3], square(1, 1, 1), true, true, [9, 9]),
            (3, 8, [7, 7], square(2, 3, 1), true, false, [17, 17]),
            (3, 6, [11, 11], square(4, 2, 1), false, true, [31, 31]),
            (8, 8, [1, 1], square(1, 0, 1), true, true, [7, 7]),
            (8, 4, [1, 1], square(2, 0, 1), false, false, [9, 9]),
            (4, 4, [3, 3], square(1, 2, 2), true, false, [10, 10]),
            (4, 6, [3, 3], square(2, 1, 2), true, true, [13, 13]),
            (
                3,
                5,
                [1, 7],
                axes([1, 1], [0, 3], [1, 1]),
                true,
                true,
                [9, 11],
            ),
            (
                3,
                5,
                [7, 1],
                axes([1, 1], [3, 0], [1, 1]),
                false,
                false,
                [11, 9],
            ),
            (
                4,
                3,
                [3, 5],
                axes([2, 1], [1, 2], [1, 1]),
                true,
                false,
                [13, 10],
            ),
            (
                4,
                3,
                [3, 3],
                axes([1, 3], [0, 1], [2, 1]),
                false,
                true,
                [11, 14],
            ),
            (
                2,
                4,
                [2, 3],
                axes([3, 2], [2, 0], [1, 2]),
                true,
                false,
                [10, 15],
            ),
        ]
        .iter()
        .enumerate()
        {
            let seed = 10 * i as u64;
            let wt = randn(&[cout, cin, kh, kw], seed);
            let b = bias.then(|| randn(&[cout], seed + 1));
            let x = Var::from_tensor(&randn(&[3, cin, h, w], seed + 2)).unwrap();
            let conv = reference::conv(x.as_tensor(), &wt, None, c).unwrap();
            let mut want = conv.clone();
            if let Some(b) = &b {
                want = want
                    .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                    .unwrap();
            }
            if relu {
                want = want.relu().unwrap();
            }
            let y = conv2d(x.as_tensor(), &wt, b.as_ref(), relu, c).unwrap();
            assert_eq!(y.dims(), want.dims(), "conv {i}");
            let e = rel_err(&y, &want);
            assert!(e < 1e-5, "conv {i}: output relative error {e}");
            // The input gradient of Σ g · conv(x), against autograd.
            let g = randn(want.dims(), seed + 3);
            let grads = (conv * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let want = grads.get(x.as_tensor()).unwrap();
            let gx = conv_input_grad(&g, &wt, &transposed(&wt).unwrap(), x.dims(), c).unwrap();
            let e = rel_err(&gx, want);
            assert!(e < 1e-5, "conv {i}: input gradient relative error {e}");
            // In chunks of 2 and 1 samples (the columns' cap at 2 samples'
            // and at 1 byte), the same bits as in one.
            let per_sample = cin * kh * kw * y.dim(2).unwrap() * y.dim(3).unwrap() * 4;
            for cap in [2 * per_sample, 1] {
                let (yc, gxc) = with_columns_cap(cap, || {
                    let yc = conv2d(x.as_tensor(), &wt, b.as_ref(), relu, c).unwrap();
                    let gxc = conv_input_grad(&g, &wt, &transposed(&wt).unwrap(), x.dims(), c);
                    (yc, gxc.unwrap())
                });
                assert_eq!(bits(&yc), bits(&y), "conv {i}, cap {cap}: output");
                assert_eq!(bits(&gxc), bits(&gx), "conv {i}, cap {cap}: input gradient");
            }
        }
    }

    thread_local! {
        /// [`super::COLUMNS_BYTES`] for this thread's tests, where set.
        pub(super) static COLUMNS_CAP: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// `f()` with a conv's columns capped at `cap` bytes on this thread.
    fn with_columns_cap<T>(cap: usize, f: impl FnOnce() -> T) -> T {
        COLUMNS_CAP.with(|c| c.set(Some(cap)));
        let out = f();
        COLUMNS_CAP.with(|c| c.set(None));
        out
    }

    /// The chunks a batch runs in: as many samples as fit, at least one,
    /// at most the batch.
    #[test]
    fn chunks_take_what_fits() {
        let mib = 1 << 20;
        // BigGAN-deep-128's conv_to_rgb: 128 · 9 · 128² f32s (72 MiB) a sample.
        let rgb = 128 * 9 * 128 * 128;
        assert_eq!(super::chunk_len(32, rgb), 3);
        assert_eq!(super::chunk_len(2, rgb), 2);
        assert_eq!(super::chunk_len(8, 300 * mib), 1);
        assert_eq!(super::chunk_len(8, 0), 8);
        let joined = super::in_chunks(7, 100 * mib / 4, |start, m| {
            Tensor::new(&[start as u32, m as u32], &Device::Cpu)
        })
        .unwrap();
        assert_eq!(joined.to_vec1::<u32>().unwrap(), [0, 2, 2, 2, 4, 2, 6, 1]);
    }

    /// A linear layer on `[B, In]` and on the channels of `[B, In, H, W]`,
    /// with its bias and ReLU, against candle's.
    #[test]
    fn linear_matches_candles() {
        let (w, b) = (randn(&[5, 3], 1), randn(&[5], 2));
        let lin = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let x = randn(&[4, 3], 3);
        let want = lin.forward(&x).unwrap().relu().unwrap();
        assert!(rel_err(&linear(&x, &w, Some(&b), true).unwrap(), &want) < 1e-6);
        let x4 = randn(&[2, 3, 4, 5], 4);
        let want = lin
            .forward(&x4.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap())
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        let y = linear(&x4, &w, Some(&b), false).unwrap();
        assert_eq!(y.dims(), [2, 5, 4, 5]);
        assert!(rel_err(&y, &want) < 1e-6);
        assert!(linear(&randn(&[2, 3, 4], 5), &w, None, false).is_err());
    }

    /// Positions, values and input gradient bit for bit as the candle-ops
    /// max-pool's, with ties, padding, ceil mode and overlapping windows,
    /// and per axis: kernels, strides, paddings and dilations.
    #[test]
    fn max_pools_match_the_candle_ops_version_bit_for_bit() {
        let x = (randn(&[2, 3, 11, 9], 1) * 2.0).unwrap().round().unwrap();
        let axes = |kernel, stride, padding, dilation, ceil_mode| Pool2dSettings {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
            count_include_pad: true,
        };
        for settings in [
            Pool2dSettings::square(3, 2, 0, true),
            Pool2dSettings::square(3, 2, 1, false),
            Pool2dSettings::square(3, 1, 1, true),
            Pool2dSettings::square(2, 2, 0, false),
            axes([3, 1], [2, 1], [1, 0], [1, 1], false),
            axes([1, 3], [1, 2], [0, 1], [1, 1], true),
            axes([3, 2], [2, 3], [1, 1], [2, 3], true),
            axes([2, 3], [1, 2], [0, 1], [3, 1], false),
        ] {
            let (y, at) = max_pool2d(&x, &settings).unwrap();
            let (want, want_at) = max_pool2d_indexed(&x, &settings).unwrap();
            let what = format!("{settings:?}");
            assert_eq!(bits(&y), bits(&want), "{what}: values");
            assert_eq!(
                at.index.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
                want_at
                    .index
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<u32>()
                    .unwrap(),
                "{what}: positions"
            );
            assert_eq!(
                (at.dims, at.padded, at.out),
                (want_at.dims, want_at.padded, want_at.out)
            );
            let g = randn(y.dims(), 2);
            let dx = max_pool2d_backward(&at, &g).unwrap();
            assert_eq!(
                bits(&dx),
                bits(&backward_on_candle_ops(&want_at, &g).unwrap()),
                "{what}: gradient"
            );
        }
    }

    /// A ReLU's backward, BigGAN's conditional batch norm + ReLU and its
    /// backward, its residual join and its backward, against candle's ops.
    #[test]
    fn the_elementwise_ops_match_candles() {
        let y = randn(&[2, 3, 4, 5], 1).relu().unwrap();
        let g = randn(&[2, 3, 4, 5], 2);
        // (The product gives −0 where g < 0 is masked; the kernel 0.)
        let want = (&g * y.gt(0f64).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!(rel_err(&relu_backward(&g, &y).unwrap(), &want), 0.0);

        // ab: each sample's 3 scales, then its 3 shifts.
        let (x, ab) = (randn(&[2, 3, 4, 5], 3), randn(&[2, 6], 4));
        let (xv, abv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&ab).unwrap(),
        );
        let part = |start| {
            abv.as_tensor()
                .narrow(1, start, 3)
                .unwrap()
                .reshape((2, 3, 1, 1))
                .unwrap()
        };
        let want = xv
            .as_tensor()
            .broadcast_mul(&part(0))
            .unwrap()
            .broadcast_add(&part(3))
            .unwrap()
            .relu()
            .unwrap();
        let out = scale_shift_relu(&x, &ab).unwrap();
        assert_eq!(bits(&out), bits(&want));
        let grads = (&want * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (dx, dab) = scale_shift_relu_backward(&x, &ab, &g).unwrap();
        assert!(rel_err(&dx, grads.get(xv.as_tensor()).unwrap()) < 1e-6);
        assert!(rel_err(&dab, grads.get(abv.as_tensor()).unwrap()) < 1e-5);

        // The join: h [2, 3, 8, 10] + x [2, 5, 4, 5] (3 channels kept, ×2).
        let (h, xs) = (randn(&[2, 3, 8, 10], 6), randn(&[2, 5, 4, 5], 7));
        let want = (&h
            + xs.narrow(1, 0, 3)
                .unwrap()
                .upsample_nearest2d(8, 10)
                .unwrap())
        .unwrap();
        assert_eq!(bits(&skip_add(&h, &xs, true).unwrap()), bits(&want));
        let gh = randn(&[2, 3, 8, 10], 8);
        let dx = skip_add_dx(&gh, 5, true).unwrap();
        assert_eq!(dx.dims(), [2, 5, 4, 5]);
        let sums = gh.reshape((2, 3, 4, 2, 5, 2)).unwrap().sum((3, 5)).unwrap();
        assert!(rel_err(&dx.narrow(1, 0, 3).unwrap(), &sums) < 1e-6);
        assert_eq!(
            dx.narrow(1, 3, 2)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    /// A generator of a user's, from the vocabulary's generator ops: a
    /// transposed conv (stride 2, output padding 1) whose forward is this
    /// module's conv input gradient and whose backward its conv, a batch
    /// norm, LeakyReLU, upsampling by 2 (this module's window sums
    /// backward) and by 3, a conv, an average pool.
    fn users_generator() -> crate::engine::Net {
        use crate::engine::{Activation, NetBuilder};
        let mut b = NetBuilder::new();
        let z = b.input();
        let h = b.linear(z, &randn(&[4 * 3 * 3, 8], 20), None);
        let h = b.reshape(h, &[4, 3, 3]);
        let cfg = candle_nn::ConvTranspose2dConfig {
            stride: 2,
            padding: 1,
            output_padding: 1,
            dilation: 1,
        };
        let t =
            candle_nn::ConvTranspose2d::new(randn(&[4, 5, 3, 3], 21), Some(randn(&[5], 22)), cfg);
        let h = b.conv_transpose2d(h, &t);
        let h = b.affine(h, &randn(&[5], 23), &randn(&[5], 24));
        let h = b.act(h, Activation::LeakyRelu(0.2));
        let h = b.upsample_nearest2d(h, 2);
        let conv = candle_nn::Conv2d::new(
            randn(&[3, 5, 3, 3], 25),
            None,
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        );
        let h = b.conv2d(h, &conv);
        let h = b.upsample_nearest2d(h, 3);
        let h = b.avg_pool2d(h, 3, 2, 1);
        let x = b.act(h, Activation::Tanh);
        b.build(x)
    }

    /// The generic path with these ops (their CPU forwards, on this
    /// thread) against the generic path on candle's ops, forward and input
    /// gradient, for the built-in classifiers: the glue around the kernels
    /// (which conv takes the ReLU after it, which positions a pool keeps,
    /// `Wᵀ` made once, a linear layer on channels).
    #[test]
    fn the_generic_path_with_these_ops_matches_it_without() {
        let dev = Device::Cpu;
        let frozen = |seed: u64,
                      load: &dyn Fn(
            candle_nn::VarBuilder,
        ) -> candle_core::Result<crate::engine::Net>| {
            let (_, vm) = zoo::seeded_varmap(seed, &dev, |vb| load(vb)).unwrap();
            load(zoo::frozen(&vm, &dev)).unwrap()
        };
        let nets: Vec<(&str, crate::engine::Net, Vec<usize>)> = vec![
            (
                "cnn_a",
                zoo::MnistCnn::random(&zoo::MnistCnnConfig::cnn_a(), 1, &dev)
                    .unwrap()
                    .net()
                    .clone(),
                vec![3, 1, 28, 28],
            ),
            (
                "mlp",
                zoo::MnistMlp::random(&zoo::MnistMlpConfig::default(), 2, &dev)
                    .unwrap()
                    .net()
                    .clone(),
                vec![3, 784],
            ),
            (
                "alexnet",
                frozen(1, &|vb| Ok(zoo::AlexNet::load(vb, 10)?.net().clone())),
                vec![2, 3, 64, 64],
            ),
            (
                "squeezenet",
                frozen(2, &|vb| {
                    Ok(zoo::SqueezeNet::load(vb, zoo::SqueezeNetVersion::V1_1, 10)?
                        .net()
                        .clone())
                }),
                vec![2, 3, 64, 64],
            ),
            (
                "resnet18",
                frozen(3, &|vb| {
                    Ok(zoo::ResNet::load(vb, zoo::ResNetDepth::R18, 10)?
                        .net()
                        .clone())
                }),
                vec![2, 3, 64, 64],
            ),
            (
                "googlenet",
                frozen(5, &|vb| {
                    Ok(zoo::GoogLeNet::load(vb, 10, false)?.net().clone())
                }),
                vec![2, 3, 64, 64],
            ),
            (
                "convnext_tiny",
                frozen(6, &|vb| {
                    Ok(zoo::ConvNext::load(vb, zoo::ConvNextSize::Tiny, 10)?
                        .net()
                        .clone())
                }),
                vec![2, 3, 32, 32],
            ),
            ("generator", users_generator(), vec![2, 8]),
        ];
        for (name, net, shape) in nets {
            let x = randn(&shape, 7);
            let run = || {
                let v = Var::from_tensor(&x).unwrap();
                let y = net.forward_generic(v.as_tensor()).unwrap();
                let w = randn(y.dims(), 8);
                let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(v.as_tensor()).unwrap().clone())
            };
            let (y_ref, g_ref) = run();
            let (y, g) = on_cpu(run);
            let (ey, eg) = (rel_err(&y, &y_ref), rel_err(&g, &g_ref));
            assert!(ey < 1e-5, "{name}: output relative error {ey}");
            assert!(eg < 1e-4, "{name}: input gradient relative error {eg}");
        }
    }
}
