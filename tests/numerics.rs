//! Silent wrong results made loud (issue 17): a NaN or an infinity anywhere
//! in a search is an error naming where it first appeared; the baseline is
//! drawn apart from z0; an ascent that went wrong is warned about.

use std::cell::Cell;

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use gevaldi::model::{sample_standard_normal, Classifier, Generator};
use gevaldi::search::{AscentWarning, NonFiniteSite, SearchStage};
use gevaldi::zoo::{self, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
use gevaldi::{Error, Optimizer, Search, SearchConfig, SearchOutcome};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const DEV: Device = Device::Cpu;

/// A tensor shaped like `like` that is `value` in row `row` (every row when
/// `None`) and 0 elsewhere.
fn row_mask(like: &Tensor, row: Option<usize>, value: f32) -> candle_core::Result<Tensor> {
    let b = like.dim(0)?;
    let per = like.elem_count() / b;
    let values: Vec<f32> = (0..b * per)
        .map(|i| {
            if row.is_none_or(|r| i / per == r) {
                value
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(values, like.shape(), like.device())
}

/// Adds `value` to row `row` (or every row) of `inner`'s decoded samples
/// from its `from`-th call on: a constant, so the gradient stays finite and
/// only the forward pass carries the NaN, as in a generator whose weights
/// went NaN.
struct BadGenerator<'a> {
    inner: &'a dyn Generator,
    row: Option<usize>,
    value: f32,
    from: usize,
    calls: Cell<usize>,
}

impl<'a> BadGenerator<'a> {
    fn new(inner: &'a dyn Generator, row: Option<usize>, value: f32, from: usize) -> Self {
        BadGenerator {
            inner,
            row,
            value,
            from,
            calls: Cell::new(0),
        }
    }
}

impl Generator for BadGenerator<'_> {
    fn latent_dim(&self) -> usize {
        self.inner.latent_dim()
    }
    fn decode(&self, z: &Tensor, c: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let x = self.inner.decode(z, c)?;
        let call = self.calls.get();
        self.calls.set(call + 1);
        if call < self.from {
            return Ok(x);
        }
        x.broadcast_add(&row_mask(&x, self.row, self.value)?)
    }
}

/// Adds `value` to class 0 of row `row` of `inner`'s logits from its
/// `from`-th call on.
struct BadClassifier<'a> {
    inner: &'a dyn Classifier,
    row: usize,
    value: f32,
    from: usize,
    calls: Cell<usize>,
}

impl Classifier for BadClassifier<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.inner.logits(x)?;
        let call = self.calls.get();
        self.calls.set(call + 1);
        if call < self.from {
            return Ok(logits);
        }
        let (b, k) = logits.dims2()?;
        let mut add = vec![0f32; b * k];
        add[self.row * k] = self.value;
        let add = Tensor::from_vec(add, (b, k), logits.device())?;
        logits + add
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

/// A plain generator, candle ops only: z [B, 2] -> x = sigmoid(z W^T) [B, 6].
struct PlainGenerator(Linear);

impl Generator for PlainGenerator {
    fn latent_dim(&self) -> usize {
        2
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> candle_core::Result<Tensor> {
        candle_nn::ops::sigmoid(&self.0.forward(z)?)
    }
}

/// A plain classifier, candle ops only: logits = relu(x W1^T) W2^T, 3 classes.
struct PlainClassifier(Linear, Linear, Vec<String>);

impl Classifier for PlainClassifier {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.1.forward(&self.0.forward(x)?.relu()?)
    }
    fn class_names(&self) -> &[String] {
        &self.2
    }
}

fn seeded(shape: (usize, usize), seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sample_standard_normal(shape, &mut rng, &DEV).unwrap()
}

fn plain_models() -> (PlainGenerator, PlainClassifier, PlainClassifier) {
    let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let clf = |seed| {
        PlainClassifier(
            Linear::new(seeded((5, 6), seed), None),
            Linear::new(seeded((3, 5), seed + 1), None),
            classes.clone(),
        )
    };
    (
        PlainGenerator(Linear::new(seeded((6, 2), 1), None)),
        clf(10),
        clf(20),
    )
}

/// The MNIST models with seeded random weights: on the CPU in f32, they run
/// on gevaldi's engine.
struct Mnist {
    vae: MnistVae,
    a: MnistCnn,
    b: MnistCnn,
}

fn mnist_random() -> Mnist {
    Mnist {
        vae: MnistVae::random(&MnistVaeConfig::default(), 3, &DEV).unwrap(),
        a: MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &DEV).unwrap(),
        b: MnistCnn::random(&MnistCnnConfig::cnn_b(), 2, &DEV).unwrap(),
    }
}

