//! The reference interpreter: a [`Net`](super::Net) on candle's ops, with
//! candle's autograd (weight gradients included, for training).

use candle_core::Tensor;

use super::kernels::conv::{conv_len, TransposeSettings};
use super::net::{Activation, Node, Op};
use super::Conv2dSettings;
use super::Pool2dSettings;
use crate::zoo::{
    adaptive_avg_pool2d, avg_pool2d_with, max_pool2d_with, max_pool2x2, upsample_nearest,
    BatchNorm, LayerNorm,
};

/// `[C]` as `[1, C]` or `[1, C, 1, 1]`, to broadcast over `x`'s channels.
pub(crate) fn per_channel(v: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = v.elem_count();
    v.reshape(shape)
}

pub(crate) fn activation(x: &Tensor, a: Activation) -> candle_core::Result<Tensor> {
    match a {
        // x · [x > 0]: PyTorch's ReLU. candle's `relu` returns 0 for NaN
        // and passes the gradient at exactly 0 (its backward masks with
        // x ≥ 0); the mask here is a constant, so the gradient is [x > 0]
        // and a NaN stays NaN (NaN · 0).
        Activation::Relu => x.mul(&x.gt(0f32)?.to_dtype(x.dtype())?),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        Activation::Tanh => x.tanh(),
        // x · Φ(x) where candle's autograd differentiates it: candle 0.11's
        // backward of `gelu_erf` takes 1/√(2π) as 0.398942 (its slope off
        // by up to 7e-7 relative), its backward of `erf` is exact.
        Activation::GeluErf if x.track_op() => x.mul(&normal_cdf(x)?),
        Activation::GeluErf => x.gelu_erf(),
        Activation::Silu => x.mul(&candle_nn::ops::sigmoid(x)?),
        // x · (1 where x > 0, else the slope), the factor a constant: its
        // gradient is the factor, PyTorch's; a NaN stays NaN.
        Activation::LeakyRelu(a) => {
            let factor = x.gt(0f32)?.to_dtype(x.dtype())?;
            x.mul(&factor.affine(1.0 - f64::from(a), f64::from(a))?)
        }
        // x · [min < x < max] + min · [x ≤ min] + max · [x ≥ max], the
        // indicators constants (candle's `clamp` is a maximum and a
        // minimum, whose backward at a tie is not PyTorch's): the gradient
        // is 1 strictly inside, a NaN stays NaN (NaN · 1).
        Activation::Hardtanh(min, max) => {
            let (lo, hi) = (mask(&x.le(min)?, x)?, mask(&x.ge(max)?, x)?);
            let inside = hardtanh_inside(x, min, max)?;
            x.mul(&inside)? + (lo.affine(f64::from(min), 0.0)? + hi.affine(f64::from(max), 0.0)?)?
        }
        // x · (x + 3)/6 strictly inside (−3, 3), x from 3 up: the
        // indicators constants, so that the gradient is PyTorch's, (2x +
        // 3)/6 = x/3 + 1/2 strictly inside, 1 from 3 up, 0 at and below −3.
        Activation::Hardswish => {
            let middle = mask(&x.gt(-3f32)?.mul(&x.lt(3f32)?)?, x)?;
            let above = mask(&x.ge(3f32)?, x)?;
            let quadratic = x.mul(&x.affine(1.0 / 6.0, 0.5)?)?;
            quadratic.mul(&middle)? + x.mul(&above)?
        }
        // (x + 3)/6 strictly inside (−3, 3), 1 from 3 up, 0 below: the
        // gradient 1/6 strictly inside, PyTorch's.
        Activation::Hardsigmoid => {
            let inside = mask(&x.gt(-3f32)?.mul(&x.lt(3f32)?)?, x)?;
            let above = mask(&x.ge(3f32)?, x)?;
            x.affine(1.0 / 6.0, 0.5)?.mul(&inside)? + above
        }
    }
}

