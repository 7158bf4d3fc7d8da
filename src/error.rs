//! The library's one error type.

use std::path::PathBuf;

use crate::config::Dataset;

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
    #[error("failed to {action} for model `{model}`: {}", candle_message(.cause))]
    Model {
        /// The model's name.
        model: String,
        /// What was being done, e.g. "compute logits".
        action: String,
        /// candle's error, printed in the message (so not a `source()`).
        cause: Box<candle_core::Error>,
    },
    /// A tensor operation outside any one model failed.
    #[error("failed to {action}: {}", candle_message(.cause))]
    Tensor {
        /// What was being done.
        action: String,
        /// candle's error, printed in the message (so not a `source()`).
        cause: Box<candle_core::Error>,
    },
    /// A tensor operation failed where no better context was known (for
    /// example in a user's code that used `?` on a candle result).
    #[error("tensor operation failed: {}", candle_message(.0))]
    Candle(Box<candle_core::Error>),
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
         the classifiers of a pair or ensemble must share one label set"
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

    /// Two classifiers of one trial name a logit's class differently
    /// (the same labels in another order, or other labels).
    #[error(
        "classifier `{model}` calls its class {index} `{got}` but `{first}` calls it `{theirs}`: \
         the classifiers of a pair, ensemble or tournament must name the same classes in the \
         same logit order"
    )]
    ClassOrder {
        /// The first classifier that names its classes.
        first: String,
        /// The classifier that differs.
        model: String,
        /// The first logit whose class differs.
        index: usize,
        /// `model`'s name for it.
        got: String,
        /// `first`'s name for it.
        theirs: String,
    },

    /// A classifier's `class_names()` and the width of its logits differ.
    #[error(
        "classifier `{model}` names {names} classes (`class_names`) but its logits have \
         {width} columns: the two must match"
    )]
    ClassNames {
        /// The classifier.
        model: String,
        /// `class_names().len()`.
        names: usize,
        /// The logits' second dimension.
        width: usize,
    },

    // === Settings ===
    /// `top_n` asks for more classes than the classifiers have.
    #[error(
        "`top_n` = {top_n} is out of range: expected 1 to {classes}, the number of classes of \
         classifier `{model}`"
    )]
    TopN {
        /// The `top_n` given.
        top_n: usize,
        /// The classifier's number of classes.
        classes: usize,
        /// The classifier.
        model: String,
    },
    /// `max_set_distance` is at or above what the set distance of `top_n`
    /// predictions can reach in the hierarchy
    /// ([`Hierarchy::set_distance_ceiling`](crate::hierarchy::Hierarchy::set_distance_ceiling)):
    /// the trial could never fail on it.
    #[error(
        "`max_set_distance` = {max} can never fail: the set distance of top-{top_n} \
         predictions is at most {ceiling} in {hierarchy}; expected a number below it"
    )]
    SetDistanceCeiling {
        /// The `max_set_distance` given.
        max: f64,
        /// The pair's `top_n`.
        top_n: usize,
        /// The most the set distance can be.
        ceiling: f64,
        /// The hierarchy, in words: `the flat hierarchy of 10 classes` or
        /// `the hierarchy of `classes.tsv``.
        hierarchy: String,
    },
    /// A search's batch would need more memory than there is
    /// ([`crate::memory`] has the estimate's basis).
    #[error(
        "`{key}` = {batch} needs {} of memory ({} per sample) but {}; lower `{key}`",
        about_bytes(*needed),
        bytes(*per_sample),
        available
    )]
    Memory {
        /// The setting, e.g. `search.batch`.
        key: String,
        /// Its value.
        batch: usize,
        /// The estimated bytes per sample.
        per_sample: u64,
        /// The estimated bytes of the whole batch.
        needed: u64,
        /// What is available, in words, e.g. "20.1 GiB is available
        /// (MemAvailable in /proc/meminfo)".
        available: String,
    },
    /// A `gevaldi.toml` has mistakes (every one found, with line and key).
    #[error(transparent)]
    Config(#[from] gevaldi_config::ConfigErrors),
    /// A classifier's `preprocess` normalises with `mean` and `std`, which
    /// apply to images in [0, 1], but has no `input_range` behind a
    /// generator whose output range is another: BigGAN's [-1, 1] images
    /// went in as if they were in [0, 1].
    #[error(
        "classifier `{model}` ([classifier.{model}], {}:{line}) normalises with `mean` and \
         `std`, which apply to images in [0, 1], but its `preprocess` has no `input_range`, \
         so the images of generator `{generator}`, in [{lo}, {hi}] (its `output_range`), \
         would go in as if they were in [0, 1]: add `input_range = [{lo}, {hi}]` to its \
         `preprocess`",
        config.display()
    )]
    InputRange {
        /// The classifier.
        model: String,
        /// The config file.
        config: PathBuf,
        /// The line of the classifier's table.
        line: usize,
        /// The generator.
        generator: String,
        /// The generator's output range.
        lo: f32,
        /// Its upper end.
        hi: f32,
    },
    /// A built-in classifier without `preprocess` behind a generator whose
    /// images are not what its weights take: grey [0, 1] images for the
    /// MNIST architectures, ImageNet-normalised colour images for the
    /// ImageNet ones (behind a built-in generator the config refuses this
    /// already). A generator of one's own declaring [-1, 1] images went
    /// into the MNIST CNNs as they were, and the pair started at KL 2.0
    /// instead of 0.11, with nothing said.
    #[error(
        "classifier `{model}` ({arch}, [classifier.{model}], {}:{line}) has no `preprocess`, \
         so it would take the images of generator `{generator}`, in [{lo}, {hi}] (its \
         `output_range`), as they are, where its weights expect {}: give it a `preprocess`, \
         e.g. preprocess = {} (`preprocess = {{}}` feeds the images as they are)",
        config.display(),
        takes(.dataset),
        .dataset.preprocess_from(*.lo, *.hi, false)
    )]
    Unprepared {
        /// The classifier.
        model: String,
        /// Its architecture's name.
        arch: &'static str,
        /// The config file.
        config: PathBuf,
        /// The line of the classifier's table.
        line: usize,
        /// The generator.
        generator: String,
        /// The generator's output range.
        lo: f32,
        /// Its upper end.
        hi: f32,
        /// The dataset its weights were made for (what images they take).
        dataset: Dataset,
    },
    /// A generator's decoded samples reach far outside the `output_range`
    /// it declares: the pictures clip them, and the classifiers'
    /// `preprocess` maps the declared range, not the real one.
    #[error(
        "generator `{generator}` decodes values from {min:.4} to {max:.4} at 2 samples of its prior, \
         far outside its `output_range` [{lo}, {hi}]{default}: declare the range its decoder \
         outputs (`Generator::output_range`, e.g. (-1.0, 1.0) for a tanh output), which the \
         classifiers' `preprocess` and the pictures read"
    )]
    OutsideOutputRange {
        /// The generator.
        generator: String,
        /// The smallest value decoded.
        min: f32,
        /// The largest value decoded.
        max: f32,
        /// Its declared output range.
        lo: f32,
        /// Its upper end.
        hi: f32,
        /// " (the default)" where the generator declares none of its own.
        default: &'static str,
    },
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
    #[error(
        "divergence `{divergence}` compares {expected} models, but {got} {} given",
        if *got == 1 { "was" } else { "were" }
    )]
    DivergenceArity {
        /// The divergence (shown by its name).
        divergence: crate::config::DivergenceKind,
        /// How many models it takes, in words.
        expected: String,
        /// How many it was given.
        got: usize,
    },

    // === Search ===
    /// A NaN or an infinity appeared in a search: named at the first place
    /// of the pipeline (gradient, z, the generator's output, each
    /// classifier's logits, log p(z), divergence, objective) where it was
    /// found.
    #[error(
        "the search met a non-finite value: {site} is {value} {stage} for sample {sample}; {}",
        site.hint()
    )]
    NonFinite {
        /// Where it appeared.
        site: crate::search::NonFiniteSite,
        /// When: at a step of the ascent, or in the null baseline.
        stage: crate::search::SearchStage,
        /// The first sample affected (its index in the batch).
        sample: usize,
        /// The first non-finite value of that sample.
        value: f64,
    },
    /// A NaN or an infinity appeared after a step's update blew z up: the
    /// sample's z was finite, and everything computed from it too, before
    /// the update, which then multiplied its norm by more than
    /// [`BLOW_UP`](crate::search::BLOW_UP). The step size, not the site,
    /// is the likely cause (with `sgd` and `lr = 1e30`, log p(z) of a
    /// Gaussian prior overflows to -inf at step 1).
    #[error(
        "the search met a non-finite value: {site} is {value} {stage} for sample {sample}, \
         after the update into it took the sample's ‖z‖ from {before:.4} to {after:.4e}: the \
         step size is the likely cause (`lr` = {}, optimizer {optimizer}); lower `lr`",
        crate::search::shown_lr(*lr)
    )]
    StepBlewUp {
        /// Where the value appeared.
        site: crate::search::NonFiniteSite,
        /// The step (at least 1).
        stage: crate::search::SearchStage,
        /// The first sample affected (its index in the batch).
        sample: usize,
        /// The first non-finite value of that sample.
        value: f64,
        /// ‖z‖ of that sample before the update.
        before: f64,
        /// ‖z‖ of that sample after it.
        after: f64,
        /// The step size.
        lr: f64,
        /// The optimizer (shown by its name).
        optimizer: crate::config::OptimizerKind,
    },
    /// Accuracy, AUC or F1 were asked of probabilities they are not defined
    /// for.
    #[error("failed to compute the metrics: {problem}")]
    Metrics {
        /// What is wrong, naming the sample.
        problem: String,
    },

    // === Gradient audit ===
    /// Backpropagation produced no gradient at all for a model's input.
    #[error(
        "gradient audit of `{model}` failed: backpropagation gave no gradient for its {input}: \
         a `detach` or an op without backward dropped it (candle 0.11's ops::softmax_last_dim, \
         ops::layer_norm, ops::rms_norm, candle_nn::LayerNorm and RmsNorm, rotary embeddings, \
         sdpa); build those \
         from ops that have one: candle_nn::ops::softmax(x, D::Minus1), gevaldi::zoo::LayerNorm \
         (or candle_nn::ops::layer_norm_slow)"
    )]
    MissingGradient {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
    },
    /// A model's output does not depend on its input at all (the same to
    /// the bit with every input value moved by ½; backpropagation gave no
    /// gradient): a constant, or its input multiplied by 0.
    #[error(
        "gradient audit of `{model}` failed: its output does not depend on its {input} (the \
         same with every value of it moved by 0.5, and no gradient): a constant, or its {input} \
         multiplied by 0 (candle keeps no graph for those); there is nothing to search through it"
    )]
    ConstantOutput {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
    },
    /// A model's output at the audited input is not finite.
    #[error(
        "gradient audit of `{model}` failed: its output at the audited {input} is not finite \
         ({count} of {total} values NaN or infinite), so it has no gradient to check: check \
         its weights, and that it takes this {input}"
    )]
    NonFiniteOutput {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
        /// How many output values are NaN or infinite.
        count: usize,
        /// How many output values there are.
        total: usize,
    },
    /// Backpropagation gave NaN or infinite values at an input where the
    /// model's output is finite: an op whose derivative is infinite or
    /// undefined there (sqrt or a norm at 0), where the search would step
    /// to NaN.
    #[error(
        "gradient audit of `{model}` failed: backpropagation gave a gradient that is not \
         finite ({count} of {total} values NaN or infinite) at an {input} where its output is \
         finite: an op whose derivative is infinite or undefined there (sqrt or a norm at 0, \
         log or a division at 0, a fractional power of 0, often behind a ReLU that is off); \
         keep its argument away from 0 (e.g. sqrt(x + 1e-12))"
    )]
    NonFiniteGradient {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
        /// How many gradient values are NaN or infinite.
        count: usize,
        /// How many gradient values there are.
        total: usize,
    },
    /// Two forward passes of a model on one input differ.
    #[error(
        "gradient audit of `{model}` failed: two forward passes on the same {input} differ, \
         by up to {difference:.3e} against outputs up to {scale:.3e}: a model in training mode \
         (dropout, batch statistics) or with random ops is neither audited nor searched \
         soundly; run it in inference mode (no dropout, running statistics)"
    )]
    Nondeterministic {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
        /// The largest difference between the two outputs.
        difference: f64,
        /// The largest output magnitude.
        scale: f64,
    },
    /// A model's output for a sample depends on the other samples of its
    /// batch.
    #[error(
        "gradient audit of `{model}` failed: its output for one {input} depends on the other \
         samples of its batch: the first of a batch of {batch}, alone, gives an output that \
         differs by up to {difference:.3e} against outputs up to {scale:.3e}: a model with \
         batch statistics (a batch norm in training mode, e.g. candle-nn's `forward_t(x, \
         true)`) or an op across the batch; the search climbs each sample's divergence on its \
         own, so run it in inference mode (running statistics)"
    )]
    BatchDependent {
        /// The model's name.
        model: String,
        /// "input" or "latent z".
        input: &'static str,
        /// The batch's size.
        batch: usize,
        /// The largest difference between the first row and the first
        /// sample's output alone.
        difference: f64,
        /// The largest output magnitude.
        scale: f64,
    },
    /// A backpropagated directional derivative disagrees with finite differences.
    #[error(
        "gradient audit of `{model}` failed: along direction {direction}, backprop gives \
         {backprop:.6e} but central finite differences give {finite_difference:.6e} \
         (ratio {ratio:.4}, allowed 1 ± {tolerance}); either an op's backward is wrong: \
         candle 0.11's max_pool2d scales its gradient by 1/k² (a ratio of 1/4 per 2×2 pool), \
         so pool with gevaldi::zoo::max_pool2d (or zoo::max_pool2x2) instead; or a part of \
         the gradient is dropped (a `detach` on one branch, an op without backward such as \
         candle's softmax_last_dim inside a residual block); or the input sits on a kink \
         (max-pool ties, or ReLUs after a conv without bias, over a blank background): audit \
         at random images, or at decoded samples each moved by about 1e-3 of their range"
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
    /// A classifier's class count is not the `[hierarchy]`'s.
    #[error(
        "the hierarchy `{}` has {classes} classes but classifier `{model}` has {got}: the label \
         sets must match",
        path.display()
    )]
    HierarchyClasses {
        /// The hierarchy's class list.
        path: PathBuf,
        /// Its number of classes.
        classes: usize,
        /// The classifier.
        model: String,
        /// Its number of classes.
        got: usize,
    },
    /// A classifier names its classes, and they are not the `[hierarchy]`'s
    /// in logit order (by ID or by name).
    #[error(
        "failed to match classifier `{model}`'s classes to the hierarchy `{}`: its class {index} \
         is `{got}`, the hierarchy's is {theirs}; the hierarchy's classes must be the \
         classifier's in logit order, by ID or by name",
        path.display()
    )]
    HierarchyClassOrder {
        /// The hierarchy's class list.
        path: PathBuf,
        /// The classifier.
        model: String,
        /// The first logit whose class differs.
        index: usize,
        /// The classifier's name for it.
        got: String,
        /// The hierarchy's ID and name for it: `` `n01440764` (tench) ``.
        theirs: String,
    },
    /// A weights file could not be loaded into a model.
    #[error(
        "failed to load weights `{}` for `{model}`: {}",
        path.display(),
        candle_message(.cause)
    )]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The model or architecture being loaded.
        model: String,
        /// candle's error (missing tensor, wrong shape, not safetensors, ...),
        /// printed in the message (so not also a `source()`).
        cause: Box<candle_core::Error>,
    },
    /// A classifier with fewer than 2 classes: its predictive distribution
    /// is the same whatever its input.
    #[error(
        "classifier `{model}` has {classes} class{}, expected 2 or more: distributions over fewer \
         classes never differ, so every divergence would be 0 and every threshold would pass; a \
         binary classifier with one logit (a sigmoid's) has the two logits [0, logit]",
        if *.classes == 1 { "" } else { "es" }
    )]
    TooFewClasses {
        /// The classifier.
        model: String,
        /// Its number of classes.
        classes: usize,
    },
    /// A class-conditional generator whose MDS samples are labelled by
    /// their condition has another number of classes than a classifier.
    #[error(
        "generator `{generator}` is conditional on {conditions} classes but classifier \
         `{model}` has {classes}: the MDS samples are labelled by their condition, so the \
         generator's classes must be the classifiers' (in logit order)"
    )]
    ConditionClasses {
        /// The generator.
        generator: String,
        /// Its number of classes.
        conditions: usize,
        /// The classifier.
        model: String,
        /// Its number of classes.
        classes: usize,
    },
    /// A classifier of one's own returns probabilities where logits are
    /// expected: the divergences softmax them again.
    #[error(
        "classifier `{model}` returns probabilities, not logits: each of its rows at {samples} of \
         the generator's samples is in [0, 1] and sums to 1, and the divergences take a softmax \
         of what it returns (which flattens probabilities towards uniform); return the scores \
         before the softmax, or their log_softmax"
    )]
    Probabilities {
        /// The classifier.
        model: String,
        /// How many samples it was seen on.
        samples: usize,
    },
    /// A model registered from Rust failed to build with a bare candle
    /// error (its function's `?` on a candle result: a missing tensor, a
    /// wrong shape), which names neither the model nor its table.
    #[error(
        "failed to build {kind} `{model}` ({}:{line}{}) with the function registered for it: {}",
        path.display(),
        weights.as_ref().map(|w| format!(", weights `{}`", w.display())).unwrap_or_default(),
        candle_message(.cause)
    )]
    Build {
        /// Classifier or generator.
        kind: gevaldi_config::ModelKind,
        /// The model's name.
        model: String,
        /// The config declaring it.
        path: PathBuf,
        /// The line of its table.
        line: usize,
        /// Its `weights`, resolved, if it has any.
        weights: Option<PathBuf>,
        /// candle's error, printed in the message (so not a `source()`).
        cause: Box<candle_core::Error>,
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
    #[error("failed to {action} `{}`: {cause}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error, printed in the message (so not also a `source()`).
        cause: std::io::Error,
    },
}

