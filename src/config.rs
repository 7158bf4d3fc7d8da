//! The `gevaldi.toml` schema (from the `gevaldi-config` crate, which the
//! `main!` macro also uses at compile time), and its mapping onto
//! [`SearchConfig`].
//!
//! See [`gevaldi_config`] for the schema with every key.

pub use gevaldi_config::*;

use crate::divergence::Divergence;
use crate::error::Result;
use crate::search::{EarlyStop, Optimizer, SearchConfig};

/// The [`SearchConfig`] of `settings`, with gevaldi's defaults for every key
/// not set.
pub fn search_config(settings: &SearchSettings) -> Result<SearchConfig> {
    let mut c = SearchConfig::default();
    if let Some(v) = settings.steps {
        c.steps = v as usize;
    }
    if let Some(v) = settings.lr {
        c.lr = v;
    }
    if let Some(v) = &settings.optimizer {
        c.optimizer = v.parse::<Optimizer>()?;
    }
    if let Some(v) = settings.lambda {
        c.lambda = v;
    }
    if let Some(v) = settings.batch {
        c.batch = v as usize;
    }
    if let Some(v) = settings.seed {
        c.seed = v;
    }
    if let Some(v) = &settings.divergence {
        c.divergence = v.parse::<Divergence>()?;
    }
    if let Some((window, tolerance)) = settings.early_stop {
        c.early_stop = Some(EarlyStop {
            window: window as usize,
            tolerance,
        });
    }
    c.validate()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_the_library() {
        assert_eq!(DIVERGENCES, Divergence::NAMES);
        for o in OPTIMIZERS {
            assert_eq!(o.parse::<Optimizer>().unwrap().name(), *o);
        }
        let archs: Vec<&str> = crate::zoo::Arch::ALL.iter().map(|a| a.name()).collect();
        let mut declared: Vec<&str> = CLASSIFIER_ARCHS
            .iter()
            .chain(GENERATOR_ARCHS)
            .copied()
            .collect();
        declared.sort();
        let mut archs_sorted = archs.clone();
        archs_sorted.sort();
        assert_eq!(declared, archs_sorted);
        for a in crate::zoo::Arch::ALL {
            assert_eq!(GENERATOR_ARCHS.contains(&a.name()), a.is_generator());
        }
    }

    #[test]
    fn unset_keys_take_the_defaults() {
        let c = search_config(&SearchSettings {
            steps: Some(7),
            divergence: Some("js".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.steps, 7);
        assert_eq!(c.divergence, Divergence::js());
        assert_eq!(c.lr, SearchConfig::default().lr);
    }
}
