//! A compiled [`Program`] as one candle `CustomOp1`: the forward pass on
//! gevaldi's kernels, keeping only what the backward needs, and the
//! backward pass to the input only.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor};

use super::compile::{Kernel, Program, Step};
use super::kernels::attention;
use super::kernels::conv::{ConvK, TransposeSettings};
use super::kernels::{
    elementwise as ew, gemm_new, gemm_new_act_backward, gemm_new_bias_act, pool, transpose, view,
    Dims,
};
use super::net::{concat_expects, Activation};
use super::Engine;

thread_local! {
    /// Bytes kept for the backward by the forward passes on this thread
    /// since the last [`take_kept_bytes`].
    static KEPT_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// The bytes that the engine's forward passes on this thread kept for
/// their backward since the last call (the memory estimate counts them:
/// they are invisible to candle's graph).
pub(crate) fn take_kept_bytes() -> u64 {
    KEPT_BYTES.with(|c| c.replace(0))
}

/// Runs `program` on `x` as one op of candle's graph (recorded instead
/// while the search records its chain, [`super::tape`]).
pub(crate) fn forward(program: &Arc<Program>, x: &Tensor) -> candle_core::Result<Tensor> {
    if super::tape::recording() && super::tape::tracked(x) {
        let (out, back) = forward_taped(program, x)?;
        return super::attach(&[x], out, back);
    }
    x.contiguous()?.apply_op1(NetOp {
        program: Arc::clone(program),
        tape: Mutex::new(None),
    })
}

/// [`forward`] outside candle's graph, with its backward (`[dx]`).
pub(crate) fn forward_taped(
    program: &Arc<Program>,
    x: &Tensor,
) -> candle_core::Result<(Tensor, super::Pullback)> {
    let x = x.detach().contiguous()?;
    let op = NetOp {
        program: Arc::clone(program),
        tape: Mutex::new(None),
    };
    let y = x.apply_op1_no_bwd(&op)?;
    // The backward reads the input's and the output's shapes only (what it
    // needs of the values, the forward kept in `op`'s tape): keeping the
    // tensors held every conv's input and output of BigGAN's blocks for the
    // whole backward.
    let (x_shape, y_shape, dev) = (x.shape().clone(), y.shape().clone(), x.device().clone());
    let back: super::Pullback =
        Box::new(move |g| Ok(vec![op.backward(&x_shape, &y_shape, &dev, g)?]));
    Ok((y, back))
}

/// What a step's backward needs.
enum Kept {
    Nothing,
    /// An activation's output (shared with the next step, not copied).
    Output(Arc<Vec<f32>>),
    /// An activation's slope at its input (GELU: see
    /// [`keeps_slope`](super::kernels::keeps_slope)).
    Slope(Vec<f32>),
    /// A max-pool's input position per output.
    Argmax(Vec<u32>),
    /// A LayerNorm's normalised input (its output too, when its affine
    /// map is folded into the next layer) and 1/σ per row.
    Norm(Arc<Vec<f32>>, Vec<f32>),
    /// A product's inputs (shared with the steps that made them).
    Inputs(Arc<Vec<f32>>, Arc<Vec<f32>>),
    /// An attention's queries, keys and values (shared).
    Attention([Arc<Vec<f32>>; 3]),
}

impl Kept {
    fn bytes(&self) -> u64 {
        4 * match self {
            Kept::Nothing => 0,
            Kept::Output(v) => v.len(),
            Kept::Slope(v) => v.len(),
            Kept::Argmax(v) => v.len(),
            Kept::Norm(a, b) => a.len() + b.len(),
            Kept::Inputs(a, b) => a.len() + b.len(),
            Kept::Attention(qkv) => qkv.iter().map(|v| v.len()).sum(),
        } as u64
    }
}

/// Per step: its inputs' dims, its output's dims, and what its backward
/// needs from the kernel and from the activation.
struct Record {
    inputs: Vec<Dims>,
    out: Dims,
    kernel: Kept,
    act: Kept,
}

/// The op candle's graph sees: the whole network.
struct NetOp {
    program: Arc<Program>,
    /// Set by the forward pass.
    tape: Mutex<Option<Vec<Record>>>,
}

/// The contiguous f32 slice of a storage.
pub(super) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expected f32 values")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous tensor"),
    }
}

