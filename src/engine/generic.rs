//! The device-generic interpreter: a [`Net`](super::Net)'s forward on
//! candle's ops with nothing tracked, and a backward **to the input only**
//! written in candle's ops, so it runs on whatever device the tensors are
//! on. It is what `auto` runs where gevaldi's CPU kernels do not (a GPU),
//! and what `GEVALDI_ENGINE=generic` runs everywhere (a CPU then runs a
//! GPU's path).
//!
//! Against candle's autograd on the same ops (the reference):
//! - no weight gradient is computed (candle's backward of a conv or a
//!   linear layer computes its kernel's gradient whether or not the kernel
//!   is a variable);
//! - a conv's input gradient is a forward conv with the kernel transposed
//!   and flipped (a strided conv: one stride-1 conv per output phase,
//!   interleaved), never `conv_transpose2d`, whose CUDA kernel in candle
//!   0.11 is a direct loop per output element;
//! - a depthwise conv is a sum of shifted, per-channel scaled copies of its
//!   input, forward and backward (candle runs a grouped conv as one conv per
//!   group: 96 to 768 of them in ConvNeXt);
//! - a batch norm (affine map) after a conv whose output nothing else
//!   reads is folded into the conv's weight and bias once per net;
//! - ReLU is one kernel forward (ELU with α = 0, which keeps a NaN) and two
//!   backward (the gradient times the sign of the output);
//! - a max-pool keeps where each maximum came from (PyTorch's: the first of
//!   its window) and its backward adds the gradient there with one
//!   `scatter_add`;
//! - the forward keeps only what the backward reads (an activation's output
//!   or input, a max-pool's positions, an adaptive pooling's or a
//!   LayerNorm's input, shapes), and drops every other value after its last
//!   use.
//!
//! The other weightless ops whose backward needs more than their output
//! (adaptive average pooling, LayerNorm, GELU) recompute their forward on
//! the kept input under candle's autograd in the backward pass: the same
//! gradient as the reference path, with no weight involved.
//!
//! `GEVALDI_PROFILE=1` times each op with the device synchronised around it
//! ([`profile`](super::profile)).
//!
//! The whole network is one candle `CustomOp1` whose forward hands back the
//! output computed beforehand (one copy of the output) and whose backward
//! is [`Tape::backward`].

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Shape, Storage, Tensor, Var};

use super::matmul::matmul;
use super::net::{Activation, Node, Op};
use super::{cuda, profile, reference, Conv2dSettings};
use crate::zoo::{
    adaptive_avg_pool2d, avg_pool2d_with, max_pool2d_backward, max_pool2d_indexed, LayerNorm,
    MaxPoolPositions,
};

/// What the generic path prepares once per net: each conv node's kernels
/// for its input gradient, and the affine maps (inference batch norms)
/// folded into the conv before them.
#[derive(Debug)]
pub(crate) struct Prepared {
    convs: Vec<Option<ConvBack>>,
    /// Per node: a conv whose only reader is an affine map, that map
    /// folded in (weight scaled per output channel; bias scaled, then
    /// shifted): one conv and its bias instead of a conv, a multiply and an
    /// add forward and a multiply backward.
    folded: Vec<Option<(Tensor, Tensor)>>,
    /// Per node: an affine map folded into the conv before it (its value
    /// and its gradient are its input's).
    through: Vec<bool>,
    /// Per node: a conv with one group or a linear layer whose value
    /// (after the affine map folded into it, if any) only a ReLU reads:
    /// gevaldi's CUDA conv or linear layer applies that ReLU with its bias.
    relu_after: Vec<bool>,
    /// Per node: a ReLU applied by the conv or linear layer before it (on
    /// gevaldi's CUDA kernels; its value is its input, its backward its
    /// own).
    relu_fused: Vec<bool>,
    /// Per conv node: its weight as `Wᵀ` `[Cin·kh·kw, Cout]`, made on
    /// first use by gevaldi's CUDA input gradient.
    wt: Vec<OnceLock<Tensor>>,
}

/// `conv`'s weight and bias with the per-channel affine map `scale`,
/// `shift` applied after it folded in.
fn fold_affine(
    weight: &Tensor,
    bias: Option<&Tensor>,
    scale: &Tensor,
    shift: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let cout = weight.dim(0)?;
    let w = weight.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
    let b = match bias {
        Some(b) => (b * scale)?.add(shift)?,
        None => shift.clone(),
    };
    Ok((w, b))
}

/// A conv's input gradient, by the conv's shape.
#[derive(Debug)]
enum ConvBack {
    /// Stride 1 on both axes: a stride-1 conv of the output gradient with
    /// the flipped, transposed kernel `[Cin, Cout / groups, kh, kw]`.
    Stride1 { kernel: Tensor },
    /// Stride `s = [sh, sw]` other than 1, dilation 1: input row `q`
    /// (padded coordinates) gets taps `ky ≡ q (mod sh)` only (columns
    /// alike), so each of the sh·sw phases `(a, b)` is a stride-1 full conv
    /// with the taps `a, a + sh, …` × `b, b + sw, …` (`None` where a phase
    /// has no tap: a 1×1 stride-2 conv). A strided conv whose dilation
    /// differs across from down has its phases taken from its weight
    /// spread out with zeros between the taps (then dilation 1).
    Phases {
        s: [usize; 2],
        phases: Vec<Option<Tensor>>,
    },
    /// Stride > 1 with dilation > 1, each the same on both axes (no
    /// built-in model has one; the padding may differ): candle's
    /// `conv_transpose2d`, one group at a time.
    Transposed,
}

