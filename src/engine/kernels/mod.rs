//! gevaldi's CPU kernels, on channels-last (NHWC) f32 activations: each
//! kernel's forward pass and the gradient of its input.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
mod few_rows;
mod gemm;
pub(crate) mod pool;
mod simd;
pub(crate) mod skip;
mod winograd;

pub(crate) use gemm::{gemm, gemm_new, gemm_new_act_backward, gemm_new_bias_act};

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use pulp::Simd;

use super::net::Activation;
use simd::madd;

/// Dims of an activation: `[B, H, W, C]`; a flat `[B, F]` value is H = W =
/// 1, C = F, not spatial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    /// `[B, C, H, W]` rather than `[B, F]`.
    pub(crate) spatial: bool,
}

impl Dims {
    pub(crate) fn flat(b: usize, f: usize) -> Self {
        Dims {
            b,
            h: 1,
            w: 1,
            c: f,
            spatial: false,
        }
    }

    pub(crate) fn per_sample(&self) -> usize {
        self.h * self.w * self.c
    }

    pub(crate) fn len(&self) -> usize {
        self.b * self.per_sample()
    }

    /// The value's shape in PyTorch's order: `[B, C, H, W]` or `[B, F]`.
    pub(crate) fn shape(&self) -> Vec<usize> {
        if self.spatial {
            vec![self.b, self.c, self.h, self.w]
        } else {
            vec![self.b, self.c]
        }
    }
}

/// A row-major `[rows, cols]` view of `v` from `offset` with row stride
/// `rs`.
pub(crate) fn view(
    v: &[f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
) -> ArrayView2<'_, f32> {
    if rows == 0 || cols == 0 {
        // No elements (an empty batch): ndarray refuses the strides of an
        // empty view that would reach past the slice.
        return ArrayView2::from_shape((rows, cols), &[]).expect("an empty view");
    }
    let end = offset + (rows - 1) * rs + cols;
    ArrayView2::from_shape((rows, cols).strides((rs, 1)), &v[offset..end]).expect("gemm view")
}

/// The mutable counterpart of [`view`].
pub(crate) fn view_mut(
    v: &mut [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
) -> ArrayViewMut2<'_, f32> {
    if rows == 0 || cols == 0 {
        return ArrayViewMut2::from_shape((rows, cols), &mut []).expect("an empty view");
    }
    let end = offset + (rows - 1) * rs + cols;
    ArrayViewMut2::from_shape((rows, cols).strides((rs, 1)), &mut v[offset..end])
        .expect("gemm view")
}

