//! Frozen networks as one differentiable op, run by gevaldi's own CPU
//! kernels: forward, and backward to the input only.
//!
//! The search differentiates with respect to z only, through models whose
//! weights never change. Run through candle's autograd, such a model still
//! gets every conv and linear layer's weight gradient, backpropagates each
//! conv through `conv_transpose2d`, runs bias, activation and pooling as
//! separate passes, and allocates a zero gradient for every tensor of the
//! graph and adds into it; candle 0.11's CPU conv builds its im2col tiles
//! element by element with bounds checks. On the MNIST fixtures that made a
//! search step several times slower than JAX's (see the README's
//! Performance section). A [`FrozenNet`] is a chain of layers that enters
//! candle's graph as one op:
//!
//! - activations are kept channels-last (NHWC), so a 3×3 conv's im2col
//!   copies runs of 3·C contiguous values, and a conv is one matrix product
//!   per chunk of samples (`ndarray`'s `general_mat_mul`), chunks in
//!   parallel (rayon), the im2col buffer reused per thread;
//! - bias and activation are applied to each chunk of a layer's output
//!   while it is in cache;
//! - the backward pass computes the input's gradient only: a stride-1 same
//!   conv's is a conv of the gradient with the flipped, transposed kernel, a
//!   linear layer's one matrix product, 2×2 max-pooling sends each window's
//!   gradient to its first maximum (as [`max_pool2x2`](super::max_pool2x2)
//!   does), and flattening is free (the next layer's weight columns are
//!   permuted from PyTorch's C·H·W order once, at load).
//!
//! The results equal candle_nn's layers to float rounding (the order of the
//! sums differs); the unit tests compare both, outputs and input gradients,
//! and the gradient audit checks every built-in model. A model uses its
//! `FrozenNet` for f32 tensors on the CPU when its weights are not
//! variables; a model being trained, on a GPU, or with a layer this does
//! not cover (a strided conv) runs candle's ops.
//!
//! A NaN propagates as in PyTorch: ReLU of NaN is NaN (candle 0.11's CPU
//! `relu` is `v.max(0.0)`, which returns 0 for NaN) and a pooling window
//! with a NaN pools to NaN, so a generator that emits NaN cannot pass as a
//! confident prediction. (The search checks the generator's output anyway.)

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use candle_nn::{Conv2d, Linear};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// The activation after a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// None.
    Identity,
    /// max(x, 0), NaN for NaN (as PyTorch's ReLU).
    Relu,
    /// 1 / (1 + e^−x), as candle_nn's `sigmoid` computes it.
    Sigmoid,
}

impl Act {
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            // Not `v.max(0.0)`: `f32::max` returns the other argument for
            // a NaN, which turned a NaN input into a confident 0.
            Act::Relu => {
                if v.is_nan() {
                    v
                } else {
                    v.max(0.0)
                }
            }
            Act::Sigmoid => ((-v).exp() + 1.0).recip(),
        }
    }

    /// The gradient at the pre-activation from the gradient `g` at the
    /// output `y`.
    fn grad(self, g: f32, y: f32) -> f32 {
        match self {
            Act::Identity => g,
            // A NaN output passes its gradient on (as PyTorch's
            // `threshold_backward`), so the NaN reaches z.
            Act::Relu => {
                if y <= 0.0 {
                    0.0
                } else {
                    g
                }
            }
            Act::Sigmoid => g * y * (1.0 - y),
        }
    }
}

/// One layer of a [`FrozenNet`], described with candle_nn's layers.
#[derive(Clone, Debug)]
pub enum Layer {
    /// `act(conv(x) + bias)`: 3×3, stride 1, padding 1 (others are not
    /// covered: the model then runs candle's ops).
    Conv(Conv2d, Act),
    /// `act(x Wᵀ + bias)`.
    Linear(Linear, Act),
    /// 2×2 max-pooling with stride 2.
    MaxPool2x2,
    /// PyTorch's `flatten(1)` of `[B, C, H, W]` with the given H and W.
    Flatten(usize, usize),
    /// Reshape `[B, F]` to `[B, 1, H, W]` (a grey image) with the given H, W.
    ToImage(usize, usize),
}

