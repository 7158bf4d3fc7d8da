//! The kernels as candle custom ops. Each op works out, from its inputs'
//! layouts, one [`Plan`]: the output's element count and shape and the
//! kernel's `int` parameters in the kernel's order. The CUDA forward
//! launches the kernel with the plan (inputs, output, then those `int`s);
//! the CPU forward, the kernel's loop in Rust, reads its sizes from the
//! same `int`s in the same order, so that the CPU tests check the plans
//! the GPU launches with.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape};

use super::super::{Conv2dSettings, Pool2dSettings};

/// What a launch needs, worked out from the inputs' layouts.
pub(super) struct Plan {
    /// The output's element count.
    pub n: usize,
    /// The kernel's `int` parameters by name, in its order (the names of
    /// its parameters in `kernels.cu`: a test checks them).
    pub ints: Vec<(&'static str, usize)>,
    /// The output's shape.
    pub shape: Shape,
    /// One thread per output element (`None`), or this many blocks of
    /// 256 threads.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub blocks: Option<usize>,
}

/// Named sizes for a [`Plan`], in a kernel's order: `sizes![n, h, ho =
/// self.ho]` names each by its variable or by the name before `=`.
macro_rules! sizes {
    ($($name:ident $(= $v:expr)?),* $(,)?) => {
        vec![$((stringify!($name), sizes!(@value $name $(= $v)?))),*]
    };
    (@value $name:ident = $v:expr) => { $v };
    (@value $name:ident) => { $name };
}

impl Plan {
    /// The sizes' values, in order.
    fn values(&self) -> Vec<usize> {
        self.ints.iter().map(|&(_, v)| v).collect()
    }

    fn new(n: usize, ints: Vec<(&'static str, usize)>, shape: impl Into<Shape>) -> Self {
        Plan {
            n,
            ints,
            shape: shape.into(),
            blocks: None,
        }
    }
}

/// An input of an op: its layout and dtype.
pub(super) struct Arg<'a> {
    layout: &'a Layout,
    dtype: DType,
}

impl Arg<'_> {
    fn dims4(&self) -> candle_core::Result<(usize, usize, usize, usize)> {
        self.layout.shape().dims4()
    }

    fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    fn count(&self) -> usize {
        self.layout.shape().elem_count()
    }
}

/// An input's values on the CPU.
pub(super) enum Values<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}

/// One of the kernels of `kernels.cu`.
pub(super) trait Kernel {
    /// The kernel's name.
    fn kernel(&self) -> &'static str;

    /// The inputs' dtypes, in order.
    fn inputs(&self) -> &'static [DType];

    /// The output's dtype.
    fn output(&self) -> DType {
        DType::F32
    }

    /// The launch for these inputs (their count and dtypes already
    /// checked), or an error saying what does not fit.
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan>;

    /// The kernel's loop in Rust: the output for `plan`.
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage>;
}

/// `k`'s plan for `args`, their count, dtypes and contiguity checked.
fn plan(k: &impl Kernel, args: &[Arg]) -> candle_core::Result<Plan> {
    let name = k.kernel();
    let dtypes: Vec<DType> = args.iter().map(|a| a.dtype).collect();
    if dtypes != k.inputs() {
        candle_core::bail!("{name}: inputs {dtypes:?}, expected {:?}", k.inputs());
    }
    if let Some(a) = args.iter().find(|a| !a.layout.is_contiguous()) {
        candle_core::bail!("{name}: a non-contiguous input {:?}", a.shape());
    }
    k.plan(args)
}

/// The CPU forward of `k` on `inputs`.
pub(super) fn cpu_forward(
    k: &impl Kernel,
    inputs: &[(&CpuStorage, &Layout)],
) -> candle_core::Result<(CpuStorage, Shape)> {
    let args: Vec<Arg> = inputs
        .iter()
        .map(|(s, l)| Arg {
            layout: l,
            dtype: s.dtype(),
        })
        .collect();
    let plan = plan(k, &args)?;
    let values = inputs
        .iter()
        .map(|(s, l)| {
            let (a, b) = l.contiguous_offsets().expect("checked contiguous");
            Ok(match s {
                CpuStorage::F32(v) => Values::F32(&v[a..b]),
                CpuStorage::U32(v) => Values::U32(&v[a..b]),
                _ => candle_core::bail!("{}: an input of dtype {:?}", k.kernel(), s.dtype()),
            })
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let out = k.cpu(&plan, &values)?;
    let len = match &out {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::U32(v) => v.len(),
        _ => 0,
    };
    if len != plan.n || out.dtype() != k.output() || plan.shape.elem_count() != plan.n {
        candle_core::bail!("{}: the plan and its output disagree", k.kernel());
    }
    Ok((out, plan.shape))
}

/// The CUDA forward of `k` on `inputs`.
#[cfg(feature = "cuda")]
pub(super) fn cuda_forward(
    k: &impl Kernel,
    inputs: &[(&candle_core::CudaStorage, &Layout)],
) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
    let args: Vec<Arg> = inputs
        .iter()
        .map(|(s, l)| Arg {
            layout: l,
            dtype: s.dtype(),
        })
        .collect();
    let plan = plan(k, &args)?;
    let views = inputs
        .iter()
        .map(|(s, l)| on_device::Input::of(s, l))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let on = inputs[0].0;
    match k.output() {
        DType::U32 => on_device::run::<u32>(on, k.kernel(), &plan, &views),
        _ => on_device::run::<f32>(on, k.kernel(), &plan, &views),
    }
}

/// `CustomOp1`, `CustomOp2` or `CustomOp3` for a [`Kernel`]: both
/// forwards through its plan.
macro_rules! kernel_op {
    ($op:ty: $trait:ident, $($s:ident $l:ident),+) => {
        impl $trait for $op {
            fn name(&self) -> &'static str {
                Kernel::kernel(self)
            }

            fn cpu_fwd(
                &self,
                $($s: &CpuStorage, $l: &Layout,)+
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                cpu_forward(self, &[$(($s, $l)),+])
            }

            #[cfg(feature = "cuda")]
            fn cuda_fwd(
                &self,
                $($s: &candle_core::CudaStorage, $l: &Layout,)+
            ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
                cuda_forward(self, &[$(($s, $l)),+])
            }
        }
    };
}