impl Error {
    pub(crate) fn model(
        model: impl Into<String>,
        action: impl Into<String>,
    ) -> impl FnOnce(candle_core::Error) -> Self {
        let (model, action) = (model.into(), action.into());
        move |cause| Error::Model {
            model,
            action,
            cause: Box::new(strip_backtrace(cause)),
        }
    }

    pub(crate) fn tensor(action: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let action = action.into();
        move |cause| Error::Tensor {
            action,
            cause: Box::new(strip_backtrace(cause)),
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

/// The images a built-in classifier of `dataset` takes, in words
/// ([`Error::Unprepared`]).
fn takes(dataset: &Dataset) -> &'static str {
    match dataset {
        Dataset::ImageNet => "ImageNet-normalised colour images",
        Dataset::Mnist => "grey images in [0, 1]",
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(Box::new(strip_backtrace(e)))
    }
}

/// `e` without the backtraces candle attaches when `RUST_BACKTRACE` is set
/// (`Error::WithBacktrace`, whose `Display` prints every frame), also under
/// `Context` and `WithPath`, and without frames that a message formatted
/// from such an error carries as text.
pub(crate) fn strip_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => strip_backtrace(*inner),
        E::Context { inner, context } => E::Context {
            inner: Box::new(strip_backtrace(*inner)),
            context,
        },
        E::WithPath { inner, path } => E::WithPath {
            inner: Box::new(strip_backtrace(*inner)),
            path,
        },
        E::Msg(text) => E::Msg(strip_frames(&text)),
        other => other,
    }
}

