//! The engine's matrix product: split into pieces on rayon's threads, each
//! piece multiplied by the `gemm` crate's kernels (the crate candle's own
//! CPU matmul uses), or for a few rows, where the `gemm` crate was slower
//! (a dense layer at batch 8), by [`few_rows`]' (matrixmultiply's for
//! layouts those do not take).
//!
//! The `unsafe` blocks call `gemm::gemm`, which takes raw pointers and
//! strides (its arguments come from ndarray views, whose shapes and
//! strides ndarray has checked against their slices), and mark a new
//! output initialised once the product has written all of it.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::elementwise::{act_backward_chunk, bias_act_rows, bias_gelu_slope_fresh_rows};
use super::{few_rows, Activation};

/// Pieces with fewer rows than this go to [`few_rows`] (or matrixmultiply).
const FEW_ROWS: usize = 32;

/// `c = a · b` (`beta` 0: `c` is not read, a NaN in it does not spread) or
/// `c += a · b` (`beta` 1), split into halves on rayon's threads while
/// each half still has enough work: at least [`MIN_PIECE`]
/// multiply-adds and a [`MAX_PIECES`]th of the whole (smaller pieces
/// pack the shared operand again for little work each). Split the same
/// way on one thread, so that the bits do not depend on the thread count.
pub(crate) fn gemm(a: ArrayView2<f32>, b: ArrayView2<f32>, c: ArrayViewMut2<f32>, beta: f32) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert_eq!(b.dim().0, k, "gemm: inner sizes differ");
    assert_eq!(c.dim(), (m, n), "gemm: output size");
    split(a, b, c, [0, 0], min_piece(m, n, k), &|a, b, c, _| {
        piece(a, b, c, beta)
    });
}

/// `a · b` in a new row-major buffer that the product writes once: no
/// zero fill before it (a pass over memory as large as the output, 3% of
/// a ConvNeXt step in `memset`).
pub(crate) fn gemm_new(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Vec<f32> {
    gemm_new_then(a, b, &|_, _| {})
}

/// What runs on each piece of a new product right after the piece's
/// product (while it is in cache): the piece's first row and column, and
/// its block of the output (row-major).
type Then<'t> = dyn Fn([usize; 2], ArrayViewMut2<f32>) + Sync + 't;

/// [`gemm_new`] with `then` run on each piece of the output.
fn gemm_new_then(a: ArrayView2<f32>, b: ArrayView2<f32>, then: &Then) -> Vec<f32> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert_eq!(b.dim().0, k, "gemm: inner sizes differ");
    let mut out = Vec::with_capacity(m * n);
    let c = ArrayViewMut2::from_shape((m, n), &mut out.spare_capacity_mut()[..m * n])
        .expect("a row-major view of the spare capacity");
    split(a, b, c, [0, 0], min_piece(m, n, k), &|a, b, c, at| {
        then(at, piece_unwritten(a, b, c));
    });
    // SAFETY: `split` hands every element of the m × n view to one
    // `piece_unwritten`, which writes each element of its piece (see
    // there); the first m · n elements of `out` are therefore initialised.
    unsafe { out.set_len(m * n) };
    out
}