/// A comparison's result as 0/1 values of `like`'s dtype.
fn mask(m: &Tensor, like: &Tensor) -> candle_core::Result<Tensor> {
    m.to_dtype(like.dtype())
}

/// [min < y < max] of a hardtanh's output `y` (or input: the same), and
/// 1 at a NaN (PyTorch's backward passes the gradient there).
pub(crate) fn hardtanh_inside(y: &Tensor, min: f32, max: f32) -> candle_core::Result<Tensor> {
    let out = (mask(&y.le(min)?, y)? + mask(&y.ge(max)?, y)?)?;
    out.affine(-1.0, 1.0)
}

/// Hardswish's slope as PyTorch's backward takes it: 0 at and below −3,
/// x/3 + 1/2 strictly between, 1 at and above 3 and at a NaN.
pub(crate) fn hardswish_slope(x: &Tensor) -> candle_core::Result<Tensor> {
    let below = x.le(-3f32)?;
    let middle = x.gt(-3f32)?.mul(&x.lt(3f32)?)?;
    let ones = x.ones_like()?;
    let rest = below.where_cond(&x.zeros_like()?, &ones)?;
    middle.where_cond(&x.affine(1.0 / 3.0, 0.5)?, &rest)
}

/// Hardsigmoid's slope as PyTorch's backward takes it: 1/6 strictly
/// between −3 and 3, else 0.
pub(crate) fn hardsigmoid_slope(x: &Tensor) -> candle_core::Result<Tensor> {
    mask(&x.gt(-3f32)?.mul(&x.lt(3f32)?)?, x)?.affine(1.0 / 6.0, 0.0)
}

/// Φ(x) = (1 + erf(x / √2)) / 2, the standard normal's CDF.
fn normal_cdf(x: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?
        .erf()?
        .affine(0.5, 0.5)
}

/// The exact GELU's slope Φ(x) + x·φ(x), with φ the standard normal's
/// density (not candle's backward of `gelu_erf`, whose 1/√(2π) is
/// 0.398942).
pub(crate) fn gelu_erf_slope(x: &Tensor) -> candle_core::Result<Tensor> {
    // 1/√(2π).
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    let density = x
        .sqr()?
        .affine(-0.5, 0.0)?
        .exp()?
        .affine(FRAC_1_SQRT_2PI, 0.0)?;
    normal_cdf(x)? + x.mul(&density)?
}

/// SiLU's slope σ(x)·(1 + x·(1 − σ(x))).
pub(crate) fn silu_slope(x: &Tensor) -> candle_core::Result<Tensor> {
    let s = candle_nn::ops::sigmoid(x)?;
    s.mul(&(x.mul(&s.affine(-1.0, 1.0)?)? + 1.0)?)
}

/// `y` plus `bias` per channel, if there is one.
pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&per_channel(b, &y)?),
        None => Ok(y),
    }
}

