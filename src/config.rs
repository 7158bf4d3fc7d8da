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
    if let Some(v) = settings.optimizer {
        c.optimizer = Optimizer::from(v);
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
    if let Some(v) = settings.divergence {
        c.divergence = Divergence::from(v);
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
    fn unset_keys_take_the_defaults() {
        let c = search_config(&SearchSettings {
            steps: Some(7),
            divergence: Some(DivergenceKind::Js),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.steps, 7);
        assert_eq!(c.divergence, Divergence::js());
        assert_eq!(c.lr, SearchConfig::default().lr);
    }
}
