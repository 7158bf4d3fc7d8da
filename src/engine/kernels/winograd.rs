//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016): each 4×4 block of outputs from a 6×6 input patch with 36
//! products per channel pair instead of 144, as 36 matrix products
//! `[tiles, cin] · [cin, cout]` between an input and an output transform.
//! F(2×2, 3×3), which this replaced, needs 16 products for 4 outputs
//! (4 per output against 2.25); A/B on this repository's 2-core machine,
//! medians of 5–6 alternated runs at batch 8, F(4×4) ran ResNet-18 1.14×,
//! ResNet-50 1.05×, BigGAN-deep-128 1.25× and the paper's step 1.10× as
//! fast, GoogLeNet and SqueezeNet 1.0 within noise (0.99–1.13×). Its
//! rounding error is larger, and depends on the interpolation points (see
//! [`G`]): at the points used, about 2.5e-6 of the largest output for 64
//! channels in f32, against 1e-6 for im2col (the engine's agreement tests
//! allow 1e-5 per conv, 1e-4 per network).
//!
//! The input's gradient is the same algorithm: it is the convolution of
//! the output's gradient with the weights flipped in space and transposed
//! in channels, padding `2 − pad`; in the transformed domain that is
//! matrix `p(ξ)` of the forward weights, transposed, at the reciprocal
//! points (G·J = P·GB for the flip J), so the forward's transformed
//! weights serve both directions, the gradient with transforms of its
//! own (and the weights kept a second time, transposed, for speed).

use super::simd::simd_fn;
use std::cell::RefCell;

use rayon::prelude::*;

use super::{buffer, gemm, view, view_mut, Dims};

/// The transformed weights of one conv, once for each direction.
#[derive(Debug)]
pub(crate) struct Winograd {
    cin: usize,
    cout: usize,
    pad: usize,
    /// The forward's, `[36, cin, cout]`: matrix ξ is `U_ξ`.
    u: Vec<f32>,
    /// The input gradient's, `[36, cout, cin]`: matrix ξ is
    /// `U_{flipped(ξ)}ᵀ` (see [`flipped`]), row-major. As `u`'s transposed
    /// view the gemm crate packed it again for every block of each
    /// product (about 10% of a ResNet-18 step at batch 8, `perf`); kept
    /// transposed, the weights take twice the memory (ResNet-18: about
    /// 170 MB more).
    ub: Vec<f32>,
}

/// Outputs per tile side.
const M: usize = 4;

/// Inputs per tile side.
const T: usize = M + 2;

/// `G` (`[T, 3]`), the weights' transform: row i is `c_i·(1, a_i, a_i²)`
/// for the interpolation points 0, 1, −1, 2, −½ with Lagrange's scales
/// `c_i = 1/Π_{j≠i}(a_i − a_j)` (1, −⅓, ⅓, 1/15, −16/15), then `(0, 0,
/// 1)` for the point at infinity. Of the sets of five small points,
/// this one rounds least (Barabasz et al., "Error analysis and improving
/// the accuracy of Winograd convolution for deep neural networks", 2020):
/// relative RMS error of a conv in f32 against f64, 256 channels of
/// ReLU'd inputs, 1.6e-6, against 2.5e-6 for Lavin & Gray's 0, ±1, ±2 and
/// 4.3e-6 for 0, ±1, 2, ½, which this replaced (im2col's is 0.4e-6;
/// measured with numpy, 2026-12-05).
///
/// The input's gradient runs the reciprocal points, 0, 1, −1, ½, −2
/// ([`GB`]): flipping the kernel reverses each row of `G`, and row i
/// reversed is row `p(i)` of `GB` (`G·J = P·GB`, see [`flip`]), so the
/// same transformed weights serve both directions, each with its
/// own input and output transforms ([`bt`] and [`at`], [`bt_back`] and
/// [`at_back`]).
const G: [[f64; 3]; T] = [
    [1.0, 0.0, 0.0],
    [-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0],
    [1.0 / 3.0, -1.0 / 3.0, 1.0 / 3.0],
    [1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0],
    [-16.0 / 15.0, 8.0 / 15.0, -4.0 / 15.0],
    [0.0, 0.0, 1.0],
];

