//! Ensembles (paper appendix F): an MDS dataset searched among the base
//! learners of an ensemble, and the ensemble's metrics on it.
//!
//! The MDS dataset has K samples whose class conditions are spread evenly
//! over the classes (seeded order); each is searched in the latent space of
//! a class-conditional generator for the largest Jensen-Shannon divergence
//! among the M members, and its condition is its true label. The ensemble
//! votes by the mean of its members' probabilities.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{write_idx, IdxArray};
use crate::divergence::Divergence;
use crate::error::{Error, Result};
use crate::model::{argmax, one_hot, Classifier, Generator};
use crate::search::{Search, SearchConfig, SearchOutcome};

/// An MDS dataset.
#[derive(Clone, Debug)]
pub struct MdsDataset {
    /// Each sample's condition, its true label.
    pub labels: Vec<usize>,
    /// Each sample's latent after the search.
    pub z: Vec<Vec<f32>>,
    /// The decoded samples, `[K, …]`.
    pub x: Tensor,
    /// Each member's probabilities: `[member][sample][class]`.
    pub member_probs: Vec<Vec<Vec<f32>>>,
    /// Each sample's JS divergence among the members, after the search.
    pub divergence: Vec<f64>,
    /// The generator's output range ([`Generator::output_range`]), which
    /// [`MdsDataset::export`] maps onto the bytes 0-255.
    pub output_range: (f32, f32),
}

impl MdsDataset {
    /// Searches `k` samples among `members` over the class-conditional
    /// `generator` with the M-member `js` divergence, `config.batch` samples
    /// at a time (chunk c seeded with `config.seed + c`).
    pub fn search(
        members: &[(&str, &dyn Classifier)],
        generator: &dyn Generator,
        k: usize,
        config: &SearchConfig,
        device: &Device,
    ) -> Result<Self> {
        Self::search_with_progress(members, generator, k, config, device, &|_, _| {})
    }

