//! Attention over pixels on NHWC values: each query pixel's output is a
//! mix of the value pixels, weighted by the softmax over the key pixels of
//! its scaled dot products with them (SAGAN's and BigGAN's self-attention,
//! a transformer block's on an image's pixels).
//!
//! In NHWC a sample's queries are an `[N, K]` row-major matrix (N pixels
//! of K channels), its keys `[M, K]`, its values `[M, C]` and its output
//! `[N, C]`: the forward is two products and a softmax per sample; the
//! backward works the attention map out again (it keeps only the three
//! inputs, no `[N, M]` map per sample):
//!
//! ```text
//! L = s · Q Kᵀ     P = softmax_rows(L)     O = P V
//! dV = Pᵀ dO       dP = dO Vᵀ      dL = P ⊙ (dP − rowsum(dP ⊙ P))
//! dQ = s · dL K    dK = s · dLᵀ Q
//! ```

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::simd::simd_fn;
use super::{exp, gemm, view, view_mut, Dims};

/// How a sample's queries, keys, values, output and their gradients lie
/// in memory: each an `[pixels, channels]` matrix (NHWC, a `NetBuilder`
/// net's), or `[channels, pixels]` (NCHW flattened: BigGAN's
/// self-attention, whose θ, φ and g are `[B, C, H·W]`). The products
/// read the second as transposed views, so neither copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    PixelsFirst,
    ChannelsFirst,
}

/// The sizes of one attention: `b` samples of `n` queries and `m` keys of
/// `k` channels, values of `c` channels, laid out in `order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) c: usize,
    pub(crate) order: Order,
}

impl Sizes {
    /// The sizes of NHWC queries, keys and values of dims `q`, `k`, `v`,
    /// or the error naming what does not fit: the three `[B, ·, ·, ·]` of
    /// one batch, queries and keys of as many channels, keys and values of
    /// one size.
    pub(crate) fn of(q: Dims, k: Dims, v: Dims) -> candle_core::Result<Sizes> {
        super::super::reference::check_attention(&q.shape(), &k.shape(), &v.shape())?;
        Ok(Sizes {
            b: q.b,
            n: q.h * q.w,
            m: k.h * k.w,
            k: q.c,
            c: v.c,
            order: Order::PixelsFirst,
        })
    }

    /// Sample `i`'s `[pixels, channels]` matrix of `buf`.
    fn mat<'a>(
        &self,
        buf: &'a [f32],
        i: usize,
        pixels: usize,
        channels: usize,
    ) -> ArrayView2<'a, f32> {
        let at = i * pixels * channels;
        match self.order {
            Order::PixelsFirst => view(buf, at, pixels, channels, channels),
            Order::ChannelsFirst => view(buf, at, channels, pixels, pixels).reversed_axes(),
        }
    }

    /// [`Self::mat`], to write.
    fn mat_mut<'a>(
        &self,
        buf: &'a mut [f32],
        i: usize,
        pixels: usize,
        channels: usize,
    ) -> ArrayViewMut2<'a, f32> {
        let at = i * pixels * channels;
        match self.order {
            Order::PixelsFirst => view_mut(buf, at, pixels, channels, channels),
            Order::ChannelsFirst => view_mut(buf, at, channels, pixels, pixels).reversed_axes(),
        }
    }
}

/// The output, `[B, N, C]` (NHWC `[B, H, W, C]` of the queries' size) or
/// `[B, C, N]` (see [`Order`]).
pub(crate) fn forward(q: &[f32], k: &[f32], v: &[f32], s: Sizes, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; s.b * s.n * s.c];
    let mut p = vec![0f32; s.n * s.m];
    for i in 0..s.b {
        map(q, k, s, scale, i, &mut p);
        gemm(
            view(&p, 0, s.n, s.m, s.m),
            s.mat(v, i, s.m, s.c),
            s.mat_mut(&mut out, i, s.n, s.c),
            0.0,
        );
    }
    out
}

/// The gradients of the queries, the keys and the values from `g`, the
/// output's.
pub(crate) fn backward(
    g: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: Sizes,
    scale: f32,
) -> [Vec<f32>; 3] {
    let mut dq = vec![0f32; s.b * s.n * s.k];
    let mut dk = vec![0f32; s.b * s.m * s.k];
    let mut dv = vec![0f32; s.b * s.m * s.c];
    let mut p = vec![0f32; s.n * s.m];
    let mut dl = vec![0f32; s.n * s.m];
    for i in 0..s.b {
        map(q, k, s, scale, i, &mut p);
        let gv = s.mat(g, i, s.n, s.c);
        let pv = view(&p, 0, s.n, s.m, s.m);
        gemm(pv.t(), gv, s.mat_mut(&mut dv, i, s.m, s.c), 0.0);
        gemm(
            gv,
            s.mat(v, i, s.m, s.c).t(),
            view_mut(&mut dl, 0, s.n, s.m, s.m),
            0.0,
        );
        dl.par_chunks_mut(s.m.max(1) * ROWS)
            .zip(p.par_chunks(s.m.max(1) * ROWS))
            .for_each(|(dl, p)| softmax_backward_rows(dl, p, s.m.max(1), scale));
        let dlv = view(&dl, 0, s.n, s.m, s.m);
        gemm(
            dlv,
            s.mat(k, i, s.m, s.k),
            s.mat_mut(&mut dq, i, s.n, s.k),
            0.0,
        );
        gemm(
            dlv.t(),
            s.mat(q, i, s.n, s.k),
            s.mat_mut(&mut dk, i, s.m, s.k),
            0.0,
        );
    }
    [dq, dk, dv]
}