/// A chain of layers with frozen weights; see the module docs.
#[derive(Clone, Debug)]
pub struct FrozenNet {
    ops: Arc<Vec<Op>>,
}

/// A compiled layer.
#[derive(Debug)]
enum Op {
    Conv {
        cin: usize,
        cout: usize,
        /// `[9·cin, cout]`, rows ordered (ky, kx, ci).
        forward: Vec<f32>,
        /// The flipped, transposed kernel `[9·cout, cin]`, rows (ky, kx, co).
        backward: Vec<f32>,
        bias: Vec<f32>,
        act: Act,
    },
    Dense {
        nin: usize,
        nout: usize,
        /// `[nin, nout]`.
        forward: Vec<f32>,
        /// `[nout, nin]`.
        backward: Vec<f32>,
        bias: Vec<f32>,
        act: Act,
    },
    Pool,
    /// Spatial to flat (no data movement in NHWC).
    Flatten,
    /// Flat to a one-channel image (no data movement).
    ToImage(usize, usize),
}

/// Dims of an activation: `[B, H, W, C]`, flat ones as H = W = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Dims {
    fn per_sample(&self) -> usize {
        self.h * self.w * self.c
    }
}

impl FrozenNet {
    /// The chain of `layers`; `None` when a layer's weights are variables
    /// (a model being trained), not f32 on the CPU, or of a kind this does
    /// not cover.
    pub fn new(layers: &[Layer]) -> Option<Self> {
        let ops = layers
            .iter()
            .enumerate()
            .map(|(i, l)| compile(l, layers.get(i.wrapping_sub(1))))
            .collect::<Option<Vec<_>>>()?;
        Some(FrozenNet { ops: Arc::new(ops) })
    }

    /// Whether [`FrozenNet::forward`] applies to `x` (an f32 CPU tensor,
    /// and `GEVALDI_ENGINE` is not `candle`: see [`crate::engine`]);
    /// otherwise run the model's own layers.
    pub fn applies_to(x: &Tensor) -> bool {
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && crate::engine::Engine::current() != crate::engine::Engine::Candle
    }

    /// Runs the chain on `x` (`[B, C, H, W]` or `[B, F]`); the result's
    /// gradient flows back to `x`, and only to `x`, through the chain's own
    /// backward.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(NetOp {
            ops: Arc::clone(&self.ops),
            kept: Mutex::new(None),
        })
    }
}

fn frozen_f32(t: &Tensor) -> Option<Vec<f32>> {
    if t.is_variable() || !t.device().is_cpu() || t.dtype() != DType::F32 {
        return None;
    }
    t.flatten_all().ok()?.to_vec1::<f32>().ok()
}

fn compile(layer: &Layer, previous: Option<&Layer>) -> Option<Op> {
    Some(match layer {
        Layer::Conv(conv, act) => {
            let c = conv.config();
            let (cout, cin, kh, kw) = conv.weight().dims4().ok()?;
            if (c.stride, c.padding, c.dilation, c.groups, kh, kw) != (1, 1, 1, 1, 3, 3) {
                return None;
            }
            let w = frozen_f32(conv.weight())?;
            let at = |o: usize, i: usize, y: usize, x: usize| w[((o * cin + i) * 3 + y) * 3 + x];
            let mut forward = vec![0f32; 9 * cin * cout];
            let mut backward = vec![0f32; 9 * cout * cin];
            for o in 0..cout {
                for i in 0..cin {
                    for y in 0..3 {
                        for x in 0..3 {
                            forward[((y * 3 + x) * cin + i) * cout + o] = at(o, i, y, x);
                            backward[((y * 3 + x) * cout + o) * cin + i] = at(o, i, 2 - y, 2 - x);
                        }
                    }
                }
            }
            Op::Conv {
                cin,
                cout,
                forward,
                backward,
                bias: bias(conv.bias(), cout)?,
                act: *act,
            }
        }
        Layer::Linear(linear, act) => {
            let (nout, nin) = linear.weight().dims2().ok()?;
            let mut w = frozen_f32(linear.weight())?;
            // After a flatten, the columns are in PyTorch's (c, y, x) order;
            // NHWC activations flatten in (y, x, c) order.
            if let Some(Layer::Flatten(h, wd)) = previous {
                let c = nin / (h * wd);
                if c * h * wd != nin {
                    return None;
                }
                let chw = w.clone();
                for o in 0..nout {
                    for ch in 0..c {
                        for p in 0..h * wd {
                            w[o * nin + p * c + ch] = chw[o * nin + ch * h * wd + p];
                        }
                    }
                }
            }
            let mut forward = vec![0f32; nin * nout];
            for o in 0..nout {
                for i in 0..nin {
                    forward[i * nout + o] = w[o * nin + i];
                }
            }
            Op::Dense {
                nin,
                nout,
                forward,
                backward: w,
                bias: bias(linear.bias(), nout)?,
                act: *act,
            }
        }
        Layer::MaxPool2x2 => Op::Pool,
        Layer::Flatten(..) => Op::Flatten,
        Layer::ToImage(h, w) => Op::ToImage(*h, *w),
    })
}