/// candle's conv2d of `x` with `weight`, plus `bias` per channel.
///
/// candle 0.11's backward of conv2d gives the input's gradient as a
/// transposed conv with one output padding for both dims, the rows of the
/// input the strides leave unread below the last window, taken from the
/// height: where the width leaves another number of columns unread (a
/// strided conv on an image of another parity across than down, or with a
/// kernel of another size across, as 5 × 2 at stride 2 on 10 × 4), that
/// gradient has the wrong width and candle's autograd failed with "shape
/// mismatch in add, lhs: [2, 6, 10, 4], rhs: [2, 6, 10, 5]". There the
/// padding is made explicit and the unread rows and columns cut off
/// before the conv (a pad and a narrow, whose backwards are candle's,
/// exact), so the conv reads all of its input and candle's backward pads
/// nothing.
///
/// candle's conv2d takes one stride, padding and dilation for both axes;
/// where an axis differs ([`conv_per_axis`]) the conv is rewritten into
/// ops that each have an exact backward.
pub(crate) fn conv(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    settings: Conv2dSettings,
) -> candle_core::Result<Tensor> {
    check_conv(x, weight, settings)?;
    let groups = settings.groups;
    let Some((stride, padding, dilation)) = settings.uniform() else {
        return add_bias(conv_per_axis(x, weight, settings)?, bias);
    };
    // The rows (columns) of the padded input that no window reads
    // (check_conv has refused a kernel that spans more than the input).
    let unread = |n: usize, k: usize| (n + 2 * padding - dilation * (k.max(1) - 1) - 1) % stride;
    let (h, w, unread_h, unread_w) = match (x.dims4(), weight.dims4()) {
        (Ok((_, _, h, w)), Ok((_, _, kh, kw))) if unread(h, kh) != unread(w, kw) => {
            (h, w, unread(h, kh), unread(w, kw))
        }
        _ => return add_bias(x.conv2d(weight, padding, stride, dilation, groups)?, bias),
    };
    let x = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let x = x
        .narrow(2, 0, h + 2 * padding - unread_h)?
        .narrow(3, 0, w + 2 * padding - unread_w)?;
    add_bias(x.conv2d(weight, 0, stride, dilation, groups)?, bias)
}

