//! A loaded `gevaldi.toml` and the running of its trials, shared by the
//! cargo test harness ([`crate::harness`]) and the `cargo gevaldi` command.
//!
//! A [`Suite`] lists its trials ([`TrialId`]: `pair::<name>` per
//! `[[pair]]`, `ensemble::<name>` per `[[ensemble]]`, `tournament::<name>`
//! per `[[tournament]]`) without loading a
//! model; running one ([`Suite::run_trial`]) loads only its own models
//! ([`Registry`]), searches, checks its thresholds and its insta snapshot,
//! and writes its record and pictures ([`crate::artifact`]), and gives a
//! [`TrialReport`] or a [`TrialError`]; [`Suite::write_report`] then builds
//! the HTML report of every trial's latest record ([`crate::report`]).
//!
//! | file | what |
//! | --- | --- |
//! | `registry.rs` | models by name: registered from Rust, or built in |
//! | `device.rs` | the device, candle's thread count |
//! | `pair.rs` | a `[[pair]]` trial |
//! | `ensemble.rs` | an `[[ensemble]]` trial |
//! | `tournament.rs` | a `[[tournament]]` trial |
//! | `tournament_pairs.rs` | its pairs as trials of their own, for nextest partitions |
//! | `outcome.rs` | what a trial gives |

mod device;
mod ensemble;
mod outcome;
mod pair;
mod registry;
mod tournament;
mod tournament_pairs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::Device;

#[doc(hidden)]
pub use self::device::{bench_cuda_events, keep_cuda_pool_memory};
pub use self::device::{device, fix_thread_count, prepare_process};
pub use self::outcome::{Figures, TrialError, TrialErrorKind, TrialReport};
pub use self::registry::{BuildModel, Registry};
use crate::artifact::{self, claim_artifact_dir, ErrorRecord, Record};
use crate::config::{self, Config, Dataset, TrialId, TrialKind};
use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;
use crate::model::{Classifier, Generator};

/// A loaded config, its registered models and the device its trials run on.
pub struct Suite {
    config: Config,
    registry: Registry,
    /// Opened on first use: listing the trials opens no device.
    device: OnceLock<Device>,
    /// The `[hierarchy]` of the config, loaded by the first trial that needs
    /// it and shared by the others.
    hierarchy: OnceLock<Arc<Hierarchy>>,
}

/// A trial of a suite, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialInfo {
    /// The trial.
    pub id: TrialId,
    /// `ignore = true` in the config, or skipped (below).
    pub ignored: bool,
    /// Why it is skipped: the weights of an `optional` model it uses are
    /// not present.
    pub skipped: Option<String>,
}