fn bias(b: Option<&Tensor>, n: usize) -> Option<Vec<f32>> {
    match b {
        Some(b) => frozen_f32(b).filter(|v| v.len() == n),
        None => Some(vec![0.0; n]),
    }
}

thread_local! {
    /// Bytes the frozen nets run on this thread kept for their backward
    /// passes (for the memory estimate, `crate::memory`).
    static KEPT_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The bytes that frozen nets run on this thread kept for their backward
/// passes since the last call.
pub(crate) fn take_kept_bytes() -> u64 {
    KEPT_BYTES.with(|c| c.replace(0))
}

fn kept_bytes(kept: &[(Dims, Kept)]) -> u64 {
    kept.iter()
        .map(|(_, k)| match k {
            Kept::Nothing => 0,
            Kept::Output(v) => (v.len() * std::mem::size_of::<f32>()) as u64,
            Kept::Argmax(v) => v.len() as u64,
        })
        .sum()
}

/// The op candle's graph sees: the whole chain.
struct NetOp {
    ops: Arc<Vec<Op>>,
    /// Per op: its input's dims and what its backward needs; set by the
    /// forward pass.
    kept: Mutex<Option<Vec<(Dims, Kept)>>>,
}

enum Kept {
    Nothing,
    /// The layer's output (for the activation's gradient), shared with the
    /// next layer rather than copied.
    Output(Arc<Vec<f32>>),
    /// Each pooling window's first maximum, 0..4.
    Argmax(Vec<u8>),
}

impl CustomOp1 for NetOp {
    fn name(&self) -> &'static str {
        "gevaldi-frozen-net"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let (h, mut dims) = match *l.dims() {
            [b, c, hh, w] => (transpose(x, b, c, hh * w), Dims { b, h: hh, w, c }),
            [b, f] => (
                x.to_vec(),
                Dims {
                    b,
                    h: 1,
                    w: 1,
                    c: f,
                },
            ),
            _ => candle_core::bail!(
                "{}: expected [B, C, H, W] or [B, F], got {:?}",
                self.name(),
                l.dims()
            ),
        };
        let mut h = Arc::new(h);
        let mut kept = Vec::with_capacity(self.ops.len());
        for op in self.ops.iter() {
            let (y, d, k) = op.forward(h, dims)?;
            kept.push((dims, k));
            h = y;
            dims = d;
        }
        KEPT_BYTES.with(|c| c.set(c.get() + kept_bytes(&kept)));
        *self.kept.lock().expect("kept") = Some(kept);
        // The last layer keeps its output too: the result is a copy (of
        // logits or a decoded batch, the smallest activation).
        let mut h = Arc::try_unwrap(h).unwrap_or_else(|shared| shared.as_ref().clone());
        let shape = match self.ops.last() {
            Some(Op::ToImage(hh, w)) => Shape::from((dims.b, 1, *hh, *w)),
            _ if dims.h == 1 && dims.w == 1 => Shape::from((dims.b, dims.c)),
            _ => {
                h = transpose(&h, dims.b, dims.h * dims.w, dims.c);
                Shape::from((dims.b, dims.c, dims.h, dims.w))
            }
        };
        Ok((CpuStorage::F32(h), shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let guard = self.kept.lock().expect("kept");
        let Some(kept) = guard.as_ref() else {
            candle_core::bail!("{}: backward before forward", self.name())
        };
        let mut g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        // A spatial output left the forward pass in NCHW; NHWC inside.
        if let Some(out) = output_dims(&self.ops, kept) {
            if out.h * out.w > 1 && out.c > 1 {
                g = transpose(&g, out.b, out.c, out.h * out.w);
            }
        }
        for (op, (dims, k)) in self.ops.iter().zip(kept).rev() {
            g = op.backward(g, *dims, k);
        }
        let x_dims = x.dims().to_vec();
        if let [b, c, h, w] = x_dims[..] {
            if c > 1 {
                g = transpose(&g, b, h * w, c);
            }
        }
        Ok(Some(Tensor::from_vec(g, x_dims, x.device())?))
    }
}

/// The dims of the chain's output, from the last op's input dims.
fn output_dims(ops: &[Op], kept: &[(Dims, Kept)]) -> Option<Dims> {
    let (op, (d, _)) = ops.iter().zip(kept).next_back()?;
    Some(op.output_dims(*d))
}

impl Op {
    fn output_dims(&self, d: Dims) -> Dims {
        match self {
            Op::Conv { cout, .. } => Dims { c: *cout, ..d },
            Op::Dense { nout, .. } => Dims {
                h: 1,
                w: 1,
                c: *nout,
                ..d
            },
            Op::Pool => Dims {
                h: d.h / 2,
                w: d.w / 2,
                ..d
            },
            Op::Flatten => Dims {
                h: 1,
                w: 1,
                c: d.per_sample(),
                ..d
            },
            Op::ToImage(h, w) => Dims {
                h: *h,
                w: *w,
                c: 1,
                ..d
            },
        }
    }

    fn forward(
        &self,
        x: Arc<Vec<f32>>,
        d: Dims,
    ) -> candle_core::Result<(Arc<Vec<f32>>, Dims, Kept)> {
        let out = self.output_dims(d);
        Ok(match self {
            Op::Conv {
                cin,
                cout,
                forward,
                bias,
                act,
                ..
            } => {
                if d.c != *cin {
                    candle_core::bail!("frozen conv: {} input channels, expected {cin}", d.c);
                }
                let y = Arc::new(product(
                    &x,
                    d,
                    *cout,
                    forward,
                    true,
                    Some((bias, *act)),
                    None,
                ));
                (Arc::clone(&y), out, Kept::Output(y))
            }
            Op::Dense {
                nin,
                nout,
                forward,
                bias,
                act,
                ..
            } => {
                if d.per_sample() != *nin {
                    candle_core::bail!("frozen linear: {} inputs, expected {nin}", d.per_sample());
                }
                let flat = Dims {
                    h: 1,
                    w: 1,
                    c: *nin,
                    ..d
                };
                let y = Arc::new(product(
                    &x,
                    flat,
                    *nout,
                    forward,
                    false,
                    Some((bias, *act)),
                    None,
                ));
                (Arc::clone(&y), out, Kept::Output(y))
            }
            Op::Pool => {
                if !d.h.is_multiple_of(2) || !d.w.is_multiple_of(2) {
                    candle_core::bail!(
                        "max_pool2x2 needs even height and width, got {}x{}",
                        d.h,
                        d.w
                    );
                }
                let (y, arg) = pool(&x, d);
                (Arc::new(y), out, Kept::Argmax(arg))
            }
            Op::Flatten => (x, out, Kept::Nothing),
            Op::ToImage(h, w) => {
                if d.per_sample() != h * w {
                    candle_core::bail!(
                        "frozen net: {} values are not a {h}x{w} image",
                        d.per_sample()
                    );
                }
                (x, out, Kept::Nothing)
            }
        })
    }

    /// The input's gradient from the output's gradient `g`; `d` is the
    /// input's dims.
    fn backward(&self, g: Vec<f32>, d: Dims, kept: &Kept) -> Vec<f32> {
        match (self, kept) {
            (
                Op::Conv {
                    cin,
                    backward,
                    act,
                    cout,
                    ..
                },
                Kept::Output(y),
            ) => product(
                &g,
                Dims { c: *cout, ..d },
                *cin,
                backward,
                true,
                None,
                Some((y, *act)),
            ),
            (
                Op::Dense {
                    nin,
                    nout,
                    backward,
                    act,
                    ..
                },
                Kept::Output(y),
            ) => {
                let flat = Dims {
                    h: 1,
                    w: 1,
                    c: *nout,
                    ..d
                };
                product(&g, flat, *nin, backward, false, None, Some((y, *act)))
            }
            (Op::Pool, Kept::Argmax(arg)) => unpool(&g, arg, d),
            _ => g,
        }
    }
}

/// The contiguous f32 slice of a storage.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expected f32 values")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous tensor"),
    }
}