/// candle's message for `e` on one line: backtraces left out (see
/// [`strip_backtrace`]), a context joined to its cause with ": " rather than
/// a line break.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("`{}`: {}", path.display(), candle_message(inner)),
        other => strip_frames(&other.to_string()),
    }
}

/// `text` without the lines of a printed backtrace (`stack backtrace:`,
/// `  12: some::function` and `      at src/file.rs:3:4`), trailing blank
/// lines trimmed.
fn strip_frames(text: &str) -> String {
    let frame = |line: &str| {
        let t = line.trim_start();
        let indented = t.len() < line.len();
        let numbered = t
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        t == "stack backtrace:" || (indented && (numbered || t.starts_with("at ")))
    };
    if !text.lines().any(frame) {
        return text.to_string();
    }
    // A line that went on after the backtrace (e.g. the `)` of a message
    // that wrapped the error) rejoins the line before it.
    let mut out = String::new();
    let mut after_frames = false;
    for line in text.lines() {
        if frame(line) {
            after_frames = true;
            continue;
        }
        let rejoin = after_frames && !line.starts_with(|c: char| c.is_alphanumeric());
        if !out.is_empty() && !rejoin {
            out.push('\n');
        }
        out.push_str(line);
        after_frames = false;
    }
    out.trim_end().to_string()
}