/// The first `len` values of `v`, grown (with zeros) when shorter; what
/// an earlier kernel left there stays, for the caller to overwrite.
pub(crate) fn buffer(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// An activation applied to one value (`S`: the instruction set of the
/// [`simd_fn!`](simd::simd_fn) copy calling it, for [`madd`]).
#[inline(always)]
pub(crate) fn act<S: Simd>(a: Activation, v: f32) -> f32 {
    match a {
        // Not `v.max(0.0)`: `f32::max` returns the other argument for a
        // NaN, which turned a NaN input into a confident 0.
        Activation::Relu => {
            if v.is_nan() {
                v
            } else {
                v.max(0.0)
            }
        }
        Activation::Sigmoid => ((-v).exp() + 1.0).recip(),
        Activation::Tanh => tanh::<S>(v),
        Activation::GeluErf => v * normal_cdf_and_gauss::<S>(v).0,
        Activation::Silu => v / (exp::<S>(-v) + 1.0),
        // A NaN is not > 0: NaN · slope, NaN.
        Activation::LeakyRelu(a) => {
            if v > 0.0 {
                v
            } else {
                v * a
            }
        }
        // PyTorch's clamp: the bound beyond it; a NaN stays NaN (it fails
        // both comparisons). Two selects, which vectorize (nested branches
        // did not: 19% of a MobileNetV2 step in this line).
        Activation::Hardtanh(min, max) => {
            let low = if v < min { min } else { v };
            if low > max {
                max
            } else {
                low
            }
        }
        Activation::Hardswish => hardswish_and_slope(v).0,
        Activation::Hardsigmoid => hardsigmoid_and_slope(v).0,
    }
}

/// ReLU6(v + 3), as PyTorch's hard activations compute it (`min(max(v +
/// 3, 0), 6)`); a NaN stays NaN.
#[inline(always)]
fn relu6_shifted(v: f32) -> f32 {
    (v + 3.0).clamp(0.0, 6.0)
}

/// Hardswish at `v`, v·ReLU6(v + 3)/6 in PyTorch's order, and its slope
/// there as PyTorch's backward takes it (2.15, measured): 0 at and below
/// −3, v/3 + 1/2 strictly between, 1 at and above 3 (and at a NaN, which
/// fails both comparisons).
#[inline(always)]
pub(crate) fn hardswish_and_slope(v: f32) -> (f32, f32) {
    let slope = if v <= -3.0 {
        0.0
    } else if v < 3.0 {
        v / 3.0 + 0.5
    } else {
        1.0
    };
    (v * relu6_shifted(v) / 6.0, slope)
}

/// Hardsigmoid at `v`, ReLU6(v + 3)/6, and its slope there as PyTorch's
/// backward takes it: 1/6 strictly between −3 and 3, else 0 (a NaN too).
#[inline(always)]
pub(crate) fn hardsigmoid_and_slope(v: f32) -> (f32, f32) {
    let slope = if v > -3.0 && v < 3.0 { 1.0 / 6.0 } else { 0.0 };
    (relu6_shifted(v) / 6.0, slope)
}

/// tanh(v) to within 3 ulp (relative 3e-7), with no call (a loop over it
/// vectorizes; std's `tanh` is a call to libm per value, 3.7 ms of the
/// 3.9 ms of a DCGAN generator's last bias + tanh pass at batch 64, `perf`):
/// for |v| < 0.3 its Taylor series to v¹¹ (the remainder below 2e-9 of
/// the value), elsewhere (1 − e) / (1 + e) with e = e^(−2|v|) ≥ 0.45
/// away from 1, so that 1 − e keeps [`exp`]'s precision; the sign of v.
/// ±1 beyond |v| ≈ 9; NaN stays NaN.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(v: f32) -> f32 {
    // tanh(a) = a · (1 − a²/3 + 2a⁴/15 − 17a⁶/315 + 62a⁸/2835 − 1382a¹⁰/155925).
    const C: [f32; 6] = [
        -1382.0 / 155_925.0,
        62.0 / 2835.0,
        -17.0 / 315.0,
        2.0 / 15.0,
        -1.0 / 3.0,
        1.0,
    ];
    let a = v.abs();
    let a2 = a * a;
    let series = a * C[1..].iter().fold(C[0], |p, c| madd::<S>(p, a2, *c));
    let e = exp::<S>(-2.0 * a);
    let ratio = (1.0 - e) / (1.0 + e);
    // A NaN fails the comparison: the ratio, NaN.
    let t = if a < 0.3 { series } else { ratio };
    t.copysign(v)
}

/// Φ(v), the standard normal's CDF (GELU(v) = v · Φ(v)), and
/// e^(−v²/2) (√(2π) · φ(v)), from one exp and no call (a loop over it
/// vectorizes): Abramowitz and Stegun's 7.1.26, erfc(x) = t · P(t) ·
/// e^(−x²) with t = 1 / (1 + p·x) for x = |v|/√2 ≥ 0 (absolute error
/// 1.5e-7; PyTorch's vectorized float erf is the same formula), whose
/// e^(−x²) is φ's. The tail below −|v| is computed directly, not as
/// 1 − (1 − …), so Φ keeps its relative precision far out on the left.
/// Tested against f64: within 3.5e-7 absolute everywhere (the erf by a
/// rational this replaced was within 2.1e-7), within 5% relative in the
/// left tail down to Φ(−12). NaN stays NaN.
///
/// GELU and its slope were 8% of a ConvNeXt step, bound by their
/// arithmetic; with one exp for both rather than an erf by a rational
/// (Eigen's, this engine's before) and an exp, 1.45 → 1.15 ns a value on
/// one core of the 2-core AVX2 machine.
#[inline(always)]
fn normal_cdf_and_gauss<S: Simd>(v: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let x = v.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / madd::<S>(P, x, 1.0);
    let poly = A[..4].iter().rev().fold(A[4], |p, a| madd::<S>(p, t, *a)) * t;
    let gauss = exp::<S>(-0.5 * v * v);
    // Φ(−|v|) = erfc(|v|/√2) / 2.
    let tail = 0.5 * poly * gauss;
    let cdf = if v < 0.0 { tail } else { 1.0 - tail };
    (cdf, gauss)
}

/// GELU at `v` and its slope there (the one activation that
/// [keeps its slope](keeps_slope)): v·Φ(v) and Φ(v) + v·φ(v) from one exp,
/// so its backward is one multiply.
#[inline(always)]
pub(crate) fn gelu_and_slope<S: Simd>(v: f32) -> (f32, f32) {
    let (cdf, gauss) = normal_cdf_and_gauss::<S>(v);
    let pdf = gauss * 0.398_942_3;
    (v * cdf, madd::<S>(v, pdf, cdf))
}

