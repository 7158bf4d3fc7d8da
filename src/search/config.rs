//! The settings of a search.

use std::fmt;
use std::str::FromStr;

use crate::config::{OptimizerKind, LR, NON_NEGATIVE};
use crate::divergence::Divergence;
use crate::error::{Error, Result};

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
        self.kind().name()
    }

    /// Its name in a config.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Optimizer::Sgd => OptimizerKind::Sgd,
            Optimizer::Adam { .. } => OptimizerKind::Adam,
        }
    }
}

impl From<OptimizerKind> for Optimizer {
    /// The optimizer a config names, with its defaults.
    fn from(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Sgd => Optimizer::Sgd,
            OptimizerKind::Adam => Optimizer::adam(),
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
        OptimizerKind::from_name(s)
            .map(Optimizer::from)
            .ok_or_else(|| {
                Error::setting(
                    "optimizer",
                    format!("{s:?}"),
                    format!("one of {}", OptimizerKind::NAMES.join(", ")),
                )
            })
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
        if !LR.holds(self.lr) {
            return Err(Error::setting("lr", self.lr, LR.expected));
        }
        if !NON_NEGATIVE.holds(self.lambda) {
            return Err(Error::setting("lambda", self.lambda, NON_NEGATIVE.expected));
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
            // The search compares step t with step t − window, t ≤ steps.
            if es.window >= self.steps {
                return Err(Error::setting(
                    "early_stop.window",
                    es.window,
                    format!(
                        "fewer than `steps` = {} (a window as long as the search never stops \
                         it early)",
                        self.steps
                    ),
                ));
            }
            if !NON_NEGATIVE.holds(es.tolerance) {
                return Err(Error::setting(
                    "early_stop.tolerance",
                    es.tolerance,
                    NON_NEGATIVE.expected,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_names_round_trip_and_the_error_lists_them() {
        for name in OptimizerKind::ALL.iter().map(|o| o.name()) {
            assert_eq!(name.parse::<Optimizer>().unwrap().name(), name);
        }
        let err = "adamw".parse::<Optimizer>().unwrap_err().to_string();
        assert!(err.contains("one of sgd, adam"), "{err}");
    }
}
