//! Whether a search's batch fits in memory, checked before the search: a
//! batch too large for the machine is refused with an estimate, instead of
//! aborting the process ("memory allocation of … bytes failed" is an abort
//! in Rust, not an error, and leaves no record or report).
//!
//! # The estimate
//!
//! [`Estimate::probe`] runs the generator and every classifier once on a
//! batch of [`PROBE_BATCH`] prior samples, as one search step does (decode,
//! logits, log-softmax, the prior term, backward to z), and counts the bytes
//! of the tensors it can see: every tensor of the autograd graph (what
//! candle keeps for the backward), every gradient of the backward, and the
//! activations the built-in models keep inside their own ops. Per sample,
//! that is the visible cost of one step. What it cannot see (candle's
//! temporaries while it convolves, the search's records) is covered by
//! [`FACTOR`], measured: see its documentation.
//!
//! # What is available
//!
//! On the CPU, `MemAvailable` of `/proc/meminfo` (Linux): the memory that
//! can be allocated without swapping. Where that is unknown (another OS, a
//! GPU), only batches whose estimate exceeds [`UNKNOWN_BOUND`] are refused.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};

/// The batch the probe runs (2 rather than 1: a model that special-cases a
/// batch of one is still measured as it runs in a search).
pub const PROBE_BATCH: usize = 2;

/// What one sample of a search takes, as a multiple of the bytes per
/// sample the probe sees: 2, measured.
///
/// The probe sees candle's autograd graph and gradients, and the
/// activations the built-in models keep inside their own ops for the
/// backward (the [engine](crate::engine) counts them). Measured with
/// `tests/memory_estimate.rs` on the MNIST fixtures (`mnist-vae` with
/// `mnist-cnn-a` and `mnist-cnn-b`, CPU, batch 1024, 2 steps): the probe
/// saw 215,988 bytes per sample and the peak resident memory grew by 380
/// MiB, so the estimate with 2 is 1.1 times what the search took. For the
/// same models on candle's own ops (`GEVALDI_ENGINE=candle`), whose graph
/// counts views of one buffer once each, the estimate was 3.5 times what
/// the search took (5,536 MiB estimated, 1,603 MiB measured): a model built
/// from candle's ops is refused only when that high count exceeds the
/// memory available, and `GEVALDI_MEMORY_CHECK=off` skips the check.
pub const FACTOR: u64 = 2;

/// The bound where the available memory is unknown: 1 TiB, more than one
/// machine or GPU that gevaldi runs on offers.
pub const UNKNOWN_BOUND: u64 = 1 << 40;

/// The estimated memory of a search per sample of its batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Bytes of the tensors the probe saw per sample (graph and gradients).
    pub visible_per_sample: u64,
}

