//! The `gevaldi.toml` schema, shared by the gevaldi library (at run time)
//! and its `main!` macro (at compile time), so that both report the same
//! mistakes the same way: every mistake of a file at once, each as
//! `file:line:column: `key.path`: what is wrong, what was expected`.
//!
//! Most users never name this crate: `gevaldi::config` re-exports it.
//!
//! # The schema
//!
//! ```toml
//! [search]                 # defaults for every pair (all optional)
//! divergence = "kl"        # kl, reverse-kl, jeffreys, js, tv
//! optimizer = "adam"       # sgd, adam
//! lr = 0.05                # > 0
//! lambda = 0.01            # >= 0, weight of log p(z)
//! batch = 64               # >= 1
//! steps = 200              # >= 1
//! seed = 0                 # >= 0
//! early_stop = { window = 20, tolerance = 1e-4 }   # optional
//!
//! [hierarchy]              # optional: the label hierarchy of the set
//! classes = "classes.tsv"  # distance (index, id, name); with none, every
//! edges = "edges.tsv"      # class is a child of one root. (child, parent)
//! names = "names.tsv"      # optional (id, name) of every node
//!
//! [generator.vae]          # a built-in architecture and its weights,
//! arch = "mnist-vae"       # relative to this file
//! weights = "vae.safetensors"
//!
//! [classifier.mine]        # no `arch`: registered from Rust under this name;
//! weights = "mine.safetensors"   # optional here; with `optional`, `preprocess`
//! hidden = 128             # and any keys of its own (see `ModelTable`)
//!
//! [classifier.alexnet]     # torchvision's names (state dict as safetensors)
//! arch = "alexnet"
//! weights = "alexnet.safetensors"
//! preprocess = { input_range = [-1, 1], resize = 224, channels = "rgb",
//!                mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }
//!
//! [[pair]]                 # one test, `pair::<name>`
//! name = "a-vs-b"
//! models = ["a", "b"]      # 2 or more classifiers, in order (kl is directed)
//! generator = "vae"
//! max_divergence = 1.5     # optional: fail when the statistic exceeds it
//! statistic = "max"        # max (default), mean, or quantile (with `quantile = 0.9`)
//! min_lift = 2.0           # optional: fail when MDS / baseline divergence is below it
//! top_n = 3                # the n of the set distance (default 1)
//! max_set_distance = 2.0   # optional: fail when the statistic of the set distances exceeds it
//! ignore = false           # optional
//! steps = 50               # any [search] key overrides it for this pair
//! ```
//!
//! ```toml
//! [[ensemble]]             # one test, `ensemble::<name>` (paper appendix F)
//! name = "bagging"
//! members = ["bag_0", "bag_1", "bag_2"]   # the base learners
//! generator = "cvae"       # class-conditional
//! test_data = "data"       # test-images-idx3-ubyte[.gz], test-labels-idx1-ubyte[.gz]
//! samples = 2000           # K, the MDS dataset's size (default 2000)
//! min_samples = 10         # DBSCAN's neighbourhood (default 10)
//! min_accuracy_drop = 0.15 # optional thresholds: fractions of 1
//! max_accuracy_drop = 0.5
//! min_mds_accuracy = 0.5
//! max_regions = 100
//! steps = 200              # any [search] key but `divergence` (always js)
//! ```
//!
//! ```toml
//! [[tournament]]           # one test, `tournament::<name>` (MAD competition)
//! name = "mnist"
//! models = ["cnn_a", "cnn_b", "bag_0"]   # 3 or more classifiers
//! generator = "cvae"       # class-conditional: the conditions are the labels
//! samples = 100            # MDS samples per ordered pair (default 100)
//! test_data = "data"       # optional: test accuracies, for the SRCC
//! ranking = "mad"          # or "bradley-terry": what the rank thresholds read
//! champion = "cnn_b"       # optional thresholds: must rank first
//! max_rank = { cnn_a = 2 } # must rank 2nd or better
//! above = [["cnn_a", "bag_0"]]
//! min_win_rate = [{ model = "cnn_b", against = "cnn_a", min = 0.5 }]
//! min_srcc = 0.5           # SRCC of the ranking with the test accuracy
//! steps = 100              # any [search] key overrides it (seed: the tournament's)
//! ```
//!
//! Unknown keys are errors, except in a table without `arch`. A NaN threshold is an error.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod parse;
mod schema;
mod vocab;

pub use error::{ConfigError, ConfigErrors};
pub use parse::{load, parse, parse_in};
pub use schema::{
    Config, EnsembleDecl, HierarchyDecl, ModelDecl, ModelTable, PairDecl, PreprocessDecl,
    SearchSettings, Statistic, TableValue, Thresholds, TournamentDecl, WinRateDecl,
};
pub use vocab::{
    Architecture, Arity, Channels, Dataset, DivergenceKind, ModelKind, OptimizerKind, RankingKind,
    Rule, StatisticKind, TrialId, TrialKind, LOG_PROB_FLOOR, LR, NON_NEGATIVE,
};

/// The most clusters DBSCAN (as `gevaldi::regions::dbscan` runs it: a
/// core point has at least `min_samples` points within eps, itself
/// included) can find among `points` points, whatever the points and eps:
/// an ensemble's `max_regions` at or above it can never fail.
///
/// Each cluster has a core point with `min_samples - 1` neighbours. A
/// core neighbour is in that cluster only; a non-core neighbour (a border
/// point) has at most `min_samples - 2` neighbours itself, so at most that
/// many clusters' core points share it. With one core point per cluster
/// and every neighbour a shared border point, K clusters need
/// K (m - 1) <= B (m - 2) and K + B <= n: K <= n (m - 2) / (2m - 3) for
/// m >= 3 (n / 2 for m = 2, n for m = 1, none for m > n). And one core
/// point's m - 1 neighbours are none of the other clusters' core points:
/// K <= n - m + 1. It is not n / m: two core points sharing three border
/// points are two clusters of five points at m = 4.
pub fn most_dbscan_clusters(points: usize, min_samples: usize) -> usize {
    let (n, m) = (points, min_samples.max(1));
    if m > n {
        return 0;
    }
    let shared = match m {
        1 => n,
        2 => n / 2,
        m => n * (m - 2) / (2 * m - 3),
    };
    shared.min(n - m + 1)
}

/// The fewest prior samples a baseline must rest on for `min_lift` to be
/// checked. The baseline is the mean divergence over `batch` fresh prior
/// samples, and that divergence is heavy-tailed (on the MNIST fixtures,
/// over 16 samples: mean 0.119, median 0.013, max 1.45, one sample
/// carrying most of the mean); over fewer, one sample more or less moves
/// the lift several-fold, and over one (`batch = 1`) a baseline of
/// 0.00001 let a search pass `min_lift` with a lift of 169498.
pub const MIN_BASELINE_SAMPLES: usize = 16;

/// The longest pair, ensemble or tournament name, in bytes. A name becomes file names
/// (`<name>.snap`, `<name>.json`, `<name>.png`, `ensemble-<name>/`, and
/// insta's `<name>.snap.new` / `.pending-snap`), which most file systems
/// cap at 255 bytes: 100 leaves room for every suffix, and for a module
/// prefix.
pub const MAX_NAME_LEN: usize = 100;
