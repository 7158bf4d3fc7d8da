//! Per-pixel kernels on NHWC: activations, per-channel affine maps,
//! channel concatenation, LayerNorm over channels.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::simd_fn;
use super::{
    act, act_grad, gelu_and_slope, hardsigmoid_and_slope, hardswish_and_slope, keeps_slope,
    silu_and_slope, Activation,
};

/// Values per parallel task of an elementwise pass.
const TASK: usize = 1 << 14;

/// Applies `a` to `v` in place; returns its slope at each input where its
/// backward reads that ([`keeps_slope`]: GELU).
pub(crate) fn apply_act(a: Activation, v: &mut [f32]) -> Option<Vec<f32>> {
    if keeps_slope(a) {
        let mut slope = vec![0f32; v.len()];
        v.par_chunks_mut(TASK)
            .zip(slope.par_chunks_mut(TASK))
            .for_each(|(c, s)| match a {
                Activation::Silu => silu_slope_chunk(c, s),
                Activation::Hardswish => hard_slope_chunk(c, s, hardswish_and_slope),
                Activation::Hardsigmoid => hard_slope_chunk(c, s, hardsigmoid_and_slope),
                _ => gelu_slope_chunk(c, s),
            });
        return Some(slope);
    }
    v.par_chunks_mut(TASK).for_each(|c| act_chunk(a, c));
    None
}

simd_fn! {
    fn act_chunk(a: Activation, c: &mut [f32]) {
        c.iter_mut().for_each(|x| *x = act::<S>(a, *x));
    }
}

/// A hard activation (compares and clamps, no multiply-add to fuse) and
/// its slope over a chunk.
fn hard_slope_chunk(c: &mut [f32], slope: &mut [f32], f: impl Fn(f32) -> (f32, f32)) {
    c.iter_mut().zip(slope).for_each(|(x, s)| (*x, *s) = f(*x));
}

simd_fn! {
    fn silu_slope_chunk(c: &mut [f32], slope: &mut [f32]) {
        c.iter_mut()
            .zip(slope)
            .for_each(|(x, s)| (*x, *s) = silu_and_slope::<S>(*x));
    }
}

simd_fn! {
    fn gelu_slope_chunk(c: &mut [f32], slope: &mut [f32]) {
        c.iter_mut()
            .zip(slope)
            .for_each(|(x, s)| (*x, *s) = gelu_and_slope::<S>(*x));
    }
}

/// `g` at the activation's output to its input, in place; `kept` is the
/// output, or the slope where the activation [keeps it](keeps_slope).
pub(crate) fn act_backward(a: Activation, g: &mut [f32], kept: &[f32]) {
    g.par_chunks_mut(TASK)
        .zip(kept.par_chunks(TASK))
        .for_each(|(g, k)| act_backward_chunk(a, g, k));
}