/// The weights' transform of the input's gradient: row i is `c_i·(1,
/// b_i, b_i²)` for the points 0, 1, −1, ½, −2, then infinity (the
/// reciprocals of [`G`]'s, in the order [`flip`] maps them), scales as
/// flipping `G`'s rows makes them. Only the tests read it: the backward
/// reads `G`'s transformed weights through [`flipped`].
#[cfg(test)]
const GB: [[f64; 3]; T] = [
    [1.0, 0.0, 0.0],
    [-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0],
    [1.0 / 3.0, -1.0 / 3.0, 1.0 / 3.0],
    [4.0 / 15.0, 2.0 / 15.0, 1.0 / 15.0],
    [-4.0 / 15.0, 8.0 / 15.0, -16.0 / 15.0],
    [0.0, 0.0, 1.0],
];

/// `p(i)`, the row of [`GB`] that row i of `G·J` (`G`'s row reversed)
/// is: the point `1/a_i`, which keeps its place but for 0 and ∞, which
/// swap.
const fn flip(i: usize) -> usize {
    match i {
        0 => 5,
        5 => 0,
        i => i,
    }
}

/// Index `ξ = r·T + q` of the flipped conv's matrix: `p(r)·T + p(q)`.
fn flipped(xi: usize) -> usize {
    flip(xi / T) * T + flip(xi % T)
}

