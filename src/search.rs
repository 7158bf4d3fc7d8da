//! The MDS search: Algorithm 1 of the paper, batched and seeded.
//!
//! For latents z (a batch of B, searched at once) the objective of sample b is
//!
//! ```text
//! L_b(z_b) = D[{p_m(y | g(z_b))}_m] + lambda * log p(z_b)
//! ```
//!
//! and each step ascends it: `z <- z + lr * grad_z sum_b L_b` (SGD) or the
//! Adam update of the same gradient. Because the samples are independent, the
//! gradient of the sum with respect to z_b is the gradient of L_b alone, so
//! `lambda` and `lr` mean the same whatever the batch size. Only z is a
//! variable: the classifiers and the generator are frozen and no gradient of
//! theirs is kept.
//!
//! The search records, per sample, z0, z, the divergence and every model's
//! probabilities before and after, and dz = ‖z − z0‖ / ‖z‖; per step, the
//! mean objective, the mean and max divergence and the mean dz; and a null
//! baseline: the divergence over B fresh prior samples, drawn from a stream
//! of the seed of their own (z0 is drawn from another), so that they are the
//! same whether or not z0 is given. `lift` = mean divergence after the
//! search / mean baseline divergence.
//!
//! A NaN or an infinity anywhere in the pipeline stops the search with
//! [`Error::NonFinite`], naming where it first appeared (see
//! [`NonFiniteSite`]): each step sums each checked tensor (a NaN or an
//! infinity survives the sum) and reads the sums back with the step's
//! figures; only a sum that is not finite costs a full read, to find the
//! sample. An ascent that finished but went wrong (its objective fell, or z
//! ran away) is told by [`SearchOutcome::warnings`].

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::divergence::Divergence;
use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};

/// How z is moved along the gradient of the objective (always upwards).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Optimizer {
    /// Plain gradient ascent: z ← z + lr · g, as in Algorithm 1.
    Sgd,
    /// Adam (Kingma & Ba, 2015) on the ascent direction, with bias
    /// correction: z ← z + lr · m̂ / (√v̂ + epsilon).
    Adam {
        /// Decay of the first moment. (Default: `0.9`.)
        beta1: f64,
        /// Decay of the second moment. (Default: `0.999`.)
        beta2: f64,
        /// Added to √v̂. (Default: `1e-8`.)
        epsilon: f64,
    },
}

impl Optimizer {
    /// Adam with its usual defaults (0.9, 0.999, 1e-8).
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// `sgd` or `adam`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam { .. } => "adam",
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Optimizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(Optimizer::Sgd),
            "adam" => Ok(Optimizer::adam()),
            _ => Err(Error::setting("optimizer", format!("{s:?}"), "sgd or adam")),
        }
    }
}

/// Stop before `steps` when the search has stalled: at step t ≥ `window`, if
/// the mean objective rose by less than `tolerance` since step t − `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStop {
    /// Steps to look back. Must be ≥ 1.
    pub window: usize,
    /// The least rise of the mean objective over `window` steps that keeps
    /// the search going. Must be ≥ 0.
    pub tolerance: f64,
}

/// The settings of one search. Every field has a documented default.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SearchConfig {
    /// Ascent steps N. (Default: `200`.)
    pub steps: usize,
    /// Learning rate γ. (Default: `0.05`.)
    pub lr: f64,
    /// The optimizer. (Default: Adam.)
    pub optimizer: Optimizer,
    /// λ, the weight of log p(z) in each sample's objective. (Default: `0.01`.)
    pub lambda: f64,
    /// Samples searched at once, B; ignored when a starting z0 is given.
    /// (Default: `64`.)
    pub batch: usize,
    /// Seed of the prior samples z0 and of the baseline. (Default: `0`.)
    pub seed: u64,
    /// The divergence ascended. (Default: `kl`.)
    pub divergence: Divergence,
    /// Optional early stop. (Default: `None`, run all steps.)
    pub early_stop: Option<EarlyStop>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            steps: 200,
            lr: 0.05,
            optimizer: Optimizer::adam(),
            lambda: 0.01,
            batch: 64,
            seed: 0,
            divergence: Divergence::Kl,
            early_stop: None,
        }
    }
}