/// Whether the CPU engine's kernels run an op on `xs` (BigGAN's norms,
/// attention, residual joins and upsampling): f32 values on the CPU under
/// `auto`.
pub(super) fn cpu_kernels_apply(xs: &[&Tensor]) -> bool {
    Engine::current() == Engine::Auto
        && xs
            .iter()
            .all(|x| x.device().is_cpu() && x.dtype() == DType::F32)
}

/// `f` on the values of contiguous f32 tensors on the CPU (`op` names
/// the op in the error for others).
pub(super) fn on_f32s<R>(
    xs: &[&Tensor],
    op: &str,
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let held: Vec<_> = xs.iter().map(|x| x.storage_and_layout()).collect();
    let slices = held
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(s) => f32s(s, layout, op),
            _ => candle_core::bail!("{op}: expected values on the CPU"),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(f(&slices))
}

/// NHWC values in PyTorch's per-sample order (C, H, W).
fn to_logical(x: Arc<Vec<f32>>, d: Dims) -> Arc<Vec<f32>> {
    if d.spatial && d.h * d.w > 1 && d.c > 1 {
        Arc::new(transpose(&x, d.b, d.h * d.w, d.c))
    } else {
        x
    }
}

/// The inverse of [`to_logical`].
fn from_logical(x: Arc<Vec<f32>>, d: Dims) -> Arc<Vec<f32>> {
    if d.spatial && d.h * d.w > 1 && d.c > 1 {
        Arc::new(transpose(&x, d.b, d.c, d.h * d.w))
    } else {
        x
    }
}

/// The dims of a reshape of `d` to `dims` per sample.
fn reshaped(d: Dims, dims: &[usize]) -> candle_core::Result<Dims> {
    let n: usize = dims.iter().product();
    let to = match *dims {
        [f] => Dims::flat(d.b, f),
        [c, h, w] => Dims {
            b: d.b,
            h,
            w,
            c,
            spatial: true,
        },
        _ => candle_core::bail!("reshape: to [F] or [C, H, W] per sample, got {dims:?}"),
    };
    if n != d.per_sample() {
        candle_core::bail!(
            "reshape: {} values per sample are not {dims:?}",
            d.per_sample()
        );
    }
    Ok(to)
}

/// A transposed conv's output dims for input dims `d`, `cout` output
/// channels.
fn conv_transpose_dims(
    d: Dims,
    cout: usize,
    [kh, kw]: [usize; 2],
    settings: TransposeSettings,
) -> candle_core::Result<Dims> {
    if !d.spatial {
        candle_core::bail!("conv_transpose2d: expected [B, C, H, W], got a flat value");
    }
    Ok(Dims {
        h: settings.len(0, d.h, kh)?,
        w: settings.len(1, d.w, kw)?,
        c: cout,
        ..d
    })
}

/// `d` as `[outer, size, inner]` around PyTorch's `dim` of it (1:
/// channels, 2: rows, 3: columns) in NHWC memory: `outer` runs of `size`
/// blocks of `inner` values, the blocks a narrow or a concat along `dim`
/// takes or joins. An error naming `op` for a dim the value lacks.
fn around(d: Dims, dim: usize, op: &str) -> candle_core::Result<(usize, usize, usize)> {
    match (dim, d.spatial) {
        (1, _) => Ok((d.b * d.h * d.w, d.c, 1)),
        (2, true) => Ok((d.b, d.h, d.w * d.c)),
        (3, true) => Ok((d.b * d.h, d.w, d.c)),
        _ => candle_core::bail!("{op}: dim {dim} of a value of shape {:?}", d.shape()),
    }
}

