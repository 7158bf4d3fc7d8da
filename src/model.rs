//! The two kinds of model gevaldi works with: [`Classifier`]s, which are
//! compared, and a [`Generator`], whose latent space is searched.
//!
//! Both traits return `candle_core::Result` so that a model written with
//! candle-nn implements them by forwarding to its `Module::forward`; gevaldi
//! adds the model's name and what it was doing when an error comes back.

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

/// A discriminative model p(y | x) over K classes.
///
/// Its weights are frozen: gevaldi only ever asks for gradients with respect
/// to the input, so load weights as plain tensors (e.g. from safetensors), not
/// as `candle_core::Var`s.
pub trait Classifier {
    /// Maps an input batch (e.g. `[B, 1, 28, 28]`) to logits `[B, K]`.
    ///
    /// Must be differentiable with respect to `x`, with correct backward
    /// passes: check with [`crate::GradientAudit`].
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// The names of the K classes, in logit order.
    fn class_names(&self) -> &[String];

    /// The number of classes K. (Default: `class_names().len()`.)
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }

    /// Whether every op from its input to its logits has a backward of its
    /// own that the engine records ([`crate::engine`]'s tape: the built-in
    /// models), so that the search may run its backward itself. Hidden: a
    /// model of one's own keeps candle's autograd. (Default: false.)
    #[doc(hidden)]
    fn taped(&self) -> bool {
        false
    }
}

/// A generative model x = g(z) (or g(z, c) with a class condition c) with a
/// prior p(z) over its latent space.
pub trait Generator {
    /// The dimension d of a latent vector z.
    fn latent_dim(&self) -> usize;

    /// The number of classes of the condition for class-conditional
    /// generators; `None` for unconditional ones. (Default: `None`.)
    fn num_conditions(&self) -> Option<usize> {
        None
    }

    /// Decodes latents `z` `[B, d]` to a batch the classifiers take.
    ///
    /// `condition` is `[B, C]` for class-conditional generators (a one-hot
    /// row, or a soft mixture of classes), and `None` otherwise. Must be
    /// differentiable with respect to `z`.
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> candle_core::Result<Tensor>;

    /// The range `(low, high)` of the decoded values, mapped onto black ..
    /// white (0 .. 255) when samples are drawn for the report or an MDS
    /// dataset is exported as IDX bytes; values outside it are clipped
    /// there. The search never reads it, but a trial refuses a built-in
    /// classifier without `preprocess` behind images its weights do not
    /// take, and a generator of one's own whose samples reach beyond this
    /// range by more than a quarter of its width.
    /// (Default: `(0.0, 1.0)`; a GAN with a tanh output declares `(-1.0, 1.0)`.)
    fn output_range(&self) -> (f32, f32) {
        (0.0, 1.0)
    }

    /// The mean of the encoder's q(z | x, c) for a batch `x`, when the
    /// generator has an encoder (a VAE). Used for pictures of the data's
    /// latents, never by the search. (Default: `None`.)
    fn encode(
        &self,
        x: &Tensor,
        condition: Option<&Tensor>,
    ) -> Option<candle_core::Result<Tensor>> {
        let _ = (x, condition);
        None
    }

    /// The log-density log p(z) of the prior, one value per sample: `[B]`.
    /// (Default: the standard normal, see [`standard_normal_log_density`].)
    fn log_prior(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        standard_normal_log_density(z)
    }

    /// Whether every op of `decode` (from z) and of `log_prior` has a
    /// backward of its own that the engine records, as
    /// [`Classifier::taped`]. Hidden. (Default: false.)
    #[doc(hidden)]
    fn taped(&self) -> bool {
        false
    }

    /// Where the prior puts all its mass, when that is less than the whole
    /// latent space: BigGAN's truncated normal lies in the box
    /// |z_i| ≤ 2·truncation. The search does not keep z there (its
    /// objective's `log_prior` need not enforce it); after a search,
    /// gevaldi counts the coordinates that ended outside and reports them.
    /// Every sample of [`Generator::sample_prior`] must lie inside.
    /// (Default: `None`, unbounded.)
    fn latent_support(&self) -> Option<LatentSupport> {
        None
    }

