//! The validated contents of a `gevaldi.toml`.

use std::path::PathBuf;

use crate::error::{ConfigError, ConfigErrors};
use crate::vocab::{
    Architecture, Channels, DivergenceKind, ModelKind, OptimizerKind, RankingKind, TrialId,
    TrialKind,
};

/// Search settings as written; `None` means "inherit" (from `[search]`, then
/// from gevaldi's defaults).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchSettings {
    /// `steps`: ascent steps, ≥ 1.
    pub steps: Option<u64>,
    /// `lr`: learning rate, > 0.
    pub lr: Option<f64>,
    /// `optimizer`.
    pub optimizer: Option<OptimizerKind>,
    /// `lambda`: weight of log p(z), ≥ 0.
    pub lambda: Option<f64>,
    /// `batch`: samples searched at once, ≥ 1.
    pub batch: Option<u64>,
    /// `seed`: ≥ 0.
    pub seed: Option<u64>,
    /// `divergence`.
    pub divergence: Option<DivergenceKind>,
    /// `early_stop = { window, tolerance }`.
    pub early_stop: Option<(u64, f64)>,
}

impl SearchSettings {
    /// These settings with the unset ones taken from `base`.
    pub fn or(&self, base: &SearchSettings) -> SearchSettings {
        SearchSettings {
            steps: self.steps.or(base.steps),
            lr: self.lr.or(base.lr),
            optimizer: self.optimizer.or(base.optimizer),
            lambda: self.lambda.or(base.lambda),
            batch: self.batch.or(base.batch),
            seed: self.seed.or(base.seed),
            divergence: self.divergence.or(base.divergence),
            early_stop: self.early_stop.or(base.early_stop),
        }
    }
}

/// A classifier's `preprocess = { … }`: what a generator's output goes
/// through before the classifier sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreprocessDecl {
    /// `input_range = [lo, hi]`: the generator's output range, mapped onto
    /// [0, 1] (default [0, 1]).
    pub input_range: Option<(f64, f64)>,
    /// `resize = 224` or `[h, w]`: bilinear resize.
    pub resize: Option<(usize, usize)>,
    /// `channels = "rgb" | "bgr" | "grey-to-rgb"`.
    pub channels: Option<Channels>,
    /// `mean = [..]`: per-channel mean (1 or 3 numbers), with `std`.
    pub mean: Option<Vec<f64>>,
    /// `std = [..]`: per-channel standard deviation, > 0, with `mean`.
    pub std: Option<Vec<f64>>,
}

/// A `[generator.<name>]` or `[classifier.<name>]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDecl {
    /// The table's name.
    pub name: String,
    /// A built-in architecture and its weights file (resolved against the
    /// config's directory); `None` for a model registered from Rust.
    pub builtin: Option<(Architecture, PathBuf)>,
    /// The table as a model registered from Rust sees it: its name, its
    /// `weights` and, in a table without `arch`, its free-form keys.
    pub table: ModelTable,
    /// `preprocess`, classifiers only.
    pub preprocess: Option<PreprocessDecl>,
    /// `truncation` in (0, 1], only on an `arch` that takes one (BigGAN,
    /// `Architecture::takes_truncation`). (Default: none, the
    /// architecture's own: 1 for BigGAN.)
    pub truncation: Option<f64>,
    /// `transform_input`, only on `googlenet`: whether the network first
    /// re-normalises its ImageNet-normalised input to mean 0.5, std 0.5,
    /// as torchvision's pretrained GoogLeNet does (`transform_input=True`)
    /// and one built with `googlenet(weights=None)` does not. (Default:
    /// none, the pretrained weights' `true`.)
    pub transform_input: Option<bool>,
    /// `optional = true`: when the weights file is absent, the trials that
    /// use this model are skipped with a message instead of the config
    /// being refused (for suites of weights that cannot be committed).
    /// (Default: `false`.)
    pub optional: bool,
    /// The line of the table's header.
    pub line: usize,
}

