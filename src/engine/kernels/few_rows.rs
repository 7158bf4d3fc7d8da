//! Products of few rows (a dense layer at a small batch: `[8, 9216] ·
//! [9216, 4096]`), where the weights are the large operand and are read
//! once, where they lie: a general kernel packs them first (matrixmultiply
//! copied every block of AlexNet's 234 MB of dense weights before its
//! kernel read the copy, a third of an AlexNet step at batch 8, `perf`).
//!
//! Two layouts of the right-hand operand `b`: columns contiguous (`x · Wᵀ`,
//! a dense layer's forward on PyTorch's `[out, in]` weights) by dot
//! products, and rows contiguous (`G · W`, its input gradient) by adding
//! each of `b`'s rows, scaled, to the output rows. Each output value sums
//! its terms in an order fixed by `k` alone, so a product's bits do not
//! depend on how it is split among threads.

use ndarray::{ArrayView2, ArrayViewMut2};

use super::simd::{madd, simd_fn};

/// Lanes of a dot product's partial sums (an AVX-512 register).
const L: usize = 16;

/// `c = a · b` (`add`: `c += a · b`; otherwise `c` is not read) where
/// `a`'s and `c`'s rows are contiguous and `b`'s columns or rows are;
/// false (nothing done) for other layouts.
pub(super) fn product(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    c: &mut ArrayViewMut2<f32>,
    add: bool,
) -> bool {
    // `to_slice` checks each row's or column's contiguity (an axis of
    // length 1 is contiguous whatever its stride).
    if a.ncols() == 0 {
        return false;
    }
    let rows: Vec<&[f32]> = a.rows().into_iter().map_while(|r| r.to_slice()).collect();
    let out: Vec<&mut [f32]> = c
        .rows_mut()
        .into_iter()
        .map_while(|r| r.into_slice())
        .collect();
    if rows.len() != a.nrows() || out.len() != a.nrows() {
        return false;
    }
    let cols: Vec<&[f32]> = b
        .columns()
        .into_iter()
        .map_while(|r| r.to_slice())
        .collect();
    if cols.len() == b.ncols() {
        dots(&rows, &cols, out, add);
        return true;
    }
    let brows: Vec<&[f32]> = b.rows().into_iter().map_while(|r| r.to_slice()).collect();
    if brows.len() == b.nrows() {
        axpys(&rows, &brows, out, add);
        return true;
    }
    false
}

/// Stores `v` into `c` (`add`: adds it).
#[inline(always)]
fn store(c: &mut f32, v: f32, add: bool) {
    *c = if add { *c + v } else { v };
}

simd_fn! {
    /// `out[i][j] (+)= a[i] · b[j]`: blocks of 4 rows × 2 columns in
    /// registers, each dot product in [`L`] lanes, then the lanes summed
    /// pairwise and the last `k mod L` terms added in order.
    fn dots(a: &[&[f32]], b: &[&[f32]], out: Vec<&mut [f32]>, add: bool) {
        let mut out = out;
        let (m, n) = (a.len(), b.len());
        let mut j = 0;
        while j < n {
            let nc = (n - j).min(2);
            let mut i = 0;
            while i < m {
                let nr = rows_block(m - i, 8);
                macro_rules! block {
                    ($r:literal, $c:literal) => {{
                        let s = dot_block::<S, $r, $c>(
                            std::array::from_fn(|x| a[i + x]),
                            std::array::from_fn(|y| b[j + y]),
                        );
                        for (x, s) in s.iter().enumerate() {
                            for (y, &v) in s.iter().enumerate() {
                                store(&mut out[i + x][j + y], v, add);
                            }
                        }
                    }};
                }
                match (nr, nc) {
                    (8, 2) => block!(8, 2),
                    (4, 2) => block!(4, 2),
                    (2, 2) => block!(2, 2),
                    (1, 2) => block!(1, 2),
                    (8, _) => block!(8, 1),
                    (4, _) => block!(4, 1),
                    (2, _) => block!(2, 1),
                    _ => block!(1, 1),
                }
                i += nr;
            }
            j += nc;
        }
    }
}

/// The rows of the next register block: the largest power of two up to
/// `max` that `left` rows fill.
fn rows_block(left: usize, max: usize) -> usize {
    let mut r = max;
    while r > left {
        r /= 2;
    }
    r
}

