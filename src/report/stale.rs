//! Whether a trial's record is of the trial the config declares now: a
//! record keeps its verdict under the settings, thresholds and models it
//! was run with, and `cargo gevaldi report` after an edit of the TOML (or
//! a model retrained) would show that verdict as the trial's.

use crate::artifact::{
    EnsembleArtifact, EnsembleThresholds, ModelFiles, PairArtifact, Record, TournamentArtifact,
};
use crate::config::{self, Config, EnsembleDecl, PairDecl, TournamentDecl, TrialId, TrialKind};
use crate::snapshot::Settings;
use crate::tournament::TournamentThresholds;

/// One way in which a record is not of the trial the config declares now.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Difference {
    /// A key of the declaration (`max_divergence`, `models`, `settings`)
    /// had the value `then` in the run and has `now` in the config.
    Declared {
        /// The key.
        what: &'static str,
        /// As the record holds it.
        then: String,
        /// As the config declares it now.
        now: String,
    },
    /// The bytes of a file the model reads (its weights, or a file a
    /// registered model's table names) differ from those the run read.
    Weights {
        /// The model's table name.
        model: String,
    },
    /// The model's table (its `preprocess`, `truncation`, a registered
    /// model's keys) differs from the run's.
    Table {
        /// The model's table name.
        model: String,
    },
    /// The bytes of a file of the label hierarchy (or whether there is
    /// one) differ from the run's, under a `max_set_distance`.
    Hierarchy,
    /// The record was written by a gevaldi that did not record `what`, so
    /// it cannot tell whether the run was of the trial declared now.
    Unrecorded {
        /// What the record lacks.
        what: &'static str,
    },
}

/// `max_divergence 14.5 -> 13`, ``weights of `cnn_b` changed since the
/// run``, `recorded before gevaldi recorded the thresholds`.
impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Declared { what, then, now } => write!(f, "{what} {then} -> {now}"),
            Difference::Weights { model } => {
                write!(f, "weights of `{model}` changed since the run")
            }
            Difference::Table { model } => write!(
                f,
                "the table of `{model}` (its `preprocess`, `truncation` or other keys) changed \
                 since the run"
            ),
            Difference::Hierarchy => write!(
                f,
                "the label hierarchy ([hierarchy]), which `max_set_distance` reads, changed \
                 since the run"
            ),
            Difference::Unrecorded { what } => write!(f, "recorded before gevaldi recorded {what}"),
        }
    }
}

/// What differs between the trial `id` as `config` declares it and the
/// run its record holds; empty where nothing does (and for a record that
/// is not a trial's result: an error, a tournament's pair).
pub(super) fn differences(config: &Config, id: &TrialId, record: &Record) -> Vec<Difference> {
    match (id.kind, record) {
        (TrialKind::Pair, Record::Pair(p)) => config
            .pair(&id.name)
            .map_or_else(Vec::new, |d| pair_differences(config, d, p)),
        (TrialKind::Ensemble, Record::Ensemble(e)) => config
            .ensemble(&id.name)
            .map_or_else(Vec::new, |d| ensemble_differences(config, d, e)),
        (TrialKind::Tournament, Record::Tournament(t)) => config
            .tournament(&id.name)
            .map_or_else(Vec::new, |d| tournament_differences(config, d, t)),
        _ => Vec::new(),
    }
}

/// The differences found, as [`Difference::Declared`] where `then` and
/// `now` differ.
#[derive(Default)]
struct Differences(Vec<Difference>);

impl Differences {
    fn declared(&mut self, what: &'static str, then: String, now: String) {
        if then != now {
            self.0.push(Difference::Declared { what, then, now });
        }
    }

    /// Each model of the trial whose files differ from those `then`
    /// records, or that the record predates such records.
    fn weights(
        &mut self,
        then: Option<&[ModelFiles]>,
        config: &Config,
        generator: &str,
        models: &[String],
    ) {
        let Some(then) = then else {
            self.0.push(Difference::Unrecorded {
                what: "the digests of the weights",
            });
            return;
        };
        for now in ModelFiles::of_trial(config, generator, models) {
            // A model the run did not use shows as a change of `models`.
            if let Some(was) = then.iter().find(|m| m.model == now.model) {
                if was.table.is_some() && was.table != now.table {
                    self.0.push(Difference::Table {
                        model: now.model.clone(),
                    });
                }
                if was.files != now.files {
                    self.0.push(Difference::Weights { model: now.model });
                }
            }
        }
    }
}

/// `~` for none, else the value.
fn shown<T: ToString>(v: Option<T>) -> String {
    v.map_or("~".to_string(), |v| v.to_string())
}