impl Suite {
    /// Loads the config at `path` and checks that every model table without
    /// `arch` is registered in `registry`. Loads no model.
    pub fn load(path: impl AsRef<Path>, registry: Registry) -> Result<Self> {
        let path = path.as_ref();
        let config = config::load(path)?;
        registry::check_registry(&config, &registry)?;
        crate::engine::Engine::from_env()?;
        Ok(Suite {
            config,
            registry,
            device: OnceLock::new(),
            hierarchy: OnceLock::new(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the trials run on (`GEVALDI_DEVICE`, see [`device`]),
    /// opened on first use.
    pub fn device(&self) -> Result<&Device> {
        if let Some(d) = self.device.get() {
            return Ok(d);
        }
        let d = device()?;
        Ok(self.device.get_or_init(|| d))
    }

    /// The trials, pairs first, each in config order.
    pub fn trials(&self) -> Vec<TrialInfo> {
        self.config
            .trials()
            .into_iter()
            .map(|id| {
                let skipped = self.config.skip_reason(&id);
                TrialInfo {
                    ignored: self.config.ignored(&id) || skipped.is_some(),
                    skipped,
                    id,
                }
            })
            .collect()
    }

    /// The directory of this config's records, pictures and report.
    pub fn artifact_dir(&self) -> PathBuf {
        claim_artifact_dir(&self.config.path)
    }

    /// Writes the HTML report of the latest record of every trial.
    pub fn write_report(&self) -> Result<crate::report::Written> {
        crate::report::write(&self.config)
    }

    /// Runs the trial `id`, calling `progress(done, total)` as ascent steps
    /// finish. A trial that stops on an error (or a panic, in a registered
    /// model say) leaves an error record in place of its result.
    pub fn run_trial(
        &self,
        id: &TrialId,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<TrialReport, TrialError> {
        let started = Instant::now();
        let (line, result) = match id.kind {
            TrialKind::Pair => match self.config.pair(&id.name) {
                Some(p) => (
                    p.line,
                    guard(|| {
                        crate::snapshot::check_insta_env()?;
                        self.run_pair(p, progress)
                    }),
                ),
                None => (0, Err(TrialErrorKind::NotInConfig)),
            },
            TrialKind::Ensemble => match self.config.ensemble(&id.name) {
                Some(e) => (
                    e.line,
                    guard(|| {
                        crate::snapshot::check_insta_env()?;
                        self.run_ensemble(e, progress)
                    }),
                ),
                None => (0, Err(TrialErrorKind::NotInConfig)),
            },
            TrialKind::Tournament => match self.config.tournament(&id.name) {
                Some(t) => (
                    t.line,
                    guard(|| {
                        crate::snapshot::check_insta_env()?;
                        self.run_tournament(t, progress)
                    }),
                ),
                None => (0, Err(TrialErrorKind::NotInConfig)),
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(report) => Ok(TrialReport { seconds, ..report }),
            Err(kind) => {
                let mut error = TrialError {
                    id: id.clone(),
                    location: (self.config.path.clone(), line),
                    record: None,
                    seconds,
                    kind,
                };
                if !matches!(error.kind, TrialErrorKind::NotInConfig) {
                    // An older result must not stand in for this run.
                    let record = Record::Error(ErrorRecord {
                        trial: id.to_string(),
                        message: error.message(),
                        written_at: artifact::now(),
                    });
                    error.record = record
                        .write(&artifact::record_path(&self.artifact_dir(), id))
                        .err()
                        .map(Box::new);
                }
                Err(error)
            }
        }
    }

    fn classifier(&self, name: &str) -> Result<Box<dyn Classifier>> {
        let decl = self.config.classifier(name).expect("validated config");
        self.registry
            .build_classifier(&self.config, decl, self.device()?)
    }

    fn generator(&self, name: &str) -> Result<Box<dyn Generator>> {
        let decl = self.config.generator(name).expect("validated config");
        self.registry
            .build_generator(&self.config, decl, self.device()?)
    }

    /// Test images `x` in [0, 1] (IDX bytes / 255) as the classifier `name`
    /// takes them: in its `preprocess.input_range`, the generator's output
    /// range, which its preprocessing maps onto [0, 1] again. Without this
    /// a classifier behind `input_range = [-1, 1]` saw the test digits in
    /// [0.5, 1], washed out, and its test accuracy (the SRCC's, the
    /// ensemble's accuracy drop) was another model's.
    fn test_input(&self, name: &str, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let range = self
            .config
            .classifier(name)
            .and_then(|d| d.preprocess.as_ref())
            .and_then(|p| p.input_range);
        match range {
            None | Some((0.0, 1.0)) => Ok(x.clone()),
            Some((lo, hi)) => x
                .affine(hi - lo, lo)
                .map_err(Error::model(name, "map the test data onto its input_range")),
        }
    }

    /// A trial's generator and classifiers, loaded; with `conditional`
    /// (the trial's `generator` key), a generator that is not
    /// class-conditional is refused there. Then the memory check for
    /// searches of `batch` samples (named as the trial's own `batch` key
    /// when it sets one, else `search.batch`).
    fn load_models(
        &self,
        generator: &str,
        classifiers: &[String],
        conditional: Option<String>,
        own_batch: bool,
        batch: usize,
    ) -> Result<TrialModels> {
        let g = self.generator(generator)?;
        if let (Some(key), None) = (conditional, g.num_conditions()) {
            return Err(Error::setting(
                key,
                generator,
                "a class-conditional generator (the MDS samples' conditions are their labels)",
            ));
        }
        if g.num_conditions() == Some(0) {
            return Err(zero_conditions(generator));
        }
        self.check_input_ranges(generator, g.as_ref(), classifiers)?;
        let cs = classifiers
            .iter()
            .map(|m| self.classifier(m))
            .collect::<Result<Vec<_>>>()?;
        let key = if own_batch { "batch" } else { "search.batch" };
        // The memory probe also checks each classifier's names against its
        // logits' width.
        self.check_memory(g.as_ref(), &named(classifiers, &cs), key, batch)?;
        check_classes(&named(classifiers, &cs))?;
        self.audit_registered(generator, g.as_ref(), &named(classifiers, &cs))?;
        Ok((g, cs))
    }

    /// Refuses a classifier whose `preprocess` normalises (`mean`, `std`)
    /// without an `input_range` behind a generator whose `output_range` is
    /// not [0, 1]: the missing range is [0, 1], so BigGAN's [-1, 1] images
    /// went in as if they were in [0, 1] (half of each below black), and
    /// every figure of the trial was of other inputs than the weights
    /// expect, silently. Without `mean` and `std` the values go in as
    /// they are (`preprocess = {}`, or a resize alone), which is allowed.
    fn check_input_ranges(
        &self,
        generator: &str,
        g: &dyn Generator,
        classifiers: &[String],
    ) -> Result<()> {
        let (lo, hi) = g.output_range();
        let unit =
            (f64::from(lo), f64::from(hi)) == crate::preprocess::Preprocess::default().input_range;
        let own_generator = self
            .config
            .generator(generator)
            .is_some_and(|d| d.builtin.is_none());
        for m in classifiers {
            let Some(decl) = self.config.classifier(m) else {
                continue;
            };
            let (Some((arch, _)), None) = (&decl.builtin, &decl.preprocess) else {
                continue;
            };
            // Behind a built-in generator the config refuses an ImageNet
            // classifier without `preprocess` already.
            let dataset = arch.dataset();
            let mismatched = match dataset {
                Dataset::ImageNet => own_generator,
                Dataset::Mnist => !unit,
            };
            if !mismatched {
                continue;
            }
            return Err(Error::Unprepared {
                model: m.clone(),
                arch: arch.name(),
                config: self.config.path.clone(),
                line: decl.line,
                generator: generator.to_string(),
                lo,
                hi,
                dataset,
            });
        }
        if unit {
            return Ok(());
        }
        for m in classifiers {
            let Some(decl) = self.config.classifier(m) else {
                continue;
            };
            let Some(p) = &decl.preprocess else {
                continue;
            };
            if p.input_range.is_none() && (p.mean.is_some() || p.std.is_some()) {
                return Err(Error::InputRange {
                    model: m.clone(),
                    config: self.config.path.clone(),
                    line: decl.line,
                    generator: generator.to_string(),
                    lo,
                    hi,
                });
            }
        }
        Ok(())
    }

    /// Audits the gradients of the trial's models that are registered from
    /// Rust ([`GradientAudit`](crate::GradientAudit) at two of the
    /// generator's samples, a classifier at the images and through the
    /// generator from z; the built-in ones are audited by gevaldi's own
    /// tests): a model on candle's `max_pool2d`, whose backward scales by
    /// 1/k², would otherwise be searched on wrong gradients, and pass.
    /// A model whose output is not finite there is left to the search,
    /// which names the step and sample.
    fn audit_registered(
        &self,
        generator: &str,
        g: &dyn Generator,
        classifiers: &[(&str, &dyn Classifier)],
    ) -> Result<()> {
        let registered =
            |decl: Option<&config::ModelDecl>| decl.is_some_and(|d| d.builtin.is_none());
        let own_generator = registered(self.config.generator(generator));
        let own: Vec<_> = classifiers
            .iter()
            .filter(|(name, _)| registered(self.config.classifier(name)))
            .collect();
        if !own_generator && own.is_empty() {
            return Ok(());
        }
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6175_6469);
        let z = g
            .sample_prior(2, &mut rng, self.device()?)
            .map_err(Error::model(
                generator,
                "sample its prior for the gradient audit",
            ))?;
        let d = g.latent_dim();
        if z.dims() != [2, d] {
            return Err(Error::Shape {
                model: generator.to_string(),
                what: "samples of its prior (`sample_prior(2, ..)`)".into(),
                expected: format!("[2, {d}] (its `latent_dim` is {d})"),
                got: z.dims().to_vec(),
            });
        }
        let condition = match g.num_conditions() {
            Some(k) => Some(crate::model::one_hot(&[0, 1 % k], k, self.device()?)?),
            None => None,
        };
        let audit = crate::GradientAudit::default();
        let finite = |t: &candle_core::Tensor| -> Result<bool> {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F64))
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(Error::tensor(
                    "read a model's output for the gradient audit",
                ))?;
            Ok(v.iter().all(|v| v.is_finite()))
        };
        let x = g
            .decode(&z, condition.as_ref())
            .map_err(Error::model(generator, "decode z"))?;
        if own_generator && finite(&x)? {
            audit.generator(generator, g, &z, condition.as_ref())?;
            audit.log_prior(generator, g, &z)?;
        }
        // Made once for every classifier of one's own ([`jittered`]).
        let audited = match own.is_empty() {
            true => None,
            false => Some(jittered(&x, g.output_range())?),
        };
        for (name, c) in own {
            let logits = c.logits(&x).map_err(Error::model(
                *name,
                format!(
                    "compute logits of `{generator}`'s samples of shape {:?}",
                    x.dims()
                ),
            ))?;
            crate::search::check_logits_dtype(name, &logits, z.dtype())?;
            if finite(&logits)? {
                crate::search::refuse_probabilities(name, &logits)?;
                audit.classifier(name, *c, audited.as_ref().unwrap_or(&x))?;
                // At images a dropped branch hides among the pixels; in z,
                // where the search climbs, it shows.
                let chain = format!("{generator} -> {name}");
                audit.chain(&chain, g, *c, &z, condition.as_ref())?;
            }
        }
        // Where a classifier cannot take the samples at all (another
        // shape), the search names that first.
        if own_generator && finite(&x)? && classifiers.iter().all(|(_, c)| c.logits(&x).is_ok()) {
            check_output_range(generator, g, &x)?;
        }
        Ok(())
    }

    /// Refuses a batch that would not fit in memory, and a classifier whose
    /// logits are not as wide as its class names ([`crate::memory`]), before
    /// a search.
    fn check_memory(
        &self,
        generator: &dyn Generator,
        classifiers: &[(&str, &dyn Classifier)],
        key: &str,
        batch: usize,
    ) -> Result<()> {
        match crate::memory::Estimate::probe(generator, classifiers, self.device()?)? {
            Some(estimate) => estimate.check(key, batch, self.device()?),
            None => Ok(()),
        }
    }
}

/// The generator's samples `x`, each value moved by 1e-3 of its output
/// range `(lo, hi)` times a seeded |normal|, toward the middle of the
/// range (so they stay in it), for a classifier's gradient audit: a
/// decoded digit's blank background is ~1e-6 everywhere, where a conv
/// without bias gives ~1e-6 and every ReLU after it sits on its kink;
/// finite differences there disagree with any gradient (a right model
/// failed its audit by 1.1 to 1.5 at every step size). Jittered, the
/// pixels are generic; a wrong gradient is wrong there too, and the audit
/// from z sees the samples themselves.
fn jittered(x: &candle_core::Tensor, (lo, hi): (f32, f32)) -> Result<candle_core::Tensor> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6a69_7474);
    let (mid, step) = if lo.is_finite() && hi.is_finite() && lo < hi {
        ((lo + hi) / 2.0, 1e-3 * (hi - lo))
    } else {
        (0.0, 1e-3)
    };
    crate::model::sample_standard_normal(x.dims(), &mut rng, x.device())
        .and_then(|n| {
            let toward_mid = x
                .lt(f64::from(mid))?
                .to_dtype(x.dtype())?
                .affine(2.0, -1.0)?;
            let n = n.to_dtype(x.dtype())?.abs()?.affine(f64::from(step), 0.0)?;
            x + n.mul(&toward_mid)?
        })
        .map_err(Error::tensor("jitter the samples for the gradient audit"))
}

/// Refuses a generator whose decoded samples `x` reach beyond its declared
/// `output_range` by more than a quarter of its width (a decoder with a
/// linear output may overshoot a little; one declaring the default [0, 1]
/// with a tanh output, or 0 to 255, is off by a whole width): the pictures
/// would clip its images and the classifiers' `preprocess` would map the
/// wrong range, silently.
fn check_output_range(generator: &str, g: &dyn Generator, x: &candle_core::Tensor) -> Result<()> {
    let (lo, hi) = g.output_range();
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::Setting {
            key: format!("output_range` of generator `{generator}"),
            value: format!("({lo}, {hi})"),
            expected: "a finite (low, high) with low below high (`Generator::output_range`, \
                       `ModuleGenerator::with_output_range`)"
                .into(),
        });
    }
    let values = x
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(Error::tensor("read the generator's samples"))?;
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let slack = 0.25 * (hi - lo);
    if min >= lo - slack && max <= hi + slack {
        return Ok(());
    }
    Err(Error::OutsideOutputRange {
        generator: generator.to_string(),
        min,
        max,
        lo,
        hi,
        default: if (lo, hi) == (0.0, 1.0) {
            " (the default, where a generator declares none)"
        } else {
            ""
        },
    })
}