/// [`conv`] with a stride, padding or dilation that differs across from
/// down, in ops candle's autograd differentiates exactly (to the input
/// and to the weight): the padding made explicit per axis (a pad); a
/// dilation that differs spread into the weight, zeros between its taps
/// (a stack with zeros and a narrow), the conv then undilated; one
/// stride for both axes, their greatest common divisor `g`, the rows and
/// columns no window of that stride reads cut off first (a narrow: see
/// [`conv`]), and then every `s / g`-th output row (column) kept
/// ([`every`]).
fn conv_per_axis(
    x: &Tensor,
    weight: &Tensor,
    settings: Conv2dSettings,
) -> candle_core::Result<Tensor> {
    let Conv2dSettings {
        stride,
        padding,
        dilation,
        groups,
    } = settings;
    let (_, _, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    let (weight, dil) = if dilation[0] == dilation[1] {
        (weight.clone(), dilation[0])
    } else {
        (spread(&spread(weight, 2, dilation[0])?, 3, dilation[1])?, 1)
    };
    let g = gcd(stride[0], stride[1]);
    // The padded input's rows (columns) read by the stride-g windows.
    let read = |n: usize, k: usize, a: usize| {
        let (n, span) = (n + 2 * padding[a], dilation[a] * (k - 1) + 1);
        n - (n - span) % g
    };
    let x = x
        .pad_with_zeros(2, padding[0], padding[0])?
        .pad_with_zeros(3, padding[1], padding[1])?
        .narrow(2, 0, read(h, kh, 0))?
        .narrow(3, 0, read(w, kw, 1))?;
    let y = x.conv2d(&weight, 0, g, dil, groups)?;
    every(&every(&y, 2, stride[0] / g)?, 3, stride[1] / g)
}

/// `w` with `d − 1` zeros between consecutive taps along `dim`: the
/// kernel that an undilated conv runs as `w` dilated by `d`.
pub(crate) fn spread(w: &Tensor, dim: usize, d: usize) -> candle_core::Result<Tensor> {
    if d == 1 {
        return Ok(w.clone());
    }
    let k = w.dim(dim)?;
    let zeros = w.zeros_like()?;
    let mut parts = vec![w.clone()];
    parts.extend(std::iter::repeat_n(zeros, d - 1));
    let mut dims = w.dims().to_vec();
    dims[dim] = k * d;
    Tensor::stack(&parts, dim + 1)?
        .reshape(dims)?
        .narrow(dim, 0, (k - 1) * d + 1)
}

/// Every `r`-th entry of `y` along `dim` from the first (a narrow, a pad
/// to a multiple of `r`, a reshape and a narrow: each backward exact).
fn every(y: &Tensor, dim: usize, r: usize) -> candle_core::Result<Tensor> {
    if r == 1 {
        return Ok(y.clone());
    }
    let n = (y.dim(dim)? - 1) / r + 1;
    let mut dims = y.dims().to_vec();
    dims[dim] = n;
    dims.insert(dim + 1, r);
    y.narrow(dim, 0, (n - 1) * r + 1)?
        .pad_with_zeros(dim, 0, r - 1)?
        .reshape(dims)?
        .narrow(dim + 1, 0, 1)?
        .squeeze(dim + 1)
}

/// The greatest common divisor of `a` and `b`.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Refuses a conv whose kernel spans more than the padded `x` along an
/// axis (or of stride 0) with the CPU kernels' message: candle's conv2d
/// panics there.
pub(crate) fn check_conv(
    x: &Tensor,
    weight: &Tensor,
    settings: Conv2dSettings,
) -> candle_core::Result<()> {
    let Conv2dSettings {
        stride: s,
        padding: p,
        dilation: d,
        ..
    } = settings;
    if let (Ok((_, _, h, w)), Ok((_, _, kh, kw))) = (x.dims4(), weight.dims4()) {
        conv_len(h, kh, s[0], p[0], d[0])?;
        conv_len(w, kw, s[1], p[1], d[1])?;
    }
    Ok(())
}

/// candle's `conv_transpose2d` of `x` with `weight` `[Cin, Cout, kh, kw]`,
/// plus `bias` per channel; a stride, output padding or padding whose
/// output PyTorch refuses is an error naming it. Settings that differ
/// across from down (candle's takes one value for both axes) run as ops
/// with exact backwards: the input spread by each axis's stride with
/// zeros, padded by d·(k − 1) − p on each side (cropped where negative)
/// and the output padding below and right, then a stride-1 conv, per-axis
/// dilation, with the weight flipped and read as `[Cout, Cin, kh, kw]`.
pub(crate) fn conv_transpose(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    settings: TransposeSettings,
) -> candle_core::Result<Tensor> {
    check_conv_transpose(x, weight, settings)?;
    let y = match settings.uniform() {
        Some((stride, padding, output_padding, dilation)) => {
            x.conv_transpose2d(weight, padding, output_padding, stride, dilation)?
        }
        None => conv_transpose_axes(x, weight, settings)?,
    };
    add_bias(y, bias)
}

/// [`conv_transpose`] with settings per axis, as a conv (see there).
fn conv_transpose_axes(
    x: &Tensor,
    weight: &Tensor,
    settings: TransposeSettings,
) -> candle_core::Result<Tensor> {
    let (_, _, kh, kw) = weight.dims4()?;
    let mut z = x.clone();
    for (a, k) in [(0, kh), (1, kw)] {
        let (dim, s, d) = (2 + a, settings.stride[a], settings.dilation[a]);
        let n = z.dim(dim)?;
        // Each position followed by s − 1 zeros, the last one's dropped.
        if s > 1 {
            let mut shape = z.dims().to_vec();
            shape[dim] = n * s;
            z = z
                .unsqueeze(dim + 1)?
                .pad_with_zeros(dim + 1, 0, s - 1)?
                .reshape(shape)?
                .narrow(dim, 0, (n - 1) * s + 1)?;
        }
        let reach = d * (k - 1);
        let (p, out_pad) = (settings.padding[a], settings.output_padding[a]);
        // Both sides' padding d·(k − 1) − p (the right's plus the output
        // padding), cropped where negative.
        let cut = p.saturating_sub(reach);
        let pad = reach.saturating_sub(p);
        if cut > 0 {
            let len = z.dim(dim)?;
            let right_cut = cut.saturating_sub(out_pad);
            let right_pad = out_pad.saturating_sub(cut);
            z = z.narrow(dim, cut, len - cut - right_cut)?;
            z = z.pad_with_zeros(dim, 0, right_pad)?;
        } else {
            z = z.pad_with_zeros(dim, pad, pad + out_pad)?;
        }
    }
    let flip = |w: &Tensor, dim: usize| -> candle_core::Result<Tensor> {
        let n = w.dim(dim)?;
        let rev: Vec<u32> = (0..n as u32).rev().collect();
        w.index_select(&Tensor::new(rev.as_slice(), w.device())?, dim)
    };
    let w = flip(&flip(weight, 2)?, 3)?.transpose(0, 1)?.contiguous()?;
    let c = Conv2dSettings {
        dilation: settings.dilation,
        ..Default::default()
    };
    conv(&z, &w, None, c)
}

/// A transposed conv's output dims `[B, Cout, H, W]` for input `x`, or
/// the error naming what PyTorch refuses.
pub(crate) fn check_conv_transpose(
    x: &Tensor,
    weight: &Tensor,
    settings: TransposeSettings,
) -> candle_core::Result<[usize; 4]> {
    let (b, c, h, w) = x.dims4()?;
    let (cin, cout, kh, kw) = weight.dims4()?;
    if c != cin {
        candle_core::bail!(
            "conv_transpose2d: input of {c} channels, the weight [Cin, Cout, kh, kw] takes {cin}"
        );
    }
    Ok([b, cout, settings.len(0, h, kh)?, settings.len(1, w, kw)?])
}

/// Refuses a product of values whose shapes are neither equal nor a
/// `[B, C, H, W]` and its gate per channel `[B, C, 1, 1]`; `true` for the
/// gate.
pub(crate) fn check_mul(a: &[usize], b: &[usize]) -> candle_core::Result<bool> {
    if a == b {
        return Ok(false);
    }
    match (a, b) {
        ([n, c, _, _], [m, d, 1, 1]) if n == m && c == d => Ok(true),
        _ => candle_core::bail!(
            "mul: shapes {a:?} and {b:?}, expected the same or [B, C, H, W] and [B, C, 1, 1]"
        ),
    }
}

/// Refuses queries, keys and values of [`Op::Attention`] that do not fit
/// (shapes in PyTorch's order): three `[B, ·, ·, ·]` of one batch, queries
/// and keys of as many channels, keys and values of one size.
pub(crate) fn check_attention(q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<()> {
    if let Some(flat) = [q, k, v].into_iter().find(|d| d.len() != 4) {
        candle_core::bail!("attention: expected [B, C, H, W], got a value of shape {flat:?}");
    }
    let fits = match (q, k, v) {
        ([b, kq, _, _], [bk, kk, hk, wk], [bv, _, hv, wv]) => {
            b == bk && b == bv && kq == kk && (hk, wk) == (hv, wv)
        }
        _ => false,
    };
    if !fits {
        candle_core::bail!(
            "attention: queries {q:?}, keys {k:?} and values {v:?}, expected [B, K, H, W], \
             [B, K, H', W'] and [B, C, H', W']"
        );
    }
    Ok(())
}

/// [`Op::Attention`] on candle's tensors: `(θ, φ, g)`, the queries (times
/// the scale), keys and values as `[B, K, N]`, `[B, K, M]` and `[B, C,
/// M]` ([`super::attention`]'s), and the output's shape.
pub(crate) fn attention_operands(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
) -> candle_core::Result<([Tensor; 3], [usize; 4])> {
    check_attention(q.dims(), k.dims(), v.dims())?;
    let (b, kd, h, w) = q.dims4()?;
    let (_, _, hk, wk) = k.dims4()?;
    let c = v.dim(1)?;
    let theta = q.reshape((b, kd, h * w))?.affine(f64::from(scale), 0.0)?;
    let phi = k.reshape((b, kd, hk * wk))?;
    let g = v.reshape((b, c, hk * wk))?;
    Ok(([theta, phi, g], [b, c, h, w]))
}

/// Runs `nodes` on `x`.
pub(crate) fn forward(nodes: &[Node], x: &Tensor) -> candle_core::Result<Tensor> {
    let mut values: Vec<Tensor> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let args: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.0]).collect();
        let y = match node.op {
            Op::Input => x.clone(),
            _ => eval(&node.op, &args)?,
        };
        values.push(y);
    }
    Ok(values.pop().expect("a net has its input"))
}

