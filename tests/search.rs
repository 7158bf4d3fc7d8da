//! The MDS search on small built-in models with seeded random weights, on
//! the device of `GEVALDI_DEVICE` (tests/common).

mod common;

use std::cell::Cell;
use std::hash::{Hash, Hasher};

use candle_core::Tensor;
use gevaldi::model::{one_hot, Classifier, Generator};
use gevaldi::search::{EarlyStop, NonFiniteSite, SearchStage};
use gevaldi::zoo::{MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
use gevaldi::{Divergence, Error, Optimizer, Search, SearchConfig, SearchOutcome};

struct Models {
    a: MnistCnn,
    b: MnistCnn,
    vae: MnistVae,
}

fn models() -> Models {
    let dev = common::device();
    Models {
        a: MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &dev).unwrap(),
        b: MnistCnn::random(&MnistCnnConfig::cnn_b(), 2, &dev).unwrap(),
        vae: MnistVae::random(&MnistVaeConfig::default(), 3, &dev).unwrap(),
    }
}

fn search<'a>(m: &'a Models, config: SearchConfig) -> Search<'a> {
    Search::new("vae", &m.vae)
        .classifier("cnn_a", &m.a)
        .classifier("cnn_b", &m.b)
        .config(config)
}

fn run(m: &Models, config: SearchConfig) -> SearchOutcome {
    search(m, config)
        .run(&common::device())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// KL(p || q) of two probability vectors, in f64.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&p, &q)| p as f64 * ((p as f64).ln() - (q as f64).ln()))
        .sum()
}

