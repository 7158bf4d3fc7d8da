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
//! `[[pair]]` (`pair::<name>`), per `[[ensemble]]` (`ensemble::<name>`)
//! and per `[[tournament]]` (`tournament::<name>`; under nextest also one
//! per pair searched, `tournament::<name>::<a>-vs-<b>`, for `--partition`).
//! Beside the TOML:
//!
//! ```toml
//! [generator.vae]
//! arch = "mnist-vae"
//! weights = "vae.safetensors"
//!
//! [classifier.cnn_a]
//! arch = "mnist-cnn-a"
//! weights = "cnn_a.safetensors"
//!
//! [classifier.mine]          # no `arch`: built by your Rust code
//! weights = "mine.safetensors"
//!
//! [[pair]]
//! name = "cnn_a-vs-mine"
//! models = ["cnn_a", "mine"]
//! generator = "vae"
//! min_lift = 2.0             # fail when the search finds too little
//! steps = 200
//! ```
//!
//! and in `tests/gevaldi.rs` (with `[[test]] name = "gevaldi"` and
//! `harness = false` in `Cargo.toml`; the path is relative to the
//! package):
//!
//! ```ignore
//! gevaldi::main!(
//!     "tests/gevaldi.toml",
//!     // Fn(&ModelTable, &Device) -> gevaldi::Result<impl Classifier>
//!     classifiers = { "mine" => my_crate::load_mine },
//! );
//! ```
//!
//! `cargo test` then runs each trial: a search, its thresholds, an insta
//! snapshot of its figures beside the TOML, and a JSON record and pictures
//! per trial under `target/gevaldi/`, from which it writes an HTML report.
//! The `cargo gevaldi` command (crate `cargo-gevaldi`) runs the same suite
//! outside cargo test, with progress bars. [`config`] has every key.
//!
//! ## How a trial runs
//!
//! The code reads in one direction: [`config`] (the `gevaldi.toml` and its
//! vocabulary: `DivergenceKind`, `Architecture`, `TrialId`, …) → `suite`
//! (the models by name, one file per trial kind) → [`search`] (the ascent)
//! → `verdict` (the thresholds, as `Failure`s) → `snapshot` and `artifact`
//! (the insta snapshot, the JSON record, the pictures) → `report` (the
//! HTML page). The harness of [`main!`] and `cargo gevaldi` only list
//! trials, run them and format what they return (`TrialReport` or
//! `TrialError`).
//!
//! ## Where to change what
//!
//! - **A divergence**: a variant of `DivergenceKind` (its config name and
//!   its `arity()`, in `gevaldi-config/src/vocab.rs`), and a variant of
//!   [`Divergence`] (`src/divergence/mod.rs`) with the arms the compiler asks
//!   for: `From<DivergenceKind>`, `kind()` and `compute_unchecked`. The
//!   config accepts it and error messages list it from then on.
//! - **An architecture**: a variant of `Architecture` (its name, `kind()`,
//!   `dataset()`: MNIST or ImageNet, the images it takes or makes and its
//!   classes; `takes_truncation()`; in `gevaldi-config/src/vocab.rs`); the
//!   model in `src/zoo/`; and its arm in `zoo::classifier` or `zoo::generator_with`
//!   (`src/zoo/arch.rs`), which the compiler asks for (`zoo::Arch` is
//!   `Architecture`).
//! - **A threshold**: its key in the schema (`Thresholds`, `EnsembleDecl`
//!   or `TournamentDecl` in `gevaldi-config/src/schema.rs`, read in
//!   `gevaldi-config/src/parse.rs`: `PAIR_KEYS` or `ENSEMBLE_KEYS` and
//!   `Cx::pair` or `Cx::ensemble`, or `gevaldi-config/src/parse/tournament.rs`);
//!   a variant of `Failure` with its message (`src/verdict/failure.rs`) and its
//!   check in `Verdict::check`, `ensemble_failures` or
//!   `TournamentThresholds::check` (`src/tournament/thresholds.rs`). Harness, `cargo gevaldi`, records and report
//!   print it from its `Display`. To show a pair's threshold in its
//!   snapshot and report too: `ThresholdSummary` (`src/snapshot/pair.rs`)
//!   and its table in `src/report/pair.rs`.
//! - **A kind of trial**: a variant of `TrialKind`
//!   (`gevaldi-config/src/vocab.rs`); the compiler then asks for its arms
//!   in `Config::ignored` and `Config::models`, `Suite::run_trial`
//!   (`src/suite/mod.rs`) and `artifact::record_path` (`src/artifact.rs`); its
//!   runner goes in a file of its own in `src/suite/` (as
//!   `src/suite/tournament.rs` for `[[tournament]]`), its snapshot in
//!   `src/snapshot/`, its record a variant of `artifact::Record` and its
//!   report section a file in `src/report/`.
//! - **A tournament's ranking or its statistics**: `src/ranking/` (pure
//!   arithmetic on the win matrix); the runner and the outcome in
//!   `src/tournament/`; the per-pair trials that nextest partitions split
//!   are listed by `harness` (under `NEXTEST` only) and run by
//!   `src/suite/tournament_pairs.rs`, whose `pair_fingerprint` says when a
//!   pair's record is current.
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
//! gevaldi's [`engine`]: its own kernels, with a backward pass
//! to the input only (about 5× candle's own layers on the MNIST fixtures);
//! on a GPU, through the engine's device-generic path (candle's ops forward,
//! its own backward to the input only, in candle's ops). A classifier of
//! your own described with the same layers ([`NetBuilder`]: convolutions,
//! linear layers, batch norm as an affine map, activations, max- and
//! adaptive average pooling, flatten, reshape, concat, residual add,
//! LayerNorm) and wrapped by [`ModuleClassifier::from_net`] runs there too.
//! In a binary of your own, call [`prepare_process`] first thing in
//! `main`: it fixes the thread count (without `RAYON_NUM_THREADS`, candle
//! 0.11 parses `/proc/cpuinfo` on every matmul) and tells mimalloc to keep
//! freed memory for reuse. mimalloc must be your binary's global allocator
//! for that (the harness of [`main!`] installs it; a binary of your own
//! does not get it from gevaldi): with the `mimalloc` crate,
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
//!
//! fn main() {
//!     gevaldi::prepare_process();
//!     // ...
//! }
//! ```
//!
//! (the MNIST fixtures' search, 200 steps of 64 samples, ran in 3.4 s with
//! it and 4.2 s on glibc's allocator, on a 2-core machine, 2026-12-06).
//!
//! ## Known limitations
//!
//! - The search runs in f32.
//! - Results are bit-identical for the same seed on the CPU; GPU kernels (and
//!   candle's own ops, `GEVALDI_ENGINE=candle` or `generic`) reduce in
//!   another order,
//!   and the chaotic ascent then ends elsewhere: snapshots compare what is
//!   stable with tolerances (start.* lines within 1e-3, search.* within
//!   25%).
//! - Models are frozen; batch-norm layers must be in inference mode.
#![deny(unsafe_code)] // allowed in allocator.rs and engine/kernels/gemm.rs only
#![warn(missing_docs)]

