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
//! Each op is a candle custom op whose CPU forward refuses (they are only
//! ever called on CUDA tensors); without the `cuda` feature nothing here
//! can run and [`applies`] is false.

// Kernel launches are foreign calls: the only unsafe code is the launch.
#![cfg_attr(feature = "cuda", allow(unsafe_code))]
// Without the feature the ops' fields are read by no CUDA forward.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::Engine;
use crate::zoo::MaxPoolPositions;

/// Whether gevaldi's CUDA kernels run for `x`: an f32 tensor on a CUDA
/// device, under `GEVALDI_ENGINE=auto`.
pub(crate) fn applies(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && x.dtype() == DType::F32
        && Engine::current() == Engine::Auto
}

/// The error of a CPU forward: these ops run on CUDA only.
fn cuda_only(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: gevaldi's CUDA kernel has no CPU forward"))
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

/// The CPU forward of an op here: refused.
macro_rules! cuda_only_cpu_fwd {
    ($($arg:ident)*) => {
        fn cpu_fwd(
            &self,
            $($arg: &CpuStorage, _: &Layout,)*
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            $(let _ = $arg;)*
            Err(cuda_only(self.name()))
        }
    };
}

impl CustomOp1 for PoolArgmax {
    fn name(&self) -> &'static str {
        "maxpool_argmax"
    }
    cuda_only_cpu_fwd!(a);
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
    cuda_only_cpu_fwd!(a b);
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
    cuda_only_cpu_fwd!(a b);
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
    cuda_only_cpu_fwd!(a b);
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "{}: shapes {:?} and {:?} differ",
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
    cuda_only_cpu_fwd!(a b c);
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
            _ => full(l2) && per_plane(l3),
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
    cuda_only_cpu_fwd!(a b c);
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
    cuda_only_cpu_fwd!(a b);
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
    cuda_only_cpu_fwd!(a);
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
    cuda_only_cpu_fwd!(a);
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
    cuda_only_cpu_fwd!(a b);
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
    cuda_only_cpu_fwd!(a);
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