/// e^x to within 2 ulp, with no call (a loop over it vectorizes):
/// 2^n · e^r, n = round(x·log₂e), r = x − n·ln 2 in two parts
/// (Cody–Waite), e^r by its Taylor series to r⁷ (|r| ≤ ln 2 / 2, the
/// remainder below 6e-9). Saturates at e^-87.3 and e^88.3 rather than 0
/// and ∞ (2ⁿ must be a normal float); NaN
/// stays NaN.
#[inline(always)]
pub(crate) fn exp<S: Simd>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    // 1.5·2²³ + n: its low bits hold n (the ulp there is 1).
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = madd::<S>(n, -0.693_145_75, x);
    let r = madd::<S>(n, -1.428_606_8e-6, r);
    const C: [f32; 7] = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let p = C.iter().fold(1.0 / 5040.0, |p, c| madd::<S>(p, r, *c));
    // 2ⁿ from t's bits with integer lane ops: `n as i32` (a saturating
    // cast) compiled to one scalar conversion per lane.
    let biased = t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// Whether the activation's forward keeps its slope at each input for the
/// backward ([`gelu_and_slope`]: GELU, whose slope costs an exp), else its
/// output (the others' slopes are cheap functions of it).
pub(crate) fn keeps_slope(a: Activation) -> bool {
    matches!(
        a,
        Activation::GeluErf | Activation::Silu | Activation::Hardswish | Activation::Hardsigmoid
    )
}

/// Whether a conv's or dense layer's bias pass applies `a` (fused into
/// it at compile time): every activation that keeps no slope, and GELU;
/// the others' forward and slope a pass of its own computes
/// ([`silu_and_slope`], [`hardswish_and_slope`], [`hardsigmoid_and_slope`]).
pub(crate) fn fuses_into_bias_pass(a: Activation) -> bool {
    !keeps_slope(a) || a == Activation::GeluErf
}

/// SiLU at `v` and its slope there, σ(v)·(1 + v·(1 − σ(v))), from one
/// exp (σ(v) = 1 / (1 + e^−v); at v → −∞, e^−v saturates and σ(v), the
/// value and the slope go to 0).
#[inline(always)]
pub(crate) fn silu_and_slope<S: Simd>(v: f32) -> (f32, f32) {
    let s = 1.0 / (exp::<S>(-v) + 1.0);
    (v * s, s * madd::<S>(v, 1.0 - s, 1.0))
}

/// The gradient at the activation's input from `g` at its output; `v` is
/// the output, or the slope where the activation [keeps it](keeps_slope).
#[inline(always)]
pub(crate) fn act_grad(a: Activation, g: f32, v: f32) -> f32 {
    match a {
        // A NaN output passes its gradient on (as PyTorch's
        // `threshold_backward`), so the NaN reaches the input.
        Activation::Relu => {
            if v <= 0.0 {
                0.0
            } else {
                g
            }
        }
        Activation::Sigmoid => g * v * (1.0 - v),
        Activation::Tanh => g * (1.0 - v * v),
        Activation::GeluErf
        | Activation::Silu
        | Activation::Hardswish
        | Activation::Hardsigmoid => g * v,
        // The output is strictly inside the bounds where the input is; a
        // NaN passes its gradient on, as PyTorch's `hardtanh_backward`.
        Activation::Hardtanh(min, max) => {
            if v <= min || v >= max {
                0.0
            } else {
                g
            }
        }
        // The output is > 0 where the input is (the slope is ≥ 0,
        // `Activation::check`); a NaN output takes the slope, as PyTorch's
        // backward at a NaN input.
        Activation::LeakyRelu(a) => {
            if v > 0.0 {
                g
            } else {
                g * a
            }
        }
    }
}

/// Folds `y · scale + shift` per output into a weight whose rows are the
/// outputs (`[out, …]`: a dense layer, a conv) and its bias; false when the
/// sizes do not match.
pub(crate) fn fold_affine_rows(
    w: &mut [f32],
    bias: &mut [f32],
    scale: &[f32],
    shift: &[f32],
) -> bool {
    let nout = bias.len();
    if scale.len() != nout || shift.len() != nout || nout == 0 || !w.len().is_multiple_of(nout) {
        return false;
    }
    for (row, s) in w.chunks_mut(w.len() / nout).zip(scale) {
        row.iter_mut().for_each(|v| *v *= s);
    }
    for ((b, s), t) in bias.iter_mut().zip(scale).zip(shift) {
        *b = *b * s + t;
    }
    true
}

