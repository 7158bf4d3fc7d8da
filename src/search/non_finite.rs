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

/// A tensor whose first dimension is the batch, checked for NaN and
/// infinities, with where and when it was computed.
pub(super) type Probe<'t> = (NonFiniteSite, SearchStage, &'t Tensor);

/// Reads, in one transfer, the sum of each probe and every value of the
/// per-sample `checked` and `plain` figures (`[B]` each), and returns the
/// figures, `checked` first, as f64. The first probe, in order, that holds
/// a NaN or an infinity, and then the first checked figure that does, is
/// an [`Error::NonFinite`]; a probe is read in full only when its sum is
/// not finite (a sum that merely overflowed is no error).
pub(super) fn read_checked(
    probes: &[Probe<'_>],
    checked: &[(NonFiniteSite, &Tensor)],
    plain: &[&Tensor],
    at: SearchStage,
) -> Result<Vec<Vec<f64>>> {
    let read = || -> candle_core::Result<Vec<f64>> {
        let mut parts: Vec<Tensor> = Vec::with_capacity(probes.len() + checked.len() + plain.len());
        for (_, _, t) in probes {
            parts.push(t.sum_all()?.reshape(1)?);
        }
        for t in checked.iter().map(|(_, t)| *t).chain(plain.iter().copied()) {
            parts.push(t.flatten_all()?);
        }
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
pub(super) fn first_non_finite(t: &Tensor, at: SearchStage) -> Result<Option<(usize, f64)>> {
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