impl ModelDecl {
    /// The weights file of an `optional` model that is absent, if so.
    pub fn missing_weights(&self) -> Option<&std::path::Path> {
        match &self.table.weights {
            Some(w) if self.optional && !w.is_file() => Some(w),
            _ => None,
        }
    }
}

/// A value of a free-form key of a table without `arch`, as written.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TableValue {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float (possibly `inf` or `nan`, as TOML allows).
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// A date or time, as written.
    Datetime(String),
    /// An array.
    Array(Vec<TableValue>),
    /// An inline or nested table, keys in file order.
    Table(Vec<(String, TableValue)>),
}

impl TableValue {
    /// The TOML type's name, for messages: `string`, `integer`, ….
    pub fn type_name(&self) -> &'static str {
        match self {
            TableValue::String(_) => "string",
            TableValue::Integer(_) => "integer",
            TableValue::Float(_) => "float",
            TableValue::Boolean(_) => "boolean",
            TableValue::Datetime(_) => "datetime",
            TableValue::Array(_) => "array",
            TableValue::Table(_) => "table",
        }
    }
}

/// A free-form key of a table without `arch`, and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FreeKey {
    pub(crate) name: String,
    pub(crate) value: TableValue,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A model's `[classifier.<name>]` or `[generator.<name>]` table, as the
/// function that builds a model registered from Rust receives it.
///
/// A table without `arch` may hold, besides `weights`, `optional` (and
/// `preprocess` for a classifier), any keys of its own; read them with the
/// typed getters, whose errors name the file, line and key. Paths are
/// resolved against the config's directory.
///
/// ```toml
/// [classifier.mine]
/// weights = "mine.safetensors"   # `table.weights`, resolved
/// hidden = 128                   # `table.get_i64("hidden")`
/// labels = "labels.txt"          # `table.get_path("labels")`, resolved
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ModelTable {
    /// The table's name: `mine` for `[classifier.mine]`.
    pub name: String,
    /// `weights`, resolved against the config's directory. The file exists
    /// unless the table says `optional = true` (then the trials that use
    /// the model are skipped when it is absent).
    pub weights: Option<PathBuf>,
    /// The directory of the config, against which paths are resolved.
    pub dir: PathBuf,
    pub(crate) kind: ModelKind,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) keys: Vec<FreeKey>,
}

impl ModelTable {
    /// `classifier` or `generator`.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The free-form keys, in file order (not `weights`, `optional` or
    /// `preprocess`; none in a table with `arch`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }

    /// The free-form key `key`'s value, if the table has it.
    pub fn get(&self, key: &str) -> Option<&TableValue> {
        self.find(key).map(|k| &k.value)
    }

    /// The string `key`, if present; an error when it is not a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, ConfigErrors> {
        self.typed(key, "a string", |v| match v {
            TableValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The integer `key`, if present; an error when it is not an integer.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, ConfigErrors> {
        self.typed(key, "an integer", |v| match v {
            TableValue::Integer(i) => Some(*i),
            _ => None,
        })
    }

    /// The number `key` (an integer or a float), if present; an error when
    /// it is not a finite number.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, ConfigErrors> {
        self.typed(key, "a finite number", |v| match v {
            TableValue::Integer(i) => Some(*i as f64),
            TableValue::Float(f) if f.is_finite() => Some(*f),
            _ => None,
        })
    }

    /// The boolean `key`, if present; an error when it is not `true` or
    /// `false`.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfigErrors> {
        self.typed(key, "true or false", |v| match v {
            TableValue::Boolean(b) => Some(*b),
            _ => None,
        })
    }

    /// The path `key`, a string resolved against the config's directory,
    /// if present; an error when it is not a string. Whether it exists is
    /// the caller's question.
    pub fn get_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigErrors> {
        Ok(self.get_str(key)?.map(|p| self.dir.join(p)))
    }