    /// [`MdsDataset::search`], calling `progress(done, total)` as ascent
    /// steps finish, counted over all chunks.
    pub fn search_with_progress(
        members: &[(&str, &dyn Classifier)],
        generator: &dyn Generator,
        k: usize,
        config: &SearchConfig,
        device: &Device,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Self> {
        Self::search_named(
            members,
            ("generator", generator),
            k,
            config,
            device,
            progress,
        )
    }

    /// [`MdsDataset::search_with_progress`] with the generator's name, which
    /// its errors give.
    pub(crate) fn search_named(
        members: &[(&str, &dyn Classifier)],
        generator: (&str, &dyn Generator),
        k: usize,
        config: &SearchConfig,
        device: &Device,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Self> {
        let js = config.clone().divergence(Divergence::js());
        let mut out = MdsDataset {
            labels: Vec::new(),
            z: Vec::with_capacity(k),
            x: Tensor::zeros(0, candle_core::DType::F32, device)?,
            member_probs: vec![Vec::with_capacity(k); members.len()],
            divergence: Vec::with_capacity(k),
            output_range: generator.1.output_range(),
        };
        let mut xs = Vec::new();
        out.labels = search_conditioned(
            generator,
            members,
            k,
            &js,
            device,
            progress,
            |_, _, outcome| {
                for s in outcome.samples {
                    for (m, p) in s.probs_after().into_iter().enumerate() {
                        out.member_probs[m].push(p);
                    }
                    out.z.push(s.z);
                    out.divergence.push(s.divergence_after);
                }
                xs.push(outcome.x);
            },
        )?;
        out.x = Tensor::cat(&xs, 0)?;
        Ok(out)
    }

    /// Writes the dataset as extra training data: `<stem>-images-idx3-ubyte`
    /// (the decoded samples `[K, H, W]` as bytes: x in the output range
    /// (lo, hi) mapped to round(255·(x − lo)/(hi − lo)), clamped to 0-255;
    /// x must be single-channel), `<stem>-labels-idx1-ubyte`
    /// (the conditions), and `<stem>.safetensors` with `z` `[K, d]`, `x`,
    /// `label` (u32) and `probs.<i>` `[K, classes]` for each member i.
    pub fn export(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.to_path_buf(),
            cause: source,
        })?;
        let dims = self.x.dims().to_vec();
        if dims.len() != 4 || dims[1] != 1 {
            return Err(Error::setting(
                "export",
                format!("samples of shape {dims:?}"),
                "single-channel images [K, 1, H, W] to write as IDX",
            ));
        }
        let values = self.x.flatten_all()?.to_vec1::<f32>()?;
        // `NaN as u8` is 0 and `300 as u8` is 44: refused, not written.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::setting(
                "export",
                format!("a sample whose pixel {i} is {}", values[i]),
                "finite pixels to write as IDX bytes",
            ));
        }
        if let Some(&l) = self.labels.iter().find(|&&l| l > 255) {
            return Err(Error::setting(
                "export",
                format!("the condition {l}"),
                "conditions 0-255 to write as IDX labels (one byte each)",
            ));
        }
        let (lo, hi) = self.output_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::setting(
                "export",
                format!("the generator's output range ({lo}, {hi})"),
                "a finite range (low, high) with low < high to map onto IDX bytes",
            ));
        }
        let pixels: Vec<u8> = values
            .into_iter()
            .map(|v| ((v - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let images = IdxArray {
            dims: vec![dims[0], dims[2], dims[3]],
            data: pixels,
        };
        let labels = IdxArray {
            dims: vec![self.labels.len()],
            data: self.labels.iter().map(|&l| l as u8).collect(), // ≤ 255, checked above
        };
        write_idx(dir.join(format!("{stem}-images-idx3-ubyte")), &images)?;
        write_idx(dir.join(format!("{stem}-labels-idx1-ubyte")), &labels)?;
        let device = self.x.device();
        let k = self.labels.len();
        let d = self.z.first().map_or(0, Vec::len);
        let mut tensors = HashMap::new();
        let z: Vec<f32> = self.z.iter().flatten().copied().collect();
        tensors.insert("z".to_string(), Tensor::from_vec(z, (k, d), device)?);
        tensors.insert("x".to_string(), self.x.clone());
        let label: Vec<u32> = self.labels.iter().map(|&l| l as u32).collect();
        tensors.insert("label".to_string(), Tensor::from_vec(label, k, device)?);
        for (i, member) in self.member_probs.iter().enumerate() {
            let c = member.first().map_or(0, Vec::len);
            let p: Vec<f32> = member.iter().flatten().copied().collect();
            tensors.insert(format!("probs.{i}"), Tensor::from_vec(p, (k, c), device)?);
        }
        let path = dir.join(format!("{stem}.safetensors"));
        candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::Weights {
            path: path.clone(),
            model: "mds dataset".into(),
            cause: Box::new(e),
        })
    }

    /// The ensemble's mean-probability vote: `[sample][class]`.
    pub fn vote(&self) -> Vec<Vec<f32>> {
        mean_probs(&self.member_probs)
    }
}

/// The search both [`MdsDataset`] and a tournament's pairs run: `k`
/// samples whose conditions are spread evenly over the class-conditional
/// `generator`'s classes ([`spread_conditions`] with `config.seed`), each
/// searched among `members` with `config` as given, `config.batch` at a
/// time, chunk c seeded `config.seed + c`. Calls `each(c, conditions,
/// outcome)` per chunk, in order, and returns all the conditions.
///
/// `progress(done, total)` counts ascent steps over all chunks.
pub(crate) fn search_conditioned(
    generator: (&str, &dyn Generator),
    members: &[(&str, &dyn Classifier)],
    k: usize,
    config: &SearchConfig,
    device: &Device,
    progress: &dyn Fn(u64, u64),
    mut each: impl FnMut(usize, &[usize], SearchOutcome),
) -> Result<Vec<usize>> {
    let (name, generator) = generator;
    let classes = generator.num_conditions().ok_or_else(|| {
        Error::setting(
            "generator",
            "unconditional",
            "a class-conditional generator",
        )
    })?;
    if classes == 0 {
        return Err(crate::suite::zero_conditions(name));
    }
    // The conditions are the samples' labels: checked before the search,
    // which they would otherwise fail at its end (or pass with labels that
    // are not the classifiers' classes).
    if let Some((model, c)) = members.iter().find(|(_, c)| c.num_classes() != classes) {
        return Err(Error::ConditionClasses {
            generator: name.to_string(),
            conditions: classes,
            model: model.to_string(),
            classes: c.num_classes(),
        });
    }
    if k == 0 {
        return Err(Error::setting("k", 0, "at least 1 sample"));
    }
    let labels = spread_conditions(k, classes, config.seed);
    let batch = config.batch.max(1);
    let total = k.div_ceil(batch) as u64 * config.steps as u64;
    for (c, chunk) in labels.chunks(batch).enumerate() {
        let done = c as u64 * config.steps as u64;
        let report = move |step: usize| progress(done + step as u64, total);
        let cfg = config
            .clone()
            .batch(chunk.len())
            .seed(config.seed.wrapping_add(c as u64));
        let mut search = Search::new(name, generator)
            .config(cfg)
            .progress(&report)
            .condition(one_hot(chunk, classes, device)?);
        for (member, m) in members {
            search = search.classifier(*member, *m);
        }
        each(c, chunk, search.run(device)?);
    }
    Ok(labels)
}

