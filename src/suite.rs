//! A loaded `gevaldi.toml` and the running of its trials, shared by the
//! cargo test harness ([`crate::harness`]) and the `cargo gevaldi` command.
//!
//! A [`Suite`] lists its trials (`pair::<name>` per `[[pair]]`,
//! `ensemble::<name>` per `[[ensemble]]`) without loading a model; running
//! one loads only its own models, searches, checks its thresholds and its
//! insta snapshot, and writes its record and pictures
//! ([`crate::artifact`]); [`Suite::write_report`] then builds the HTML
//! report of every trial's latest record ([`crate::report`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::artifact::{
    self, artifact_dir, EnsembleArtifact, LatentMap, PairArtifact, Record, TrialError,
};
use crate::config::{self, Config, EnsembleDecl, ModelDecl, ModelTable, PairDecl};
use crate::data::{Mnist, Split};
use crate::ensemble::{mean_probs, MdsDataset, Metrics};
use crate::error::{Error, Result};
use crate::grid::{pictures, Cell, Grid};
use crate::hierarchy::{Hierarchy, SetDistance};
use crate::model::{argmax, Classifier, Generator};
use crate::pca::Pca;
use crate::preprocess::{Channels, Preprocess, Preprocessed};
use crate::regions::find_regions;
use crate::search::{Search, SearchOutcome};
use crate::snapshot::Summary;
use crate::snapshot::{EnsembleSummary, RegionsSummary, Settings};
use crate::verdict::{top, Verdict};
use crate::zoo::{self, Arch};

/// Samples shown in a pair's grid, most divergent after the search first.
pub const GRID_SAMPLES: usize = 8;
/// Regions shown in an ensemble's grid, largest first, and examples of each.
pub const GRID_REGIONS: (usize, usize) = (5, 8);

/// Builds a model registered from Rust when a trial needs it.
type Factory<T> = Box<dyn Fn(&ModelTable, &Device) -> Result<Box<T>> + Send + Sync>;

/// A function that builds a model registered from Rust, in either shape
/// `gevaldi::main!` accepts: `Fn(&ModelTable, &Device) -> gevaldi::Result<M>`
/// (it sees the model's table) or `Fn(&Device) -> gevaldi::Result<M>`.
/// `Args` (`fn(&ModelTable, &Device)` or `fn(&Device)`) tells them apart
/// and is inferred for functions; a closure needs its argument types
/// written out (`|t: &ModelTable, d: &Device| …`).
#[doc(hidden)]
pub trait BuildModel<M, Args>: Send + Sync + 'static {
    /// Builds the model of `table` on `device`.
    fn build(&self, table: &ModelTable, device: &Device) -> Result<M>;
}

impl<M, F> BuildModel<M, fn(&ModelTable, &Device)> for F
where
    F: Fn(&ModelTable, &Device) -> Result<M> + Send + Sync + 'static,
{
    fn build(&self, table: &ModelTable, device: &Device) -> Result<M> {
        self(table, device)
    }
}

impl<M, F> BuildModel<M, fn(&Device)> for F
where
    F: Fn(&Device) -> Result<M> + Send + Sync + 'static,
{
    fn build(&self, _: &ModelTable, device: &Device) -> Result<M> {
        self(device)
    }
}

/// Models registered from Rust under the names a `gevaldi.toml` uses for
/// tables without `arch`.
#[derive(Default)]
pub struct Registry {
    classifiers: Vec<(String, Factory<dyn Classifier>)>,
    generators: Vec<(String, Factory<dyn Generator>)>,
    /// Tables without `arch` need no registration; building one fails.
    without_rust_models: bool,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry for loading a config where its Rust models are not at
    /// hand (`cargo gevaldi` lists trials and rebuilds reports of every
    /// config): a table without `arch` needs no registration, and a trial
    /// that needs such a model fails, saying that it runs under
    /// `cargo test`.
    pub fn without_rust_models() -> Self {
        Registry {
            without_rust_models: true,
            ..Self::default()
        }
    }