impl Estimate {
    /// Runs `generator` and `classifiers` once at [`PROBE_BATCH`] (see the
    /// module docs). Also checks that each classifier's logits are as wide
    /// as its `class_names()` ([`Error::ClassNames`]).
    ///
    /// `Ok(None)` when a model fails on the probe: the search then reports
    /// that failure with its full context.
    pub fn probe(
        generator: &dyn Generator,
        classifiers: &[(&str, &dyn Classifier)],
        device: &Device,
    ) -> Result<Option<Estimate>> {
        let b = PROBE_BATCH;
        // Ok(Err(i, width)): classifier i's logits are `width` wide, which
        // is not the length of its class names.
        type Probed = std::result::Result<Tensor, (usize, usize)>;
        let probe = || -> candle_core::Result<Option<Probed>> {
            let z0 = Tensor::zeros((b, generator.latent_dim()), DType::F32, device)?;
            let z = Var::from_tensor(&z0)?;
            let condition = match generator.num_conditions() {
                Some(k) if k > 0 => {
                    let labels: Vec<usize> = (0..b).map(|i| i % k).collect();
                    Some(crate::model::one_hot(&labels, k, device)?)
                }
                _ => None,
            };
            let x = generator.decode(z.as_tensor(), condition.as_ref())?;
            let mut objective = generator.log_prior(z.as_tensor())?.sum_all()?;
            for (i, (_, c)) in classifiers.iter().enumerate() {
                let logits = c.logits(&x)?;
                let Ok((_, width)) = logits.dims2() else {
                    return Ok(None);
                };
                if width != c.class_names().len() {
                    return Ok(Some(Err((i, width))));
                }
                let lp = candle_nn::ops::log_softmax(&logits, 1)?;
                objective = (objective + lp.sum_all()?)?;
            }
            Ok(Some(Ok(objective)))
        };
        // The built-in models' own activations, kept inside their ops for
        // the backward, are counted by the ops themselves.
        crate::engine::take_kept_bytes();
        let probed = probe();
        let hidden = crate::engine::take_kept_bytes();
        let objective = match probed {
            Ok(Some(Ok(t))) => t,
            Ok(Some(Err((i, width)))) => {
                let (name, c) = classifiers[i];
                return Err(Error::ClassNames {
                    model: name.to_string(),
                    names: c.class_names().len(),
                    width,
                });
            }
            Ok(None) | Err(_) => return Ok(None),
        };
        let Ok(grads) = objective.backward() else {
            return Ok(None);
        };
        let size = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let graph: u64 = objective.sorted_nodes().iter().map(|t| size(t)).sum();
        let gradients: u64 = grads
            .get_ids()
            .filter_map(|id| grads.get_id(*id))
            .map(size)
            .sum();
        Ok(Some(Estimate {
            visible_per_sample: (graph + gradients + hidden).div_ceil(b as u64),
        }))
    }

    /// The estimated bytes per sample: the visible bytes times [`FACTOR`].
    pub fn per_sample(&self) -> u64 {
        self.visible_per_sample.saturating_mul(FACTOR)
    }

    /// The estimated bytes of a search at `batch`.
    pub fn bytes(&self, batch: usize) -> u64 {
        self.per_sample().saturating_mul(batch as u64)
    }

    /// Refuses `batch` ([`Error::Memory`], naming the setting `key`) when
    /// its estimate exceeds what `device` has available (see the module
    /// docs), unless `GEVALDI_MEMORY_CHECK=off`.
    pub fn check(&self, key: &str, batch: usize, device: &Device) -> Result<()> {
        if std::env::var("GEVALDI_MEMORY_CHECK").is_ok_and(|v| v == "off") {
            return Ok(());
        }
        let needed = self.bytes(batch);
        let (limit, available) = match (device, mem_available()) {
            (Device::Cpu, Some(free)) => (
                free,
                format!(
                    "{} is available (MemAvailable in /proc/meminfo)",
                    crate::error::bytes(free)
                ),
            ),
            _ => (
                UNKNOWN_BOUND,
                format!(
                    "the available memory is unknown here, and {} is more than any one machine \
                     offers",
                    crate::error::bytes(needed)
                ),
            ),
        };
        if needed <= limit {
            return Ok(());
        }
        Err(Error::Memory {
            key: key.to_string(),
            batch,
            per_sample: self.per_sample(),
            needed,
            available,
        })
    }
}

/// `MemAvailable` of `/proc/meminfo` in bytes, where there is one.
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

fn parse_mem_available(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let info = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(info), Some(2 << 20));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_batch_within_the_bound_passes_and_one_beyond_is_refused() {
        let e = Estimate {
            visible_per_sample: 1 << 20,
        };
        assert_eq!(e.per_sample(), FACTOR << 20);
        // A GPU-like device is not Device::Cpu; the CPU reads /proc/meminfo.
        assert!(e.check("search.batch", 1, &Device::Cpu).is_ok());
        let huge = usize::MAX / 2;
        let err = e.check("search.batch", huge, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Memory { batch, .. } if batch == huge));
    }
}