/// ‖z − z0‖ / ‖z‖, in f64.
fn dz(z: &[f32], z0: &[f32]) -> f64 {
    let diff: f64 = z
        .iter()
        .zip(z0)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = z.iter().map(|a| (*a as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

#[test]
fn adam_raises_the_divergence_above_its_start_and_the_baseline() {
    let m = models();
    // Random-weight models are nearly uniform (KL ~ 1e-4), so any prior
    // weight would dominate: search the divergence alone.
    let out = run(
        &m,
        SearchConfig::default()
            .steps(60)
            .batch(16)
            .lr(0.1)
            .lambda(0.0),
    );
    let (before, after) = (out.mean_divergence_before(), out.mean_divergence_after());
    println!(
        "kl before {before:.4e}, after {after:.4e}, baseline {:.4e}, lift {:.1}, dz {:.3}",
        out.baseline.mean,
        out.lift(),
        out.mean_dz()
    );
    assert!(after > before, "{after} <= {before}");
    assert!(
        after > out.baseline.mean,
        "{after} <= {}",
        out.baseline.mean
    );
    assert!(out.lift() > 1.0);
    assert!(out.mean_dz() > 0.0);
    assert!(out.samples.iter().all(|s| s.dz > 0.0));

    // The records are consistent with each other.
    assert_eq!(out.steps_run, 60);
    assert!(!out.stopped_early);
    assert_eq!(out.trajectory.len(), 61);
    assert_eq!(out.samples.len(), 16);
    assert_eq!(out.baseline.divergences.len(), 16);
    assert_eq!(out.model_names, ["cnn_a", "cnn_b"]);
    // Each sample's divergences are KL(cnn_a || cnn_b) of the probabilities
    // recorded with it, before and after; the trajectory's first and last
    // means are those of the samples; its last mean dz is that of the
    // recorded z and z0. All recomputed here from the records.
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 * y.abs() + 1e-9;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let kl_before: Vec<f64> = out
        .samples
        .iter()
        .map(|s| {
            let p = s.probs_before();
            kl(&p[0], &p[1])
        })
        .collect();
    let kl_after: Vec<f64> = out
        .samples
        .iter()
        .map(|s| {
            let p = s.probs_after();
            kl(&p[0], &p[1])
        })
        .collect();
    for ((s, b), a) in out.samples.iter().zip(&kl_before).zip(&kl_after) {
        assert!(
            close(s.divergence_before, *b),
            "{} vs {b}",
            s.divergence_before
        );
        assert!(
            close(s.divergence_after, *a),
            "{} vs {a}",
            s.divergence_after
        );
    }
    let t0 = &out.trajectory[0];
    assert!(close(t0.mean_divergence, mean(&kl_before)), "{t0:?}");
    assert!(close(before, mean(&kl_before)), "{before}");
    assert_eq!(t0.mean_dz, 0.0);
    let last = out.trajectory.last().unwrap();
    assert!(close(last.mean_divergence, mean(&kl_after)), "{last:?}");
    assert!(close(after, mean(&kl_after)), "{after}");
    let dzs: Vec<f64> = out.samples.iter().map(|s| dz(&s.z, &s.z0)).collect();
    assert!(close(last.mean_dz, mean(&dzs)), "{last:?} vs {dzs:?}");
    for s in &out.samples {
        assert_eq!(s.z0.len(), 8);
        assert_eq!(s.log_probs_before.len(), 2);
        for p in s.probs_before().iter().chain(&s.probs_after()) {
            assert_eq!(p.len(), 10);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
        assert!((s.dz - dz(&s.z, &s.z0)).abs() < 1e-5);
    }
    assert_eq!(out.x0.dims(), [16, 1, 28, 28]);
    assert_eq!(out.x.dims(), [16, 1, 28, 28]);
}

#[test]
fn sgd_ascends_too_and_every_divergence_runs() {
    let m = models();
    for d in gevaldi::config::DivergenceKind::ALL
        .iter()
        .map(|d| d.name())
    {
        let d: Divergence = d.parse().unwrap();
        let out = run(
            &m,
            SearchConfig::default()
                .steps(30)
                .batch(8)
                .lambda(0.0)
                .optimizer(Optimizer::Sgd)
                .lr(50.0)
                .divergence(d.clone()),
        );
        let (before, after) = (out.mean_divergence_before(), out.mean_divergence_after());
        assert!(after > before, "{d}: {after} <= {before}");
    }
}

#[test]
fn js_compares_three_models_and_kl_refuses_them() {
    let m = models();
    let c = MnistCnn::random(&MnistCnnConfig::cnn_a(), 9, &common::device()).unwrap();
    let three = |d| {
        let cfg = SearchConfig::default().steps(10).batch(4).lambda(0.0);
        search(&m, cfg.divergence(d))
            .classifier("cnn_c", &c)
            .run(&common::device())
    };
    let out = three(Divergence::js()).unwrap();
    assert!(out.mean_divergence_after() > out.mean_divergence_before());
    assert!(out.mean_divergence_after() <= 3f64.ln());
    let err = three(Divergence::Kl).unwrap_err();
    assert!(
        matches!(err, Error::DivergenceArity { got: 3, .. }),
        "{err}"
    );
}

/// The objective is per sample: the samples of a batch of 8 follow the same
/// path as the same samples searched in a batch of 4.
#[test]
fn lambda_and_lr_mean_the_same_at_any_batch_size() {
    let m = models();
    let cfg = SearchConfig::default().steps(20).lambda(0.5);
    let big = run(&m, cfg.clone().batch(8));
    let z0: Vec<f32> = big.samples[..4].iter().flat_map(|s| s.z0.clone()).collect();
    let small = search(&m, cfg)
        .z0(Tensor::from_vec(z0, (4, 8), &common::device()).unwrap())
        .run(&common::device())
        .unwrap();
    for (s, b) in small.samples.iter().zip(&big.samples) {
        for (x, y) in s.z.iter().zip(&b.z) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

#[test]
fn the_prior_term_pulls_towards_the_origin() {
    let m = models();
    let norm = |o: &SearchOutcome| {
        o.samples
            .iter()
            .map(|s| s.z.iter().map(|v| v * v).sum::<f32>())
            .sum::<f32>()
    };
    let free = run(&m, SearchConfig::default().steps(40).batch(8).lambda(0.0));
    let held = run(&m, SearchConfig::default().steps(40).batch(8).lambda(10.0));
    assert!(
        norm(&held) < norm(&free),
        "{} vs {}",
        norm(&held),
        norm(&free)
    );
}

#[test]
fn early_stop_ends_a_stalled_search() {
    let m = models();
    let stop = EarlyStop {
        window: 5,
        tolerance: 1e9,
    };
    let out = run(
        &m,
        SearchConfig::default()
            .steps(100)
            .batch(4)
            .early_stop(Some(stop)),
    );
    assert!(out.stopped_early);
    assert_eq!(out.steps_run, 5);
    assert_eq!(out.trajectory.len(), 6);
}

/// A classifier that emits NaN from its `nan_from`-th call on.
struct NanAfter<'a> {
    inner: &'a MnistCnn,
    calls: Cell<usize>,
    nan_from: usize,
}

impl Classifier for NanAfter<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let logits = self.inner.logits(x)?;
        if n >= self.nan_from {
            logits.affine(f64::NAN, 0.0)
        } else {
            Ok(logits)
        }
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

#[test]
fn a_nan_is_an_error_naming_the_step() {
    let m = models();
    for nan_from in [0, 7] {
        let nan = NanAfter {
            inner: &m.b,
            calls: Cell::new(0),
            nan_from,
        };
        let err = Search::new("vae", &m.vae)
            .classifier("cnn_a", &m.a)
            .classifier("nan", &nan)
            .config(SearchConfig::default().steps(20).batch(4))
            .run(&common::device())
            .unwrap_err();
        match err {
            Error::NonFinite {
                site,
                stage,
                sample,
                ..
            } => {
                assert_eq!(stage, SearchStage::Step(nan_from));
                assert_eq!(site, NonFiniteSite::Logits("nan".into()));
                assert_eq!(sample, 0);
            }
            other => panic!("expected a non-finite error, got {other}"),
        }
    }
}

/// cnn_b's logits plus 1e-6 · sqrt(relu(mean pixel − 2)): finite at every
/// image, but the slope of sqrt is infinite at 0, so backpropagation gives
/// NaN wherever the ReLU is off (every decoded image, in [0, 1]).
struct NormAtZero<'a> {
    inner: &'a MnistCnn,
}

impl Classifier for NormAtZero<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.flatten_from(1)?.mean_keepdim(1)?;
        let kink = ((mean - 2.0)?.relu()?.sqrt()? * 1e-6)?;
        self.inner.logits(x)?.broadcast_add(&kink)
    }

    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

/// Regression: a gradient that is NaN at z0, where everything up to the
/// objective is finite, was met with "a backward pass overflowed or
/// emitted NaN: lower `lr`", though no step had been taken.
#[test]
fn a_nan_gradient_at_a_finite_objective_is_put_down_to_an_op_s_derivative() {
    let m = models();
    let norm = NormAtZero { inner: &m.b };
    let err = Search::new("vae", &m.vae)
        .classifier("cnn_a", &m.a)
        .classifier("norm", &norm)
        .config(SearchConfig::default().steps(5).batch(4))
        .run(&common::device())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NonFinite {
                site: NonFiniteSite::Gradient,
                stage: SearchStage::Step(0),
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("an op whose derivative is infinite or undefined at this sample")
            && message.contains("sqrt or a norm at 0"),
        "{message}"
    );
}

#[test]
fn settings_out_of_range_are_named() {
    let m = models();
    let cases = [
        (SearchConfig::default().lr(0.0), "lr"),
        (SearchConfig::default().lr(f64::NAN), "lr"),
        (SearchConfig::default().lambda(-1.0), "lambda"),
        (SearchConfig::default().batch(0), "batch"),
        (
            SearchConfig::default().early_stop(Some(EarlyStop {
                window: 0,
                tolerance: 0.0,
            })),
            "early_stop.window",
        ),
        // Regression: a window of at least `steps` never stopped anything,
        // and was accepted.
        (
            SearchConfig::default()
                .steps(20)
                .early_stop(Some(EarlyStop {
                    window: 20,
                    tolerance: 0.0,
                })),
            "early_stop.window",
        ),
    ];
    for (cfg, key) in cases {
        match search(&m, cfg).run(&common::device()).unwrap_err() {
            Error::Setting { key: k, .. } => assert_eq!(k, key),
            other => panic!("expected a setting error for {key}, got {other}"),
        }
    }
    let err = search(&m, SearchConfig::default())
        .z0(Tensor::zeros((2, 5), candle_core::DType::F32, &common::device()).unwrap())
        .run(&common::device())
        .unwrap_err();
    // Regression (found by the audit): the caller's z0 was blamed on the
    // generator, "model `vae` produced z0 of shape [2, 5]".
    assert!(
        matches!(&err, Error::Setting { key, .. } if key == "z0"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("`z0` = a tensor of shape [2, 5]: expected [B, 8] for generator"),
        "{err}"
    );
    // Regression (found by the audit): an empty z0 failed inside the
    // search's backward, "head_backward: inputs [[0], [0], [2]] do not fit".
    let err = search(&m, SearchConfig::default())
        .z0(Tensor::zeros((0, 8), candle_core::DType::F32, &common::device()).unwrap())
        .run(&common::device())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`z0` = a tensor of shape [0, 8]: expected at least one latent"),
        "{err}"
    );
}

#[test]
fn a_conditional_generator_needs_its_condition() {
    let m = models();
    let dev = common::device();
    let cvae = MnistVae::random(&MnistVaeConfig::conditional(), 4, &dev).unwrap();
    let cfg = SearchConfig::default().steps(10).batch(4).lambda(0.0);
    let base = || {
        Search::new("cvae", &cvae)
            .classifier("cnn_a", &m.a)
            .classifier("cnn_b", &m.b)
            .config(cfg.clone())
    };
    let err = base().run(&dev).unwrap_err();
    assert!(err.to_string().contains("class-conditional"), "{err}");
    let c = one_hot(&[1, 2, 3, 4], 10, &dev).unwrap();
    let out = base().condition(c).run(&dev).unwrap();
    assert!(out.mean_divergence_after() > out.mean_divergence_before());
    assert_eq!(cvae.num_conditions(), Some(10));
}

#[test]
fn classifiers_must_share_their_classes() {
    let m = models();
    let cfg = MnistCnnConfig {
        classes: 5,
        ..MnistCnnConfig::cnn_a()
    };
    let five = MnistCnn::random(&cfg, 5, &common::device()).unwrap();
    let err = Search::new("vae", &m.vae)
        .classifier("cnn_a", &m.a)
        .classifier("five", &five)
        .config(SearchConfig::default().steps(1).batch(2))
        .run(&common::device())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ClassCount {
                got: 5,
                expected: 10,
                ..
            }
        ),
        "{err}"
    );
}

/// A generator built on candle-nn's `softmax_last_dim`, whose backward is
/// missing: the search must refuse rather than stand still.
struct SoftmaxGenerator<'a>(&'a MnistVae);

