//! Per-pixel kernels on NHWC: activations, per-channel affine maps,
//! channel concatenation, LayerNorm over channels.

use rayon::prelude::*;

use super::simd::simd_fn;
use super::{act, act_grad, grad_from_output, Activation};

/// Values per parallel task of an elementwise pass.
const TASK: usize = 1 << 14;

/// Applies `a` to `v` in place; returns the activation's input where its
/// gradient needs it (GELU).
pub(crate) fn apply_act(a: Activation, v: &mut [f32]) -> Option<Vec<f32>> {
    let pre = (!grad_from_output(a)).then(|| v.to_vec());
    v.par_chunks_mut(TASK).for_each(|c| act_chunk(a, c));
    pre
}

simd_fn! {
    fn act_chunk(a: Activation, c: &mut [f32]) {
        match a {
            // Its own loop, with no calls: it vectorizes.
            Activation::GeluErf => c
                .iter_mut()
                .for_each(|x| *x = act(Activation::GeluErf, *x)),
            a => c.iter_mut().for_each(|x| *x = act(a, *x)),
        }
    }
}

/// `g` at the activation's output to its input, in place; `kept` is the
/// output (or the input, for GELU).
pub(crate) fn act_backward(a: Activation, g: &mut [f32], kept: &[f32]) {
    g.par_chunks_mut(TASK)
        .zip(kept.par_chunks(TASK))
        .for_each(|(g, k)| act_backward_chunk(a, g, k));
}

simd_fn! {
    fn act_backward_chunk(a: Activation, g: &mut [f32], k: &[f32]) {
        match a {
            // Its own loop, with no calls: it vectorizes.
            Activation::GeluErf => g
                .iter_mut()
                .zip(k)
                .for_each(|(g, &k)| *g = act_grad(Activation::GeluErf, *g, k)),
            a => g
                .iter_mut()
                .zip(k)
                .for_each(|(g, &k)| *g = act_grad(a, *g, k)),
        }
    }
}

/// `x · scale + shift` per channel (`c` = the scale's length), in place.
pub(crate) fn affine(x: &mut [f32], scale: &[f32], shift: &[f32]) {
    let c = scale.len();
    x.par_chunks_mut(c * (TASK / c).max(1))
        .for_each(|rows| affine_rows(rows, scale, shift));
}

simd_fn! {
    fn affine_rows(rows: &mut [f32], scale: &[f32], shift: &[f32]) {
        for px in rows.chunks_mut(scale.len()) {
            for ((v, s), t) in px.iter_mut().zip(scale).zip(shift) {
                *v = *v * s + t;
            }
        }
    }
}

/// `x + bias` per channel (`c` = the bias's length), in place.
pub(crate) fn add_bias(x: &mut [f32], bias: &[f32]) {
    let c = bias.len();
    x.par_chunks_mut(c * (TASK / c).max(1))
        .for_each(|rows| bias_act_rows(rows, bias, None));
}

/// The `pre` buffer [`bias_act`] fills for `len` outputs: zeros where
/// activation `a`'s gradient needs its input (GELU), else empty.
pub(crate) fn pre_act_buffer(a: Option<Activation>, len: usize) -> Vec<f32> {
    match a {
        Some(a) if !super::grad_from_output(a) => vec![0f32; len],
        _ => Vec::new(),
    }
}

/// `act(x + bias)` per channel (`c` = the bias's length), in place; `pre`
/// (empty, or as long as `x`) receives `x + bias` where the activation's
/// gradient needs its input (GELU).
pub(crate) fn bias_act(x: &mut [f32], bias: &[f32], a: Option<Activation>, pre: &mut [f32]) {
    let Some(a) = a else {
        return add_bias(x, bias);
    };
    let c = bias.len();
    let rows = c * (TASK / c).max(1);
    if pre.is_empty() {
        x.par_chunks_mut(rows)
            .for_each(|r| bias_act_rows(r, bias, Some(a)));
    } else {
        x.par_chunks_mut(rows)
            .zip(pre.par_chunks_mut(rows))
            .for_each(|(r, p)| bias_act_kept_rows(r, p, bias, a));
    }
}

simd_fn! {
    /// `act(x + bias)` (or `x + bias`) on whole rows of `bias.len()`.
    fn bias_act_rows(r: &mut [f32], bias: &[f32], a: Option<Activation>) {
        for px in r.chunks_mut(bias.len()) {
            match a {
                None => px.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                Some(a) => px
                    .iter_mut()
                    .zip(bias)
                    .for_each(|(v, b)| *v = act(a, *v + b)),
            }
        }
    }
}

simd_fn! {
    /// [`bias_act_rows`] that also writes `x + bias` to `p`.
    fn bias_act_kept_rows(r: &mut [f32], p: &mut [f32], bias: &[f32], a: Activation) {
        let c = bias.len();
        for (px, pp) in r.chunks_mut(c).zip(p.chunks_mut(c)) {
            for ((v, q), b) in px.iter_mut().zip(pp.iter_mut()).zip(bias) {
                *q = *v + b;
            }
            match a {
                Activation::GeluErf => px
                    .iter_mut()
                    .zip(&*pp)
                    .for_each(|(v, q)| *v = act(Activation::GeluErf, *q)),
                a => px.iter_mut().zip(&*pp).for_each(|(v, q)| *v = act(a, *q)),
            }
        }
    }
}

