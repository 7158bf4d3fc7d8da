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

use super::{gemm, view, view_mut, Dims};

/// The sizes of one attention: `b` samples of `n` queries and `m` keys of
/// `k` channels, values of `c` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) c: usize,
}

impl Sizes {
    /// The sizes of queries, keys and values of dims `q`, `k`, `v`, or the
    /// error naming what does not fit: the three `[B, ·, ·, ·]` of one
    /// batch, queries and keys of as many channels, keys and values of
    /// one size.
    pub(crate) fn of(q: Dims, k: Dims, v: Dims) -> candle_core::Result<Sizes> {
        super::super::reference::check_attention(&q.shape(), &k.shape(), &v.shape())?;
        Ok(Sizes {
            b: q.b,
            n: q.h * q.w,
            m: k.h * k.w,
            k: q.c,
            c: v.c,
        })
    }
}

/// The output `[B, N, C]` (NHWC `[B, H, W, C]` of the queries' size).
pub(crate) fn forward(q: &[f32], k: &[f32], v: &[f32], s: Sizes, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; s.b * s.n * s.c];
    let mut p = vec![0f32; s.n * s.m];
    for i in 0..s.b {
        map(q, k, s, scale, i, &mut p);
        let (vi, oi) = (i * s.m * s.c, i * s.n * s.c);
        gemm(
            view(&p, 0, s.n, s.m, s.m),
            view(v, vi, s.m, s.c, s.c),
            view_mut(&mut out, oi, s.n, s.c, s.c),
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
        let (qi, ki) = (i * s.n * s.k, i * s.m * s.k);
        let (vi, gi) = (i * s.m * s.c, i * s.n * s.c);
        let gv = view(g, gi, s.n, s.c, s.c);
        let pv = view(&p, 0, s.n, s.m, s.m);
        gemm(pv.t(), gv, view_mut(&mut dv, vi, s.m, s.c, s.c), 0.0);
        let vv = view(v, vi, s.m, s.c, s.c);
        gemm(gv, vv.t(), view_mut(&mut dl, 0, s.n, s.m, s.m), 0.0);
        for (dl, p) in dl.chunks_mut(s.m).zip(p.chunks(s.m)) {
            let dot: f64 = dl.iter().zip(p).map(|(a, b)| f64::from(a * b)).sum();
            let dot = dot as f32;
            for (dl, p) in dl.iter_mut().zip(p) {
                *dl = scale * p * (*dl - dot);
            }
        }
        let dlv = view(&dl, 0, s.n, s.m, s.m);
        let kv = view(k, ki, s.m, s.k, s.k);
        gemm(dlv, kv, view_mut(&mut dq, qi, s.n, s.k, s.k), 0.0);
        let qv = view(q, qi, s.n, s.k, s.k);
        gemm(dlv.t(), qv, view_mut(&mut dk, ki, s.m, s.k, s.k), 0.0);
    }
    [dq, dk, dv]
}

/// Sample `i`'s attention map `softmax_rows(s · Q Kᵀ)` into `p` (`[N,
/// M]`).
fn map(q: &[f32], k: &[f32], s: Sizes, scale: f32, i: usize, p: &mut [f32]) {
    let (qi, ki) = (i * s.n * s.k, i * s.m * s.k);
    gemm(
        view(q, qi, s.n, s.k, s.k),
        view(k, ki, s.m, s.k, s.k).t(),
        view_mut(p, 0, s.n, s.m, s.m),
        0.0,
    );
    for row in p.chunks_mut(s.m.max(1)) {
        softmax(row, scale);
    }
}

/// `softmax(scale · row)` in place. A NaN in the row makes it all NaN, as
/// an infinite logit does (∞ − ∞), as in PyTorch.
fn softmax(row: &mut [f32], scale: f32) {
    let mut top = f32::NEG_INFINITY;
    for v in row.iter_mut() {
        *v *= scale;
        if *v > top || v.is_nan() {
            top = *v;
        }
    }
    let mut sum = 0f64;
    for v in row.iter_mut() {
        *v = (*v - top).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
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