    /// Registers the classifier `name`, built by `build` when a trial needs
    /// it. [`Registry::classifier_with_table`] gives it its TOML table too.
    pub fn classifier<C: Classifier + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<C> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_classifier(name, build)
    }

    /// Registers the classifier `name`, built by `build` from its
    /// `[classifier.<name>]` table (its `weights`, resolved, and its own
    /// keys) when a trial needs it.
    pub fn classifier_with_table<C: Classifier + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&ModelTable, &Device) -> Result<C> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_classifier(name, build)
    }

    /// Registers the generator `name`, built by `build` when a trial needs
    /// it. [`Registry::generator_with_table`] gives it its TOML table too.
    pub fn generator<G: Generator + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<G> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_generator(name, build)
    }

    /// Registers the generator `name`, built by `build` from its
    /// `[generator.<name>]` table when a trial needs it.
    pub fn generator_with_table<G: Generator + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&ModelTable, &Device) -> Result<G> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_generator(name, build)
    }

    /// Either shape of classifier builder (what `gevaldi::main!` calls).
    #[doc(hidden)]
    pub fn register_classifier<C: Classifier + 'static, Args>(
        &mut self,
        name: &str,
        build: impl BuildModel<C, Args>,
    ) -> &mut Self {
        let factory: Factory<dyn Classifier> = Box::new(move |t, d| {
            build
                .build(t, d)
                .map(|c| Box::new(c) as Box<dyn Classifier>)
        });
        self.classifiers.push((name.to_string(), factory));
        self
    }

    /// Either shape of generator builder (what `gevaldi::main!` calls).
    #[doc(hidden)]
    pub fn register_generator<G: Generator + 'static, Args>(
        &mut self,
        name: &str,
        build: impl BuildModel<G, Args>,
    ) -> &mut Self {
        let factory: Factory<dyn Generator> =
            Box::new(move |t, d| build.build(t, d).map(|g| Box::new(g) as Box<dyn Generator>));
        self.generators.push((name.to_string(), factory));
        self
    }
}

/// The device trials run on: `GEVALDI_DEVICE` (`cpu`, `cuda`, `metal`) if
/// set, else the first GPU of an enabled back end (features `cuda`,
/// `metal`), else the CPU.
pub fn device() -> Result<Device> {
    let choice = std::env::var("GEVALDI_DEVICE").unwrap_or_default();
    let gpu_error = |e| Error::Tensor {
        action: format!("open the `{choice}` device named by GEVALDI_DEVICE"),
        source: Box::new(e),
    };
    match choice.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(gpu_error),
        "metal" => Device::new_metal(0).map_err(gpu_error),
        "" => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if cfg!(feature = "metal") {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        other => Err(Error::setting(
            "GEVALDI_DEVICE",
            other,
            "cpu, cuda or metal",
        )),
    }
}

/// Sets `RAYON_NUM_THREADS`, when it is not set, to the thread count candle
/// chooses by itself (the physical cores).
///
/// candle 0.11 asks for its thread count on every matmul, and on Linux,
/// without `RAYON_NUM_THREADS`, that parses `/proc/cpuinfo` each time: 11% of
/// a search's time on the MNIST fixtures, measured with `perf`. Call it
/// first thing in `main`, before any other thread starts (the harness of
/// [`main!`](crate::main), `cargo gevaldi` and the benchmark do).
pub fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// A loaded config, its registered models and the device its trials run on.
pub struct Suite {
    config: Config,
    registry: Registry,
    device: Device,
    /// The `[hierarchy]` of the config, loaded by the first trial that needs
    /// it and shared by the others.
    hierarchy: OnceLock<std::result::Result<Arc<Hierarchy>, String>>,
}