impl Generator for SoftmaxGenerator<'_> {
    fn latent_dim(&self) -> usize {
        8
    }
    fn decode(&self, z: &Tensor, c: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let z = candle_nn::ops::softmax_last_dim(z)?;
        self.0.decode(&z, c)
    }
}

#[test]
fn a_missing_gradient_is_an_error() {
    let m = models();
    let g = SoftmaxGenerator(&m.vae);
    let err = Search::new("softmax-vae", &g)
        .classifier("cnn_a", &m.a)
        .classifier("cnn_b", &m.b)
        .config(SearchConfig::default().steps(3).batch(2))
        .run(&common::device())
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingGradient { model, .. } if model == "softmax-vae -> cnn_a, cnn_b"),
        "{err}"
    );
}

/// A classifier whose gradient is dropped, by a `detach` or by candle-nn's
/// `softmax_last_dim` (no backward).
struct Dropped<'a> {
    inner: &'a MnistCnn,
    detach: bool,
}

impl Classifier for Dropped<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.inner.logits(x)?;
        if self.detach {
            Ok(logits.detach())
        } else {
            candle_nn::ops::softmax_last_dim(&logits)?.log()
        }
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

/// Regression: beside a classifier that has its gradient, one whose
/// gradient is dropped left a search that climbed through the first alone
/// and passed (the divergence still reached z). It is refused, named.
#[test]
fn a_classifier_without_gradient_beside_one_with_is_an_error_naming_it() {
    let m = models();
    for (detach, name) in [(true, "detached"), (false, "softmax-last-dim")] {
        let dropped = Dropped {
            inner: &m.b,
            detach,
        };
        for first in [true, false] {
            let search = Search::new("vae", &m.vae);
            let search = if first {
                search.classifier(name, &dropped).classifier("cnn_a", &m.a)
            } else {
                search.classifier("cnn_a", &m.a).classifier(name, &dropped)
            };
            let err = search
                .config(SearchConfig::default().steps(3).batch(2))
                .run(&common::device())
                .unwrap_err();
            let expected = format!("vae -> {name}");
            assert!(
                matches!(&err, Error::MissingGradient { model, .. } if *model == expected),
                "{err}"
            );
        }
    }
}

