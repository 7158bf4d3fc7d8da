//! # gevaldi: generative validation of discriminative models
//!
//! gevaldi finds the inputs on which classifiers disagree most. It implements
//! GeValDi (Palaniappan et al., ICLR 2023 Tiny Papers): gradient ascent in the
//! latent space of a generative model g for "maximally different samples"
//! (MDS),
//!
//! ```text
//! z* = argmax_z  D[{p_m(y | g(z))}_m] + lambda * log p(z)
//! ```
//!
//! where D is a divergence between the classifiers' predictive distributions
//! ([`Divergence`]: `kl`, `reverse-kl`, `jeffreys`, `js`, `tv`) and p(z) is
//! the generator's prior. Because the search stays in the generator's latent
//! space, what it finds looks like data, not like adversarial noise.
//!
//! ## Tutorial
//!
//! Implement [`Classifier`] for your models (logits `[B, K]` and class names)
//! and [`Generator`] for your generative model (decode `[B, d]` latents to a
//! batch), or use the built-in MNIST architectures of [`zoo`]. Then run a
//! [`Search`]:
//!
//! ```
//! # fn main() -> gevaldi::Result<()> {
//! use candle_core::Device;
//! use gevaldi::zoo::{MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
//! use gevaldi::{Divergence, Search, SearchConfig};
//!
//! let dev = Device::Cpu;
//! // Seeded random weights here; `MnistCnn::load(vb, &cfg)` loads real ones.
//! let cnn_a = MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &dev)?;
//! let cnn_b = MnistCnn::random(&MnistCnnConfig::cnn_b(), 2, &dev)?;
//! let vae = MnistVae::random(&MnistVaeConfig::default(), 3, &dev)?;
//!
//! let outcome = Search::new("vae", &vae)
//!     .classifier("cnn_a", &cnn_a)
//!     .classifier("cnn_b", &cnn_b)
//!     // λ = 0: random-weight models barely disagree, and any prior weight
//!     // would dominate their tiny divergence.
//!     .config(SearchConfig::default().steps(20).batch(8).lambda(0.0).divergence(Divergence::Kl))
//!     .run(&dev)?;
//!
//! // The search ascended the divergence...
//! assert!(outcome.mean_divergence_after() > outcome.mean_divergence_before());
//! // ...and records where it went and what each model predicted.
//! println!("lift over fresh prior samples: {:.2}", outcome.lift());
//! let first = &outcome.samples[0];
//! println!("{} -> {} (dz = {:.2})", first.divergence_before, first.divergence_after, first.dz);
//! # Ok(()) }
//! ```
//!
//! Before trusting a search on your own models, audit their gradients:
//! candle 0.11 has ops whose backward pass is wrong (`max_pool2d`) or missing
//! (`softmax_last_dim`, `layer_norm`), and a search on wrong gradients still
//! runs. [`GradientAudit`] compares backpropagation with finite differences:
//!
//! ```
//! # fn main() -> gevaldi::Result<()> {
//! # use candle_core::{Device, Tensor};
//! # use gevaldi::zoo::{MnistCnn, MnistCnnConfig};
//! # let dev = Device::Cpu;
//! let cnn = MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &dev)?;
//! let x = Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &dev)?;
//! let report = gevaldi::GradientAudit::default().classifier("cnn_a", &cnn, &x)?;
//! assert!(report.worst_deviation() < 0.05);
//! # Ok(()) }
//! ```
//!
//! ## In `cargo test`
//!
//! [`main!`] turns a `gevaldi.toml` into a test target with one test per
//! `[[pair]]` (see the README and [`config`]): thresholds on the divergence,
//! the lift and the hierarchical set distance ([`hierarchy`]) of the models'
//! top-n predictions, insta snapshots beside the TOML, and a JSON record
//! per trial ([`artifact`]). After the trials it writes an HTML report
//! ([`report`]): per trial its verdict, figures, a grid of the most
//! divergent samples before and after the search ([`grid`]) and plots over
//! the steps ([`plot`]). The trials themselves are a [`suite::Suite`],
//! which the `cargo gevaldi` command (crate `cargo-gevaldi`) runs outside
//! cargo test.
//!
//! ## Performance
//!
//! candle without optimisations is about 15 times slower. Build your tests
//! with optimised dependencies by adding to your `Cargo.toml`:
//!
//! ```toml
//! [profile.dev.package."*"]
//! opt-level = 3
//!
//! [profile.test.package."*"]
//! opt-level = 3
//! ```
//!
//! Built-in models with frozen weights run on the CPU through
//! [`zoo::frozen_ops::FrozenNet`]: gevaldi's own kernels, with a backward pass
//! to the input only (about 5× candle's own layers on the MNIST fixtures).
//! In a binary of your own, call [`suite::fix_thread_count`] first thing in
//! `main`: without `RAYON_NUM_THREADS`, candle 0.11 parses `/proc/cpuinfo`
//! on every matmul.
//!
//! ## Known limitations
//!
//! - The search runs in f32.
//! - Results are bit-identical for the same seed on the CPU; GPU kernels (and
//!   candle's own ops, `GEVALDI_ENGINE=candle`, see [`engine`]) reduce in
//!   another order, and the chaotic ascent then ends elsewhere: snapshots
//!   compare what is stable with tolerances (see [`snapshot`]).
//! - Models are frozen; batch-norm layers must be in inference mode.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
pub mod artifact;
pub mod audit;
pub mod config;
pub mod data;
pub mod divergence;
pub mod engine;
pub mod ensemble;
mod error;
pub mod grid;
pub mod harness;
pub mod hierarchy;
pub mod memory;
pub mod model;
pub mod pca;
pub mod plot;
pub mod preprocess;
pub mod ranking;
pub mod regions;
pub mod report;
pub mod search;
pub mod snapshot;
pub mod suite;
pub mod tournament;
pub mod verdict;
pub mod zoo;

pub use adapter::ModuleClassifier;
pub use audit::{AuditReport, GradientAudit};
pub use divergence::Divergence;
pub use error::{Error, Result};
pub use model::{Classifier, Generator};
pub use search::{Optimizer, Search, SearchConfig, SearchOutcome};

// Re-exported so that users name the same versions gevaldi uses.
pub use candle_core;
pub use candle_nn;
/// candle-transformers, when the `candle-transformers` feature is on: its
/// models become classifiers through [`ModuleClassifier`].
#[cfg(feature = "candle-transformers")]
pub use candle_transformers;
pub use rand;

pub use gevaldi_macros::main;

/// Not part of the public API: used by the code `main!` expands to.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::{run, run_in_package, Registry};
    pub use candle_core::Device;
    #[cfg(feature = "mimalloc")]
    pub use mimalloc::MiMalloc;

    /// Installs mimalloc as the global allocator when the `mimalloc`
    /// feature is on (the default).
    #[cfg(feature = "mimalloc")]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __gevaldi_allocator {
        () => {
            #[global_allocator]
            static GEVALDI_GLOBAL_ALLOCATOR: $crate::__private::MiMalloc =
                $crate::__private::MiMalloc;
        };
    }

    /// Installs nothing: the `mimalloc` feature is off.
    #[cfg(not(feature = "mimalloc"))]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __gevaldi_allocator {
        () => {};
    }
}