/// `R × C` dot products of `a`'s rows with `b`'s (all of one length).
/// The lanes are whole `[f32; L]` values (`as_chunks`): indexed slices
/// kept the sums on the stack, one scalar FMA at a time.
#[inline(always)]
fn dot_block<S: pulp::Simd, const R: usize, const C: usize>(
    a: [&[f32]; R],
    b: [&[f32]; C],
) -> [[f32; C]; R] {
    let k = b[0].len();
    let n = k / L;
    let ac: [&[[f32; L]]; R] = std::array::from_fn(|x| &a[x].as_chunks::<L>().0[..n]);
    let bc: [&[[f32; L]]; C] = std::array::from_fn(|y| &b[y].as_chunks::<L>().0[..n]);
    let mut acc = [[[0f32; L]; C]; R];
    for p in 0..n {
        let bv: [[f32; L]; C] = std::array::from_fn(|y| bc[y][p]);
        for x in 0..R {
            let av = ac[x][p];
            for y in 0..C {
                for l in 0..L {
                    acc[x][y][l] = madd::<S>(av[l], bv[y][l], acc[x][y][l]);
                }
            }
        }
    }
    let mut sums = [[0f32; C]; R];
    for x in 0..R {
        for y in 0..C {
            let mut v = acc[x][y];
            let mut w = L;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    v[l] += v[l + w];
                }
            }
            let mut s = v[0];
            for q in n * L..k {
                s = madd::<S>(a[x][q], b[y][q], s);
            }
            sums[x][y] = s;
        }
    }
    sums
}

/// Output columns a block of [`axpys`] holds in registers.
const AXPY_COLS: usize = 2 * L;

/// Rows of `b` that [`axpys`] takes at a time: every block of output
/// columns sums over them, then over the next ones (each output value's
/// terms still in the order of `p`); so each row of `b` is read as one
/// contiguous run, where a block of columns over all of `b` read 128
/// bytes a row, which the prefetchers did not see coming (a dense
/// layer's input gradient ran at about half its forward's speed).
const AXPY_ROWS: usize = 16;

simd_fn! {
    /// `out[i] (+)= Σ_p a[i][p] · b[p]`: blocks of up to 4 rows ×
    /// [`AXPY_COLS`] columns summed in registers over [`AXPY_ROWS`] rows of
    /// `b` at a time (the partial sums kept in `out` between them), the
    /// last columns one at a time.
    fn axpys(a: &[&[f32]], b: &[&[f32]], out: Vec<&mut [f32]>, add: bool) {
        let mut out = out;
        let m = a.len();
        let n = out.first().map_or(0, |r| r.len());
        let mut p0 = 0;
        while p0 < b.len() {
            let bs = &b[p0..(p0 + AXPY_ROWS).min(b.len())];
            let p1 = p0 + bs.len();
            // Each block of rows sums from 0 in registers, then adds to the
            // output (or the output where `add`) at the first rows, then
            // from the output's partial sums: each value's rounding grows
            // with AXPY_ROWS + k / AXPY_ROWS terms, not k (a sum along all
            // of `b`'s rows, 4096 of AlexNet's, in one f32).
            let from_out = add || p0 > 0;
            let mut j = 0;
            while j + AXPY_COLS <= n {
                let mut i = 0;
                while i < m {
                    let nr = rows_block(m - i, 4);
                    macro_rules! block {
                        ($r:literal) => {{
                            let acc = axpy_block::<S, $r>(
                                [[[0f32; L]; AXPY_COLS / L]; $r],
                                std::array::from_fn(|x| &a[i + x][p0..p1]),
                                bs,
                                j,
                            );
                            for (x, acc) in acc.iter().enumerate() {
                                for (y, acc) in acc.iter().enumerate() {
                                    let o = &mut out[i + x][j + y * L..][..L];
                                    for (o, &v) in o.iter_mut().zip(acc) {
                                        store(o, v, from_out);
                                    }
                                }
                            }
                        }};
                    }
                    match nr {
                        4 => block!(4),
                        2 => block!(2),
                        _ => block!(1),
                    }
                    i += nr;
                }
                j += AXPY_COLS;
            }
            for j in j..n {
                for (ai, o) in a.iter().zip(out.iter_mut()) {
                    let mut s = 0.0;
                    for (&av, bp) in ai[p0..p1].iter().zip(bs) {
                        s = madd::<S>(av, bp[j], s);
                    }
                    store(&mut o[j], s, from_out);
                }
            }
            p0 = p1;
        }
    }
}

