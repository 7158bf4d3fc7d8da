//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016): each 2×2 block of outputs from a 4×4 input patch with 16
//! products per channel pair instead of 36, as 16 matrix products
//! `[tiles, cin] · [cin, cout]` between an input and an output transform.
//!
//! The input's gradient is the same algorithm: it is the convolution of
//! the output's gradient with the weights flipped in space and transposed
//! in channels, padding `2 − pad`; in the transformed domain that is
//! matrix `p(ξ)` of the forward weights, transposed, where `p` swaps
//! indices 0 and 3 of each axis (G·J = P·G for the flip J), so one copy
//! of the transformed weights serves both directions.

use super::simd::simd_fn;
use std::cell::RefCell;

use rayon::prelude::*;

use super::{buffer, gemm, view, view_mut, Dims};

/// The transformed weights of one conv: `[16, cin, cout]`.
#[derive(Debug)]
pub(crate) struct Winograd {
    cin: usize,
    cout: usize,
    pad: usize,
    u: Vec<f32>,
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

/// Index `ξ` of the flipped conv's matrix: `p(r)·4 + p(q)`.
fn flipped(xi: usize) -> usize {
    let p = |i: usize| if i == 0 || i == 3 { 3 - i } else { i };
    p(xi / 4) * 4 + p(xi % 4)
}

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