/// A classifier whose logits come back as f64.
struct Wide<'a>(&'a MnistCnn);

impl Classifier for Wide<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.logits(x)?.to_dtype(candle_core::DType::F64)
    }
    fn class_names(&self) -> &[String] {
        self.0.class_names()
    }
}

/// Regression: f64 logits beside f32 ones failed in the divergence
/// ("dtype mismatch in sub") without naming the model.
#[test]
fn logits_of_another_type_are_refused_naming_the_model() {
    let m = models();
    let wide = Wide(&m.b);
    let err = Search::new("vae", &m.vae)
        .classifier("cnn_a", &m.a)
        .classifier("wide", &wide)
        .config(SearchConfig::default().steps(2).batch(2))
        .run(&common::device())
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("`wide`") && shown.contains("F64") && shown.contains("to_dtype"),
        "{shown}"
    );
}

/// A classifier of one class: cnn_b's first logit alone (a binary
/// classifier's single sigmoid logit is such a model).
struct OneClass<'a>(&'a MnistCnn, Vec<String>);

impl Classifier for OneClass<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.logits(x)?.narrow(1, 0, 1)
    }
    fn class_names(&self) -> &[String] {
        &self.1
    }
}

/// Regression: two classifiers of one class each searched to a divergence
/// of 0 and passed every threshold; only the harness refused them, not the
/// library's search.
#[test]
fn classifiers_of_one_class_are_refused_by_the_search() {
    let m = models();
    let (one_a, one_b) = (
        OneClass(&m.a, vec!["yes".into()]),
        OneClass(&m.b, vec!["yes".into()]),
    );
    let err = Search::new("vae", &m.vae)
        .classifier("one_a", &one_a)
        .classifier("one_b", &one_b)
        .config(SearchConfig::default().steps(2).batch(2))
        .run(&common::device())
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooFewClasses { model, classes: 1 } if model == "one_a"),
        "{err}"
    );
}

