//! Which code runs the built-in models' layers: gevaldi's frozen-model
//! engine or candle's own ops (the reference path).
//!
//! `GEVALDI_ENGINE` chooses, read each time a model runs:
//!
//! - `auto` (the default, also when unset): a built-in model whose weights
//!   are frozen runs through [`FrozenNet`](crate::zoo::frozen_ops::FrozenNet)
//!   where it applies (f32 tensors on the CPU), else candle's ops;
//! - `candle`: every built-in model runs candle's own layers, the numerics a
//!   GPU back end gives. The snapshot tests run the committed suite both
//!   ways against the same snapshots.

use crate::error::{Error, Result};

/// The environment variable that chooses the [`Engine`].
pub const ENGINE_VAR: &str = "GEVALDI_ENGINE";

/// The engine that runs the built-in models' layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// gevaldi's frozen-model kernels where they apply, else candle's ops.
    Auto,
    /// candle's own layers and autograd for every model.
    Candle,
}

impl Engine {
    /// The engine `GEVALDI_ENGINE` names (`auto` when unset or empty).
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENGINE_VAR) {
            Err(_) => Ok(Engine::Auto),
            Ok(v) => match v.as_str() {
                "" | "auto" => Ok(Engine::Auto),
                "candle" => Ok(Engine::Candle),
                other => Err(Error::setting(ENGINE_VAR, other, "`auto` or `candle`")),
            },
        }
    }

    /// The engine in force: an unknown value counts as `auto` here (the
    /// harness and `cargo gevaldi` refuse one at start, with
    /// [`Engine::from_env`]).
    pub fn current() -> Self {
        Self::from_env().unwrap_or(Engine::Auto)
    }

    /// `auto` or `candle`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Candle => "candle",
        }
    }
}