thread_local! {
    /// Transformed input tiles and products, reused by every conv on this
    /// thread.
    static TILES: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// At most this many floats in each of the two tile buffers (32 MB).
const TILES_LIMIT: usize = 1 << 23;

/// Channels per vector step of the transforms.
const L: usize = 8;

impl Winograd {
    /// Whether a conv with these settings (per axis, `[rows, columns]`)
    /// runs here: 3×3, stride 1 and no dilation on both axes, one group,
    /// one padding for both axes and at most 2 (the gradient's padding is
    /// `2 − pad`), and channels enough that the products outweigh the
    /// transforms: 64 in (with 16 or 32, SqueezeNet 1.1's steps were
    /// 15–35% slower than by im2col, A/B on this repository's machine).
    pub(crate) fn applies(
        [cout, cin_g, kh, kw]: [usize; 4],
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
        groups: usize,
    ) -> bool {
        (kh, kw, stride, dil, groups) == (3, 3, [1; 2], [1; 2], 1)
            && pad[0] == pad[1]
            && pad[0] <= 2
            && cin_g >= 64
            && cout >= 16
    }

    /// From weights `[cout, 3, 3, cin]`: `U = G·g·Gᵀ` per channel pair
    /// (in f64, rounded once).
    pub(crate) fn new(w: &[f32], cin: usize, cout: usize, pad: usize) -> Self {
        let mut u = vec![0f32; T * T * cin * cout];
        for co in 0..cout {
            for ci in 0..cin {
                let w = |ky: usize, kx: usize| w[((co * 3 + ky) * 3 + kx) * cin + ci] as f64;
                let gw: [[f64; 3]; T] =
                    G.map(|gi| std::array::from_fn(|kx| (0..3).map(|ky| gi[ky] * w(ky, kx)).sum()));
                for (i, gw) in gw.iter().enumerate() {
                    for (j, gj) in G.iter().enumerate() {
                        let v: f64 = (0..3).map(|kx| gw[kx] * gj[kx]).sum();
                        u[((i * T + j) * cin + ci) * cout + co] = v as f32;
                    }
                }
            }
        }
        let mut ub = vec![0f32; T * T * cin * cout];
        for xi in 0..T * T {
            let src = &u[flipped(xi) * cin * cout..][..cin * cout];
            let dst = &mut ub[xi * cin * cout..][..cin * cout];
            for ci in 0..cin {
                for co in 0..cout {
                    dst[co * cin + ci] = src[ci * cout + co];
                }
            }
        }
        Winograd {
            cin,
            cout,
            pad,
            u,
            ub,
        }
    }

    /// `conv(x)` (no bias) of NHWC `x`, dims `d`, into `out`, dims `o`.
    pub(crate) fn forward(&self, x: &[f32], d: Dims, o: Dims, out: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        run(x, d, o, self.pad, out, false, |xi| {
            view(&self.u, xi * cin * cout, cin, cout, cout)
        });
    }

    /// The gradient of the input (dims `d`) from `g`, the output's
    /// gradient (dims `o`), into `dx`.
    pub(crate) fn backward(&self, g: &[f32], o: Dims, d: Dims, dx: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        run(g, o, d, 2 - self.pad, dx, true, |xi| {
            view(&self.ub, xi * cin * cout, cout, cin, cin)
        });
    }
}

/// The F(4×4, 3×3) convolution of `x` (dims `d`) with padding `pad` into
/// `out` (dims `o`), matrix `ξ` of the transformed weights from `u(ξ)`
/// (`[d.c, o.c]`), at [`G`]'s points, or at [`GB`]'s for the input's
/// gradient (`back`).
fn run<'u>(
    x: &[f32],
    d: Dims,
    o: Dims,
    pad: usize,
    out: &mut [f32],
    back: bool,
    u: impl Fn(usize) -> ndarray::ArrayView2<'u, f32>,
) {
    let (ci, co) = (d.c, o.c);
    let tt = T * T;
    let (th, tw) = (o.h.div_ceil(M), o.w.div_ceil(M));
    let per = (TILES_LIMIT / (th * tw * tt * ci.max(co)).max(1)).clamp(1, d.b.max(1));
    for (xs, os) in x
        .chunks(per * d.per_sample())
        .zip(out.chunks_mut(per * o.per_sample()))
    {
        let n = xs.len() / d.per_sample();
        let tiles = n * th * tw;
        let mut body = |v: &mut Vec<f32>, m: &mut Vec<f32>| {
            let v = buffer(v, tiles * tt * ci);
            let m = buffer(m, tiles * tt * co);
            // The input transform, one row of tiles per task.
            v.par_chunks_mut(tw * tt * ci)
                .enumerate()
                .for_each(|(row, vs)| {
                    let (s, ty) = (row / th, row % th);
                    let img = &xs[s * d.per_sample()..][..d.per_sample()];
                    for (tx, dst) in vs.chunks_mut(tt * ci).enumerate() {
                        let mut patch: [Option<&[f32]>; T * T] = [None; T * T];
                        for (k, p) in patch.iter_mut().enumerate() {
                            let iy = (M * ty + k / T) as isize - pad as isize;
                            let ix = (M * tx + k % T) as isize - pad as isize;
                            if (0..d.h as isize).contains(&iy) && (0..d.w as isize).contains(&ix) {
                                *p = Some(&img[(iy as usize * d.w + ix as usize) * ci..][..ci]);
                            }
                        }
                        input_tile(&patch, ci, dst, back);
                    }
                });
            // The T² products, M_ξ = V_ξ · U_ξ, on strided views of the
            // tile-major buffers.
            for xi in 0..tt {
                gemm(
                    view(v, xi * ci, tiles, ci, tt * ci),
                    u(xi),
                    view_mut(m, xi * co, tiles, co, tt * co),
                    0.0,
                );
            }
            // The output transform, one sample's row of tiles per task.
            let m = &*m;
            for (s, img) in os.chunks_mut(o.per_sample()).enumerate() {
                img.par_chunks_mut(M * o.w * co)
                    .enumerate()
                    .for_each(|(ty, rows)| {
                        let first = (s * th + ty) * tw;
                        for tx in 0..tw {
                            let src = &m[(first + tx) * tt * co..][..tt * co];
                            output_tile(src, co, rows, o.w, M * tx, back);
                        }
                    });
            }
        };
        // Fresh buffers where this thread's are in use (a conv run from
        // inside another's rayon tasks).
        TILES.with(|bufs| match bufs.try_borrow_mut() {
            Ok(mut b) => {
                let (v, m) = &mut *b;
                body(v, m)
            }
            Err(_) => body(&mut Vec::new(), &mut Vec::new()),
        });
    }
}

/// The first `n` ≤ [`L`] values of `src`, zeros after (a whole vector
/// when `n` is `L`: one load, not a call to `memcpy`).
#[inline(always)]
fn load(src: &[f32], n: usize) -> [f32; L] {
    if n == L {
        src[..L].try_into().expect("L values")
    } else {
        let mut v = [0f32; L];
        v[..n].copy_from_slice(&src[..n]);
        v
    }
}

/// The first `n` ≤ [`L`] values of `v` to `dst`.
#[inline(always)]
fn store(dst: &mut [f32], v: &[f32; L], n: usize) {
    if n == L {
        let d: &mut [f32; L] = (&mut dst[..L]).try_into().expect("L values");
        *d = *v;
    } else {
        dst[..n].copy_from_slice(&v[..n]);
    }
}

