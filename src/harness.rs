//! The cargo test harness: one libtest-mimic trial per `[[pair]]` of a
//! `gevaldi.toml`, named `pair::<name>`.
//!
//! `gevaldi::main!` expands to a `main` that calls [`run`]; see the crate
//! docs. Listing (`--list`) loads no model; each trial loads only its own
//! models when it runs, so `--exact pair::x` (one nextest process per test)
//! builds only that trial's models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::Device;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::artifact::{target_dir, Artifact};
use crate::config::{self, Config, EnsembleDecl, ModelDecl, PairDecl};
use crate::data::{Mnist, Split};
use crate::ensemble::{mean_probs, MdsDataset, Metrics};
use crate::error::{Error, Result};
use crate::hierarchy::{Hierarchy, SetDistance};
use crate::model::{Classifier, Generator};
use crate::pca::Pca;
use crate::preprocess::{Channels, Preprocess, Preprocessed};
use crate::regions::find_regions;
use crate::search::Search;
use crate::snapshot::Summary;
use crate::snapshot::{EnsembleSummary, RegionsSummary, Settings};
use crate::verdict::Verdict;
use crate::zoo::{self, Arch};

/// Builds a model registered from Rust when a trial needs it.
type Factory<T> = Box<dyn Fn(&Device) -> Result<Box<T>> + Send + Sync>;

/// Models registered from Rust under the names a `gevaldi.toml` uses for
/// tables without `arch`.
#[derive(Default)]
pub struct Registry {
    classifiers: Vec<(String, Factory<dyn Classifier>)>,
    generators: Vec<(String, Factory<dyn Generator>)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the classifier `name`, built by `build` when a trial needs it.
    pub fn classifier<C: Classifier + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<C> + Send + Sync + 'static,
    ) -> &mut Self {
        let factory: Factory<dyn Classifier> =
            Box::new(move |d| build(d).map(|c| Box::new(c) as Box<dyn Classifier>));
        self.classifiers.push((name.to_string(), factory));
        self
    }

    /// Registers the generator `name`, built by `build` when a trial needs it.
    pub fn generator<G: Generator + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<G> + Send + Sync + 'static,
    ) -> &mut Self {
        let factory: Factory<dyn Generator> =
            Box::new(move |d| build(d).map(|g| Box::new(g) as Box<dyn Generator>));
        self.generators.push((name.to_string(), factory));
        self
    }
}

struct Harness {
    config: Config,
    dir: PathBuf,
    registry: Registry,
    device: Device,
    /// The `[hierarchy]` of the config, loaded by the first trial that needs
    /// it and shared by the others.
    hierarchy: OnceLock<std::result::Result<Arc<Hierarchy>, String>>,
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

/// Runs the trials of the config at `config_path` with libtest's command
/// line, and returns the process's exit code (101 when a trial failed).
pub fn run(config_path: &str, registry: Registry) -> ExitCode {
    run_with_args(config_path, registry, Arguments::from_args())
}

/// [`run`] with the given libtest arguments instead of the process's.
pub fn run_with_args(config_path: &str, registry: Registry, mut args: Arguments) -> ExitCode {
    let path = PathBuf::from(config_path);
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
    if let Err(e) = check_registry(&config, &registry) {
        eprintln!("error: {e}");
        return ExitCode::from(101);
    }
    let device = match device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
    // One trial at a time unless asked otherwise (--test-threads, or
    // RUST_TEST_THREADS): a GPU runs one search at a time, and on the CPU
    // candle already spreads every op over all cores, so parallel trials only
    // oversubscribe them.
    if args.test_threads.is_none() {
        let from_env = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok());
        args.test_threads = Some(from_env.unwrap_or(1));
    }
    if cfg!(debug_assertions) && !args.list {
        eprintln!(
            "warning: this gevaldi harness was built without optimisations; candle is ~15x \
             slower so. Add to Cargo.toml:\n\n[profile.dev.package.\"*\"]\nopt-level = 3\n\n\
             [profile.test.package.\"*\"]\nopt-level = 3\n\nor run with --release.\n"
        );
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let harness = Arc::new(Harness {
        config,
        dir,
        registry,
        device,
        hierarchy: OnceLock::new(),
    });
    let summaries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let trials = harness
        .config
        .pairs
        .iter()
        .map(|pair| {
            let h = Arc::clone(&harness);
            let name = pair.name.clone();
            let summaries = Arc::clone(&summaries);
            Trial::test(format!("pair::{}", pair.name), move || {
                let line = h.run_pair(&name)?;
                summaries.lock().expect("summaries").push(line);
                Ok(())
            })
            .with_ignored_flag(pair.ignore)
        })
        .collect::<Vec<_>>();
    let trials = trials
        .into_iter()
        .chain(harness.config.ensembles.iter().map(|e| {
            let h = Arc::clone(&harness);
            let name = e.name.clone();
            let summaries = Arc::clone(&summaries);
            Trial::test(format!("ensemble::{}", e.name), move || {
                let line = h.run_ensemble(&name)?;
                summaries.lock().expect("summaries").push(line);
                Ok(())
            })
            .with_ignored_flag(e.ignore)
        }))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Printed after libtest's lines rather than between "test x ..." and "ok".
    for line in summaries.lock().expect("summaries").iter() {
        println!("{line}");
    }
    conclusion.exit_code()
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

impl Harness {
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
        self.load(name, decl, &self.registry.classifiers, Arch::classifier)
    }

    fn generator(&self, name: &str) -> Result<Box<dyn Generator>> {
        let decl = self.config.generator(name).expect("validated config");
        self.load(name, decl, &self.registry.generators, Arch::generator)
    }

    /// A declared model: its built-in architecture loaded from its weights
    /// file, or the builder registered from Rust under its name.
    fn load<T: ?Sized>(
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
            None => {
                let (_, factory) = registered
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("checked registry");
                factory(&self.device)
            }
        }
    }