fn run(
    generator: &dyn Generator,
    a: &dyn Classifier,
    b: &dyn Classifier,
    config: SearchConfig,
) -> gevaldi::Result<SearchOutcome> {
    Search::new("gen", generator)
        .classifier("a", a)
        .classifier("b", b)
        .config(config)
        .run(&DEV)
}

/// The site, stage, sample and value of a non-finite error.
fn non_finite(result: gevaldi::Result<SearchOutcome>) -> (NonFiniteSite, SearchStage, usize, f64) {
    match result {
        Err(Error::NonFinite {
            site,
            stage,
            sample,
            value,
        }) => (site, stage, sample, value),
        Err(other) => panic!("expected a non-finite error, got: {other}"),
        Ok(out) => panic!(
            "expected a non-finite error, the search passed with lift {}",
            out.lift()
        ),
    }
}

fn config() -> SearchConfig {
    SearchConfig::default().steps(6).batch(5)
}

#[test]
fn a_generator_emitting_nan_is_named_through_frozen_nets() {
    let m = mnist_random();
    // The CNNs used to turn a NaN image into class 0 with p = 1, and the
    // search passed.
    for (row, from, sample, step) in [(None, 0, 0, 0), (Some(3), 0, 3, 0), (Some(2), 4, 2, 4)] {
        let gen = BadGenerator::new(&m.vae, row, f32::NAN, from);
        let (site, stage, s, value) = non_finite(run(&gen, &m.a, &m.b, config()));
        assert_eq!(site, NonFiniteSite::GeneratorOutput("gen".into()));
        assert_eq!((stage, s), (SearchStage::Step(step), sample), "{row:?}");
        assert!(value.is_nan());
    }
    let msg = run(
        &BadGenerator::new(&m.vae, Some(3), f32::NAN, 0),
        &m.a,
        &m.b,
        config(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("the output of generator `gen` is NaN at step 0 for sample 3"),
        "{msg}"
    );
}

#[test]
fn a_generator_emitting_nan_is_named_through_plain_models() {
    let (g, a, b) = plain_models();
    run(&g, &a, &b, config()).expect("the clean models search");
    for (row, sample) in [(None, 0), (Some(4), 4)] {
        let gen = BadGenerator::new(&g, row, -f32::NAN, 0);
        let (site, stage, s, _) = non_finite(run(&gen, &a, &b, config()));
        assert_eq!(site, NonFiniteSite::GeneratorOutput("gen".into()));
        assert_eq!((stage, s), (SearchStage::Step(0), sample));
    }
}

#[test]
fn a_classifier_emitting_inf_is_named() {
    let m = mnist_random();
    let (g, pa, pb) = plain_models();
    let cases: [(&dyn Generator, &dyn Classifier, &dyn Classifier); 2] =
        [(&m.vae, &m.a, &m.b), (&g, &pa, &pb)];
    for (gen, a, b) in cases {
        for value in [f32::INFINITY, f32::NEG_INFINITY] {
            let bad = BadClassifier {
                inner: b,
                row: 1,
                value,
                from: 3,
                calls: Cell::new(0),
            };
            let (site, stage, sample, v) = non_finite(run(gen, a, &bad, config()));
            assert_eq!(site, NonFiniteSite::Logits("b".into()));
            assert_eq!((stage, sample, v), (SearchStage::Step(3), 1, value as f64));
        }
    }
}

#[test]
fn a_nan_in_the_baseline_is_named() {
    let m = mnist_random();
    // 6 steps decode 7 times; the 8th decode is the baseline's.
    let gen = BadGenerator::new(&m.vae, Some(1), f32::NAN, 7);
    let (site, stage, sample, _) = non_finite(run(&gen, &m.a, &m.b, config()));
    assert_eq!(site, NonFiniteSite::GeneratorOutput("gen".into()));
    assert_eq!((stage, sample), (SearchStage::Baseline, 1));
    let gen = BadGenerator::new(&m.vae, Some(1), f32::NAN, 7);
    let err = run(&gen, &m.a, &m.b, config()).unwrap_err().to_string();
    assert!(err.contains("in the null baseline for sample 1"), "{err}");
}

/// Finite forward, infinite backward: sqrt(u) at u = 0.
struct InfiniteGradient<'a>(&'a dyn Generator);

