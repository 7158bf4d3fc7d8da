//! Preprocessing between a generator and a classifier: value range, resize,
//! channel order and mean/std normalisation, all differentiable with right
//! backward passes (candle 0.11's `upsample_bilinear2d` has none, so resizing
//! here is two matrix products).

use candle_core::{DType, Device, Tensor};

use crate::engine::broadcast_matmul;
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
                // g may be a view (a net whose input only a global average
                // pool reads hands back a broadcast): fitted for CUDA's
                // matmul.
                g = broadcast_matmul(&rh.t()?, &broadcast_matmul(&g, &rw.t()?)?)?;
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
                refuse_beyond_memory(&x, h, w)?;
                let rh = resize_matrix(h0, h, x.device())?;
                let rw = resize_matrix(w0, w, x.device())?.t()?;
                x = broadcast_matmul(&rh, &broadcast_matmul(&x, &rw)?)?;
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

/// Refuses resizing `x` to `h`×`w` on the CPU where the result alone would
/// exceed the free memory: its allocation would abort the process, every
/// trial with it (`resize = 100000` asked for 240 GB at the memory
/// estimate's batch of 2). Only results over 1 GiB read `/proc/meminfo`.
fn refuse_beyond_memory(x: &Tensor, h: usize, w: usize) -> candle_core::Result<()> {
    if !x.device().is_cpu() {
        return Ok(());
    }
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    let needed = [b, c, h, w, x.dtype().size_in_bytes()]
        .into_iter()
        .fold(1u64, |n, d| n.saturating_mul(d as u64));
    if needed <= 1 << 30 {
        return Ok(());
    }
    match crate::memory::mem_available() {
        Some(available) if needed > available => candle_core::bail!(
            "preprocess: resize to {h}×{w} needs {} for a batch of {b} but {} is available \
             (MemAvailable in /proc/meminfo): is `resize` mistyped?",
            crate::error::bytes(needed),
            crate::error::bytes(available)
        ),
        _ => Ok(()),
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

    /// Regression: `resize = 100000` aborted the process ("memory
    /// allocation of 240000000000 bytes failed") at the memory estimate's
    /// probe; a resize beyond the free memory is an error.
    #[test]
    fn a_resize_beyond_memory_is_an_error() {
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let p = Preprocess {
            resize: Some((10_000_000, 10_000_000)),
            ..Preprocess::default()
        };
        let message = p.apply(&x).unwrap_err().to_string();
        assert!(
            message
                .contains("preprocess: resize to 10000000×10000000 needs 2.1 PiB for a batch of 2"),
            "{message}"
        );
    }

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
                let diff = crate::test_support::max_abs_diff(&own, graph);
                assert!(diff < 1e-5, "{channels:?} {size:?} {norm}: {diff}");
                assert_eq!(crate::test_support::max_abs_diff(&y2, &y), 0.0);
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

    /// ImageNet preprocessing of a generator's [-1, 1] output against
    /// PyTorch (`bench/preprocess_reference.py`): (x + 1) / 2,
    /// `F.interpolate(mode="bilinear", align_corners=False)`, then
    /// (x − mean) / std, for 5×7 → 9×4 (rows up, columns down; every
    /// value) and 8×8 → 224×224 (sums and four pixels). Agreed to f32
    /// rounding when written.
    #[test]
    fn imagenet_preprocessing_matches_torch() {
        let dev = Device::Cpu;
        let x = |h: usize, w: usize| {
            let v: Vec<f32> = (0..3 * h * w)
                .map(|k| {
                    let (c, i, j) = (k / (h * w), k / w % h, k % w);
                    (0.3 * c as f64 + 0.7 * i as f64 + 1.1 * j as f64).sin() as f32
                })
                .collect();
            Tensor::from_vec(v, (1, 3, h, w), &dev).unwrap()
        };
        const SMALL: [f64; 108] = [
            0.7952025142299036,
            1.567065835194296,
            -1.795567794332858,
            -0.08703988940174397,
            1.1107965117371932,
            1.1500547013450222,
            -1.83364502489133,
            0.3279736734319374,
            1.636786507582676,
            0.4550361449295658,
            -1.897107075822116,
            1.0196629448214067,
            1.8123428011651992,
            -0.29235052892893987,
            -1.54767346940302,
            1.482988137784353,
            1.9002906691819819,
            -1.0528292321482078,
            -1.0950159486464537,
            1.8892223111406685,
            1.5088331530639725,
            -1.5211031029578381,
            -0.3391307827730535,
            1.8189431009710215,
            1.058316276793281,
            -1.8868886971686256,
            0.4062989975376822,
            1.659971903334022,
            0.37156195991185875,
            -1.8427211849840446,
            1.1099072355977666,
            1.1462327558276129,
            -0.04049063021699408,
            -1.816220677673296,
            1.532072178433816,
            0.8379892673237676,
            1.4335798758880367,
            1.2418483228289654,
            -1.8800175904429386,
            0.6145067922770976,
            1.6533559742161912,
            0.7701621857482849,
            -1.7761796469401037,
            0.9852811466414656,
            2.0196494714297826,
            -0.01598137605284906,
            -1.6031164077687123,
            1.6032384039154126,
            1.9895234599354719,
            -0.7248596766841646,
            -1.061130790749476,
            1.9012971926731839,
            1.860292571264186,
            -1.414421662023025,
            -0.42691457926827886,
            2.1193813643019115,
            1.2963165258840907,
            -1.6830903559716213,
            0.3701727561549181,
            1.8350239964645532,
            0.6984408012155208,
            -1.8423085553656582,
            1.124857783888555,
            1.4769258662718272,
            -0.03503364060695021,
            -1.5637247765414592,
            1.709933580863955,
            0.8238646866576298,
            -0.47511830570043206,
            -1.3965745092469402,
            2.060979059049194,
            0.4320279788891114,
            2.0283908126089307,
            0.878097470667627,
            -1.6378433859348298,
            1.3682921498020488,
            2.1252402254387186,
            0.4052896444002781,
            -1.401570563007284,
            1.6511805884926407,
            2.2866559134883646,
            -0.3827233993786355,
            -1.007782524794708,
            2.1226613196436266,
            2.050673425889309,
            -0.9704648035985455,
            -0.3324734791634993,
            2.218060994361654,
            1.715341394378079,
            -1.5081382979287041,
            0.413215818322367,
            2.2194404049714405,
            1.0409735994500875,
            -1.5425960190207872,
            1.160097119020827,
            1.750069784025351,
            0.36223178159307545,
            -1.4731693796243197,
            1.836962819975099,
            1.230699616405699,
            -0.33400612798002066,
            -0.9882052982736514,
            2.233766121952622,
            0.511331262091795,
            -0.7517488737238779,
            -0.697226849463251,
            2.4718481031391355,
            0.07971024950345344,
        ];
        let small = Preprocess {
            resize: Some((9, 4)),
            ..Preprocess::imagenet((-1.0, 1.0), 224)
        };
        let got = small
            .apply(&x(5, 7))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, (a, b)) in got.iter().zip(SMALL).enumerate() {
            assert!((*a as f64 - b).abs() < 2e-6, "[{i}]: {a}, torch {b}");
        }
        let big = Preprocess::imagenet((-1.0, 1.0), 224)
            .apply(&x(8, 8))
            .unwrap();
        let flat: Vec<f64> = big
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let (sum, sumsq) = (
            flat.iter().sum::<f64>(),
            flat.iter().map(|v| v * v).sum::<f64>(),
        );
        assert!(
            (sum - 31291.75536605867).abs() < 1e-6 * 301348.3585684395,
            "sum {sum}"
        );
        assert!(
            (sumsq - 301348.3585684395).abs() < 1e-6 * 301348.3585684395,
            "sum of squares {sumsq}"
        );
        let at = |c: usize, i: usize, j: usize| flat[(c * 224 + i) * 224 + j];
        for ((c, i, j), want) in [(0, 0, 0), (1, 100, 37), (2, 223, 223), (0, 13, 200)]
            .into_iter()
            .zip([
                0.06550218340611359,
                -0.3258323328962045,
                1.7334966670142278,
                1.7218305712016162,
            ])
        {
            assert!(
                (at(c, i, j) - want).abs() < 2e-6,
                "[{c}, {i}, {j}]: {}, torch {want}",
                at(c, i, j)
            );
        }
    }
}
