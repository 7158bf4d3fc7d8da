//! A `[[pair]]` trial: load its models, search, check the verdict and the
//! snapshot, write the record and the grid.

use std::sync::Arc;
use std::time::Instant;

use crate::artifact::{self, ModelFiles, PairArtifact, Record};
use crate::config::{self, PairDecl, Statistic, TrialId};
use crate::error::{Error, Result};
use crate::grid::{most_divergent, pair_grid, GRID_SAMPLES};
use crate::hierarchy::{Hierarchy, SetDistance};
use crate::model::Classifier;
use crate::search::Search;
use crate::snapshot::Summary;
use crate::verdict::{statistic, Verdict};

use super::outcome::{Figures, TrialReport};
use super::Suite;

impl Suite {
    /// Runs the pair `pair` to its verdict.
    pub(super) fn run_pair(
        &self,
        pair: &PairDecl,
        progress: &dyn Fn(u64, u64),
    ) -> Result<TrialReport> {
        let started = Instant::now();
        let settings = pair.search.or(&self.config.search);
        let search_config = config::search_config(&settings)?;
        let (generator, classifiers) = self.load_models(
            &pair.generator,
            &pair.models,
            None,
            pair.search.batch.is_some(),
            search_config.batch,
        )?;
        // A class-conditional generator (BigGAN, a cVAE) gets one class per
        // sample, drawn uniformly with the search's seed (its own stream).
        let conditions: Option<Vec<usize>> = generator.num_conditions().map(|k| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(search_config.seed ^ 0x636c_6173);
            (0..search_config.batch)
                .map(|_| rng.random_range(0..k))
                .collect()
        });
        let hierarchy = self.hierarchy(&pair.models, &classifiers)?;
        if pair.thresholds.top_n > hierarchy.len() {
            return Err(Error::TopN {
                top_n: pair.thresholds.top_n,
                classes: hierarchy.len(),
                model: pair.models[0].clone(),
            });
        }
        // A threshold the set distance cannot pass would pass every search.
        if let Some(max) = pair.thresholds.max_set_distance {
            let ceiling = hierarchy.set_distance_ceiling(pair.thresholds.top_n);
            if max >= ceiling {
                let hierarchy = match &self.config.hierarchy {
                    Some(decl) => format!("the hierarchy of `{}`", decl.classes.display()),
                    None => format!("the flat hierarchy of {} classes", hierarchy.len()),
                };
                return Err(Error::SetDistanceCeiling {
                    max,
                    top_n: pair.thresholds.top_n,
                    ceiling,
                    hierarchy,
                });
            }
        }
        // Set distances of the top-1, 3 and 5 predictions (paper fig. 2) and
        // of the pair's own top_n.
        let mut ns = vec![1, 3, 5, pair.thresholds.top_n];
        ns.sort_unstable();
        ns.dedup();
        ns.retain(|&n| n <= hierarchy.len());
        let measures: Vec<SetDistance> = ns
            .into_iter()
            .map(|n| SetDistance::new(Arc::clone(&hierarchy), n))
            .collect();
        let steps = search_config.steps as u64;
        let report = |step: usize| progress(step as u64, steps);
        let mut search = Search::new(&pair.generator, generator.as_ref())
            .config(search_config)
            .progress(&report);
        if let (Some(labels), Some(k)) = (&conditions, generator.num_conditions()) {
            search = search.condition(crate::model::one_hot(labels, k, self.device()?)?);
        }
        for (m, c) in pair.models.iter().zip(&classifiers) {
            search = search.classifier(m, c.as_ref());
        }
        for m in &measures {
            search = search.measure(m);
        }
        let outcome = search.run(self.device()?)?;
        let verdict = Verdict::check(&outcome, &pair.thresholds);
        let details = verdict.details(&outcome, &pair.thresholds);
        let summary = Summary::new(&pair.name, &pair.generator, &outcome, &pair.thresholds);
        let snapshot = summary.check_snapshot(&self.config.path).err();