    /// Draws `n` latents `[n, d]` from the prior with the caller's seeded RNG.
    /// (Default: the standard normal, see [`sample_standard_normal`].)
    ///
    /// candle's own CPU RNG cannot be seeded, so implementations draw from
    /// `rng` and build the tensor from the values.
    fn sample_prior(
        &self,
        n: usize,
        rng: &mut dyn RngCore,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        sample_standard_normal((n, self.latent_dim()), rng, device)
    }
}

/// Where a generator's prior puts all its mass, when that is less than the
/// whole latent space ([`Generator::latent_support`]). Latents are held in
/// f32, and so is the bound each coordinate is checked against
/// ([`LatentSupport::half_width`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LatentSupport {
    /// z = truncation · u, u a standard normal truncated to [−cut, cut] in
    /// every coordinate (BigGAN's truncation trick, cut = 2): the box
    /// |z_i| ≤ cut · truncation.
    TruncatedNormal {
        /// The truncation t, the scale of z = t · u.
        truncation: f64,
        /// Where u is cut: |u_i| ≤ cut.
        cut: f64,
    },
    /// The box |z_i| ≤ half_width.
    Box {
        /// The bound on every coordinate.
        half_width: f64,
    },
}

impl LatentSupport {
    /// The bound on every coordinate, |z_i| ≤ this, in the f32 the latents
    /// are held in: for a truncated normal, `cut as f32 * truncation as
    /// f32`, the largest |t · u| a sampler drawing u in f32 and scaling it
    /// by t in f32 gives (rounding keeps the order).
    pub fn half_width(&self) -> f32 {
        match *self {
            LatentSupport::TruncatedNormal { truncation, cut } => cut as f32 * truncation as f32,
            LatentSupport::Box { half_width } => half_width as f32,
        }
    }

    /// Whether the coordinate `value` lies in the support (a NaN does not).
    pub fn contains(&self, value: f32) -> bool {
        value.abs() <= self.half_width()
    }

    /// How many of the coordinates `z` lie outside the support.
    pub fn count_outside(&self, z: &[f32]) -> usize {
        z.iter().filter(|&&v| !self.contains(v)).count()
    }

    /// The truncation, for a truncated normal.
    pub fn truncation(&self) -> Option<f64> {
        match *self {
            LatentSupport::TruncatedNormal { truncation, .. } => Some(truncation),
            LatentSupport::Box { .. } => None,
        }
    }
}

impl std::fmt::Display for LatentSupport {
    /// `truncation box |z| ≤ 0.8 (truncation 0.4)` or `box |z| ≤ 1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LatentSupport::TruncatedNormal { truncation, .. } => write!(
                f,
                "truncation box |z| ≤ {} (truncation {truncation})",
                self.half_width()
            ),
            LatentSupport::Box { .. } => write!(f, "box |z| ≤ {}", self.half_width()),
        }
    }
}

/// Whether `names` only number the classes: none, or `"0"`, `"1"`, … in
/// logit order (as the built-in MNIST models do). Such a classifier says
/// nothing about which class a logit is beyond its index.
pub fn numbers_its_classes(names: &[String]) -> bool {
    names.iter().enumerate().all(|(k, n)| *n == k.to_string())
}

