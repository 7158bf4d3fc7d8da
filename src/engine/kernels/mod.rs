//! gevaldi's CPU kernels, on channels-last (NHWC) f32 activations: each
//! kernel's forward pass and the gradient of its input.

pub(crate) mod conv;
pub(crate) mod elementwise;
mod gemm;
pub(crate) mod pool;
mod winograd;

pub(crate) use gemm::gemm;

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use super::net::Activation;

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

/// An activation applied to one value.
pub(crate) fn act(a: Activation, v: f32) -> f32 {
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
        Activation::GeluErf => {
            0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
        }
    }
}

/// Whether the activation's gradient is computed from its output (else
/// from its input).
pub(crate) fn grad_from_output(a: Activation) -> bool {
    !matches!(a, Activation::GeluErf)
}

/// The gradient at the activation's input from `g` at its output; `v` is
/// the output, or the input for GELU (see [`grad_from_output`]).
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
        Activation::GeluErf => {
            let cdf =
                0.5 * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * v * v).exp() * 0.398_942_3;
            g * (cdf + v * pdf)
        }
    }
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