/// Folds `x · scale + shift` per input channel, applied to the input of a
/// weight `[out, in / groups, taps]` (a dense layer: one group, one tap; a
/// conv with no padding, whose every tap reads an input value), into the
/// weight and its bias; false when the sizes do not match.
pub(crate) fn fold_affine_cols(
    w: &mut [f32],
    bias: &mut [f32],
    scale: &[f32],
    shift: &[f32],
    groups: usize,
) -> bool {
    let (nout, nin) = (bias.len(), scale.len());
    if shift.len() != nin
        || nout == 0
        || groups == 0
        || !nout.is_multiple_of(groups)
        || !nin.is_multiple_of(groups)
        || !w.len().is_multiple_of(nout * nin / groups)
        || w.is_empty()
    {
        return false;
    }
    let cin_g = nin / groups;
    let taps = w.len() / (nout * cin_g);
    for (o, (row, b)) in w.chunks_mut(cin_g * taps).zip(bias.iter_mut()).enumerate() {
        let first = o / (nout / groups) * cin_g;
        let mut add = 0f64;
        for (j, per_in) in row.chunks_mut(taps).enumerate() {
            let (s, t) = (scale[first + j], shift[first + j]);
            for v in per_in {
                add += *v as f64 * t as f64;
                *v *= s;
            }
        }
        *b = (*b as f64 + add) as f32;
    }
    true
}