/// The class names as a trial shows them (its summaries, failure messages,
/// snapshots, pictures and record): a name that two or more classes share
/// gets its logit index, `crane [134]` and `crane [517]` (ImageNet-1k
/// names two classes `crane`, the bird and the machine, and two
/// `maillot`), so that a prediction that moved from one to the other, or
/// two models that predict different ones, read as different classes.
/// Every other name is as given.
pub fn distinct_class_labels(names: &[String]) -> Vec<String> {
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for n in names {
        *count.entry(n.as_str()).or_default() += 1;
    }
    names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            if count[n.as_str()] > 1 {
                format!("{n} [{k}]")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// The first logit to which two classifiers' class names (of one count)
/// give different classes, if any. Where both name their classes, the
/// names must be equal, logit by logit. Where one only numbers them
/// ([`numbers_its_classes`]), a name of the other's conflicts only when it
/// is another logit's number: `["9", …, "0"]` against `["0", …, "9"]`
/// calls logit 0 what the other calls logit 9, while `"cat"` (a name the
/// numbering has no word on) does not.
pub fn first_class_conflict(a: &[String], b: &[String]) -> Option<usize> {
    let numbered_a = numbers_its_classes(a);
    let numbered_b = numbers_its_classes(b);
    let number = |names: &[String], name: &str| {
        name.parse::<usize>()
            .ok()
            .filter(|&j| j < names.len() && j.to_string() == name)
    };
    (0..a.len().min(b.len())).find(|&k| {
        let (x, y) = (&a[k], &b[k]);
        if x == y {
            return false;
        }
        match (numbered_a, numbered_b) {
            (true, true) => false,
            (true, false) => number(a, y).is_some(),
            (false, true) => number(b, x).is_some(),
            (false, false) => true,
        }
    })
}

impl<T: Classifier + ?Sized> Classifier for &T {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (**self).logits(x)
    }
    fn class_names(&self) -> &[String] {
        (**self).class_names()
    }
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn taped(&self) -> bool {
        (**self).taped()
    }
}

impl<T: Classifier + ?Sized> Classifier for Box<T> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (**self).logits(x)
    }
    fn class_names(&self) -> &[String] {
        (**self).class_names()
    }
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn taped(&self) -> bool {
        (**self).taped()
    }
}

impl<T: Generator + ?Sized> Generator for &T {
    fn latent_dim(&self) -> usize {
        (**self).latent_dim()
    }
    fn num_conditions(&self) -> Option<usize> {
        (**self).num_conditions()
    }
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> candle_core::Result<Tensor> {
        (**self).decode(z, condition)
    }
    fn output_range(&self) -> (f32, f32) {
        (**self).output_range()
    }
    fn encode(
        &self,
        x: &Tensor,
        condition: Option<&Tensor>,
    ) -> Option<candle_core::Result<Tensor>> {
        (**self).encode(x, condition)
    }
    fn log_prior(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        (**self).log_prior(z)
    }
    fn taped(&self) -> bool {
        (**self).taped()
    }
    fn latent_support(&self) -> Option<LatentSupport> {
        (**self).latent_support()
    }
    fn sample_prior(
        &self,
        n: usize,
        rng: &mut dyn RngCore,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        (**self).sample_prior(n, rng, device)
    }
}

/// log N(z; 0, I) per row of `z` `[B, d]`:
/// `-0.5 * sum_i z_i^2 - (d / 2) * ln(2 pi)`, shape `[B]`.
///
/// Where `z` is tracked it joins candle's graph as one op whose backward
/// is `-z` times the output's gradient (candle's graph, three ops and
/// their backward, under `GEVALDI_ENGINE=candle`): the same bits.
pub fn standard_normal_log_density(z: &Tensor) -> candle_core::Result<Tensor> {
    let d = z.dim(1)? as f64;
    centred_normal_log_density(z, 1.0, -0.5 * d * (2.0 * std::f64::consts::PI).ln())
}