/// `d` with `n` entries along PyTorch's `dim` (see [`around`]).
fn resized(d: Dims, dim: usize, n: usize) -> Dims {
    match dim {
        1 => Dims { c: n, ..d },
        2 => Dims { h: n, ..d },
        _ => Dims { w: n, ..d },
    }
}

/// Whether a product's second value `e` is a gate per channel of the
/// first, `d` (`[B, C, 1, 1]` for `[B, C, H, W]`), rather than of its
/// shape; an error where it is neither.
fn mul_gate(d: Dims, e: Dims) -> candle_core::Result<bool> {
    if e == d {
        return Ok(false);
    }
    if d.spatial && e.spatial && (e.b, e.c, e.h, e.w) == (d.b, d.c, 1, 1) {
        return Ok(true);
    }
    candle_core::bail!(
        "mul: shapes {:?} and {:?}, expected the same or [B, C, H, W] and [B, C, 1, 1]",
        d.shape(),
        e.shape()
    )
}

fn check_dense(d: Dims, nin: usize) -> candle_core::Result<()> {
    if d.c != nin {
        candle_core::bail!("linear: {} input features, expected {nin}", d.c);
    }
    Ok(())
}

/// A kernel's output with the step's activation applied: the activation's
/// slope where it keeps it (GELU), else empty.
struct Fused(Vec<f32>);

/// What [`run_kernel`] returns: the output, its dims, what the kernel's
/// backward needs, and [`Fused`] where the kernel applied the activation.
struct KernelOut(Arc<Vec<f32>>, Dims, Kept, Option<Fused>);