/// Rows of the map per task of its softmax and the softmax's backward.
const ROWS: usize = 16;

/// Sample `i`'s attention map `softmax_rows(s · Q Kᵀ)` into `p` (`[N,
/// M]`).
fn map(q: &[f32], k: &[f32], s: Sizes, scale: f32, i: usize, p: &mut [f32]) {
    gemm(
        s.mat(q, i, s.n, s.k),
        s.mat(k, i, s.m, s.k).t(),
        view_mut(p, 0, s.n, s.m, s.m),
        0.0,
    );
    let m = s.m.max(1);
    p.par_chunks_mut(m * ROWS)
        .for_each(|rows| softmax_rows(rows, m, scale));
}

/// Lanes of the row sums' partial sums (summed in this order by every
/// instruction set, so that the bits do not depend on the CPU).
const LANES: usize = 16;

simd_fn! {
    /// `softmax(scale · row)` in place for each row of `m` values. A NaN
    /// in a row makes it all NaN, as an infinite logit does (∞ − ∞), as
    /// in PyTorch. `exp` is [`exp`]'s (within 2 ulp; e^x below e^-87.3
    /// reads e^-87.3, 1e-38, not 0).
    fn softmax_rows(rows: &mut [f32], m: usize, scale: f32) {
        for row in rows.chunks_mut(m) {
            let mut top = [f32::NEG_INFINITY; LANES];
            for (j, v) in row.iter_mut().enumerate() {
                *v *= scale;
                // `max` skips a NaN; the NaN then makes its exp, the sum
                // and so the whole row NaN.
                top[j % LANES] = top[j % LANES].max(*v);
            }
            let top = top.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
            let mut sum = [0f64; LANES];
            for (j, v) in row.iter_mut().enumerate() {
                *v = exp::<S>(*v - top);
                sum[j % LANES] += f64::from(*v);
            }
            let inv = (1.0 / sum.iter().sum::<f64>()) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

simd_fn! {
    /// The softmax's backward for each row of `m` values: `dl` holds
    /// `dP`, becomes `dL = scale · P ⊙ (dP − rowsum(dP ⊙ P))`.
    fn softmax_backward_rows(dl: &mut [f32], p: &[f32], m: usize, scale: f32) {
        for (dl, p) in dl.chunks_mut(m).zip(p.chunks(m)) {
            let mut dot = [0f64; LANES];
            for (j, (a, b)) in dl.iter().zip(p).enumerate() {
                dot[j % LANES] += f64::from(a * b);
            }
            let dot = dot.iter().sum::<f64>() as f32;
            for (dl, p) in dl.iter_mut().zip(p) {
                *dl = scale * p * (*dl - dot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample of 2 queries, 3 keys, 1 channel, against the formula
    /// written out (and the backward against finite differences).
    #[test]
    fn matches_the_formula_and_its_finite_differences() {
        let s = Sizes {
            b: 1,
            n: 2,
            m: 3,
            k: 1,
            c: 2,
            order: Order::PixelsFirst,
        };
        let (q, k) = (vec![0.5f32, -1.0], vec![1.0f32, 0.0, 2.0]);
        let v = vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5];
        let scale = 0.7;
        let out = forward(&q, &k, &v, s, scale);
        for (ni, qn) in q.iter().enumerate() {
            let e: Vec<f64> = k
                .iter()
                .map(|km| (f64::from(scale * qn * km)).exp())
                .collect();
            let z: f64 = e.iter().sum();
            for ci in 0..2 {
                let want: f64 = (0..3).map(|m| e[m] / z * f64::from(v[m * 2 + ci])).sum();
                let got = f64::from(out[ni * 2 + ci]);
                assert!((got - want).abs() < 1e-6, "out[{ni}, {ci}] {got} {want}");
            }
        }
        let r = [0.3f32, -0.2, 1.1, 0.4];
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let o = forward(q, k, v, s, scale);
            o.iter().zip(&r).map(|(a, b)| f64::from(a * b)).sum()
        };
        let [dq, dk, dv] = backward(&r, &q, &k, &v, s, scale);
        let h = 1e-3f32;
        for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
            for j in 0..grad.len() {
                let mut xs = [q.clone(), k.clone(), v.clone()];
                xs[which][j] += h;
                let up = loss(&xs[0], &xs[1], &xs[2]);
                xs[which][j] -= 2.0 * h;
                let down = loss(&xs[0], &xs[1], &xs[2]);
                let fd = (up - down) / (2.0 * f64::from(h));
                let got = f64::from(grad[j]);
                assert!(
                    (got - fd).abs() < 1e-3,
                    "input {which}[{j}]: {got} against {fd}"
                );
            }
        }
        // A NaN key makes its rows NaN.
        let out = forward(&q, &[1.0, f32::NAN, 2.0], &v, s, scale);
        assert!(out.iter().all(|v| v.is_nan()), "{out:?}");
    }
}