// The public surface: the schema, the search's types, the built-in models.
pub mod config;
pub mod search;
pub mod zoo;

// Not part of the public API: the harness, `cargo gevaldi` and the tests
// use these modules; users go through the re-exports below.
#[doc(hidden)]
pub mod adapter;
mod allocator;
#[doc(hidden)]
pub mod artifact;
#[doc(hidden)]
pub mod audit;
#[doc(hidden)]
pub mod data;
#[doc(hidden)]
pub mod divergence;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod ensemble;
mod error;
#[doc(hidden)]
pub mod grid;
#[doc(hidden)]
pub mod harness;
#[doc(hidden)]
pub mod hierarchy;
#[doc(hidden)]
pub mod memory;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod pca;
#[doc(hidden)]
pub mod plot;
#[doc(hidden)]
pub mod preprocess;
pub mod ranking;
#[doc(hidden)]
pub mod regions;
#[doc(hidden)]
pub mod report;
#[doc(hidden)]
pub mod snapshot;
#[doc(hidden)]
pub mod suite;
#[cfg(test)]
mod test_support;
pub mod tournament;
#[doc(hidden)]
pub mod verdict;

/// README.md's Rust examples not marked `ignore`, compiled by `cargo test
/// --doc` so that they do not rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use adapter::{ModuleClassifier, ModuleGenerator};
pub use audit::{AuditReport, GradientAudit};
pub use config::ModelTable;
pub use divergence::Divergence;
pub use engine::{
    Activation, Conv2dSettings, ConvTranspose2dSettings, Net, NetBuilder, NodeId, Pool2dSettings,
};
pub use ensemble::MdsDataset;
pub use error::{Error, Result};
pub use hierarchy::Hierarchy;
pub use model::{Classifier, Generator, LatentSupport};
pub use preprocess::{Channels, Preprocess, Preprocessed};
pub use search::{Optimizer, Search, SearchConfig, SearchOutcome};
pub use suite::{fix_thread_count, prepare_process};

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