/// `act(a · b + bias)` (a bias per column) in a new row-major buffer, and
/// in a second the activation's slope where it [keeps
/// one](super::keeps_slope) (GELU; else the second is empty). Each piece
/// of the product gets its bias and activation right after its product,
/// while it is in cache: as separate passes over a large output (a
/// ConvNeXt block's first linear layer, 38 MiB at batch 8), the product's
/// write, the pass's read and write and the slope buffer's zero fill each
/// went through memory.
pub(crate) fn gemm_new_bias_act(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    bias: &[f32],
    act: Option<Activation>,
) -> (Vec<f32>, Vec<f32>) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert_eq!(b.dim().0, k, "gemm: inner sizes differ");
    assert_eq!(bias.len(), n, "gemm: a bias per column");
    if m == 0 || n == 0 {
        // Nothing to write (and rows of no bias would not divide into
        // pixels).
        return (Vec::new(), Vec::new());
    }
    // GELU is the one slope-keeping activation the compiler fuses here
    // (`fuses_into_bias_pass`).
    assert!(
        act.is_none_or(super::fuses_into_bias_pass),
        "gemm_new_bias_act: {act:?} is not fused into a bias pass"
    );
    if !act.is_some_and(super::keeps_slope) {
        let then = |[_, col]: [usize; 2], mut c: ArrayViewMut2<f32>| {
            let bias = &bias[col..][..c.ncols()];
            for mut r in c.rows_mut() {
                bias_act_rows(r.as_slice_mut().expect("a row-major block"), bias, act);
            }
        };
        return (gemm_new_then(a, b, &then), Vec::new());
    }
    let mut out = Vec::with_capacity(m * n);
    let mut slope = Vec::with_capacity(m * n);
    let c = ArrayViewMut2::from_shape((m, n), &mut out.spare_capacity_mut()[..m * n])
        .expect("a row-major view of the spare capacity");
    let s = ArrayViewMut2::from_shape((m, n), &mut slope.spare_capacity_mut()[..m * n])
        .expect("a row-major view of the spare capacity");
    split(
        a,
        b,
        (c, s),
        [0, 0],
        min_piece(m, n, k),
        &|a, b, (c, mut s), [_, col]| {
            let mut c = piece_unwritten(a, b, c);
            let bias = &bias[col..][..c.ncols()];
            for (mut r, mut s) in c.rows_mut().into_iter().zip(s.rows_mut()) {
                let r = r.as_slice_mut().expect("a row-major block");
                let s = s.as_slice_mut().expect("a row-major block");
                bias_gelu_slope_fresh_rows(r, s, bias);
            }
        },
    );
    // SAFETY: as in `gemm_new_then` for `out`; each piece's block of
    // `slope` (the same rows and columns as its block of `out`, split with
    // it) is written row by row by `bias_gelu_slope_fresh_rows`, which
    // writes every element of the slice it is given (one per value of the
    // row, the two of equal length).
    unsafe {
        out.set_len(m * n);
        slope.set_len(m * n);
    }
    (out, slope)
}

fn min_piece(m: usize, n: usize, k: usize) -> usize {
    MIN_PIECE.max(m * n * k / MAX_PIECES)
}

/// Multiply-adds in a piece at least.
const MIN_PIECE: usize = 1 << 22;

/// Pieces of one product at most (about).
const MAX_PIECES: usize = 16;

/// What runs one piece of a product on one thread: its operands, its
/// blocks of the outputs, and the block's first row and column.
type Piece<'p, O> = dyn Fn(ArrayView2<f32>, ArrayView2<f32>, O, [usize; 2]) + Sync + 'p;

/// The m × n output blocks a product writes, split with its rows or
/// columns: the product's own, and a side buffer's where an epilogue
/// writes one ([`gemm_new_bias_act`]'s slope).
trait Blocks: Send + Sized {
    fn split_at(self, axis: Axis, mid: usize) -> (Self, Self);
}

impl<T: Send> Blocks for ArrayViewMut2<'_, T> {
    fn split_at(self, axis: Axis, mid: usize) -> (Self, Self) {
        ArrayViewMut2::split_at(self, axis, mid)
    }
}

impl<A: Blocks, B: Blocks> Blocks for (A, B) {
    fn split_at(self, axis: Axis, mid: usize) -> (Self, Self) {
        let ((a1, a2), (b1, b2)) = (self.0.split_at(axis, mid), self.1.split_at(axis, mid));
        ((a1, b1), (a2, b2))
    }
}

