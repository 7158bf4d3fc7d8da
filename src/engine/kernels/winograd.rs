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
//! rounding error is larger: about 7e-6 of the largest output for 64
//! channels in f32, against 1e-6 (the engine's agreement tests allow
//! 1e-5 per conv, 1e-4 per network).
//!
//! The input's gradient is the same algorithm: it is the convolution of
//! the output's gradient with the weights flipped in space and transposed
//! in channels, padding `2 − pad`; in the transformed domain that is
//! matrix `p(ξ)` of the forward weights, transposed, where `p` maps each
//! interpolation point to its reciprocal (G·J = P·G for the flip J), so
//! one copy of the transformed weights serves both directions.

use super::simd::simd_fn;
use std::cell::RefCell;

use rayon::prelude::*;

use super::{buffer, gemm, view, view_mut, Dims};

/// The transformed weights of one conv: `[36, cin, cout]`.
#[derive(Debug)]
pub(crate) struct Winograd {
    cin: usize,
    cout: usize,
    pad: usize,
    u: Vec<f32>,
}

/// Outputs per tile side.
const M: usize = 4;

/// Inputs per tile side.
const T: usize = M + 2;

/// `G` (`[T, 3]`), the weights' transform: row i is `c_i·(1, a_i, a_i²)`
/// for the interpolation points 0, 1, −1, 2, ½ with scales 1, ½, 1/18,
/// 1/18, 2/9, then `(0, 0, 1)` for the point at infinity. The points are
/// closed under `a ↦ 1/a` and the scales chosen so that flipping the
/// kernel permutes the rows (`G·J = P·G`, see [`flip`]) and the input
/// transform [`bt`] has integer and half-integer entries. Lavin & Gray's
/// points 0, ±1, ±2 are as accurate (max error relative to the largest
/// output 6.1e-6 against 6.7e-6 here, 64 channels in f32, measured with
/// numpy) but flip into ∓½, so the gradient would need a second copy of
/// the transformed weights.
const G: [[f64; 3]; T] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0],
    [1.0 / 18.0, 1.0 / 9.0, 2.0 / 9.0],
    [2.0 / 9.0, 1.0 / 9.0, 1.0 / 18.0],
    [0.0, 0.0, 1.0],
];