/// A trial's generator and classifiers (in the trial's order).
type TrialModels = (Box<dyn Generator>, Vec<Box<dyn Classifier>>);

/// The classifiers of one trial have 2 classes or more, share their number
/// of classes, and name them alike in logit order
/// ([`crate::model::first_class_conflict`]):
/// without a `[hierarchy]` nothing else would notice a classifier listing
/// the same labels in another order, and its logits would be compared with
/// the other's index by index.
fn check_classes(classifiers: &[(&str, &dyn Classifier)]) -> Result<()> {
    let Some(&(first, c0)) = classifiers.first() else {
        return Ok(());
    };
    // One class (a binary classifier's single logit) gives a divergence of
    // 0 wherever the search goes: every threshold would pass. Refused
    // before the gradient audit too, not only by the search.
    for &(name, c) in classifiers {
        crate::search::check_two_classes(name, c.num_classes())?;
    }
    for &(name, c) in &classifiers[1..] {
        if c.num_classes() != c0.num_classes() {
            return Err(Error::ClassCount {
                first: first.to_string(),
                expected: c0.num_classes(),
                model: name.to_string(),
                got: c.num_classes(),
            });
        }
    }
    for (i, &(a, ca)) in classifiers.iter().enumerate() {
        for &(b, cb) in &classifiers[i + 1..] {
            let (na, nb) = (ca.class_names(), cb.class_names());
            if let Some(k) = crate::model::first_class_conflict(na, nb) {
                return Err(Error::ClassOrder {
                    first: a.to_string(),
                    model: b.to_string(),
                    index: k,
                    got: nb[k].clone(),
                    theirs: na[k].clone(),
                });
            }
        }
    }
    Ok(())
}

/// The classifiers beside their names.
fn named<'a>(
    names: &'a [String],
    classifiers: &'a [Box<dyn Classifier>],
) -> Vec<(&'a str, &'a dyn Classifier)> {
    names
        .iter()
        .zip(classifiers)
        .map(|(n, c)| (n.as_str(), c.as_ref()))
        .collect()
}

/// `run()`, with an error or a panic as why the trial stopped.
fn guard<T>(run: impl FnOnce() -> Result<T>) -> std::result::Result<T, TrialErrorKind> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|e| TrialErrorKind::Failed(Box::new(e))),
        Err(payload) => Err(TrialErrorKind::Panicked(panic_message(&*payload))),
    }
}

/// A panic's message: its `&str` or `String` payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// A generator whose `num_conditions()` is `Some(0)`: conditional on no
/// class, so no sample can be drawn (the conditions' spread divided by 0).
pub(crate) fn zero_conditions(generator: &str) -> Error {
    Error::setting(
        format!("generator.{generator}"),
        "num_conditions() = Some(0)",
        "Some(classes) with 1 or more classes, or None for an unconditional generator",
    )
}