simd_fn! {
    /// [`act_backward`] on one chunk (`k` as long as `g`).
    pub(crate) fn act_backward_chunk(a: Activation, g: &mut [f32], k: &[f32]) {
        g.iter_mut().zip(k).for_each(|(g, &k)| *g = act_grad(a, *g, k));
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

/// The `slope` buffer [`bias_act`] fills for `len` outputs: zeros where
/// activation `a` [keeps its slope](keeps_slope) (GELU), else empty.
pub(crate) fn slope_buffer(a: Option<Activation>, len: usize) -> Vec<f32> {
    match a {
        Some(a) if keeps_slope(a) => vec![0f32; len],
        _ => Vec::new(),
    }
}

/// `act(x + bias)` per channel (`c` = the bias's length), in place; `slope`
/// (empty, or as long as `x`: [`slope_buffer`]) receives the activation's
/// slope at `x + bias` where it [keeps it](keeps_slope) (GELU).
pub(crate) fn bias_act(x: &mut [f32], bias: &[f32], a: Option<Activation>, slope: &mut [f32]) {
    let Some(a) = a else {
        return add_bias(x, bias);
    };
    let c = bias.len();
    let rows = c * (TASK / c).max(1);
    if slope.is_empty() {
        x.par_chunks_mut(rows)
            .for_each(|r| bias_act_rows(r, bias, Some(a)));
    } else {
        // The bias pass keeps GELU's slope only: the compiler fuses no
        // other slope-keeping activation into it (`fuses_into_bias_pass`).
        assert!(
            a == Activation::GeluErf,
            "bias_act: a slope buffer for {a:?}"
        );
        x.par_chunks_mut(rows)
            .zip(slope.par_chunks_mut(rows))
            .for_each(|(r, s)| bias_gelu_slope_rows(r, s, bias));
    }
}

simd_fn! {
    /// `act(x + bias)` (or `x + bias`) on whole rows of `bias.len()`.
    pub(crate) fn bias_act_rows(r: &mut [f32], bias: &[f32], a: Option<Activation>) {
        for px in r.chunks_mut(bias.len()) {
            match a {
                None => px.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                Some(a) => px
                    .iter_mut()
                    .zip(bias)
                    .for_each(|(v, b)| *v = act::<S>(a, *v + b)),
            }
        }
    }
}

simd_fn! {
    /// GELU of `x + bias` on whole rows of `bias.len()`, its slope there
    /// written to `s`.
    fn bias_gelu_slope_rows(r: &mut [f32], s: &mut [f32], bias: &[f32]) {
        bias_gelu_slope::<S, f32>(r, s, bias)
    }
}

simd_fn! {
    /// [`bias_gelu_slope_rows`] with a slope buffer not yet written:
    /// writes every element of `s` (as long as `r`).
    pub(crate) fn bias_gelu_slope_fresh_rows(
        r: &mut [f32],
        s: &mut [MaybeUninit<f32>],
        bias: &[f32],
    ) {
        bias_gelu_slope::<S, MaybeUninit<f32>>(r, s, bias)
    }
}

/// Where a slope is written: an element of a buffer written before, or of
/// one not yet written.
trait Slot {
    fn put(&mut self, v: f32);
}

impl Slot for f32 {
    #[inline(always)]
    fn put(&mut self, v: f32) {
        *self = v;
    }
}

impl Slot for MaybeUninit<f32> {
    #[inline(always)]
    fn put(&mut self, v: f32) {
        self.write(v);
    }
}

/// The body of the two `bias_gelu_slope…rows`.
#[inline(always)]
fn bias_gelu_slope<S: pulp::Simd, T: Slot>(r: &mut [f32], s: &mut [T], bias: &[f32]) {
    assert_eq!(r.len(), s.len(), "bias_gelu_slope: a slope per value");
    let c = bias.len();
    for (px, ps) in r.chunks_mut(c).zip(s.chunks_mut(c)) {
        px.iter_mut().zip(ps).zip(bias).for_each(|((v, s), b)| {
            let (y, slope) = gelu_and_slope::<S>(*v + b);
            *v = y;
            s.put(slope);
        });
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

/// `f(p, row)` on each row `p` of `out`, rows of `width` values, in
/// parallel: up to 64 rows a task, fewer where rows are long (a narrow
/// or join along the rows of a value cuts whole planes).
fn per_row(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let rows = (16_384 / width).clamp(1, 64);
    out.par_chunks_mut(width * rows)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (r, row) in chunk.chunks_mut(width).enumerate() {
                f(t * rows + r, row);
            }
        });
}

/// Per-pixel rows `[pixels, c_i]` side by side: `[pixels, Σ c_i]`.
pub(crate) fn concat(xs: &[(&[f32], usize)], pixels: usize) -> Vec<f32> {
    let total: usize = xs.iter().map(|(_, c)| c).sum();
    let mut out = vec![0f32; pixels * total];
    per_row(&mut out, total, |p, row| {
        let mut at = 0;
        for (x, c) in xs {
            row[at..at + c].copy_from_slice(&x[p * c..][..*c]);
            at += c;
        }
    });
    out
}

/// The columns `[at, at + c)` of per-pixel rows `[pixels, total]`.
pub(crate) fn split(g: &[f32], pixels: usize, total: usize, at: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; pixels * c];
    per_row(&mut out, c, |p, row| {
        row.copy_from_slice(&g[p * total + at..][..c]);
    });
    out
}

/// Per-pixel rows `[pixels, c]` placed at columns `[at, at + c)` of
/// rows `[pixels, total]`, zeros elsewhere ([`split`]'s backward).
pub(crate) fn widen(g: &[f32], pixels: usize, total: usize, at: usize) -> Vec<f32> {
    let c = g.len() / pixels.max(1);
    let mut out = vec![0f32; pixels * total];
    per_row(&mut out, total, |p, row| {
        row[at..at + c].copy_from_slice(&g[p * c..][..c]);
    });
    out
}

/// PyTorch's `ChannelShuffle(groups)` on per-pixel rows of `c` channels:
/// output channel `j · groups + i` is input channel `i · c / groups + j`.
/// Its inverse is the shuffle in `c / groups`.
pub(crate) fn channel_shuffle(x: &[f32], c: usize, groups: usize) -> Vec<f32> {
    let per = c / groups;
    let mut out = vec![0f32; x.len()];
    per_row(&mut out, c, |p, row| {
        let x = &x[p * c..][..c];
        for (k, v) in row.iter_mut().enumerate() {
            *v = x[(k % groups) * per + k / groups];
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

/// LayerNorm of each `c`-wide row of `x`; returns the output (`None`
/// where there is no affine map `(w, b)`: the output is x̂), the
/// normalised input x̂ and each row's 1/σ (what the backward needs).
pub(crate) fn layer_norm(
    x: &[f32],
    c: usize,
    affine: Option<(&[f32], &[f32])>,
    eps: f32,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut xhat = vec![0f32; x.len()];
    let mut rstd = vec![0f32; rows];
    let per = (TASK / c).max(1);
    let norm = xhat
        .par_chunks_mut(c * per)
        .zip(rstd.par_chunks_mut(per))
        .zip(x.par_chunks(c * per));
    let y = match affine {
        None => {
            norm.for_each(|((xh, rs), x)| layer_norm_rows(xh, rs, x, c, eps, None));
            None
        }
        Some((w, b)) => {
            let mut y = vec![0f32; x.len()];
            norm.zip(y.par_chunks_mut(c * per))
                .for_each(|(((xh, rs), x), y)| layer_norm_rows(xh, rs, x, c, eps, Some((y, w, b))));
            Some(y)
        }
    };
    (y, xhat, rstd)
}

simd_fn! {
    fn layer_norm_rows(
        xh: &mut [f32],
        rs: &mut [f32],
        x: &[f32],
        c: usize,
        eps: f32,
        affine: Option<(&mut [f32], &[f32], &[f32])>,
    ) {
        for ((xh, r), x) in xh.chunks_mut(c).zip(rs.iter_mut()).zip(x.chunks(c)) {
            let mean = sum_lanes(c, |i| x[i]) / c as f32;
            let var = sum_lanes(c, |i| (x[i] - mean) * (x[i] - mean)) / c as f32;
            *r = 1.0 / (var + eps).sqrt();
            for (h, &x) in xh.iter_mut().zip(x) {
                *h = (x - mean) * *r;
            }
        }
        if let Some((y, w, b)) = affine {
            for (y, xh) in y.chunks_mut(c).zip(xh.chunks(c)) {
                for (((y, h), w), b) in y.iter_mut().zip(xh).zip(w).zip(b) {
                    *y = h * w + b;
                }
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

/// The gradient of [`layer_norm`]'s input (`c` channels) from `g` at its
/// output: (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = g·w (`w` `None`:
/// no affine map, ĝ = g).
pub(crate) fn layer_norm_backward(
    g: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    c: usize,
    w: Option<&[f32]>,
) -> Vec<f32> {
    let mut dx = vec![0f32; g.len()];
    let per = (TASK / c).max(1);
    dx.par_chunks_mut(c * per)
        .zip(g.par_chunks(c * per))
        .zip(xhat.par_chunks(c * per))
        .zip(rstd.par_chunks(per))
        .for_each(|(((dx, g), xh), rs)| layer_norm_backward_rows(dx, g, xh, rs, c, w));
    dx
}

simd_fn! {
    fn layer_norm_backward_rows(
        dx: &mut [f32],
        g: &[f32],
        xh: &[f32],
        rs: &[f32],
        c: usize,
        w: Option<&[f32]>,
    ) {
        for (((dx, g), xh), r) in dx.chunks_mut(c).zip(g.chunks(c)).zip(xh.chunks(c)).zip(rs) {
            match w {
                Some(w) => norm_backward_row(dx, xh, *r, |i| g[i] * w[i]),
                None => norm_backward_row(dx, xh, *r, |i| g[i]),
            }
        }
    }
}

/// One row of [`layer_norm_backward`], `gw(i)` being ĝ at channel i.
#[inline(always)]
fn norm_backward_row(dx: &mut [f32], xh: &[f32], r: f32, gw: impl Fn(usize) -> f32) {
    let c = dx.len();
    let m1 = sum_lanes(c, &gw) / c as f32;
    let m2 = sum_lanes(c, |i| gw(i) * xh[i]) / c as f32;
    for (i, (dx, xh)) in dx.iter_mut().zip(xh).enumerate() {
        *dx = r * (gw(i) - m1 - xh * m2);
    }
}

/// `a · b` elementwise, or with `per_channel` = C, `a` (NHWC, C channels)
/// times `b`'s value for its sample and channel (`b` `[B, C]`).
pub(crate) fn mul(a: &[f32], b: &[f32], per_channel: Option<usize>) -> Vec<f32> {
    let mut y = a.to_vec();
    match per_channel {
        None => y
            .par_chunks_mut(TASK)
            .zip(b.par_chunks(TASK))
            .for_each(|(y, b)| y.iter_mut().zip(b).for_each(|(v, b)| *v *= b)),
        Some(c) => {
            let per_sample = a.len() / (b.len() / c.max(1)).max(1);
            y.par_chunks_mut(per_sample.max(1))
                .zip(b.par_chunks(c.max(1)))
                .for_each(|(y, gate)| scale(y, gate));
        }
    }
    y
}

/// The gradients of [`mul`]'s `a` and `b` from its output's, `g`: `g · b`,
/// and `g · a` (with `per_channel`, summed over each sample's pixels per
/// channel).
pub(crate) fn mul_backward(
    g: &[f32],
    a: &[f32],
    b: &[f32],
    per_channel: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let ga = mul(g, b, per_channel);
    let gb = mul(g, a, None);
    let Some(c) = per_channel else {
        return (ga, gb);
    };
    let per_sample = gb.len() / (b.len() / c.max(1)).max(1);
    let mut sums = vec![0f32; b.len()];
    sums.par_chunks_mut(c.max(1))
        .zip(gb.par_chunks(per_sample.max(1)))
        .for_each(|(sum, px)| {
            for p in px.chunks(c) {
                sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
            }
        });
    (ga, sums)
}
