//! What a search finds: per sample, per step, the baseline, and what went wrong with the ascent.

use std::fmt;

use candle_core::Tensor;

use super::config::SearchConfig;
use crate::model::LatentSupport;

/// One sample of a finished search.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRecord {
    /// The starting latent z0.
    pub z0: Vec<f32>,
    /// The latent the search ended at.
    pub z: Vec<f32>,
    /// How many coordinates of z lie outside the generator's support
    /// ([`crate::Generator::latent_support`], e.g. BigGAN's truncation
    /// box); `None` where the generator states none (and in records
    /// written before it was counted). z0 from the prior has none outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_support: Option<usize>,
    /// The divergence at z0.
    pub divergence_before: f64,
    /// The divergence at z.
    pub divergence_after: f64,
    /// Each model's log-probabilities at z0: `[model][class]`
    /// ([`Self::probs_before`] for probabilities). Log-probabilities keep
    /// the order of classes whose probabilities underflow to 0 in f32
    /// (below e⁻¹⁰³), which a search towards confident disagreement reaches.
    pub log_probs_before: Vec<Vec<f32>>,
    /// Each model's log-probabilities at z: `[model][class]`
    /// ([`Self::probs_after`] for probabilities).
    pub log_probs_after: Vec<Vec<f32>>,
    /// ‖z − z0‖ / ‖z‖.
    pub dz: f64,
    /// Each [`Measure`]'s value at z0, in the order they were added.
    pub measures_before: Vec<f64>,
    /// Each [`Measure`]'s value at z.
    pub measures_after: Vec<f64>,
}

impl SampleRecord {
    /// Each model's probabilities at z0: `[model][class]`.
    pub fn probs_before(&self) -> Vec<Vec<f32>> {
        exp(&self.log_probs_before)
    }

    /// Each model's probabilities at z: `[model][class]`.
    pub fn probs_after(&self) -> Vec<Vec<f32>> {
        exp(&self.log_probs_after)
    }
}

fn exp(log_probs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    log_probs
        .iter()
        .map(|m| m.iter().map(|v| v.exp()).collect())
        .collect()
}

/// Every model's log-probabilities at one evaluation of a search's batch,
/// `[model][sample][class]`, as a [`Measure`] reads them. Log-probabilities
/// rather than probabilities: classes whose probabilities underflow to 0
/// in f32 (below e⁻¹⁰³) keep their order, and a search towards confident
/// disagreement reaches them (two models' top-3 sets disjoint, read as
/// sharing two classes where the rest were all 0).
#[derive(Clone, Copy, Debug)]
pub struct LogProbs<'a>(pub &'a [Vec<Vec<f32>>]);

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

/// A per-sample quantity measured from every model's log-probabilities at
/// each step of a search and recorded beside the divergence (the hierarchical
/// prediction-set distance of [`crate::hierarchy`] is one). It observes the
/// search; it does not steer it.
pub trait Measure {
    /// Its name, e.g. `set distance (top-3)`.
    fn name(&self) -> String;
    /// One value per sample, from every model's log-probabilities.
    fn measure(&self, log_probs: LogProbs<'_>) -> Vec<f64>;
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
    /// The objective rose but the divergence fell: the mean divergence at
    /// the final z is below its mean at z0 (by more than
    /// [`DIVERGENCE_FALL`] of it), the prior term λ · log p(z)
    /// having outweighed it (two nearly agreeing models, whose divergence
    /// is small beside the prior's). The search then found less
    /// disagreement than it started from.
    DivergenceFell {
        /// The mean divergence at z0.
        start: f64,
        /// The mean divergence at the final z.
        end: f64,
        /// The search's λ.
        lambda: f64,
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
    /// What happened, without figures (what a snapshot records).
    pub fn kind(&self) -> AscentWarningKind {
        match self {
            AscentWarning::ObjectiveFell { .. } => AscentWarningKind::ObjectiveFell,
            AscentWarning::DivergenceFell { .. } => AscentWarningKind::DivergenceFell,
            AscentWarning::RanAway { .. } => AscentWarningKind::RanAway,
        }
    }
}

/// The kind of an [`AscentWarning`], without its figures: what a snapshot's
/// `warnings` line and a record hold, by [`AscentWarningKind::name`] (an
/// unknown name in a record is an error naming the known ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AscentWarningKind {
    /// [`AscentWarning::ObjectiveFell`]: `objective fell`.
    #[serde(rename = "objective fell")]
    ObjectiveFell,
    /// [`AscentWarning::DivergenceFell`]: `divergence fell`.
    #[serde(rename = "divergence fell")]
    DivergenceFell,
    /// [`AscentWarning::RanAway`]: `z ran away`.
    #[serde(rename = "z ran away")]
    RanAway,
}

impl AscentWarningKind {
    /// A short name of what happened: `objective fell`, `divergence fell`
    /// or `z ran away`.
    pub fn name(self) -> &'static str {
        match self {
            AscentWarningKind::ObjectiveFell => "objective fell",
            AscentWarningKind::DivergenceFell => "divergence fell",
            AscentWarningKind::RanAway => "z ran away",
        }
    }
}

