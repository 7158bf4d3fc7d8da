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
//! log-probabilities before and after, and dz = ‖z − z0‖ / ‖z‖; per step, the
//! mean objective, the mean and max divergence and the mean dz; and a null
//! baseline: the divergence over B fresh prior samples, drawn from a stream
//! of the seed of their own (z0 is drawn from another), so that they are the
//! same whether or not z0 is given. `lift` = mean divergence after the
//! search / mean baseline divergence.
//!
//! A NaN or an infinity anywhere in the pipeline stops the search with
//! [`Error::NonFinite`](crate::Error::NonFinite), naming where it first appeared (see
//! [`NonFiniteSite`]): each step sums each checked tensor (a NaN or an
//! infinity survives the sum) and reads the sums back with the step's
//! figures; only a sum that is not finite costs a full read, to find the
//! sample. Where the update into a step multiplied a sample's ‖z‖ by more
//! than [`BLOW_UP`], it is [`Error::StepBlewUp`](crate::Error::StepBlewUp)
//! instead, naming `lr` as the likely cause. An ascent that finished but went wrong (its objective fell, or z
//! ran away) is told by [`SearchOutcome::warnings`].

mod config;
mod non_finite;
mod outcome;
mod runner;
mod update;

pub use self::config::{EarlyStop, Optimizer, SearchConfig};
pub(crate) use self::non_finite::shown_lr;
pub use self::non_finite::{NonFiniteSite, SearchStage, BLOW_UP};
pub use self::outcome::{
    AscentWarning, AscentWarningKind, Baseline, LogProbs, Measure, OutsideSupport, SampleRecord,
    SearchOutcome, StepRecord, WarningFigures, DIVERGENCE_FALL, RUNAWAY_GROWTH,
};
pub use self::runner::Search;
pub(crate) use self::runner::{check_logits_dtype, check_two_classes, refuse_probabilities};

#[cfg(test)]
mod tests;