/// `n` bytes in binary units, e.g. "1.5 GiB".
/// An estimate of `n` bytes in words: `about 1.5 GiB`, or, where the
/// estimate saturated at `u64::MAX`, `more than 16384.0 PiB` (not a
/// figure).
fn about_bytes(n: u64) -> String {
    if n == u64::MAX {
        format!("more than {}", bytes(n))
    } else {
        format!("about {}", bytes(n))
    }
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `batch = 9223372036854775807` "needs about 16384.0 PiB",
    /// a saturated estimate shown as a figure.
    #[test]
    fn a_saturated_memory_estimate_is_not_shown_as_a_figure() {
        assert_eq!(about_bytes(3 << 29), "about 1.5 GiB");
        assert_eq!(about_bytes(u64::MAX), "more than 16384.0 PiB");
    }

    fn with_backtrace(inner: candle_core::Error) -> candle_core::Error {
        candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        }
    }

    #[test]
    fn candle_backtraces_stay_out_of_messages() {
        let e = with_backtrace(candle_core::Error::Msg("boom".into()));
        assert!(e.to_string().contains(" at "), "a captured backtrace: {e}");
        let e = Error::model("cnn_a", "compute logits")(e);
        assert_eq!(
            e.to_string(),
            "failed to compute logits for model `cnn_a`: boom"
        );
        let Error::Model { cause, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(cause.to_string(), "boom");
        // The message prints the cause, so the chain must not again.
        assert!(std::error::Error::source(&e).is_none());

        let nested = with_backtrace(candle_core::Error::Msg("inner".into())).context("outer");
        let e = Error::from(nested);
        assert_eq!(e.to_string(), "tensor operation failed: outer: inner");

        // A message formatted from an error with a backtrace, as text.
        let text = format!(
            "not a valid safetensors file ({}): expected a header",
            with_backtrace(candle_core::Error::Msg("bad header".into()))
        );
        let e = Error::Weights {
            path: "w.safetensors".into(),
            model: "m".into(),
            cause: Box::new(candle_core::Error::Msg(text)),
        };
        assert_eq!(
            e.to_string(),
            "failed to load weights `w.safetensors` for `m`: not a valid safetensors file \
             (bad header): expected a header"
        );
        // Printed in the message, so not again as the chain's next link.
        assert!(std::error::Error::source(&e).is_none());

        let e = Error::Io {
            action: "read weights",
            path: "w.safetensors".into(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            e.to_string(),
            "failed to read weights `w.safetensors`: no such file"
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn strip_frames_keeps_ordinary_text() {
        let text = "shape mismatch: 3: expected [2, 3]\nat least one tensor";
        assert_eq!(strip_frames(text), text);
        assert_eq!(
            strip_frames("boom\n   0: a::b\n             at src/a.rs:1:2\n   1: c"),
            "boom"
        );
        assert_eq!(
            strip_frames("a (boom\n   0: a::b\n   1: c\n)\nnext"),
            "a (boom)\nnext"
        );
    }

    #[test]
    fn bytes_are_written_in_binary_units() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