impl fmt::Display for AscentWarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The share of its mean at z0 by which the mean divergence must fall for
/// [`AscentWarning::DivergenceFell`]: a TV saturated near 1 that moved in
/// its sixth digit (0.99899 to 0.99899) is no search gone wrong.
pub const DIVERGENCE_FALL: f64 = 0.01;

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
            AscentWarning::DivergenceFell { start, end, lambda } => write!(
                f,
                "the search lowered the divergence: its mean fell from {start:.4e} at z0 to \
                 {end:.4e} at the end while the objective rose, the prior term λ · log p(z) \
                 (lambda = {lambda}) outweighing it; lower `lambda`"
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
    /// The class names of the first classifier, as shown: a name that
    /// two classes share gets its logit index (`crane [134]`, see
    /// [`crate::model::distinct_class_labels`]).
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
    /// The generator's support ([`crate::Generator::latent_support`]), if
    /// it states one; each sample's `outside_support` counts against it.
    pub latent_support: Option<LatentSupport>,
    /// The decoded starting batch g(z0).
    pub x0: Tensor,
    /// The decoded final batch g(z).
    pub x: Tensor,
}

/// The latent coordinates that a search left outside its generator's
/// support ([`crate::Generator::latent_support`]): the search does not
/// keep z there (BigGAN's `log_prior` does not enforce its truncation
/// box), and the images decoded from those latents are beyond what the
/// generator was sampled on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutsideSupport {
    /// The generator's name.
    pub generator: String,
    /// Its support.
    pub support: LatentSupport,
    /// Latent coordinates outside it, over all samples.
    pub coordinates: usize,
    /// Samples with at least one coordinate outside it.
    pub samples_outside: usize,
    /// Samples.
    pub samples: usize,
    /// The latent dimension.
    pub dim: usize,
}

impl OutsideSupport {
    /// The count over `samples`' final latents: each record's
    /// `outside_support`, or its z counted against `support` where the
    /// record has none.
    pub fn of(generator: &str, support: LatentSupport, samples: &[SampleRecord]) -> Self {
        Self::of_latents(
            generator,
            support,
            samples.iter().map(|s| (s.outside_support, s.z.as_slice())),
        )
    }

    /// The count over latents, each with its count where a record holds
    /// one (else its z is counted against `support`: records written
    /// before the count was kept).
    pub fn of_latents<'z>(
        generator: &str,
        support: LatentSupport,
        latents: impl IntoIterator<Item = (Option<usize>, &'z [f32])>,
    ) -> Self {
        let mut dim = 0;
        let counts: Vec<usize> = latents
            .into_iter()
            .map(|(count, z)| {
                dim = z.len();
                count.unwrap_or_else(|| support.count_outside(z))
            })
            .collect();
        Self::of_counts(generator, support, &counts, dim)
    }

    /// The count from each sample's count of coordinates outside `support`
    /// (of `dim` each).
    pub fn of_counts(
        generator: &str,
        support: LatentSupport,
        counts: &[usize],
        dim: usize,
    ) -> Self {
        OutsideSupport {
            generator: generator.to_string(),
            support,
            coordinates: counts.iter().sum(),
            samples_outside: counts.iter().filter(|&&c| c > 0).count(),
            samples: counts.len(),
            dim,
        }
    }