/// `~` for none, else the items joined with `, `.
fn listed<T>(items: &[T], item: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return "~".to_string();
    }
    items.iter().map(item).collect::<Vec<_>>().join(", ")
}

/// What differs between the pair `decl` as `config` declares it and the
/// run its record `pair` holds (`max_divergence 0.58 -> 0.5`), empty
/// where nothing does.
pub(super) fn pair_differences(
    config: &Config,
    decl: &PairDecl,
    pair: &PairArtifact,
) -> Vec<Difference> {
    let s = &pair.summary;
    let mut out = Differences::default();
    out.declared("models", s.models.join(", "), decl.models.join(", "));
    out.declared("generator", s.generator.clone(), decl.generator.clone());
    if let Ok(c) = config::search_config(&decl.search.or(&config.search)) {
        out.declared("settings", s.settings.line(), Settings::of(&c).line());
    }
    let t = &decl.thresholds;
    let r = &s.thresholds;
    out.declared(
        "max_divergence",
        shown(r.max_divergence),
        shown(t.max_divergence),
    );
    out.declared(
        "statistic",
        r.statistic.to_string(),
        t.statistic.to_string(),
    );
    out.declared("min_lift", shown(r.min_lift), shown(t.min_lift));
    out.declared(
        "max_set_distance",
        shown(r.max_set_distance),
        shown(t.max_set_distance),
    );
    if let Some(d) = &s.set_distance {
        out.declared("top_n", d.top_n.to_string(), t.top_n.to_string());
    }
    // The set distances read the hierarchy; the verdict, only under a
    // `max_set_distance` (an edit of that shows above).
    if let (Some(then), Some(_)) = (&pair.hierarchy, t.max_set_distance) {
        if *then != crate::artifact::weights::hierarchy_files(config) {
            out.0.push(Difference::Hierarchy);
        }
    }
    out.weights(
        pair.weights.as_deref(),
        config,
        &decl.generator,
        &decl.models,
    );
    out.0
}

/// What differs between the ensemble `decl` as `config` declares it and
/// the run its record `e` holds: the members, the generator, the search's
/// settings, K, every threshold, `min_samples`, `test_data` and the
/// models' files.
pub(super) fn ensemble_differences(
    config: &Config,
    decl: &EnsembleDecl,
    e: &EnsembleArtifact,
) -> Vec<Difference> {
    let s = &e.summary;
    let mut out = Differences::default();
    out.declared("members", s.members.join(", "), decl.members.join(", "));
    out.declared("generator", s.generator.clone(), decl.generator.clone());
    // The ensemble's search is always under js (suite/ensemble.rs).
    if let Ok(c) = config::search_config(&decl.search.or(&config.search)) {
        let c = c.divergence(crate::Divergence::js());
        out.declared("settings", s.settings.line(), Settings::of(&c).line());
    }
    out.declared("samples", s.samples.to_string(), decl.samples.to_string());
    match &e.thresholds {
        Some(r) => {
            let t = EnsembleThresholds::from(decl);
            out.declared(
                "min_mds_accuracy",
                shown(r.min_mds_accuracy),
                shown(t.min_mds_accuracy),
            );
            out.declared(
                "max_accuracy_drop",
                shown(r.max_accuracy_drop),
                shown(t.max_accuracy_drop),
            );
            out.declared(
                "min_accuracy_drop",
                shown(r.min_accuracy_drop),
                shown(t.min_accuracy_drop),
            );
            out.declared("max_regions", shown(r.max_regions), shown(t.max_regions));
            out.declared(
                "min_samples",
                r.min_samples.to_string(),
                t.min_samples.to_string(),
            );
            out.declared(
                "test_data",
                r.test_data.display().to_string(),
                t.test_data.display().to_string(),
            );
        }
        None => out.0.push(Difference::Unrecorded {
            what: "the thresholds",
        }),
    }
    out.weights(e.weights.as_deref(), config, &decl.generator, &decl.members);
    out.0
}