/// `Bᵀ·d` of six values, for [`G`]'s points (rows of `Bᵀ`: (1, 3/2, −2,
/// −3/2, 1, 0), (0, −1, −5/2, −1/2, 1, 0), (0, 1, 1/2, −5/2, 1, 0), (0,
/// −1/2, −1, 1/2, 1, 0), (0, 2, −1, −2, 1, 0), (0, 1, 3/2, −2, −3/2, 1)).
#[inline(always)]
fn bt(d: [f32; T]) -> [f32; T] {
    let (e, f) = (d[4] - d[2], d[3] - d[1]);
    let (a, b) = (e - 1.5 * d[3], d[1] + 1.5 * d[2] - d[3]);
    [
        d[0] + d[4] - 2.0 * d[2] - 1.5 * f,
        a - b,
        a + b,
        e + 0.5 * f,
        e - 2.0 * f,
        d[5] + d[1] - 2.0 * d[3] - 1.5 * e,
    ]
}

/// `Aᵀ·m` of six values, for [`G`]'s points (row k: the points 0, 1, −1,
/// 2, −½ to the power k, then 0, or 1 in the last row, for infinity).
#[inline(always)]
fn at(m: [f32; T]) -> [f32; M] {
    let (s, d) = (m[1] + m[2], m[1] - m[2]);
    [
        m[0] + s + m[3] + m[4],
        d + 2.0 * m[3] - 0.5 * m[4],
        s + 4.0 * m[3] + 0.25 * m[4],
        d + 8.0 * m[3] - 0.125 * m[4] + m[5],
    ]
}

/// `Bᵀ·d` of six values, for [`GB`]'s points, the input gradient's
/// (rows of `Bᵀ`: (1, −3/2, −2, 3/2, 1, 0), (0, 1, −1/2, −5/2, −1, 0),
/// (0, −1, 5/2, −1/2, −1, 0), (0, 1, 1/2, −1, −1/2, 0), (0, −1, 2, 1,
/// −2, 0), (0, 1, −3/2, −2, 3/2, 1); rows 3 and 4 are scaled by ⅛ and 8
/// against [`GB`]'s scales, which [`at_back`] undoes exactly).
#[inline(always)]
fn bt_back(d: [f32; T]) -> [f32; T] {
    let (e, f) = (d[4] - d[2], d[3] - d[1]);
    let (a, b) = (e + 1.5 * d[3], d[1] - 1.5 * d[2] - d[3]);
    [
        d[0] + d[4] - 2.0 * d[2] + 1.5 * f,
        b - a,
        -(a + b),
        -(f + 0.5 * e),
        2.0 * (d[2] - d[4]) + f,
        d[5] + d[1] - 2.0 * d[3] + 1.5 * e,
    ]
}

/// `Aᵀ·m` of six values, for [`GB`]'s points (row k: the points 0, 1,
/// −1, ½, −2 to the power k, columns 3 and 4 scaled by 8 and ⅛, then 0,
/// or 1 in the last row, for infinity).
#[inline(always)]
fn at_back(m: [f32; T]) -> [f32; M] {
    let (s, d) = (m[1] + m[2], m[1] - m[2]);
    [
        m[0] + s + 8.0 * m[3] + 0.125 * m[4],
        d + 4.0 * m[3] - 0.25 * m[4],
        s + 2.0 * m[3] + 0.5 * m[4],
        d + m[3] - m[4] + m[5],
    ]
}

simd_fn! {
/// `V = Bᵀ·d·B` of one 6×6 patch (rows of `ci` channels, `None` in the
/// padding) into `dst`, `[36, ci]`, by [`bt`], or by [`bt_back`] for the
/// input's gradient (`back`).
fn input_tile(patch: &[Option<&[f32]>; T * T], ci: usize, dst: &mut [f32], back: bool) {
    if back {
        input_tile_by(patch, ci, dst, bt_back)
    } else {
        input_tile_by(patch, ci, dst, bt)
    }
}
}

