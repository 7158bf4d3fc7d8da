//! Preprocessing between a generator and a classifier: value range, resize,
//! channel order and mean/std normalisation, all differentiable with right
//! backward passes (candle 0.11's `upsample_bilinear2d` has none, so resizing
//! here is two matrix products).

use candle_core::{DType, Device, Tensor};

use crate::model::Classifier;

/// Channel handling: the config's vocabulary, `preprocess.channels`.
pub use crate::config::Channels;

/// The steps applied to a generator's output before a classifier sees it,
/// in this order: map `input_range` linearly onto [0, 1]; resize; channels;
/// subtract `mean` and divide by `std` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// The range of the generator's output. (Default: `(0.0, 1.0)`.)
    pub input_range: (f64, f64),
    /// Bilinear resize to (height, width), as PyTorch's
    /// `interpolate(mode="bilinear", align_corners=False)`.
    /// (Default: `None`.)
    pub resize: Option<(usize, usize)>,
    /// Channel handling. (Default: [`Channels::Rgb`].)
    pub channels: Channels,
    /// Per-channel mean, after the range is mapped to [0, 1].
    /// (Default: `None`, no normalisation.)
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation. (Default: `None`.)
    pub std: Option<Vec<f64>>,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            input_range: (0.0, 1.0),
            resize: None,
            channels: Channels::Rgb,
            mean: None,
            std: None,
        }
    }
}

impl Preprocess {
    /// ImageNet's normalisation (torchvision's weights): mean
    /// (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), from the given
    /// input range, resized to `size`×`size`.
    pub fn imagenet(input_range: (f64, f64), size: usize) -> Self {
        Preprocess {
            input_range,
            resize: Some((size, size)),
            channels: Channels::Rgb,
            mean: Some(vec![0.485, 0.456, 0.406]),
            std: Some(vec![0.229, 0.224, 0.225]),
        }
    }

    /// Applies the steps to `[B, C, H, W]`. While the search records its
    /// chain ([`crate::engine`]'s tape) and `x` is part of it, the steps
    /// are one recorded op whose backward is each step's, in reverse: the
    /// deviations' division, the channels' gather (summed for
    /// `grey-to-rgb`), the resize's transposed matrices, the range's
    /// scale.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !crate::engine::recording() || !crate::engine::tracked(x) {
            return self.forward(x).map(|(y, _)| y);
        }
        let (y, Kept { resize, std }) = self.forward(&x.detach())?;
        let (lo, hi) = self.input_range;
        let (channels, dims) = (self.channels, x.dims().to_vec());
        let back = move |g: &Tensor| -> candle_core::Result<Tensor> {
            let mut g = match &std {
                Some(std) => g.broadcast_div(std)?,
                None => g.clone(),
            };
            g = match channels {
                Channels::Rgb => g,
                Channels::Bgr => {
                    let c = |i| g.narrow(1, i, 1);
                    Tensor::cat(&[c(2)?, c(1)?, c(0)?], 1)?
                }
                Channels::GreyToRgb => {
                    let c = |i| g.narrow(1, i, 1);
                    ((c(0)? + c(1)?)? + c(2)?)?
                }
            };
            if let Some((rh, rw)) = &resize {
                g = rh.t()?.broadcast_matmul(&g.broadcast_matmul(&rw.t()?)?)?;
            }
            g.affine(1.0 / (hi - lo), 0.0)?.reshape(dims.as_slice())
        };
        Ok(crate::engine::record_op(x, y, back))
    }

    /// [`Self::apply`] on candle's ops, and what its backward reads.
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Kept)> {
        let (lo, hi) = self.input_range;
        let mut x = x.affine(1.0 / (hi - lo), -lo / (hi - lo))?;
        let mut kept = Kept {
            resize: None,
            std: None,
        };
        if let Some((h, w)) = self.resize {
            let (_, _, h0, w0) = x.dims4()?;
            if (h0, w0) != (h, w) {
                let rh = resize_matrix(h0, h, x.device())?;
                let rw = resize_matrix(w0, w, x.device())?.t()?;
                x = rh.broadcast_matmul(&x.broadcast_matmul(&rw)?)?;
                kept.resize = Some((rh, rw));
            }
        }
        x = match self.channels {
            Channels::Rgb => x,
            Channels::Bgr => {
                let c = |i| x.narrow(1, i, 1);
                Tensor::cat(&[c(2)?, c(1)?, c(0)?], 1)?
            }
            Channels::GreyToRgb => Tensor::cat(&[&x, &x, &x], 1)?,
        };
        if let (Some(mean), Some(std)) = (&self.mean, &self.std) {
            let c = x.dim(1)?;
            // One value applies to every channel; more must be one per
            // channel (three on a grey image used the first, silently).
            for (what, v) in [("means", mean), ("standard deviations", std)] {
                if v.len() > 1 && v.len() != c {
                    candle_core::bail!(
                        "preprocess: {} {what} for an image of {c} channel(s): expected 1 or {c} \
                         (a grey generator before a colour classifier needs channels = \
                         \"grey-to-rgb\")",
                        v.len()
                    );
                }
            }
            let std = per_channel(std, c, x.device())?;
            x = x
                .broadcast_sub(&per_channel(mean, c, x.device())?)?
                .broadcast_div(&std)?;
            kept.std = Some(std);
        }
        Ok((x, kept))
    }
}