/// The f32 values of input `i`.
fn f32s<'a>(inputs: &[Values<'a>], i: usize) -> &'a [f32] {
    match inputs[i] {
        Values::F32(v) => v,
        Values::U32(_) => unreachable!("the plan checked the dtypes"),
    }
}

/// The u32 values of input `i`.
fn u32s<'a>(inputs: &[Values<'a>], i: usize) -> &'a [u32] {
    match inputs[i] {
        Values::U32(v) => v,
        Values::F32(_) => unreachable!("the plan checked the dtypes"),
    }
}

/// `v` as a signed index (sizes here are far below `isize::MAX`).
fn signed(v: usize) -> isize {
    v as isize
}

/// A max-pool's geometry as its kernels take it, per axis: window `kh` ×
/// `kw`, stride, padding on the top and left, dilation, output `ho` ×
/// `wo`, the padded plane's columns `wp` (positions are `row · wp +
/// column` there).
#[derive(Clone, Copy)]
pub(super) struct PoolShape {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ho: usize,
    pub wo: usize,
    pub wp: usize,
}

impl PoolShape {
    /// The geometry of a max-pool with `settings`, output `ho` × `wo`,
    /// padded plane `wp` columns wide.
    pub(super) fn new(settings: &Pool2dSettings, (ho, wo): (usize, usize), wp: usize) -> Self {
        let Pool2dSettings {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
            ..
        } = *settings;
        PoolShape {
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            ho,
            wo,
            wp,
        }
    }
}

/// The first maximum's position per window, in the padded plane.
pub(super) struct PoolArgmax(pub PoolShape);

impl Kernel for PoolArgmax {
    fn kernel(&self) -> &'static str {
        "maxpool_argmax"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32]
    }
    fn output(&self) -> DType {
        DType::U32
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, h, w) = args[0].dims4()?;
        let PoolShape {
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            ho,
            wo,
            wp,
        } = self.0;
        let n = b * c * ho * wo;
        let ints = sizes![n, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw, wp];
        Ok(Plan::new(n, ints, (b * c, ho * wo)))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw, wp] = plan.values().as_slice()
        else {
            unreachable!("the plan's sizes")
        };
        let x = f32s(inputs, 0);
        let pos = (0..n)
            .map(|i| {
                let (ox, oy, plane) = (i % wo, (i / wo) % ho, i / (wo * ho));
                let xp = &x[plane * h * w..][..h * w];
                let (mut m, mut best) = (f32::NEG_INFINITY, (oy * sh, ox * sw));
                for di in 0..kh {
                    for dj in 0..kw {
                        let (pr, pc) = (oy * sh + di * dh, ox * sw + dj * dw);
                        let (r, q) = (signed(pr) - signed(ph), signed(pc) - signed(pw));
                        let inside = r >= 0 && r < signed(h) && q >= 0 && q < signed(w);
                        let v = if inside {
                            xp[r as usize * w + q as usize]
                        } else {
                            f32::NEG_INFINITY
                        };
                        if v > m || (v.is_nan() && !m.is_nan()) {
                            m = v;
                            best = (pr, pc);
                        }
                    }
                }
                (best.0 * wp + best.1) as u32
            })
            .collect();
        Ok(CpuStorage::U32(pos))
    }
}

/// The values at the positions (−∞ in the padding).
pub(super) struct PoolGather(pub PoolShape);

impl Kernel for PoolGather {
    fn kernel(&self) -> &'static str {
        "maxpool_gather"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32, DType::U32]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, h, w) = args[0].dims4()?;
        let PoolShape {
            ph, pw, ho, wo, wp, ..
        } = self.0;
        let n = b * c * ho * wo;
        if args[1].count() != n {
            candle_core::bail!(
                "{}: positions {:?} for {n} outputs",
                self.kernel(),
                args[1].shape()
            );
        }
        let ints = sizes![n, hw_out = ho * wo, h, w, ph, pw, wp];
        Ok(Plan::new(n, ints, (b, c, ho, wo)))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, hw_out, h, w, ph, pw, wp] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (x, pos) = (f32s(inputs, 0), u32s(inputs, 1));
        let y = (0..n)
            .map(|i| {
                let q = pos[i] as usize;
                let (r, col) = (signed(q / wp) - signed(ph), signed(q % wp) - signed(pw));
                if r >= 0 && r < signed(h) && col >= 0 && col < signed(w) {
                    x[(i / hw_out) * h * w + r as usize * w + col as usize]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Ok(CpuStorage::F32(y))
    }
}

/// The max-pool's backward: per input position, the gradients of the
/// windows whose maximum it was, in output order.
pub(super) struct PoolBackward {
    /// The input's dims `[B, C, H, W]`.
    pub dims: (usize, usize, usize, usize),
    pub pool: PoolShape,
}

impl Kernel for PoolBackward {
    fn kernel(&self) -> &'static str {
        "maxpool_backward"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32, DType::U32]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, h, w) = self.dims;
        let PoolShape {
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            ho,
            wo,
            wp,
        } = self.pool;
        // The positions a window spans, per axis.
        let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        if args[0].count() != b * c * ho * wo || args[1].count() != b * c * ho * wo {
            candle_core::bail!(
                "{}: gradient {:?} and positions {:?} for a pool's output [{b}, {c}, {ho}, {wo}]",
                self.kernel(),
                args[0].shape(),
                args[1].shape()
            );
        }
        let n = b * c * h * w;
        let ints = sizes![n, h, w, ho, wo, eh, ew, sh, sw, ph, pw, wp];
        Ok(Plan::new(n, ints, (b, c, h, w)))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, h, w, ho, wo, eh, ew, sh, sw, ph, pw, wp] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (g, pos) = (f32s(inputs, 0), u32s(inputs, 1));
        let dx = (0..n)
            .map(|i| {
                let (col, r, plane) = (i % w, (i / w) % h, i / (w * h));
                let (pr, pc) = (r + ph, col + pw);
                let q = (pr * wp + pc) as u32;
                // Windows o with o·s ≤ pr ≤ o·s + e − 1 (e the positions
                // a window spans), in output order.
                let first = |v: usize, e: usize, s: usize| (v + 1).saturating_sub(e).div_ceil(s);
                let mut acc = 0f32;
                for oy in first(pr, eh, sh)..=(pr / sh).min(ho - 1) {
                    for ox in first(pc, ew, sw)..=(pc / sw).min(wo - 1) {
                        let o = plane * ho * wo + oy * wo + ox;
                        if pos[o] == q {
                            acc += g[o];
                        }
                    }
                }
                acc
            })
            .collect();
        Ok(CpuStorage::F32(dx))
    }
}