impl Generator for InfiniteGradient<'_> {
    fn latent_dim(&self) -> usize {
        self.0.latent_dim()
    }
    fn decode(&self, z: &Tensor, c: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let x = self.0.decode(z, c)?;
        let zero = (z - z.detach())?.sqrt()?.sum_keepdim(1)?;
        let shape: Vec<usize> = std::iter::once(x.dim(0)?)
            .chain(std::iter::repeat_n(1, x.rank() - 1))
            .collect();
        x.broadcast_add(&zero.reshape(shape)?)
    }
}

#[test]
fn an_infinite_gradient_and_an_overflowing_update_are_named() {
    let (g, a, b) = plain_models();
    let (site, stage, _, _) = non_finite(run(&InfiniteGradient(&g), &a, &b, config()));
    assert_eq!(
        (site, stage),
        (NonFiniteSite::Gradient, SearchStage::Step(0))
    );
    // A finite lr whose f32 product overflows moves z to infinity.
    let sgd = config().optimizer(Optimizer::Sgd).lr(1e300);
    let (site, stage, _, _) = non_finite(run(&g, &a, &b, sgd));
    assert_eq!((site, stage), (NonFiniteSite::Latent, SearchStage::Step(1)));
}

#[test]
fn the_baseline_is_not_z0_given_or_not() {
    let m = mnist_random();
    let cfg = SearchConfig::default().steps(3).batch(6).seed(5);
    let plain = run(&m.vae, &m.a, &m.b, cfg.clone()).unwrap();
    // z0 drawn as the search draws it: the bench does this.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let z0 = m.vae.sample_prior(6, &mut rng, &DEV).unwrap();
    let given = Search::new("gen", &m.vae)
        .classifier("a", &m.a)
        .classifier("b", &m.b)
        .config(cfg.clone())
        .z0(z0)
        .run(&DEV)
        .unwrap();
    assert_eq!(plain.samples, given.samples);
    // The same baseline with or without z0, and not the starting batch
    // (it was, with z0 given).
    assert_eq!(plain.baseline, given.baseline);
    for out in [&plain, &given] {
        let before: Vec<f64> = out.samples.iter().map(|s| s.divergence_before).collect();
        assert!(before
            .iter()
            .zip(&out.baseline.divergences)
            .all(|(a, b)| a != b));
    }
    // Deterministic without z0, and seeded.
    let again = run(&m.vae, &m.a, &m.b, cfg.clone()).unwrap();
    assert_eq!(
        (&again.samples, &again.baseline),
        (&plain.samples, &plain.baseline)
    );
    let other = run(&m.vae, &m.a, &m.b, cfg.seed(6)).unwrap();
    assert_ne!(other.baseline, plain.baseline);
}