/// `k` conditions spread evenly over `classes`, in an order shuffled with
/// `seed`: each class `k / classes` times (`i mod C`), and the remaining
/// `k mod classes` samples on as many distinct classes drawn with `seed`
/// (not the first ones: with K < C, as K = 100 samples over BigGAN's 1000
/// classes, `i mod C` alone conditioned every sample on classes 0..K, the
/// fish, birds and reptiles of ImageNet).
fn spread_conditions(k: usize, classes: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let whole = k / classes * classes;
    let mut labels: Vec<usize> = (0..whole).map(|i| i % classes).collect();
    if whole < k {
        labels.extend(rand::seq::index::sample(&mut rng, classes, k - whole));
    }
    labels.shuffle(&mut rng);
    labels
}

/// The mean over members of `[member][sample][class]` probabilities.
pub fn mean_probs(member_probs: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let m = member_probs.len() as f32;
    let n = member_probs.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let k = member_probs[0][i].len();
            (0..k)
                .map(|c| member_probs.iter().map(|p| p[i][c]).sum::<f32>() / m)
                .collect()
        })
        .collect()
}

/// Accuracy, macro one-vs-rest ROC AUC and macro F1 of probabilities
/// against labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Fraction of samples whose most probable class is their label.
    pub accuracy: f64,
    /// Mean over classes (with both positives and negatives) of the ROC
    /// AUC of "this class vs the rest", scored by that class's probability
    /// (ties count half); `None` where no class has both (every label the
    /// same: one MDS sample, a test set of one class), rather than a 0
    /// that reads as the worst AUC.
    pub auc: Option<f64>,
    /// Mean over classes (present in the labels or the predictions) of
    /// 2·precision·recall / (precision + recall), 0 where undefined.
    pub f1: f64,
}