/// `-0.5 * sum_i z_i^2 / variance + constant` per row of `z` `[B, d]`: the
/// log-density of a centred normal of that variance in every coordinate
/// (with its normalising `constant`). Where `z` is tracked it joins the
/// graph as one op whose backward is `-z / variance` times the output's
/// gradient: the same bits as candle's graph of `sqr`, `sum` and `affine`
/// (its backward `2 · z · (g · a)`, a = −0.5 / variance, differs from
/// `z · (g · 2a)` only by exact doublings).
pub(crate) fn centred_normal_log_density(
    z: &Tensor,
    variance: f64,
    constant: f64,
) -> candle_core::Result<Tensor> {
    let density = |z: &Tensor| z.sqr()?.sum(1)?.affine(-0.5 / variance, constant);
    if !crate::engine::tracked(z)
        || crate::engine::Engine::current() == crate::engine::Engine::Candle
    {
        return density(z);
    }
    let z_kept = z.detach();
    let out = density(&z_kept)?;
    let back = move |g: &Tensor| {
        let g = if variance == 1.0 {
            g.neg()?
        } else {
            g.affine(-1.0 / variance, 0.0)?
        };
        Ok(vec![z_kept.broadcast_mul(&g.unsqueeze(1)?)?])
    };
    crate::engine::attach(&[z], out, Box::new(back))
}