/// Each of `b` samples `[r, c]` transposed to `[c, r]`: NCHW to NHWC is
/// `(C, H·W)`, NHWC to NCHW `(H·W, C)`.
fn transpose(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    if r == 1 || c == 1 {
        return x.to_vec();
    }
    let mut out = vec![0f32; x.len()];
    for s in 0..b {
        let (src, dst) = (&x[s * r * c..][..r * c], &mut out[s * r * c..][..r * c]);
        for i in 0..r {
            for j in 0..c {
                dst[j * r + i] = src[i * c + j];
            }
        }
    }
    out
}

thread_local! {
    /// im2col rows, reused by every conv on this thread.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Gradients at a layer's pre-activation, reused likewise.
    static PRE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Samples per parallel task: enough tasks to balance the threads, and an
/// im2col buffer of at most ~4 MB.
fn samples_per_task(b: usize, floats_per_sample: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_balance = b.div_ceil(4 * threads).max(1);
    let by_memory = ((1 << 20) / floats_per_sample.max(1)).max(1);
    by_balance.min(by_memory)
}

/// c[m, n] = a[m, k] · b[k, n].
fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let a = ArrayView2::from_shape((m, k), &a[..m * k]).expect("gemm lhs");
    let b = ArrayView2::from_shape((k, n), &b[..k * n]).expect("gemm rhs");
    let mut c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("gemm out");
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

/// The product of NHWC `x` (dims `d`) with the kernel matrix `k`, one row
/// per pixel: for a 3×3, stride 1, padding 1 conv (`im2col`), `k` is
/// `[9·d.c, nout]` over the pixels' im2col rows; for a linear layer (H = W =
/// 1), `[d.c, nout]`. `post`: bias and activation applied to the output;
/// `pre`: the output `y` and activation whose gradient first multiplies `x`
/// (the backward pass, where `x` is a gradient).
fn product(
    x: &[f32],
    d: Dims,
    nout: usize,
    k: &[f32],
    im2col: bool,
    post: Option<(&[f32], Act)>,
    pre: Option<(&[f32], Act)>,
) -> Vec<f32> {
    let (hw, cin) = (d.h * d.w, d.c);
    let kk = if im2col { 9 * cin } else { cin };
    let per = samples_per_task(d.b, hw * kk);
    let mut out = vec![0f32; d.b * hw * nout];
    out.par_chunks_mut(per * hw * nout)
        .zip(x.par_chunks(per * hw * cin))
        .enumerate()
        .for_each(|(t, (o, xi))| {
            let n = xi.len() / (hw * cin);
            PRE.with(|buf| {
                let mut buf = buf.borrow_mut();
                let src: &[f32] = match pre {
                    Some((y, act)) => {
                        let y = &y[t * per * hw * cin..][..xi.len()];
                        buf.clear();
                        buf.extend(xi.iter().zip(y).map(|(&g, &y)| act.grad(g, y)));
                        &buf
                    }
                    None => xi,
                };
                if im2col {
                    COLS.with(|cols| {
                        let mut cols = cols.borrow_mut();
                        im2col3x3(src, Dims { b: n, ..d }, &mut cols);
                        gemm(n * hw, kk, nout, &cols, k, o);
                    });
                } else {
                    gemm(n * hw, kk, nout, src, k, o);
                }
            });
            if let Some((bias, act)) = post {
                for row in o.chunks_mut(nout) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v = act.apply(*v + b);
                    }
                }
            }
        });
    out
}