/// A digest of every number a search recorded, bit for bit.
fn digest(o: &SearchOutcome) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for s in &o.samples {
        for v in s.z0.iter().chain(&s.z) {
            v.to_bits().hash(&mut h);
        }
        for p in s
            .log_probs_before
            .iter()
            .chain(&s.log_probs_after)
            .flatten()
        {
            p.to_bits().hash(&mut h);
        }
        s.divergence_before.to_bits().hash(&mut h);
        s.divergence_after.to_bits().hash(&mut h);
    }
    for t in &o.trajectory {
        t.mean_objective.to_bits().hash(&mut h);
        t.max_divergence.to_bits().hash(&mut h);
        t.mean_dz.to_bits().hash(&mut h);
    }
    for b in &o.baseline.divergences {
        b.to_bits().hash(&mut h);
    }
    h.finish()
}

fn determinism_digest() -> u64 {
    let m = models();
    digest(&run(
        &m,
        SearchConfig::default().steps(25).batch(8).seed(42),
    ))
}

/// A search large enough that the engine's products are split between
/// threads (batch 64).
fn thread_count_digest() -> u64 {
    let m = models();
    digest(&run(
        &m,
        SearchConfig::default().steps(10).batch(64).seed(42),
    ))
}

#[test]
fn the_same_seed_gives_bit_identical_results_in_one_process() {
    let m = models();
    let cfg = SearchConfig::default().steps(25).batch(8).seed(42);
    let (one, two) = (run(&m, cfg.clone()), run(&m, cfg.clone()));
    assert_eq!(one.samples, two.samples);
    assert_eq!(one.trajectory, two.trajectory);
    assert_eq!(one.baseline, two.baseline);
    assert_eq!(digest(&one), digest(&two));
    let other = run(&m, cfg.seed(43));
    assert_ne!(digest(&one), digest(&other));
}

/// Run by `the_same_seed_gives_bit_identical_results_across_processes` in a
/// child process.
#[test]
#[ignore = "run as a child process by the cross-process determinism test"]
fn determinism_child() {
    println!("GEVALDI-DIGEST {:016x}", determinism_digest());
}

/// Run by `the_same_seed_gives_bit_identical_results_whatever_the_thread_count`
/// in child processes.
#[test]
#[ignore = "run as a child process by the thread-count determinism test"]
fn thread_count_child() {
    println!("GEVALDI-DIGEST {:016x}", thread_count_digest());
}