/// Runs one step's kernel: its output, dims and what its backward needs,
/// and [`Fused`] where the kernel applied the step's activation itself
/// (conv and dense, with their bias).
fn run_kernel(step: &Step, xs: &[&Arc<Vec<f32>>], ds: &[Dims]) -> candle_core::Result<KernelOut> {
    let (x, d) = (xs[0], ds[0]);
    let (y, o, kept) = match &step.kernel {
        Kernel::Conv(k) => {
            let (y, slope) = k.forward(x, d, step.act)?;
            return Ok(KernelOut(
                Arc::new(y),
                k.out_dims(d)?,
                Kept::Nothing,
                Some(Fused(slope)),
            ));
        }
        Kernel::Dense { nin, nout, w, bias } => {
            check_dense(d, *nin)?;
            let rows = d.b * d.h * d.w;
            let (y, slope) = gemm_new_bias_act(
                view(x, 0, rows, *nin, *nin),
                view(w, 0, *nout, *nin, *nin).t(),
                bias,
                step.act,
            );
            let o = Dims { c: *nout, ..d };
            return Ok(KernelOut(Arc::new(y), o, Kept::Nothing, Some(Fused(slope))));
        }
        Kernel::Affine { scale, shift } => {
            if d.c != scale.len() {
                candle_core::bail!("affine: {} channels, expected {}", d.c, scale.len());
            }
            let mut y = x.to_vec();
            ew::affine(&mut y, scale, shift);
            (Arc::new(y), d, Kept::Nothing)
        }
        Kernel::Act => (Arc::new(x.to_vec()), d, Kept::Nothing),
        Kernel::MaxPool(settings) => {
            let (y, o, arg) = pool::max_pool(x, d, settings)?;
            (Arc::new(y), o, Kept::Argmax(arg))
        }
        Kernel::AdaptiveAvgPool { oh, ow } => {
            if !d.spatial {
                candle_core::bail!("adaptive_avg_pool2d: expected [B, C, H, W]");
            }
            pool::check_adaptive(*oh, *ow)?;
            let o = Dims {
                h: *oh,
                w: *ow,
                ..d
            };
            if (d.h, d.w) == (*oh, *ow) {
                return Ok(KernelOut(Arc::clone(x), o, Kept::Nothing, None));
            }
            (
                Arc::new(pool::adaptive_avg(x, d, *oh, *ow, false)),
                o,
                Kept::Nothing,
            )
        }
        Kernel::AvgPool(settings) => {
            let (y, o) = pool::avg_pool(x, d, settings)?;
            (Arc::new(y), o, Kept::Nothing)
        }
        Kernel::Upsample(scale) => {
            let (y, o) = pool::upsample(x, d, *scale)?;
            (Arc::new(y), o, Kept::Nothing)
        }
        Kernel::ConvTranspose {
            conv,
            bias,
            kernel,
            settings,
        } => {
            let o = conv_transpose_dims(d, bias.len(), *kernel, *settings)?;
            // The conv it transposes maps `o` back to `d`: this op is
            // that conv's input gradient.
            let back = conv.out_dims(o)?;
            if back.c != d.c {
                candle_core::bail!(
                    "conv_transpose2d: input of {} channels, the weight [Cin, Cout, kh, kw] takes {}",
                    d.c,
                    back.c
                );
            }
            if back != d {
                candle_core::bail!("conv_transpose2d: {o:?} does not map back to {d:?}");
            }
            // The bias and the activation on each chunk of the output
            // right after its col2im.
            let (y, slope) = conv.backward_bias_act(x, o, Some((bias, step.act)))?;
            return Ok(KernelOut(Arc::new(y), o, Kept::Nothing, Some(Fused(slope))));
        }
        Kernel::Flatten => (
            to_logical(Arc::clone(x), d),
            Dims::flat(d.b, d.per_sample()),
            Kept::Nothing,
        ),
        Kernel::Reshape(dims) => {
            let o = reshaped(d, dims)?;
            (
                from_logical(to_logical(Arc::clone(x), d), o),
                o,
                Kept::Nothing,
            )
        }
        Kernel::Concat { dim } => {
            let (outer, _, inner) = around(d, *dim, "concat")?;
            let size = |e: &Dims| around(*e, *dim, "concat").map(|(_, n, _)| n);
            let n = size(&d)?;
            if ds
                .iter()
                .any(|e| e.spatial != d.spatial || resized(*e, *dim, n) != d)
            {
                let shapes: Vec<Vec<usize>> = ds.iter().map(|e| e.shape()).collect();
                candle_core::bail!("concat: shapes {shapes:?}, {}", concat_expects(*dim));
            }
            let parts = xs
                .iter()
                .zip(ds)
                .map(|(x, e)| Ok((x.as_slice(), size(e)? * inner)))
                .collect::<candle_core::Result<Vec<(&[f32], usize)>>>()?;
            let total = ds.iter().map(size).sum::<candle_core::Result<usize>>()?;
            (
                Arc::new(ew::concat(&parts, outer)),
                resized(d, *dim, total),
                Kept::Nothing,
            )
        }
        Kernel::Narrow { dim, start, len } => {
            let (outer, size, inner) = around(d, *dim, "narrow")?;
            if start + len > size {
                candle_core::bail!(
                    "narrow: entries [{start}, {}) of dim {dim}, which has {size}",
                    start + len,
                );
            }
            (
                Arc::new(ew::split(
                    x,
                    outer,
                    size * inner,
                    start * inner,
                    len * inner,
                )),
                resized(d, *dim, *len),
                Kept::Nothing,
            )
        }
        Kernel::Constant { value, per } => {
            let mut y = Vec::with_capacity(d.b * value.len());
            for _ in 0..d.b {
                y.extend_from_slice(value);
            }
            (Arc::new(y), Dims { b: d.b, ..*per }, Kept::Nothing)
        }
        Kernel::ChannelShuffle { groups } => {
            if !d.c.is_multiple_of(*groups) {
                candle_core::bail!(
                    "channel_shuffle: {} channels do not split into {groups} groups",
                    d.c
                );
            }
            let y = ew::channel_shuffle(x, d.c, *groups);
            (Arc::new(y), d, Kept::Nothing)
        }
        Kernel::Add => {
            if ds[1] != d {
                candle_core::bail!(
                    "add: shapes {:?} and {:?}, expected the same",
                    d.shape(),
                    ds[1].shape()
                );
            }
            let mut y = x.to_vec();
            ew::add_into(&mut y, xs[1]);
            (Arc::new(y), d, Kept::Nothing)
        }
        Kernel::Mul => {
            let gate = mul_gate(d, ds[1])?;
            let y = ew::mul(x, xs[1], gate.then_some(d.c));
            (
                Arc::new(y),
                d,
                Kept::Inputs(Arc::clone(x), Arc::clone(xs[1])),
            )
        }
        Kernel::Attention { scale } => {
            let s = attention::Sizes::of(d, ds[1], ds[2])?;
            let y = attention::forward(x, xs[1], xs[2], s, *scale);
            let o = Dims { c: s.c, ..d };
            let kept = Kept::Attention([Arc::clone(x), Arc::clone(xs[1]), Arc::clone(xs[2])]);
            (Arc::new(y), o, kept)
        }
        Kernel::LayerNorm { c, eps, affine } => {
            if d.c != *c {
                candle_core::bail!("layer_norm: {} channels, expected {c}", d.c);
            }
            let affine = affine.as_ref().map(|(w, b)| (&w[..], &b[..]));
            let (y, xhat, rstd) = ew::layer_norm(x, d.c, affine, *eps);
            let xhat = Arc::new(xhat);
            let y = y.map_or_else(|| Arc::clone(&xhat), Arc::new);
            (y, d, Kept::Norm(xhat, rstd))
        }
    };
    Ok(KernelOut(y, o, kept, None))
}