/// Each of `b` samples `[r, c]` transposed to `[c, r]`: NCHW to NHWC is
/// `(C, H·W)`, NHWC to NCHW `(H·W, C)`.
pub(crate) fn transpose(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    if r == 1 || c == 1 {
        return x.to_vec();
    }
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks(r * c).zip(out.chunks_mut(r * c)).take(b) {
        // Eight output rows per task, in tiles of 8×8 that keep both sides
        // in cache.
        dst.par_chunks_mut(8 * r).enumerate().for_each(|(t, dst)| {
            let j0 = 8 * t;
            for i0 in (0..r).step_by(8) {
                for j in j0..(j0 + 8).min(c) {
                    for i in i0..(i0 + 8).min(r) {
                        dst[(j - j0) * r + i] = src[i * c + j];
                    }
                }
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::simd::simd_fn;

    simd_fn! {
        /// [`super::exp`], [`super::normal_cdf_and_gauss`] and
        /// [`super::gelu_and_slope`] as the copy this CPU runs computes
        /// them (with FMA where it has it).
        fn dispatched(x: f32) -> (f32, (f32, f32), (f32, f32), f32) {
            (
                super::exp::<S>(x),
                super::normal_cdf_and_gauss::<S>(x),
                super::gelu_and_slope::<S>(x),
                super::tanh::<S>(x),
            )
        }
    }

    /// Each function in the plain copy (two roundings per multiply-add)
    /// and in the dispatched one.
    fn exp(x: f32) -> [f32; 2] {
        [super::exp::<pulp::Scalar>(x), dispatched(x).0]
    }

    fn cdf(x: f32) -> [f32; 2] {
        [
            super::normal_cdf_and_gauss::<pulp::Scalar>(x).0,
            dispatched(x).1 .0,
        ]
    }

    fn gelu(x: f32) -> [(f32, f32); 2] {
        [super::gelu_and_slope::<pulp::Scalar>(x), dispatched(x).2]
    }

    fn tanh(x: f32) -> [f32; 2] {
        [super::tanh::<pulp::Scalar>(x), dispatched(x).3]
    }

    /// Against f64's tanh on a fine grid (both sides of the switch at
    /// 0.3, tiny values, saturation): within 3e-7 relative (measured:
    /// printed); odd; ±1 far out, NaN for NaN.
    #[test]
    fn tanh_matches_f64_within_a_few_ulp() {
        let mut worst = 0f64;
        let grid = (-100_000..=100_000)
            .map(|i| i as f32 * 1e-4)
            .chain((-300..=300).map(|i| i as f32 * 1e-9))
            .chain([1e-30, 1e-38, 9.0, 20.0, 1e4])
            // The switch at 0.3 and the floats either side of it.
            .chain(
                [-1, 0, 1].map(|d: i32| f32::from_bits(0.3f32.to_bits().wrapping_add_signed(d))),
            );
        for x in grid {
            let want = (x as f64).tanh();
            for got in tanh(x) {
                let err = (got as f64 - want).abs() / want.abs().max(f64::MIN_POSITIVE);
                worst = worst.max(err);
                assert!(err <= 3e-7, "tanh({x}) = {got}, f64 {want}");
                assert_eq!(tanh(-x), tanh(x).map(|t| -t), "odd at {x}");
            }
        }
        println!("tanh: worst relative error {worst:.2e}");
        assert_eq!(tanh(f32::INFINITY), [1.0; 2]);
        assert_eq!(tanh(f32::NEG_INFINITY), [-1.0; 2]);
        assert!(tanh(f32::NAN).iter().all(|v| v.is_nan()));
    }

    /// Against std's `exp` over the range it does not saturate in.
    #[test]
    fn exp_matches_std_within_two_ulp() {
        for i in -873_000..=883_000 {
            let x = i as f32 * 1e-4;
            let want = x.exp();
            for got in exp(x) {
                assert!(
                    (got - want).abs() <= 2.5e-7 * want,
                    "exp({x}) = {got}, std {want}"
                );
            }
        }
        for got in exp(f32::NAN) {
            assert!(got.is_nan());
        }
        for got in exp(-1e4) {
            assert!((0.0..1e-37).contains(&got));
        }
        for got in exp(1e4) {
            assert!((1e38..f32::MAX).contains(&got), "exp(1e4) = {got}");
        }
    }

    /// Φ(x) = erfc(−x/√2) / 2 in f64 (candle's erfc, a port of Boost's).
    fn exact_cdf(x: f64) -> f64 {
        0.5 * candle_core::cpu::erf::erfc_f64(-x / std::f64::consts::SQRT_2)
    }

    /// Φ against known values and against f64 on a fine grid: within
    /// 3.5e-7 absolute everywhere (measured 2.9e-7), and within 5%
    /// relative (measured 3.1%) in the left
    /// tail down to Φ(−12) = 1.8e-33 (computed directly, no cancellation).
    #[test]
    fn normal_cdf_matches_known_values_and_f64() {
        for (x, want) in [
            (0.0f32, 0.5f64),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, 0.158_655_253_931_457_05),
            (-3.0, 1.349_898_031_630_094_6e-3),
            (-6.0, 9.865_876_450_376_982e-10),
            (-10.0, 7.619_853_024_160_527e-24),
            (12.0, 1.0),
        ] {
            for got in cdf(x) {
                let got = got as f64;
                assert!(
                    (got - want).abs() <= 3.5e-7 && (got - want).abs() <= 5e-2 * want,
                    "Φ({x}) = {got}, want {want}"
                );
            }
        }
        let (mut worst, mut worst_rel) = (0f64, 0f64);
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            let want = exact_cdf(x as f64);
            for got in cdf(x) {
                let err = (got as f64 - want).abs();
                worst = worst.max(err);
                assert!(err <= 3.5e-7, "Φ({x}) = {got}, f64 {want}");
                if x < -3.0 {
                    worst_rel = worst_rel.max(err / want);
                    assert!(err <= 5e-2 * want, "Φ({x}) = {got}, f64 {want}");
                }
            }
        }
        println!("Φ: worst absolute error {worst:.2e}, relative below -3 {worst_rel:.2e}");
        assert!(cdf(f32::NAN).iter().all(|v| v.is_nan()));
        // e^(−v²/2) saturates at e^−87.3 (see `exp`): a denormal, not 0.
        assert!(cdf(-100.0).iter().all(|v| (0.0..1e-38).contains(v)));
        assert_eq!(cdf(100.0), [1.0; 2]);
    }

    /// GELU and its slope against f64: x·Φ(x) and Φ(x) + x·φ(x).
    #[test]
    fn gelu_and_its_slope_match_f64() {
        for i in -12_000..=12_000 {
            let x = i as f32 * 1e-3;
            let xd = x as f64;
            let phi = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (want_y, want_s) = (xd * exact_cdf(xd), exact_cdf(xd) + xd * phi);
            for (y, s) in gelu(x) {
                let (ey, es) = ((y as f64 - want_y).abs(), (s as f64 - want_s).abs());
                assert!(
                    ey <= 2e-7 * xd.abs().max(1.0),
                    "GELU({x}) = {y}, f64 {want_y}"
                );
                assert!(
                    es <= 4e-7 * xd.abs().max(1.0),
                    "GELU'({x}) = {s}, f64 {want_s}"
                );
            }
        }
        for (y, s) in gelu(f32::NAN) {
            assert!(y.is_nan() && s.is_nan());
        }
    }
}