/// One-kernel elementwise maps.
pub(super) enum Elementwise {
    /// (g, y) → dx: 0 where y ≤ 0, else g.
    ReluBackward,
    /// (x `[B, C, …]`, ab `[B, 2C]`) → relu(x · a + b), a and b per plane
    /// (sample and channel): a sample's C scales, then its C shifts. NaN
    /// kept.
    ScaleShiftRelu,
    /// (g, x, ab) → g · a where y = x · a + b > 0, else 0: y worked out
    /// again as [`Elementwise::ScaleShiftRelu`] does.
    ScaleShiftReluDx,
}

impl Kernel for Elementwise {
    fn kernel(&self) -> &'static str {
        match self {
            Elementwise::ReluBackward => "relu_backward",
            Elementwise::ScaleShiftRelu => "scale_shift_relu",
            Elementwise::ScaleShiftReluDx => "scale_shift_relu_dx",
        }
    }
    fn inputs(&self) -> &'static [DType] {
        match self {
            Elementwise::ReluBackward | Elementwise::ScaleShiftRelu => &[DType::F32; 2],
            Elementwise::ScaleShiftReluDx => &[DType::F32; 3],
        }
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let dims = args[0].shape().dims();
        let n = args[0].count();
        let planes = dims.iter().take(2).product::<usize>();
        let c = dims.get(1).copied().unwrap_or(0);
        let full = |a: &Arg| a.shape() == args[0].shape();
        // ab: `[B, 2C]`.
        let gains = |a: &Arg| dims.len() >= 2 && a.shape().dims() == [dims[0], 2 * c];
        let fits = dims.len() >= 2
            && match self {
                Elementwise::ReluBackward => full(&args[1]),
                Elementwise::ScaleShiftRelu => gains(&args[1]),
                Elementwise::ScaleShiftReluDx => full(&args[1]) && gains(&args[2]),
            };
        if !fits {
            let shapes: Vec<&Shape> = args.iter().map(|a| a.shape()).collect();
            candle_core::bail!("{}: inputs {shapes:?} do not fit", self.kernel());
        }
        let plane = n / planes.max(1);
        let ints = match self {
            Elementwise::ReluBackward => sizes![n],
            _ => sizes![n, plane, c],
        };
        Ok(Plan::new(n, ints, args[0].shape().clone()))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let values = plan.values();
        let (n, plane, c) = (
            values[0],
            values.get(1).copied().unwrap_or(1),
            values.get(2).copied().unwrap_or(1),
        );
        // Plane j's scale in ab (its shift is c further).
        let at = |i: usize| {
            let j = i / plane;
            j + (j / c) * c
        };
        let (a, b) = (f32s(inputs, 0), f32s(inputs, 1));
        let out = (0..n).map(|i| match self {
            Elementwise::ReluBackward => {
                if b[i] <= 0.0 {
                    0.0
                } else {
                    a[i]
                }
            }
            Elementwise::ScaleShiftRelu => {
                let k = at(i);
                let v = a[i] * b[k] + b[k + c];
                if v > 0.0 || v.is_nan() {
                    v
                } else {
                    0.0
                }
            }
            Elementwise::ScaleShiftReluDx => {
                let (ab, k) = (f32s(inputs, 2), at(i));
                if b[i] * ab[k] + ab[k + c] > 0.0 {
                    a[i] * ab[k]
                } else {
                    0.0
                }
            }
        });
        Ok(CpuStorage::F32(out.collect()))
    }
}

/// (g, x, ab) → `[B, 2C]`, laid out as ab: the sums over each plane of
/// g · x where y = x · a + b > 0 (the scale's gradient), and of g there
/// (the shift's); y worked out again as [`Elementwise::ScaleShiftRelu`]
/// does.
pub(super) struct ScaleShiftDab;

impl Kernel for ScaleShiftDab {
    fn kernel(&self) -> &'static str {
        "scale_shift_relu_dab"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 3]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, h, w) = args[0].dims4()?;
        let planes = b * c;
        if args[1].shape() != args[0].shape() || args[2].shape().dims() != [b, 2 * c] {
            let shapes: Vec<&Shape> = args.iter().map(|a| a.shape()).collect();
            candle_core::bail!("{}: inputs {shapes:?} do not fit", self.kernel());
        }
        Ok(Plan {
            // One block of 256 threads per plane (at most 65535 blocks,
            // each then taking several planes).
            blocks: Some(planes.clamp(1, 65535)),
            ..Plan::new(2 * planes, sizes![planes, plane = h * w, c], (b, 2 * c))
        })
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[planes, plane, c] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (g, x, ab) = (f32s(inputs, 0), f32s(inputs, 1), f32s(inputs, 2));
        let mut out = vec![0f32; 2 * planes];
        for j in 0..planes {
            let k = j + (j / c) * c;
            let (a, b) = (ab[k], ab[k + c]);
            for t in j * plane..(j + 1) * plane {
                let gm = if x[t] * a + b > 0.0 { g[t] } else { 0.0 };
                out[k] += gm * x[t];
                out[k + c] += gm;
            }
        }
        Ok(CpuStorage::F32(out))
    }
}