/// An f32 tensor of the given shape with independent standard-normal entries
/// drawn, in row-major order, from `rng`.
pub fn sample_standard_normal(
    shape: impl Into<candle_core::Shape>,
    rng: &mut dyn RngCore,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// The index of the largest value, the first on a tie. A NaN (of either
/// sign) never wins over a number; when every value is NaN, or `values` is
/// empty, the result is 0.
pub fn argmax(values: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, v) in values.iter().enumerate() {
        // `>` is false for NaN on either side: a NaN never replaces a
        // number, and a number always replaces the NaN-free start.
        if !v.is_nan() && best.is_none_or(|b| *v > values[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// `n` one-hot rows `[n, classes]` (f32) for the given labels.
pub fn one_hot(labels: &[usize], classes: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut values = vec![0f32; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        if label >= classes {
            candle_core::bail!("label {label} is out of range for {classes} classes");
        }
        values[row * classes + label] = 1.0;
    }
    Tensor::from_vec(values, (labels.len(), classes), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn class_names_conflict_only_where_both_say_which_class_a_logit_is() {
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let numbered = names(&["0", "1", "2"]);
        assert!(numbers_its_classes(&numbered));
        assert!(numbers_its_classes(&[]));
        assert!(!numbers_its_classes(&names(&["2", "1", "0"])));
        // The same labels in another order.
        assert_eq!(
            first_class_conflict(&numbered, &names(&["0", "2", "1"])),
            Some(1)
        );
        assert_eq!(
            first_class_conflict(&names(&["2", "1", "0"]), &numbered),
            Some(0)
        );
        // Names against names: equal, logit by logit.
        let words = names(&["cat", "dog", "emu"]);
        assert_eq!(first_class_conflict(&words, &words), None);
        assert_eq!(
            first_class_conflict(&words, &names(&["cat", "emu", "dog"])),
            Some(1)
        );
        assert_eq!(
            first_class_conflict(&words, &names(&["cat", "dog", "gnu"])),
            Some(2)
        );
        // Numbers say nothing against words, nor against a name that is no
        // other logit's number.
        assert_eq!(first_class_conflict(&numbered, &words), None);
        assert_eq!(first_class_conflict(&words, &numbered), None);
        assert_eq!(
            first_class_conflict(&numbered, &names(&["0", "1", "3"])),
            None
        );
        assert_eq!(first_class_conflict(&numbered, &numbered), None);
    }

    #[test]
    fn standard_normal_log_density_matches_the_formula() {
        let z = Tensor::new(&[[0f32, 0.0], [1.0, -2.0]], &Device::Cpu).unwrap();
        let lp = standard_normal_log_density(&z)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let c = -(2.0 * std::f64::consts::PI).ln();
        assert!((lp[0] as f64 - c).abs() < 1e-6);
        assert!((lp[1] as f64 - (c - 2.5)).abs() < 1e-6);
    }

    /// A tracked z's log density is one op of the graph whose gradient
    /// is candle's graph's, bit for bit (scaled per row: the output's
    /// gradient is not all ones). Checked to fail with the sign of the
    /// backward dropped.
    #[test]
    fn standard_normal_log_density_backward_is_candles_graphs() {
        if crate::engine::Engine::current() == crate::engine::Engine::Candle {
            return;
        }
        let values = [[0.3f32, -1.7, 2.5], [1.0, -2.0, 0.0]];
        let z = candle_core::Var::new(&values, &Device::Cpu).unwrap();
        let u = Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap();
        let grad_of = |lp: Tensor| {
            let grads = (lp * &u).unwrap().sum_all().unwrap().backward().unwrap();
            let g = grads.get(z.as_tensor()).expect("a gradient for z");
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let ours = standard_normal_log_density(z.as_tensor()).unwrap();
        assert!(ours.track_op());
        let graph = z
            .as_tensor()
            .sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .affine(-0.5, -1.5 * (2.0 * std::f64::consts::PI).ln())
            .unwrap();
        let same =
            |a: &Tensor, b: &Tensor| a.to_vec1::<f32>().unwrap() == b.to_vec1::<f32>().unwrap();
        assert!(same(&ours, &graph));
        let (a, b) = (grad_of(ours), grad_of(graph));
        assert_eq!(a, b);
        assert_eq!(a[1], 1.7 * 0.5);
    }

    #[test]
    fn prior_samples_are_seeded() {
        let draw = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            sample_standard_normal((3, 4), &mut rng, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    /// The support's bound is the f32 one a sampler of z = t · u reaches,
    /// NaN and anything past it lie outside, and it reads back from JSON.
    #[test]
    fn a_latent_support_counts_the_coordinates_outside_its_box() {
        let s = LatentSupport::TruncatedNormal {
            truncation: 0.4,
            cut: 2.0,
        };
        assert_eq!(s.half_width(), 0.4f32 * 2.0);
        assert_eq!(s.truncation(), Some(0.4));
        // 0.4f32 is above 0.4: the largest sample, 0.4f32 · 2, is inside.
        assert!(s.contains(0.4f32 * 2.0) && s.contains(-0.4f32 * 2.0));
        let above = f32::from_bits((0.4f32 * 2.0).to_bits() + 1);
        assert_eq!(
            s.count_outside(&[0.0, 0.8, -0.8, above, -above, 3.0, f32::NAN]),
            4
        );
        assert_eq!(s.to_string(), "truncation box |z| ≤ 0.8 (truncation 0.4)");
        let b = LatentSupport::Box { half_width: 1.0 };
        assert_eq!(b.to_string(), "box |z| ≤ 1");
        assert_eq!(b.truncation(), None);
        for s in [s, b] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<LatentSupport>(&json).unwrap(), s);
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2, 0.7]), 1);
        assert_eq!(argmax(&[-3.0, -1.0, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::INFINITY, 1.0]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn no_nan_of_either_sign_wins_over_a_number() {
        for nan in [f32::NAN, -f32::NAN] {
            assert_eq!(argmax(&[0.5, nan, 0.2]), 0, "{nan:?} in the middle");
            assert_eq!(argmax(&[nan, 0.2, 0.5]), 2, "{nan:?} first");
            assert_eq!(argmax(&[0.2, 0.5, nan]), 1, "{nan:?} last");
            assert_eq!(argmax(&[nan, f32::NEG_INFINITY]), 1, "{nan:?} vs -inf");
            assert_eq!(argmax(&[nan, nan]), 0, "all NaN");
        }
        assert_eq!(argmax(&[f32::NAN, -f32::NAN, -1.0]), 2);
    }

    #[test]
    fn one_hot_rejects_out_of_range_labels() {
        let t = one_hot(&[2, 0], 3, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), [[0., 0., 1.], [1., 0., 0.]]);
        assert!(one_hot(&[3], 3, &Device::Cpu).is_err());
    }
}