impl ConvBack {
    /// The input gradient's kernels of a conv with weight `weight`, its
    /// stride and dilation per axis.
    fn new(
        weight: &Tensor,
        stride: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> candle_core::Result<Self> {
        Ok(if stride == [1; 2] {
            ConvBack::Stride1 {
                kernel: transposed_flipped(weight, groups)?,
            }
        } else if dilation == [1; 2] || stride[0] != stride[1] || dilation[0] != dilation[1] {
            let weight =
                &reference::spread(&reference::spread(weight, 2, dilation[0])?, 3, dilation[1])?;
            let s = stride;
            let mut phases = Vec::with_capacity(s[0] * s[1]);
            for a in 0..s[0] {
                for b in 0..s[1] {
                    let w = match taps(weight, 2, a, s[0])? {
                        Some(rows) => taps(&rows, 3, b, s[1])?,
                        None => None,
                    };
                    phases.push(match w {
                        Some(w) => Some(transposed_flipped(&w, groups)?),
                        None => None,
                    });
                }
            }
            ConvBack::Phases { s, phases }
        } else {
            ConvBack::Transposed
        })
    }
}

/// `w` `[Cout, Cin / g, kh, kw]` as the kernel of its transpose: `[Cin,
/// Cout / g, kh, kw]`, each group's in/out swapped, taps flipped.
fn transposed_flipped(w: &Tensor, groups: usize) -> candle_core::Result<Tensor> {
    let (cout, cin_g, kh, kw) = w.dims4()?;
    w.reshape((groups, cout / groups, cin_g, kh, kw))?
        .transpose(1, 2)?
        .reshape((cin_g * groups, cout / groups, kh, kw))?
        .flip(&[2, 3])?
        .contiguous()
}

/// Taps `a, a + s, …` of `w` along `dim`, or `None` if there are none.
/// `w` may be a view (a weight transposed from another layout): candle's
/// `index_select` takes contiguous tensors only.
fn taps(w: &Tensor, dim: usize, a: usize, s: usize) -> candle_core::Result<Option<Tensor>> {
    let k = w.dim(dim)?;
    let idx: Vec<u32> = (a..k).step_by(s).map(|i| i as u32).collect();
    if idx.is_empty() {
        return Ok(None);
    }
    let idx = Tensor::new(idx.as_slice(), w.device())?;
    Ok(Some(w.contiguous()?.index_select(&idx, dim)?))
}

impl Prepared {
    pub(crate) fn new(nodes: &[Node]) -> candle_core::Result<Self> {
        let n = nodes.len();
        // Readers of each value; the caller reads the output.
        let mut readers = vec![0usize; n];
        for node in nodes {
            for i in &node.inputs {
                readers[i.0] += 1;
            }
        }
        if let Some(last) = readers.last_mut() {
            *last += 1;
        }
        let mut folded: Vec<Option<(Tensor, Tensor)>> = vec![None; n];
        let mut through = vec![false; n];
        for (k, node) in nodes.iter().enumerate() {
            let Op::Affine { scale, shift } = &node.op else {
                continue;
            };
            let j = node.inputs[0].0;
            if readers[j] != 1 {
                continue;
            }
            if let Op::Conv { weight, bias, .. } = &nodes[j].op {
                if scale.elem_count() == weight.dim(0)? && shift.elem_count() == weight.dim(0)? {
                    folded[j] = Some(fold_affine(weight, bias.as_ref(), scale, shift)?);
                    through[k] = true;
                }
            }
        }
        let mut relu_after = vec![false; n];
        let mut relu_fused = vec![false; n];
        for (r, node) in nodes.iter().enumerate() {
            if !matches!(node.op, Op::Act(Activation::Relu)) {
                continue;
            }
            let mut v = node.inputs[0].0;
            if through[v] && readers[v] == 1 {
                v = nodes[v].inputs[0].0;
            }
            let one_group = match &nodes[v].op {
                Op::Conv { settings, .. } => settings.groups == 1,
                op => matches!(op, Op::Linear { .. }),
            };
            if one_group && readers[v] == 1 {
                relu_after[v] = true;
                relu_fused[r] = true;
            }
        }
        let convs = nodes
            .iter()
            .zip(&folded)
            .map(|(node, folded)| match &node.op {
                Op::Conv {
                    weight, settings, ..
                } => {
                    let weight = folded.as_ref().map_or(weight, |(w, _)| w);
                    ConvBack::new(weight, settings.stride, settings.dilation, settings.groups)
                        .map(Some)
                }
                // A transposed conv's forward is the input gradient of the
                // conv with its weight read as `[Cout', Cin', kh, kw]`.
                Op::ConvTranspose {
                    weight, settings, ..
                } => {
                    let c = settings.conv();
                    ConvBack::new(weight, c.stride, c.dilation, 1).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Prepared {
            convs,
            folded,
            through,
            relu_after,
            relu_fused,
            wt: (0..n).map(|_| OnceLock::new()).collect(),
        })
    }

    /// Conv node `j`'s `weight` as `Wᵀ`, made once.
    fn wt(&self, j: usize, weight: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(t) = self.wt[j].get() {
            return Ok(t.clone());
        }
        let t = cuda::transposed(weight)?;
        Ok(self.wt[j].get_or_init(|| t).clone())
    }

    /// Conv node `j`'s weight and bias: the affine map after it folded in
    /// where it is.
    fn conv_weights<'a>(
        &'a self,
        j: usize,
        weight: &'a Tensor,
        bias: Option<&'a Tensor>,
    ) -> (&'a Tensor, Option<&'a Tensor>) {
        match &self.folded[j] {
            Some((w, b)) => (w, Some(b)),
            None => (weight, bias),
        }
    }
}

/// Whether `w` `[Cout, Cin / g, k, k]` with `groups` is depthwise:
/// one input and one output channel per group.
fn depthwise(w: &Tensor, groups: usize) -> bool {
    w.dim(1).is_ok_and(|d| d == 1) && w.dim(0).is_ok_and(|d| d == groups) && groups > 1
}

/// A stride-1 conv of `x` with `w` (`[Cout, Cin / g, kh, kw]`), padded by
/// `pad.0` rows and `pad.1` columns on each side (negative: that many
/// cropped from the output instead), dilated by `dilation` `[rows,
/// columns]`.
fn conv_s1(
    x: &Tensor,
    w: &Tensor,
    pad: (isize, isize),
    dilation: [usize; 2],
    groups: usize,
) -> candle_core::Result<Tensor> {
    let (cout, cin_g, kh, kw) = w.dims4()?;
    if (kh, kw) == (1, 1) && groups == 1 && pad == (0, 0) {
        // A 1×1 conv is a product per sample, `[Cout, Cin] · [Cin, H·W]`:
        // one batched matmul, where candle's conv2d copies the input into
        // columns and its product back out of them.
        let (b, c, h, wd) = x.dims4()?;
        let w = w.reshape((cout, cin_g))?.broadcast_left(b)?;
        let y = matmul(&w, &x.contiguous()?.reshape((b, c, h * wd))?)?;
        return y.reshape((b, cout, h, wd));
    }
    let (ph, pw) = (pad.0.max(0) as usize, pad.1.max(0) as usize);
    // candle's conv2d pads rows and columns alike: the difference first.
    let p = ph.min(pw);
    let x = x
        .pad_with_zeros(2, ph - p, ph - p)?
        .pad_with_zeros(3, pw - p, pw - p)?;
    let y = if depthwise(w, groups) {
        // Σ over taps of the shifted input times the tap's weight per
        // channel.
        let (c, _, kh, kw) = w.dims4()?;
        let (_, _, h, wd) = x.dims4()?;
        let x = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let (ho, wo) = (
            h + 2 * p - dilation[0] * (kh - 1),
            wd + 2 * p - dilation[1] * (kw - 1),
        );
        let mut acc: Option<Tensor> = None;
        for ky in 0..kh {
            let rows = x.narrow(2, ky * dilation[0], ho)?;
            for kx in 0..kw {
                let tap = w
                    .narrow(2, ky, 1)?
                    .narrow(3, kx, 1)?
                    .reshape((1, c, 1, 1))?;
                let term = rows.narrow(3, kx * dilation[1], wo)?.broadcast_mul(&tap)?;
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
        }
        acc.expect("a kernel has a tap")
    } else if dilation[0] == dilation[1] {
        x.conv2d(w, p, 1, dilation[0], groups)?
    } else {
        // candle's conv2d dilates rows and columns alike: the taps spread
        // out with zeros between them instead.
        let w = reference::spread(&reference::spread(w, 2, dilation[0])?, 3, dilation[1])?;
        x.conv2d(&w, p, 1, 1, groups)?
    };
    let (ch, cw) = ((-pad.0).max(0) as usize, (-pad.1).max(0) as usize);
    if ch == 0 && cw == 0 {
        return Ok(y);
    }
    let (_, _, h, w) = y.dims4()?;
    y.narrow(2, ch, h - 2 * ch)?.narrow(3, cw, w - 2 * cw)
}

/// `t` `[B, C, H, W]` cut or zero-padded (at the end) to `h` × `w`.
fn fit(t: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let (_, _, th, tw) = t.dims4()?;
    let t = if th >= h {
        t.narrow(2, 0, h)?
    } else {
        t.pad_with_zeros(2, 0, h - th)?
    };
    if tw >= w {
        t.narrow(3, 0, w)
    } else {
        t.pad_with_zeros(3, 0, w - tw)
    }
}

/// What the backward of a node reads, kept by the forward.
enum Kept {
    Nothing,
    /// The node's output (ReLU, sigmoid, tanh).
    Output(Tensor),
    /// The node's input (GELU, adaptive pooling, LayerNorm).
    Input(Tensor),
    /// Where each of a max-pooling's outputs came from.
    MaxPool(MaxPoolPositions),
    /// The input's dims (a conv's, a reshape's).
    Dims(Vec<usize>),
    /// The inputs' sizes along a concat's dim.
    Sizes(Vec<usize>),
    /// Both inputs (a product).
    Inputs(Tensor, Tensor),
    /// Attention's operands (the queries times the scale, the keys and
    /// the values, `[B, K, N]`, `[B, K, M]`, `[B, C, M]`: the backward works
    /// the map out again from them) and its inputs' shapes.
    Attention([Tensor; 3], [Vec<usize>; 3]),
}

/// What one forward kept for its backward.
pub(crate) struct Tape {
    nodes: Arc<Vec<Node>>,
    prepared: Arc<Prepared>,
    kept: Vec<Kept>,
    /// Whether the backward runs gevaldi's CUDA kernels (the forward did).
    own: bool,
}

/// Runs `nodes` on `x` with nothing tracked; with `keep`, also returns the
/// tape its backward reads.
pub(crate) fn forward(
    nodes: &Arc<Vec<Node>>,
    prepared: &Arc<Prepared>,
    x: &Tensor,
    keep: bool,
) -> candle_core::Result<(Tensor, Option<Tape>)> {
    let n = nodes.len();
    let mut last_use = vec![0; n];
    for (j, node) in nodes.iter().enumerate() {
        for i in &node.inputs {
            last_use[i.0] = j;
        }
    }
    // gevaldi's CUDA kernels where they apply (a CUDA f32 input under
    // `auto`), for the forward and the backward alike.
    let own = cuda::applies(x, super::Engine::current());
    let mut values: Vec<Option<Tensor>> = Vec::with_capacity(n);
    let mut kept = Vec::with_capacity(if keep { n } else { 0 });
    for (j, node) in nodes.iter().enumerate() {
        let mut pooled = None;
        let mut attended = None;
        let y = {
            let args: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|i| {
                    values[i.0]
                        .as_ref()
                        .expect("a value is dropped after its last use")
                })
                .collect();
            node.op.check_inputs(&args)?;
            let y = profile::time(
                x.device(),
                "forward",
                || profile::kind(&node.op),
                || match &node.op {
                    Op::Input => Ok(x.detach()),
                    _ if prepared.through[j] => Ok(args[0].clone()),
                    Op::Linear { weight, bias } if own => {
                        let relu = prepared.relu_after[j];
                        cuda::linear(args[0], weight, bias.as_ref(), relu)
                    }
                    Op::Act(Activation::Relu) if own && prepared.relu_fused[j] => {
                        Ok(args[0].clone())
                    }
                    // The engine's attention op (its forward in chunks of
                    // samples), not candle's graph of it.
                    Op::Attention { scale } => {
                        let ([t, p, g], shape) =
                            reference::attention_operands(args[0], args[1], args[2], *scale)?;
                        let y = super::attention(&t, &p, &g)?.reshape(shape.as_slice());
                        attended = keep.then_some([t, p, g]);
                        y
                    }
                    Op::Conv {
                        weight,
                        bias,
                        settings,
                    } => {
                        let (weight, bias) = prepared.conv_weights(j, weight, bias.as_ref());
                        let c = *settings;
                        reference::check_conv(args[0], weight, c)?;
                        if own && c.groups == 1 {
                            let relu = prepared.relu_after[j];
                            cuda::conv2d(args[0], weight, bias, relu, c)
                        } else if c.stride == [1; 2] {
                            let p = c.padding.map(|p| p as isize);
                            let y = conv_s1(args[0], weight, (p[0], p[1]), c.dilation, c.groups)?;
                            reference::add_bias(y, bias)
                        } else {
                            reference::conv(args[0], weight, bias, c)
                        }
                    }
                    Op::ConvTranspose {
                        weight,
                        bias,
                        settings,
                    } => {
                        let c = settings.conv();
                        let dims = reference::check_conv_transpose(args[0], weight, *settings)?;
                        let y = if own {
                            let wt = prepared.wt(j, weight)?;
                            cuda::conv_input_grad(args[0], weight, &wt, &dims, c)?
                        } else {
                            let back = prepared.convs[j]
                                .as_ref()
                                .expect("every transposed conv has its kernels prepared");
                            conv_input_grad(args[0], weight, back, &dims, c)?
                        };
                        reference::add_bias(y, bias.as_ref())
                    }
                    // One kernel, NaN kept (ELU with α = 0: x where x > 0, else
                    // 0 · (eˣ − 1), which is −0 for x < 0 and NaN for NaN).
                    Op::Act(Activation::Relu) => args[0].elu(0.0),
                    Op::MaxPool(settings) if own => {
                        let (y, at) = cuda::max_pool2d(args[0], settings)?;
                        pooled = keep.then_some(at);
                        Ok(y)
                    }
                    Op::MaxPool(settings) if keep => {
                        let (y, at) = max_pool2d_indexed(args[0], settings)?;
                        pooled = Some(at);
                        Ok(y)
                    }
                    op => reference::eval(op, &args),
                },
            )?;
            if keep {
                kept.push(match &node.op {
                    Op::MaxPool(_) => {
                        Kept::MaxPool(pooled.take().expect("a kept max-pool is indexed"))
                    }
                    Op::Act(
                        Activation::GeluErf
                        | Activation::Silu
                        | Activation::Hardswish
                        | Activation::Hardsigmoid,
                    )
                    | Op::AdaptiveAvgPool { .. }
                    | Op::LayerNorm { .. } => Kept::Input(args[0].clone()),
                    Op::Act(_) => Kept::Output(y.clone()),
                    Op::Conv { .. }
                    | Op::Flatten
                    | Op::Reshape(_)
                    | Op::Narrow { .. }
                    | Op::AvgPool(_)
                    | Op::Upsample { .. } => Kept::Dims(args[0].dims().to_vec()),
                    Op::Mul => Kept::Inputs(args[0].clone(), args[1].clone()),
                    Op::Attention { .. } => Kept::Attention(
                        attended
                            .take()
                            .expect("a kept attention keeps its operands"),
                        [0, 1, 2].map(|i| args[i].dims().to_vec()),
                    ),
                    Op::Concat { dim } => Kept::Sizes(
                        args.iter()
                            .map(|a| a.dim(*dim))
                            .collect::<candle_core::Result<_>>()?,
                    ),
                    _ => Kept::Nothing,
                });
            }
            y
        };
        values.push(Some(y));
        for i in &node.inputs {
            if last_use[i.0] == j {
                values[i.0] = None;
            }
        }
    }
    let out = values.pop().flatten().expect("a net has its output");
    let tape = keep.then(|| Tape {
        nodes: nodes.clone(),
        prepared: prepared.clone(),
        kept,
        own,
    });
    Ok((out, tape))
}

/// The gradient of `f(x)` with respect to `x`, `g` being the gradient of
/// its output, by candle's autograd on a fresh variable (weightless ops).
fn local_grad(
    x: &Tensor,
    g: &Tensor,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let v = Var::from_tensor(x)?;
    let y = f(v.as_tensor())?;
    // Both ends untracked: the gradient candle's backward computes from the
    // variable is itself tracked (its ops read `v`), and every op of the
    // backward after it would then build a graph, which the next local
    // gradient's backward would walk through (and fail in: candle's
    // backward of `scatter_add`, the max-pool's, mismatches its shapes).
    let grads = (y * g.detach())?.sum_all()?.backward()?;
    match grads.get(v.as_tensor()) {
        Some(gx) => Ok(gx.detach()),
        None => x.zeros_like(),
    }
}

impl Tape {
    /// The gradient of the input, `grad` being the output's.
    pub(crate) fn backward(&self, grad: &Tensor) -> candle_core::Result<Tensor> {
        let n = self.nodes.len();
        let mut grads: Vec<Option<Tensor>> = vec![None; n];
        grads[n - 1] = Some(grad.clone());
        for j in (1..n).rev() {
            let Some(g) = grads[j].take() else { continue };
            let node = &self.nodes[j];
            let inputs: Vec<Tensor> = profile::time(
                g.device(),
                "backward",
                || profile::kind(&node.op),
                || self.input_grads(j, node, &g),
            )?;
            for (i, gi) in node.inputs.iter().zip(inputs) {
                grads[i.0] = Some(match grads[i.0].take() {
                    Some(acc) => (acc + gi)?,
                    None => gi,
                });
            }
        }
        match grads[0].take() {
            Some(g) => Ok(g),
            None => candle_core::bail!("the net's output does not depend on its input"),
        }
    }