    /// Runs one ensemble; its one-line summary when it passed.
    fn run_ensemble(&self, name: &str) -> std::result::Result<String, Failed> {
        let decl = self
            .config
            .ensemble(name)
            .expect("trial of a declared ensemble");
        self.try_ensemble(decl).map_err(Failed::from)
    }

    fn try_ensemble(&self, e: &EnsembleDecl) -> std::result::Result<String, String> {
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
        let on_test = Metrics::of(&mean_probs(&member_probs), &labels);
        let named: Vec<(&str, &dyn Classifier)> = e
            .members
            .iter()
            .zip(&members)
            .map(|(n, m)| (n.as_str(), m.as_ref()))
            .collect();
        let mds = MdsDataset::search(
            &named,
            generator.as_ref(),
            e.samples,
            &search_config,
            &self.device,
        )
        .map_err(fail)?;
        let on_mds = Metrics::of(&mds.vote(), &mds.labels);
        let regions = find_regions(&mds, e.min_samples, None);
        let failures =
            crate::verdict::ensemble_failures(e, &on_test, &on_mds, regions.regions.len());
        let class_names = members[0].class_names().to_vec();
        let summary = EnsembleSummary {
            ensemble: e.name.clone(),
            members: e.members.clone(),
            generator: e.generator.clone(),
            settings: Settings::of(&search_config),
            samples: e.samples,
            test: (&on_test).into(),
            mds: (&on_mds).into(),
            regions: RegionsSummary::new(&regions, &class_names),
        };
        let artifacts = self
            .artifact_path(&format!("ensemble-{}", e.name))
            .with_extension("");
        mds.export(&artifacts, "mds").map_err(fail)?;
        let json = serde_json::json!({
            "ensemble": &summary,
            "passed": failures.is_empty(),
            "failures": &failures,
            "labels": &mds.labels,
            "z": &mds.z,
            "divergence": &mds.divergence,
            "member_probs": &mds.member_probs,
            "regions": regions.regions.iter().map(|r| &r.members).collect::<Vec<_>>(),
        });
        let pca = self
            .latent_pictures(e, generator.as_ref(), &mds)
            .map_err(fail)?;
        let mut json = json;
        json["pca"] = pca;
        let path = artifacts.join("ensemble.json");
        std::fs::write(&path, json.to_string()).map_err(|source| {
            fail(Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })
        })?;
        let snapshot = summary.assert_snapshot(&e.name, &self.dir, &self.config.path);
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
        let mut problems = failures;
        if let Err(s) = snapshot {
            problems.push(s);
        }
        if problems.is_empty() {
            Ok(line)
        } else {
            Err(format!(
                "{line}\n{}\nartifacts: {}",
                problems.join("\n"),
                artifacts.display()
            ))
        }
    }

    /// The training data's latents (encoder means, when the generator has an
    /// encoder and `test_data` holds a training split too) and the MDS
    /// latents on the top two principal axes of the training latents (paper
    /// fig. 5); `null` otherwise.
    fn latent_pictures(
        &self,
        e: &EnsembleDecl,
        generator: &dyn Generator,
        mds: &MdsDataset,
    ) -> Result<serde_json::Value> {
        let Ok(train) = Mnist::load(&e.test_data, Split::Train) else {
            return Ok(serde_json::Value::Null);
        };
        let classes = generator.num_conditions().unwrap_or(0);
        let labels: Vec<usize> = train.labels.iter().map(|&l| l as usize).collect();
        let x = train.images_tensor(None, &self.device)?;
        let c = crate::model::one_hot(&labels, classes, &self.device)?;
        let Some(means) = generator.encode(&x, Some(&c)) else {
            return Ok(serde_json::Value::Null);
        };
        let means = means
            .and_then(|m| m.to_vec2::<f32>())
            .map_err(Error::model(&e.generator, "encode the training data"))?;
        let pca = Pca::fit(&means, 2);
        Ok(serde_json::json!({
            "axes": &pca,
            "train": pca.project(&means),
            "train_labels": labels,
            "mds": pca.project(&mds.z),
        }))
    }

    /// Runs one pair; its one-line summary when it passed.
    fn run_pair(&self, name: &str) -> std::result::Result<String, Failed> {
        let pair = self.config.pair(name).expect("trial of a declared pair");
        self.try_pair(pair).map_err(Failed::from)
    }

    fn try_pair(&self, pair: &PairDecl) -> std::result::Result<String, String> {
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
        if generator.num_conditions().is_some() {
            return Err(fail(Error::setting(
                format!("pair[{}].generator", pair.name),
                &pair.generator,
                "an unconditional generator: class-conditional pairs are not supported yet",
            )));
        }
        let hierarchy = self.hierarchy(&pair.models, &classifiers).map_err(|e| {
            format!(
                "pair `{}` ({}:{}): {e}",
                pair.name,
                self.config.path.display(),
                pair.line
            )
        })?;
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
        let mut search = Search::new(&pair.generator, generator.as_ref()).config(search_config);
        for (m, c) in pair.models.iter().zip(&classifiers) {
            search = search.classifier(m, c.as_ref());
        }
        for m in &measures {
            search = search.measure(m);
        }
        let outcome = search.run(&self.device).map_err(fail)?;
        let verdict = Verdict::check(&outcome, &pair.thresholds);
        let summary = Summary::new(&pair.name, &pair.generator, &outcome, &pair.thresholds);

        let artifact_path = self.artifact_path(&pair.name);
        let artifact = Artifact {
            pair: &pair.name,
            config: &self.config.path,
            generator: &pair.generator,
            models: &outcome.model_names,
            class_names: &outcome.class_names,
            measure_names: &outcome.measure_names,
            settings: &summary.settings,
            passed: verdict.passed(),
            failures: &verdict.failures,
            steps_run: outcome.steps_run,
            lift: verdict.lift,
            trajectory: &outcome.trajectory,
            baseline: &outcome.baseline,
            samples: &outcome.samples,
        };
        artifact.write(&artifact_path).map_err(fail)?;
        let snapshot = summary.assert_snapshot(&pair.name, &self.dir, &self.config.path);

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
        if let Err(s) = snapshot {
            problems.push(s);
        }
        if problems.is_empty() {
            Ok(line)
        } else {
            Err(format!(
                "{line}\n{}\nartifact: {}",
                problems.join("\n"),
                artifact_path.display()
            ))
        }
    }

    /// The config's hierarchy (loaded once), or the flat hierarchy over the
    /// first classifier's classes; checked against every classifier's
    /// number of classes.
    fn hierarchy(
        &self,
        names: &[String],
        classifiers: &[Box<dyn Classifier>],
    ) -> std::result::Result<Arc<Hierarchy>, String> {
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
        for (name, c) in names.iter().zip(classifiers) {
            if c.num_classes() != hierarchy.len() {
                let file = match &self.config.hierarchy {
                    Some(d) => format!("the hierarchy `{}`", d.classes.display()),
                    None => "the flat hierarchy".into(),
                };
                return Err(format!(
                    "{file} has {} classes but classifier `{name}` has {}: the label sets must match",
                    hierarchy.len(),
                    c.num_classes()
                ));
            }
        }
        Ok(hierarchy)
    }

    fn artifact_path(&self, pair: &str) -> PathBuf {
        let name = |p: Option<&std::ffi::OsStr>| {
            p.map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "suite".into())
        };
        let suite = name(self.dir.file_name());
        let stem = name(self.config.path.file_stem());
        target_dir()
            .join("gevaldi")
            .join(suite)
            .join(stem)
            .join(format!("{pair}.json"))
    }
}