impl SearchConfig {
    /// Sets [`steps`](Self::steps).
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }
    /// Sets [`lr`](Self::lr).
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    /// Sets [`optimizer`](Self::optimizer).
    pub fn optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optimizer = optimizer;
        self
    }
    /// Sets [`lambda`](Self::lambda).
    pub fn lambda(mut self, lambda: f64) -> Self {
        self.lambda = lambda;
        self
    }
    /// Sets [`batch`](Self::batch).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }
    /// Sets [`seed`](Self::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets [`divergence`](Self::divergence).
    pub fn divergence(mut self, divergence: Divergence) -> Self {
        self.divergence = divergence;
        self
    }
    /// Sets [`early_stop`](Self::early_stop).
    pub fn early_stop(mut self, early_stop: Option<EarlyStop>) -> Self {
        self.early_stop = early_stop;
        self
    }

    /// Checks every setting, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::setting("lr", self.lr, "a finite number > 0"));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::setting(
                "lambda",
                self.lambda,
                "a finite number >= 0",
            ));
        }
        if self.batch == 0 {
            return Err(Error::setting("batch", 0, "at least 1"));
        }
        if let Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        } = self.optimizer
        {
            for (key, b) in [("adam.beta1", beta1), ("adam.beta2", beta2)] {
                if !(0.0..1.0).contains(&b) {
                    return Err(Error::setting(key, b, "a number in [0, 1)"));
                }
            }
            if !(epsilon.is_finite() && epsilon > 0.0) {
                return Err(Error::setting(
                    "adam.epsilon",
                    epsilon,
                    "a finite number > 0",
                ));
            }
        }
        if let Some(es) = &self.early_stop {
            if es.window == 0 {
                return Err(Error::setting("early_stop.window", 0, "at least 1"));
            }
            if !(es.tolerance.is_finite() && es.tolerance >= 0.0) {
                return Err(Error::setting(
                    "early_stop.tolerance",
                    es.tolerance,
                    "a finite number >= 0",
                ));
            }
        }
        Ok(())
    }
}

/// One sample of a finished search.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRecord {
    /// The starting latent z0.
    pub z0: Vec<f32>,
    /// The latent the search ended at.
    pub z: Vec<f32>,
    /// The divergence at z0.
    pub divergence_before: f64,
    /// The divergence at z.
    pub divergence_after: f64,
    /// Each model's probabilities at z0: `[model][class]`.
    pub probs_before: Vec<Vec<f32>>,
    /// Each model's probabilities at z: `[model][class]`.
    pub probs_after: Vec<Vec<f32>>,
    /// ‖z − z0‖ / ‖z‖.
    pub dz: f64,
    /// Each [`Measure`]'s value at z0, in the order they were added.
    pub measures_before: Vec<f64>,
    /// Each [`Measure`]'s value at z.
    pub measures_after: Vec<f64>,
}

/// The state of the batch at one step (step 0 is z0).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The step: 0 is the starting point, t is after t updates.
    pub step: usize,
    /// Mean over samples of D + λ log p(z).
    pub mean_objective: f64,
    /// Mean divergence over samples.
    pub mean_divergence: f64,
    /// Largest divergence over samples.
    pub max_divergence: f64,
    /// Mean over samples of ‖z − z0‖ / ‖z‖.
    pub mean_dz: f64,
    /// Mean over samples of each [`Measure`], in the order they were added.
    pub mean_measures: Vec<f64>,
}

/// A per-sample quantity measured from every model's probabilities at each
/// step of a search and recorded beside the divergence (the hierarchical
/// prediction-set distance of [`crate::hierarchy`] is one). It observes the
/// search; it does not steer it.
pub trait Measure {
    /// Its name, e.g. `set distance (top-3)`.
    fn name(&self) -> String;
    /// One value per sample, from the probabilities `[model][sample][class]`.
    fn measure(&self, probs: &[Vec<Vec<f32>>]) -> Vec<f64>;
}

/// The divergence over fresh prior samples: what the search must beat.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// One divergence per fresh sample (as many as the search's batch).
    pub divergences: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their maximum.
    pub max: f64,
}

/// Where in the search's pipeline a NaN or an infinity first appeared.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonFiniteSite {
    /// The latent z itself (after an update, or a z0 given so).
    Latent,
    /// The decoded samples g(z) of the named generator.
    GeneratorOutput(String),
    /// The logits of the named classifier.
    Logits(String),
    /// log p(z) of the named generator's prior.
    LogPrior(String),
    /// The divergence, from finite logits.
    Divergence,
    /// The objective D + λ log p(z), from a finite divergence and log p(z).
    Objective,
    /// The gradient of the objective with respect to z.
    Gradient,
}

impl NonFiniteSite {
    /// What to check or try, for the error message.
    pub fn hint(&self) -> &'static str {
        match self {
            NonFiniteSite::Latent => {
                "the update overflowed, or z0 was not finite: lower `lr`, or check z0"
            }
            NonFiniteSite::GeneratorOutput(_) => {
                "check the generator's weights and decoder (a NaN image can pass a \
                 classifier's ReLU as a confident class)"
            }
            NonFiniteSite::Logits(_) => {
                "check the classifier's weights, and that it takes the generator's samples"
            }
            NonFiniteSite::LogPrior(_) => "check the generator's `log_prior`",
            NonFiniteSite::Divergence | NonFiniteSite::Objective => {
                "the models' probabilities are too extreme for the divergence: lower `lr`, \
                 or raise `lambda`"
            }
            NonFiniteSite::Gradient => {
                "a backward pass overflowed or emitted NaN: lower `lr`, or audit the models' \
                 gradients (`GradientAudit`)"
            }
        }
    }
}