    /// Itself where any coordinate lies outside: what is worth a note.
    pub fn noted(self) -> Option<Self> {
        (self.coordinates > 0).then_some(self)
    }
}

impl fmt::Display for OutsideSupport {
    /// `12 of 8×128 latent coordinates (in 5 of 8 samples) ended outside
    /// generator `big`'s truncation box |z| ≤ 0.8 (truncation 0.4); …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {}×{} latent coordinates (in {} of {} samples) ended outside generator \
             `{}`'s {}; the images there are beyond what the generator was sampled on",
            self.coordinates,
            self.samples,
            self.dim,
            self.samples_outside,
            self.samples,
            self.generator,
            self.support
        )
    }
}

impl SearchOutcome {
    /// The coordinates of the final latents outside the generator's
    /// support, where it states one and any lie outside.
    pub fn outside_support(&self, generator: &str) -> Option<OutsideSupport> {
        let support = self.latent_support?;
        OutsideSupport::of(generator, support, &self.samples).noted()
    }

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
    /// - [`AscentWarning::DivergenceFell`]: otherwise, the mean divergence
    ///   at the final z is below its mean at z0 by more than
    ///   [`DIVERGENCE_FALL`] of it (none after 0 steps);
    /// - [`AscentWarning::RanAway`]: at least half the samples have
    ///   ‖z‖ ≥ [`RUNAWAY_GROWTH`] · ‖z0‖ (and moved at all).
    ///
    /// Empty for a sound search.
    pub fn warnings(&self) -> Vec<AscentWarning> {
        let figures = self.warning_figures();
        let mut out = Vec::new();
        if let Some((start, end)) = figures.objective {
            if end < start {
                out.push(AscentWarning::ObjectiveFell { start, end });
            }
        }
        if let Some((start, end)) = figures.divergence {
            if out.is_empty() && end < (1.0 - DIVERGENCE_FALL) * start {
                out.push(AscentWarning::DivergenceFell {
                    start,
                    end,
                    lambda: self.config.lambda,
                });
            }
        }
        let (ran_away, batch) = figures.ran_away;
        if batch > 0 && 2 * ran_away >= batch {
            out.push(AscentWarning::RanAway {
                samples: ran_away,
                batch,
                mean_dz: self.mean_dz(),
            });
        }
        out
    }

    /// The figures that [`SearchOutcome::warnings`] decides each warning
    /// by, before they are held to their thresholds.
    pub fn warning_figures(&self) -> WarningFigures {
        let stepped = self.steps_run > 0;
        let objective = match (self.trajectory.first(), self.trajectory.last()) {
            (Some(first), Some(last)) if stepped => {
                Some((first.mean_objective, last.mean_objective))
            }
            _ => None,
        };
        let divergence =
            stepped.then(|| (self.mean_divergence_before(), self.mean_divergence_after()));
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let ran_away = self
            .samples
            .iter()
            .filter(|s| s.z != s.z0 && norm(&s.z) >= RUNAWAY_GROWTH * norm(&s.z0))
            .count();
        WarningFigures {
            objective,
            divergence,
            ran_away: (ran_away, self.samples.len()),
        }
    }
}

/// The figures each [`AscentWarning`] is decided by
/// ([`SearchOutcome::warning_figures`]): a snapshot holds a warning to the
/// tolerance of the figures it comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarningFigures {
    /// The mean objective at step 0 and at the last step
    /// ([`AscentWarning::ObjectiveFell`] when the second is below the
    /// first); `None` after 0 steps.
    pub objective: Option<(f64, f64)>,
    /// The mean divergence at z0 and at the final z
    /// ([`AscentWarning::DivergenceFell`] when the second is below
    /// 1 − [`DIVERGENCE_FALL`] of the first); `None` after 0 steps.
    pub divergence: Option<(f64, f64)>,
    /// The samples whose ‖z‖ grew at least [`RUNAWAY_GROWTH`]-fold, and
    /// the batch ([`AscentWarning::RanAway`] from half of it).
    pub ran_away: (usize, usize),
}

pub(super) fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    values.sum::<f64>() / n as f64
}