/// The im2col rows of a 3×3, padding 1 conv of NHWC `x`: one row per
/// pixel, `[9·C]` in (ky, kx, c) order, zeros outside the image.
fn im2col3x3(x: &[f32], d: Dims, cols: &mut Vec<f32>) {
    let (h, w, c) = (d.h, d.w, d.c);
    let row = 9 * c;
    cols.clear();
    cols.resize(d.b * h * w * row, 0.0);
    for s in 0..d.b {
        let img = &x[s * h * w * c..][..h * w * c];
        for y in 0..h {
            for xx in 0..w {
                let r = &mut cols[((s * h + y) * w + xx) * row..][..row];
                for ky in 0..3 {
                    let yy = y as isize + ky as isize - 1;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    let line = &img[yy as usize * w * c..][..w * c];
                    // kx = 0, 1, 2 read columns xx − 1 .. xx + 1: one
                    // contiguous run, cut at the image's edges.
                    let (kx0, x0) = if xx == 0 { (1, 0) } else { (0, xx - 1) };
                    let x1 = (xx + 1).min(w - 1);
                    let len = (x1 + 1 - x0) * c;
                    let at = (ky * 3 + kx0) * c;
                    r[at..at + len].copy_from_slice(&line[x0 * c..x0 * c + len]);
                }
            }
        }
    }
}