    /// The gradients of node `j`'s inputs, in order.
    fn input_grads(&self, j: usize, node: &Node, g: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let kept = &self.kept[j];
        let input = || match kept {
            Kept::Input(x) => Ok(x),
            _ => candle_core::bail!("node {j}: its input was not kept"),
        };
        let output = || match kept {
            Kept::Output(y) => Ok(y),
            _ => candle_core::bail!("node {j}: its output was not kept"),
        };
        let dims = || match kept {
            Kept::Dims(d) => Ok(d.as_slice()),
            _ => candle_core::bail!("node {j}: its input's shape was not kept"),
        };
        Ok(match &node.op {
            Op::Input => vec![],
            _ if self.prepared.through[j] => vec![g.clone()],
            Op::Conv {
                weight, settings, ..
            } => {
                let back = self.prepared.convs[j]
                    .as_ref()
                    .expect("every conv node has its backward prepared");
                let (weight, _) = self.prepared.conv_weights(j, weight, None);
                if self.own && settings.groups == 1 {
                    let wt = self.prepared.wt(j, weight)?;
                    let gx = cuda::conv_input_grad(g, weight, &wt, dims()?, *settings)?;
                    return Ok(vec![gx]);
                }
                vec![conv_input_grad(g, weight, back, dims()?, *settings)?]
            }
            Op::ConvTranspose {
                weight, settings, ..
            } => {
                let (p, d) = (settings.padding, settings.dilation);
                vec![if self.own {
                    cuda::conv2d(g, weight, None, false, settings.conv())?
                } else if settings.stride == [1; 2] {
                    conv_s1(g, weight, (p[0] as isize, p[1] as isize), d, 1)?
                } else {
                    reference::conv(g, weight, None, settings.conv())?
                }]
            }
            Op::AvgPool(settings) => {
                // Linear: its gradient at any input, zeros, is its
                // gradient at the input.
                let x = Tensor::zeros(dims()?, g.dtype(), g.device())?;
                vec![local_grad(&x, g, |x| avg_pool2d_with(x, settings))?]
            }
            Op::Upsample { scale } => {
                let &[b, c, h, w] = dims()? else {
                    candle_core::bail!("node {j}: upsampled a value of rank other than 4")
                };
                vec![if self.own && *scale == 2 {
                    cuda::skip_add_dx(g, c, true)?
                } else {
                    g.reshape((b, c, h, *scale, w, *scale))?.sum((3, 5))?
                }]
            }
            Op::Linear { weight, .. } => {
                // (g may be a view: a concat's backward narrows it.)
                let gx = if g.rank() == 4 {
                    let (b, o, h, w) = g.dims4()?;
                    let rows = g.permute((0, 2, 3, 1))?.reshape((b * h * w, o))?;
                    matmul(&rows, weight)?
                        .reshape((b, h, w, weight.dim(1)?))?
                        .permute((0, 3, 1, 2))?
                } else {
                    matmul(g, weight)?
                };
                vec![gx]
            }
            Op::Affine { scale, .. } => {
                vec![g.broadcast_mul(&reference::per_channel(scale, g)?)?]
            }
            Op::Act(a) => vec![match a {
                // [y > 0] as sign(y): the output is ≥ 0 or −0 or NaN, whose
                // sign is 0 (two kernels, not a compare, a cast and a mul).
                Activation::Relu if self.own => cuda::relu_backward(g, output()?)?,
                Activation::Relu => g.mul(&output()?.sign()?)?,
                Activation::Sigmoid => {
                    let y = output()?;
                    (g * y.mul(&y.affine(-1.0, 1.0)?)?)?
                }
                Activation::Tanh => {
                    let y = output()?;
                    (g * y.sqr()?.affine(-1.0, 1.0)?)?
                }
                Activation::GeluErf => g.mul(&reference::gelu_erf_slope(input()?)?)?,
                Activation::Silu => g.mul(&reference::silu_slope(input()?)?)?,
                Activation::Hardswish => g.mul(&reference::hardswish_slope(input()?)?)?,
                Activation::Hardsigmoid => g.mul(&reference::hardsigmoid_slope(input()?)?)?,
                Activation::Hardtanh(min, max) => {
                    g.mul(&reference::hardtanh_inside(output()?, *min, *max)?)?
                }
                // The output is > 0 where the input is (slope ≥ 0).
                Activation::LeakyRelu(a) => {
                    let a = f64::from(*a);
                    let y = output()?;
                    g.mul(&y.gt(0f64)?.to_dtype(y.dtype())?.affine(1.0 - a, a)?)?
                }
            }],
            Op::MaxPool(_) => match kept {
                Kept::MaxPool(at) if self.own => vec![cuda::max_pool2d_backward(at, g)?],
                Kept::MaxPool(at) => vec![max_pool2d_backward(at, g)?],
                _ => candle_core::bail!("node {j}: its max-pool indices were not kept"),
            },
            Op::AdaptiveAvgPool { oh, ow } => {
                let x = input()?;
                let (_, _, h, w) = x.dims4()?;
                if (h, w) == (*oh, *ow) {
                    // The identity.
                    vec![g.clone()]
                } else if (*oh, *ow) == (1, 1) {
                    // A mean over the columns, then over the rows: candle's
                    // backward of the two, without a graph (a few dozen
                    // tensors less per pool).
                    let g = g.affine(1.0 / h as f64, 0.0)?.affine(1.0 / w as f64, 0.0)?;
                    vec![g.broadcast_as(x.dims())?]
                } else {
                    vec![local_grad(x, g, |x| adaptive_avg_pool2d(x, *oh, *ow))?]
                }
            }
            Op::LayerNorm { weight, bias, eps } => vec![local_grad(input()?, g, |x| {
                if x.rank() == 4 {
                    LayerNorm::channels(x, weight, bias, *eps)
                } else {
                    LayerNorm::last(x, weight, bias, *eps)
                }
            })?],
            Op::Flatten | Op::Reshape(_) => vec![g.reshape(dims()?)?],
            Op::Concat { dim } => {
                let Kept::Sizes(cs) = kept else {
                    candle_core::bail!("node {j}: its inputs' sizes along its dim were not kept")
                };
                let mut at = 0;
                cs.iter()
                    .map(|&c| {
                        let gi = g.narrow(*dim, at, c);
                        at += c;
                        gi
                    })
                    .collect::<candle_core::Result<_>>()?
            }
            Op::Narrow { dim, start, len } => {
                let size = dims()?[*dim];
                vec![g.pad_with_zeros(*dim, *start, size - start - len)?]
            }
            // Its input gives the batch size only.
            Op::Constant(_) => vec![],
            // The inverse of a shuffle of C entries in `groups` is the
            // shuffle in C / groups.
            Op::ChannelShuffle { groups } => {
                vec![reference::channel_shuffle(g, g.dim(1)? / groups)?]
            }
            Op::Add => vec![g.clone(), g.clone()],
            Op::Mul => {
                let Kept::Inputs(a, b) = kept else {
                    candle_core::bail!("node {j}: its inputs were not kept")
                };
                let gb = g.mul(&a.broadcast_as(g.dims())?)?;
                let gb = if reference::check_mul(a.dims(), b.dims())? {
                    gb.sum_keepdim(3)?.sum_keepdim(2)?
                } else {
                    gb
                };
                vec![g.broadcast_mul(b)?, gb]
            }
            Op::Attention { scale } => {
                let Kept::Attention([t, p, vg], [q, k, v]) = kept else {
                    candle_core::bail!("node {j}: its queries, keys and values were not kept")
                };
                let (b, c, n) = (g.dim(0)?, g.dim(1)?, t.dim(2)?);
                let dout = g.reshape((b, c, n))?.contiguous()?;
                let grads = super::attention::grads(t, p, vg, &dout)?;
                let [dt, dp, dg] = <[Tensor; 3]>::try_from(grads)
                    .map_err(|_| candle_core::Error::Msg("attention: three gradients".into()))?;
                // θ is the queries times the scale.
                vec![
                    dt.affine(f64::from(*scale), 0.0)?.reshape(q.as_slice())?,
                    dp.reshape(k.as_slice())?,
                    dg.reshape(v.as_slice())?,
                ]
            }
        })
    }
}

/// A conv's input gradient (`dims`: its input's), `g` its output's.
fn conv_input_grad(
    g: &Tensor,
    weight: &Tensor,
    back: &ConvBack,
    dims: &[usize],
    settings: Conv2dSettings,
) -> candle_core::Result<Tensor> {
    let Conv2dSettings {
        stride,
        padding,
        dilation,
        groups,
    } = settings;
    let (_, _, kh, kw) = weight.dims4()?;
    let (h, w) = (dims[2], dims[3]);
    match back {
        ConvBack::Stride1 { kernel } => {
            // The conv maps padded rows q to q − d·ky; its transpose pads
            // the gradient by d(k − 1) and crops p: net padding d(k−1) − p,
            // which gives back exactly the input's H × W (columns alike).
            let pad = |k: usize, a: usize| (dilation[a] * (k - 1)) as isize - padding[a] as isize;
            conv_s1(g, kernel, (pad(kh, 0), pad(kw, 1)), dilation, groups)
        }
        ConvBack::Phases { s, phases } => {
            let [sh, sw] = *s;
            let (b, _, _, _) = g.dims4()?;
            let cin = dims[1];
            let (hp, wp) = (h + 2 * padding[0], w + 2 * padding[1]);
            let (u, v) = (hp.div_ceil(sh), wp.div_ceil(sw));
            let mut rows = Vec::with_capacity(sh);
            for a in 0..sh {
                let mut cols = Vec::with_capacity(sw);
                for bb in 0..sw {
                    cols.push(match &phases[a * sw + bb] {
                        Some(k) => {
                            let (_, _, ka, kb) = k.dims4()?;
                            let gp = g.pad_with_zeros(2, ka - 1, ka - 1)?.pad_with_zeros(
                                3,
                                kb - 1,
                                kb - 1,
                            )?;
                            fit(&gp.conv2d(k, 0, 1, 1, groups)?, u, v)?
                        }
                        None => Tensor::zeros((b, cin, u, v), g.dtype(), g.device())?,
                    });
                }
                // [B, Cin, U, V, sw] → [B, Cin, U, V·sw]: column v·sw + b.
                rows.push(Tensor::stack(&cols, 4)?.reshape((b, cin, u, v * sw))?);
            }
            // [B, Cin, U, sh, V·sw] → [B, Cin, U·sh, V·sw]: row u·sh + a.
            Tensor::stack(&rows, 3)?
                .reshape((b, cin, u * sh, v * sw))?
                .narrow(2, padding[0], h)?
                .narrow(3, padding[1], w)
        }
        ConvBack::Transposed => {
            // The full transposed conv (padded coordinates, no output
            // padding: candle's takes one for rows and columns alike), then
            // the input's window; rows past its end get no tap (zeros).
            // Its stride and dilation are the same on both axes
            // ([`ConvBack::new`]); its padding, cut off here, may differ.
            let (s, d, [ph, pw]) = (stride[0], dilation[0], padding);
            let parts = g
                .chunk(groups, 1)?
                .iter()
                .zip(weight.chunk(groups, 0)?)
                .map(|(g, w)| g.conv_transpose2d(&w, 0, 0, s, d))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let gx = Tensor::cat(&parts, 1)?;
            let (_, _, lh, lw) = gx.dims4()?;
            let gx = gx.narrow(2, ph, h.min(lh.saturating_sub(ph)))?.narrow(
                3,
                pw,
                w.min(lw.saturating_sub(pw)),
            )?;
            fit(&gx, h, w)
        }
    }
}

/// An output computed beforehand with untracked ops, handed back once by
/// a candle custom op's forward (a copy of its storage; the op's own copy
/// is dropped, so the graph does not hold a second one): how an op whose
/// backward is written by hand in candle's ops runs on any device.
pub(crate) struct Handed(Mutex<Option<Tensor>>);

/// A copy of the handed output's storage, taken from `$handed`, on the
/// device `$variant` names.
macro_rules! hand_back {
    ($handed:expr, $variant:ident) => {{
        let out = match $handed.0.lock() {
            Ok(mut out) => out.take(),
            Err(_) => None,
        };
        let Some(out) = out else {
            candle_core::bail!("gevaldi: a precomputed op's forward ran twice")
        };
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::$variant(s) => Ok((s.try_clone(layout)?, out.shape().clone())),
            _ => candle_core::bail!("gevaldi: the output is on another device than the input"),
        }
    }};
}

impl Handed {
    /// `out`, made to hold exactly its values, contiguous from offset 0
    /// (the storage is handed back from its start).
    pub(crate) fn new(out: Tensor) -> candle_core::Result<Self> {
        let out = if !out.is_contiguous() {
            out.contiguous()?
        } else if out.layout().start_offset() != 0 {
            out.affine(1.0, 0.0)?
        } else {
            out
        };
        Ok(Handed(Mutex::new(Some(out))))
    }

