//! A `[[tournament]]` trial (MAD competition): every ordered pair's MDS
//! set over a class-conditional generator, the win matrix and the
//! rankings, the thresholds and the snapshot, the record and grids of the
//! closest pairs.

use std::time::Instant;

use crate::artifact::{self, ModelFiles, Record, TournamentArtifact};
use crate::config::{TournamentDecl, TrialId};
use crate::data::{Mnist, Split};
use crate::error::{Error, Result};
use crate::grid::{pictures, Cell, Grid};
use crate::model::Classifier;
use crate::search::OutsideSupport;
use crate::snapshot::{Settings, TournamentSummary};
use crate::tournament::{
    every_order, ordered_pairs, pair_name, searched_pairs, PairResult, TournamentOutcome,
    TournamentThresholds,
};
use candle_core::Tensor;

use super::tournament_pairs::decode;

use super::outcome::{Figures, TrialReport};
use super::Suite;

/// How many of the closest pairs get a grid of their disagreements.
pub const CLOSEST_PAIRS: usize = 2;
/// How many disagreements a closest pair's grid shows, at most.
const GRID_SAMPLES: usize = 24;

impl Suite {
    /// Runs the tournament `t` to its verdict.
    pub(super) fn run_tournament(
        &self,
        t: &TournamentDecl,
        progress: &dyn Fn(u64, u64),
    ) -> Result<TrialReport> {
        let started = Instant::now();
        let settings = self.pair_settings(t)?;
        let thresholds = TournamentThresholds::from(t);
        thresholds.validate(&t.models)?;
        let batch = settings.config.batch.min(t.samples);
        let (generator, models) = self.load_models(
            &t.generator,
            &t.models,
            Some(format!("tournament[{}].generator", t.name)),
            t.search.batch.is_some(),
            batch,
        )?;
        let named = super::named(&t.models, &models);
        let test_accuracy = match &t.test_data {
            Some(dir) => Some(self.test_accuracies(dir, &named)?),
            None => None,
        };
        // The pairs searched one after another (under a divergence
        // symmetric in its two models, one order of each), each read from
        // its record when a pair trial (under nextest) left a current one:
        // every pair is seeded with the tournament's seed, so the order
        // (and which process runs a pair) does not change its result.
        let divergence = &settings.config.divergence;
        let searched = searched_pairs(named.len(), divergence);
        let count = searched.len() as u64;
        let mut results: Vec<PairResult> = Vec::with_capacity(searched.len());
        let outputs = self.registered_outputs((&t.generator, generator.as_ref()), &named)?;
        for (k, &(i, j)) in searched.iter().enumerate() {
            let (a, b) = (named[i].0, named[j].0);
            let fingerprint = self.pair_fingerprint(t, a, b, &settings) + &outputs.of_pair(a, b);
            // Read from its record where a pair's test (in another
            // process, under nextest) searched it; else searched and
            // recorded for the pairs' tests. Only the closest pairs'
            // samples are drawn; they are decoded again from their
            // latents below rather than all kept.
            let k = k as u64;
            results.push(self.pair_result(
                t,
                [named[i], named[j]],
                (&t.generator, generator.as_ref()),
                &settings,
                fingerprint,
                &|done, total| progress(k * total + done, count * total),
            )?);
        }
        // Counted over the searches, before their mirrors join them.
        let latent_support = generator.latent_support();
        let outside_support = latent_support.map(|support| {
            let latents = results.iter().flat_map(|r| {
                let counts = r.outside_support.as_deref();
                (r.z.iter().enumerate()).map(move |(i, z)| (counts.map(|c| c[i]), z.as_slice()))
            });
            OutsideSupport::of_latents(&t.generator, support, latents)
        });
        let results = every_order(named.len(), divergence, results, PairResult::mirrored);
        let pairs = ordered_pairs(named.len());
        let outcome = TournamentOutcome::from_pairs(&t.models, results, test_accuracy)?;
        let failures = thresholds.check(&outcome);
        let summary = TournamentSummary::new(
            &t.name,
            &t.generator,
            Settings::of(&settings.config),
            t.samples,
            &outcome,
        );
        let snapshot = summary.check_snapshot(&self.config.path).err();
        let dir = artifact::tournament_dir(&self.artifact_dir(), &t.name);
        let class_names = crate::model::distinct_class_labels(models[0].class_names());
        let mut grids = Vec::new();
        for (a, b) in closest_pairs(&outcome, CLOSEST_PAIRS) {
            let name = pair_name(&outcome.models[a], &outcome.models[b]);
            // Under a symmetric divergence (b, a) is (a, b)'s search: its
            // samples once.
            let orders = if divergence.symmetric() {
                &[(a, b)][..]
            } else {
                &[(a, b), (b, a)][..]
            };
            let mut both = Vec::with_capacity(2);
            for &(x, y) in orders {
                let k = pairs
                    .iter()
                    .position(|&p| p == (x, y))
                    .expect("every pair ran");
                let result = &outcome.pairs[k];
                let samples = decode(result, generator.as_ref(), batch, self.device()?)?;
                both.push((result, samples));
            }
            if let Some(grid) = disagreement_grid(&both, &class_names, generator.output_range()) {
                let file = format!("{name}.png");
                grid.write_png(&dir.join(&file))?;
                grids.push((name, file));
            }
        }
        let mut messages: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
        messages.extend(snapshot.iter().map(|s| s.to_string()));
        let figures = Figures::Tournament {
            ranking: outcome.ranking_tiers(thresholds.ranking),
            ranking_method: thresholds.ranking,
            srcc: outcome.srcc(thresholds.ranking),
            test_data: outcome.test_accuracy.is_some(),
            pairs: searched.len(),
            samples: t.samples,
        };
        let record = Record::Tournament(Box::new(TournamentArtifact {
            config: self.config.path.clone(),
            summary,
            outcome,
            thresholds,
            test_data: t.test_data.clone(),
            weights: Some(ModelFiles::of_trial(&self.config, &t.generator, &t.models)),
            latent_support,
            outside_support: outside_support.clone(),
            class_names,
            passed: messages.is_empty(),
            failures: messages,
            grids,
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        }));
        record.write(&artifact::tournament_record(&self.artifact_dir(), &t.name))?;
        Ok(TrialReport {
            id: TrialId::tournament(&t.name),
            figures,
            failures,
            details: String::new(),
            snapshot,
            warnings: Vec::new(),
            outside_support: outside_support.and_then(OutsideSupport::noted),
            artifact: dir,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Each model's accuracy on the test images of `dir` (top class against
    /// the label, ties to the lower class). A non-finite logit is an error:
    /// it has no top class (candle's `argmax` would pick class 0 for a row
    /// of NaN, and a broken model would get a chance-level accuracy into
    /// the SRCC).
    fn test_accuracies(
        &self,
        dir: &std::path::Path,
        named: &[(&str, &dyn Classifier)],
    ) -> Result<Vec<f64>> {
        let test = Mnist::load(dir, Split::Test)?;
        for (name, m) in named {
            test.check_classes(dir, Split::Test, name, m.num_classes())?;
        }
        let x = test.images_tensor(None, self.device()?)?;
        named
            .iter()
            .map(|(name, m)| {
                let failed = || Error::model(*name, "classify the test data");
                let logits = m
                    .logits(&self.test_input(name, &x)?)
                    .and_then(|l| l.to_dtype(candle_core::DType::F32))
                    .and_then(|l| l.to_vec2::<f32>())
                    .map_err(failed())?;
                let mut right = 0;
                for (i, (row, &label)) in logits.iter().zip(&test.labels).enumerate() {
                    if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                        return Err(failed()(candle_core::Error::Msg(format!(
                            "its logit of class {c} for test image {i} is {}; a non-finite \
                             logit has no top class (check the model's weights)",
                            row[c]
                        ))));
                    }
                    right += usize::from(crate::model::argmax(row) == usize::from(label));
                }
                Ok(right as f64 / test.labels.len().max(1) as f64)
            })
            .collect()
    }
}

/// The `count` neighbours in the Bradley–Terry order whose strengths are
/// closest in standard errors of their difference, closest first, as
/// (higher-ranked model, lower-ranked model) indices; only neighbours
/// whose top classes differ on some sample of their searches, so that
/// each has a grid of disagreements to show (a model and its copy, which
/// tie and never disagree, took a slot and left it empty).
pub fn closest_pairs(outcome: &TournamentOutcome, count: usize) -> Vec<(usize, usize)> {
    let bt = &outcome.bradley_terry;
    let disagree = |a: usize, b: usize| {
        let (a, b) = (&outcome.models[a], &outcome.models[b]);
        [outcome.pair(a, b), outcome.pair(b, a)]
            .into_iter()
            .flatten()
            .any(|p| p.prediction_a != p.prediction_b)
    };
    let mut gaps: Vec<(f64, usize, usize)> = bt
        .order
        .windows(2)
        .filter(|w| disagree(w[0], w[1]))
        .map(|w| {
            let se = bt.se_of_difference(w[0], w[1]);
            let gap = (bt.theta[w[0]] - bt.theta[w[1]]) / se.max(1e-12);
            (gap, w[0], w[1])
        })
        .collect();
    gaps.sort_by(|x, y| x.0.total_cmp(&y.0));
    gaps.into_iter()
        .take(count)
        .map(|(_, a, b)| (a, b))
        .collect()
}

/// The samples of a pair's two orders (each result with its decoded
/// samples) on which its models' top classes differ: the condition, each
/// model's top class and confidence, the frame red where the first model
/// lost.
fn disagreement_grid(
    both: &[(&PairResult, Tensor)],
    class_names: &[String],
    range: (f32, f32),
) -> Option<Grid> {
    let name = |k: usize| class_names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let mut cells = Vec::new();
    for (order, (r, x)) in both.iter().enumerate() {
        let pics = pictures(x, range).ok()?;
        for (s, picture) in pics.into_iter().enumerate() {
            if r.prediction_a[s] == r.prediction_b[s] || cells.len() >= GRID_SAMPLES {
                continue;
            }
            // In the second order a and b are swapped: the higher-ranked
            // model (the first order's a) is named first in both.
            let line = |model: &str, p: usize, c: f32| format!("{model} {} {c:.2}", name(p));
            let a = line(&r.a, r.prediction_a[s], r.confidence_a[s]);
            let b = line(&r.b, r.prediction_b[s], r.confidence_b[s]);
            let (l1, l2, higher) = if order == 0 {
                (a, b, r.prediction_a[s])
            } else {
                (b, a, r.prediction_b[s])
            };
            let condition = r.conditions[s];
            cells.push(Cell {
                picture,
                caption: vec![format!("class {}", name(condition)), l1, l2],
                highlight: higher != condition,
            });
        }
    }
    (!cells.is_empty()).then_some(Grid { columns: 8, cells })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Registry;
    use crate::tournament::PairResult;

    fn pair_won(a: &str, b: &str, wins_a: usize) -> PairResult {
        crate::tournament::pair_won_under(crate::Divergence::Kl, a, b, wins_a)
    }

    /// Regression (found by the audit): a model and its copy tie and are
    /// the closest neighbours, but never disagree, so the report's grid
    /// of their disagreements was empty and one of its two slots went
    /// unused; the slots go to neighbours that disagree somewhere.
    #[test]
    fn the_closest_pairs_are_neighbours_that_disagree() {
        let models: Vec<String> = ["a", "copy", "c", "d"].map(String::from).to_vec();
        let pairs = vec![
            pair_won("a", "copy", 0),
            pair_won("copy", "a", 0),
            pair_won("a", "c", 5),
            pair_won("c", "a", 1),
            pair_won("copy", "c", 5),
            pair_won("c", "copy", 1),
            pair_won("a", "d", 6),
            pair_won("d", "a", 0),
            pair_won("copy", "d", 6),
            pair_won("d", "copy", 0),
            pair_won("c", "d", 4),
            pair_won("d", "c", 2),
        ];
        let outcome = TournamentOutcome::from_pairs(&models, pairs, None).unwrap();
        let closest = closest_pairs(&outcome, 2);
        assert_eq!(closest.len(), 2, "{closest:?}");
        for (a, b) in closest {
            let names = [&outcome.models[a], &outcome.models[b]];
            assert!(
                !(names.contains(&&models[0]) && names.contains(&&models[1])),
                "a model and its copy: {names:?}"
            );
        }
    }

    /// Regression: the test digits (in [0, 1]) went to each classifier
    /// through its `preprocess`, whose `input_range` is the generator's
    /// output range: behind `input_range = [-1, 1]` (a tanh generator) a
    /// classifier saw them in [0.5, 1], and its test accuracy, which the
    /// SRCC reads, was that of washed-out digits.
    #[test]
    fn test_accuracy_does_not_depend_on_the_generators_output_range() {
        let fixtures = crate::zoo::mnist_fixtures_dir();
        let dir = std::env::temp_dir().join(format!("gevaldi-test-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weights = |m: &str| {
            fixtures
                .join(format!("{m}.safetensors"))
                .display()
                .to_string()
        };
        let text = format!(
            "[generator.cvae]\narch = \"mnist-cvae\"\nweights = {:?}\n\n\
             [classifier.plain]\narch = \"mnist-cnn-a\"\nweights = {:?}\n\n\
             [classifier.tanh]\narch = \"mnist-cnn-a\"\nweights = {:?}\n\
             preprocess = {{ input_range = [-1, 1] }}\n\n\
             [classifier.bag_0]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
             [[tournament]]\nname = \"t\"\nmodels = [\"plain\", \"tanh\", \"bag_0\"]\n\
             generator = \"cvae\"\ntest_data = {:?}\n",
            weights("cvae"),
            weights("cnn_a"),
            weights("cnn_a"),
            weights("bag_0"),
            fixtures.join("data").display().to_string(),
        );
        let path = dir.join("gevaldi.toml");
        std::fs::write(&path, text).unwrap();
        let suite = Suite::load(&path, Registry::new()).unwrap();
        let names: Vec<String> = ["plain", "tanh"].map(String::from).to_vec();
        let models: Vec<Box<dyn Classifier>> =
            names.iter().map(|n| suite.classifier(n).unwrap()).collect();
        let accuracy = suite
            .test_accuracies(
                &fixtures.join("data"),
                &super::super::named(&names, &models),
            )
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(accuracy[0] > 0.95, "{accuracy:?}");
        assert_eq!(
            accuracy[0], accuracy[1],
            "plain, behind input_range [-1, 1]"
        );
    }
}