/// What [`Preprocess::apply`]'s backward reads: the resize's matrices
/// (rows, and columns transposed) where it resized, and the per-channel
/// deviations where it normalised.
struct Kept {
    resize: Option<(Tensor, Tensor)>,
    std: Option<Tensor>,
}

/// `v`, one value or one per channel, as `[1, c, 1, 1]`.
fn per_channel(v: &[f64], c: usize, device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..c).map(|i| v[i.min(v.len() - 1)] as f32).collect();
    Tensor::from_vec(v, (1, c, 1, 1), device)
}

/// The `[out, in]` matrix of 1-D bilinear interpolation with PyTorch's
/// `align_corners=False`: output i samples input (i + 0.5)·in/out − 0.5,
/// clamped at 0, between its two neighbours.
pub fn resize_matrix(input: usize, output: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    for i in 0..output {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let w1 = (src - i0 as f64) as f32;
        m[i * input + i0] += 1.0 - w1;
        m[i * input + i1] += w1;
    }
    Tensor::from_vec(m, (output, input), device)?.to_dtype(DType::F32)
}

/// A classifier behind a [`Preprocess`]: what a generator's output goes
/// through before the classifier sees it.
pub struct Preprocessed<C> {
    /// The classifier.
    pub inner: C,
    /// The preprocessing.
    pub preprocess: Preprocess,
}