    /// For `CustomOp*::cpu_fwd`.
    pub(crate) fn cpu(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        hand_back!(self, Cpu)
    }

    /// For `CustomOp*::cuda_fwd`.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        hand_back!(self, Cuda)
    }
}

/// The forwards of a custom op whose field `out` is a [`Handed`]: the CPU
/// one and (feature `cuda`) the CUDA one, each handing back `out`, for a
/// `CustomOp1`, `CustomOp2` or `CustomOp3` (`handed_forwards!(1)` etc.
/// inside its `impl`).
macro_rules! handed_forwards {
    (@fwd $($arg:ident)*) => {
        fn cpu_fwd(
            &self,
            $($arg: &candle_core::CpuStorage, _: &candle_core::Layout,)*
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $(let _ = $arg;)*
            self.out.cpu()
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            $($arg: &candle_core::CudaStorage, _: &candle_core::Layout,)*
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            $(let _ = $arg;)*
            self.out.cuda()
        }
    };
    (1) => { handed_forwards!(@fwd a); };
    (2) => { handed_forwards!(@fwd a b); };
    (3) => { handed_forwards!(@fwd a b c); };
}
pub(crate) use handed_forwards;

/// `out`, computed from `inputs` (one to three) outside candle's graph,
/// attached to their graph as one op whose backward is `back` (their
/// gradients, in order): how an op or a model with a backward of its own
/// (a network on this path, BigGAN's ops, BigGAN itself) joins the graph.
/// The graph then holds the inputs and the output only. While the search
/// records its chain on this thread ([`super::tape`]), the op is recorded
/// instead and `out` comes back as it is.
pub(crate) fn attach(
    inputs: &[&Tensor],
    out: Tensor,
    back: super::Pullback,
) -> candle_core::Result<Tensor> {
    let (out, back) = match super::tape::record(inputs, out, back) {
        Ok(out) => return Ok(out),
        Err(unrecorded) => unrecorded,
    };
    let op = Attached {
        out: Handed::new(out)?,
        back,
    };
    match inputs {
        [x] => x.apply_op1(op),
        [x, y] => x.apply_op2(y, op),
        [x, y, z] => x.apply_op3(y, z, op),
        _ => candle_core::bail!("gevaldi-attached: {} inputs, expected 1 to 3", inputs.len()),
    }
}