impl fmt::Display for NonFiniteSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NonFiniteSite::Latent => f.write_str("the latent z"),
            NonFiniteSite::GeneratorOutput(g) => write!(f, "the output of generator `{g}`"),
            NonFiniteSite::Logits(c) => write!(f, "a logit of classifier `{c}`"),
            NonFiniteSite::LogPrior(g) => write!(f, "log p(z) of generator `{g}`"),
            NonFiniteSite::Divergence => f.write_str("the divergence"),
            NonFiniteSite::Objective => f.write_str("the objective"),
            NonFiniteSite::Gradient => f.write_str("the gradient with respect to z"),
        }
    }
}

/// When in a search something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchStage {
    /// At step t of the ascent (0 is z0; the gradient of step t is the one
    /// taken from z_t).
    Step(usize),
    /// While computing the null baseline.
    Baseline,
}

impl fmt::Display for SearchStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchStage::Step(t) => write!(f, "at step {t}"),
            SearchStage::Baseline => f.write_str("in the null baseline"),
        }
    }
}

/// A search that ran to the end but whose ascent went wrong; see
/// [`SearchOutcome::warnings`] for the criteria.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AscentWarning {
    /// The mean objective at the last step is below its value at step 0:
    /// the ascent descended.
    ObjectiveFell {
        /// The mean objective at step 0.
        start: f64,
        /// The mean objective at the last step.
        end: f64,
    },
    /// z ran away from the prior: at least half the samples ended at least
    /// [`RUNAWAY_GROWTH`] times as far from the origin as they started, so
    /// that dz = ‖z − z0‖ / ‖z‖ saturates near 1.
    RanAway {
        /// Samples whose ‖z‖ grew at least [`RUNAWAY_GROWTH`]-fold.
        samples: usize,
        /// Samples in the batch.
        batch: usize,
        /// The mean dz at the end.
        mean_dz: f64,
    },
}

impl AscentWarning {
    /// A short name of what happened, without figures: `objective fell` or
    /// `z ran away` (what a snapshot records).
    pub fn kind(&self) -> &'static str {
        match self {
            AscentWarning::ObjectiveFell { .. } => "objective fell",
            AscentWarning::RanAway { .. } => "z ran away",
        }
    }
}

/// The growth of ‖z‖ / ‖z0‖ from which a sample counts as run away (its dz
/// is then within 0.9 .. 1.1).
pub const RUNAWAY_GROWTH: f64 = 10.0;

impl fmt::Display for AscentWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AscentWarning::ObjectiveFell { start, end } => write!(
                f,
                "the ascent lowered its objective: the mean objective fell from {start:.4e} \
                 at step 0 to {end:.4e} at the end; lower `lr`, or try the other optimizer"
            ),
            AscentWarning::RanAway {
                samples,
                batch,
                mean_dz,
            } => write!(
                f,
                "z ran away: {samples} of {batch} samples ended at least {RUNAWAY_GROWTH} \
                 times as far from the origin as they started (mean dz {mean_dz:.3}, \
                 saturated near 1), where the prior holds nothing; lower `lr`, or raise \
                 `lambda`"
            ),
        }
    }
}

/// Everything a search found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SearchOutcome {
    /// The settings it ran with.
    pub config: SearchConfig,
    /// The classifiers' names, in order.
    pub model_names: Vec<String>,
    /// The class names of the first classifier.
    pub class_names: Vec<String>,
    /// The names of the [`Measure`]s recorded, in order.
    pub measure_names: Vec<String>,
    /// One record per sample.
    pub samples: Vec<SampleRecord>,
    /// One record per step, from 0 (z0) to `steps_run` (the final z).
    pub trajectory: Vec<StepRecord>,
    /// The null baseline.
    pub baseline: Baseline,
    /// Ascent steps taken (fewer than `config.steps` after an early stop).
    pub steps_run: usize,
    /// Whether the early stop ended the search.
    pub stopped_early: bool,
    /// The decoded starting batch g(z0).
    pub x0: Tensor,
    /// The decoded final batch g(z).
    pub x: Tensor,
}

impl SearchOutcome {
    /// Mean divergence at z0.
    pub fn mean_divergence_before(&self) -> f64 {
        mean(self.samples.iter().map(|s| s.divergence_before))
    }
    /// Mean divergence at the final z.
    pub fn mean_divergence_after(&self) -> f64 {
        mean(self.samples.iter().map(|s| s.divergence_after))
    }
    /// Mean of ‖z − z0‖ / ‖z‖ over samples.
    pub fn mean_dz(&self) -> f64 {
        mean(self.samples.iter().map(|s| s.dz))
    }
    /// Mean divergence after the search / mean baseline divergence. Infinite
    /// when the baseline is exactly 0 and the search found any divergence.
    pub fn lift(&self) -> f64 {
        self.mean_divergence_after() / self.baseline.mean
    }