/// 2×2 max-pooling of NHWC `x`, and each window's first maximum (0..4 in
/// row-major order; `>` keeps the first of tied maxima). A window with a
/// NaN pools to its first NaN, as PyTorch's `max_pool2d` does.
fn pool(x: &[f32], d: Dims) -> (Vec<f32>, Vec<u8>) {
    let (h, w, c) = (d.h, d.w, d.c);
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0f32; d.b * oh * ow * c];
    let mut arg = vec![0u8; out.len()];
    out.par_chunks_mut(oh * ow * c)
        .zip(arg.par_chunks_mut(oh * ow * c))
        .zip(x.par_chunks(h * w * c))
        .for_each(|((o, a), img)| {
            for y in 0..oh {
                for xx in 0..ow {
                    for ch in 0..c {
                        let at = |k: usize| img[((2 * y + k / 2) * w + 2 * xx + k % 2) * c + ch];
                        let mut best = 0;
                        for k in 1..4 {
                            if at(best).is_nan() {
                                break;
                            }
                            if at(k) > at(best) || at(k).is_nan() {
                                best = k;
                            }
                        }
                        let i = (y * ow + xx) * c + ch;
                        o[i] = at(best);
                        a[i] = best as u8;
                    }
                }
            }
        });
    (out, arg)
}