/// See [`attach`].
struct Attached {
    out: Handed,
    back: super::Pullback,
}

impl Attached {
    /// The `n` gradients of the inputs from the output's.
    fn grads(&self, grad: &Tensor, n: usize) -> candle_core::Result<Vec<Option<Tensor>>> {
        let grads = (self.back)(&grad.detach())?;
        if grads.len() != n {
            candle_core::bail!(
                "gevaldi-attached: the backward gave {} gradients for {n} inputs",
                grads.len()
            );
        }
        Ok(grads.into_iter().map(Some).collect())
    }
}

impl CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "gevaldi-attached"
    }

    handed_forwards!(1);

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.grads(grad, 1)?.swap_remove(0))
    }
}

impl CustomOp2 for Attached {
    fn name(&self) -> &'static str {
        "gevaldi-attached"
    }

    handed_forwards!(2);

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(grad, 2)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl CustomOp3 for Attached {
    fn name(&self) -> &'static str {
        "gevaldi-attached"
    }

    handed_forwards!(3);

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(grad, 3)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

/// Runs `nodes` on `x` on this interpreter, attached to `x`'s graph where
/// `x` is tracked.
pub(crate) fn run(
    nodes: &Arc<Vec<Node>>,
    prepared: &Arc<Prepared>,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let (out, tape) = forward(nodes, prepared, x, super::tape::tracked(x))?;
    let Some(tape) = tape else { return Ok(out) };
    attach(&[x], out, Box::new(move |g| Ok(vec![tape.backward(g)?])))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::super::tests::{randn, rel_err};
    use super::super::{Activation, NetBuilder};

    /// A conv's input gradient by naive loops (f64): each output's
    /// gradient times each tap's weight, added at the tap's input.
    #[allow(clippy::too_many_arguments)]
    fn naive_input_grad(
        g: &Tensor,
        weight: &Tensor,
        (h, w): (usize, usize),
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Tensor {
        let (b, cout, ho, wo) = g.dims4().unwrap();
        let (_, cin_g, kh, kw) = weight.dims4().unwrap();
        let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let wv = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let cin = cin_g * groups;
        let mut gx = vec![0f64; b * cin * h * w];
        for n in 0..b {
            for co in 0..cout {
                let grp = co / (cout / groups);
                for oy in 0..ho {
                    for ox in 0..wo {
                        let gval = f64::from(gv[((n * cout + co) * ho + oy) * wo + ox]);
                        for ci in 0..cin_g {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy =
                                        (oy * stride + ky * dilation) as isize - padding as isize;
                                    let ix =
                                        (ox * stride + kx * dilation) as isize - padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let c = grp * cin_g + ci;
                                    let wt = f64::from(wv[((co * cin_g + ci) * kh + ky) * kw + kx]);
                                    gx[((n * cin + c) * h + iy as usize) * w + ix as usize] +=
                                        gval * wt;
                                }
                            }
                        }
                    }
                }
            }
        }
        let gx: Vec<f32> = gx.into_iter().map(|v| v as f32).collect();
        Tensor::from_vec(gx, (b, cin, h, w), &Device::Cpu).unwrap()
    }

    /// Every conv shape the generic backward handles (stride 1, phases,
    /// the transposed fallback; groups, depthwise, dilation, non-square
    /// inputs and kernels, sizes the stride does not divide), on the
    /// generic path and on the CPU engine: forward against candle's conv2d
    /// and input gradient against naive loops. (candle's own autograd
    /// cannot be the reference here: its conv2d backward takes the output
    /// padding of the rows for the columns too, and fails on `[31, 29]`
    /// with stride 4.)
    #[test]
    fn conv_forward_and_input_gradient_match_naive_loops_on_both_paths() {
        // (cin, cout, groups, kh, kw, stride, padding, dilation, h, w)
        let cases = [
            (3, 4, 1, 3, 3, 1, 1, 1, 7, 6),
            (3, 4, 1, 3, 3, 1, 0, 1, 5, 5),
            (2, 3, 1, 1, 1, 1, 0, 1, 4, 5),
            (2, 3, 1, 5, 5, 1, 4, 1, 4, 4),
            (2, 3, 1, 3, 3, 1, 2, 2, 6, 7),
            (2, 3, 1, 2, 3, 1, 1, 1, 6, 5),
            (4, 6, 2, 3, 3, 1, 1, 1, 5, 6),
            (5, 5, 5, 7, 7, 1, 3, 1, 8, 9),
            (4, 4, 4, 3, 3, 1, 2, 2, 7, 7),
            (4, 8, 4, 3, 3, 1, 1, 1, 5, 5),
            (3, 4, 1, 11, 11, 4, 2, 1, 31, 29),
            (3, 4, 1, 7, 7, 2, 3, 1, 17, 16),
            (4, 6, 1, 1, 1, 2, 0, 1, 9, 8),
            (4, 6, 1, 3, 3, 2, 1, 1, 9, 10),
            (3, 5, 1, 4, 4, 4, 0, 1, 12, 13),
            (4, 6, 2, 3, 3, 3, 1, 1, 11, 10),
            (4, 4, 4, 3, 3, 2, 1, 1, 9, 9),
            (3, 4, 1, 2, 3, 2, 1, 1, 8, 7),
            (2, 3, 1, 3, 3, 2, 1, 2, 11, 10),
            (4, 6, 2, 3, 3, 2, 2, 2, 11, 12),
        ];
        for (i, &(cin, cout, groups, kh, kw, stride, padding, dilation, h, w)) in
            cases.iter().enumerate()
        {
            let seed = 100 + 3 * i as u64;
            let weight = randn(&[cout, cin / groups, kh, kw], seed);
            let bias = randn(&[cout], seed + 1);
            let conv = candle_nn::Conv2d::new(
                weight,
                Some(bias),
                candle_nn::Conv2dConfig {
                    padding,
                    stride,
                    dilation,
                    groups,
                    cudnn_fwd_algo: None,
                },
            );
            let mut b = NetBuilder::new();
            let x = b.input();
            let y = b.conv2d(x, &conv);
            let net = b.build(y);
            let x = Var::from_tensor(&randn(&[2, cin, h, w], seed + 2)).unwrap();
            let reference = net.forward_candle(x.as_tensor()).unwrap();
            let m = randn(reference.dims(), seed + 3);
            let gr = naive_input_grad(&m, conv.weight(), (h, w), stride, padding, dilation, groups);
            let scale = gr.abs().unwrap().max_all().unwrap();
            assert!(
                scale.to_scalar::<f32>().unwrap() > 1e-3,
                "case {i}: a zero gradient"
            );
            assert!(net.uses_cpu_engine(x.as_tensor()));
            let engine = candle_core::Module::forward(&net, x.as_tensor()).unwrap();
            let generic = net.forward_generic(x.as_tensor()).unwrap();
            for (path, y) in [("generic", generic), ("engine", engine)] {
                let e = rel_err(&y, &reference);
                assert!(e <= 1e-5, "case {i} ({path}): forward relative error {e}");
                let g = (y * &m).unwrap().sum_all().unwrap().backward().unwrap();
                let e = rel_err(g.get(x.as_tensor()).unwrap(), &gr);
                assert!(
                    e <= 1e-5,
                    "case {i} ({path}): input gradient relative error {e}"
                );
            }
        }
    }

    /// A batch norm (affine map) after a conv is folded into the conv where
    /// the conv's output has no other reader, for strided and depthwise
    /// convs and convs without a bias too; not where the conv's output is
    /// also read elsewhere (or is the net's output). Forward and input
    /// gradient match candle's ops on the unfolded layers.
    #[test]
    fn an_affine_map_after_a_conv_is_folded_into_it() {
        let conv =
            |cin: usize, cout: usize, groups: usize, stride: usize, bias: bool, seed: u64| {
                candle_nn::Conv2d::new(
                    randn(&[cout, cin / groups, 3, 3], seed),
                    bias.then(|| randn(&[cout], seed + 1)),
                    candle_nn::Conv2dConfig {
                        padding: 1,
                        stride,
                        groups,
                        ..Default::default()
                    },
                )
            };
        let mut b = NetBuilder::new();
        let x = b.input();
        // Folded: a plain conv with a bias, a strided one without, a
        // depthwise one.
        let h = b.conv2d(x, &conv(3, 4, 1, 1, true, 1));
        let h = b.affine(h, &randn(&[4], 2), &randn(&[4], 3));
        let h = b.relu(h);
        let h = b.conv2d(h, &conv(4, 6, 1, 2, false, 4));
        let h = b.affine(h, &randn(&[6], 5), &randn(&[6], 6));
        let h = b.conv2d(h, &conv(6, 6, 6, 1, true, 7));
        let h = b.affine(h, &randn(&[6], 8), &randn(&[6], 9));
        // Not folded: the conv's output is also added to the affine map's.
        let c = b.conv2d(h, &conv(6, 6, 1, 1, true, 10));
        let a = b.affine(c, &randn(&[6], 11), &randn(&[6], 12));
        let y = b.add(a, c);
        // Not folded: the conv is the output.
        let y = b.conv2d(y, &conv(6, 2, 1, 1, false, 13));
        let net = b.build(y);
        let prepared = super::Prepared::new(&net.nodes).unwrap();
        let folded: Vec<usize> = (0..net.nodes.len())
            .filter(|&j| prepared.folded[j].is_some())
            .collect();
        assert_eq!(folded, [1, 4, 6]);
        let through: Vec<usize> = (0..net.nodes.len())
            .filter(|&j| prepared.through[j])
            .collect();
        assert_eq!(through, [2, 5, 7]);

        let x = Var::from_tensor(&randn(&[2, 3, 8, 8], 14)).unwrap();
        let reference = net.forward_candle(x.as_tensor()).unwrap();
        let generic = net.forward_generic(x.as_tensor()).unwrap();
        let e = rel_err(&generic, &reference);
        assert!(e <= 1e-5, "forward relative error {e}");
        let m = randn(reference.dims(), 15);
        let grad = |y: Tensor| {
            let g = (y * &m).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor()).unwrap().clone()
        };
        let e = rel_err(&grad(generic), &grad(reference));
        assert!(e <= 1e-5, "input gradient relative error {e}");
    }

    /// Which ReLUs gevaldi's CUDA conv or linear layer applies: one that
    /// alone reads a conv with one group or a linear layer, directly or
    /// through a folded affine map; not one after a depthwise conv, nor
    /// one after a conv something else reads.
    #[test]
    fn a_relu_that_alone_reads_a_conv_is_marked_for_it() {
        let conv = |cin: usize, cout: usize, groups: usize, seed: u64| {
            candle_nn::Conv2d::new(
                randn(&[cout, cin / groups, 3, 3], seed),
                Some(randn(&[cout], seed + 1)),
                candle_nn::Conv2dConfig {
                    padding: 1,
                    groups,
                    ..Default::default()
                },
            )
        };
        let mut b = NetBuilder::new();
        let x = b.input();
        let h = b.conv2d(x, &conv(3, 4, 1, 1)); // 1
        let h = b.relu(h); // 2: fused
        let h = b.conv2d(h, &conv(4, 4, 1, 3)); // 3
        let h = b.affine(h, &randn(&[4], 4), &randn(&[4], 5)); // 4: folded
        let h = b.relu(h); // 5: fused
        let h = b.conv2d(h, &conv(4, 4, 4, 6)); // 6: depthwise
        let h = b.relu(h); // 7
        let c = b.conv2d(h, &conv(4, 4, 1, 8)); // 8: read twice
        let r = b.relu(c); // 9
        let y = b.add(r, c); // 10
        let y = b.flatten(y); // 11
        let y = b.linear(y, &randn(&[5, 4 * 8 * 8], 9), Some(&randn(&[5], 10))); // 12
        let y = b.relu(y); // 13: fused
        let y = b.linear(y, &randn(&[3, 5], 11), None); // 14: the output
        let net = b.build(y);
        let prepared = super::Prepared::new(&net.nodes).unwrap();
        let marked = |v: &[bool]| -> Vec<usize> { (0..v.len()).filter(|&j| v[j]).collect() };
        assert_eq!(marked(&prepared.relu_after), [1, 3, 12]);
        assert_eq!(marked(&prepared.relu_fused), [2, 5, 13]);
    }

    /// The generic max-pool keeps where each maximum came from and adds
    /// the gradient there: the same output and input gradient as candle's
    /// autograd through `zoo::max_pool2d` (PyTorch's: the first maximum of
    /// a window gets it), with padding, ceil mode, overlapping windows and
    /// ties (inputs on a grid of halves, so that windows often tie).
    /// An adaptive average pool's input gradient on the generic path is
    /// candle's ops' bit for bit: to 1 × 1 (a mean over columns, then
    /// rows), to the input's own size (the identity), and to another size
    /// (candle's autograd on the pool).
    #[test]
    fn adaptive_average_pools_give_candles_input_gradient() {
        for (i, &(h, w, oh, ow)) in [(7, 5, 1, 1), (6, 6, 6, 6), (9, 7, 3, 2)]
            .iter()
            .enumerate()
        {
            let mut b = NetBuilder::new();
            let x = b.input();
            let y = b.adaptive_avg_pool2d(x, oh, ow);
            let net = b.build(y);
            let x = Var::from_tensor(&randn(&[2, 3, h, w], 60 + i as u64)).unwrap();
            let m = randn(&[2, 3, oh, ow], 70 + i as u64);
            let grad = |y: Tensor| {
                let g = (y * &m).unwrap().sum_all().unwrap().backward().unwrap();
                let g = g.get(x.as_tensor()).unwrap().clone();
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let reference = grad(net.forward_candle(x.as_tensor()).unwrap());
            let generic = grad(net.forward_generic(x.as_tensor()).unwrap());
            assert_eq!(generic, reference, "case {i}");
        }
    }

    #[test]
    fn max_pools_keep_their_indices_and_match_the_reference() {
        for (i, &(k, s, p, ceil, h, w)) in [
            (3, 2, 0, true, 9, 10),
            (3, 1, 1, true, 7, 6),
            (2, 2, 0, false, 8, 8),
            (2, 2, 0, true, 7, 9),
            (3, 2, 1, false, 11, 8),
            (5, 3, 2, true, 12, 13),
        ]
        .iter()
        .enumerate()
        {
            let mut b = NetBuilder::new();
            let x = b.input();
            let y = b.max_pool2d(x, k, s, p, ceil);
            let net = b.build(y);
            let x = (randn(&[2, 3, h, w], 40 + i as u64) * 2.0)
                .unwrap()
                .round()
                .unwrap()
                .affine(0.5, 0.0)
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let reference = net.forward_candle(x.as_tensor()).unwrap();
            let generic = net.forward_generic(x.as_tensor()).unwrap();
            assert_eq!(
                generic.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                reference.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "case {i}: forward"
            );
            let m = randn(reference.dims(), 50 + i as u64);
            let grad = |y: Tensor| {
                let g = (y * &m).unwrap().sum_all().unwrap().backward().unwrap();
                let g = g.get(x.as_tensor()).unwrap().clone();
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            // The same positions get a gradient; where windows overlap,
            // the sums are added in another order.
            let (a, r) = (grad(generic), grad(reference));
            for (at, (a, r)) in a.iter().zip(&r).enumerate() {
                assert_eq!(
                    *a == 0.0,
                    *r == 0.0,
                    "case {i}: gradient at {at}: {a} vs {r}"
                );
                assert!(
                    (a - r).abs() <= 1e-6 * r.abs().max(1.0),
                    "case {i} at {at}: {a} vs {r}"
                );
            }
        }
    }

    /// The exact GELU's input gradient in f64 on the generic path and on
    /// candle's ops is Φ(x) + x·φ(x) to f64 rounding, as PyTorch's: candle
    /// 0.11's backward of `gelu_erf`, which both took, has 1/√(2π) as
    /// 0.398942, and was off by 1.6e-7 of the largest gradient (found by
    /// the audit, against PyTorch in float64).
    #[test]
    fn the_gelu_gradient_is_exact_in_f64() {
        use candle_core::cpu::erf::erf_f64;
        use candle_core::DType;

        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.act(x, Activation::GeluErf);
        let net = b.build(y);
        let x = randn(&[3, 40], 70)
            .affine(2.0, 0.0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want: Vec<f64> = xs
            .iter()
            .map(|&v| {
                let density = (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
                0.5 * (1.0 + erf_f64(v / std::f64::consts::SQRT_2)) + v * density
            })
            .collect();
        type Forward = fn(&super::super::Net, &Tensor) -> candle_core::Result<Tensor>;
        let paths: [(&str, Forward); 2] = [
            ("generic", super::super::Net::forward_generic),
            ("candle", super::super::Net::forward_candle),
        ];
        for (path, forward) in paths {
            let v = Var::from_tensor(&x).unwrap();
            let y = forward(&net, v.as_tensor()).unwrap();
            let grads = y.sum_all().unwrap().backward().unwrap();
            let got = grads.get(v.as_tensor()).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                assert!((g - w).abs() <= 1e-14, "{path} at x = {x}: {g} vs {w}");
            }
        }
    }

    /// The backward's gradients carry no graph, also past an op whose
    /// gradient candle's autograd computes (GELU, adaptive pooling): a
    /// regression test for a GELU before a max-pool, whose backward then
    /// failed in candle's backward of `scatter_add` (random_nets, seed
    /// 217).
    #[test]
    fn gradients_through_the_generic_backward_are_untracked() {
        let mut b = NetBuilder::new();
        let x = b.input();
        let h = b.act(x, Activation::GeluErf);
        let h = b.max_pool2d(h, 2, 2, 0, false);
        let h = b.act(h, Activation::GeluErf);
        let y = b.adaptive_avg_pool2d(h, 1, 1);
        let net = b.build(y);
        let x = Var::from_tensor(&randn(&[2, 3, 7, 7], 60)).unwrap();
        let reference = net.forward_candle(x.as_tensor()).unwrap();
        let generic = net.forward_generic(x.as_tensor()).unwrap();
        let grad = |y: Tensor| {
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor()).unwrap().clone()
        };
        let (gg, gr) = (grad(generic), grad(reference));
        assert!(
            !gg.track_op(),
            "the generic path's gradient carries a graph"
        );
        let e = rel_err(&gg, &gr);
        assert!(e <= 1e-5, "input gradient relative error {e}");
    }

    /// The forward drops values after their last use and keeps for the
    /// backward only what it reads: a conv, a ReLU and a linear layer keep
    /// the conv's input dims and the ReLU's output, nothing else; and an
    /// untracked input gets no tape.
    #[test]
    fn the_tape_keeps_only_what_the_backward_reads() {
        let dev = Device::Cpu;
        let mut b = NetBuilder::new();
        let x = b.input();
        let conv = candle_nn::Conv2d::new(
            randn(&[2, 1, 3, 3], 1),
            None,
            candle_nn::Conv2dConfig::default(),
        );
        let h = b.conv2d(x, &conv);
        let h = b.relu(h);
        let h = b.flatten(h);
        let y = b.linear(h, &randn(&[3, 18], 2), None);
        let net = b.build(y);
        let prepared = std::sync::Arc::new(super::Prepared::new(&net.nodes).unwrap());
        let x = randn(&[2, 1, 5, 5], 3);
        let (_, tape) = super::forward(&net.nodes, &prepared, &x, false).unwrap();
        assert!(tape.is_none());
        let (y, tape) = super::forward(&net.nodes, &prepared, &x, true).unwrap();
        let kinds: Vec<&str> = tape
            .unwrap()
            .kept
            .iter()
            .map(|k| match k {
                super::Kept::Nothing => "-",
                super::Kept::Output(_) => "output",
                super::Kept::Input(_) => "input",
                super::Kept::MaxPool(_) => "maxpool",
                super::Kept::Dims(_) => "dims",
                super::Kept::Sizes(_) => "sizes",
                super::Kept::Inputs(..) => "inputs",
                super::Kept::Attention(..) => "attention",
            })
            .collect();
        assert_eq!(kinds, ["-", "dims", "output", "dims", "-"]);
        assert_eq!(y.dims(), [2, 3]);
        let untracked = net.forward_generic(&x).unwrap();
        assert!(!untracked.track_op());
        let _ = dev;
    }
}
