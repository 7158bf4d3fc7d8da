//! Where a NaN or an infinity appeared, and the reads that find it.

use std::fmt;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

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
                "everything up to the objective was finite, so a backward pass gave it: an op \
                 whose derivative is infinite or undefined at this sample (sqrt or a norm at 0, \
                 log or a division at 0), or one that overflowed; audit the models' gradients \
                 (`GradientAudit`) and keep such ops' arguments away from 0, or, where z has \
                 grown large over the steps, lower `lr`"
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

/// How many times its norm one step's update may multiply a sample's z
/// (at least 1) before a NaN or an infinity after it is put down to the
/// step size ([`Error::StepBlewUp`]). Adam at `lr = 0.05` moves each
/// coordinate by about 0.05 a step; 10-fold in one step is a step size
/// gone wrong.
pub const BLOW_UP: f64 = 10.0;

/// `lr` as a message shows it: `0.05`, `1e30`.
pub(crate) fn shown_lr(lr: f64) -> String {
    if lr != 0.0 && !(1e-4..1e6).contains(&lr.abs()) {
        format!("{lr:e}")
    } else {
        lr.to_string()
    }
}

/// `err`, or where it is a NaN or an infinity that appeared at step t ≥ 1
/// after the update into step t multiplied the sample's ‖z‖ (`z`, `[B,
/// d]`, the latents of step t) by more than [`BLOW_UP`] from `before` (the
/// latents of step t − 1 as read, row after row; only the sample's row is
/// looked at, and only here), [`Error::StepBlewUp`], which names `lr` as
/// the likely cause instead of the site. A non-finite gradient (computed
/// before the update) or z (whose own message names `lr`) stays as it is.
pub(super) fn blame_the_step(
    err: Error,
    z: &Tensor,
    before: &[f64],
    lr: f64,
    optimizer: crate::config::OptimizerKind,
) -> Error {
    let Error::NonFinite {
        site,
        stage: stage @ SearchStage::Step(t),
        sample,
        value,
    } = err
    else {
        return err;
    };
    let back = |site| Error::NonFinite {
        site,
        stage,
        sample,
        value,
    };
    if t == 0 || matches!(site, NonFiniteSite::Gradient | NonFiniteSite::Latent) {
        return back(site);
    }
    let d = z.dim(1).unwrap_or(0);
    let Some(row) = before.get(sample * d..(sample + 1) * d).filter(|_| d > 0) else {
        return back(site);
    };
    let norm_before = row.iter().map(|v| v * v).sum::<f64>().sqrt();
    let after = z
        .get(sample)
        .and_then(|row| row.to_dtype(DType::F64))
        .and_then(|row| row.sqr()?.sum_all()?.to_scalar::<f64>());
    match after.map(f64::sqrt) {
        Ok(norm_after) if norm_after.is_finite() && norm_after > BLOW_UP * norm_before.max(1.0) => {
            Error::StepBlewUp {
                site,
                stage,
                sample,
                value,
                before: norm_before,
                after: norm_after,
                lr,
                optimizer,
            }
        }
        _ => back(site),
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

/// A tensor whose first dimension is the batch, checked for NaN and
/// infinities, with where and when it was computed, and how much of it
/// the read brings back.
pub(super) struct Probe<'t> {
    site: NonFiniteSite,
    stage: SearchStage,
    tensor: &'t Tensor,
    /// Every value, which the read returns; else its sum only (a NaN or
    /// an infinity anywhere survives it), read in full only when that is
    /// not finite.
    whole: bool,
}

impl<'t> Probe<'t> {
    /// `tensor`, checked by its sum.
    pub(super) fn sum(site: NonFiniteSite, stage: SearchStage, tensor: &'t Tensor) -> Self {
        Probe {
            site,
            stage,
            tensor,
            whole: false,
        }
    }

    /// `tensor`, read (and checked) value by value: a figure of the step.
    pub(super) fn values(site: NonFiniteSite, stage: SearchStage, tensor: &'t Tensor) -> Self {
        Probe {
            site,
            stage,
            tensor,
            whole: true,
        }
    }
}

/// Reads the probes in one transfer (each its sum or every value, as
/// [`Probe`] says) and returns the values of those read whole, in order,
/// as f64. The first probe, in order, that holds a NaN or an infinity is
/// an [`Error::NonFinite`] (a sum that merely overflowed is no error).
pub(super) fn read_checked(probes: &[Probe<'_>], at: SearchStage) -> Result<Vec<Vec<f64>>> {
    let read = || -> candle_core::Result<Vec<f64>> {
        let parts = probes
            .iter()
            .map(|p| match p.whole {
                true => p.tensor.flatten_all(),
                false => p.tensor.sum_all()?.reshape(1),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Read as f32 where every part is (no conversion on the device),
        // else each part as f64.
        if parts.iter().all(|p| p.dtype() == DType::F32) {
            let values = Tensor::cat(&parts, 0)?.to_vec1::<f32>()?;
            return Ok(values.into_iter().map(f64::from).collect());
        }
        let parts = parts
            .iter()
            .map(|p| p.to_dtype(DType::F64))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)?.to_vec1::<f64>()
    };
    let values = read().map_err(Error::tensor(format!("read the figures {at}")))?;
    let mut rest = values.as_slice();
    let mut figures = Vec::new();
    for p in probes {
        let (part, tail) = rest.split_at(if p.whole { p.tensor.elem_count() } else { 1 });
        rest = tail;
        let found = if p.whole {
            first_in(part, p.tensor)
        } else if part[0].is_finite() {
            None
        } else {
            first_non_finite(p.tensor, p.stage)?
        };
        if let Some((sample, value)) = found {
            return Err(Error::NonFinite {
                site: p.site.clone(),
                stage: p.stage,
                sample,
                value,
            });
        }
        if p.whole {
            figures.push(part.to_vec());
        }
    }
    Ok(figures)
}

/// The first sample of `t`'s values (batch first) with a NaN or an
/// infinity, and that value.
fn first_in(values: &[f64], t: &Tensor) -> Option<(usize, f64)> {
    let per_sample = match t.dims().first() {
        Some(&b) if b > 0 => values.len() / b,
        _ => values.len(),
    };
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i / per_sample.max(1), values[i]))
}

/// The first sample of `t` (batch first) with a NaN or an infinity, and
/// that value.
fn first_non_finite(t: &Tensor, at: SearchStage) -> Result<Option<(usize, f64)>> {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(Error::tensor(format!("read a non-finite tensor {at}")))?;
    Ok(first_in(&values, t))
}