    /// An error about this table's key `key` (at the key's line when the
    /// table has it, else at the table's header), for a registration's own
    /// checks: `table.error("hidden", "expected a power of two")`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigErrors {
        let (line, column) = self
            .find(key)
            .map_or((self.line, 1), |k| (k.line, k.column));
        let error = ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: format!("{}.{}.{key}", self.kind, self.name),
            message: message.into(),
        };
        ConfigErrors {
            file: self.file.clone(),
            errors: vec![error],
        }
    }

    fn find(&self, key: &str) -> Option<&FreeKey> {
        self.keys.iter().find(|k| k.name == key)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        pick: impl Fn(&'a TableValue) -> Option<T>,
    ) -> Result<Option<T>, ConfigErrors> {
        match self.find(key) {
            None => Ok(None),
            Some(k) => match pick(&k.value) {
                Some(v) => Ok(Some(v)),
                None => {
                    let found = match &k.value {
                        TableValue::Float(f) if !f.is_finite() => format!("{f}"),
                        other => other.type_name().to_string(),
                    };
                    Err(self.error(key, format!("expected {expected}, found {found}")))
                }
            },
        }
    }
}

/// The summary statistic of the per-sample divergences that
/// `max_divergence` bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Statistic {
    /// The largest divergence over the samples (the default).
    Max,
    /// The mean over the samples.
    Mean,
    /// A quantile q in [0, 1] (linear interpolation between order
    /// statistics).
    Quantile(f64),
}

impl Statistic {
    /// Its name in a config.
    pub fn kind(self) -> crate::StatisticKind {
        match self {
            Statistic::Max => crate::StatisticKind::Max,
            Statistic::Mean => crate::StatisticKind::Mean,
            Statistic::Quantile(_) => crate::StatisticKind::Quantile,
        }
    }
}

/// `max`, `mean`, or `quantile <q>` (`quantile 0.9`), as a snapshot's
/// `thresholds` line shows it.
impl std::fmt::Display for Statistic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statistic::Quantile(q) => write!(f, "{} {q}", self.kind()),
            s => f.write_str(s.kind().name()),
        }
    }
}

/// The `[hierarchy]` table: the label hierarchy of the set distance.
#[derive(Clone, Debug, PartialEq)]
pub struct HierarchyDecl {
    /// `classes`: the class list (index, id, name), resolved.
    pub classes: PathBuf,
    /// `edges`: the (child, parent) list, resolved.
    pub edges: PathBuf,
    /// `names`: optionally, every node's (id, name), resolved.
    pub names: Option<PathBuf>,
}

/// The thresholds of one pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `max_divergence`: fail when the statistic of the divergences after the
    /// search is above it.
    pub max_divergence: Option<f64>,
    /// `statistic` (and `quantile`): what `max_divergence` bounds.
    pub statistic: Statistic,
    /// `min_lift`: fail when mean divergence after / baseline is below it.
    pub min_lift: Option<f64>,
    /// `max_set_distance`: fail when the statistic of the hierarchical set
    /// distances of the models' top-n predictions after the search is above
    /// it.
    pub max_set_distance: Option<f64>,
    /// `top_n`: the n of the set distance (default 1).
    pub top_n: usize,
}

/// A `[[pair]]` entry: one test.
#[derive(Clone, Debug, PartialEq)]
pub struct PairDecl {
    /// `name`: the test is `pair::<name>`.
    pub name: String,
    /// `models`: two or more classifier names, in order.
    pub models: Vec<String>,
    /// `generator`: a generator name.
    pub generator: String,
    /// Overrides of `[search]`.
    pub search: SearchSettings,
    /// The thresholds.
    pub thresholds: Thresholds,
    /// `ignore = true` marks the test ignored (run with `--ignored`).
    pub ignore: bool,
    /// The line of its `[[pair]]` header.
    pub line: usize,
}