/// The gradients of a step's inputs from `g`, the gradient of its output
/// before the activation. With `through`, a dense layer's input gradient
/// is also taken back through the activation that produced its input
/// (that activation and its record; see [`NetOp::run_backward`]).
fn kernel_backward(
    step: &Step,
    g: Vec<f32>,
    r: &Record,
    through: Option<(Activation, &[f32])>,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let d = r.inputs[0];
    Ok(match (&step.kernel, &r.kernel) {
        (Kernel::Conv(k), _) => vec![k.backward(&g, d)?],
        (Kernel::Dense { nin, nout, w, .. }, _) => {
            let rows = d.b * d.h * d.w;
            let (g, w) = (
                view(&g, 0, rows, *nout, *nout),
                view(w, 0, *nout, *nin, *nin),
            );
            vec![match through {
                Some((a, kept)) => gemm_new_act_backward(g, w, a, kept),
                None => gemm_new(g, w),
            }]
        }
        (Kernel::Affine { scale, .. }, _) => {
            let mut g = g;
            ew::scale(&mut g, scale);
            vec![g]
        }
        (Kernel::Act, _) => vec![g],
        (Kernel::MaxPool(_), Kept::Argmax(arg)) => vec![pool::max_unpool(&g, arg, d, r.out)],
        (Kernel::AdaptiveAvgPool { oh, ow }, _) => {
            if (d.h, d.w) == (*oh, *ow) {
                vec![g]
            } else {
                vec![pool::adaptive_avg(&g, d, *oh, *ow, true)]
            }
        }
        (Kernel::AvgPool(settings), _) => {
            vec![pool::avg_pool_backward(&g, d, r.out, settings)]
        }
        (Kernel::Upsample(scale), _) => vec![pool::upsample_backward(&g, d, *scale)],
        (Kernel::ConvTranspose { conv, .. }, _) => vec![conv.forward(&g, r.out, None)?.0],
        (Kernel::Flatten | Kernel::Reshape(_), _) => {
            let g = from_logical(to_logical(Arc::new(g), r.out), d);
            vec![Arc::try_unwrap(g).unwrap_or_else(|g| g.as_ref().clone())]
        }
        (Kernel::Concat { dim }, _) => {
            let (outer, total, inner) = around(r.out, *dim, "concat")?;
            let mut at = 0;
            r.inputs
                .iter()
                .map(|e| {
                    let n = around(*e, *dim, "concat")?.1 * inner;
                    let part = ew::split(&g, outer, total * inner, at, n);
                    at += n;
                    Ok(part)
                })
                .collect::<candle_core::Result<_>>()?
        }
        (Kernel::Narrow { dim, start, .. }, _) => {
            let (outer, size, inner) = around(d, *dim, "narrow")?;
            vec![ew::widen(&g, outer, size * inner, start * inner)]
        }
        // Its input gives the batch size only.
        (Kernel::Constant { .. }, _) => vec![],
        (Kernel::ChannelShuffle { groups }, _) => {
            vec![ew::channel_shuffle(&g, d.c, d.c / groups)]
        }
        (Kernel::Add, _) => vec![g.clone(), g],
        (Kernel::Mul, Kept::Inputs(a, b)) => {
            let per_channel = (r.inputs[1] != d).then_some(d.c);
            let (ga, gb) = ew::mul_backward(&g, a, b, per_channel);
            vec![ga, gb]
        }
        (Kernel::Attention { scale }, Kept::Attention([q, k, v])) => {
            let s = attention::Sizes::of(d, r.inputs[1], r.inputs[2])?;
            attention::backward(&g, q, k, v, s, *scale).into()
        }
        (Kernel::LayerNorm { c, affine, .. }, Kept::Norm(xhat, rstd)) => {
            let w = affine.as_ref().map(|(w, _)| &w[..]);
            vec![ew::layer_norm_backward(&g, xhat, rstd, *c, w)]
        }
        _ => candle_core::bail!("gevaldi engine: backward without its forward record"),
    })
}