    /// What went wrong in an ascent that ran to the end, in this order:
    ///
    /// - [`AscentWarning::ObjectiveFell`]: the mean objective at the last
    ///   step is below its value at step 0 (none after 0 steps);
    /// - [`AscentWarning::RanAway`]: at least half the samples have
    ///   ‖z‖ ≥ [`RUNAWAY_GROWTH`] · ‖z0‖ (and moved at all).
    ///
    /// Empty for a sound search.
    pub fn warnings(&self) -> Vec<AscentWarning> {
        let mut out = Vec::new();
        if let (Some(first), Some(last)) = (self.trajectory.first(), self.trajectory.last()) {
            if self.steps_run > 0 && last.mean_objective < first.mean_objective {
                out.push(AscentWarning::ObjectiveFell {
                    start: first.mean_objective,
                    end: last.mean_objective,
                });
            }
        }
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let ran_away = self
            .samples
            .iter()
            .filter(|s| s.z != s.z0 && norm(&s.z) >= RUNAWAY_GROWTH * norm(&s.z0))
            .count();
        let batch = self.samples.len();
        if batch > 0 && 2 * ran_away >= batch {
            out.push(AscentWarning::RanAway {
                samples: ran_away,
                batch,
                mean_dz: self.mean_dz(),
            });
        }
        out
    }
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    values.sum::<f64>() / n as f64
}

/// A search over the latent space of one generator for the samples on which
/// its classifiers disagree most.
///
/// ```
/// # fn main() -> gevaldi::Result<()> {
/// use candle_core::Device;
/// use gevaldi::{zoo, Search, SearchConfig};
///
/// let dev = Device::Cpu;
/// let (a, b) = (zoo::MnistCnn::random(&zoo::MnistCnnConfig::cnn_a(), 1, &dev)?,
///               zoo::MnistCnn::random(&zoo::MnistCnnConfig::cnn_b(), 2, &dev)?);
/// let vae = zoo::MnistVae::random(&zoo::MnistVaeConfig::default(), 3, &dev)?;
/// let outcome = Search::new("vae", &vae)
///     .classifier("cnn_a", &a)
///     .classifier("cnn_b", &b)
///     .config(SearchConfig::default().steps(5).batch(4))
///     .run(&dev)?;
/// assert_eq!(outcome.trajectory.len(), 6);
/// # Ok(()) }
/// ```
pub struct Search<'a> {
    generator_name: String,
    generator: &'a dyn Generator,
    classifiers: Vec<(String, &'a dyn Classifier)>,
    measures: Vec<&'a dyn Measure>,
    config: SearchConfig,
    z0: Option<Tensor>,
    condition: Option<Tensor>,
    progress: Option<&'a dyn Fn(usize)>,
}

struct Evaluation {
    x: Tensor,
    logits: Vec<Tensor>,
    log_probs: Vec<Tensor>,
    divergence: Tensor,
}

impl<'a> Search<'a> {
    /// A search over the latent space of `generator`, with the default
    /// [`SearchConfig`] and no classifiers yet.
    pub fn new(name: impl Into<String>, generator: &'a dyn Generator) -> Self {
        Search {
            generator_name: name.into(),
            generator,
            classifiers: Vec::new(),
            measures: Vec::new(),
            config: SearchConfig::default(),
            z0: None,
            condition: None,
            progress: None,
        }
    }

    /// Adds a classifier. Order matters for directed divergences (`kl` is
    /// KL(first ‖ second)).
    pub fn classifier(mut self, name: impl Into<String>, classifier: &'a dyn Classifier) -> Self {
        self.classifiers.push((name.into(), classifier));
        self
    }

    /// Records `measure` per sample before and after the search, and its
    /// mean at every step. (Default: no measures.)
    pub fn measure(mut self, measure: &'a dyn Measure) -> Self {
        self.measures.push(measure);
        self
    }