/// A trial of a suite, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialInfo {
    /// `pair::<name>` or `ensemble::<name>`.
    pub name: String,
    /// `ignore = true` in the config, or skipped (below).
    pub ignored: bool,
    /// Why it is skipped: the weights of an `optional` model it uses are
    /// not present.
    pub skipped: Option<String>,
}

/// What running one trial gave.
#[derive(Clone, Debug)]
pub struct TrialOutcome {
    /// `pair::<name>` or `ensemble::<name>`.
    pub name: String,
    /// Whether every threshold held and the snapshot matched.
    pub passed: bool,
    /// The one-line summary (figures and time), or the error when the trial
    /// stopped before it had a result.
    pub line: String,
    /// When it failed: what failed, the worst samples, where the artifact is.
    pub message: Option<String>,
    /// What looked wrong about the ascent even if it passed (it fell, or z
    /// ran away): see [`crate::search::AscentWarning`].
    pub warnings: Vec<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Suite {
    /// Loads the config at `path` and checks that every model table without
    /// `arch` is registered in `registry`. Loads no model.
    pub fn load(path: impl AsRef<Path>, registry: Registry) -> Result<Self> {
        let path = path.as_ref();
        let config = config::load(path)?;
        check_registry(&config, &registry)?;
        crate::engine::Engine::from_env()?;
        Ok(Suite {
            config,
            registry,
            device: device()?,
            hierarchy: OnceLock::new(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the trials run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trials, pairs first, each in config order.
    pub fn trials(&self) -> Vec<TrialInfo> {
        let info = |name: String, ignore: bool| {
            let skipped = self.config.skip_reason(&name);
            TrialInfo {
                name,
                ignored: ignore || skipped.is_some(),
                skipped,
            }
        };
        let pairs = self
            .config
            .pairs
            .iter()
            .map(|p| info(format!("pair::{}", p.name), p.ignore));
        let ensembles = self
            .config
            .ensembles
            .iter()
            .map(|e| info(format!("ensemble::{}", e.name), e.ignore));
        pairs.chain(ensembles).collect()
    }

    /// The directory of this config's records, pictures and report.
    pub fn artifact_dir(&self) -> PathBuf {
        artifact_dir(&self.config.path)
    }

    /// Writes the HTML report of the latest record of every trial.
    pub fn write_report(&self) -> Result<crate::report::Written> {
        crate::report::write(&self.config)
    }

    /// Runs the trial `name` (as listed by [`Suite::trials`]), calling
    /// `progress(done, total)` as ascent steps finish. A trial that stops on
    /// an error fails, and leaves an error record in place of its result.
    pub fn run_trial(&self, name: &str, progress: &dyn Fn(u64, u64)) -> TrialOutcome {
        let started = Instant::now();
        // A panic (in a registered model, say) fails this trial with an error
        // record like any error, rather than leaving it "not run yet".
        let guard = |prefix: String, run: &dyn Fn() -> std::result::Result<Ran, String>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|payload| {
                Err(format!("{prefix}: panicked: {}", panic_message(&*payload)))
            })
        };
        let result = if let Some(pair) = name.strip_prefix("pair::") {
            match self.config.pair(pair) {
                Some(p) => guard(self.location("pair", &p.name, p.line), &|| {
                    self.try_pair(p, progress)
                }),
                None => Err(format!(
                    "no [[pair]] named `{pair}` in {}",
                    self.config.path.display()
                )),
            }
        } else if let Some(ensemble) = name.strip_prefix("ensemble::") {
            match self.config.ensemble(ensemble) {
                Some(e) => guard(self.location("ensemble", &e.name, e.line), &|| {
                    self.try_ensemble(e, progress)
                }),
                None => Err(format!(
                    "no [[ensemble]] named `{ensemble}` in {}",
                    self.config.path.display()
                )),
            }
        } else {
            Err(format!(
                "no trial named `{name}`: trials are pair::<name> and ensemble::<name>"
            ))
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(Ran {
                line,
                problems,
                warnings,
                artifact,
            }) => TrialOutcome {
                name: name.to_string(),
                passed: problems.is_empty(),
                message: (!problems.is_empty()).then(|| {
                    let warned: String =
                        warnings.iter().map(|w| format!("\nwarning: {w}")).collect();
                    format!(
                        "{}{warned}\nartifact: {}",
                        problems.join("\n"),
                        artifact.display()
                    )
                }),
                line,
                warnings,
                seconds,
            },
            Err(message) => {
                // An older result must not stand in for this run.
                let record = Record::Error(TrialError {
                    trial: name.to_string(),
                    message: message.clone(),
                    written_at: artifact::now(),
                });
                let path = self.record_path(name);
                let message = match (path, record) {
                    (Some(path), record) => match record.write(&path) {
                        Ok(()) => message,
                        Err(e) => format!("{message}\n(and {e})"),
                    },
                    (None, _) => message,
                };
                TrialOutcome {
                    name: name.to_string(),
                    passed: false,
                    line: message.lines().next().unwrap_or_default().to_string(),
                    message: Some(message),
                    warnings: Vec::new(),
                    seconds,
                }
            }
        }
    }

    /// "pair `name` (file:line)", how a trial's errors begin.
    fn location(&self, kind: &str, name: &str, line: usize) -> String {
        format!("{kind} `{name}` ({}:{line})", self.config.path.display())
    }

    /// Where the record of the trial `name` goes.
    fn record_path(&self, name: &str) -> Option<PathBuf> {
        let dir = self.artifact_dir();
        if let Some(p) = name.strip_prefix("pair::") {
            Some(artifact::pair_record(&dir, p))
        } else {
            name.strip_prefix("ensemble::")
                .map(|e| artifact::ensemble_record(&dir, e))
        }
    }

    fn classifier(&self, name: &str) -> Result<Box<dyn Classifier>> {
        let decl = self.config.classifier(name).expect("validated config");
        let model = self.bare_classifier(name, decl)?;
        Ok(match &decl.preprocess {
            None => model,
            Some(p) => Box::new(Preprocessed {
                inner: model,
                preprocess: preprocess(p),
            }),
        })
    }

    fn bare_classifier(&self, name: &str, decl: &ModelDecl) -> Result<Box<dyn Classifier>> {
        self.load_model(name, decl, &self.registry.classifiers, Arch::classifier)
    }

    fn generator(&self, name: &str) -> Result<Box<dyn Generator>> {
        let decl = self.config.generator(name).expect("validated config");
        self.load_model(name, decl, &self.registry.generators, |arch, vb| {
            arch.generator_with(vb, decl.truncation)
        })
    }

    /// A declared model: its built-in architecture loaded from its weights
    /// file, or the builder registered from Rust under its name.
    fn load_model<T: ?Sized>(
        &self,
        name: &str,
        decl: &ModelDecl,
        registered: &[(String, Factory<T>)],
        build: impl FnOnce(Arch, candle_nn::VarBuilder) -> candle_core::Result<Box<T>>,
    ) -> Result<Box<T>> {
        match &decl.builtin {
            Some((arch, weights)) => {
                let arch: Arch = arch.parse()?;
                zoo::load_file(weights, name, &self.device, |vb| build(arch, vb))
            }
            None => match registered.iter().find(|(n, _)| n == name) {
                Some((_, factory)) => factory(&decl.table, &self.device),
                None => Err(Error::setting(
                    format!("{}.{name}", decl.table.kind()),
                    format!(
                        "a table without `arch` ({}:{})",
                        self.config.path.display(),
                        decl.line
                    ),
                    "a model registered from Rust, which only the `cargo test` harness of \
                     `gevaldi::main!` builds",
                )),
            },
        }
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
        match crate::memory::Estimate::probe(generator, classifiers, &self.device)? {
            Some(estimate) => estimate.check(key, batch, &self.device),
            None => Ok(()),
        }
    }

    fn try_pair(
        &self,
        pair: &PairDecl,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<Ran, String> {
        let started = Instant::now();
        let fail = |e: Error| {
            format!(
                "pair `{}` ({}:{}): {e}",
                pair.name,
                self.config.path.display(),
                pair.line
            )
        };
        let settings = pair.search.or(&self.config.search);
        let search_config = config::search_config(&settings).map_err(fail)?;
        let generator = self.generator(&pair.generator).map_err(fail)?;
        let classifiers = pair
            .models
            .iter()
            .map(|m| self.classifier(m))
            .collect::<Result<Vec<_>>>()
            .map_err(fail)?;
        let named: Vec<(&str, &dyn Classifier)> = pair
            .models
            .iter()
            .zip(&classifiers)
            .map(|(n, c)| (n.as_str(), c.as_ref()))
            .collect();
        let batch_key = match pair.search.batch {
            Some(_) => "batch",
            None => "search.batch",
        };
        self.check_memory(generator.as_ref(), &named, batch_key, search_config.batch)
            .map_err(fail)?;
        // A class-conditional generator (BigGAN, a cVAE) gets one class per
        // sample, drawn uniformly with the search's seed (its own stream).
        let conditions: Option<Vec<usize>> = generator.num_conditions().map(|k| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(search_config.seed ^ 0x636c_6173);
            (0..search_config.batch)
                .map(|_| rng.random_range(0..k))
                .collect()
        });
        let hierarchy = self.hierarchy(&pair.models, &classifiers).map_err(|e| {
            format!(
                "pair `{}` ({}:{}): {e}",
                pair.name,
                self.config.path.display(),
                pair.line
            )
        })?;
        if pair.thresholds.top_n > hierarchy.len() {
            return Err(fail(Error::TopN {
                top_n: pair.thresholds.top_n,
                classes: hierarchy.len(),
                model: pair.models[0].clone(),
            }));
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
            let one_hot =
                crate::model::one_hot(labels, k, &self.device).map_err(|e| fail(e.into()))?;
            search = search.condition(one_hot);
        }
        for (m, c) in pair.models.iter().zip(&classifiers) {
            search = search.classifier(m, c.as_ref());
        }
        for m in &measures {
            search = search.measure(m);
        }
        let outcome = search.run(&self.device).map_err(fail)?;
        let verdict = Verdict::check(&outcome, &pair.thresholds);
        let summary = Summary::new(&pair.name, &pair.generator, &outcome, &pair.thresholds);
        let warnings: Vec<String> = summary.warnings.iter().map(|w| w.message.clone()).collect();
        let snapshot = summary
            .check_snapshot(&self.config.path)
            .map_err(|e| e.to_string());

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
                grid.write_png(&dir.join(&file)).map_err(fail)?;
                Some(file)
            }
            None => None,
        };
        let d = outcome.config.divergence.name();
        let line = format!(
            "pair::{}: mean {d} {:.4} -> {:.4} (max {:.4}), baseline {:.4}, lift {:.1}x, {} steps in {:.1} s",
            pair.name,
            outcome.mean_divergence_before(),
            outcome.mean_divergence_after(),
            crate::verdict::statistic(
                &outcome.samples.iter().map(|s| s.divergence_after).collect::<Vec<_>>(),
                config::Statistic::Max
            ),
            outcome.baseline.mean,
            verdict.lift,
            outcome.steps_run,
            started.elapsed().as_secs_f64()
        );
        let mut problems = Vec::new();
        if !verdict.passed() {
            problems.push(verdict.message(&outcome, &pair.thresholds));
        }
        let mut failures = verdict.failures;
        failures.extend(snapshot.clone().err());
        problems.extend(snapshot.err());
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
            conditions,
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        });
        record.write(&path).map_err(fail)?;
        Ok(Ran {
            line,
            problems,
            warnings,
            artifact: path,
        })
    }

    fn try_ensemble(
        &self,
        e: &EnsembleDecl,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<Ran, String> {
        let started = Instant::now();
        let fail = |err: Error| {
            format!(
                "ensemble `{}` ({}:{}): {err}",
                e.name,
                self.config.path.display(),
                e.line
            )
        };
        let search_config = config::search_config(&e.search.or(&self.config.search))
            .map_err(fail)?
            .divergence(crate::Divergence::js());
        let generator = self.generator(&e.generator).map_err(fail)?;
        if generator.num_conditions().is_none() {
            return Err(fail(Error::setting(
                format!("ensemble[{}].generator", e.name),
                &e.generator,
                "a class-conditional generator (the MDS samples' conditions are their labels)",
            )));
        }
        let members = e
            .members
            .iter()
            .map(|m| self.classifier(m))
            .collect::<Result<Vec<_>>>()
            .map_err(fail)?;
        let named: Vec<(&str, &dyn Classifier)> = e
            .members
            .iter()
            .zip(&members)
            .map(|(n, m)| (n.as_str(), m.as_ref()))
            .collect();
        let batch_key = match e.search.batch {
            Some(_) => "batch",
            None => "search.batch",
        };
        // The MDS dataset is searched in chunks of at most `batch`.
        let batch = search_config.batch.min(e.samples);
        self.check_memory(generator.as_ref(), &named, batch_key, batch)
            .map_err(fail)?;
        let test = Mnist::load(&e.test_data, Split::Test).map_err(fail)?;
        let x = test.images_tensor(None, &self.device).map_err(fail)?;
        let member_probs = members
            .iter()
            .zip(&e.members)
            .map(|(m, name)| {
                m.logits(&x)
                    .and_then(|l| candle_nn::ops::softmax(&l, 1))
                    .and_then(|p| p.to_vec2::<f32>())
                    .map_err(Error::model(name, "classify the test data"))
            })
            .collect::<Result<Vec<_>>>()
            .map_err(fail)?;
        let labels: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
        let test_vote = mean_probs(&member_probs);
        let on_test = Metrics::of(&test_vote, &labels).map_err(fail)?;
        let mds = MdsDataset::search_with_progress(
            &named,
            generator.as_ref(),
            e.samples,
            &search_config,
            &self.device,
            progress,
        )
        .map_err(fail)?;
        let vote = mds.vote();
        let on_mds = Metrics::of(&vote, &mds.labels).map_err(fail)?;
        let regions = find_regions(&mds, e.min_samples, None);
        let threshold_failures =
            crate::verdict::ensemble_failures(e, &on_test, &on_mds, regions.regions.len());
        let class_names = members[0].class_names().to_vec();
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
        let snapshot = summary
            .check_snapshot(&self.config.path)
            .map_err(|e| e.to_string());
        let dir = artifact::ensemble_dir(&self.artifact_dir(), &e.name);
        mds.export(&dir, "mds").map_err(fail)?;
        let latent_map = self.latent_map(e, generator.as_ref(), &mds).map_err(fail)?;
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
                grid.write_png(&dir.join("regions.png")).map_err(fail)?;
                Some("regions.png".to_string())
            }
            None => None,
        };
        let mut failures = threshold_failures.clone();
        failures.extend(snapshot.clone().err());
        let path = artifact::ensemble_record(&self.artifact_dir(), &e.name);
        let record = Record::Ensemble(EnsembleArtifact {
            config: self.config.path.clone(),
            summary,
            passed: failures.is_empty(),
            failures,
            class_names,
            labels: mds.labels,
            z: mds.z,
            divergence: mds.divergence,
            member_probs: mds.member_probs,
            regions: region_members,
            latent_map,
            grid,
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        });
        record.write(&path).map_err(fail)?;
        let line = format!(
            "ensemble::{}: accuracy {:.1}% on the test data, {:.1}% on {} MDS samples, {} regions \
             of uncertainty, in {:.1} s",
            e.name,
            100.0 * on_test.accuracy,
            100.0 * on_mds.accuracy,
            e.samples,
            regions.regions.len(),
            started.elapsed().as_secs_f64()
        );
        let mut problems = threshold_failures;
        problems.extend(snapshot.err());
        Ok(Ran {
            line,
            problems,
            warnings: Vec::new(),
            artifact: dir,
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
        let x = train.images_tensor(None, &self.device)?;
        let c = crate::model::one_hot(&labels, classes, &self.device)?;
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

    /// The config's hierarchy (loaded once), or the flat hierarchy over the
    /// first classifier's classes; the classifiers must share their number
    /// of classes, and it must be the hierarchy's.
    fn hierarchy(
        &self,
        names: &[String],
        classifiers: &[Box<dyn Classifier>],
    ) -> std::result::Result<Arc<Hierarchy>, String> {
        let first = (&names[0], classifiers[0].num_classes());
        for (name, c) in names.iter().zip(classifiers).skip(1) {
            if c.num_classes() != first.1 {
                return Err(Error::ClassCount {
                    first: first.0.clone(),
                    expected: first.1,
                    model: name.clone(),
                    got: c.num_classes(),
                }
                .to_string());
            }
        }
        let hierarchy = match &self.config.hierarchy {
            None => Arc::new(Hierarchy::flat(classifiers[0].class_names())),
            Some(decl) => self
                .hierarchy
                .get_or_init(|| {
                    Hierarchy::load(&decl.classes, &decl.edges, decl.names.as_deref())
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone()?,
        };
        // The classifiers share their class count (above), and the flat
        // hierarchy is built from it.
        if let (Some(d), Some((name, c))) =
            (&self.config.hierarchy, names.iter().zip(classifiers).next())
        {
            if c.num_classes() != hierarchy.len() {
                return Err(format!(
                    "the hierarchy `{}` has {} classes but classifier `{name}` has {}: the label \
                     sets must match",
                    d.classes.display(),
                    hierarchy.len(),
                    c.num_classes()
                ));
            }
        }
        Ok(hierarchy)
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

/// The [`Preprocess`] a config declares (validated by the config).
fn preprocess(p: &config::PreprocessDecl) -> Preprocess {
    let default = Preprocess::default();
    Preprocess {
        input_range: p.input_range.unwrap_or(default.input_range),
        resize: p.resize,
        channels: match p.channels.as_deref() {
            Some("bgr") => Channels::Bgr,
            Some("grey-to-rgb") => Channels::GreyToRgb,
            _ => Channels::Rgb,
        },
        mean: p.mean.clone(),
        std: p.std.clone(),
    }
}

fn check_registry(config: &Config, registry: &Registry) -> Result<()> {
    if registry.without_rust_models {
        return Ok(());
    }
    let check = |decls: &[ModelDecl], registered: Vec<&str>, kind: &str| -> Result<()> {
        for d in decls.iter().filter(|d| d.builtin.is_none()) {
            if !registered.contains(&d.name.as_str()) {
                return Err(Error::setting(
                    format!("{kind}.{}", d.name),
                    format!(
                        "a table without `arch` ({}:{})",
                        config.path.display(),
                        d.line
                    ),
                    format!("a {kind} registered from Rust under the name `{}`", d.name),
                ));
            }
        }
        Ok(())
    };
    check(
        &config.classifiers,
        registry
            .classifiers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect(),
        "classifier",
    )?;
    check(
        &config.generators,
        registry
            .generators
            .iter()
            .map(|(n, _)| n.as_str())
            .collect(),
        "generator",
    )
}

/// A trial that ran to its verdict.
struct Ran {
    line: String,
    /// Empty when it passed.
    problems: Vec<String>,
    /// Warnings about the ascent.
    warnings: Vec<String>,
    artifact: PathBuf,
}

/// The `n` samples with the largest divergence after the search, largest
/// first (NaN last).
fn most_divergent(outcome: &SearchOutcome, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..outcome.samples.len()).collect();
    let key = |i: usize| {
        let d = outcome.samples[i].divergence_after;
        if d.is_nan() {
            f64::NEG_INFINITY
        } else {
            d
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Rows of before/after cells of `samples`, captioned with the divergence
/// and every model's top class and probability; red frames where the models'
/// top classes differ. `None` when the samples cannot be drawn as images.
fn pair_grid(
    outcome: &SearchOutcome,
    samples: &[usize],
    range: (f32, f32),
    conditions: Option<&[usize]>,
) -> Option<Grid> {
    let pick = |x: &Tensor| -> Option<Vec<crate::grid::Picture>> {
        let idx = Tensor::new(
            samples.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            x.device(),
        )
        .ok()?;
        pictures(&x.index_select(&idx, 0).ok()?, range).ok()
    };
    let before = pick(&outcome.x0)?;
    let after = pick(&outcome.x)?;
    let d = outcome.config.divergence.name();
    let caption = |i: usize, when: &str, div: f64, probs: &[Vec<f32>]| {
        let mut lines = vec![format!("#{i} {when} {d} {div:.2}")];
        if let Some(c) = conditions.and_then(|c| c.get(i)) {
            // The generator's class (named as the classifiers' when they
            // share the label set).
            let name = outcome
                .class_names
                .get(*c)
                .cloned()
                .unwrap_or_else(|| c.to_string());
            lines.push(format!("class {name}"));
        }
        for (name, p) in outcome.model_names.iter().zip(probs) {
            let (k, v) = top(p);
            lines.push(format!("{name} {} {v:.2}", outcome.class_names[k]));
        }
        let tops: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        (lines, tops.windows(2).any(|w| w[0] != w[1]))
    };
    let mut cells = Vec::with_capacity(2 * samples.len());
    for (j, &i) in samples.iter().enumerate() {
        let s = &outcome.samples[i];
        for (picture, (caption, differ)) in [
            (
                &before[j],
                caption(i, "x0", s.divergence_before, &s.probs_before),
            ),
            (
                &after[j],
                caption(i, "x", s.divergence_after, &s.probs_after),
            ),
        ] {
            cells.push(Cell {
                picture: picture.clone(),
                caption,
                highlight: differ,
            });
        }
    }
    Some(Grid { columns: 8, cells })
}

/// A row of example samples per region, largest regions first, captioned
/// with the condition and the ensemble's vote; red frames where the vote is
/// not the condition. `None` when there is no region or the samples cannot
/// be drawn as images.
fn regions_grid(
    mds: &MdsDataset,
    vote: &[Vec<f32>],
    regions: &[Vec<usize>],
    class_names: &[String],
    range: (f32, f32),
) -> Option<Grid> {
    let (rows, per_row) = GRID_REGIONS;
    let chosen: Vec<(usize, usize)> = regions
        .iter()
        .take(rows)
        .enumerate()
        .flat_map(|(r, members)| members.iter().take(per_row).map(move |&i| (r, i)))
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let idx = Tensor::new(
        chosen.iter().map(|&(_, i)| i as u32).collect::<Vec<_>>(),
        mds.x.device(),
    )
    .ok()?;
    let images = pictures(&mds.x.index_select(&idx, 0).ok()?, range).ok()?;
    let cells = chosen
        .iter()
        .zip(images)
        .map(|(&(r, i), picture)| {
            let (c, v) = (mds.labels[i], argmax(&vote[i]));
            Cell {
                picture,
                caption: vec![
                    format!("region {} #{i}", r + 1),
                    format!("cond {} vote {}", class_names[c], class_names[v]),
                ],
                highlight: c != v,
            }
        })
        .collect();
    Some(Grid {
        columns: per_row,
        cells,
    })
}
