//! Pooling and upsampling built from ops whose backward pass is right.
//!
//! candle 0.11's `max_pool2d` scales its gradient by 1/k², and
//! `max_pool2d_with_stride` with k ≠ s has no backward at all; its
//! `upsample_bilinear2d` has none either, and its backward of
//! `upsample_nearest2d` overwrites its input's gradient instead of adding
//! to it (huggingface/candle#3507, open), so an upsampled value that
//! another op reads too loses that op's gradient. These pool by slicing every
//! window offset out of the (padded) input, stacking them, and taking one
//! maximum per window with `argmax` + `gather`, whose backward sends the
//! gradient to exactly that position (as PyTorch does).

use candle_core::{Tensor, D};

use crate::engine::pool_settings::PoolAxis;
use crate::engine::{adaptive_range, check_adaptive, Pool2dSettings, PoolKind};

/// Max-pooling over `k`×`k` windows with stride `s` and padding `p` on
/// `[B, C, H, W]`, as PyTorch's `MaxPool2d(k, s, p, ceil_mode)`.
pub fn max_pool2d(
    x: &Tensor,
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
) -> candle_core::Result<Tensor> {
    max_pool2d_with(x, &Pool2dSettings::square(k, s, p, ceil))
}

/// Max-pooling of `[B, C, H, W]` with its settings per axis, as PyTorch's
/// `MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode)`.
pub fn max_pool2d_with(x: &Tensor, settings: &Pool2dSettings) -> candle_core::Result<Tensor> {
    let w = Windows::new(x, settings)?;
    let first_max = w.stacked.argmax_keepdim(4)?;
    w.stacked.gather(&first_max, 4)?.squeeze(4)
}

/// Every window offset of a max-pooling, stacked along a last dim.
struct Windows {
    /// `[B, C, Ho, Wo, kh·kw]`: offset (di, dj) at `di·kw + dj`.
    stacked: Tensor,
    /// The padded input's rows and columns.
    hp: usize,
    wp: usize,
}

impl Windows {
    fn new(x: &Tensor, settings: &Pool2dSettings) -> candle_core::Result<Self> {
        let (_, _, h, w) = x.dims4()?;
        let [ho, wo] = settings.output(PoolKind::Max, h, w)?;
        let (r, c) = (settings.axis(0), settings.axis(1));
        // Pad with -inf: p on the left, and on the right enough for every
        // offset to take `o` strided positions (di + s·o ≤ length).
        let x = pad_neg_inf(x, 2, r.p, padded_len(h, &r, ho) - h - r.p)?;
        let x = pad_neg_inf(&x, 3, c.p, padded_len(w, &c, wo) - w - c.p)?;
        let (_, _, hp, wp) = x.dims4()?;
        let mut windows = Vec::with_capacity(r.k * c.k);
        for di in 0..r.k {
            let rows = strided(&x, 2, di * r.d, r.s, ho)?;
            for dj in 0..c.k {
                windows.push(strided(&rows, 3, dj * c.d, c.s, wo)?);
            }
        }
        Ok(Windows {
            stacked: Tensor::stack(&windows, 4)?.contiguous()?,
            hp,
            wp,
        })
    }
}

/// Where each output of a max-pooling took its value from (PyTorch's: the
/// first maximum of its window), all its backward reads.
#[derive(Debug)]
pub(crate) struct MaxPoolPositions {
    /// `[B·C, Ho·Wo]` (u32): each output's position in its padded input
    /// plane, `row · Wp + column`.
    pub(crate) index: Tensor,
    /// The input's dims `[B, C, H, W]`.
    pub(crate) dims: (usize, usize, usize, usize),
    /// The padded planes' rows and columns.
    pub(crate) padded: (usize, usize),
    /// The pooling's settings (its padding on the left, per axis).
    pub(crate) settings: Pool2dSettings,
    /// The output's rows and columns.
    pub(crate) out: (usize, usize),
}

/// [`max_pool2d_with`] and where each maximum came from.
pub(crate) fn max_pool2d_indexed(
    x: &Tensor,
    settings: &Pool2dSettings,
) -> candle_core::Result<(Tensor, MaxPoolPositions)> {
    let x = x.detach();
    let dims = x.dims4()?;
    let w = Windows::new(&x, settings)?;
    let (_, _, ho, wo, _) = w.stacked.dims5()?;
    let first_max = w.stacked.argmax_keepdim(4)?;
    let out = w.stacked.gather(&first_max, 4)?.squeeze(4)?;
    let dev = x.device();
    let (r, c) = (settings.axis(0), settings.axis(1));
    // Offset `t` of a window at (oy, ox) is at (sh·oy + dh·(t / kw)) · Wp
    // + sw·ox + dw·(t % kw) of the padded plane.
    let offsets: Vec<u32> = (0..r.k * c.k)
        .map(|t| ((t / c.k) * r.d * w.wp + (t % c.k) * c.d) as u32)
        .collect();
    let origins: Vec<u32> = (0..ho * wo)
        .map(|o| ((o / wo) * r.s * w.wp + (o % wo) * c.s) as u32)
        .collect();
    let index = Tensor::new(offsets.as_slice(), dev)?
        .index_select(&first_max.flatten_all()?, 0)?
        .reshape((dims.0 * dims.1, ho * wo))?
        .broadcast_add(&Tensor::new(origins.as_slice(), dev)?.unsqueeze(0)?)?;
    let positions = MaxPoolPositions {
        index,
        dims,
        padded: (w.hp, w.wp),
        settings: *settings,
        out: (ho, wo),
    };
    Ok((out, positions))
}