/// [`input_tile`]'s body, by the transform `bt`.
#[inline(always)]
fn input_tile_by(
    patch: &[Option<&[f32]>; T * T],
    ci: usize,
    dst: &mut [f32],
    bt: impl Fn([f32; T]) -> [f32; T],
) {
    for c0 in (0..ci).step_by(L) {
        let n = L.min(ci - c0);
        let mut d = [[0f32; L]; T * T];
        for (row, p) in d.iter_mut().zip(patch) {
            if let Some(p) = p {
                *row = load(&p[c0..], n);
            }
        }
        // Down the columns, then along the rows.
        let mut t = [[0f32; L]; T * T];
        for q in 0..T {
            for l in 0..L {
                let col = bt(std::array::from_fn(|k| d[T * k + q][l]));
                for (k, v) in col.into_iter().enumerate() {
                    t[T * k + q][l] = v;
                }
            }
        }
        for r in 0..T {
            let mut v = [[0f32; L]; T];
            for l in 0..L {
                let row = bt(std::array::from_fn(|q| t[T * r + q][l]));
                for (q, x) in row.into_iter().enumerate() {
                    v[q][l] = x;
                }
            }
            for (q, v) in v.iter().enumerate() {
                store(&mut dst[(T * r + q) * ci + c0..], v, n);
            }
        }
    }
}

simd_fn! {
/// `Y = Aᵀ·M·A` of one tile's products `src` (`[36, co]`) into the 4×4
/// outputs at column `x0` of `rows` (up to four rows of `w` pixels),
/// those inside the output only, by [`at`], or by [`at_back`] for the
/// input's gradient (`back`).
fn output_tile(src: &[f32], co: usize, rows: &mut [f32], w: usize, x0: usize, back: bool) {
    if back {
        output_tile_by(src, co, rows, w, x0, at_back)
    } else {
        output_tile_by(src, co, rows, w, x0, at)
    }
}
}