impl Metrics {
    /// The metrics of `probs` `[sample][class]` against `labels`.
    ///
    /// An error, naming the sample, when there are no samples, when `probs`
    /// and `labels` differ in length, when a row has a NaN or an infinity
    /// or another number of classes than the first, or when a label is not
    /// one of the classes.
    pub fn of(probs: &[Vec<f32>], labels: &[usize]) -> Result<Metrics> {
        let n = labels.len();
        let problem = |problem: String| Err(Error::Metrics { problem });
        if n == 0 {
            return problem("no samples: accuracy, AUC and F1 of 0 samples are undefined".into());
        }
        if probs.len() != n {
            return problem(format!("{} probability rows for {n} labels", probs.len()));
        }
        let k = probs[0].len();
        for (i, (row, &label)) in probs.iter().zip(labels).enumerate() {
            if row.len() != k {
                return problem(format!(
                    "the probabilities of sample {i} have {} classes, those of sample 0 {k}",
                    row.len()
                ));
            }
            if let Some(c) = row.iter().position(|p| !p.is_finite()) {
                return problem(format!(
                    "the probability of class {c} for sample {i} is {}",
                    row[c]
                ));
            }
            if label >= k {
                return problem(format!(
                    "the label {label} of sample {i} is not one of the {k} classes"
                ));
            }
        }
        let pred: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        let accuracy = pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n as f64;
        let mut aucs = Vec::new();
        let mut f1s = Vec::new();
        for c in 0..k {
            let pos = labels.iter().filter(|&&l| l == c).count();
            if pos > 0 && pos < n {
                let scores: Vec<(f32, bool)> = probs
                    .iter()
                    .zip(labels)
                    .map(|(p, &l)| (p[c], l == c))
                    .collect();
                aucs.push(auc(&scores, pos));
            }
            let tp = pred
                .iter()
                .zip(labels)
                .filter(|(&p, &l)| p == c && l == c)
                .count();
            let predicted = pred.iter().filter(|&&p| p == c).count();
            if pos > 0 || predicted > 0 {
                let f1 = if tp == 0 {
                    0.0
                } else {
                    2.0 * tp as f64 / (pos + predicted) as f64
                };
                f1s.push(f1);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Ok(Metrics {
            accuracy,
            auc: (!aucs.is_empty()).then(|| mean(&aucs)),
            f1: mean(&f1s),
        })
    }
}

/// ROC AUC by the Mann-Whitney statistic with average ranks for ties.
fn auc(scores: &[(f32, bool)], positives: usize) -> f64 {
    // f32 → f64 is exact, so ties and order are the scores' own.
    let values: Vec<f64> = scores.iter().map(|&(s, _)| f64::from(s)).collect();
    let rank_sum: f64 = crate::ranking::average_ranks(&values)
        .into_iter()
        .zip(scores)
        .filter(|(_, &(_, positive))| positive)
        .map(|(rank, _)| rank)
        .sum();
    let (p, n) = (positives as f64, (scores.len() - positives) as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the conditions were `i mod C` shuffled, so with fewer
    /// samples than classes (K = 100 over BigGAN's 1000) every sample was
    /// conditioned on one of the first K classes, and a tournament or an
    /// ensemble over ImageNet was judged on fish, birds and reptiles only.
    /// Each class now gets K / C samples and the rest go to distinct
    /// classes drawn with the seed.
    #[test]
    fn conditions_spread_over_all_the_classes_when_samples_are_fewer() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..4 {
            let c = spread_conditions(100, 1000, seed);
            assert_eq!(c.len(), 100);
            let distinct: std::collections::BTreeSet<usize> = c.iter().copied().collect();
            assert_eq!(distinct.len(), 100, "seed {seed}: a class twice");
            seen.extend(distinct);
        }
        assert!(
            seen.iter().filter(|&&class| class >= 100).count() > 300,
            "{} of the {} classes drawn are below 100",
            seen.iter().filter(|&&class| class < 100).count(),
            seen.len()
        );
        // 25 over 10 classes: each class 2 or 3 times, 3 for 5 of them.
        let c = spread_conditions(25, 10, 7);
        let mut counts = [0usize; 10];
        c.iter().for_each(|&l| counts[l] += 1);
        assert!(counts.iter().all(|&n| n == 2 || n == 3), "{counts:?}");
        assert_eq!(counts.iter().filter(|&&n| n == 3).count(), 5);
        // A whole number of rounds is the old order: `i mod C`, shuffled.
        let mut old: Vec<usize> = (0..30).map(|i| i % 10).collect();
        old.shuffle(&mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(spread_conditions(30, 10, 3), old);
    }

    #[test]
    fn metrics_match_hand_calculations() {
        // 4 samples, 2 classes. Predictions: 0, 1, 1, 0; labels 0, 1, 0, 0.
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.8],
            vec![0.4, 0.6],
            vec![0.7, 0.3],
        ];
        let labels = [0, 1, 0, 0];
        let m = Metrics::of(&probs, &labels).unwrap();
        assert_eq!(m.accuracy, 0.75);
        // Class 1 scores: positives {0.8}, negatives {0.1, 0.6, 0.3}: AUC 1;
        // class 0 is its mirror: AUC 1.
        assert_eq!(m.auc, Some(1.0));
        // Class 0: tp 2, 3 true, 2 predicted: F1 = 4/5; class 1: tp 1,
        // 1 true, 2 predicted: F1 = 2/3.
        assert!((m.f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    /// A NaN pixel became byte 0 and condition 300 label 44 in the IDX
    /// files (a regression test): both are errors now, and nothing is
    /// written.
    #[test]
    fn export_refuses_what_an_idx_byte_cannot_hold() {
        let dev = candle_core::Device::Cpu;
        let set = |pixel: f32, label: usize| MdsDataset {
            labels: vec![label],
            z: vec![vec![0.0]],
            x: Tensor::from_vec(vec![0.5, pixel, 0.25, 1.0], (1, 1, 2, 2), &dev).unwrap(),
            member_probs: vec![vec![vec![1.0]]],
            divergence: vec![0.0],
            output_range: (0.0, 1.0),
        };
        let dir = std::env::temp_dir().join(format!("gevaldi-export-{}", std::process::id()));
        let err = |s: MdsDataset| s.export(&dir, "mds").unwrap_err().to_string();
        assert_eq!(
            err(set(f32::NAN, 3)),
            "invalid setting `export` = a sample whose pixel 1 is NaN: expected finite pixels \
             to write as IDX bytes"
        );
        assert_eq!(
            err(set(0.0, 300)),
            "invalid setting `export` = the condition 300: expected conditions 0-255 to write \
             as IDX labels (one byte each)"
        );
        assert!(!dir.join("mds-images-idx3-ubyte").exists());
        set(0.0, 255).export(&dir, "mds").unwrap();
        assert!(dir.join("mds-labels-idx1-ubyte").exists());
        let backwards = MdsDataset {
            output_range: (1.0, 1.0),
            ..set(0.0, 3)
        };
        assert_eq!(
            err(backwards),
            "invalid setting `export` = the generator's output range (1, 1): expected a finite \
             range (low, high) with low < high to map onto IDX bytes"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: the IDX images were round(255·x), as if every generator
    /// decoded into [0, 1]: a tanh generator's samples in [-1, 1] lost
    /// everything below 0 (clipped to black) and their contrast. They are
    /// mapped from the generator's output range now.
    #[test]
    fn export_maps_the_generators_output_range_onto_the_bytes() {
        let dev = candle_core::Device::Cpu;
        let pixels = [-1.0f32, -0.5, 0.0, 1.0];
        let set = MdsDataset {
            labels: vec![7],
            z: vec![vec![0.0]],
            x: Tensor::from_vec(pixels.to_vec(), (1, 1, 2, 2), &dev).unwrap(),
            member_probs: vec![vec![vec![1.0]]],
            divergence: vec![0.0],
            output_range: (-1.0, 1.0),
        };
        let dir = std::env::temp_dir().join(format!("gevaldi-export-range-{}", std::process::id()));
        set.export(&dir, "mds").unwrap();
        let images = std::fs::read(dir.join("mds-images-idx3-ubyte")).unwrap();
        // The IDX header: magic (4 bytes) and three u32 dimensions.
        assert_eq!(images[16..], [0, 64, 128, 255]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 17: a NaN row scored as a number, and 0 samples gave a NaN
    /// accuracy.
    #[test]
    fn metrics_of_nan_or_nothing_are_errors_naming_the_sample() {
        let err = |probs: &[Vec<f32>], labels: &[usize]| match Metrics::of(probs, labels) {
            Err(e @ Error::Metrics { .. }) => e.to_string(),
            other => panic!("expected a metrics error, got {other:?}"),
        };
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY] {
            let probs = vec![vec![0.9, 0.1], vec![0.2, 0.8], vec![bad, 0.5]];
            let msg = err(&probs, &[0, 1, 0]);
            assert!(
                msg.contains(&format!("the probability of class 0 for sample 2 is {bad}")),
                "{msg}"
            );
        }
        let msg = err(&[], &[]);
        assert!(msg.contains("no samples"), "{msg}");
        let msg = err(&[vec![0.5, 0.5]], &[0, 1]);
        assert!(msg.contains("1 probability rows for 2 labels"), "{msg}");
        let msg = err(&[vec![0.5, 0.5], vec![1.0]], &[0, 0]);
        assert!(msg.contains("sample 1 have 1 classes"), "{msg}");
        let msg = err(&[vec![0.5, 0.5]], &[2]);
        assert!(msg.contains("label 2 of sample 0"), "{msg}");
    }

    /// Regression: with every label the same (one MDS sample, a test set
    /// of one class) no class has both positives and negatives, and the
    /// mean of no AUCs was written as 0, the worst AUC there is.
    #[test]
    fn auc_is_undefined_when_every_label_is_the_same() {
        let m = Metrics::of(&[vec![0.9, 0.1], vec![0.8, 0.2]], &[0, 0]).unwrap();
        assert_eq!((m.accuracy, m.f1, m.auc), (1.0, 1.0, None));
        let m = Metrics::of(&[vec![0.3, 0.7]], &[0]).unwrap();
        assert_eq!((m.accuracy, m.auc), (0.0, None));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        let scores = [(0.5, true), (0.5, false), (0.1, false), (0.9, true)];
        // Pairs (pos, neg): (0.5, 0.5) half, (0.5, 0.1) 1, (0.9, 0.5) 1, (0.9, 0.1) 1.
        assert_eq!(auc(&scores, 2), 3.5 / 4.0);
    }

    #[test]
    fn the_vote_is_the_mean_of_the_members() {
        let p = vec![vec![vec![1.0, 0.0]], vec![vec![0.5, 0.5]]];
        assert_eq!(mean_probs(&p), [[0.75, 0.25]]);
    }

    /// Against scikit-learn (`bench/metrics_reference.py`): accuracy_score,
    /// roc_auc_score(multi_class="ovr", average="macro") and
    /// f1_score(average="macro") of 40 samples, 4 classes, probabilities on
    /// a coarse grid (tied scores within classes). Agreed to 1e-12 when
    /// written.
    #[test]
    fn metrics_match_scikit_learn() {
        let probs: Vec<Vec<f32>> = vec![
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.1, 0.1, 0.1, 0.7],
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.1, 0.1, 0.1, 0.7],
            vec![0.1, 0.1, 0.7, 0.1],
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.1, 0.1, 0.1, 0.7],
            vec![0.1, 0.7, 0.1, 0.1],
            vec![0.4090909, 0.4090909, 0.045454547, 0.13636364],
            vec![0.13636364, 0.22727273, 0.4090909, 0.22727273],
            vec![0.34615386, 0.115384616, 0.34615386, 0.1923077],
            vec![0.29166666, 0.125, 0.20833333, 0.375],
            vec![0.32142857, 0.32142857, 0.32142857, 0.035714287],
            vec![0.3181818, 0.22727273, 0.3181818, 0.13636364],
            vec![0.05, 0.05, 0.45, 0.45],
            vec![0.25, 0.41666666, 0.25, 0.083333336],
            vec![0.45, 0.35, 0.05, 0.15],
            vec![0.1923077, 0.34615386, 0.34615386, 0.115384616],
            vec![0.5833333, 0.083333336, 0.083333336, 0.25],
            vec![0.25, 0.15, 0.35, 0.25],
            vec![0.115384616, 0.34615386, 0.26923078, 0.26923078],
            vec![0.35, 0.15, 0.45, 0.05],
            vec![0.21428572, 0.071428575, 0.071428575, 0.64285713],
            vec![0.045454547, 0.22727273, 0.4090909, 0.3181818],
            vec![0.5625, 0.0625, 0.3125, 0.0625],
            vec![0.0625, 0.5625, 0.0625, 0.3125],
            vec![0.0625, 0.1875, 0.5625, 0.1875],
            vec![0.25, 0.083333336, 0.5833333, 0.083333336],
            vec![0.3125, 0.0625, 0.0625, 0.5625],
            vec![0.083333336, 0.41666666, 0.41666666, 0.083333336],
            vec![0.29166666, 0.29166666, 0.375, 0.041666668],
            vec![0.5625, 0.0625, 0.0625, 0.3125],
            vec![0.34615386, 0.34615386, 0.26923078, 0.03846154],
            vec![0.25, 0.45, 0.25, 0.05],
            vec![0.4375, 0.0625, 0.4375, 0.0625],
            vec![0.13636364, 0.13636364, 0.4090909, 0.3181818],
            vec![0.29166666, 0.20833333, 0.125, 0.375],
            vec![0.5, 0.16666667, 0.16666667, 0.16666667],
        ];
        let labels = [
            1, 1, 1, 3, 1, 3, 2, 1, 3, 1, 3, 1, 3, 2, 3, 0, 0, 0, 2, 1, 3, 0, 0, 3, 1, 2, 1, 2, 0,
            2, 3, 2, 3, 3, 2, 3, 1, 0, 2, 2,
        ];
        let m = Metrics::of(&probs, &labels).unwrap();
        assert!((m.accuracy - 0.375).abs() < 1e-12, "{m:?}");
        assert!((m.auc.unwrap() - 0.54844776272578).abs() < 1e-12, "{m:?}");
        assert!((m.f1 - 0.3602148487159929).abs() < 1e-12, "{m:?}");
    }
}
