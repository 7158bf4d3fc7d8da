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
//! its input, scale and shift) and residual join.
//!
//! They run where the engine's `auto` runs the device-generic path on a
//! CUDA device with f32 tensors; `GEVALDI_ENGINE=generic` runs that path
//! on candle's ops alone (the reference they are tested against on a GPU:
//! `tests/generic_path.rs`). The source (`cuda/kernels.cu`) is compiled
//! once per process by NVRTC, which candle's `cuda` feature links; each
//! kernel writes every output element once, in a fixed order of additions
//! (no atomics), so a run gives the same bits every time.
//!
//! Each op is a candle custom op. Its CPU forward is the kernel's loop in
//! Rust, which the engine never runs ([`applies`] is false on the CPU) and
//! the tests do: every function here against candle's ops, and the
//! generic path with these ops against it without them (the glue around
//! the kernels: shapes, layouts, which ReLU a conv applies), on any
//! machine; `tests/cuda_kernels.rs` runs the CUDA source itself on the
//! CPU. Without the `cuda` feature [`applies`] is false.

// Kernel launches are foreign calls: the only unsafe code is the launch.
#![cfg_attr(feature = "cuda", allow(unsafe_code))]
// Without the feature the ops' fields are read by no CUDA forward.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::cpu_op::f32s;
use super::Engine;
use crate::zoo::MaxPoolPositions;

/// The contiguous u32 slice of a storage.
fn u32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [u32]> {
    let CpuStorage::U32(v) = s else {
        candle_core::bail!("{op}: expected u32 positions")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous tensor"),
    }
}

/// Whether gevaldi's CUDA kernels run for `x`: an f32 tensor on a CUDA
/// device, under `GEVALDI_ENGINE=auto`.
pub(crate) fn applies(x: &Tensor) -> bool {
    #[cfg(test)]
    if tests::ON_CPU.with(|on| on.get()) {
        return x.device().is_cpu() && x.dtype() == DType::F32;
    }
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && x.dtype() == DType::F32
        && Engine::current() == Engine::Auto
}

/// `i32` for an argument of kernel `kernel`, or an error saying it does
/// not fit.
fn int(v: usize, kernel: &str) -> candle_core::Result<i32> {
    i32::try_from(v).map_err(|_| {
        candle_core::Error::Msg(format!(
            "gevaldi's CUDA kernel {kernel}: a size of {v} exceeds 2^31 - 1 (a smaller batch fits)"
        ))
    })
}

/// Max-pooling (`k`, stride `s`, padding `p`, PyTorch's `ceil_mode`) on
/// `[B, C, H, W]` and where each maximum came from, as
/// the candle-ops version keeps it: two kernels.
pub(crate) fn max_pool2d(
    x: &Tensor,
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
) -> candle_core::Result<(Tensor, MaxPoolPositions)> {
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (
        crate::engine::pool_len(h, k, s, p, ceil)?,
        crate::engine::pool_len(w, k, s, p, ceil)?,
    );
    // The padded plane of the candle-ops version: every window inside it.
    let (hp, wp) = ((h + p).max(k - 1 + s * ho), (w + p).max(k - 1 + s * wo));
    let at = MaxPoolPositions {
        index: x.apply_op1_no_bwd(&PoolArgmax {
            k,
            s,
            p,
            ho,
            wo,
            wp,
        })?,
        dims: (b, c, h, w),
        padded: (hp, wp, p),
        window: (k, s),
        out: (ho, wo),
    };
    let y = x.apply_op2_no_bwd(&at.index, &PoolGather { p, wp, ho, wo })?;
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
        window: at.window,
        out: at.out,
        p: at.padded.2,
        wp: at.padded.1,
    };
    g.contiguous()?.apply_op2_no_bwd(&at.index, &op)
}

/// A ReLU's input gradient from its output `y` and the output's gradient
/// `g`: one kernel (0 where y ≤ 0, else g).
pub(crate) fn relu_backward(g: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?
        .apply_op2_no_bwd(&y.contiguous()?, &Elementwise::ReluBackward)
}

/// `relu(x · a + b)`, `a` and `b` `[B, C]`: one kernel.
pub(crate) fn scale_shift_relu(x: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &a.contiguous()?,
        &b.contiguous()?,
        &Elementwise::ScaleShiftRelu,
    )
}