fn split<O: Blocks>(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    c: O,
    at: [usize; 2],
    min: usize,
    piece: &Piece<'_, O>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let halves = m * n * k >= 2 * min;
    if !halves || (m < 16 && n < 32) {
        piece(a, b, c, at);
        return;
    }
    let [row, col] = at;
    if m >= n || n < 32 {
        let mid = m / 2;
        let (a1, a2) = a.split_at(Axis(0), mid);
        let (c1, c2) = c.split_at(Axis(0), mid);
        rayon::join(
            || split(a1, b, c1, at, min, piece),
            || split(a2, b, c2, [row + mid, col], min, piece),
        );
    } else {
        // Keep column blocks a multiple of 16 wide (the micro-kernel's).
        let mid = (n / 2).next_multiple_of(16).min(n);
        let (b1, b2) = b.split_at(Axis(1), mid);
        let (c1, c2) = c.split_at(Axis(1), mid);
        rayon::join(
            || split(a, b1, c1, at, min, piece),
            || split(a, b2, c2, [row, col + mid], min, piece),
        );
    }
}

/// `(a · b)` taken back through an activation: each value `g` of the
/// product becomes the gradient at the activation's input,
/// `act_grad(act, g, kept)` with `kept` the activation's record at the
/// same place (its output, or its slope where it [keeps
/// one](super::keeps_slope); m × n, row-major), in a new row-major buffer.
/// Applied to each piece right after its product, while it is in cache:
/// a linear layer's input gradient taken through the GELU before it
/// without another pass over memory.
pub(crate) fn gemm_new_act_backward(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    act: Activation,
    kept: &[f32],
) -> Vec<f32> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert_eq!(b.dim().0, k, "gemm: inner sizes differ");
    assert_eq!(kept.len(), m * n, "gemm: a record per value");
    let then = |[row, col]: [usize; 2], mut c: ArrayViewMut2<f32>| {
        for (i, mut r) in c.rows_mut().into_iter().enumerate() {
            let r = r.as_slice_mut().expect("a row-major block");
            act_backward_chunk(act, r, &kept[(row + i) * n + col..][..r.len()]);
        }
    };
    gemm_new_then(a, b, &then)
}

/// One piece on this thread.
fn piece(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>, beta: f32) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    if m < FEW_ROWS || m == 0 || n == 0 {
        if m == 0 || n == 0 || !few_rows::product(a, b, &mut c, beta != 0.0) {
            general_mat_mul(1.0, &a, &b, beta, &mut c);
        }
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            c.fill(0.0);
        }
        return;
    }
    let strides = strides(c.strides());
    // SAFETY: `c` is a valid view for its shape and strides (ndarray
    // checked them when it was made) and borrowed mutably here.
    unsafe { gemm_raw(a, b, c.as_mut_ptr(), strides, beta) }
}

/// One piece of a new output, whose elements are not written yet: each
/// is written once (`beta` is 0); the piece, written.
fn piece_unwritten<'c>(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut c: ArrayViewMut2<'c, MaybeUninit<f32>>,
) -> ArrayViewMut2<'c, f32> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    if m < FEW_ROWS || m == 0 || n == 0 || k == 0 {
        c.fill(MaybeUninit::new(0.0));
        // SAFETY: every element was written just above.
        let mut c = unsafe { c.assume_init() };
        piece(a, b, c.view_mut(), 0.0);
        return c;
    }
    let strides = strides(c.strides());
    // SAFETY: as in `piece`; `gemm_raw` with `beta` 0 reads no element of
    // the output and writes every one (m, n, k > 0), so the view's
    // elements are all initialised after it.
    unsafe {
        gemm_raw(a, b, c.as_mut_ptr().cast::<f32>(), strides, 0.0);
        c.assume_init()
    }
}