/// `acc + Σ_p a[x][p] · b[p][j..j + AXPY_COLS]` for `R` rows, in whole
/// `[f32; L]` lanes (as [`dot_block`]).
#[inline(always)]
fn axpy_block<S: pulp::Simd, const R: usize>(
    acc: [[[f32; L]; AXPY_COLS / L]; R],
    a: [&[f32]; R],
    b: &[&[f32]],
    j: usize,
) -> [[[f32; L]; AXPY_COLS / L]; R] {
    const V: usize = AXPY_COLS / L;
    let mut acc = acc;
    for (p, bp) in b.iter().enumerate() {
        let ch = bp[j..j + AXPY_COLS].as_chunks::<L>().0;
        let bv: [[f32; L]; V] = std::array::from_fn(|y| ch[y]);
        for x in 0..R {
            let av = a[x][p];
            for y in 0..V {
                for l in 0..L {
                    acc[x][y][l] = madd::<S>(av, bv[y][l], acc[x][y][l]);
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};

    use super::*;

    fn filled(r: usize, c: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            let h = (i as u32 * 7919 + j as u32 * 104_729 + seed).wrapping_mul(2_654_435_761);
            (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    /// Both layouts, every row and column tail, `k` below, at and above a
    /// multiple of the lanes, on row blocks of larger arrays, `add` off
    /// over NaN and on: against the product in f64.
    #[test]
    fn matches_the_product_in_f64_on_both_layouts() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 15, 5),
            (4, 16, 2),
            (7, 33, 65),
            (8, 100, 37),
            (31, 70, 97),
        ] {
            let a_big = filled(m + 2, k + 3, 1);
            let a = a_big.slice(s![1..m + 1, 2..k + 2]);
            let w = filled(n, k, 2); // [out, in]: b = wᵀ, columns contiguous
            let b_rows = filled(k, n, 3); // rows contiguous
            for (b, name) in [(w.t(), "columns"), (b_rows.view(), "rows")] {
                let want = Array2::from_shape_fn((m, n), |(i, j)| {
                    (0..k)
                        .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                        .sum::<f64>()
                });
                let tol = 1e-6 * (k as f64).sqrt() * 4.0;
                let mut c = Array2::from_elem((m, n + 3), f32::NAN);
                assert!(
                    product(a, b, &mut c.slice_mut(s![.., 1..n + 1]), false),
                    "{name} {m}×{k}·{k}×{n} declined"
                );
                for ((i, j), &w) in want.indexed_iter() {
                    let got = c[[i, j + 1]] as f64;
                    assert!(
                        (got - w).abs() <= tol,
                        "{name} {m}×{k}·{k}×{n} at {i},{j}: {got} vs {w}"
                    );
                }
                assert!(c
                    .column(0)
                    .iter()
                    .chain(c.column(n + 1))
                    .all(|v| v.is_nan()));
                let start = filled(m, n, 4);
                let mut c = start.clone();
                assert!(product(a, b, &mut c.view_mut(), true));
                for ((i, j), &w) in want.indexed_iter() {
                    let got = (c[[i, j]] - start[[i, j]]) as f64;
                    assert!(
                        (got - w).abs() <= tol * 2.0,
                        "{name} add at {i},{j}: {got} vs {w}"
                    );
                }
            }
        }
    }

    /// `G · W` over many rows of `W` (AlexNet's 4096) rounds as a sum of
    /// blocks: 4096 terms of 0.1 within 1e-5 of 409.6 in every column
    /// (summed along all the rows in one f32, 3.9e-5 off).
    #[test]
    fn a_long_sum_rounds_in_blocks() {
        let (m, k, n) = (2, 4096, 2 * L + 3);
        let a = Array2::from_elem((m, k), 1f32);
        let b = Array2::from_elem((k, n), 0.1f32);
        let mut c = Array2::zeros((m, n));
        assert!(product(a.view(), b.view(), &mut c.view_mut(), false));
        let want = f64::from(0.1f32) * k as f64;
        for &v in &c {
            let e = (f64::from(v) - want).abs() / want;
            assert!(e < 1e-5, "{v} against {want}: {e:.1e}");
        }
    }

    /// A value's bits do not depend on the block of columns it is
    /// computed in (a product split among threads by columns).
    #[test]
    fn a_column_block_computes_the_same_bits() {
        let (m, k, n) = (8, 77, 70);
        let a = filled(m, k, 5);
        let w = filled(n, k, 6);
        let b_rows = filled(k, n, 7);
        for b in [w.t(), b_rows.view()] {
            let mut whole = Array2::zeros((m, n));
            assert!(product(a.view(), b, &mut whole.view_mut(), false));
            for j0 in [1, 3, 32, 33] {
                let mut part = Array2::zeros((m, n - j0));
                assert!(product(
                    a.view(),
                    b.slice(s![.., j0..]),
                    &mut part.view_mut(),
                    false
                ));
                assert_eq!(part, whole.slice(s![.., j0..]));
            }
        }
    }

    /// A NaN in `a` or `b` reaches the values that read it, and only
    /// those; a layout neither kernel takes is declined.
    #[test]
    fn nan_spreads_and_other_layouts_are_declined() {
        let mut a = filled(5, 40, 8);
        a[[2, 39]] = f32::NAN;
        let (w, b_rows) = (filled(9, 40, 9), filled(40, 9, 9));
        for b in [w.t(), b_rows.view()] {
            let mut c = Array2::zeros((5, 9));
            assert!(product(a.view(), b, &mut c.view_mut(), false));
            assert!(c.row(2).iter().all(|v| v.is_nan()));
            assert!(c.row(1).iter().all(|v| v.is_finite()));
        }
        let b = filled(80, 18, 10);
        let strided = b.slice(s![..;2, ..;2]);
        let mut c = Array2::zeros((5, 9));
        assert!(!product(a.view(), strided, &mut c.view_mut(), false));
    }
}