/// (h, x) → h + x[:, :c] upsampled ×2 (nearest) where `up`.
pub(super) struct SkipAdd {
    pub up: bool,
}

impl Kernel for SkipAdd {
    fn kernel(&self) -> &'static str {
        "skip_add"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 2]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, hh, hw) = args[0].dims4()?;
        let (xb, xc, xh, xw) = args[1].dims4()?;
        let s = if self.up { 2 } else { 1 };
        if xb != b || xc < c || xh * s != hh || xw * s != hw {
            candle_core::bail!(
                "{}: x {:?} does not fit h {:?}",
                self.kernel(),
                args[1].shape(),
                args[0].shape()
            );
        }
        let n = b * c * hh * hw;
        Ok(Plan::new(
            n,
            sizes![n, c, hh, hw, xc, s],
            args[0].shape().clone(),
        ))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, c, hh, hw, xc, s] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (h, x) = (f32s(inputs, 0), f32s(inputs, 1));
        let (xh, xw) = (hh / s, hw / s);
        let out = (0..n).map(|i| {
            let (col, row, ch, bb) = (
                i % hw,
                (i / hw) % hh,
                (i / (hw * hh)) % c,
                i / (hw * hh * c),
            );
            h[i] + x[((bb * xc + ch) * xh + row / s) * xw + col / s]
        });
        Ok(CpuStorage::F32(out.collect()))
    }
}

/// g → the gradient of [`SkipAdd`]'s x (`xc` channels): g summed over each
/// s × s window, zero in the channels the join dropped.
pub(super) struct SkipAddDx {
    pub xc: usize,
    pub up: bool,
}

impl Kernel for SkipAddDx {
    fn kernel(&self) -> &'static str {
        "skip_add_dx"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, c, hh, hw) = args[0].dims4()?;
        let s = if self.up { 2 } else { 1 };
        if self.xc < c || hh % s != 0 || hw % s != 0 {
            candle_core::bail!(
                "{}: a gradient {:?} for {} channels",
                self.kernel(),
                args[0].shape(),
                self.xc
            );
        }
        let (xh, xw) = (hh / s, hw / s);
        let n = b * self.xc * xh * xw;
        Ok(Plan::new(
            n,
            sizes![n, c, xc = self.xc, xh, xw, s],
            (b, self.xc, xh, xw),
        ))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, c, xc, xh, xw, s] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let g = f32s(inputs, 0);
        let (hh, hw) = (xh * s, xw * s);
        let dx = (0..n).map(|i| {
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
        });
        Ok(CpuStorage::F32(dx.collect()))
    }
}

/// A conv's shape, for its columns: kernel, output, and stride, padding
/// and dilation per axis (`[rows, columns]`).
#[derive(Clone, Copy)]
pub(super) struct ConvShape {
    pub k: (usize, usize),
    pub out: (usize, usize),
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// The shape of a conv with `weight` `[Cout, Cin, kh, kw]` and
    /// `settings` whose output is `out` (rows, columns).
    pub(super) fn of(
        weight: &candle_core::Tensor,
        out: (usize, usize),
        settings: Conv2dSettings,
    ) -> candle_core::Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        Ok(ConvShape {
            k: (kh, kw),
            out,
            stride: settings.stride,
            padding: settings.padding,
            dilation: settings.dilation,
        })
    }

    /// The values of one sample's columns, `cin` channels in.
    pub(super) fn columns(&self, cin: usize) -> usize {
        cin * self.k.0 * self.k.1 * self.out.0 * self.out.1
    }

    /// The sizes of `im2col` and `col2im`, in their order.
    fn sizes(&self, n: usize, cin: usize, h: usize, w: usize) -> Vec<(&'static str, usize)> {
        let ((kh, kw), (ho, wo)) = (self.k, self.out);
        let ([sh, sw], [ph, pw], [dh, dw]) = (self.stride, self.padding, self.dilation);
        sizes![n, cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw]
    }
}

/// x `[B, Cin, H, W]` → a conv's columns `[B, Cin·kh·kw, Ho·Wo]`.
pub(super) struct Im2Col(pub ConvShape);

impl Kernel for Im2Col {
    fn kernel(&self) -> &'static str {
        "im2col"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, cin, h, w) = args[0].dims4()?;
        let ((kh, kw), (ho, wo)) = (self.0.k, self.0.out);
        let n = b * cin * kh * kw * ho * wo;
        Ok(Plan::new(
            n,
            self.0.sizes(n, cin, h, w),
            (b, cin * kh * kw, ho * wo),
        ))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, _cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw] = plan.values().as_slice()
        else {
            unreachable!("the plan's sizes")
        };
        let x = f32s(inputs, 0);
        let m = ho * wo;
        let cols = (0..n).map(|i| {
            let (ox, oy) = (i % wo, (i / wo) % ho);
            let (kx, ky, bc) = ((i / m) % kw, (i / (m * kw)) % kh, i / (m * kw * kh));
            let y = signed(oy * sh + ky * dh) - signed(ph);
            let xx = signed(ox * sw + kx * dw) - signed(pw);
            if y >= 0 && y < signed(h) && xx >= 0 && xx < signed(w) {
                x[(bc * h + y as usize) * w + xx as usize]
            } else {
                0.0
            }
        });
        Ok(CpuStorage::F32(cols.collect()))
    }
}