/// `x · scale` per channel (`c` = the scale's length), in place.
pub(crate) fn scale(x: &mut [f32], scale: &[f32]) {
    let c = scale.len();
    x.par_chunks_mut(c * (TASK / c).max(1))
        .for_each(|rows| scale_rows(rows, scale));
}

simd_fn! {
    fn scale_rows(rows: &mut [f32], scale: &[f32]) {
        for px in rows.chunks_mut(scale.len()) {
            px.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
        }
    }
}

/// Per-pixel rows `[pixels, c_i]` side by side: `[pixels, Σ c_i]`.
pub(crate) fn concat(xs: &[(&[f32], usize)], pixels: usize) -> Vec<f32> {
    let total: usize = xs.iter().map(|(_, c)| c).sum();
    let mut out = vec![0f32; pixels * total];
    out.par_chunks_mut(total * 64)
        .enumerate()
        .for_each(|(t, rows)| {
            for (r, px) in rows.chunks_mut(total).enumerate() {
                let p = t * 64 + r;
                let mut at = 0;
                for (x, c) in xs {
                    px[at..at + c].copy_from_slice(&x[p * c..][..*c]);
                    at += c;
                }
            }
        });
    out
}

/// The columns `[at, at + c)` of per-pixel rows `[pixels, total]`.
pub(crate) fn split(g: &[f32], pixels: usize, total: usize, at: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; pixels * c];
    out.par_chunks_mut(c * 64)
        .enumerate()
        .for_each(|(t, rows)| {
            for (r, px) in rows.chunks_mut(c).enumerate() {
                let p = t * 64 + r;
                px.copy_from_slice(&g[p * total + at..][..c]);
            }
        });
    out
}

/// `a += b`.
pub(crate) fn add_into(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(TASK)
        .zip(b.par_chunks(TASK))
        .for_each(|(a, b)| add_chunk(a, b));
}

simd_fn! {
    fn add_chunk(a: &mut [f32], b: &[f32]) {
        a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    }
}

/// LayerNorm of each `c`-wide row of `x`; returns the output, the
/// normalised input x̂ and each row's 1/σ (what the backward needs).
pub(crate) fn layer_norm(
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut y = vec![0f32; x.len()];
    let mut xhat = vec![0f32; x.len()];
    let mut rstd = vec![0f32; rows];
    let per = (TASK / c).max(1);
    y.par_chunks_mut(c * per)
        .zip(xhat.par_chunks_mut(c * per))
        .zip(rstd.par_chunks_mut(per))
        .zip(x.par_chunks(c * per))
        .for_each(|(((y, xh), rs), x)| layer_norm_rows(y, xh, rs, x, w, b, eps));
    (y, xhat, rstd)
}

simd_fn! {
    fn layer_norm_rows(
        y: &mut [f32],
        xh: &mut [f32],
        rs: &mut [f32],
        x: &[f32],
        w: &[f32],
        b: &[f32],
        eps: f32,
    ) {
        let c = w.len();
        for (((y, xh), r), x) in y
            .chunks_mut(c)
            .zip(xh.chunks_mut(c))
            .zip(rs.iter_mut())
            .zip(x.chunks(c))
        {
            let mean = sum_lanes(c, |i| x[i]) / c as f32;
            let var = sum_lanes(c, |i| (x[i] - mean) * (x[i] - mean)) / c as f32;
            *r = 1.0 / (var + eps).sqrt();
            for i in 0..c {
                xh[i] = (x[i] - mean) * *r;
                y[i] = xh[i] * w[i] + b[i];
            }
        }
    }
}

/// `Σ f(i)` for i < n in eight running sums (a chain of one sum does not
/// vectorize: each add waits for the last).
#[inline(always)]
fn sum_lanes(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    const L: usize = 8;
    let mut acc = [0f32; L];
    let full = n - n % L;
    for i0 in (0..full).step_by(L) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i0 + l);
        }
    }
    (full..n).for_each(|i| acc[i - full] += f(i));
    acc.iter().sum()
}

/// The gradient of [`layer_norm`]'s input from `g` at its output:
/// (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = g·w.
pub(crate) fn layer_norm_backward(g: &[f32], xhat: &[f32], rstd: &[f32], w: &[f32]) -> Vec<f32> {
    let c = w.len();
    let mut dx = vec![0f32; g.len()];
    let per = (TASK / c).max(1);
    dx.par_chunks_mut(c * per)
        .zip(g.par_chunks(c * per))
        .zip(xhat.par_chunks(c * per))
        .zip(rstd.par_chunks(per))
        .for_each(|(((dx, g), xh), rs)| layer_norm_backward_rows(dx, g, xh, rs, w));
    dx
}

simd_fn! {
    fn layer_norm_backward_rows(dx: &mut [f32], g: &[f32], xh: &[f32], rs: &[f32], w: &[f32]) {
        let c = w.len();
        for (((dx, g), xh), r) in dx.chunks_mut(c).zip(g.chunks(c)).zip(xh.chunks(c)).zip(rs) {
            let m1 = sum_lanes(c, |i| g[i] * w[i]) / c as f32;
            let m2 = sum_lanes(c, |i| g[i] * w[i] * xh[i]) / c as f32;
            for i in 0..c {
                dx[i] = r * (g[i] * w[i] - m1 - xh[i] * m2);
            }
        }
    }
}