fn mnist_fixtures() -> Mnist {
    let dir = zoo::mnist_fixtures_dir();
    let cnn = |name: &str, cfg: MnistCnnConfig| {
        zoo::load_file(dir.join(format!("{name}.safetensors")), name, &DEV, |vb| {
            MnistCnn::load(vb, &cfg)
        })
        .unwrap()
    };
    Mnist {
        vae: zoo::load_file(dir.join("vae.safetensors"), "vae", &DEV, |vb| {
            MnistVae::load(vb, &MnistVaeConfig::default())
        })
        .unwrap(),
        a: cnn("cnn_a", MnistCnnConfig::cnn_a()),
        b: cnn("cnn_b", MnistCnnConfig::cnn_b()),
    }
}

#[test]
fn a_runaway_ascent_is_warned_about_and_a_sound_one_is_not() {
    let m = mnist_fixtures();
    let sound = run(&m.vae, &m.a, &m.b, SearchConfig::default()).unwrap();
    println!(
        "lr 0.05: lift {:.2}, mean dz {:.3}, warnings {:?}",
        sound.lift(),
        sound.mean_dz(),
        sound.warnings()
    );
    assert_eq!(sound.warnings(), []);

    let wild = run(&m.vae, &m.a, &m.b, SearchConfig::default().lr(1e9)).unwrap();
    let warnings = wild.warnings();
    println!(
        "lr 1e9: lift {:.2}, mean dz {:.3}, warnings {warnings:?}",
        wild.lift(),
        wild.mean_dz()
    );
    assert!(
        matches!(warnings[..], [AscentWarning::ObjectiveFell { start, end }, AscentWarning::RanAway { samples, batch: 64, .. }] if end < start && samples >= 32),
        "{warnings:?}"
    );
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(text.iter().all(|t| t.contains("lower `lr`")), "{text:?}");
}

#[test]
fn sound_searches_on_plain_models_have_no_warnings() {
    let (g, a, b) = plain_models();
    for steps in [0, 20] {
        let out = run(&g, &a, &b, SearchConfig::default().steps(steps).batch(8)).unwrap();
        assert_eq!(out.warnings(), [], "{steps} steps");
    }
}

/// Regression: with `sgd` and `lr = 1e30` the first update moved z to
/// about 1e30, finite in f32, and log p(z) = −‖z‖² / 2 overflowed to −inf:
/// the error said "log p(z) of generator `gen` is -inf at step 1 … check
/// the generator's `log_prior`". The update blew z up, so it names `lr`.
#[test]
fn a_step_that_blows_z_up_names_lr_not_the_site() {
    let (g, a, b) = plain_models();
    let sgd = config().optimizer(Optimizer::Sgd).lr(1e30);
    let err = run(&g, &a, &b, sgd).unwrap_err();
    match &err {
        Error::StepBlewUp {
            site,
            stage,
            before,
            after,
            lr,
            optimizer,
            ..
        } => {
            assert_eq!(*optimizer, gevaldi::config::OptimizerKind::Sgd);
            assert_eq!(
                (site, *stage),
                (&NonFiniteSite::LogPrior("gen".into()), SearchStage::Step(1))
            );
            assert!(*before < 10.0 && *after > 1e19, "{err}");
            assert_eq!(*lr, 1e30);
        }
        other => panic!("expected StepBlewUp, got {other}"),
    }
    let m = err.to_string();
    assert!(
        m.contains("log p(z) of generator `gen` is -inf at step 1 for sample "),
        "{m}"
    );
    assert!(
        m.ends_with("the step size is the likely cause (`lr` = 1e30, optimizer sgd); lower `lr`"),
        "{m}"
    );
    assert!(!m.contains("log_prior"), "{m}");
    // A small step that meets a NaN is still named at its site.
    let m = mnist_random();
    let bad = BadGenerator::new(&m.vae, Some(1), f32::NAN, 3);
    let (site, stage, sample, _) = non_finite(run(&bad, &m.a, &m.b, config()));
    assert_eq!(
        (site, stage, sample),
        (
            NonFiniteSite::GeneratorOutput("gen".into()),
            SearchStage::Step(3),
            1
        )
    );
}