/// `gemm::gemm` on this thread: `dst = a · b` (`beta` 0: `dst` is not
/// read, every element of it written) or `dst += a · b` (`beta` 1).
///
/// # Safety
/// `dst` with strides `[rs, cs]` must address an m × n block (m, n from
/// `a` and `b`, all three sizes > 0) that this call may write and that
/// overlaps neither `a` nor `b`; where `beta` is not 0 its elements must be
/// initialised.
unsafe fn gemm_raw(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    dst: *mut f32,
    [c_rs, c_cs]: [isize; 2],
    beta: f32,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let [a_rs, a_cs] = strides(a.strides());
    let [b_rs, b_cs] = strides(b.strides());
    // SAFETY: the caller's promises for `dst`; `a` and `b` are valid views
    // for their shapes and strides, which `gemm::gemm` reads only within.
    // f32 is one of the types it takes; `Parallelism::None` runs it on
    // this thread; with `read_dst` false it writes `dst` without reading
    // it (tested: a NaN there does not spread).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            c_cs,
            c_rs,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn strides(s: &[isize]) -> [isize; 2] {
    [s[0], s[1]]
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};

    use super::*;

    fn naive(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| {
            (0..k)
                .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                .sum::<f64>() as f32
        })
    }

    fn filled(r: usize, c: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            let h = (i as u32 * 7919 + j as u32 * 104_729 + seed).wrapping_mul(2_654_435_761);
            (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    /// A product's bits do not depend on rayon's thread count: one thread
    /// multiplied whole what two or more split into halves, and the
    /// halves' kernels (matrixmultiply below 32 rows, gemm's blocking)
    /// round otherwise, so a search run with `RAYON_NUM_THREADS=1` ended
    /// elsewhere (the MNIST pair's lift 31.2 against 31.1; found by the
    /// audit).
    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        for (m, n, k) in [
            (48, 40, 8192),
            (512, 256, 128),
            (40, 2048, 256),
            (1024, 64, 256),
        ] {
            let (a, b) = (filled(m, k, 1), filled(k, n, 2));
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool")
                    .install(|| gemm_new(a.view(), b.view()))
            };
            let one = on(1);
            for threads in [2, 3] {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&one) == bits(&on(threads)),
                    "{m}×{k}·{k}×{n}: 1 thread and {threads} differ"
                );
            }
        }
    }

    fn assert_close(got: &Array2<f32>, want: &Array2<f32>, k: usize) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-5 * (k as f32).sqrt() * 4.0,
                "{g} vs {w}"
            );
        }
    }

    /// Both kernels (few rows and many), odd sizes, transposed and strided
    /// views (on an AVX-512 CPU the gemm crate's `x86-v4` kernels), `beta`
    /// 0 over NaN and `beta` 1, and a new output, against a naive product.
    #[test]
    fn matches_a_naive_product_on_views() {
        for &(m, k, n) in &[
            (1, 3, 5),
            (7, 1, 9),
            (31, 17, 33),
            (33, 64, 15),
            (200, 75, 130),
            (97, 300, 300),
            // Split into pieces on threads; the AVX-512 kernels' edges.
            (301, 257, 515),
        ] {
            let a_big = filled(m + 3, 2 * k + 1, 1);
            let a = a_big.slice(s![1..m + 1, ..;2]);
            let a = a.slice(s![.., ..k]);
            let bt = filled(n, k, 2);
            let b = bt.t();
            let want = naive(a, b);
            let mut c = Array2::from_elem((m, n), f32::NAN);
            gemm(a, b, c.view_mut(), 0.0);
            assert_close(&c, &want, k);
            let fresh = Array2::from_shape_vec((m, n), gemm_new(a, b)).unwrap();
            assert_close(&fresh, &want, k);
            let mut c = filled(m, n, 3);
            let mut want1 = c.clone();
            want1 += &want;
            gemm(a, b, c.view_mut(), 1.0);
            assert_close(&c, &want1, k);
            // A column block of the output (a strided destination).
            let mut wide = Array2::from_elem((m, n + 4), f32::NAN);
            gemm(a, b, wide.slice_mut(s![.., 2..n + 2]), 0.0);
            assert_close(&wide.slice(s![.., 2..n + 2]).to_owned(), &want, k);
            assert!(
                wide.column(0).iter().all(|v| v.is_nan()),
                "wrote outside its block"
            );
        }
    }

    /// The product with a bias per column and an activation applied to
    /// each piece: as a naive product, then the bias and activation (and
    /// GELU's slope) value by value. Shapes that split by rows, by
    /// columns (the bias then starts mid-row) and not at all (few rows).
    #[test]
    fn a_new_output_with_its_bias_and_activation() {
        use super::super::{act, gelu_and_slope};
        for &(m, k, n) in &[(7, 5, 9), (40, 33, 20), (301, 257, 515), (64, 700, 2000)] {
            let a = filled(m, k, 6);
            let b = filled(k, n, 7);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 1.0).collect();
            let want = naive(a.view(), b.view()) + ndarray::aview1(&bias);
            for act_ in [None, Some(Activation::Relu), Some(Activation::GeluErf)] {
                let (y, slope) = gemm_new_bias_act(a.view(), b.view(), &bias, act_);
                assert_eq!(y.len(), m * n);
                let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                for (i, (&got, &pre)) in y.iter().zip(&want).enumerate() {
                    let (y_want, s_want) = match act_ {
                        None => (pre, None),
                        Some(Activation::GeluErf) => {
                            let (y, s) = gelu_and_slope::<pulp::Scalar>(pre);
                            (y, Some(s))
                        }
                        Some(a) => (act::<pulp::Scalar>(a, pre), None),
                    };
                    assert!(
                        (got - y_want).abs() <= tol,
                        "{act_:?} at {i}: {got} vs {y_want}"
                    );
                    match s_want {
                        Some(s) => assert!((slope[i] - s).abs() <= tol, "slope at {i}"),
                        None => assert!(slope.is_empty()),
                    }
                }
            }
        }
    }

    /// The product taken back through an activation, piece by piece: as
    /// a naive product, then each value through `act_grad` with its
    /// record. Shapes split by rows, by columns, and not at all.
    #[test]
    fn a_new_output_through_an_activations_backward() {
        use super::super::act_grad;
        for &(m, k, n) in &[(7, 5, 9), (301, 257, 515), (64, 700, 2000)] {
            let a = filled(m, k, 8);
            let b = filled(k, n, 9);
            let kept = filled(m, n, 10);
            let want = naive(a.view(), b.view());
            for act in [Activation::Relu, Activation::GeluErf, Activation::Tanh] {
                let got = gemm_new_act_backward(a.view(), b.view(), act, kept.as_slice().unwrap());
                let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                for (i, ((&g, &w), &kv)) in got.iter().zip(&want).zip(&kept).enumerate() {
                    let w = act_grad(act, w, kv);
                    assert!((g - w).abs() <= tol, "{act:?} at {i}: {g} vs {w}");
                }
            }
        }
    }

    /// A new output with nothing to sum (k = 0) is zeros; with no rows or
    /// columns, empty (with a bias and an activation too).
    #[test]
    fn a_new_output_of_an_empty_product() {
        let a = Array2::<f32>::zeros((40, 0));
        let b = Array2::<f32>::zeros((0, 50));
        assert_eq!(gemm_new(a.view(), b.view()), vec![0.0; 40 * 50]);
        let a = Array2::<f32>::zeros((0, 7));
        let b = filled(7, 5, 1);
        assert!(gemm_new(a.view(), b.view()).is_empty());
        for act in [None, Some(Activation::GeluErf)] {
            let (y, s) = gemm_new_bias_act(a.view(), b.view(), &[0.0; 5], act);
            assert!(y.is_empty() && s.is_empty());
            let b = Array2::<f32>::zeros((7, 0));
            let (y, s) = gemm_new_bias_act(filled(3, 7, 2).view(), b.view(), &[], act);
            assert!(y.is_empty() && s.is_empty());
        }
    }

    /// A NaN in an input reaches the output (no kernel drops it).
    #[test]
    fn a_nan_input_spreads() {
        let mut a = filled(64, 40, 4);
        a[[5, 7]] = f32::NAN;
        let b = filled(40, 48, 5);
        let mut c = Array2::zeros((64, 48));
        gemm(a.view(), b.view(), c.view_mut(), 0.0);
        assert!(c.row(5).iter().all(|v| v.is_nan()));
        assert!(c.row(4).iter().all(|v| v.is_finite()));
    }
}