    /// Sets the search's settings. (Default: [`SearchConfig::default`].)
    pub fn config(mut self, config: SearchConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts from the given latents `[B, d]` instead of prior samples; B
    /// then overrides `config.batch`. (Default: B prior samples drawn with
    /// `config.seed`.)
    pub fn z0(mut self, z0: Tensor) -> Self {
        self.z0 = Some(z0);
        self
    }

    /// The class condition `[B, C]` of a class-conditional generator, held
    /// fixed during the search and used for the baseline too. (Default: none;
    /// required when the generator is conditional.)
    pub fn condition(mut self, condition: Tensor) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Calls `progress(t)` once the search has evaluated step t (t = 0 is
    /// the start, t = `steps` the last), e.g. to drive a progress bar.
    /// (Default: none.)
    pub fn progress(mut self, progress: &'a dyn Fn(usize)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Runs the search on `device`.
    pub fn run(&self, device: &Device) -> Result<SearchOutcome> {
        let cfg = &self.config;
        cfg.validate()?;
        cfg.divergence.check(self.classifiers.len())?;
        let d = self.generator.latent_dim();
        let sample = |n, rng: &mut ChaCha8Rng| {
            self.generator
                .sample_prior(n, rng, device)
                .map_err(Error::model(&self.generator_name, "sample the prior"))
        };
        let z0 = match &self.z0 {
            Some(z0) => z0
                .to_device(device)
                .and_then(|z| z.to_dtype(DType::F32))
                .map_err(Error::tensor("move z0 to the device"))?,
            None => sample(cfg.batch, &mut ChaCha8Rng::seed_from_u64(cfg.seed))?,
        };
        let (b, dz0) = z0.dims2().map_err(Error::tensor("read the shape of z0"))?;
        if dz0 != d {
            return Err(self.shape_error("z0", format!("[B, {d}]"), &z0));
        }
        // Drawn before any step so that the baseline does not depend on the
        // number of steps, from its own stream so that it is not z0.
        let z_baseline = sample(b, &mut baseline_rng(cfg.seed))?;
        self.check_condition(b)?;

        let z = Var::from_tensor(&z0).map_err(Error::tensor("make z a variable"))?;
        let mut adam_state: Option<(Tensor, Tensor)> = None;
        let mut trajectory = Vec::with_capacity(cfg.steps + 1);
        let mut first: Option<Start> = None;
        let mut step = 0;
        // The gradient of the previous step, checked with this step's read.
        let mut last_grad: Option<Tensor> = None;
        let (last, last_div, last_measured, last_dz) = loop {
            let eval = self.evaluate(z.as_tensor(), b)?;
            let log_prior = self
                .generator
                .log_prior(z.as_tensor())
                .map_err(Error::model(&self.generator_name, "compute log p(z)"))?;
            let objective = log_prior
                .affine(cfg.lambda, 0.0)
                .and_then(|prior| &eval.divergence + prior)
                .map_err(Error::tensor("add the prior term to the objective"))?;
            let dz = self.dz(z.as_tensor(), &z0)?;
            let at = SearchStage::Step(step);
            let mut probes = Vec::with_capacity(self.classifiers.len() + 4);
            if let Some(g) = &last_grad {
                probes.push((NonFiniteSite::Gradient, SearchStage::Step(step - 1), g));
            }
            probes.push((NonFiniteSite::Latent, at, z.as_tensor()));
            probes.extend(self.eval_probes(&eval, at));
            probes.push((
                NonFiniteSite::LogPrior(self.generator_name.clone()),
                at,
                &log_prior,
            ));
            let mut figures = read_checked(
                &probes,
                &[
                    (NonFiniteSite::Divergence, &eval.divergence),
                    (NonFiniteSite::Objective, &objective),
                ],
                &[&dz],
                at,
            )?
            .into_iter();
            let (div, obj, dz) = match (figures.next(), figures.next(), figures.next()) {
                (Some(div), Some(obj), Some(dz)) => (div, obj, dz),
                _ => unreachable!("three figures were read"),
            };
            let measured = self.measured(&eval)?;
            trajectory.push(StepRecord {
                step,
                mean_objective: mean(obj.iter().copied()),
                mean_divergence: mean(div.iter().copied()),
                max_divergence: div.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean_dz: mean(dz.iter().copied()),
                mean_measures: measured.iter().map(|m| mean(m.iter().copied())).collect(),
            });
            if let Some(progress) = self.progress {
                progress(step);
            }
            let stalled = cfg.early_stop.as_ref().is_some_and(|es| {
                step >= es.window
                    && trajectory[step].mean_objective - trajectory[step - es.window].mean_objective
                        < es.tolerance
            });
            if step == cfg.steps || stalled {
                break (eval, div, measured, dz);
            }
            if first.is_none() {
                first = Some((eval.x.detach(), probs(&eval.log_probs)?, div, measured));
            }

            if step == 0 {
                self.check_divergence_reaches_z(&eval.divergence, &z)?;
            }
            let grads = objective
                .sum_all()
                .and_then(|o| o.backward())
                .map_err(Error::tensor(format!("backpropagate at step {step}")))?;
            let grad = grads
                .get(z.as_tensor())
                .ok_or_else(|| Error::MissingGradient {
                    model: self.chain_name(),
                    input: "latent z",
                })?;
            let update = self
                .update(grad, &mut adam_state, step + 1)
                .map_err(Error::tensor(format!("update z at step {step}")))?;
            z.set(&(z.as_tensor() + update).map_err(Error::tensor("update z"))?)
                .map_err(Error::tensor("update z"))?;
            last_grad = Some(grad.detach());
            step += 1;
        };
        let stopped_early = step < cfg.steps;
        let probs_after = probs(&last.log_probs)?;
        let (x0, probs_before, first_div, first_measured) = match first {
            Some(f) => f,
            None => (
                last.x.detach(),
                probs_after.clone(),
                last_div.clone(),
                last_measured.clone(),
            ),
        };

        let baseline = self.evaluate(&z_baseline, b)?;
        let at = SearchStage::Baseline;
        let mut probes = vec![(NonFiniteSite::Latent, at, &z_baseline)];
        probes.extend(self.eval_probes(&baseline, at));
        let baseline_div = read_checked(
            &probes,
            &[(NonFiniteSite::Divergence, &baseline.divergence)],
            &[],
            at,
        )?
        .swap_remove(0);
        let z0_rows = z0.to_vec2::<f32>().map_err(Error::tensor("read z0"))?;
        let z_rows = z
            .as_tensor()
            .to_vec2::<f32>()
            .map_err(Error::tensor("read z"))?;
        let samples = (0..b)
            .map(|i| SampleRecord {
                z0: z0_rows[i].clone(),
                z: z_rows[i].clone(),
                divergence_before: first_div[i],
                divergence_after: last_div[i],
                probs_before: probs_before.iter().map(|m| m[i].clone()).collect(),
                probs_after: probs_after.iter().map(|m| m[i].clone()).collect(),
                dz: last_dz[i],
                measures_before: first_measured.iter().map(|m| m[i]).collect(),
                measures_after: last_measured.iter().map(|m| m[i]).collect(),
            })
            .collect();
        Ok(SearchOutcome {
            config: SearchConfig {
                batch: b,
                ..cfg.clone()
            },
            model_names: self.classifiers.iter().map(|(n, _)| n.clone()).collect(),
            class_names: self.classifiers[0].1.class_names().to_vec(),
            measure_names: self.measures.iter().map(|m| m.name()).collect(),
            samples,
            trajectory,
            baseline: Baseline {
                mean: mean(baseline_div.iter().copied()),
                max: baseline_div
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max),
                divergences: baseline_div,
            },
            steps_run: step,
            stopped_early,
            x0,
            x: last.x.detach(),
        })
    }

    /// The generator's output and each classifier's logits, to check.
    fn eval_probes<'e>(&self, eval: &'e Evaluation, at: SearchStage) -> Vec<Probe<'e>> {
        let x = (
            NonFiniteSite::GeneratorOutput(self.generator_name.clone()),
            at,
            &eval.x,
        );
        let logits = self
            .classifiers
            .iter()
            .zip(&eval.logits)
            .map(|((name, _), l)| (NonFiniteSite::Logits(name.clone()), at, l));
        std::iter::once(x).chain(logits).collect()
    }