/// (y `[B, C, …]`, bias `[C]`) → y + bias, then a ReLU (NaN kept) where
/// `relu`.
pub(super) struct BiasAct {
    pub relu: bool,
}

impl Kernel for BiasAct {
    fn kernel(&self) -> &'static str {
        "bias_act"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 2]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let dims = args[0].shape().dims();
        let channels = args[1].count();
        if dims.len() < 2 || dims[1] != channels {
            candle_core::bail!(
                "{}: a bias {:?} for {dims:?}",
                self.kernel(),
                args[1].shape()
            );
        }
        let n = args[0].count();
        let plane = dims[2..].iter().product::<usize>();
        let ints = sizes![n, plane, channels, relu = usize::from(self.relu)];
        Ok(Plan::new(n, ints, args[0].shape().clone()))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, plane, channels, relu] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (y, bias) = (f32s(inputs, 0), f32s(inputs, 1));
        let out = (0..n).map(|i| {
            let v = y[i] + bias[(i / plane) % channels];
            if relu != 0 && !(v > 0.0 || v.is_nan()) {
                0.0
            } else {
                v
            }
        });
        Ok(CpuStorage::F32(out.collect()))
    }
}

/// A conv's columns `[B, Cin·kh·kw, Ho·Wo]` → its input gradient `[B,
/// Cin, H, W]`: per input position, the columns of the output positions
/// whose windows took it, the taps in order.
pub(super) struct Col2Im {
    /// The input's dims `[B, Cin, H, W]`.
    pub dims: [usize; 4],
    pub conv: ConvShape,
}

impl Kernel for Col2Im {
    fn kernel(&self) -> &'static str {
        "col2im"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let [b, cin, h, w] = self.dims;
        let ((kh, kw), (ho, wo)) = (self.conv.k, self.conv.out);
        if args[0].shape().dims() != [b, cin * kh * kw, ho * wo] {
            candle_core::bail!(
                "{}: columns {:?} do not fit",
                self.kernel(),
                args[0].shape()
            );
        }
        let n = b * cin * h * w;
        Ok(Plan::new(n, self.conv.sizes(n, cin, h, w), (b, cin, h, w)))
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n, _cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw] = plan.values().as_slice()
        else {
            unreachable!("the plan's sizes")
        };
        let cols = f32s(inputs, 0);
        let m = ho * wo;
        // The output row (column) whose tap t reads input row (column) v,
        // by the settings (s, p, d) of that axis.
        let at = |v: usize, t: usize, o: usize, (s, p, d): (usize, usize, usize)| {
            let r = (v + p).checked_sub(t * d)?;
            (r % s == 0 && r / s < o).then_some(r / s)
        };
        let dx = (0..n).map(|i| {
            let (x, y, bc) = (i % w, (i / w) % h, i / (w * h));
            let cp = &cols[bc * kh * kw * m..][..kh * kw * m];
            let mut acc = 0f32;
            for ky in 0..kh {
                let Some(oy) = at(y, ky, ho, (sh, ph, dh)) else {
                    continue;
                };
                for kx in 0..kw {
                    let Some(ox) = at(x, kx, wo, (sw, pw, dw)) else {
                        continue;
                    };
                    acc += cp[(ky * kw + kx) * m + oy * wo + ox];
                }
            }
            acc
        });
        Ok(CpuStorage::F32(dx.collect()))
    }
}

/// The divergence the head kernels compute: their `kind`, this order's
/// index (`js` takes the weights; the others ignore them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadKind {
    Kl,
    ReverseKl,
    Jeffreys,
    Tv,
    Js,
}

impl HeadKind {
    /// Every kind, in the order of the kernels' `kind`.
    const ALL: [HeadKind; 5] = [
        HeadKind::Kl,
        HeadKind::ReverseKl,
        HeadKind::Jeffreys,
        HeadKind::Tv,
        HeadKind::Js,
    ];

    /// The kernels' `kind`.
    fn index(self) -> usize {
        HeadKind::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is in ALL")
    }

    /// The kind of a plan's `kind` (what the CPU twins read).
    fn of_index(kind: usize) -> candle_core::Result<Self> {
        HeadKind::ALL
            .get(kind)
            .copied()
            .ok_or_else(|| candle_core::Error::Msg(format!("head kernels: no kind {kind}")))
    }
}

/// The search's head for two models (`head_forward` of `kernels.cu`):
/// (logits 1, logits 2, weights `[2]`) → `[B + 2·B·K]`: the divergence
/// `[B]`, then each model's log-probabilities `[B, K]` (the divergence
/// first, so that it is a view from the start of the storage).
pub(super) struct HeadForward {
    pub kind: HeadKind,
}

/// The floor of the log-probabilities, as the kernels have it.
const FLOOR: f32 = crate::divergence::LOG_PROB_FLOOR as f32;

fn floored(lp: f32) -> f32 {
    if lp < FLOOR {
        FLOOR
    } else {
        lp
    }
}

/// [`floored`] in f64, as the forward has it.
fn floored64(lp: f64) -> f64 {
    lp.max(crate::divergence::LOG_PROB_FLOOR)
}

/// [`log_mix`] in f64, as the forward has it.
fn log_mix64(f1: f64, f2: f64, w: &[f32]) -> f64 {
    let mm = if f1 < f2 { f2 } else { f1 };
    ((f1 - mm).exp() * f64::from(w[0]) + (f2 - mm).exp() * f64::from(w[1])).ln() + mm
}

/// js's log p̄ of one class, as the kernels work it out.
fn log_mix(f1: f32, f2: f32, w: &[f32]) -> f32 {
    let mm = if f1 < f2 { f2 } else { f1 };
    ((f1 - mm).exp() * w[0] + (f2 - mm).exp() * w[1]).ln() + mm
}