/// An [`Kernel::Add`] step `i` run in the buffer of an input that this
/// step reads last and nothing else holds (the output of a conv whose
/// batch norm is folded, say, rather than a kept ReLU output): no copy.
/// `None` where neither input is such a buffer (the step then runs
/// [`run_kernel`], which copies), or the step is not an Add.
fn add_in_place(
    p: &Program,
    values: &mut [Option<Arc<Vec<f32>>>],
    dims: &[Dims],
    step: &Step,
    i: usize,
) -> Option<KernelOut> {
    let (Kernel::Add, &[a, b]) = (&step.kernel, step.inputs.as_slice()) else {
        return None;
    };
    if a == b || dims[a] != dims[b] {
        return None;
    }
    for (s, other) in [(a, b), (b, a)] {
        let Some(o) = values[other].clone() else {
            continue;
        };
        if p.last_use[s] != i || s == p.output {
            continue;
        }
        match Arc::try_unwrap(values[s].take()?) {
            Ok(mut y) => {
                ew::add_into(&mut y, &o);
                return Some(KernelOut(Arc::new(y), dims[s], Kept::Nothing, None));
            }
            Err(v) => values[s] = Some(v),
        }
    }
    None
}

impl NetOp {
    /// The conv of a program that is one [`ConvK::is_plain_pointwise`]
    /// conv without an activation, on spatial input dims `d`: it runs on
    /// NCHW values as they are (no transposes, nothing kept).
    fn plain_pointwise(&self, d: Dims) -> Option<&ConvK> {
        match self.program.steps.as_slice() {
            [Step {
                kernel: Kernel::Conv(k),
                act: None,
                ..
            }] if d.spatial && k.is_plain_pointwise() && k.out_dims(d).is_ok() => Some(k),
            _ => None,
        }
    }