/// `RAYON_NUM_THREADS` (a 16-core workstation against a 2-core CI runner)
/// does not change a bit: with one thread the engine's products were taken
/// whole where more threads split them in halves, which round otherwise
/// (found by the audit).
#[test]
fn the_same_seed_gives_bit_identical_results_whatever_the_thread_count() {
    let digests: Vec<String> = ["1", "3", "7"]
        .into_iter()
        .map(|threads| {
            let digest = child_digest("thread_count_child", &[("RAYON_NUM_THREADS", threads)]);
            format!("RAYON_NUM_THREADS={threads}: {digest}")
        })
        .collect();
    let here = format!("{:016x}", thread_count_digest());
    for d in &digests {
        assert!(d.ends_with(&here), "{d}, against {here} here: {digests:?}");
    }
}

#[test]
fn the_same_seed_gives_bit_identical_results_across_processes() {
    let child = child_digest("determinism_child", &[]);
    assert_eq!(child, format!("{:016x}", determinism_digest()));
}

/// The digest the ignored test `name` prints when this test binary runs it
/// in a child process with `envs` set.
fn child_digest(name: &str, envs: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture"])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("GEVALDI-DIGEST "))
        .unwrap_or_else(|| panic!("no digest in child output:\n{stdout}"))
        .to_string()
}

/// A classifier far more confident than f32 probabilities can tell apart:
/// fixed logits with its top three classes 300, 150 and 100 above the
/// rest, plus a thousandth of a CNN's (so that its gradient reaches z).
struct Confident<'a> {
    cnn: &'a MnistCnn,
    top: [usize; 3],
}

impl Classifier for Confident<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut row = [0f32; 10];
        for (&k, v) in self.top.iter().zip([300.0, 150.0, 100.0]) {
            row[k] = v;
        }
        let fixed = Tensor::new(&row, x.device())?.unsqueeze(0)?;
        (self.cnn.logits(x)? * 1e-3)?.broadcast_add(&fixed)
    }
    fn class_names(&self) -> &[String] {
        self.cnn.class_names()
    }
}

/// Regression: the set distance ranked each model's top-n on f32
/// probabilities, where every class but the first underflowed to 0 here
/// (e⁻¹⁵⁰) and ties went to the lowest indices: the top-3 sets {5, 9, 3}
/// and {7, 2, 4} read as {5, 0, 1} and {7, 0, 1}, a distance of 7/9 in a
/// flat hierarchy rather than 1, under a `max_set_distance = 0.8`.
#[test]
fn top_n_sets_are_ranked_on_log_probabilities() {
    let m = models();
    let a = Confident {
        cnn: &m.a,
        top: [5, 9, 3],
    };
    let b = Confident {
        cnn: &m.b,
        top: [7, 2, 4],
    };
    let names: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    let distance = gevaldi::hierarchy::SetDistance::new(
        std::sync::Arc::new(gevaldi::Hierarchy::flat(&names)),
        3,
    );
    let out = Search::new("vae", &m.vae)
        .classifier("a", &a)
        .classifier("b", &b)
        .measure(&distance)
        .config(SearchConfig::default().steps(2).batch(3))
        .run(&common::device())
        .unwrap_or_else(|e| panic!("{e}"));
    for s in &out.samples {
        assert_eq!(s.measures_before, [1.0]);
        assert_eq!(s.measures_after, [1.0]);
        assert_eq!(
            gevaldi::hierarchy::top_n(&s.log_probs_after[0], 3),
            [5, 9, 3]
        );
        // The probabilities themselves do underflow.
        assert_eq!(s.probs_after()[0][9], 0.0);
    }
}