/// The two models' `[B, K]` logits and the weights `[2]`, checked.
fn head_sizes(name: &str, args: &[Arg]) -> candle_core::Result<(usize, usize)> {
    let (b, k) = args[0].layout.shape().dims2()?;
    if args[1].shape() != args[0].shape() || args[2].count() != 2 {
        let shapes: Vec<&Shape> = args.iter().map(|a| a.shape()).collect();
        candle_core::bail!("{name}: inputs {shapes:?} do not fit");
    }
    Ok((b, k))
}

/// One block of 256 threads per 256 samples.
fn per_sample(b: usize) -> Option<usize> {
    Some(b.div_ceil(256).clamp(1, 65535))
}

impl Kernel for HeadForward {
    fn kernel(&self) -> &'static str {
        "head_forward"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 3]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (b, k) = head_sizes(self.kernel(), args)?;
        let n = 2 * b * k + b;
        Ok(Plan {
            blocks: per_sample(b),
            ..Plan::new(n, sizes![b, k, kind = self.kind.index()], n)
        })
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[b, k, kind] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let kind = HeadKind::of_index(kind)?;
        let (l1, l2, w) = (f32s(inputs, 0), f32s(inputs, 1), f32s(inputs, 2));
        let mut out = vec![0f32; plan.n];
        let (ds, lps) = out.split_at_mut(b);
        let (lps1, lps2) = lps.split_at_mut(b * k);
        for (r, out) in ds.iter_mut().enumerate() {
            let row = r * k..(r + 1) * k;
            let (x1, x2) = (&l1[row.clone()], &l2[row.clone()]);
            let (lp1, lp2) = (&mut lps1[row.clone()], &mut lps2[row]);
            let ((m1, ls1), (m2, ls2)) = (log_normaliser(x1), log_normaliser(x2));
            let (mut d, mut d2) = (0f64, 0f64);
            for j in 0..k {
                let (e1, e2) = (f64::from(x1[j]) - m1 - ls1, f64::from(x2[j]) - m2 - ls2);
                lp1[j] = e1 as f32;
                lp2[j] = e2 as f32;
                let (f1, f2) = (floored64(e1), floored64(e2));
                match kind {
                    HeadKind::Kl => d += f1.exp() * (f1 - f2),
                    HeadKind::ReverseKl => d += f2.exp() * (f2 - f1),
                    HeadKind::Jeffreys => d += (f1.exp() - f2.exp()) * (f1 - f2),
                    HeadKind::Tv => d += (f1.exp() - f2.exp()).abs(),
                    HeadKind::Js => {
                        let lm = log_mix64(f1, f2, w);
                        d += f1.exp() * (f1 - lm);
                        d2 += f2.exp() * (f2 - lm);
                    }
                }
            }
            *out = match kind {
                HeadKind::Tv => d * 0.5,
                HeadKind::Js => d * f64::from(w[0]) + d2 * f64::from(w[1]),
                _ => d,
            } as f32;
        }
        Ok(CpuStorage::F32(out))
    }
}

/// The maximum of a row of logits and ln Σ exp(x − max), in f64: the
/// forward takes each log-probability x − max − ln Σ and the divergence
/// in f64 from the f32 logits, and rounds them to f32 last. In f32 (as
/// candle's `log_softmax`), a thousand near-equal terms summed one after
/// another rounded ln Σ by up to 2e-6, an error every log-probability
/// carried and a divergence of two nearly agreeing models took whole (a
/// KL of 4e-6 nats read 22 to 27% off).
fn log_normaliser(x: &[f32]) -> (f64, f64) {
    let m = f64::from(
        x.iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }),
    );
    let s: f64 = x.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    (m, s.ln())
}

/// Its backward (`head_backward`): (the forward's output, the
/// divergence's gradient `[B]`, the weights) → the two models' logits'
/// gradients, `[2, B, K]`.
pub(super) struct HeadBackward {
    pub kind: HeadKind,
}

impl Kernel for HeadBackward {
    fn kernel(&self) -> &'static str {
        "head_backward"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 3]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let (packed, b) = (args[0].count(), args[1].count());
        let k = packed.saturating_sub(b) / (2 * b).max(1);
        if b == 0 || packed != 2 * b * k + b || args[2].count() != 2 {
            let shapes: Vec<&Shape> = args.iter().map(|a| a.shape()).collect();
            candle_core::bail!("{}: inputs {shapes:?} do not fit", self.kernel());
        }
        Ok(Plan {
            blocks: per_sample(b),
            ..Plan::new(2 * b * k, sizes![b, k, kind = self.kind.index()], (2, b, k))
        })
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[b, k, kind] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let kind = HeadKind::of_index(kind)?;
        let (packed, u, w) = (f32s(inputs, 0), f32s(inputs, 1), f32s(inputs, 2));
        let mut dl = vec![0f32; plan.n];
        let (dl1, dl2) = dl.split_at_mut(b * k);
        for (r, &ur) in u.iter().enumerate().take(b) {
            let row = r * k..(r + 1) * k;
            let (lp1, lp2) = (&packed[b..][row.clone()], &packed[b + b * k..][row.clone()]);
            let (d1, d2) = (&mut dl1[row.clone()], &mut dl2[row]);
            let (mut s1, mut s2) = (0f32, 0f32);
            for j in 0..k {
                let (f1, f2) = (floored(lp1[j]), floored(lp2[j]));
                let (p1, p2) = (f1.exp(), f2.exp());
                let (g1, g2) = match kind {
                    HeadKind::Kl => (p1 * (f1 - f2), -p1),
                    HeadKind::ReverseKl => (-p2, p2 * (f2 - f1)),
                    HeadKind::Jeffreys => (p1 * (f1 - f2) - p2, -(p2 * (f1 - f2) + p1)),
                    HeadKind::Tv => {
                        let diff = p1 - p2;
                        let sg = f32::from(diff > 0.0) - f32::from(diff < 0.0);
                        ((sg * p1) * 0.5, (sg * p2) * -0.5)
                    }
                    HeadKind::Js => {
                        let lm = log_mix(f1, f2, w);
                        ((p1 * (f1 - lm)) * w[0], (p2 * (f2 - lm)) * w[1])
                    }
                };
                let g1 = (g1 * f32::from(lp1[j] >= FLOOR)) * ur;
                let g2 = (g2 * f32::from(lp2[j] >= FLOOR)) * ur;
                d1[j] = g1;
                d2[j] = g2;
                s1 += g1;
                s2 += g2;
            }
            for j in 0..k {
                d1[j] -= lp1[j].exp() * s1;
                d2[j] -= lp2[j].exp() * s2;
            }
        }
        Ok(CpuStorage::F32(dl))
    }
}

