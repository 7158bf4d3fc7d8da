//! An `[[ensemble]]` trial (paper appendix F): the members' vote on the
//! test data and on an MDS dataset searched with `js`, its regions of
//! uncertainty, the verdict and the snapshot, the record and the pictures.

use std::time::Instant;

use crate::artifact::{self, EnsembleArtifact, LatentMap, ModelFiles, Record};
use crate::config::{self, EnsembleDecl, TrialId};
use crate::data::{Mnist, Split};
use crate::ensemble::{mean_probs, MdsDataset, Metrics};
use crate::error::{Error, Result};
use crate::grid::regions_grid;
use crate::model::{Classifier, Generator};
use crate::pca::Pca;
use crate::regions::find_regions;
use crate::snapshot::{EnsembleSummary, RegionsSummary, Settings};

use super::outcome::{Figures, TrialReport};
use super::Suite;

impl Suite {
    /// Runs the ensemble `e` to its verdict.
    pub(super) fn run_ensemble(
        &self,
        e: &EnsembleDecl,
        progress: &dyn Fn(u64, u64),
    ) -> Result<TrialReport> {
        let started = Instant::now();
        let search_config = config::search_config(&e.search.or(&self.config.search))?
            .divergence(crate::Divergence::js());
        // The MDS dataset is searched in chunks of at most `batch`.
        let (generator, members) = self.load_models(
            &e.generator,
            &e.members,
            Some(format!("ensemble[{}].generator", e.name)),
            e.search.batch.is_some(),
            search_config.batch.min(e.samples),
        )?;
        let named = super::named(&e.members, &members);
        let test = Mnist::load(&e.test_data, Split::Test)?;
        for (name, m) in e.members.iter().zip(&members) {
            test.check_classes(&e.test_data, Split::Test, name, m.num_classes())?;
        }
        let x = test.images_tensor(None, self.device()?)?;
        let member_probs = members
            .iter()
            .zip(&e.members)
            .map(|(m, name)| {
                m.logits(&self.test_input(name, &x)?)
                    .and_then(|l| candle_nn::ops::softmax(&l, 1))
                    .and_then(|p| p.to_vec2::<f32>())
                    .map_err(Error::model(name, "classify the test data"))
            })
            .collect::<Result<Vec<_>>>()?;
        let labels: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
        let test_vote = mean_probs(&member_probs);
        let on_test = Metrics::of(&test_vote, &labels)?;
        let mds = MdsDataset::search_named(
            &named,
            (&e.generator, generator.as_ref()),
            e.samples,
            &search_config,
            self.device()?,
            progress,
        )?;
        let vote = mds.vote();
        let on_mds = Metrics::of(&vote, &mds.labels)?;
        let regions = find_regions(&mds, e.min_samples, None);
        let threshold_failures =
            crate::verdict::ensemble_failures(e, &on_test, &on_mds, regions.regions.len());
        let class_names = crate::model::distinct_class_labels(members[0].class_names());
        let mds_divergence = crate::verdict::statistic(&mds.divergence, config::Statistic::Mean);
        let summary = EnsembleSummary {
            ensemble: e.name.clone(),
            members: e.members.clone(),
            generator: e.generator.clone(),
            settings: Settings::of(&search_config),
            samples: e.samples,
            test: (&on_test).into(),
            test_log_loss: crate::snapshot::log_loss(&test_vote, &labels),
            mds: (&on_mds).into(),
            mds_divergence,
            regions: RegionsSummary::new(&regions, &class_names),
        };
        let snapshot = summary.check_snapshot(&self.config.path).err();
        let dir = artifact::ensemble_dir(&self.artifact_dir(), &e.name);
        mds.export(&dir, "mds")?;
        let latent_map = self.latent_map(e, generator.as_ref(), &mds)?;
        let region_members: Vec<Vec<usize>> =
            regions.regions.iter().map(|r| r.members.clone()).collect();
        let grid = match regions_grid(
            &mds,
            &vote,
            &region_members,
            &class_names,
            generator.output_range(),
        ) {
            Some(grid) => {
                grid.write_png(&dir.join("regions.png"))?;
                Some("regions.png".to_string())
            }
            None => None,
        };
        let mut failures: Vec<String> = threshold_failures.iter().map(|f| f.to_string()).collect();
        failures.extend(snapshot.iter().map(|s| s.to_string()));
        let path = artifact::ensemble_record(&self.artifact_dir(), &e.name);
        let latent_support = generator.latent_support();
        let outside_counts: Option<Vec<usize>> =
            latent_support.map(|s| mds.z.iter().map(|z| s.count_outside(z)).collect());
        let kept = EnsembleArtifact {
            config: self.config.path.clone(),
            summary,
            passed: failures.is_empty(),
            failures,
            class_names,
            thresholds: Some(e.into()),
            weights: Some(ModelFiles::of_trial(&self.config, &e.generator, &e.members)),
            labels: mds.labels,
            z: mds.z,
            latent_support,
            outside_support: outside_counts,
            divergence: mds.divergence,
            member_probs: mds.member_probs,
            regions: region_members,
            latent_map,
            grid,
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        };
        let outside_support = kept.outside_support();
        let record = Record::Ensemble(kept);
        record.write(&path)?;
        Ok(TrialReport {
            id: TrialId::ensemble(&e.name),
            figures: Figures::Ensemble {
                test_accuracy: on_test.accuracy,
                mds_accuracy: on_mds.accuracy,
                samples: e.samples,
                regions: regions.regions.len(),
            },
            failures: threshold_failures,
            details: String::new(),
            snapshot,
            warnings: Vec::new(),
            outside_support,
            artifact: dir,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The training data's latents (encoder means, when the generator has an
    /// encoder and `test_data` holds a training split too) and the MDS
    /// latents on the top two principal axes of the training latents (paper
    /// fig. 5); `None` otherwise.
    fn latent_map(
        &self,
        e: &EnsembleDecl,
        generator: &dyn Generator,
        mds: &MdsDataset,
    ) -> Result<Option<LatentMap>> {
        let Ok(train) = Mnist::load(&e.test_data, Split::Train) else {
            return Ok(None);
        };
        let classes = generator.num_conditions().unwrap_or(0);
        let labels: Vec<usize> = train.labels.iter().map(|&l| l as usize).collect();
        let x = train.images_tensor(None, self.device()?)?;
        let c = crate::model::one_hot(&labels, classes, self.device()?)?;
        let Some(means) = generator.encode(&x, Some(&c)) else {
            return Ok(None);
        };
        let means = means
            .and_then(|m| m.to_vec2::<f32>())
            .map_err(Error::model(&e.generator, "encode the training data"))?;
        let axes = Pca::fit(&means, 2);
        Ok(Some(LatentMap {
            train: axes.project(&means),
            train_labels: labels,
            mds: axes.project(&mds.z),
            axes,
        }))
    }
}