/// Regression: two classifiers that agree everywhere (one model given
/// twice) had a JS of rounding noise of either sign, and a lift that was
/// the ratio of two noise means (positive, even above 1, when both were
/// negative). Now every divergence is exactly 0 and the lift undefined.
#[test]
fn a_model_against_itself_has_no_divergence_and_no_lift() {
    let m = models();
    let out = Search::new("vae", &m.vae)
        .classifier("cnn_a", &m.a)
        .classifier("again", &m.a)
        .config(
            SearchConfig::default()
                .steps(3)
                .batch(16)
                .divergence(Divergence::js()),
        )
        .run(&common::device())
        .unwrap_or_else(|e| panic!("{e}"));
    for s in &out.samples {
        assert_eq!((s.divergence_before, s.divergence_after), (0.0, 0.0));
    }
    assert!(out.baseline.divergences.iter().all(|d| *d == 0.0));
    assert!(out.lift().is_nan(), "{}", out.lift());
    // Regression: the record held `"lift":null`, which it could not read
    // back ("no record" in the report). Now null reads as NaN, and the
    // report's lift is worked out again from the means (0 / 0 here).
    let thresholds = gevaldi::config::Thresholds {
        max_divergence: None,
        statistic: gevaldi::config::Statistic::Max,
        min_lift: None,
        max_set_distance: None,
        top_n: 1,
    };
    let summary = gevaldi::snapshot::Summary::new("p", "vae", &out, &thresholds);
    let json = serde_json::to_string(&summary).unwrap();
    assert!(json.contains(r#""lift":null"#), "{json}");
    let back: gevaldi::snapshot::Summary = serde_json::from_str(&json).unwrap();
    assert!(back.lift.is_nan());
}

/// Plain linear models for `a_search_takes_torchs_steps`: x = sigmoid(z
/// Wg^T), logits = x A^T + b, weights sin(s + 1.7 i + 0.9 j).
struct LinGen(Tensor);
struct LinClf(Tensor, Tensor, Vec<String>);

impl Generator for LinGen {
    fn latent_dim(&self) -> usize {
        3
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> candle_core::Result<Tensor> {
        candle_nn::ops::sigmoid(&z.matmul(&self.0.t()?)?)
    }
}

impl Classifier for LinClf {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.0.t()?)?.broadcast_add(&self.1)
    }
    fn class_names(&self) -> &[String] {
        &self.2
    }
}

fn sin_matrix(r: usize, c: usize, s: f64, scale: f64) -> Tensor {
    let v: Vec<f32> = (0..r * c)
        .map(|k| (scale * (s + 1.7 * (k / c) as f64 + 0.9 * (k % c) as f64).sin()) as f32)
        .collect();
    Tensor::from_vec(v, (r, c), &common::device()).unwrap()
}

/// The whole ascent (8 steps from a given z0, λ log p(z) with the
/// standard normal prior, Adam on KL and SGD on JS) against PyTorch in
/// f64 with `maximize=True`: the final z, the divergence per sample after
/// the search, and each step's mean objective, mean and max divergence
/// (the trajectory's step 8 is after the 8th update). Agreed when written
/// to 1e-5 (f32 models). The PyTorch script is `bench/search_reference.py`.
#[test]
fn a_search_takes_torchs_steps() {
    let dev = common::device();
    let classes: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let g = LinGen(sin_matrix(6, 3, 0.3, 1.0));
    let bias = |b: [f32; 4]| Tensor::new(&b, &dev).unwrap();
    let c1 = LinClf(
        sin_matrix(4, 6, 1.1, 2.0),
        bias([0.1, -0.2, 0.3, 0.0]),
        classes.clone(),
    );
    let c2 = LinClf(
        sin_matrix(4, 6, 2.3, 2.0),
        bias([-0.3, 0.2, 0.0, 0.1]),
        classes,
    );
    let z0 = Tensor::new(
        &[[0.5f32, -1.0, 0.25], [1.5, 0.3, -0.7], [-0.2, 0.1, 2.0]],
        &dev,
    )
    .unwrap();
    for (config, want_z, want_d, want_traj) in [
        (
            SearchConfig::default()
                .steps(8)
                .lambda(0.3)
                .divergence(Divergence::Kl),
            KL_ADAM_Z,
            KL_ADAM_D,
            KL_ADAM_TRAJ,
        ),
        (
            SearchConfig::default()
                .steps(8)
                .lambda(0.1)
                .lr(0.5)
                .optimizer(Optimizer::Sgd)
                .divergence(Divergence::js()),
            JS_SGD_Z,
            JS_SGD_D,
            JS_SGD_TRAJ,
        ),
    ] {
        let what = format!("{} {}", config.divergence, config.optimizer.name());
        let o = Search::new("lin", &g)
            .classifier("c1", &c1)
            .classifier("c2", &c2)
            .config(config)
            .z0(z0.clone())
            .run(&dev)
            .unwrap_or_else(|e| panic!("{e}"));
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}: {a}, torch {b}"
            )
        };
        for (i, s) in o.samples.iter().enumerate() {
            for (k, z) in s.z.iter().enumerate() {
                close(*z as f64, want_z[i][k], &format!("{what}: z[{i}][{k}]"));
            }
            close(
                s.divergence_after,
                want_d[i],
                &format!("{what}: D after, sample {i}"),
            );
        }
        assert_eq!(o.trajectory.len(), want_traj.len(), "{what}");
        for (r, (obj, mean, max)) in o.trajectory.iter().zip(want_traj) {
            close(
                r.mean_objective,
                obj,
                &format!("{what}: objective at {}", r.step),
            );
            close(
                r.mean_divergence,
                mean,
                &format!("{what}: mean D at {}", r.step),
            );
            close(
                r.max_divergence,
                max,
                &format!("{what}: max D at {}", r.step),
            );
        }
        close(
            o.mean_divergence_after(),
            want_d.iter().sum::<f64>() / 3.0,
            &what,
        );
    }
}