/// Adam's step (`adam_step`): (the gradient `[n]`, the state `[z | m | v]`
/// `[3n]`, the hyperparameters `[8]`) → the next state `[3n]`.
pub(super) struct AdamStep;

impl Kernel for AdamStep {
    fn kernel(&self) -> &'static str {
        "adam_step"
    }
    fn inputs(&self) -> &'static [DType] {
        &[DType::F32; 3]
    }
    fn plan(&self, args: &[Arg]) -> candle_core::Result<Plan> {
        let n = args[0].count();
        if args[1].count() != 3 * n || args[2].count() != 8 {
            let shapes: Vec<&Shape> = args.iter().map(|a| a.shape()).collect();
            candle_core::bail!("{}: inputs {shapes:?} do not fit", self.kernel());
        }
        Ok(Plan {
            // One thread per element of z.
            blocks: Some(n.div_ceil(256).clamp(1, 65535)),
            ..Plan::new(3 * n, sizes![n], 3 * n)
        })
    }
    fn cpu(&self, plan: &Plan, inputs: &[Values]) -> candle_core::Result<CpuStorage> {
        let &[n] = plan.values().as_slice() else {
            unreachable!("the plan's sizes")
        };
        let (g, state, hp) = (f32s(inputs, 0), f32s(inputs, 1), f32s(inputs, 2));
        let mut out = vec![0f32; 3 * n];
        for (i, &gi) in g.iter().enumerate() {
            let m = (state[n + i] * hp[0] + 0.0) + (gi * hp[1] + 0.0);
            let v = (state[2 * n + i] * hp[2] + 0.0) + ((gi * gi) * hp[3] + 0.0);
            let (m_hat, v_hat) = (m * hp[4] + 0.0, v * hp[5] + 0.0);
            let update = (m_hat / (v_hat.sqrt() + hp[6])) * hp[7] + 0.0;
            out[i] = state[i] + update;
            out[n + i] = m;
            out[2 * n + i] = v;
        }
        Ok(CpuStorage::F32(out))
    }
}

kernel_op!(PoolArgmax: CustomOp1, s1 l1);
kernel_op!(PoolGather: CustomOp2, s1 l1, s2 l2);
kernel_op!(PoolBackward: CustomOp2, s1 l1, s2 l2);
kernel_op!(Elementwise: CustomOp2, s1 l1, s2 l2);
kernel_op!(Elementwise: CustomOp3, s1 l1, s2 l2, s3 l3);
kernel_op!(ScaleShiftDab: CustomOp3, s1 l1, s2 l2, s3 l3);
kernel_op!(SkipAdd: CustomOp2, s1 l1, s2 l2);
kernel_op!(SkipAddDx: CustomOp1, s1 l1);
kernel_op!(Im2Col: CustomOp1, s1 l1);
kernel_op!(BiasAct: CustomOp2, s1 l1, s2 l2);
kernel_op!(Col2Im: CustomOp1, s1 l1);
kernel_op!(HeadForward: CustomOp3, s1 l1, s2 l2, s3 l3);
kernel_op!(HeadBackward: CustomOp3, s1 l1, s2 l2, s3 l3);
kernel_op!(AdamStep: CustomOp3, s1 l1, s2 l2, s3 l3);

/// Compiling, loading and launching (feature `cuda`).
#[cfg(feature = "cuda")]
mod on_device {
    use std::sync::OnceLock;

    use candle_core::cuda_backend::cudarc::driver::{
        CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, DType, Layout};

    use super::Plan;

    /// The kernels' source.
    const SOURCE: &str = include_str!("kernels.cu");

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