/// The gradients of `x`, `a` and `b` of [`scale_shift_relu`], `y` its
/// output and `g` the output's gradient: two kernels.
pub(crate) fn scale_shift_relu_backward(
    x: &Tensor,
    a: &Tensor,
    y: &Tensor,
    g: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (g, y) = (g.contiguous()?, y.contiguous()?);
    let dx = g.apply_op3_no_bwd(&y, &a.contiguous()?, &Elementwise::ScaleShiftReluDx)?;
    let dab = g.apply_op3_no_bwd(&y, &x.contiguous()?, &ScaleShiftDab)?;
    let da = dab.get(0)?.reshape(a.dims())?;
    let db = dab.get(1)?.reshape(a.dims())?;
    Ok((dx, da, db))
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

/// Whether a conv's weight `[Cout, Cin, kh, kw]` with stride `s` and
/// padding `p` maps a sample by one product, `[Cout, Cin] · [Cin, H·W]`.
fn pointwise(weight: &Tensor, s: usize, p: usize) -> bool {
    weight.dim(2).is_ok_and(|k| k == 1) && weight.dim(3).is_ok_and(|k| k == 1) && s == 1 && p == 0
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
    stride: usize,
    padding: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
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
    let span = |n: usize, k: usize| (n + 2 * padding).checked_sub(dilation * (k - 1) + 1);
    let (Some(eh), Some(ew)) = (span(h, kh), span(w, kw)) else {
        candle_core::bail!(
            "conv2d: input {:?} is smaller than the kernel {:?}",
            x.dims(),
            weight.dims()
        );
    };
    let (ho, wo) = (eh / stride + 1, ew / stride + 1);
    let cols = if pointwise(weight, stride, padding) {
        x.reshape((b, cin, h * w))?
    } else {
        x.apply_op1_no_bwd(&Im2Col {
            k: (kh, kw),
            out: (ho, wo),
            stride,
            padding,
            dilation,
        })?
    };
    let y = weight
        .reshape((cout, cin * kh * kw))?
        .broadcast_left(b)?
        .matmul(&cols)?;
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
        2 => act(x.matmul(&weight.t()?)?),
        4 => {
            let (b, c, h, w) = x.dims4()?;
            let rows = x
                .permute((0, 2, 3, 1))?
                .contiguous()?
                .reshape((b * h * w, c))?;
            act(rows.matmul(&weight.t()?)?)?
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
    stride: usize,
    padding: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (cout, cin, kh, kw) = weight.dims4()?;
    let (b, _, ho, wo) = g.dims4()?;
    let cols = wt
        .broadcast_left(b)?
        .matmul(&g.contiguous()?.reshape((b, cout, ho * wo))?)?;
    if pointwise(weight, stride, padding) {
        return cols.reshape((b, cin, dims[2], dims[3]));
    }
    cols.apply_op1_no_bwd(&Col2Im {
        dims: [dims[0], dims[1], dims[2], dims[3]],
        k: (kh, kw),
        out: (ho, wo),
        stride,
        padding,
        dilation,
    })
}

/// The first maximum's position per window.
struct PoolArgmax {
    k: usize,
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
    wp: usize,
}

/// The values at the positions.
struct PoolGather {
    p: usize,
    wp: usize,
    ho: usize,
    wo: usize,
}

/// The max-pool's backward.
struct PoolBackward {
    /// The input's dims `[B, C, H, W]`.
    dims: (usize, usize, usize, usize),
    /// Window and stride.
    window: (usize, usize),
    /// The output's rows and columns.
    out: (usize, usize),
    /// The padding on the left.
    p: usize,
    /// The padded plane's columns.
    wp: usize,
}

/// One-kernel elementwise maps.
enum Elementwise {
    /// (g, y) → dx.
    ReluBackward,
    /// (x, a, b) → y.
    ScaleShiftRelu,
    /// (g, y, a) → dx.
    ScaleShiftReluDx,
}

/// (g, y, x) → `[2, B·C]`: the scale's and the shift's gradients.
struct ScaleShiftDab;

struct SkipAdd {
    up: bool,
}

struct SkipAddDx {
    xc: usize,
    up: bool,
}

/// A conv's columns.
struct Im2Col {
    k: (usize, usize),
    out: (usize, usize),
    stride: usize,
    padding: usize,
    dilation: usize,
}

/// (y `[B, C, …]`, bias `[C]`) → y + bias, then a ReLU where `relu`.
struct BiasAct {
    relu: bool,
}

/// Columns back to the input's positions.
struct Col2Im {
    dims: [usize; 4],
    k: (usize, usize),
    out: (usize, usize),
    stride: usize,
    padding: usize,
    dilation: usize,
}

impl Elementwise {
    fn name(&self) -> &'static str {
        match self {
            Elementwise::ReluBackward => "relu_backward",
            Elementwise::ScaleShiftRelu => "scale_shift_relu",
            Elementwise::ScaleShiftReluDx => "scale_shift_relu_dx",
        }
    }
}

impl CustomOp1 for PoolArgmax {
    fn name(&self) -> &'static str {
        "maxpool_argmax"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let x = f32s(s1, l1, self.name())?;
        let (k, s, p, ho, wo, wp) = (self.k, self.s, self.p, self.ho, self.wo, self.wp);
        let pos = (0..b * c * ho * wo)
            .map(|i| {
                let (ox, oy, plane) = (i % wo, (i / wo) % ho, i / (wo * ho));
                let xp = &x[plane * h * w..][..h * w];
                let (mut m, mut best) = (f32::NEG_INFINITY, (oy * s, ox * s));
                for di in 0..k {
                    for dj in 0..k {
                        let (r, q) = (
                            (oy * s + di) as isize - p as isize,
                            (ox * s + dj) as isize - p as isize,
                        );
                        let inside = r >= 0 && (r as usize) < h && q >= 0 && (q as usize) < w;
                        let v = if inside {
                            xp[r as usize * w + q as usize]
                        } else {
                            f32::NEG_INFINITY
                        };
                        if v > m || (v.is_nan() && !m.is_nan()) {
                            m = v;
                            best = (oy * s + di, ox * s + dj);
                        }
                    }
                }
                (best.0 * wp + best.1) as u32
            })
            .collect();
        Ok((CpuStorage::U32(pos), Shape::from((b * c, ho * wo))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let n = b * c * self.ho * self.wo;
        let x = on_device::f32s(s1, l1, self.name())?;
        let ints = [n, h, w, self.ho, self.wo, self.k, self.s, self.p, self.wp];
        let shape = (b * c, self.ho * self.wo);
        on_device::run::<u32>(s1, self.name(), n, &[x], n, &ints, shape)
    }
}

impl CustomOp2 for PoolGather {
    fn name(&self) -> &'static str {
        "maxpool_gather"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let (x, pos) = (f32s(s1, l1, self.name())?, u32s(s2, l2, self.name())?);
        let (p, wp, hw) = (self.p, self.wp, self.ho * self.wo);
        let y = (0..b * c * hw)
            .map(|i| {
                let q = pos[i] as usize;
                let (r, col) = (
                    (q / wp) as isize - p as isize,
                    (q % wp) as isize - p as isize,
                );
                let inside = r >= 0 && (r as usize) < h && col >= 0 && (col as usize) < w;
                if inside {
                    x[(i / hw) * h * w + r as usize * w + col as usize]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Ok((CpuStorage::F32(y), Shape::from((b, c, self.ho, self.wo))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let n = b * c * self.ho * self.wo;
        let x = on_device::f32s(s1, l1, self.name())?;
        let pos = on_device::u32s(s2, l2, n, self.name())?;
        let ints = [n, self.ho * self.wo, h, w, self.p, self.wp];
        let shape = (b, c, self.ho, self.wo);
        on_device::run::<f32>(s1, self.name(), n, &[x, pos], n, &ints, shape)
    }
}

impl CustomOp2 for PoolBackward {
    fn name(&self) -> &'static str {
        "maxpool_backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = self.dims;
        let ((ho, wo), (k, s), p, wp) = (self.out, self.window, self.p, self.wp);
        let (g, pos) = (f32s(s1, l1, self.name())?, u32s(s2, l2, self.name())?);
        if g.len() != b * c * ho * wo || pos.len() != g.len() {
            candle_core::bail!("{}: the gradient does not fit the pool", self.name());
        }
        let dx = (0..b * c * h * w)
            .map(|i| {
                let (col, r, plane) = (i % w, (i / w) % h, i / (w * h));
                let (pr, pc) = (r + p, col + p);
                let q = (pr * wp + pc) as u32;
                // Windows o with o·s ≤ pr ≤ o·s + k − 1, in output order.
                let first = |v: usize| (v + 1).saturating_sub(k).div_ceil(s);
                let mut acc = 0f32;
                for oy in first(pr)..=(pr / s).min(ho - 1) {
                    for ox in first(pc)..=(pc / s).min(wo - 1) {
                        let o = plane * ho * wo + oy * wo + ox;
                        if pos[o] == q {
                            acc += g[o];
                        }
                    }
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(dx), Shape::from((b, c, h, w))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, h, w) = self.dims;
        let (ho, wo) = self.out;
        if l1.shape().elem_count() != b * c * ho * wo {
            candle_core::bail!(
                "{}: the gradient {:?} is not the pool's output [{b}, {c}, {ho}, {wo}]",
                self.name(),
                l1.shape()
            );
        }
        let g = on_device::f32s(s1, l1, self.name())?;
        let pos = on_device::u32s(s2, l2, b * c * ho * wo, self.name())?;
        let n = b * c * h * w;
        let (k, s) = self.window;
        let ints = [n, h, w, ho, wo, k, s, self.p, self.wp];
        on_device::run::<f32>(s1, self.name(), n, &[g, pos], n, &ints, (b, c, h, w))
    }
}

impl CustomOp2 for Elementwise {
    fn name(&self) -> &'static str {
        Elementwise::name(self)
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, y) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        if g.len() != y.len() || !matches!(self, Elementwise::ReluBackward) {
            candle_core::bail!("{}: inputs do not fit", self.name());
        }
        let dx = g
            .iter()
            .zip(y)
            .map(|(&g, &y)| if y <= 0.0 { 0.0 } else { g })
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        if l1.shape() != l2.shape() || !matches!(self, Elementwise::ReluBackward) {
            candle_core::bail!(
                "{}: shapes {:?} and {:?} do not fit",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let n = l1.shape().elem_count();
        let a = on_device::f32s(s1, l1, self.name())?;
        let b = on_device::f32s(s2, l2, self.name())?;
        let shape = l1.shape().clone();
        on_device::run::<f32>(s1, self.name(), n, &[a, b], n, &[n], shape)
    }
}

impl CustomOp3 for Elementwise {
    fn name(&self) -> &'static str {
        Elementwise::name(self)
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let planes = l1.shape().dims().iter().take(2).product::<usize>().max(1);
        let (a, b, c) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        if matches!(self, Elementwise::ReluBackward) {
            candle_core::bail!("{}: takes two inputs", self.name());
        }
        let plane = a.len() / planes;
        let out = (0..a.len())
            .map(|i| match self {
                // (x, a, b): relu(x · a + b), NaN kept.
                Elementwise::ScaleShiftRelu => {
                    let v = a[i] * b[i / plane] + c[i / plane];
                    if v > 0.0 || v.is_nan() {
                        v
                    } else {
                        0.0
                    }
                }
                // (g, y, a).
                Elementwise::ScaleShiftReluDx if b[i] > 0.0 => a[i] * c[i / plane],
                _ => 0.0,
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    /// (x or g, y, a) with a per plane, or (x, a, b) with a and b per
    /// plane: the first input's shape, `[B, C, …]`.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dims = l1.shape().dims();
        let planes = dims.iter().take(2).product::<usize>();
        let n = l1.shape().elem_count();
        let per_plane = |l: &Layout| l.shape().elem_count() == planes;
        let full = |l: &Layout| l.shape() == l1.shape();
        let ok = match self {
            Elementwise::ScaleShiftRelu => per_plane(l2) && per_plane(l3),
            Elementwise::ScaleShiftReluDx => full(l2) && per_plane(l3),
            Elementwise::ReluBackward => false,
        };
        if dims.len() < 2 || !ok {
            candle_core::bail!(
                "{}: inputs {:?}, {:?}, {:?} do not fit",
                self.name(),
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let plane = n / planes.max(1);
        let inputs = [
            on_device::f32s(s1, l1, self.name())?,
            on_device::f32s(s2, l2, self.name())?,
            on_device::f32s(s3, l3, self.name())?,
        ];
        let shape = l1.shape().clone();
        on_device::run::<f32>(s1, self.name(), n, &inputs, n, &[n, plane], shape)
    }
}

impl CustomOp3 for ScaleShiftDab {
    fn name(&self) -> &'static str {
        "scale_shift_relu_dab"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let (g, y, x) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        let (planes, plane) = (b * c, h * w);
        let mut out = vec![0f32; 2 * planes];
        for j in 0..planes {
            for t in j * plane..(j + 1) * plane {
                let gm = if y[t] > 0.0 { g[t] } else { 0.0 };
                out[j] += gm * x[t];
                out[planes + j] += gm;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((2, planes))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        if l2.shape() != l1.shape() || l3.shape() != l1.shape() {
            candle_core::bail!("{}: the three inputs' shapes differ", self.name());
        }
        let (planes, plane) = (b * c, h * w);
        let inputs = [
            on_device::f32s(s1, l1, self.name())?,
            on_device::f32s(s2, l2, self.name())?,
            on_device::f32s(s3, l3, self.name())?,
        ];
        // One block of 256 threads per plane (the kernel's reduction
        // takes a power of two).
        let cfg = on_device::LaunchConfig {
            grid_dim: (planes.clamp(1, 65535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let ints = [planes, plane];
        on_device::run::<f32>(
            s1,
            self.name(),
            cfg,
            &inputs,
            2 * planes,
            &ints,
            (2, planes),
        )
    }
}

impl CustomOp2 for SkipAdd {
    fn name(&self) -> &'static str {
        "skip_add"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, hh, hw) = l1.shape().dims4()?;
        let (_, xc, xh, xw) = l2.shape().dims4()?;
        let s = if self.up { 2 } else { 1 };
        let (h, x) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let out = (0..h.len())
            .map(|i| {
                let (col, row, ch, bb) = (
                    i % hw,
                    (i / hw) % hh,
                    (i / (hw * hh)) % c,
                    i / (hw * hh * c),
                );
                h[i] + x[((bb * xc + ch) * xh + row / s) * xw + col / s]
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, hh, hw) = l1.shape().dims4()?;
        let (xb, xc, xh, xw) = l2.shape().dims4()?;
        let s = if self.up { 2 } else { 1 };
        if xb != b || xc < c || xh * s != hh || xw * s != hw {
            candle_core::bail!(
                "{}: x {:?} does not fit h {:?}",
                self.name(),
                l2.shape(),
                l1.shape()
            );
        }
        let n = b * c * hh * hw;
        let inputs = [
            on_device::f32s(s1, l1, self.name())?,
            on_device::f32s(s2, l2, self.name())?,
        ];
        let ints = [n, c, hh, hw, xc, s];
        let shape = l1.shape().clone();
        on_device::run::<f32>(s1, self.name(), n, &inputs, n, &ints, shape)
    }
}

impl CustomOp1 for SkipAddDx {
    fn name(&self) -> &'static str {
        "skip_add_dx"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, hh, hw) = l1.shape().dims4()?;
        let s = if self.up { 2 } else { 1 };
        let (xc, xh, xw) = (self.xc, hh / s, hw / s);
        let g = f32s(s1, l1, self.name())?;
        let dx = (0..b * xc * xh * xw)
            .map(|i| {
                let (col, row, ch, bb) = (
                    i % xw,
                    (i / xw) % xh,
                    (i / (xw * xh)) % xc,
                    i / (xw * xh * xc),
                );
                let mut acc = 0f32;
                if ch < c {
                    for di in 0..s {
                        for dj in 0..s {
                            acc += g[((bb * c + ch) * hh + row * s + di) * hw + col * s + dj];
                        }
                    }
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(dx), Shape::from((b, xc, xh, xw))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, hh, hw) = l1.shape().dims4()?;
        let s = if self.up { 2 } else { 1 };
        let (xh, xw) = (hh / s, hw / s);
        let n = b * self.xc * xh * xw;
        let g = on_device::f32s(s1, l1, self.name())?;
        let ints = [n, c, self.xc, xh, xw, s];
        let shape = (b, self.xc, xh, xw);
        on_device::run::<f32>(s1, self.name(), n, &[g], n, &ints, shape)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, h, w) = l1.shape().dims4()?;
        let ((kh, kw), (ho, wo)) = (self.k, self.out);
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        let x = f32s(s1, l1, self.name())?;
        let m = ho * wo;
        let cols = (0..b * cin * kh * kw * m)
            .map(|i| {
                let (ox, oy) = (i % wo, (i / wo) % ho);
                let (kx, ky, bc) = ((i / m) % kw, (i / (m * kw)) % kh, i / (m * kw * kh));
                let y = (oy * s + ky * d) as isize - p as isize;
                let xx = (ox * s + kx * d) as isize - p as isize;
                if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                    x[(bc * h + y as usize) * w + xx as usize]
                } else {
                    0.0
                }
            })
            .collect();
        Ok((CpuStorage::F32(cols), Shape::from((b, cin * kh * kw, m))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, cin, h, w) = l1.shape().dims4()?;
        let (kh, kw) = self.k;
        let (ho, wo) = self.out;
        let n = b * cin * kh * kw * ho * wo;
        let x = on_device::f32s(s1, l1, self.name())?;
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        let ints = [n, cin, h, w, kh, kw, ho, wo, s, p, d];
        let shape = (b, cin * kh * kw, ho * wo);
        on_device::run::<f32>(s1, self.name(), n, &[x], n, &ints, shape)
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias_act"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        let (y, bias) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        if dims.len() < 2 || dims[1] != bias.len() {
            candle_core::bail!("{}: a bias of {} for {:?}", self.name(), bias.len(), dims);
        }
        let plane = dims[2..].iter().product::<usize>();
        let out = y
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let v = y + bias[(i / plane) % bias.len()];
                if self.relu && !(v > 0.0 || v.is_nan()) {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dims = l1.shape().dims();
        let channels = l2.shape().elem_count();
        if dims.len() < 2 || dims[1] != channels {
            candle_core::bail!(
                "{}: a bias {:?} for {:?}",
                self.name(),
                l2.shape(),
                l1.shape()
            );
        }
        let n = l1.shape().elem_count();
        let plane = dims[2..].iter().product::<usize>();
        let inputs = [
            on_device::f32s(s1, l1, self.name())?,
            on_device::f32s(s2, l2, self.name())?,
        ];
        let ints = [n, plane, channels, usize::from(self.relu)];
        let shape = l1.shape().clone();
        on_device::run::<f32>(s1, self.name(), n, &inputs, n, &ints, shape)
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let [b, cin, h, w] = self.dims;
        let ((kh, kw), (ho, wo)) = (self.k, self.out);
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        let cols = f32s(s1, l1, self.name())?;
        let m = ho * wo;
        if cols.len() != b * cin * kh * kw * m {
            candle_core::bail!("{}: columns {:?} do not fit", self.name(), l1.shape());
        }
        // The output position whose tap t of the kernel reads input row
        // (or column) v, if any.
        let at = |v: usize, t: usize, o: usize| {
            let r = (v + p).checked_sub(t * d)?;
            (r % s == 0 && r / s < o).then_some(r / s)
        };
        let dx = (0..b * cin * h * w)
            .map(|i| {
                let (x, y, bc) = (i % w, (i / w) % h, i / (w * h));
                let cp = &cols[bc * kh * kw * m..][..kh * kw * m];
                let mut acc = 0f32;
                for ky in 0..kh {
                    let Some(oy) = at(y, ky, ho) else { continue };
                    for kx in 0..kw {
                        let Some(ox) = at(x, kx, wo) else { continue };
                        acc += cp[(ky * kw + kx) * m + oy * wo + ox];
                    }
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(dx), Shape::from((b, cin, h, w))))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let [b, cin, h, w] = self.dims;
        let (kh, kw) = self.k;
        let (ho, wo) = self.out;
        if l1.shape().dims() != [b, cin * kh * kw, ho * wo] {
            candle_core::bail!("{}: columns {:?} do not fit", self.name(), l1.shape());
        }
        let n = b * cin * h * w;
        let cols = on_device::f32s(s1, l1, self.name())?;
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        let ints = [n, cin, h, w, kh, kw, ho, wo, s, p, d];
        on_device::run::<f32>(s1, self.name(), n, &[cols], n, &ints, (b, cin, h, w))
    }
}

/// Compiling, loading and launching (feature `cuda`).
#[cfg(feature = "cuda")]
mod on_device {
    use std::sync::OnceLock;

    pub(super) use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, Layout, Shape};

    /// The kernels' source.
    const SOURCE: &str = include_str!("cuda/kernels.cu");

    /// The module's name in candle's device.
    const MODULE: &str = "gevaldi-kernels";

    /// The PTX, compiled once per process (`--fmad=false`: a product and
    /// a sum round apart, as candle's ops do).
    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            let opts = CompileOptions {
                fmad: Some(false),
                ..Default::default()
            };
            compile_ptx_with_opts(SOURCE, opts)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| {
            candle_core::Error::Msg(format!(
                "failed to compile gevaldi's CUDA kernels with NVRTC: {e} \
                 (GEVALDI_ENGINE=generic runs candle's ops instead)"
            ))
        })
    }

    /// A launch's configuration: one thread per element of a count, 256
    /// to a block, or one given.
    pub(super) trait Config {
        fn config(self) -> candle_core::Result<LaunchConfig>;
    }
    impl Config for usize {
        fn config(self) -> candle_core::Result<LaunchConfig> {
            Ok(LaunchConfig {
                grid_dim: (
                    super::int(self.div_ceil(256).max(1), "blocks")? as u32,
                    1,
                    1,
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }
    }
    impl Config for LaunchConfig {
        fn config(self) -> candle_core::Result<LaunchConfig> {
            Ok(self)
        }
    }

    /// A kernel's input: a contiguous run of f32 or u32 elements.
    pub(super) enum Input<'a> {
        F32(CudaView<'a, f32>),
        U32(CudaView<'a, u32>),
    }

    /// The f32 elements of a contiguous input, from its start.
    pub(super) fn f32s<'a>(
        s: &'a CudaStorage,
        l: &Layout,
        op: &str,
    ) -> candle_core::Result<Input<'a>> {
        if !l.is_contiguous() {
            candle_core::bail!("{op}: a non-contiguous input");
        }
        let (start, n) = (l.start_offset(), l.shape().elem_count());
        Ok(Input::F32(
            s.as_cuda_slice::<f32>()?.slice(start..start + n),
        ))
    }

    /// `n` u32 elements of a contiguous input, from its start.
    pub(super) fn u32s<'a>(
        s: &'a CudaStorage,
        l: &Layout,
        n: usize,
        op: &str,
    ) -> candle_core::Result<Input<'a>> {
        if !l.is_contiguous() || l.shape().elem_count() != n {
            candle_core::bail!("{op}: positions {:?} do not fit", l.shape());
        }
        let start = l.start_offset();
        Ok(Input::U32(
            s.as_cuda_slice::<u32>()?.slice(start..start + n),
        ))
    }

    /// Runs kernel `name` of the module on the device of `on` with `cfg`:
    /// its parameters are the inputs, then the output (`n` elements of
    /// `T`, every one of which the kernel writes), then the sizes as
    /// `int`s, in that order. The output as an op's result of `shape`.
    pub(super) fn run<T: CudaDType + DeviceRepr>(
        on: &CudaStorage,
        name: &str,
        cfg: impl Config,
        inputs: &[Input],
        n: usize,
        ints: &[usize],
        shape: impl Into<Shape>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &on.device;
        let cfg = cfg.config()?;
        let ints = ints
            .iter()
            .map(|&v| super::int(v, name))
            .collect::<candle_core::Result<Vec<i32>>>()?;
        let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        // SAFETY: the kernel writes every element before anything reads.
        let mut out = unsafe { dev.alloc::<T>(n) }?;
        let mut builder = func.builder();
        for input in inputs {
            match input {
                Input::F32(v) => builder.arg(v),
                Input::U32(v) => builder.arg(v),
            };
        }
        builder.arg(&mut out);
        for i in &ints {
            builder.arg(i);
        }
        // SAFETY: the parameters are pushed in the kernel's order and
        // types (pointers, then `int`s); each buffer holds the elements
        // the sizes say (checked by the caller against the layouts).
        unsafe { builder.launch(cfg) }.w()?;
        drop(builder);
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape.into()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;

    use candle_core::{Device, Module, Tensor, Var};

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
    /// candle's conv and autograd: strided, padded, dilated, 1×1.
    #[test]
    fn conv2d_and_its_input_gradient_match_candles_ops() {
        // (cin, cout, k, stride, padding, dilation, bias, relu, size)
        for (i, &(cin, cout, k, s, p, d, bias, relu, size)) in [
            (3, 8, 3, 1, 1, 1, true, true, 9),
            (3, 8, 7, 2, 3, 1, true, false, 17),
            (3, 6, 11, 4, 2, 1, false, true, 31),
            (8, 8, 1, 1, 0, 1, true, true, 7),
            (8, 4, 1, 2, 0, 1, false, false, 9),
            (4, 4, 3, 1, 2, 2, true, false, 10),
            (4, 6, 3, 2, 1, 2, true, true, 13),
        ]
        .iter()
        .enumerate()
        {
            let seed = 10 * i as u64;
            let w = randn(&[cout, cin, k, k], seed);
            let b = bias.then(|| randn(&[cout], seed + 1));
            let x = Var::from_tensor(&randn(&[2, cin, size, size], seed + 2)).unwrap();
            let mut want = x.as_tensor().conv2d(&w, p, s, d, 1).unwrap();
            if let Some(b) = &b {
                want = want
                    .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                    .unwrap();
            }
            if relu {
                want = want.relu().unwrap();
            }
            let y = conv2d(x.as_tensor(), &w, b.as_ref(), relu, s, p, d).unwrap();
            assert_eq!(y.dims(), want.dims(), "conv {i}");
            let e = rel_err(&y, &want);
            assert!(e < 1e-5, "conv {i}: output relative error {e}");
            // The input gradient of Σ g · conv(x), against autograd.
            let g = randn(want.dims(), seed + 3);
            let conv = x.as_tensor().conv2d(&w, p, s, d, 1).unwrap();
            let grads = (conv * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let want = grads.get(x.as_tensor()).unwrap();
            let gx = conv_input_grad(&g, &w, &transposed(&w).unwrap(), x.dims(), s, p, d).unwrap();
            let e = rel_err(&gx, want);
            assert!(e < 1e-5, "conv {i}: input gradient relative error {e}");
        }
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
    /// max-pool's, with ties, padding, ceil mode and overlapping windows.
    #[test]
    fn max_pools_match_the_candle_ops_version_bit_for_bit() {
        let x = (randn(&[2, 3, 11, 9], 1) * 2.0).unwrap().round().unwrap();
        for (k, s, p, ceil) in [
            (3, 2, 0, true),
            (3, 2, 1, false),
            (3, 1, 1, true),
            (2, 2, 0, false),
        ] {
            let (y, at) = max_pool2d(&x, k, s, p, ceil).unwrap();
            let (want, want_at) = max_pool2d_indexed(&x, k, s, p, ceil).unwrap();
            let what = format!("k{k} s{s} p{p} ceil {ceil}");
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

        let (x, a, b) = (
            randn(&[2, 3, 4, 5], 3),
            randn(&[2, 3], 4),
            randn(&[2, 3], 5),
        );
        let xv = Var::from_tensor(&x).unwrap();
        let (av, bv) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
        let want = xv
            .as_tensor()
            .broadcast_mul(&av.as_tensor().reshape((2, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&bv.as_tensor().reshape((2, 3, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let out = scale_shift_relu(&x, &a, &b).unwrap();
        assert_eq!(bits(&out), bits(&want));
        let grads = (&want * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (dx, da, db) = scale_shift_relu_backward(&x, &a, &out, &g).unwrap();
        assert!(rel_err(&dx, grads.get(xv.as_tensor()).unwrap()) < 1e-6);
        assert!(rel_err(&da, grads.get(av.as_tensor()).unwrap()) < 1e-5);
        assert!(rel_err(&db, grads.get(bv.as_tensor()).unwrap()) < 1e-5);

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
