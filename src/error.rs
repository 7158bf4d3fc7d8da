//! The library's one error type.

use std::path::PathBuf;

/// `Result` with gevaldi's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gevaldi.
///
/// Messages are lowercase sentence fragments that read well after
/// "failed to …" or "error: …", and name the model, step, setting or file
/// involved wherever one is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === Models ===
    /// A model's forward pass (or another tensor operation) failed.
    #[error("failed to {action} for model `{model}`: {source}")]
    Model {
        /// The model's name.
        model: String,
        /// What was being done, e.g. "compute logits".
        action: String,
        /// candle's error.
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A tensor operation outside any one model failed.
    #[error("failed to {action}: {source}")]
    Tensor {
        /// What was being done.
        action: String,
        /// candle's error.
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A tensor operation failed where no better context was known (for
    /// example in a user's code that used `?` on a candle result).
    #[error("tensor operation failed: {0}")]
    Candle(#[source] Box<candle_core::Error>),
    /// A model produced a tensor of the wrong shape.
    #[error("model `{model}` produced {what} of shape {got:?}, expected {expected}")]
    Shape {
        /// The model's name.
        model: String,
        /// Which output, e.g. "logits".
        what: String,
        /// What was expected, in words.
        expected: String,
        /// The shape it produced.
        got: Vec<usize>,
    },
    /// Classifiers of one search disagree on the number of classes.
    #[error(
        "classifier `{model}` has {got} classes but `{first}` has {expected}: \
         the models of one search must share their label set"
    )]
    ClassCount {
        /// The first classifier.
        first: String,
        /// Its number of classes.
        expected: usize,
        /// The classifier that differs.
        model: String,
        /// Its number of classes.
        got: usize,
    },

    // === Settings ===
    /// A `gevaldi.toml` has mistakes (every one found, with line and key).
    #[error("{0}")]
    Config(#[from] gevaldi_config::ConfigErrors),
    /// A setting has a value it cannot take.
    #[error("invalid setting `{key}` = {value}: expected {expected}")]
    Setting {
        /// The setting's key, e.g. `search.lr`.
        key: String,
        /// The value given, as text.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// A divergence was given a number of models it is not defined for.
    #[error("divergence `{divergence}` compares {expected} models, but {got} were given")]
    DivergenceArity {
        /// The divergence's name.
        divergence: String,
        /// How many models it takes, in words.
        expected: String,
        /// How many it was given.
        got: usize,
    },

    // === Search ===
    /// The objective or its gradient stopped being finite during a search.
    #[error(
        "the search produced a non-finite {what} ({value}) at step {step} for sample {sample}: \
         a model or the generator overflowed or emitted NaN; lower `lr` or check the models"
    )]
    NonFinite {
        /// "objective", "divergence" or "gradient".
        what: &'static str,
        /// The step (0 is the starting point).
        step: usize,
        /// The first sample index affected.
        sample: usize,
        /// The value found.
        value: f64,
    },

    // === Gradient audit ===
    /// Backpropagation produced no gradient at all for a model's input.
    #[error(
        "gradient audit of `{model}` failed: backpropagation gave no gradient for its {input}: \
         an op without backward dropped it (candle 0.11's ops::softmax_last_dim, ops::layer_norm, \
         ops::rms_norm, candle_nn::LayerNorm and RmsNorm, rotary embeddings, sdpa); build those \
         from ops that have one: candle_nn::ops::softmax(x, D::Minus1), gevaldi::zoo::LayerNorm \
         (or candle_nn::ops::layer_norm_slow)"
    )]
    MissingGradient {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
    },
    /// A backpropagated directional derivative disagrees with finite differences.
    #[error(
        "gradient audit of `{model}` failed: along direction {direction}, backprop gives \
         {backprop:.6e} but central finite differences give {finite_difference:.6e} \
         (ratio {ratio:.4}, allowed 1 ± {tolerance}); either an op's backward is wrong: \
         candle 0.11's max_pool2d scales its gradient by 1/k² (a ratio of 1/4 per 2×2 pool), \
         so pool with gevaldi::zoo::max_pool2d (or zoo::max_pool2x2) instead; or the input \
         sits on a kink (e.g. max-pool ties over a blank background): audit at decoded \
         samples or random images instead"
    )]
    GradientMismatch {
        /// The model's name.
        model: String,
        /// Index of the random direction.
        direction: usize,
        /// ⟨∇f, v⟩ from backpropagation.
        backprop: f64,
        /// (f(x + hv) − f(x − hv)) / 2h.
        finite_difference: f64,
        /// backprop / finite_difference.
        ratio: f64,
        /// The allowed relative deviation.
        tolerance: f64,
    },

    // === Files ===
    /// A data file (IDX) is malformed or does not match its partner.
    #[error("failed to read `{}`: {problem}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what was expected.
        problem: String,
    },
    /// A label hierarchy file is malformed, or its graph is not a connected
    /// DAG over the class list.
    #[error("failed to load hierarchy: {}:{line}: {problem}", path.display())]
    Hierarchy {
        /// The file with the mistake.
        path: PathBuf,
        /// Its 1-based line (0 for the whole file).
        line: usize,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A weights file could not be loaded into a model.
    #[error("failed to load weights `{}` for `{model}`: {source}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The model or architecture being loaded.
        model: String,
        /// candle's error (missing tensor, wrong shape, not safetensors, ...).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A plot or picture of the report could not be drawn.
    #[error("failed to draw {what}: {problem}")]
    Picture {
        /// The plot, e.g. "the divergence of pair::a-vs-b".
        what: String,
        /// The drawing back end's message.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("failed to {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn model(
        model: impl Into<String>,
        action: impl Into<String>,
    ) -> impl FnOnce(candle_core::Error) -> Self {
        let (model, action) = (model.into(), action.into());
        move |source| Error::Model {
            model,
            action,
            source: Box::new(source),
        }
    }

    pub(crate) fn tensor(action: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let action = action.into();
        move |source| Error::Tensor {
            action,
            source: Box::new(source),
        }
    }

    pub(crate) fn setting(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::Setting {
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(Box::new(e))
    }
}