    /// The output, its dims and the bytes kept for the backward.
    fn run_forward(&self, x: Vec<f32>, d: Dims) -> candle_core::Result<(Arc<Vec<f32>>, Dims, u64)> {
        let p = &self.program;
        let mut values: Vec<Option<Arc<Vec<f32>>>> = vec![None; p.steps.len() + 1];
        let mut dims = vec![d; p.steps.len() + 1];
        values[0] = Some(Arc::new(x));
        let mut tape = Vec::with_capacity(p.steps.len());
        for (i, step) in p.steps.iter().enumerate() {
            let ds: Vec<Dims> = step.inputs.iter().map(|&s| dims[s]).collect();
            let KernelOut(y, out, kernel, fused) =
                match add_in_place(p, &mut values, &dims, step, i) {
                    Some(k) => k,
                    None => {
                        let xs: Vec<&Arc<Vec<f32>>> = step
                            .inputs
                            .iter()
                            .map(|&s| values[s].as_ref().expect("a value before its last use"))
                            .collect();
                        run_kernel(step, &xs, &ds)?
                    }
                };
            let (y, act) = match (step.act, fused) {
                (None, _) => (y, Kept::Nothing),
                (Some(_), Some(Fused(slope))) if !slope.is_empty() => (y, Kept::Slope(slope)),
                (Some(_), Some(Fused(_))) => {
                    let kept = Kept::Output(Arc::clone(&y));
                    (y, kept)
                }
                (Some(a), None) => {
                    let mut y = Arc::try_unwrap(y).unwrap_or_else(|y| y.as_ref().clone());
                    let slope = ew::apply_act(a, &mut y);
                    let y = Arc::new(y);
                    let kept = match slope {
                        Some(slope) => Kept::Slope(slope),
                        None => Kept::Output(Arc::clone(&y)),
                    };
                    (y, kept)
                }
            };
            for &s in &step.inputs {
                if p.last_use[s] == i && s != p.output {
                    values[s] = None;
                }
            }
            values[i + 1] = Some(y);
            dims[i + 1] = out;
            tape.push(Record {
                inputs: ds,
                out,
                kernel,
                act,
            });
        }
        let bytes: u64 = tape.iter().map(|r| r.kernel.bytes() + r.act.bytes()).sum();
        *self.tape.lock().expect("tape") = Some(tape);
        let y = values[p.output].take().expect("the output");
        Ok((y, dims[p.output], bytes))
    }

