//! gevaldi's CPU kernels, on channels-last (NHWC) f32 activations: each
//! kernel's forward pass and the gradient of its input.

pub(crate) mod conv;
pub(crate) mod elementwise;
mod gemm;
pub(crate) mod pool;
mod simd;
mod winograd;

pub(crate) use gemm::{gemm, gemm_new};

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
    let end = if rows == 0 {
        offset
    } else {
        offset + (rows - 1) * rs + cols
    };
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
    let end = if rows == 0 {
        offset
    } else {
        offset + (rows - 1) * rs + cols
    };
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
        Activation::Tanh => v.tanh(),
        Activation::GeluErf => v * gelu_cdf::<S>(v),
    }
}

/// Φ(v), the standard normal's CDF: GELU(v) = v · Φ(v).
#[inline(always)]
fn gelu_cdf<S: Simd>(v: f32) -> f32 {
    0.5 * (1.0 + erf::<S>(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU at `v` and its slope there (the one activation that
/// [keeps its slope](keeps_slope)): v·Φ(v) and Φ(v) + v·φ(v) from one erf,
/// so its backward is one multiply.
#[inline(always)]
pub(crate) fn gelu_and_slope<S: Simd>(v: f32) -> (f32, f32) {
    let cdf = gelu_cdf::<S>(v);
    let pdf = exp::<S>(-0.5 * v * v) * 0.398_942_3;
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
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
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
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf(x) within a few f32 ulp, with no call (a loop over it vectorizes,
/// eight lanes on AVX2): Eigen's and TensorFlow's rational approximation
/// on [−4, 4] (erf(±4) is ±1 in f32), evaluated in f32 as Eigen does for
/// floats; libm's `erff` was 12% of a ConvNeXt step, and the same
/// rational in f64 (four lanes, f64 division) 5% of one on an AVX2 CPU.
/// Against candle's erf (Boost's): at most 4.2e-7 absolute over [−6, 6]
/// (tested); PyTorch's vectorized float erf
/// allows 1.5e-7. NaN stays NaN.
#[inline(always)]
pub(crate) fn erf<S: Simd>(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_473_9e-2,
    ];
    let c = x.clamp(-4.0, 4.0);
    let x2 = c * c;
    let p = A[1..].iter().fold(A[0], |p, a| madd::<S>(p, x2, *a)) * c;
    let q = B[1..].iter().fold(B[0], |q, b| madd::<S>(q, x2, *b));
    // Beyond ±3.9 erf rounds to ±1 in f32 (1 − erf(3.9) = 3.5e-8), where
    // the rational in f32 is 3e-7 short of it: GELU of a large negative x
    // would then be x · 1.5e-7 rather than 0.
    if c.abs() >= 3.9 {
        c.signum()
    } else {
        p / q
    }
}

/// Whether the activation's forward keeps its slope at each input for the
/// backward ([`gelu_and_slope`]: GELU, whose slope costs an erf), else its
/// output (the others' slopes are cheap functions of it).
pub(crate) fn keeps_slope(a: Activation) -> bool {
    matches!(a, Activation::GeluErf)
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
        Activation::GeluErf => g * v,
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
        /// [`super::exp`] and [`super::erf`] as the copy this CPU runs
        /// computes them (with FMA where it has it).
        fn dispatched(x: f32) -> (f32, f32) {
            (super::exp::<S>(x), super::erf::<S>(x))
        }
    }

    /// Each function in the plain copy (two roundings per multiply-add)
    /// and in the dispatched one.
    fn exp(x: f32) -> [f32; 2] {
        [super::exp::<pulp::Scalar>(x), dispatched(x).0]
    }

    fn erf(x: f32) -> [f32; 2] {
        [super::erf::<pulp::Scalar>(x), dispatched(x).1]
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
    }

    /// Against known values and against candle's erf (a port of Boost's)
    /// on a fine grid: within 5e-7 everywhere (measured 4.2e-7), ±1 beyond
    /// ±3.9.
    #[test]
    fn erf_matches_known_values_and_an_accurate_erf() {
        for (x, want) in [
            (0.0, 0.0),
            (1e-4, 1.128_379_163e-4),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (-3.0, -0.999_977_909_503_001_4),
            (6.0, 1.0),
            (-30.0, -1.0),
        ] {
            for got in erf(x as f32) {
                let got = got as f64;
                assert!(
                    (got - want).abs() <= 1.2e-7 * want.abs().max(1e-3),
                    "erf({x}) = {got}, want {want}"
                );
            }
        }
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = candle_core::cpu::erf::erf_f32(x);
            for got in erf(x) {
                worst = worst.max((got - want).abs());
                assert!(
                    (got - want).abs() <= 5e-7,
                    "erf({x}) = {got}, candle {want}"
                );
            }
        }
        println!("erf: worst absolute error {worst:.2e}");
        assert!(erf(f32::NAN).iter().all(|v| v.is_nan()));
        assert_eq!(erf(-100.0), [-1.0; 2]);
        assert_eq!(erf(4.5), [1.0; 2]);
    }
}