    /// From weights `[cout, 3, 3, cin]`: `U = G·g·Gᵀ` per channel pair.
    pub(crate) fn new(w: &[f32], cin: usize, cout: usize, pad: usize) -> Self {
        const G: [[f32; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let mut u = vec![0f32; 16 * cin * cout];
        for co in 0..cout {
            for ci in 0..cin {
                let g = |ky: usize, kx: usize| w[((co * 3 + ky) * 3 + kx) * cin + ci];
                let mut gg = [[0f32; 3]; 4];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (kx, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|ky| G[i][ky] * g(ky, kx)).sum();
                    }
                }
                for i in 0..4 {
                    for j in 0..4 {
                        let v: f32 = (0..3).map(|kx| gg[i][kx] * G[j][kx]).sum();
                        u[((i * 4 + j) * cin + ci) * cout + co] = v;
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

/// The F(2×2, 3×3) convolution of `x` (dims `d`) with padding `pad` into
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
    let (th, tw) = (o.h.div_ceil(2), o.w.div_ceil(2));
    let per = (TILES_LIMIT / (th * tw * 16 * ci.max(co)).max(1)).clamp(1, d.b.max(1));
    for (xs, os) in x
        .chunks(per * d.per_sample())
        .zip(out.chunks_mut(per * o.per_sample()))
    {
        let n = xs.len() / d.per_sample();
        let tiles = n * th * tw;
        let mut body = |v: &mut Vec<f32>, m: &mut Vec<f32>| {
            let v = buffer(v, tiles * 16 * ci);
            let m = buffer(m, tiles * 16 * co);
            // The input transform, one row of tiles per task.
            v.par_chunks_mut(tw * 16 * ci)
                .enumerate()
                .for_each(|(row, vs)| {
                    let (s, ty) = (row / th, row % th);
                    let img = &xs[s * d.per_sample()..][..d.per_sample()];
                    for (tx, dst) in vs.chunks_mut(16 * ci).enumerate() {
                        let mut patch: [Option<&[f32]>; 16] = [None; 16];
                        for (k, p) in patch.iter_mut().enumerate() {
                            let iy = (2 * ty + k / 4) as isize - pad as isize;
                            let ix = (2 * tx + k % 4) as isize - pad as isize;
                            if (0..d.h as isize).contains(&iy) && (0..d.w as isize).contains(&ix) {
                                *p = Some(&img[(iy as usize * d.w + ix as usize) * ci..][..ci]);
                            }
                        }
                        input_tile(&patch, ci, dst);
                    }
                });
            // The 16 products, M_ξ = V_ξ · U_ξ, on strided views of the
            // tile-major buffers.
            for xi in 0..16 {
                gemm(
                    view(v, xi * ci, tiles, ci, 16 * ci),
                    u(xi),
                    view_mut(m, xi * co, tiles, co, 16 * co),
                    0.0,
                );
            }
            // The output transform, one sample's row of outputs pairs per
            // task.
            let m = &*m;
            for (s, img) in os.chunks_mut(o.per_sample()).enumerate() {
                img.par_chunks_mut(2 * o.w * co)
                    .enumerate()
                    .for_each(|(ty, rows)| {
                        let first = (s * th + ty) * tw;
                        for tx in 0..tw {
                            let src = &m[(first + tx) * 16 * co..][..16 * co];
                            output_tile(src, co, rows, o.w, 2 * tx);
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

simd_fn! {
/// `V = Bᵀ·d·B` of one 4×4 patch (rows of `ci` channels, `None` in the
/// padding) into `dst`, `[16, ci]`.
fn input_tile(patch: &[Option<&[f32]>; 16], ci: usize, dst: &mut [f32]) {
    for c0 in (0..ci).step_by(L) {
        let n = L.min(ci - c0);
        let mut d = [[0f32; L]; 16];
        for (row, p) in d.iter_mut().zip(patch) {
            if let Some(p) = p {
                *row = load(&p[c0..], n);
            }
        }
        let mut t = [[0f32; L]; 16];
        for q in 0..4 {
            for l in 0..L {
                t[q][l] = d[q][l] - d[8 + q][l];
                t[4 + q][l] = d[4 + q][l] + d[8 + q][l];
                t[8 + q][l] = d[8 + q][l] - d[4 + q][l];
                t[12 + q][l] = d[4 + q][l] - d[12 + q][l];
            }
        }
        for r in 0..4 {
            let mut v = [[0f32; L]; 4];
            for l in 0..L {
                let t = |q: usize| t[4 * r + q][l];
                v[0][l] = t(0) - t(2);
                v[1][l] = t(1) + t(2);
                v[2][l] = t(2) - t(1);
                v[3][l] = t(1) - t(3);
            }
            for (q, v) in v.iter().enumerate() {
                store(&mut dst[(4 * r + q) * ci + c0..], v, n);
            }
        }
    }
}
}

simd_fn! {
/// `Y = Aᵀ·M·A` of one tile's products `src` (`[16, co]`) into the 2×2
/// outputs at column `x0` of `rows` (one or two rows of `w` pixels),
/// those inside the output only.
fn output_tile(src: &[f32], co: usize, rows: &mut [f32], w: usize, x0: usize) {
    let nrows = rows.len() / (w * co);
    for c0 in (0..co).step_by(L) {
        let n = L.min(co - c0);
        let mut m = [[0f32; L]; 16];
        for (k, row) in m.iter_mut().enumerate() {
            *row = load(&src[k * co + c0..], n);
        }
        let mut s = [[0f32; L]; 8];
        for q in 0..4 {
            for l in 0..L {
                s[q][l] = m[q][l] + m[4 + q][l] + m[8 + q][l];
                s[4 + q][l] = m[4 + q][l] - m[8 + q][l] - m[12 + q][l];
            }
        }
        for r in 0..nrows.min(2) {
            let mut y = [[0f32; L]; 2];
            for l in 0..L {
                let s = |q: usize| s[4 * r + q][l];
                y[0][l] = s(0) + s(1) + s(2);
                y[1][l] = s(1) - s(2) - s(3);
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

    /// The flip of the transformed domain: `p` swaps 0 and 3 on each axis.
    #[test]
    fn flipped_index_swaps_the_outer_rows_and_columns() {
        assert_eq!(flipped(0), 15);
        assert_eq!(flipped(1), 13);
        assert_eq!(flipped(5), 5);
        assert_eq!(flipped(12), 3);
        assert!((0..16).all(|i| flipped(flipped(i)) == i));
    }
}