    fn run_backward(&self, g: Vec<f32>, tape: &[Record]) -> candle_core::Result<Vec<f32>> {
        let p = &self.program;
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; p.steps.len() + 1];
        // Slots whose gradient already went through the activation of the
        // step that produced them.
        let mut through_done = vec![false; p.steps.len() + 1];
        grads[p.output] = Some(g);
        for (i, (step, r)) in p.steps.iter().zip(tape).enumerate().rev() {
            let Some(mut g) = grads[i + 1].take() else {
                continue;
            };
            if let (Some(a), false) = (step.act, through_done[i + 1]) {
                ew::act_backward(a, &mut g, kept(&r.act)?);
            }
            // A dense layer whose input is the activated output of another
            // step, read by nothing else: its input gradient goes through
            // that activation as each piece of its product is made (the
            // activation's backward is linear in the gradient, so only a
            // sole reader's gradient can take it alone).
            let through = match (&step.kernel, step.inputs.as_slice()) {
                (Kernel::Dense { .. }, &[s]) if s > 0 && p.readers[s] == 1 => {
                    match p.steps[s - 1].act {
                        Some(a) => {
                            through_done[s] = true;
                            Some((a, kept(&tape[s - 1].act)?))
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            for (&s, dx) in step
                .inputs
                .iter()
                .zip(kernel_backward(step, g, r, through)?)
            {
                match &mut grads[s] {
                    Some(acc) => ew::add_into(acc, &dx),
                    slot => *slot = Some(dx),
                }
            }
        }
        Ok(grads[0].take().unwrap_or_default())
    }
}

/// An activation's record for its backward: its output or its slope.
fn kept(k: &Kept) -> candle_core::Result<&[f32]> {
    match k {
        Kept::Output(y) => Ok(y),
        Kept::Slope(s) => Ok(s),
        _ => candle_core::bail!("gevaldi engine: activation without its record"),
    }
}

/// Runs `f` on a thread of rayon's pool (this one, if it is one).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("the scope ran its body")
}

/// `[B, C, H, W]` or `[B, F]` to NHWC dims.
fn input_dims(shape: &[usize]) -> Option<Dims> {
    match *shape {
        [b, c, h, w] => Some(Dims {
            b,
            h,
            w,
            c,
            spatial: true,
        }),
        [b, f] => Some(Dims::flat(b, f)),
        _ => None,
    }
}

impl CustomOp1 for NetOp {
    fn name(&self) -> &'static str {
        "gevaldi-engine"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let Some(d) = input_dims(l.dims()) else {
            candle_core::bail!(
                "{}: expected [B, C, H, W] or [B, F], got {:?}",
                self.name(),
                l.dims()
            )
        };
        if let Some(k) = self.plain_pointwise(d) {
            let o = k.out_dims(d)?;
            let y = k.forward_nchw(x, d.b, d.h * d.w);
            return Ok((CpuStorage::F32(y), Shape::from((o.b, o.c, o.h, o.w))));
        }
        let x = if d.spatial {
            transpose(x, d.b, d.c, d.h * d.w)
        } else {
            x.to_vec()
        };
        // On one of rayon's threads: each kernel's parallel loop then
        // starts from a worker (the others steal its pieces) instead of
        // waking the pool and putting this thread to sleep, which with
        // dozens of kernels a pass was a quarter of an MNIST step in the
        // kernel's scheduler (`perf`).
        let (y, o, bytes) = in_pool(|| self.run_forward(x, d))?;
        KEPT_BYTES.with(|c| c.set(c.get() + bytes));
        let y = Arc::try_unwrap(to_logical(y, o)).unwrap_or_else(|y| y.as_ref().clone());
        let shape = if o.spatial {
            Shape::from((o.b, o.c, o.h, o.w))
        } else {
            Shape::from((o.b, o.c))
        };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.backward(x.shape(), res.shape(), x.device(), grad)
            .map(Some)
    }
}

impl NetOp {
    /// The gradient of the input (of shape `x`, on `dev`) from `grad`, the
    /// output's (of shape `out`), after the forward pass.
    fn backward(
        &self,
        x: &Shape,
        out: &Shape,
        dev: &candle_core::Device,
        grad: &Tensor,
    ) -> candle_core::Result<Tensor> {
        if let Some((k, d)) = input_dims(x.dims()).and_then(|d| Some((self.plain_pointwise(d)?, d)))
        {
            let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let dx = k.backward_nchw(&g, d.b, d.h * d.w);
            return Tensor::from_vec(dx, x, dev);
        }
        let guard = self.tape.lock().expect("tape");
        let Some(tape) = guard.as_ref() else {
            candle_core::bail!("{}: backward before forward", self.name())
        };
        let (Some(o), Some(d)) = (input_dims(out.dims()), input_dims(x.dims())) else {
            candle_core::bail!("{}: unexpected shapes", self.name())
        };
        let g = Arc::new(grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?);
        let g = Arc::try_unwrap(from_logical(g, o)).unwrap_or_else(|g| g.as_ref().clone());
        let dx = Arc::new(in_pool(|| self.run_backward(g, tape))?);
        let dx = if dx.len() == d.len() {
            Arc::try_unwrap(to_logical(dx, d)).unwrap_or_else(|g| g.as_ref().clone())
        } else {
            vec![0.0; d.len()]
        };
        Tensor::from_vec(dx, x, dev)
    }
}