/// PyTorch's `ChannelShuffle(groups)` of `[B, C, …]`: dim 1 read as
/// `[groups, C / groups]` and written transposed.
pub(crate) fn channel_shuffle(x: &Tensor, groups: usize) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let mut split = vec![dims[0], groups, dims[1] / groups];
    split.extend_from_slice(&dims[2..]);
    x.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// One node's op on its inputs' values (not [`Op::Input`]).
pub(crate) fn eval(op: &Op, args: &[&Tensor]) -> candle_core::Result<Tensor> {
    let arg = |i: usize| args[i];
    op.check_inputs(args)?;
    Ok(match op {
        Op::Input => candle_core::bail!("the input is not evaluated"),
        Op::Conv {
            weight,
            bias,
            settings,
        } => conv(arg(0), weight, bias.as_ref(), *settings)?,
        Op::Linear { weight, bias } => {
            let x = arg(0);
            let lin = candle_nn::Linear::new(weight.clone(), bias.clone());
            if x.rank() == 4 {
                candle_core::Module::forward(&lin, &x.permute((0, 2, 3, 1))?.contiguous()?)?
                    .permute((0, 3, 1, 2))?
            } else {
                candle_core::Module::forward(&lin, x)?
            }
        }
        Op::Affine { scale, shift } => BatchNorm::affine(arg(0), scale, shift)?,
        Op::Act(a) => activation(arg(0), *a)?,
        Op::MaxPool(settings) => {
            let x = arg(0);
            let (_, _, h, w) = x.dims4()?;
            let two = Pool2dSettings::new([2, 2]);
            let ceil = Pool2dSettings {
                ceil_mode: true,
                ..two
            };
            if (*settings == two || *settings == ceil) && h % 2 == 0 && w % 2 == 0 {
                max_pool2x2(x)?
            } else {
                max_pool2d_with(x, settings)?
            }
        }
        Op::AdaptiveAvgPool { oh, ow } => adaptive_avg_pool2d(arg(0), *oh, *ow)?,
        Op::AvgPool(settings) => avg_pool2d_with(arg(0), settings)?,
        Op::Upsample { scale } => upsample_nearest(arg(0), *scale)?,
        Op::ConvTranspose {
            weight,
            bias,
            settings,
        } => conv_transpose(arg(0), weight, bias.as_ref(), *settings)?,
        Op::Flatten => arg(0).flatten_from(1)?,
        Op::Reshape(dims) => {
            let mut shape = vec![arg(0).dim(0)?];
            shape.extend_from_slice(dims);
            arg(0).reshape(shape)?
        }
        Op::Concat { dim } => Tensor::cat(args, *dim)?,
        Op::Narrow { dim, start, len } => arg(0).narrow(*dim, *start, *len)?,
        Op::Constant(t) => {
            let mut dims = t.dims().to_vec();
            dims[0] = arg(0).dim(0)?;
            t.broadcast_as(dims)?.contiguous()?
        }
        Op::ChannelShuffle { groups } => channel_shuffle(arg(0), *groups)?,
        Op::Add => (arg(0) + arg(1))?,
        Op::Mul => {
            check_mul(arg(0).dims(), arg(1).dims())?;
            arg(0).broadcast_mul(arg(1))?
        }
        Op::Attention { scale } => {
            let ([theta, phi, g], shape) = attention_operands(arg(0), arg(1), arg(2), *scale)?;
            super::attention::reference(&theta, &phi, &g)?.reshape(shape.as_slice())?
        }
        Op::LayerNorm { weight, bias, eps } => {
            let x = arg(0);
            if x.rank() == 4 {
                LayerNorm::channels(x, weight, bias, *eps)?
            } else {
                LayerNorm::last(x, weight, bias, *eps)?
            }
        }
    })
}
