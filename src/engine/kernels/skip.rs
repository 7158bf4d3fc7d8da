//! BigGAN-deep's residual join `h + up(x[:, :c])` and its gradient of
//! `x` (each s × s window of the output's gradient summed, zero in the
//! channels the join drops) on NCHW f32 values, a plane per task: the CPU
//! engine's copies of the CUDA kernels `skip_add` and `skip_add_dx`
//! (`src/engine/cuda/kernels.cu`), summing in their order. With `xc = c`
//! the second is also the ×2 upsampling's backward. On candle's ops the
//! join was a crop, an upsampling and an add, and its backward a strided
//! sum and a concat: each a pass over memory of its own (the ten joins' two
//! directions were a third of a BigGAN-deep-128 step's generic ops on the
//! CPU, `GEVALDI_PROFILE`).

use rayon::prelude::*;

/// The sizes of one join: `h` (and the output, and its gradient) `[b, c,
/// hh, hw]`, `x` `[b, xc ≥ c, hh / s, hw / s]` (`s` 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Join {
    pub(crate) b: usize,
    pub(crate) c: usize,
    pub(crate) hh: usize,
    pub(crate) hw: usize,
    pub(crate) xc: usize,
    pub(crate) s: usize,
}

impl Join {
    fn x_plane(&self) -> usize {
        (self.hh / self.s) * (self.hw / self.s)
    }
}

/// `h + up(x[:, :c])`.
pub(crate) fn skip_add(h: &[f32], x: &[f32], j: Join) -> Vec<f32> {
    let (plane, xw) = (j.hh * j.hw, j.hw / j.s);
    let mut out = vec![0f32; j.b * j.c * plane];
    out.par_chunks_mut(plane.max(1))
        .zip(h.par_chunks(plane.max(1)))
        .enumerate()
        .for_each(|(p, (out, h))| {
            let (bb, ch) = (p / j.c, p % j.c);
            let xp = &x[(bb * j.xc + ch) * j.x_plane()..][..j.x_plane()];
            for (r, (out, h)) in out.chunks_mut(j.hw).zip(h.chunks(j.hw)).enumerate() {
                let xr = &xp[(r / j.s) * xw..][..xw];
                if j.s == 1 {
                    for ((o, h), x) in out.iter_mut().zip(h).zip(xr) {
                        *o = h + x;
                    }
                } else {
                    for ((o, h), x) in out.chunks_mut(2).zip(h.chunks(2)).zip(xr) {
                        o[0] = h[0] + x;
                        o[1] = h[1] + x;
                    }
                }
            }
        });
    out
}

/// `x` `[b, c, hh / 2, hw / 2]` upsampled ×2 (nearest) to `[b, c, hh,
/// hw]` (`j.s` 2, `j.xc` = `j.c`): [`skip_add`] with no `h`.
pub(crate) fn upsample2(x: &[f32], j: Join) -> Vec<f32> {
    let (plane, xw) = (j.hh * j.hw, j.hw / 2);
    let mut out = vec![0f32; j.b * j.c * plane];
    out.par_chunks_mut(plane.max(1))
        .zip(x.par_chunks(j.x_plane().max(1)))
        .for_each(|(out, xp)| {
            for (r, out) in out.chunks_mut(j.hw).enumerate() {
                let xr = &xp[(r / 2) * xw..][..xw];
                for (o, x) in out.chunks_mut(2).zip(xr) {
                    o[0] = *x;
                    o[1] = *x;
                }
            }
        });
    out
}

/// The gradient of [`skip_add`]'s `x` from its output's, `g`: each s × s
/// window summed (row by row, from 0, as the CUDA kernel does), zero in
/// the channels from `c` on.
pub(crate) fn skip_add_dx(g: &[f32], j: Join) -> Vec<f32> {
    let (plane, xw) = (j.hh * j.hw, j.hw / j.s);
    let mut dx = vec![0f32; j.b * j.xc * j.x_plane()];
    dx.par_chunks_mut(j.x_plane().max(1))
        .enumerate()
        .for_each(|(p, dx)| {
            let (bb, ch) = (p / j.xc, p % j.xc);
            if ch >= j.c {
                return;
            }
            let gp = &g[(bb * j.c + ch) * plane..][..plane];
            for (r, dx) in dx.chunks_mut(xw).enumerate() {
                let rows = &gp[r * j.s * j.hw..][..j.s * j.hw];
                if j.s == 1 {
                    dx.copy_from_slice(rows);
                    continue;
                }
                let (g0, g1) = rows.split_at(j.hw);
                for (k, d) in dx.iter_mut().enumerate() {
                    *d = 0.0 + g0[2 * k] + g0[2 * k + 1] + g1[2 * k] + g1[2 * k + 1];
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// Both against loops over every index (as the CUDA kernels'), with
    /// and without the upsampling and the dropped channels, odd sizes.
    #[test]
    fn match_the_cuda_kernels_loops() {
        for (i, &(b, c, xh, xw, xc, s)) in [
            (2, 3, 2, 3, 5, 2),
            (1, 4, 3, 1, 4, 2),
            (2, 2, 3, 5, 3, 1),
            (3, 1, 1, 1, 1, 2),
            (2, 3, 2, 3, 3, 2),
        ]
        .iter()
        .enumerate()
        {
            let (hh, hw) = (xh * s, xw * s);
            let j = Join {
                b,
                c,
                hh,
                hw,
                xc,
                s,
            };
            let h = filled(b * c * hh * hw, i as u32);
            let x = filled(b * xc * xh * xw, 10 + i as u32);
            let out = skip_add(&h, &x, j);
            for (n, o) in out.iter().enumerate() {
                let (col, row, ch, bb) = (
                    n % hw,
                    (n / hw) % hh,
                    (n / (hw * hh)) % c,
                    n / (hw * hh * c),
                );
                let want = h[n] + x[((bb * xc + ch) * xh + row / s) * xw + col / s];
                assert_eq!(*o, want, "case {i}: out[{n}]");
            }
            if s == 2 && xc == c {
                let zeros = vec![0f32; h.len()];
                let want = skip_add(&zeros, &x, j);
                assert_eq!(upsample2(&x, j), want, "case {i}: upsample2");
            }
            let g = filled(b * c * hh * hw, 20 + i as u32);
            let dx = skip_add_dx(&g, j);
            assert_eq!(dx.len(), b * xc * xh * xw);
            for (n, d) in dx.iter().enumerate() {
                let (col, row, ch, bb) = (
                    n % xw,
                    (n / xw) % xh,
                    (n / (xw * xh)) % xc,
                    n / (xw * xh * xc),
                );
                let mut acc = 0f32;
                if ch < c {
                    for di in 0..s {
                        for dj in 0..s {
                            acc += g[((bb * c + ch) * hh + row * s + di) * hw + col * s + dj];
                        }
                    }
                }
                assert_eq!(d.to_bits(), acc.to_bits(), "case {i}: dx[{n}]");
            }
        }
    }
}