/// `p(i)`, the row of `G` that row i of the flipped kernel's `G·J` is:
/// the point `1/a_i` (0 and ∞ swap, so do 2 and ½).
const fn flip(i: usize) -> usize {
    match i {
        0 => 5,
        5 => 0,
        3 => 4,
        4 => 3,
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
    /// Whether a conv with these settings runs here: 3×3, stride 1, no
    /// dilation, one group, padding at most 2 (the gradient's padding is
    /// `2 − pad`), and channels enough that the products outweigh the
    /// transforms: 64 in (with 16 or 32, SqueezeNet 1.1's steps were
    /// 15–35% slower than by im2col, A/B on this repository's machine).
    pub(crate) fn applies(
        [cout, cin_g, kh, kw]: [usize; 4],
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
    ) -> bool {
        (kh, kw, stride, dil, groups) == (3, 3, 1, 1, 1) && pad <= 2 && cin_g >= 64 && cout >= 16
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
        Winograd { cin, cout, pad, u }
    }

    /// `conv(x)` (no bias) of NHWC `x`, dims `d`, into `out`, dims `o`.
    pub(crate) fn forward(&self, x: &[f32], d: Dims, o: Dims, out: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        run(x, d, o, self.pad, out, |xi| {
            view(&self.u, xi * cin * cout, cin, cout, cout)
        });
    }

    /// The gradient of the input (dims `d`) from `g`, the output's
    /// gradient (dims `o`), into `dx`.
    pub(crate) fn backward(&self, g: &[f32], o: Dims, d: Dims, dx: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        run(g, o, d, 2 - self.pad, dx, |xi| {
            view(&self.u, flipped(xi) * cin * cout, cin, cout, cout).reversed_axes()
        });
    }
}

/// The F(4×4, 3×3) convolution of `x` (dims `d`) with padding `pad` into
/// `out` (dims `o`), matrix `ξ` of the transformed weights from `u(ξ)`
/// (`[d.c, o.c]`).
fn run<'u>(
    x: &[f32],
    d: Dims,
    o: Dims,
    pad: usize,
    out: &mut [f32],
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
                        input_tile(&patch, ci, dst);
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
                            output_tile(src, co, rows, o.w, M * tx);
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

/// `Bᵀ·d` of six values (rows of `Bᵀ`: (1, −5/2, 0, 5/2,
/// −1, 0), (0, −2, 3, 3, −2, 0), (0, −2, 7, −7, 2, 0), (0, 1, −2, −1, 2,
/// 0), (0, 16, −8, −16, 8, 0), (0, −1, 5/2, 0, −5/2, 1)).
#[inline(always)]
fn bt(d: [f32; T]) -> [f32; T] {
    let (a, b) = (d[1] - d[3], d[2] - d[4]);
    [
        d[0] - d[4] + 2.5 * (d[3] - d[1]),
        3.0 * (d[2] + d[3]) - 2.0 * (d[1] + d[4]),
        7.0 * (d[2] - d[3]) - 2.0 * (d[1] - d[4]),
        a - 2.0 * b,
        16.0 * a - 8.0 * b,
        d[5] - d[1] + 2.5 * b,
    ]
}

/// `Aᵀ·m` of six values (row k: the points 0, 1, −1, 2, ½ to the power
/// k, then 0, or 1 in the last row, for infinity).
#[inline(always)]
fn at(m: [f32; T]) -> [f32; M] {
    let (s, d) = (m[1] + m[2], m[1] - m[2]);
    [
        m[0] + s + m[3] + m[4],
        d + 2.0 * m[3] + 0.5 * m[4],
        s + 4.0 * m[3] + 0.25 * m[4],
        d + 8.0 * m[3] + 0.125 * m[4] + m[5],
    ]
}

simd_fn! {
/// `V = Bᵀ·d·B` of one 6×6 patch (rows of `ci` channels, `None` in the
/// padding) into `dst`, `[36, ci]`.
fn input_tile(patch: &[Option<&[f32]>; T * T], ci: usize, dst: &mut [f32]) {
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
}

simd_fn! {
/// `Y = Aᵀ·M·A` of one tile's products `src` (`[36, co]`) into the 4×4
/// outputs at column `x0` of `rows` (up to four rows of `w` pixels),
/// those inside the output only.
fn output_tile(src: &[f32], co: usize, rows: &mut [f32], w: usize, x0: usize) {
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
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
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

    #[test]
    fn applies_to_3x3_stride_1_convs_with_64_channels_in() {
        assert!(Winograd::applies([16, 64, 3, 3], 1, 1, 1, 1));
        assert!(Winograd::applies([16, 64, 3, 3], 1, 2, 1, 1));
        assert!(!Winograd::applies([16, 63, 3, 3], 1, 1, 1, 1));
        assert!(!Winograd::applies([15, 64, 3, 3], 1, 1, 1, 1));
        assert!(!Winograd::applies([64, 64, 3, 3], 2, 1, 1, 1));
        assert!(!Winograd::applies([64, 64, 3, 3], 1, 3, 1, 1));
        assert!(!Winograd::applies([64, 64, 3, 3], 1, 1, 2, 1));
        assert!(!Winograd::applies([64, 32, 3, 3], 1, 1, 1, 2));
        assert!(!Winograd::applies([64, 64, 5, 5], 1, 1, 1, 1));
    }

    /// The flip of the transformed domain: `p` swaps the points 0 and ∞
    /// (the outer rows and columns), and 2 and ½.
    #[test]
    fn flipped_index_swaps_reciprocal_points() {
        assert_eq!(flipped(0), 35);
        assert_eq!(flipped(3), 34);
        assert_eq!(flipped(7), 7);
        assert_eq!(flipped(9), 10);
        assert_eq!(flipped(19), 25);
        assert!((0..T * T).all(|i| flipped(flipped(i)) == i));
    }

    /// `G·J = P·G`: row i of `G` with its columns reversed is row `p(i)`,
    /// exactly (the backward pass reads the forward's transformed weights
    /// through this).
    #[test]
    fn flipping_the_kernel_permutes_the_rows_of_g() {
        for (i, row) in G.iter().enumerate() {
            assert_eq!([row[2], row[1], row[0]], G[flip(i)], "row {i}");
        }
    }
}