    /// Decodes z, runs every classifier and computes the divergence.
    fn evaluate(&self, z: &Tensor, b: usize) -> Result<Evaluation> {
        let x = self
            .generator
            .decode(z, self.condition.as_ref())
            .map_err(Error::model(&self.generator_name, "decode z"))?;
        let mut log_probs = Vec::with_capacity(self.classifiers.len());
        let mut all_logits = Vec::with_capacity(self.classifiers.len());
        let mut classes = None;
        for (name, classifier) in &self.classifiers {
            let logits = classifier.logits(&x).map_err(|e| {
                // Named with the input's shape: a generator whose samples do
                // not fit the classifier is the usual cause.
                Error::model(
                    name,
                    format!(
                        "compute logits of `{}`'s samples of shape {:?}",
                        self.generator_name,
                        x.dims()
                    ),
                )(e)
            })?;
            let k = classifier.num_classes();
            if logits.dims() != [b, k] {
                return Err(self.shape_error_of(name, "logits", format!("[{b}, {k}]"), &logits));
            }
            match classes {
                None => classes = Some((name, k)),
                Some((first, expected)) if expected != k => {
                    return Err(Error::ClassCount {
                        first: first.clone(),
                        expected,
                        model: name.clone(),
                        got: k,
                    })
                }
                Some(_) => {}
            }
            let lp = candle_nn::ops::log_softmax(&logits, 1)
                .map_err(Error::model(name, "compute log-probabilities"))?;
            log_probs.push(lp);
            all_logits.push(logits);
        }
        let divergence = self.config.divergence.compute(&log_probs)?;
        Ok(Evaluation {
            x,
            logits: all_logits,
            log_probs,
            divergence,
        })
    }

    /// Each measure's values `[measure][sample]` (nothing to read when there
    /// are no measures).
    fn measured(&self, eval: &Evaluation) -> Result<Vec<Vec<f64>>> {
        if self.measures.is_empty() {
            return Ok(Vec::new());
        }
        let p = probs(&eval.log_probs)?;
        Ok(self.measures.iter().map(|m| m.measure(&p)).collect())
    }

    /// The prior term always has a gradient, so a divergence whose gradient
    /// was dropped (an op without backward in a model) would leave a search
    /// that only walks towards the prior's mode. One extra backward pass, at
    /// step 0, rules that out.
    fn check_divergence_reaches_z(&self, divergence: &Tensor, z: &Var) -> Result<()> {
        let grads = divergence
            .sum_all()
            .and_then(|d| d.backward())
            .map_err(Error::tensor("backpropagate the divergence"))?;
        match grads.get(z.as_tensor()) {
            Some(_) => Ok(()),
            None => Err(Error::MissingGradient {
                model: self.chain_name(),
                input: "latent z",
            }),
        }
    }