    /// A kernel's input: the contiguous f32 or u32 elements of a layout.
    pub(super) enum Input<'a> {
        F32(CudaView<'a, f32>),
        U32(CudaView<'a, u32>),
    }

    impl<'a> Input<'a> {
        /// The elements of `l` in `s` (contiguous: the plan checked).
        pub(super) fn of(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<Self> {
            let (start, n) = (l.start_offset(), l.shape().elem_count());
            Ok(match candle_core::backend::BackendStorage::dtype(s) {
                DType::U32 => Input::U32(s.as_cuda_slice::<u32>()?.slice(start..start + n)),
                _ => Input::F32(s.as_cuda_slice::<f32>()?.slice(start..start + n)),
            })
        }
    }

    /// Runs kernel `name` on the device of `on` as `plan` says: its
    /// parameters are the inputs, then the output (`plan.n` elements of
    /// `T`, every one of which the kernel writes), then the plan's sizes
    /// as `int`s, in that order. The output as an op's result.
    pub(super) fn run<T: CudaDType + DeviceRepr>(
        on: &CudaStorage,
        name: &str,
        plan: &Plan,
        inputs: &[Input],
    ) -> candle_core::Result<(CudaStorage, candle_core::Shape)> {
        let dev = &on.device;
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "gevaldi's CUDA kernel {name}: a size of {v} exceeds 2^31 - 1 \
                     (a smaller batch fits)"
                ))
            })
        };
        let blocks = match plan.blocks {
            Some(blocks) => blocks,
            None => plan.n.div_ceil(256).max(1),
        };
        let cfg = LaunchConfig {
            grid_dim: (int(blocks)? as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let ints = plan
            .ints
            .iter()
            .map(|&(_, v)| int(v))
            .collect::<candle_core::Result<Vec<i32>>>()?;
        let func = dev
            .get_or_load_custom_func(name, MODULE, ptx()?)
            .map_err(|e| {
                candle_core::Error::Msg(format!(
                    "failed to load gevaldi's CUDA kernel {name} (PTX compiled by NVRTC) \
                     on the device: {e} (CUDA_ERROR_UNSUPPORTED_PTX_VERSION there: the \
                     libnvrtc loaded is newer than the driver; GEVALDI_ENGINE=generic runs \
                     candle's ops instead)"
                ))
            })?;
        // SAFETY: the kernel writes every element before anything reads.
        let mut out = unsafe { dev.alloc::<T>(plan.n) }?;
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
        // the sizes say (the plan checked them against the layouts).
        unsafe { builder.launch(cfg) }.w()?;
        drop(builder);
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            plan.shape.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Layout, Shape};

    use super::*;

    /// A kernel's parameters in `kernels.cu`: (type, name) each, `const`
    /// kept in the type.
    fn signature(kernel: &str) -> Vec<(String, String)> {
        let source = include_str!("kernels.cu");
        let head = format!("__global__ void {kernel}(");
        let at = source
            .find(&head)
            .unwrap_or_else(|| panic!("kernels.cu has no kernel {kernel}"));
        let rest = &source[at + head.len()..];
        let params = &rest[..rest.find(')').expect("a parameter list ends")];
        params
            .split(',')
            .map(|p| {
                let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
                let cut = p.rfind([' ', '*']).expect("a type and a name");
                (p[..=cut].trim().to_string(), p[cut + 1..].to_string())
            })
            .collect()
    }

    /// Every op launches its kernel with the parameters `kernels.cu`
    /// declares, in its order: one pointer per input of the op's dtype
    /// (`const`), then the output's pointer, then the plan's sizes, named
    /// as the kernel names its `int`s.
    #[test]
    fn every_plan_matches_its_kernels_parameters() {
        let l = |dims: &[usize]| Layout::contiguous(Shape::from(dims.to_vec()));
        let settings = Pool2dSettings {
            stride: [2, 1],
            padding: [1, 0],
            dilation: [1, 2],
            ..Pool2dSettings::new([3, 2])
        };
        let pool = PoolShape::new(&settings, (3, 4), 7);
        let x4 = l(&[2, 3, 6, 6]);
        let check = |k: &dyn Kernel, layouts: Vec<Layout>| {
            let args: Vec<Arg> = layouts
                .iter()
                .zip(k.inputs())
                .map(|(layout, &dtype)| Arg { layout, dtype })
                .collect();
            let plan = k
                .plan(&args)
                .unwrap_or_else(|e| panic!("{}: {e}", k.kernel()));
            let params = signature(k.kernel());
            let c_type = |d: DType| match d {
                DType::U32 => "unsigned *",
                _ => "float *",
            };
            let mut want: Vec<(String, String)> = Vec::new();
            for &d in k.inputs() {
                want.push((format!("const {}", c_type(d)), String::new()));
            }
            want.push((c_type(k.output()).to_string(), String::new()));
            for (name, _) in &plan.ints {
                want.push(("int".to_string(), name.to_string()));
            }
            let got: Vec<(String, String)> = params
                .iter()
                .map(|(t, n)| {
                    let t = t.replace(" *", "*").replace('*', " *");
                    if t == "int" {
                        (t, n.clone())
                    } else {
                        (t, String::new())
                    }
                })
                .collect();
            assert_eq!(got, want, "{}: parameters", k.kernel());
        };
        check(&PoolArgmax(pool), vec![x4.clone()]);
        check(&PoolGather(pool), vec![x4.clone(), l(&[6, 12])]);
        check(
            &PoolBackward {
                dims: (2, 3, 6, 6),
                pool,
            },
            vec![l(&[2, 3, 3, 4]), l(&[6, 12])],
        );
        check(&Elementwise::ReluBackward, vec![x4.clone(), x4.clone()]);
        check(&Elementwise::ScaleShiftRelu, vec![x4.clone(), l(&[2, 6])]);
        check(
            &Elementwise::ScaleShiftReluDx,
            vec![x4.clone(), x4.clone(), l(&[2, 6])],
        );
        check(&ScaleShiftDab, vec![x4.clone(), x4.clone(), l(&[2, 6])]);
        check(&SkipAdd { up: true }, vec![l(&[2, 3, 12, 12]), x4.clone()]);
        check(&SkipAddDx { xc: 3, up: true }, vec![l(&[2, 3, 12, 12])]);
        let conv = ConvShape {
            k: (3, 3),
            out: (3, 3),
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
        };
        check(&Im2Col(conv), vec![x4.clone()]);
        check(&BiasAct { relu: true }, vec![x4.clone(), l(&[3])]);
        let col2im = Col2Im {
            dims: [2, 3, 6, 6],
            conv,
        };
        check(&col2im, vec![l(&[2, 27, 9])]);
        check(
            &HeadForward { kind: HeadKind::Js },
            vec![l(&[2, 5]), l(&[2, 5]), l(&[2])],
        );
        check(
            &HeadBackward { kind: HeadKind::Kl },
            vec![l(&[22]), l(&[2]), l(&[2])],
        );
        check(&AdamStep, vec![l(&[4, 3]), l(&[36]), l(&[8])]);
    }
}