/// [`output_tile`]'s body, by the transform `at`.
#[inline(always)]
fn output_tile_by(
    src: &[f32],
    co: usize,
    rows: &mut [f32],
    w: usize,
    x0: usize,
    at: impl Fn([f32; T]) -> [f32; M],
) {
    let nrows = rows.len() / (w * co);
    for c0 in (0..co).step_by(L) {
        let n = L.min(co - c0);
        let mut m = [[0f32; L]; T * T];
        for (k, row) in m.iter_mut().enumerate() {
            *row = load(&src[k * co + c0..], n);
        }
        // Down the columns (four rows of six), then along the rows.
        let mut s = [[0f32; L]; M * T];
        for q in 0..T {
            for l in 0..L {
                let col = at(std::array::from_fn(|k| m[T * k + q][l]));
                for (r, v) in col.into_iter().enumerate() {
                    s[T * r + q][l] = v;
                }
            }
        }
        for r in 0..nrows.min(M) {
            let mut y = [[0f32; L]; M];
            for l in 0..L {
                let row = at(std::array::from_fn(|q| s[T * r + q][l]));
                for (j, v) in row.into_iter().enumerate() {
                    y[j][l] = v;
                }
            }
            for (j, y) in y.iter().enumerate() {
                if x0 + j < w {
                    store(&mut rows[(r * w + x0 + j) * co + c0..], y, n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed).wrapping_mul(2_246_822_519);
                (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The direct 3×3 convolution, in f64: `w` is `[cout, 3, 3, cin]`.
    fn direct(x: &[f32], d: Dims, w: &[f32], cout: usize, pad: usize) -> (Vec<f32>, Dims) {
        let o = Dims {
            h: d.h + 2 * pad - 2,
            w: d.w + 2 * pad - 2,
            c: cout,
            ..d
        };
        let mut y = vec![0f32; o.len()];
        for b in 0..d.b {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    for co in 0..cout {
                        let mut acc = 0f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    (oy + ky) as isize - pad as isize,
                                    (ox + kx) as isize - pad as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                                    continue;
                                }
                                for ci in 0..d.c {
                                    let xv =
                                        x[((b * d.h + iy as usize) * d.w + ix as usize) * d.c + ci];
                                    acc +=
                                        xv as f64 * w[((co * 3 + ky) * 3 + kx) * d.c + ci] as f64;
                                }
                            }
                        }
                        y[((b * o.h + oy) * o.w + ox) * cout + co] = acc as f32;
                    }
                }
            }
        }
        (y, o)
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, crate::test_support::nan_max)
            / scale
    }

    /// Forward against the direct convolution, and the backward against
    /// its adjoint (`<conv(x), g> = <x, dx>` for every x, checked on each
    /// input basis direction through the direct conv), at every padding,
    /// odd and even sizes, sizes below a tile, and channel counts that are
    /// not a multiple of the vector width.
    #[test]
    fn matches_the_direct_convolution_and_its_adjoint() {
        for (i, &(b, h, w, cin, cout, pad)) in [
            (2, 6, 8, 16, 16, 1),
            (1, 7, 5, 17, 19, 1),
            (3, 5, 6, 16, 24, 0),
            (1, 4, 3, 20, 16, 2),
            (2, 1, 1, 16, 16, 1),
            (1, 2, 2, 9, 11, 2),
        ]
        .iter()
        .enumerate()
        {
            let d = Dims {
                b,
                h,
                w,
                c: cin,
                spatial: true,
            };
            let x = filled(d.len(), i as u32);
            let wt = filled(cout * 9 * cin, 100 + i as u32);
            let (want, o) = direct(&x, d, &wt, cout, pad);
            let k = Winograd::new(&wt, cin, cout, pad);
            let mut got = vec![f32::NAN; o.len()];
            k.forward(&x, d, o, &mut got);
            let e = max_rel(&got, &want);
            assert!(e < 1e-5, "case {i}: forward relative error {e}");
            // dx[j] = Σ g · ∂y/∂x[j] = <g, conv(e_j)> (the bias-free conv
            // is linear).
            let g = filled(o.len(), 200 + i as u32);
            let mut dx = vec![f32::NAN; d.len()];
            k.backward(&g, o, d, &mut dx);
            let mut want_dx = vec![0f32; d.len()];
            for (j, wd) in want_dx.iter_mut().enumerate() {
                let mut e = vec![0f32; d.len()];
                e[j] = 1.0;
                let (y, _) = direct(&e, d, &wt, cout, pad);
                *wd = y
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>() as f32;
            }
            let e = max_rel(&dx, &want_dx);
            assert!(e < 1e-5, "case {i}: input gradient relative error {e}");
        }
    }

    /// Relative RMS error against the f64 convolution, forward and input
    /// gradient, on ReLU'd inputs with 256 channels in (a deep layer's
    /// conv). The points 0, ±1, 2, −½ and their reciprocals: 1.6e-6 and
    /// 0.8e-6 here (2026-12-05); the earlier 0, ±1, 2, ½ gave 4.3e-6 and
    /// 1.5e-6 and fail this test.
    #[test]
    fn rounds_within_a_few_times_im2col() {
        let (cin, cout, pad) = (256, 32, 1);
        let d = Dims {
            b: 2,
            h: 16,
            w: 16,
            c: cin,
            spatial: true,
        };
        // Sums of three uniforms: bell-shaped, as activations are.
        let bell = |n: usize, seed: u32| -> Vec<f32> {
            let (a, b, c) = (filled(n, seed), filled(n, seed + 1), filled(n, seed + 2));
            (0..n).map(|i| a[i] + b[i] + c[i]).collect()
        };
        let x: Vec<f32> = bell(d.len(), 7).iter().map(|v| v.max(0.0)).collect();
        let scale = 1.0 / (9.0 * cin as f32).sqrt();
        let wt: Vec<f32> = filled(cout * 9 * cin, 8)
            .iter()
            .map(|v| v * scale)
            .collect();
        let rms = |a: &[f32], b: &[f32]| {
            let e: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            (e / n).sqrt()
        };
        let k = Winograd::new(&wt, cin, cout, pad);
        let (want, o) = direct(&x, d, &wt, cout, pad);
        let mut got = vec![f32::NAN; o.len()];
        k.forward(&x, d, o, &mut got);
        let forward = rms(&got, &want);
        // The input's gradient is the conv of g with the kernel flipped
        // and its channels transposed, padding 2 − pad.
        let g = bell(o.len(), 20);
        let mut flipped_wt = vec![0f32; wt.len()];
        for co in 0..cout {
            for ky in 0..3 {
                for kx in 0..3 {
                    for ci in 0..cin {
                        flipped_wt[((ci * 3 + 2 - ky) * 3 + 2 - kx) * cout + co] =
                            wt[((co * 3 + ky) * 3 + kx) * cin + ci];
                    }
                }
            }
        }
        let (want_dx, _) = direct(&g, o, &flipped_wt, cin, 2 - pad);
        let mut dx = vec![f32::NAN; d.len()];
        k.backward(&g, o, d, &mut dx);
        let backward = rms(&dx, &want_dx);
        eprintln!("relative RMS error: forward {forward:.2e}, input gradient {backward:.2e}");
        assert!(
            forward < 2e-6 && backward < 2e-6,
            "forward {forward:.2e}, input gradient {backward:.2e}"
        );
    }

    #[test]
    fn applies_to_3x3_stride_1_convs_with_64_channels_in() {
        let applies = |shape, s, p, d, g| Winograd::applies(shape, [s; 2], [p; 2], [d; 2], g);
        assert!(applies([16, 64, 3, 3], 1, 1, 1, 1));
        assert!(applies([16, 64, 3, 3], 1, 2, 1, 1));
        assert!(!applies([16, 63, 3, 3], 1, 1, 1, 1));
        assert!(!applies([15, 64, 3, 3], 1, 1, 1, 1));
        assert!(!applies([64, 64, 3, 3], 2, 1, 1, 1));
        assert!(!applies([64, 64, 3, 3], 1, 3, 1, 1));
        assert!(!applies([64, 64, 3, 3], 1, 1, 2, 1));
        assert!(!applies([64, 32, 3, 3], 1, 1, 1, 2));
        assert!(!applies([64, 64, 5, 5], 1, 1, 1, 1));
        // Either axis alone off the case: a padding, stride or dilation
        // that differs across from down.
        let shape = [64, 64, 3, 3];
        assert!(!Winograd::applies(shape, [1, 1], [1, 0], [1, 1], 1));
        assert!(!Winograd::applies(shape, [1, 1], [0, 1], [1, 1], 1));
        assert!(!Winograd::applies(shape, [2, 1], [1, 1], [1, 1], 1));
        assert!(!Winograd::applies(shape, [1, 2], [1, 1], [1, 1], 1));
        assert!(!Winograd::applies(shape, [1, 1], [1, 1], [2, 1], 1));
        assert!(!Winograd::applies(shape, [1, 1], [1, 1], [1, 2], 1));
    }

    /// The flip of the transformed domain: `p` swaps the points 0 and ∞
    /// (the outer rows and columns) and keeps the others in place.
    #[test]
    fn flipped_index_swaps_zero_and_infinity() {
        assert_eq!(flipped(0), 35);
        assert_eq!(flipped(3), 33);
        assert_eq!(flipped(7), 7);
        assert_eq!(flipped(9), 9);
        assert_eq!(flipped(19), 19);
        assert_eq!(flipped(6), 11);
        assert!((0..T * T).all(|i| flipped(flipped(i)) == i));
    }

    /// `G·J = P·GB`: row i of `G` with its columns reversed is row `p(i)`
    /// of `GB`, exactly (the backward pass reads the forward's transformed
    /// weights through this); each row of `G` is `c·(1, a, a²)` at its
    /// point with Lagrange's scale `c = 1/Π(a − a_j)`, and each of `GB`'s
    /// is a multiple of `(1, b, b²)` at its point.
    #[test]
    fn flipping_the_kernel_permutes_g_into_gb() {
        for (i, row) in G.iter().enumerate() {
            assert_eq!([row[2], row[1], row[0]], GB[flip(i)], "row {i}");
        }
        let points = [0.0, 1.0, -1.0, 2.0, -0.5];
        for (i, &a) in points.iter().enumerate() {
            let c: f64 = points
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &b)| 1.0 / (a - b))
                .product();
            let want = [c, c * a, c * a * a];
            for k in 0..3 {
                assert!((G[i][k] - want[k]).abs() < 1e-15, "row {i} of G");
            }
        }
        for (i, b) in [0.0, 1.0, -1.0, 0.5, -2.0].into_iter().enumerate() {
            let c = GB[i][0];
            let want = [c, c * b, c * b * b];
            for k in 0..3 {
                assert!((GB[i][k] - want[k]).abs() < 1e-15, "row {i} of GB");
            }
        }
        assert_eq!((G[5], GB[5]), ([0.0, 0.0, 1.0], [0.0, 0.0, 1.0]));
    }
}