    fn update(
        &self,
        grad: &Tensor,
        adam_state: &mut Option<(Tensor, Tensor)>,
        t: usize,
    ) -> candle_core::Result<Tensor> {
        let lr = self.config.lr;
        match self.config.optimizer {
            Optimizer::Sgd => grad.affine(lr, 0.0),
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let (m, v) = match adam_state.take() {
                    Some(state) => state,
                    None => (grad.zeros_like()?, grad.zeros_like()?),
                };
                let m = (m.affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?;
                let v = (v.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                let m_hat = m.affine(1.0 / (1.0 - beta1.powi(t as i32)), 0.0)?;
                let v_hat = v.affine(1.0 / (1.0 - beta2.powi(t as i32)), 0.0)?;
                let update = (m_hat / (v_hat.sqrt()? + epsilon)?)?.affine(lr, 0.0)?;
                *adam_state = Some((m, v));
                Ok(update)
            }
        }
    }

    /// ‖z − z0‖ / ‖z‖ per sample, `[B]`.
    fn dz(&self, z: &Tensor, z0: &Tensor) -> Result<Tensor> {
        let norm = |t: &Tensor| t.sqr()?.sum(1)?.sqrt();
        (|| norm(&(z - z0)?)? / norm(z)?)().map_err(Error::tensor("compute dz"))
    }

    fn check_condition(&self, b: usize) -> Result<()> {
        match (self.generator.num_conditions(), &self.condition) {
            (None, None) => Ok(()),
            (Some(c), Some(cond)) if cond.dims() == [b, c] => Ok(()),
            (Some(c), Some(cond)) => Err(Error::setting(
                "condition",
                format!("a tensor of shape {:?}", cond.dims()),
                format!("[{b}, {c}] for generator `{}`", self.generator_name),
            )),
            (Some(c), None) => Err(Error::setting(
                "condition",
                "none",
                format!(
                    "a class condition [B, {c}]: generator `{}` is class-conditional",
                    self.generator_name
                ),
            )),
            (None, Some(_)) => Err(Error::setting(
                "condition",
                "a tensor",
                format!("none: generator `{}` is unconditional", self.generator_name),
            )),
        }
    }

    fn chain_name(&self) -> String {
        let names: Vec<&str> = self.classifiers.iter().map(|(n, _)| n.as_str()).collect();
        format!("{} -> {}", self.generator_name, names.join(", "))
    }

    fn shape_error(&self, what: &str, expected: String, t: &Tensor) -> Error {
        self.shape_error_of(&self.generator_name, what, expected, t)
    }

    fn shape_error_of(&self, model: &str, what: &str, expected: String, t: &Tensor) -> Error {
        Error::Shape {
            model: model.to_string(),
            what: what.to_string(),
            expected,
            got: t.dims().to_vec(),
        }
    }
}

/// x0, each model's probabilities `[model][sample][class]`, the divergence
/// and the measures `[measure][sample]` at z0.
type Start = (Tensor, Vec<Vec<Vec<f32>>>, Vec<f64>, Vec<Vec<f64>>);

/// A tensor whose first dimension is the batch, checked for NaN and
/// infinities, with where and when it was computed.
type Probe<'t> = (NonFiniteSite, SearchStage, &'t Tensor);

/// The seeded stream of the baseline's latents: stream 1 of `seed` (z0 is
/// drawn from stream 0), so that the baseline is neither z0 nor depends on
/// whether z0 was given.
fn baseline_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

/// Reads, in one transfer, the sum of each probe and every value of the
/// per-sample `checked` and `plain` figures (`[B]` each), and returns the
/// figures, `checked` first, as f64. The first probe, in order, that holds
/// a NaN or an infinity, and then the first checked figure that does, is
/// an [`Error::NonFinite`]; a probe is read in full only when its sum is
/// not finite (a sum that merely overflowed is no error).
fn read_checked(
    probes: &[Probe<'_>],
    checked: &[(NonFiniteSite, &Tensor)],
    plain: &[&Tensor],
    at: SearchStage,
) -> Result<Vec<Vec<f64>>> {
    let read = || -> candle_core::Result<Vec<f64>> {
        let mut parts = Vec::with_capacity(probes.len() + checked.len() + plain.len());
        for (_, _, t) in probes {
            parts.push(t.sum_all()?.to_dtype(DType::F64)?.reshape(1)?);
        }
        for t in checked.iter().map(|(_, t)| *t).chain(plain.iter().copied()) {
            parts.push(t.flatten_all()?.to_dtype(DType::F64)?);
        }
        Tensor::cat(&parts, 0)?.to_vec1::<f64>()
    };
    let values = read().map_err(Error::tensor(format!("read the figures {at}")))?;
    let (sums, mut rest) = values.split_at(probes.len());
    for ((site, stage, t), sum) in probes.iter().zip(sums) {
        if !sum.is_finite() {
            if let Some((sample, value)) = first_non_finite(t, *stage)? {
                return Err(Error::NonFinite {
                    site: site.clone(),
                    stage: *stage,
                    sample,
                    value,
                });
            }
        }
    }
    let mut figures = Vec::with_capacity(checked.len() + plain.len());
    for (i, t) in checked
        .iter()
        .map(|(_, t)| *t)
        .chain(plain.iter().copied())
        .enumerate()
    {
        let (figure, tail) = rest.split_at(t.elem_count());
        rest = tail;
        if let Some((site, _)) = checked.get(i) {
            if let Some(sample) = figure.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    site: site.clone(),
                    stage: at,
                    sample,
                    value: figure[sample],
                });
            }
        }
        figures.push(figure.to_vec());
    }
    Ok(figures)
}