impl<C: Classifier> Classifier for Preprocessed<C> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let input = self.preprocess.apply(x)?;
        // The caller names `x`'s shape; the classifier saw another.
        self.inner.logits(&input).map_err(|e| {
            candle_core::Error::Msg(format!(
                "{} (its input after preprocessing: shape {:?})",
                crate::error::candle_message(&e),
                input.dims()
            ))
        })
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn taped(&self) -> bool {
        self.inner.taped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::GradientAudit;

    #[test]
    fn resize_matches_pytorch_bilinear() {
        let dev = Device::Cpu;
        // 2 -> 4 (align_corners=False): sources -0.25→0, 0.25, 0.75, 1.25→1.
        let m = resize_matrix(2, 4, &dev).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m, [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]);
        // 4 -> 2: sources 0.5 and 2.5.
        let m = resize_matrix(4, 2, &dev).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m, [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]);
    }

    /// Recorded for the search's own backward, the steps' backward is
    /// candle's graph's: every channel handling, with a resize up and one
    /// down, with and without normalisation.
    #[test]
    fn the_recorded_backward_is_candle_s() {
        use crate::model::sample_standard_normal;
        use rand::SeedableRng;
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (channels, c) in [
            (Channels::Rgb, 3),
            (Channels::Bgr, 3),
            (Channels::GreyToRgb, 1),
        ] {
            for (size, norm) in [((7, 5), true), ((3, 4), false), ((6, 6), true)] {
                let pre = Preprocess {
                    input_range: (-1.0, 1.0),
                    resize: Some(size),
                    channels,
                    mean: norm.then(|| vec![0.485, 0.456, 0.406]),
                    std: norm.then(|| vec![0.229, 0.224, 0.225]),
                };
                let x = candle_core::Var::from_tensor(
                    &sample_standard_normal((2, c, 6, 6), &mut rng, &dev).unwrap(),
                )
                .unwrap();
                let w = sample_standard_normal((2, 3, size.0, size.1), &mut rng, &dev).unwrap();
                let y = pre.apply(x.as_tensor()).unwrap();
                let graph = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let graph = graph.get(x.as_tensor()).unwrap();
                let (y2, rec) = crate::engine::record_while(|| pre.apply(x.as_tensor()).unwrap());
                assert!(rec.closed(x.as_tensor(), &[&y2]), "{channels:?}");
                let own = rec
                    .gradient(vec![(&y2, w)], x.as_tensor())
                    .unwrap()
                    .unwrap();
                let diff = (&own - graph)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "{channels:?} {size:?} {norm}: {diff}");
                let dy = (&y2 - &y).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(dy.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
    }

    /// Regression: a classifier that does not take the preprocessed input
    /// failed with a message quoting the generator's shape only.
    #[test]
    fn a_classifier_s_error_names_its_input_after_preprocessing() {
        let dev = Device::Cpu;
        let cnn =
            crate::zoo::MnistCnn::random(&crate::zoo::MnistCnnConfig::cnn_a(), 1, &dev).unwrap();
        let wrapped = Preprocessed {
            inner: cnn,
            preprocess: Preprocess {
                resize: Some((32, 32)),
                ..Preprocess::default()
            },
        };
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap();
        let e = wrapped.logits(&x).unwrap_err().to_string();
        assert!(
            e.contains("(its input after preprocessing: shape [2, 1, 32, 32])"),
            "{e}"
        );
    }

    /// Regression: three means and deviations on a grey image used the
    /// first ones only, silently.
    #[test]
    fn means_must_be_one_or_one_per_channel() {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let p = |mean: Vec<f64>| Preprocess {
            mean: Some(mean),
            std: Some(vec![0.5]),
            ..Preprocess::default()
        };
        let err = p(vec![0.485, 0.456, 0.406])
            .apply(&x)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 means for an image of 1 channel(s): expected 1 or 1"),
            "{err}"
        );
        let y = p(vec![0.5]).apply(&x).unwrap().flatten_all().unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [-1.0; 4]);
    }

    #[test]
    fn every_step_applies_in_order_and_is_differentiable() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[[-1f32, 1.0], [1.0, -1.0]]]], &dev).unwrap();
        let p = Preprocess {
            input_range: (-1.0, 1.0),
            resize: Some((4, 4)),
            channels: Channels::GreyToRgb,
            mean: Some(vec![0.5, 0.5, 0.0]),
            std: Some(vec![0.5, 0.5, 1.0]),
        };
        let y = p.apply(&x).unwrap();
        assert_eq!(y.dims(), [1, 3, 4, 4]);
        // Corner: -1 -> 0 -> (0 - 0.5) / 0.5 = -1 in channels 0, 1; 0 in 2.
        let corner = y
            .narrow(2, 0, 1)
            .unwrap()
            .narrow(3, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(corner.to_vec1::<f32>().unwrap(), [-1.0, -1.0, 0.0]);
        let report = GradientAudit::default()
            .function("preprocess", &x, |x| p.apply(x))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.worst_deviation() < 1e-2);
    }
}