const KL_ADAM_Z: [[f64; 3]; 3] = [
    [
        0.10265334783186073,
        -0.8602821755338856,
        -0.034113953891094374,
    ],
    [
        1.1005419803009477,
        -0.09543096335209997,
        -0.3125744101598191,
    ],
    [-0.6002034410029108, -0.3041941760291602, 1.5995968936535563],
];
const KL_ADAM_D: [f64; 3] = [0.4868468939575302, 0.08561417424114674, 0.4836897709175766];
const KL_ADAM_TRAJ: [(f64, f64, f64); 9] = [
    (-0.9791764165315956, 0.25749326335260975, 0.3891654963759328),
    (
        -0.9458133217096413,
        0.26123136001328245,
        0.39240252608648285,
    ),
    (-0.9135654490992243, 0.26636344275485885, 0.3963564952490719),
    (-0.8822247898449498, 0.2734756992198737, 0.40231399458074296),
    (-0.8514906659067457, 0.2833043355029317, 0.41199852237995305),
    (-0.821037425179715, 0.2962287479415208, 0.42608793181780413),
    (-0.7906058401173914, 0.3121440659404254, 0.4438804525090353),
    (-0.7599948316171311, 0.33081777294945075, 0.4643936125571605),
    (-0.729058293367697, 0.35205027970541786, 0.4868468939575302),
];
const JS_SGD_Z: [[f64; 3]; 3] = [
    [
        0.08711749019461111,
        -0.8517929459441608,
        0.17625936755654378,
    ],
    [0.951624599848962, 0.15725945329372262, -0.4728134192195889],
    [
        -0.22029581582888563,
        0.014284547826969606,
        1.3497336761434238,
    ],
];
const JS_SGD_D: [f64; 3] = [
    0.11301189284912128,
    0.020188482491167684,
    0.08534955817019338,
];
const JS_SGD_TRAJ: [(f64, f64, f64); 9] = [
    (
        -0.34862294223066637,
        0.0636002843974021,
        0.09153025402682166,
    ),
    (-0.335268714267069, 0.064367296914131, 0.09457680934528861),
    (
        -0.3229614082182994,
        0.06524798760826535,
        0.09752626749910337,
    ),
    (-0.3115964144951863, 0.0662413611147477, 0.10037402672167611),
    (-0.3010804049085122, 0.0673462684317966, 0.10311680419355224),
    (
        -0.29133020489267986,
        0.06856136301940595,
        0.1057525208094947,
    ),
    (
        -0.28227179535377384,
        0.06988504052072003,
        0.10828017498093781,
    ),
    (
        -0.2738394288475725,
        0.07131536405032113,
        0.11069971180833002,
    ),
    (
        -0.2659748451226661,
        0.07284997783682744,
        0.11301189284912128,
    ),
];

/// cnn_b with a softmax left at its end: it returns probabilities.
struct Softmaxed<'a>(&'a MnistCnn);

impl Classifier for Softmaxed<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax_last_dim(&self.0.logits(x)?)
    }
    fn class_names(&self) -> &[String] {
        self.0.class_names()
    }
}

/// Regression: a classifier returning probabilities was refused by the
/// harness only; the library's search softmaxed its rows again, towards
/// uniform, and a pair with it found little disagreement, with no error.
/// With `steps(0)` too: the check is at the first step's figures.
#[test]
fn a_classifier_returning_probabilities_is_refused_by_the_search() {
    let m = models();
    let soft = Softmaxed(&m.b);
    for steps in [0, 2] {
        let err = Search::new("vae", &m.vae)
            .classifier("cnn_a", &m.a)
            .classifier("soft", &soft)
            .config(SearchConfig::default().steps(steps).batch(4))
            .run(&common::device())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Probabilities { model, samples: 4 } if model == "soft"),
            "{err}"
        );
    }
}