/// The first sample of `t` (batch first) with a NaN or an infinity, and
/// that value.
fn first_non_finite(t: &Tensor, at: SearchStage) -> Result<Option<(usize, f64)>> {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(Error::tensor(format!("read a non-finite tensor {at}")))?;
    let per_sample = match t.dims().first() {
        Some(&b) if b > 0 => values.len() / b,
        _ => values.len(),
    };
    Ok(values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i / per_sample.max(1), values[i])))
}

/// exp of each model's log-probabilities, as `[model][sample][class]`.
fn probs(log_probs: &[Tensor]) -> Result<Vec<Vec<Vec<f32>>>> {
    log_probs
        .iter()
        .map(|lp| {
            lp.exp()
                .and_then(|p| p.to_vec2::<f32>())
                .map_err(Error::tensor("read probabilities"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(objectives: &[f64], z0_z: &[(Vec<f32>, Vec<f32>)]) -> SearchOutcome {
        let step = |(i, &o): (usize, &f64)| StepRecord {
            step: i,
            mean_objective: o,
            mean_divergence: 0.0,
            max_divergence: 0.0,
            mean_dz: 0.0,
            mean_measures: vec![],
        };
        let sample = |(z0, z): &(Vec<f32>, Vec<f32>)| SampleRecord {
            z0: z0.clone(),
            z: z.clone(),
            divergence_before: 0.0,
            divergence_after: 0.0,
            probs_before: vec![],
            probs_after: vec![],
            dz: 0.5,
            measures_before: vec![],
            measures_after: vec![],
        };
        let x = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        SearchOutcome {
            config: SearchConfig::default(),
            model_names: vec![],
            class_names: vec![],
            measure_names: vec![],
            samples: z0_z.iter().map(sample).collect(),
            trajectory: objectives.iter().enumerate().map(step).collect(),
            baseline: Baseline {
                divergences: vec![],
                mean: 1.0,
                max: 1.0,
            },
            steps_run: objectives.len().saturating_sub(1),
            stopped_early: false,
            x0: x.clone(),
            x,
        }
    }

    #[test]
    fn warnings_follow_their_documented_criteria() {
        let stay = (vec![1.0, 0.0], vec![2.0, 1.0]);
        // ‖z‖ = 10 ‖z0‖ exactly: run away.
        let away = (vec![0.0, 0.5], vec![0.0, 5.0]);
        let almost = (vec![0.0, 0.5], vec![0.0, 4.9]);
        assert_eq!(
            outcome(&[1.0, 2.0, 1.5], std::slice::from_ref(&stay)).warnings(),
            []
        );
        assert_eq!(
            outcome(&[1.0, 2.0, 0.5], std::slice::from_ref(&stay)).warnings(),
            [AscentWarning::ObjectiveFell {
                start: 1.0,
                end: 0.5
            }]
        );
        // No steps, nothing to fall.
        assert_eq!(outcome(&[1.0], std::slice::from_ref(&stay)).warnings(), []);
        // Half the samples is enough; fewer is not.
        let w = outcome(&[0.0, 1.0], &[stay.clone(), away.clone()]).warnings();
        assert_eq!(
            w,
            [AscentWarning::RanAway {
                samples: 1,
                batch: 2,
                mean_dz: 0.5
            }]
        );
        assert!(w[0].to_string().contains("1 of 2 samples"), "{}", w[0]);
        let three = [stay.clone(), away.clone(), almost.clone()];
        assert_eq!(outcome(&[0.0, 1.0], &three).warnings(), []);
        // A sample at the origin that stayed there did not run away.
        let still = (vec![0.0, 0.0], vec![0.0, 0.0]);
        assert_eq!(outcome(&[0.0, 1.0], &[still]).warnings(), []);
    }

    #[test]
    fn the_baseline_stream_is_not_z0s() {
        let draw = |rng: &mut ChaCha8Rng| {
            crate::model::sample_standard_normal((4, 3), rng, &Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .unwrap()
        };
        let z0 = draw(&mut ChaCha8Rng::seed_from_u64(9));
        let baseline = draw(&mut baseline_rng(9));
        assert_ne!(z0, baseline);
        assert_eq!(baseline, draw(&mut baseline_rng(9)));
        assert_ne!(baseline, draw(&mut baseline_rng(10)));
    }

    #[test]
    fn non_finite_sites_and_stages_read_as_sentences() {
        let err = Error::NonFinite {
            site: NonFiniteSite::Logits("cnn_a".into()),
            stage: SearchStage::Step(2),
            sample: 3,
            value: f64::INFINITY,
        };
        let msg = err.to_string();
        assert!(
            msg.contains("a logit of classifier `cnn_a` is inf at step 2 for sample 3"),
            "{msg}"
        );
        assert!(msg.contains("check the classifier"), "{msg}");
    }
}