/// The gradient of [`pool`]'s input: each window's gradient at its first
/// maximum.
fn unpool(g: &[f32], arg: &[u8], d: Dims) -> Vec<f32> {
    let (h, w, c) = (d.h, d.w, d.c);
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0f32; d.b * h * w * c];
    out.par_chunks_mut(h * w * c)
        .zip(g.par_chunks(oh * ow * c).zip(arg.par_chunks(oh * ow * c)))
        .for_each(|(o, (g, a))| {
            for y in 0..oh {
                for xx in 0..ow {
                    for ch in 0..c {
                        let i = (y * ow + xx) * c + ch;
                        let k = a[i] as usize;
                        o[((2 * y + k / 2) * w + 2 * xx + k % 2) * c + ch] = g[i];
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Var};
    use candle_nn::Conv2dConfig;

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    /// The chain against candle's ops on the same frozen weights: the same
    /// output and input gradient, to rounding.
    fn check(net: &FrozenNet, plain: &dyn Fn(&Tensor) -> Tensor, x: &Var) {
        let y_fast = net.forward(x.as_tensor()).unwrap();
        let y_plain = plain(x.as_tensor());
        assert_eq!(y_fast.dims(), y_plain.dims());
        close(&y_fast, &y_plain, 1e-5);
        // A weighted sum, so that every output's gradient differs.
        let weights = Tensor::rand(0f32, 1.0, y_fast.shape(), &Device::Cpu).unwrap();
        let g_fast = (y_fast * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_plain = (y_plain * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            g_fast.get(x.as_tensor()).unwrap(),
            g_plain.get(x.as_tensor()).unwrap(),
            1e-5,
        );
    }

    fn act(a: Act, x: Tensor) -> Tensor {
        match a {
            Act::Identity => x,
            Act::Relu => x.relu().unwrap(),
            Act::Sigmoid => candle_nn::ops::sigmoid(&x).unwrap(),
        }
    }

    fn var(shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn conv(cin: usize, cout: usize, stride: usize) -> Conv2d {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.3, (cout, cin, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
        Conv2d::new(
            w,
            Some(b),
            Conv2dConfig {
                stride,
                padding: 1,
                ..Default::default()
            },
        )
    }

    fn linear(nin: usize, nout: usize) -> Linear {
        let dev = Device::Cpu;
        Linear::new(
            Tensor::randn(0f32, 0.3, (nout, nin), &dev).unwrap(),
            Some(Tensor::randn(0f32, 0.3, nout, &dev).unwrap()),
        )
    }

    #[test]
    fn a_conv_matches_candle_with_every_activation() {
        for a in [Act::Identity, Act::Relu, Act::Sigmoid] {
            let c = conv(3, 5, 1);
            let net = FrozenNet::new(&[Layer::Conv(c.clone(), a)]).unwrap();
            // Several samples, so that the work splits into parallel tasks.
            check(
                &net,
                &|x| act(a, c.forward(x).unwrap()),
                &var(&[9, 3, 7, 6]),
            );
        }
    }

    #[test]
    fn a_cnn_chain_matches_candle() {
        let (c1, c2, l1, l2) = (
            conv(1, 4, 1),
            conv(4, 6, 1),
            linear(6 * 2 * 3, 5),
            linear(5, 3),
        );
        let net = FrozenNet::new(&[
            Layer::Conv(c1.clone(), Act::Relu),
            Layer::MaxPool2x2,
            Layer::Conv(c2.clone(), Act::Relu),
            Layer::MaxPool2x2,
            Layer::Flatten(2, 3),
            Layer::Linear(l1.clone(), Act::Relu),
            Layer::Linear(l2.clone(), Act::Identity),
        ])
        .unwrap();
        let pool = super::super::layers::max_pool2x2;
        let plain = |x: &Tensor| {
            let h = pool(&c1.forward(x).unwrap().relu().unwrap()).unwrap();
            let h = pool(&c2.forward(&h).unwrap().relu().unwrap()).unwrap();
            let h = l1
                .forward(&h.flatten_from(1).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            l2.forward(&h).unwrap()
        };
        check(&net, &plain, &var(&[5, 1, 8, 12]));
    }

    #[test]
    fn a_decoder_chain_matches_candle() {
        let (l1, l2) = (linear(3, 8), linear(8, 12));
        let net = FrozenNet::new(&[
            Layer::Linear(l1.clone(), Act::Relu),
            Layer::Linear(l2.clone(), Act::Sigmoid),
            Layer::ToImage(3, 4),
        ])
        .unwrap();
        let plain = |z: &Tensor| {
            let h = l1.forward(z).unwrap().relu().unwrap();
            act(Act::Sigmoid, l2.forward(&h).unwrap())
                .reshape((4, 1, 3, 4))
                .unwrap()
        };
        check(&net, &plain, &var(&[4, 3]));
    }

    #[test]
    fn pooling_ties_send_the_gradient_to_the_first_maximum() {
        let dev = Device::Cpu;
        let mut values: Vec<f32> = Tensor::randn(0f32, 1.0, (2 * 3 * 6 * 4,), &dev)
            .unwrap()
            .to_vec1()
            .unwrap();
        // A constant plane: every window is a four-way tie.
        values[..24].iter_mut().for_each(|v| *v = 0.0);
        let x = Var::from_tensor(&Tensor::from_vec(values, (2, 3, 6, 4), &dev).unwrap()).unwrap();
        let net = FrozenNet::new(&[Layer::MaxPool2x2]).unwrap();
        check(&net, &|x| super::super::layers::max_pool2x2(x).unwrap(), &x);
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.flatten_from(1).unwrap().to_vec2::<f32>().unwrap()
    }

    /// Issue 17: ReLU turned a NaN into 0, so a NaN image came out of the
    /// CNNs as a confident class.
    #[test]
    fn a_nan_propagates_through_every_kernel() {
        let (c1, c2, l1, l2) = (
            conv(1, 4, 1),
            conv(4, 6, 1),
            linear(6 * 2 * 3, 5),
            linear(5, 3),
        );
        let layers = [
            Layer::Conv(c1, Act::Relu),
            Layer::MaxPool2x2,
            Layer::Conv(c2, Act::Relu),
            Layer::MaxPool2x2,
            Layer::Flatten(2, 3),
            Layer::Linear(l1, Act::Relu),
            Layer::Linear(l2, Act::Identity),
        ];
        let net = FrozenNet::new(&layers).unwrap();
        for nan in [f32::NAN, -f32::NAN] {
            let mut values: Vec<f32> = Tensor::randn(0f32, 1.0, 3 * 8 * 12, &Device::Cpu)
                .unwrap()
                .to_vec1()
                .unwrap();
            let clean = Tensor::from_vec(values.clone(), (3, 1, 8, 12), &Device::Cpu).unwrap();
            // One pixel of sample 1.
            values[8 * 12 + 5 * 12 + 7] = nan;
            let x =
                Var::from_tensor(&Tensor::from_vec(values, (3, 1, 8, 12), &Device::Cpu).unwrap())
                    .unwrap();
            let y = net.forward(x.as_tensor()).unwrap();
            let (y, y_clean) = (rows(&y), rows(&net.forward(&clean).unwrap()));
            assert!(y[1].iter().all(|v| v.is_nan()), "{nan:?}: {:?}", y[1]);
            assert_eq!((&y[0], &y[2]), (&y_clean[0], &y_clean[2]));
            // The other samples' gradients are untouched.
            let grad = |x: &Var| {
                let g = net
                    .forward(x.as_tensor())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                rows(g.get(x.as_tensor()).unwrap())
            };
            let (g, g_clean) = (grad(&x), grad(&Var::from_tensor(&clean).unwrap()));
            assert_eq!((&g[0], &g[2]), (&g_clean[0], &g_clean[2]));
        }
    }

    #[test]
    fn relu_and_pooling_keep_nan() {
        let dev = Device::Cpu;
        for nan in [f32::NAN, -f32::NAN] {
            // A NaN in each position of one 2×2 window, the other clean.
            for at in 0..8 {
                let mut v = vec![1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
                v[at] = nan;
                // [1, 1, 2, 4]: windows (v0 v1 v4 v5) and (v2 v3 v6 v7).
                let x = Tensor::from_vec(v, (1, 1, 2, 4), &dev).unwrap();
                let y = FrozenNet::new(&[Layer::MaxPool2x2])
                    .unwrap()
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let window = [0, 0, 1, 1, 0, 0, 1, 1][at];
                assert!(y[window].is_nan(), "{nan:?} at {at}: {y:?}");
                assert_eq!(y[1 - window], if window == 0 { 4.0 } else { 2.0 });
            }
            let identity = Linear::new(Tensor::ones((1, 1), DType::F32, &dev).unwrap(), None);
            let relu = FrozenNet::new(&[Layer::Linear(identity, Act::Relu)]).unwrap();
            let x = Tensor::new(&[[nan], [-1.0], [2.0]], &dev).unwrap();
            let y = relu.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            assert!(y[0][0].is_nan(), "{y:?}");
            assert_eq!((y[1][0], y[2][0]), (0.0, 2.0));
        }
    }

    #[test]
    fn variables_and_strided_convs_are_not_covered() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap()).unwrap();
        let l = Linear::new(w.as_tensor().clone(), None);
        assert!(FrozenNet::new(&[Layer::Linear(l, Act::Relu)]).is_none());
        assert!(FrozenNet::new(&[Layer::Conv(conv(1, 2, 2), Act::Relu)]).is_none());
    }
}