/// A validated `gevaldi.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[search]`: defaults of every pair.
    pub search: SearchSettings,
    /// `[hierarchy]`: the label hierarchy; `None` for a flat one.
    pub hierarchy: Option<HierarchyDecl>,
    /// `[generator.*]`, in file order.
    pub generators: Vec<ModelDecl>,
    /// `[classifier.*]`, in file order.
    pub classifiers: Vec<ModelDecl>,
    /// `[[pair]]`, in file order.
    pub pairs: Vec<PairDecl>,
    /// `[[ensemble]]`, in file order.
    pub ensembles: Vec<EnsembleDecl>,
    /// `[[tournament]]`, in file order.
    pub tournaments: Vec<TournamentDecl>,
}

/// A `min_win_rate` entry of a tournament: `model`'s least share of the
/// samples decided against `against`.
#[derive(Clone, Debug, PartialEq)]
pub struct WinRateDecl {
    /// `model`.
    pub model: String,
    /// `against`.
    pub against: String,
    /// `min`, in [0, 1].
    pub min: f64,
}

/// A `[[tournament]]` entry: one test, `tournament::<name>` (MAD
/// competition: every ordered pair's MDS set, labelled by the generator's
/// conditions, ranks the models).
#[derive(Clone, Debug, PartialEq)]
pub struct TournamentDecl {
    /// `name`.
    pub name: String,
    /// `models`: 3 or more classifier names, distinct.
    pub models: Vec<String>,
    /// `generator`: a class-conditional generator.
    pub generator: String,
    /// `samples`: MDS samples per ordered pair (default 100).
    pub samples: usize,
    /// `test_data`: a directory of IDX test images and labels, resolved;
    /// the models' test accuracies, for the SRCC.
    pub test_data: Option<PathBuf>,
    /// Overrides of `[search]` (the divergence is used as given: a directed
    /// one such as `kl` makes the two orders of a pair differ).
    pub search: SearchSettings,
    /// `ranking`: what the rank thresholds read (default `mad`).
    pub ranking: RankingKind,
    /// `champion`: must rank first.
    pub champion: Option<String>,
    /// `max_rank = { model = r }`: must rank r-th or better, in file order.
    pub max_rank: Vec<(String, usize)>,
    /// `above = [[a, b]]`: a must rank above b.
    pub above: Vec<(String, String)>,
    /// `min_win_rate = [{ model, against, min }]`.
    pub min_win_rate: Vec<WinRateDecl>,
    /// `min_srcc`: the least SRCC of the ranking with the test accuracy, in
    /// [-1, 1] (needs `test_data`).
    pub min_srcc: Option<f64>,
    /// `ignore = true` marks the test ignored.
    pub ignore: bool,
    /// The line of its header.
    pub line: usize,
}

/// An `[[ensemble]]` entry: one test, `ensemble::<name>` (paper appendix F).
#[derive(Clone, Debug, PartialEq)]
pub struct EnsembleDecl {
    /// `name`.
    pub name: String,
    /// `members`: the base learners, 2 or more classifier names.
    pub members: Vec<String>,
    /// `generator`: a class-conditional generator.
    pub generator: String,
    /// `samples`: K, the size of the MDS dataset (default 2000).
    pub samples: usize,
    /// `test_data`: a directory with `test-images-idx3-ubyte[.gz]` and
    /// `test-labels-idx1-ubyte[.gz]`, resolved.
    pub test_data: PathBuf,
    /// `min_samples`: DBSCAN's neighbourhood size (default 10).
    pub min_samples: usize,
    /// Overrides of `[search]` (the divergence is always `js`).
    pub search: SearchSettings,
    /// `min_mds_accuracy`: fail when the vote's MDS accuracy is below it.
    pub min_mds_accuracy: Option<f64>,
    /// `max_accuracy_drop`: fail when test accuracy − MDS accuracy exceeds it.
    pub max_accuracy_drop: Option<f64>,
    /// `min_accuracy_drop`: fail when the search lowered the accuracy by less
    /// (it found too little).
    pub min_accuracy_drop: Option<f64>,
    /// `max_regions`: fail when DBSCAN finds more regions of uncertainty.
    pub max_regions: Option<usize>,
    /// `ignore = true` marks the test ignored.
    pub ignore: bool,
    /// The line of its header.
    pub line: usize,
}

