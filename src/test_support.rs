//! Helpers the unit tests share.

use candle_core::{DType, Tensor};

/// The larger of `m` and `v`, NaN where either is: `f32::max`, and so a
/// fold of it, passes a NaN over, and so does candle 0.11's `max_all`
/// unless the NaN comes first, either of which lets a comparison of a
/// NaN result pass. `.fold(0f32, nan_max)` is the largest value.
pub(crate) fn nan_max<T: Copy + PartialOrd + Into<f64>>(m: T, v: T) -> T {
    let nan = |x: T| Into::<f64>::into(x).is_nan();
    if nan(m) || !(nan(v) || v > m) {
        m
    } else {
        v
    }
}

/// max |a − b| over all elements (NaN where any difference is).
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.to_dtype(DType::F32))
        .and_then(|d| d.to_vec1::<f32>())
        .expect("tensors of one shape");
    d.into_iter().fold(0f32, nan_max)
}

/// max |a − b| / max |b| (NaN where any difference is).
pub(crate) fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .and_then(|b| b.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
        .expect("a tensor");
    max_abs_diff(a, b) / scale.into_iter().fold(0f32, nan_max).max(1e-30)
}

mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_nan_anywhere_is_the_largest_difference() {
        let dev = Device::Cpu;
        let b = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        for at in 0..3 {
            let mut v = vec![1f32, 2.0, 3.0];
            v[at] = f32::NAN;
            let a = Tensor::new(v.as_slice(), &dev).unwrap();
            assert!(max_abs_diff(&a, &b).is_nan(), "NaN at {at}");
            assert!(max_rel_diff(&a, &b).is_nan(), "NaN at {at}");
        }
        let a = Tensor::new(&[1f32, 2.5, 3.0], &dev).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.5);
        assert_eq!(max_rel_diff(&a, &b), 0.5 / 3.0);
        assert!([1.0, f64::NAN, 2.0].into_iter().fold(0.0, nan_max).is_nan());
        assert_eq!([1.0, 3.0, 2.0].into_iter().fold(0.0, nan_max), 3.0);
    }
}