/// The input gradient of a max-pooling, `g` its output's: each output's
/// gradient added at its maximum's position (candle's `scatter_add`, which
/// adds along a row in order: the same sums on every run).
pub(crate) fn max_pool2d_backward(
    at: &MaxPoolPositions,
    g: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = at.dims;
    let (hp, wp) = at.padded;
    let [ph, pw] = at.settings.padding;
    let g = g.reshape((b * c, ()))?;
    Tensor::zeros((b * c, hp * wp), g.dtype(), g.device())?
        .scatter_add(&at.index, &g, 1)?
        .reshape((b, c, hp, wp))?
        .narrow(2, ph, h)?
        .narrow(3, pw, w)
}

/// The length of a pool's padded input along one axis (`n` long, `o`
/// outputs): the padding on the left, and on the right enough for every
/// window offset to take `o` strided positions.
pub(crate) fn padded_len(n: usize, axis: &PoolAxis, o: usize) -> usize {
    (n + axis.p).max(axis.extent() - 1 + axis.s * o)
}

/// Positions `start, start + s, …` (n of them) along `dim`.
fn strided(
    x: &Tensor,
    dim: usize,
    start: usize,
    s: usize,
    n: usize,
) -> candle_core::Result<Tensor> {
    let x = x.narrow(dim, start, s * n)?;
    if s == 1 {
        return Ok(x);
    }
    let mut shape = x.dims().to_vec();
    shape[dim] = n;
    shape.insert(dim + 1, s);
    x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

fn pad_neg_inf(x: &Tensor, dim: usize, left: usize, right: usize) -> candle_core::Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims().to_vec();
    if left > 0 {
        shape[dim] = left;
        parts
            .push(Tensor::full(f32::NEG_INFINITY, shape.clone(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if right > 0 {
        shape[dim] = right;
        parts.push(Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?);
    }
    Tensor::cat(&parts, dim)
}

/// Nearest-neighbour upsampling of `[B, C, H, W]` by an integer `scale`
/// (each value repeated over a `scale` × `scale` window), as a broadcast,
/// whose backward sums each window into the input's gradient (candle
/// 0.11's `upsample_nearest2d` gives the same values, but its backward
/// replaces the input's gradient, see above).
pub(crate) fn upsample_nearest(x: &Tensor, scale: usize) -> candle_core::Result<Tensor> {
    crate::engine::check_upsample(scale)?;
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, scale, w, scale))?
        .contiguous()?
        .reshape((b, c, h * scale, w * scale))
}

/// PyTorch's `AvgPool2d(k, s, p)` on `[B, C, H, W]` with its defaults
/// (zero padding counted in each window's k², no ceil mode).
pub fn avg_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> candle_core::Result<Tensor> {
    avg_pool2d_with(x, &Pool2dSettings::square(k, s, p, false))
}

/// PyTorch's `AvgPool2d(kernel_size, stride, padding, ceil_mode,
/// count_include_pad)` on `[B, C, H, W]`, its settings per axis: the sum
/// of every window offset's strided slice of the zero-padded input, over
/// k² or, where a window's count differs (ceil mode, `count_include_pad`
/// false), over a constant map of the counts. (candle 0.11's
/// `avg_pool2d_with_stride` has no padding, no backward for k ≠ s, and for
/// k = s a backward that upsamples the gradient over the whole input, rows
/// past the last window included, where their gradient is 0.)
pub fn avg_pool2d_with(x: &Tensor, settings: &Pool2dSettings) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let [ho, wo] = settings.output(PoolKind::Avg, h, w)?;
    let (r, c) = (settings.axis(0), settings.axis(1));
    let x = x.pad_with_zeros(2, r.p, padded_len(h, &r, ho) - h - r.p)?;
    let x = x.pad_with_zeros(3, c.p, padded_len(w, &c, wo) - w - c.p)?;
    let mut sum: Option<Tensor> = None;
    for di in 0..r.k {
        let rows = strided(&x, 2, di, r.s, ho)?;
        for dj in 0..c.k {
            let window = strided(&rows, 3, dj, c.s, wo)?;
            sum = Some(match sum {
                Some(acc) => (acc + window)?,
                None => window,
            });
        }
    }
    let sum = sum.expect("a window of 1 or more");
    let pad = settings.count_include_pad;
    let rows: Vec<usize> = (0..ho).map(|i| r.count(i, h, pad)).collect();
    let cols: Vec<usize> = (0..wo).map(|j| c.count(j, w, pad)).collect();
    if rows.iter().all(|&n| n == r.k) && cols.iter().all(|&n| n == c.k) {
        return sum.affine(1.0 / (r.k * c.k) as f64, 0.0);
    }
    let counts: Vec<f64> = rows
        .iter()
        .flat_map(|&n| cols.iter().map(move |&m| (n * m) as f64))
        .collect();
    let counts = Tensor::from_vec(counts, (1, 1, ho, wo), sum.device())?.to_dtype(sum.dtype())?;
    sum.broadcast_div(&counts)
}

/// PyTorch's `AdaptiveAvgPool2d((oh, ow))` on `[B, C, H, W]`: output cell
/// (i, j) averages rows ⌊i·H/oh⌋ .. ⌈(i+1)·H/oh⌉ and the same for columns.
pub fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    check_adaptive(oh, ow)?;
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    if (oh, ow) == (1, 1) {
        return x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2);
    }
    let mut rows = Vec::with_capacity(oh);
    for i in 0..oh {
        let (r0, r1) = adaptive_range(i, h, oh);
        let band = x.narrow(2, r0, r1 - r0)?.mean_keepdim(2)?;
        let mut cells = Vec::with_capacity(ow);
        for j in 0..ow {
            let (c0, c1) = adaptive_range(j, w, ow);
            cells.push(band.narrow(3, c0, c1 - c0)?.mean_keepdim(3)?);
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn max_pool2d_matches_hand_values_with_padding_and_ceil() {
        let dev = Device::Cpu;
        // 5x5 input 0..25, k3 s2 p0: windows start at 0 and 2 -> 2x2.
        let x = Tensor::arange(0f32, 25.0, &dev)
            .unwrap()
            .reshape((1, 1, 5, 5))
            .unwrap();
        let y = max_pool2d(&x, 3, 2, 0, false).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [12., 14., 22., 24.]
        );
        // ceil_mode on 6x6: (6-3)/2 -> ceil 2 + 1 = 3 windows, the last one partial.
        let x = Tensor::arange(0f32, 36.0, &dev)
            .unwrap()
            .reshape((1, 1, 6, 6))
            .unwrap();
        let y = max_pool2d(&x, 3, 2, 0, true).unwrap();
        assert_eq!(y.dims(), [1, 1, 3, 3]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [14., 16., 17., 26., 28., 29., 32., 34., 35.]
        );
        // padding 1, k3 s2 on 4x4 (ResNet's stem pool): 2x2.
        let x = Tensor::arange(0f32, 16.0, &dev)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let y = max_pool2d(&x, 3, 2, 1, false).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 7., 13., 15.]
        );
    }

    #[test]
    fn max_pool2d_sends_each_windows_gradient_to_one_position() {
        let dev = Device::Cpu;
        let x = Var::new(
            &[[[[1f32, 5.0, 2.0], [0.0, 3.0, 9.0], [4.0, 4.0, 1.0]]]],
            &dev,
        )
        .unwrap();
        // k2 s1: windows overlap; the 9 and the 5 win twice... each window's
        // gradient (1) goes to its one maximum.
        let y = max_pool2d(x.as_tensor(), 2, 1, 0, false).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 9., 4., 9.]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [0., 1., 0., 0., 0., 2., 1., 0., 0.]);
    }

    // Regression: with stride 1 the stacked windows came out of `cat`
    // non-contiguous and `gather` refused them (GoogLeNet's branch pools,
    // k3 s1 p1 ceil).
    #[test]
    fn max_pool2d_with_stride_one_and_padding_keeps_the_shape() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 5.0 * 5.0, &dev)
            .unwrap()
            .reshape((2, 3, 5, 5))
            .unwrap();
        let y = max_pool2d(&x, 3, 1, 1, true).unwrap();
        assert_eq!(y.dims(), [2, 3, 5, 5]);
        let first = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&first[..5], &[6., 7., 8., 9., 9.]);
    }

    #[test]
    fn adaptive_avg_pool2d_matches_pytorch_ranges() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 9.0, &dev)
            .unwrap()
            .reshape((1, 1, 3, 3))
            .unwrap();
        // 3 -> 2: rows [0, 2) and [1, 3).
        let y = adaptive_avg_pool2d(&x, 2, 2).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2., 3., 5., 6.]
        );
        let y = adaptive_avg_pool2d(&x, 1, 1).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.]);
        // 1 -> 6 replicates (AlexNet on small inputs).
        let one = Tensor::new(&[[[[7f32]]]], &dev).unwrap();
        let y = adaptive_avg_pool2d(&one, 6, 6).unwrap();
        assert_eq!(y.dims(), [1, 1, 6, 6]);
        assert_eq!(y.sum_all().unwrap().to_scalar::<f32>().unwrap(), 7.0 * 36.0);
    }
}
