//! The device-generic path's products, in layouts candle's CUDA matmul
//! takes.
//!
//! candle 0.11's CUDA matmul (cuBLAS, `gemm_config` in its
//! `cuda_backend`) takes an operand `[…, r, c]` only row-major (strides
//! `c, 1`) or column-major (`1, r`) in its last two dims, and its batch
//! dims as one stride; anything else fails ("matmul is only supported for
//! contiguous tensors"). Its CPU matmul takes any strides. So a view that
//! the CPU multiplied failed on a GPU alone: a linear layer's input
//! gradient where the gradient is narrowed out of a concat's (a net that
//! joins two linear layers' outputs along their features, then reads them
//! on) failed every backward on CUDA, `auto` and `generic` alike, and
//! passed every test on the CPU. [`matmul`] copies an operand candle's
//! CUDA matmul would refuse (on every device, so that the CPU runs what
//! a GPU runs) and leaves every other as it is (a weight's transpose is
//! column-major: cuBLAS reads it as it lies).

use candle_core::{Layout, Tensor};

/// Whether candle's CUDA matmul takes an operand laid out as `l` (rank 2
/// or more), as its `gemm_config` decides.
pub(crate) fn cuda_takes(l: &Layout) -> bool {
    let (dims, strides) = (l.dims(), l.stride());
    let rank = dims.len();
    if rank < 2 {
        return false;
    }
    let (r, c) = (dims[rank - 2], dims[rank - 1]);
    let (sr, sc) = (strides[rank - 2], strides[rank - 1]);
    let row_major = (sc == 1 || c == 1) && (sr == c || r == 1);
    let column_major = (sc == r || c == 1) && (sr == 1 || r == 1);
    let batch = match (&dims[..rank - 2], &strides[..rank - 2]) {
        (_, []) | (_, [_]) => true,
        (&[d0, d1], &[s0, s1]) => s0 == s1 * d1 || d0 == 1 || d1 == 1,
        _ => false,
    };
    (row_major || column_major) && batch
}

/// `x` as it is where candle's CUDA matmul takes its layout
/// ([`cuda_takes`]), else a contiguous copy.
fn fit(x: &Tensor) -> candle_core::Result<Tensor> {
    if cuda_takes(x.layout()) {
        Ok(x.clone())
    } else {
        x.contiguous()
    }
}

/// `a · b` (candle's `matmul`), each operand copied first where candle's
/// CUDA matmul would refuse its layout ([`cuda_takes`]).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    fit(a)?.matmul(&fit(b)?)
}

/// candle's `broadcast_matmul`, each operand fitted first as [`matmul`]
/// fits it (an operand it broadcasts, candle copies whole anyway).
pub(crate) fn broadcast_matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    fit(a)?.broadcast_matmul(&fit(b)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{cuda_takes, matmul};

    fn t(dims: &[usize]) -> Tensor {
        let n = dims.iter().product::<usize>();
        Tensor::arange(0f32, n as f32, &Device::Cpu)
            .unwrap()
            .reshape(dims)
            .unwrap()
    }

    /// The layouts of `gemm_config` (candle-core 0.11.1,
    /// `cuda_backend/mod.rs`): row- and column-major operands, a batch
    /// broadcast (stride 0), a block of rows; not a block of columns (one
    /// column included) narrowed out of a wider matrix, nor a batch whose
    /// dims' strides do not nest, nor more than two batch dims.
    #[test]
    fn takes_what_candles_cuda_matmul_takes() {
        let x = t(&[3, 4]);
        assert!(cuda_takes(x.layout()));
        assert!(cuda_takes(x.t().unwrap().layout()));
        assert!(cuda_takes(x.broadcast_left(5).unwrap().layout()));
        assert!(cuda_takes(x.narrow(0, 1, 1).unwrap().layout()));
        assert!(cuda_takes(x.narrow(0, 1, 2).unwrap().layout()));
        assert!(!cuda_takes(x.narrow(1, 1, 2).unwrap().layout()));
        assert!(!cuda_takes(
            x.narrow(1, 1, 2).unwrap().t().unwrap().layout()
        ));
        assert!(!cuda_takes(x.narrow(1, 1, 1).unwrap().layout()));
        let y = t(&[2, 3, 4, 5]);
        assert!(cuda_takes(y.layout()));
        assert!(!cuda_takes(y.transpose(0, 1).unwrap().layout()));
        assert!(!cuda_takes(y.unsqueeze(0).unwrap().layout()));
        // Channels narrowed out of a wider batch of images (a gradient a
        // concat hands back), at batch 1 and 2.
        assert!(cuda_takes(
            y.narrow(0, 0, 1).unwrap().narrow(1, 0, 2).unwrap().layout()
        ));
        assert!(!cuda_takes(y.narrow(1, 0, 2).unwrap().layout()));
        assert!(!cuda_takes(t(&[4]).layout()));
    }

    /// A refused operand is copied, an accepted one multiplied as it lies:
    /// the same product either way.
    #[test]
    fn a_refused_operand_gives_the_same_product() {
        let (x, w) = (t(&[3, 6]), t(&[5, 2]));
        let g = x.narrow(1, 1, 5).unwrap();
        let want = g.contiguous().unwrap().matmul(&w).unwrap();
        let got = matmul(&g, &w).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
        let images = t(&[2, 5, 4, 3]).narrow(1, 1, 3).unwrap();
        let r = t(&[2, 3]).t().unwrap();
        let want = images.contiguous().unwrap().broadcast_matmul(&r);
        let got = super::broadcast_matmul(&images, &r).unwrap();
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&got), flat(&want.unwrap()));
        // The weight's transpose as it lies.
        let got = matmul(&x.narrow(1, 0, 2).unwrap(), &w.t().unwrap()).unwrap();
        let want = x.narrow(1, 0, 2).unwrap().contiguous().unwrap();
        let want = want.matmul(&w.t().unwrap().contiguous().unwrap()).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
    }

    /// The generic path's products (its interpreter and gevaldi's CUDA
    /// ops) and the preprocessing's (its resize, forward and backward) all
    /// go through [`matmul`] and [`broadcast_matmul`]: a product of
    /// candle's called on a gradient or a value of a user's net directly
    /// fails on a GPU where that operand is a view the CPU multiplies (the
    /// concat's case in the module's docs; `tests/generic_path.rs` runs it
    /// on every device).
    #[test]
    fn the_generic_path_multiplies_through_matmul() {
        for (file, source) in [
            ("engine/generic.rs", include_str!("generic.rs")),
            ("engine/cuda.rs", include_str!("cuda.rs")),
            ("preprocess.rs", include_str!("../preprocess.rs")),
        ] {
            let code = source.split("mod tests {").next().unwrap_or(source);
            let direct: Vec<&str> = code
                .lines()
                .filter(|l| l.contains("matmul(") && !l.trim_start().starts_with("//"))
                .filter(|l| l.contains(".matmul(") || l.contains(".broadcast_matmul("))
                .collect();
            assert!(
                direct.is_empty(),
                "src/{file} calls candle's matmul directly: {direct:?}"
            );
        }
    }
}