impl Config {
    /// The tournament called `name`.
    pub fn tournament(&self, name: &str) -> Option<&TournamentDecl> {
        self.tournaments.iter().find(|t| t.name == name)
    }

    /// The ensemble called `name`.
    pub fn ensemble(&self, name: &str) -> Option<&EnsembleDecl> {
        self.ensembles.iter().find(|e| e.name == name)
    }
}

impl Config {
    /// The pair called `name`.
    pub fn pair(&self, name: &str) -> Option<&PairDecl> {
        self.pairs.iter().find(|p| p.name == name)
    }
    /// The generator called `name`.
    pub fn generator(&self, name: &str) -> Option<&ModelDecl> {
        self.generators.iter().find(|m| m.name == name)
    }
    /// The classifier called `name`.
    pub fn classifier(&self, name: &str) -> Option<&ModelDecl> {
        self.classifiers.iter().find(|m| m.name == name)
    }

    /// The trials: pairs, then ensembles, then tournaments, each in config
    /// order.
    pub fn trials(&self) -> Vec<TrialId> {
        let pairs = self.pairs.iter().map(|p| TrialId::pair(&p.name));
        let ensembles = self.ensembles.iter().map(|e| TrialId::ensemble(&e.name));
        let tournaments = self
            .tournaments
            .iter()
            .map(|t| TrialId::tournament(&t.name));
        pairs.chain(ensembles).chain(tournaments).collect()
    }

    /// Whether the trial is marked `ignore = true` (false for a trial that
    /// is not in the config).
    pub fn ignored(&self, trial: &TrialId) -> bool {
        match trial.kind {
            TrialKind::Pair => self.pair(&trial.name).is_some_and(|p| p.ignore),
            TrialKind::Ensemble => self.ensemble(&trial.name).is_some_and(|e| e.ignore),
            TrialKind::Tournament => self.tournament(&trial.name).is_some_and(|t| t.ignore),
        }
    }

    /// The models a trial uses: its generator and its classifiers, in
    /// order; `None` for a trial that is not in the config.
    pub fn models(&self, trial: &TrialId) -> Option<(&ModelDecl, Vec<&ModelDecl>)> {
        let (generator, classifiers) = match trial.kind {
            TrialKind::Pair => {
                let p = self.pair(&trial.name)?;
                (&p.generator, &p.models)
            }
            TrialKind::Ensemble => {
                let e = self.ensemble(&trial.name)?;
                (&e.generator, &e.members)
            }
            TrialKind::Tournament => {
                let t = self.tournament(&trial.name)?;
                (&t.generator, &t.models)
            }
        };
        let classifiers = classifiers
            .iter()
            .filter_map(|c| self.classifier(c))
            .collect();
        Some((self.generator(generator)?, classifiers))
    }

    /// Why the trial is skipped: the weights of an `optional` model it
    /// uses are absent.
    pub fn skip_reason(&self, trial: &TrialId) -> Option<String> {
        let (generator, classifiers) = self.models(trial)?;
        let decls = std::iter::once(("generator", generator))
            .chain(classifiers.into_iter().map(|d| ("classifier", d)));
        for (kind, decl) in decls {
            if let Some(w) = decl.missing_weights() {
                return Some(format!(
                    "the weights of {kind} `{}` are not present (`{}`; it is `optional`): \
                     skipped",
                    decl.name,
                    w.display()
                ));
            }
        }
        None
    }
}