        let dir = self.artifact_dir();
        let grid_samples = most_divergent(&outcome, GRID_SAMPLES);
        let grid = match pair_grid(
            &outcome,
            &grid_samples,
            generator.output_range(),
            conditions.as_deref(),
        ) {
            Some(grid) => {
                let file = format!("{}.png", pair.name);
                grid.write_png(&dir.join(&file))?;
                Some(file)
            }
            None => None,
        };
        let after: Vec<f64> = outcome.samples.iter().map(|s| s.divergence_after).collect();
        let figures = Figures::Pair {
            divergence: outcome.config.divergence.kind(),
            mean_before: outcome.mean_divergence_before(),
            mean_after: outcome.mean_divergence_after(),
            max_after: statistic(&after, Statistic::Max),
            baseline: outcome.baseline.mean,
            baseline_samples: outcome.baseline.divergences.len(),
            lift: verdict.lift,
            steps: outcome.steps_run,
        };
        let warnings = outcome.warnings();
        let outside_support = outcome.outside_support(&pair.generator);
        let mut failures: Vec<String> = verdict.failures.iter().map(|f| f.to_string()).collect();
        failures.extend(snapshot.iter().map(|s| s.to_string()));
        // The record takes the outcome's per-step and per-sample records.
        let path = artifact::pair_record(&dir, &pair.name);
        let record = Record::Pair(PairArtifact {
            config: self.config.path.clone(),
            summary,
            passed: failures.is_empty(),
            failures,
            class_names: outcome.class_names,
            measure_names: outcome.measure_names,
            trajectory: outcome.trajectory,
            baseline: outcome.baseline,
            samples: outcome.samples,
            grid,
            grid_samples,
            weights: Some(ModelFiles::of_trial(
                &self.config,
                &pair.generator,
                &pair.models,
            )),
            hierarchy: Some(artifact::weights::hierarchy_files(&self.config)),
            conditions,
            latent_support: outcome.latent_support,
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        });
        record.write(&path)?;
        Ok(TrialReport {
            id: TrialId::pair(&pair.name),
            figures,
            failures: verdict.failures,
            details,
            snapshot,
            warnings,
            outside_support,
            artifact: path,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The config's hierarchy (loaded once), or the flat hierarchy over the
    /// first classifier's classes; the classifiers' number of classes must
    /// be the hierarchy's.
    fn hierarchy(
        &self,
        names: &[String],
        classifiers: &[Box<dyn Classifier>],
    ) -> Result<Arc<Hierarchy>> {
        // The classifiers share their class count and name their classes
        // alike (checked as they were loaded).
        let Some(decl) = &self.config.hierarchy else {
            return Ok(Arc::new(Hierarchy::flat(classifiers[0].class_names())));
        };
        let hierarchy = match self.hierarchy.get() {
            Some(h) => Arc::clone(h),
            None => {
                let h = Arc::new(Hierarchy::load(
                    &decl.classes,
                    &decl.edges,
                    decl.names.as_deref(),
                )?);
                Arc::clone(self.hierarchy.get_or_init(|| h))
            }
        };
        // The classifiers share their class count (above).
        if classifiers[0].num_classes() != hierarchy.len() {
            return Err(Error::HierarchyClasses {
                path: decl.classes.clone(),
                classes: hierarchy.len(),
                model: names[0].clone(),
                got: classifiers[0].num_classes(),
            });
        }
        // A classifier that names its classes (not just numbers them) must
        // name the hierarchy's, in its logit order: the same 1000 classes
        // in another order would read every distance from the wrong rows.
        for (model, c) in names.iter().zip(classifiers) {
            let got = c.class_names();
            if crate::model::numbers_its_classes(got) {
                continue;
            }
            let (ids, class_names) = (hierarchy.ids(), hierarchy.names());
            if let Some(k) = got
                .iter()
                .zip(ids.iter().zip(class_names))
                .position(|(g, (id, name))| g != id && g != name)
            {
                return Err(Error::HierarchyClassOrder {
                    path: decl.classes.clone(),
                    model: model.clone(),
                    index: k,
                    got: got[k].clone(),
                    theirs: format!("`{}` ({})", ids[k], class_names[k]),
                });
            }
        }
        Ok(hierarchy)
    }
}