/// What differs between the tournament `decl` as `config` declares it
/// and the run its record `t` holds: the models, the generator, the
/// search's settings, the samples a pair, `test_data`, every threshold
/// (`ranking` among them) and the models' files.
pub(super) fn tournament_differences(
    config: &Config,
    decl: &TournamentDecl,
    t: &TournamentArtifact,
) -> Vec<Difference> {
    let s = &t.summary;
    let mut out = Differences::default();
    out.declared("models", s.models.join(", "), decl.models.join(", "));
    out.declared("generator", s.generator.clone(), decl.generator.clone());
    if let Ok(c) = config::search_config(&decl.search.or(&config.search)) {
        out.declared("settings", s.settings.line(), Settings::of(&c).line());
    }
    out.declared("samples", s.samples.to_string(), decl.samples.to_string());
    let path = |p: &Option<std::path::PathBuf>| shown(p.as_ref().map(|p| p.display()));
    // A record of a gevaldi that did not record the path has none, with
    // test data or not; the weights' digests came with it.
    if t.weights.is_some() {
        out.declared("test_data", path(&t.test_data), path(&decl.test_data));
    }
    let (r, d) = (&t.thresholds, TournamentThresholds::from(decl));
    out.declared("ranking", r.ranking.name().into(), d.ranking.name().into());
    out.declared(
        "champion",
        shown(r.champion.as_ref()),
        shown(d.champion.as_ref()),
    );
    let rank = |(m, r): &(String, usize)| format!("{m} = {r}");
    out.declared(
        "max_rank",
        listed(&r.max_rank, rank),
        listed(&d.max_rank, rank),
    );
    let above = |(a, b): &(String, String)| format!("{a} above {b}");
    out.declared("above", listed(&r.above, above), listed(&d.above, above));
    let win =
        |w: &crate::tournament::MinWinRate| format!("{} against {} {}", w.model, w.against, w.min);
    out.declared(
        "min_win_rate",
        listed(&r.min_win_rate, win),
        listed(&d.min_win_rate, win),
    );
    out.declared("min_srcc", shown(r.min_srcc), shown(d.min_srcc));
    out.weights(t.weights.as_deref(), config, &decl.generator, &decl.models);
    out.0
}

/// The models of `record` registered from Rust: their code is in no file,
/// so a change of it since the run cannot be told (only the files their
/// tables name can).
pub(super) fn unchecked(record: &Record) -> Vec<&str> {
    let weights = match record {
        Record::Pair(p) => p.weights.as_deref(),
        Record::Ensemble(e) => e.weights.as_deref(),
        Record::Tournament(t) => t.weights.as_deref(),
        _ => None,
    };
    weights
        .unwrap_or_default()
        .iter()
        .filter(|m| m.registered)
        .map(|m| m.model.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model registered from Rust has no `weights` in the config's
    /// sense: the files its table names are its weights, checked as a
    /// built-in model's weights file is.
    #[test]
    fn a_registered_model_s_files_are_its_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.safetensors"), b"{}").unwrap();
        std::fs::write(dir.path().join("mine.bin"), b"one").unwrap();
        let text = "[generator.vae]\narch = \"mnist-vae\"\nweights = \"w.safetensors\"\n\
                    [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"w.safetensors\"\n\
                    [classifier.mine]\nfile = \"mine.bin\"\nhidden = 3\n\
                    [[pair]]\nname = \"p\"\nmodels = [\"a\", \"mine\"]\ngenerator = \"vae\"\n";
        let path = dir.path().join("gevaldi.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::parse(text, &path).unwrap();
        let models = ["a".to_string(), "mine".to_string()];
        let then = ModelFiles::of_trial(&config, "vae", &models);
        let names: Vec<(&str, bool, usize)> = (then.iter())
            .map(|m| (m.model.as_str(), m.registered, m.files.len()))
            .collect();
        assert_eq!(
            names,
            [("vae", false, 1), ("a", false, 1), ("mine", true, 1)]
        );
        let differences = || {
            let mut out = Differences::default();
            out.weights(Some(&then), &config, "vae", &models);
            out.0
        };
        assert_eq!(differences(), []);
        // Another size: the digests are kept by size and modification
        // time, which a rewrite within the clock's tick may keep.
        std::fs::write(dir.path().join("mine.bin"), b"three").unwrap();
        let now = differences();
        assert_eq!(
            now,
            [Difference::Weights {
                model: "mine".into()
            }]
        );
        assert_eq!(
            now[0].to_string(),
            "weights of `mine` changed since the run"
        );

        // A key of its table edited: what it computes may differ.
        let edited = text.replace("hidden = 3", "hidden = 4");
        let config = crate::config::parse(&edited, &path).unwrap();
        let mut out = Differences::default();
        out.weights(Some(&then), &config, "vae", &models);
        assert_eq!(
            out.0,
            [
                Difference::Table {
                    model: "mine".into()
                },
                Difference::Weights {
                    model: "mine".into()
                }
            ]
        );
        assert_eq!(
            out.0[0].to_string(),
            "the table of `mine` (its `preprocess`, `truncation` or other keys) changed since \
             the run"
        );
    }
}
