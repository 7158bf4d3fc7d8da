//! The ascent itself: [`Search`], its evaluation of the pipeline and its steps.

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::non_finite::{blame_the_step, read_checked, Probe};
use super::outcome::mean;
use super::update::Update;
use super::*;
use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};

/// A search over the latent space of one generator for the samples on which
/// its classifiers disagree most.
///
/// ```
/// # fn main() -> gevaldi::Result<()> {
/// use candle_core::Device;
/// use gevaldi::{zoo, Search, SearchConfig};
///
/// let dev = Device::Cpu;
/// let (a, b) = (zoo::MnistCnn::random(&zoo::MnistCnnConfig::cnn_a(), 1, &dev)?,
///               zoo::MnistCnn::random(&zoo::MnistCnnConfig::cnn_b(), 2, &dev)?);
/// let vae = zoo::MnistVae::random(&zoo::MnistVaeConfig::default(), 3, &dev)?;
/// let outcome = Search::new("vae", &vae)
///     .classifier("cnn_a", &a)
///     .classifier("cnn_b", &b)
///     .config(SearchConfig::default().steps(5).batch(4))
///     .run(&dev)?;
/// assert_eq!(outcome.trajectory.len(), 6);
/// # Ok(()) }
/// ```
pub struct Search<'a> {
    generator_name: String,
    generator: &'a dyn Generator,
    classifiers: Vec<(String, &'a dyn Classifier)>,
    measures: Vec<&'a dyn Measure>,
    config: SearchConfig,
    z0: Option<Tensor>,
    condition: Option<Tensor>,
    progress: Option<&'a dyn Fn(usize)>,
    own_backward: bool,
}

struct Evaluation {
    x: Tensor,
    logits: Vec<Tensor>,
    log_probs: Vec<Tensor>,
    divergence: Tensor,
}

impl<'a> Search<'a> {
    /// A search over the latent space of `generator`, with the default
    /// [`SearchConfig`] and no classifiers yet.
    pub fn new(name: impl Into<String>, generator: &'a dyn Generator) -> Self {
        Search {
            generator_name: name.into(),
            generator,
            classifiers: Vec::new(),
            measures: Vec::new(),
            config: SearchConfig::default(),
            z0: None,
            condition: None,
            progress: None,
            own_backward: true,
        }
    }

    /// Adds a classifier. Order matters for directed divergences (`kl` is
    /// KL(first ‖ second)).
    pub fn classifier(mut self, name: impl Into<String>, classifier: &'a dyn Classifier) -> Self {
        self.classifiers.push((name.into(), classifier));
        self
    }

    /// Records `measure` per sample before and after the search, and its
    /// mean at every step. (Default: no measures.)
    pub fn measure(mut self, measure: &'a dyn Measure) -> Self {
        self.measures.push(measure);
        self
    }

    /// Sets the search's settings. (Default: [`SearchConfig::default`].)
    pub fn config(mut self, config: SearchConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts from the given latents `[B, d]` instead of prior samples; B
    /// then overrides `config.batch`. (Default: B prior samples drawn with
    /// `config.seed`.)
    pub fn z0(mut self, z0: Tensor) -> Self {
        self.z0 = Some(z0);
        self
    }

    /// The class condition `[B, C]` of a class-conditional generator, held
    /// fixed during the search and used for the baseline too. (Default: none;
    /// required when the generator is conditional.)
    pub fn condition(mut self, condition: Tensor) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Calls `progress(t)` once the search has evaluated step t (t = 0 is
    /// the start, t = `steps` the last), e.g. to drive a progress bar.
    /// (Default: none.)
    pub fn progress(mut self, progress: &'a dyn Fn(usize)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Whether the search may run its backward itself (the engine's tape,
    /// where the chain is all ops with a backward of their own) rather than
    /// candle's; the two give the same gradient. (Default: true; false for
    /// the tests and benches that compare them.)
    #[doc(hidden)]
    pub fn own_backward(mut self, on: bool) -> Self {
        self.own_backward = on;
        self
    }

    /// Runs the search on `device`.
    pub fn run(&self, device: &Device) -> Result<SearchOutcome> {
        let cfg = &self.config;
        cfg.validate()?;
        cfg.divergence.check(self.classifiers.len())?;
        for (name, classifier) in &self.classifiers {
            check_two_classes(name, classifier.num_classes())?;
        }
        // A CUDA device's memory pool keeps each step's buffers for the
        // next (its default hands them back at every read-back).
        crate::engine::keep_pool_memory(device);
        let d = self.generator.latent_dim();
        let sample = |n, rng: &mut ChaCha8Rng| {
            self.generator
                .sample_prior(n, rng, device)
                .map_err(Error::model(&self.generator_name, "sample the prior"))
        };
        let z0 = match &self.z0 {
            Some(z0) => z0
                .to_device(device)
                .and_then(|z| z.to_dtype(DType::F32))
                .map_err(Error::tensor("move z0 to the device"))?,
            None => sample(cfg.batch, &mut ChaCha8Rng::seed_from_u64(cfg.seed))?,
        };
        let (b, dz0) = z0.dims2().map_err(Error::tensor("read the shape of z0"))?;
        if dz0 != d {
            // A z0 the caller gave is a setting; one the prior drew, the
            // generator's output.
            if self.z0.is_some() {
                return Err(Error::setting(
                    "z0",
                    format!("a tensor of shape {:?}", z0.dims()),
                    format!(
                        "[B, {d}] for generator `{}` (its `latent_dim`)",
                        self.generator_name
                    ),
                ));
            }
            return Err(self.shape_error("z0", format!("[B, {d}]"), &z0));
        }
        if b == 0 {
            return Err(Error::setting(
                "z0",
                format!("a tensor of shape {:?}", z0.dims()),
                "at least one latent (row), as `batch` is at least 1",
            ));
        }
        // Drawn before any step so that the baseline does not depend on the
        // number of steps, from its own stream so that it is not z0.
        let z_baseline = sample(b, &mut baseline_rng(cfg.seed))?;
        self.check_condition(b)?;

        let z = Var::from_tensor(&z0).map_err(Error::tensor("make z a variable"))?;
        let mut update = Update::new(cfg.optimizer.clone(), cfg.lr);
        let mut trajectory = Vec::with_capacity(cfg.steps + 1);
        let mut first: Option<Start> = None;
        let mut step = 0;
        // The gradient of the previous step, checked with this step's read.
        let mut last_grad: Option<Tensor> = None;
        // z at the last step read, on the host (for `blame_the_step`).
        let mut last_z: Vec<f64> = Vec::new();
        // z0 on the host, for dz (‖z − z0‖ / ‖z‖), worked out there from
        // each step's z, read with the step's figures.
        let z0_rows: Vec<f64> = z0
            .flatten_all()
            .and_then(|z| z.to_dtype(DType::F64))
            .and_then(|z| z.to_vec1::<f64>())
            .map_err(Error::tensor("read z0"))?;
        // The search's own backward (the engine's tape) for a chain of
        // built-in models (`taped`) while its recording is closed; candle's
        // graph from the first step where it is not, for models of one's
        // own, and under `GEVALDI_ENGINE=candle`.
        let mut taped = self.own_backward
            && crate::engine::Engine::current() != crate::engine::Engine::Candle
            && self.generator.taped()
            && self.classifiers.iter().all(|(_, c)| c.taped());
        // The objective's gradient with respect to each sample's divergence
        // and log p(z), as candle's backward of its sum gives them.
        let seed = Tensor::ones(b, z0.dtype(), device)
            .and_then(|ones| {
                let prior = ones.affine(cfg.lambda, 0.0)?;
                Ok((ones, prior))
            })
            .map_err(Error::tensor("make the objective's gradient"))?;
        let (last, last_host, last_div, last_measured, last_dz, last_z) = loop {
            let mut recorded = None;
            if taped {
                let (result, recording) = crate::engine::record_while(|| self.forward(&z, b));
                let (eval, log_prior) = result?;
                let mut ends = vec![&eval.x, &eval.divergence, &log_prior];
                ends.extend(&eval.logits);
                if recording.closed(z.as_tensor(), &ends) {
                    recorded = Some((eval, log_prior, recording));
                } else {
                    taped = false;
                }
            }
            let (eval, log_prior, recording) = match recorded {
                Some((eval, log_prior, recording)) => (eval, log_prior, Some(recording)),
                None => {
                    let (eval, log_prior) = self.forward(&z, b)?;
                    (eval, log_prior, None)
                }
            };
            let objective = profiled(device, "objective", || {
                log_prior
                    .affine(cfg.lambda, 0.0)
                    .and_then(|prior| &eval.divergence + prior)
                    .map_err(Error::tensor("add the prior term to the objective"))
            })?;
            let at = SearchStage::Step(step);
            let mut probes = Vec::with_capacity(self.classifiers.len() + 6);
            if let Some(g) = &last_grad {
                probes.push(Probe::sum(
                    NonFiniteSite::Gradient,
                    SearchStage::Step(step - 1),
                    g,
                ));
            }
            // z whole: dz is worked out from it on the host.
            probes.push(Probe::values(NonFiniteSite::Latent, at, z.as_tensor()));
            probes.extend(self.eval_probes(&eval, at));
            probes.push(Probe::sum(
                NonFiniteSite::LogPrior(self.generator_name.clone()),
                at,
                &log_prior,
            ));
            probes.push(Probe::values(
                NonFiniteSite::Divergence,
                at,
                &eval.divergence,
            ));
            probes.push(Probe::values(NonFiniteSite::Objective, at, &objective));
            let mut figures = profiled(device, "the figures' read", || read_checked(&probes, at))
                .map_err(|e| {
                    blame_the_step(e, z.as_tensor(), &last_z, cfg.lr, cfg.optimizer.kind())
                })?
                .into_iter();
            let (z_now, div, obj) = match (figures.next(), figures.next(), figures.next()) {
                (Some(z), Some(div), Some(obj)) => (z, not_below_zero(div), obj),
                _ => unreachable!("three figures were read"),
            };
            let dz = dz(&z_now, &z0_rows, d);
            // A classifier that returns probabilities is refused (the
            // suite does so before its gradient audit; this is for the
            // library's own users).
            if step == 0 {
                for ((name, _), logits) in self.classifiers.iter().zip(&eval.logits) {
                    refuse_probabilities(name, logits)?;
                }
            }
            // The log-probabilities on the host: read once a step for the
            // measures, else only where the records need them.
            let host = if self.measures.is_empty() {
                None
            } else {
                Some(read_log_probs(&eval.log_probs)?)
            };
            let measured = self.measured(host.as_deref());
            trajectory.push(StepRecord {
                step,
                mean_objective: mean(obj.iter().copied()),
                mean_divergence: mean(div.iter().copied()),
                max_divergence: div.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean_dz: mean(dz.iter().copied()),
                mean_measures: measured.iter().map(|m| mean(m.iter().copied())).collect(),
            });
            if let Some(progress) = self.progress {
                progress(step);
            }
            let stalled = cfg.early_stop.as_ref().is_some_and(|es| {
                step >= es.window
                    && trajectory[step].mean_objective - trajectory[step - es.window].mean_objective
                        < es.tolerance
            });
            if step == cfg.steps || stalled {
                break (eval, host, div, measured, dz, z_now);
            }
            last_z = z_now;
            if first.is_none() {
                let host = match host {
                    Some(host) => host,
                    None => read_log_probs(&eval.log_probs)?,
                };
                first = Some((eval.x.detach(), host, div, measured));
            }

            // A closed recording reaches z from every classifier.
            if step == 0 && recording.is_none() {
                self.check_classifiers_reach_z(&eval.logits, &z)?;
            }
            let grad = profiled(device, "backward", || {
                let grad = match recording {
                    Some(recording) => {
                        let mut seeds = vec![(&eval.divergence, seed.0.clone())];
                        // With λ = 0, candle's graph adds −z · 0 to z's gradient.
                        if cfg.lambda != 0.0 {
                            seeds.push((&log_prior, seed.1.clone()));
                        }
                        recording.gradient(seeds, z.as_tensor())
                    }
                    None => objective
                        .sum_all()
                        .and_then(|o| o.backward())
                        .map(|grads| grads.get(z.as_tensor()).cloned()),
                };
                grad.map_err(Error::tensor(format!("backpropagate at step {step}")))
            })?
            .ok_or_else(|| Error::MissingGradient {
                model: self.chain_name(),
                input: "latent z",
            })?;
            profiled(device, "update", || {
                update
                    .step(&z, &grad, step + 1)
                    .map_err(Error::tensor(format!("update z at step {step}")))
            })?;
            last_grad = Some(grad.detach());
            step += 1;
        };
        let stopped_early = step < cfg.steps;
        let log_probs_after = match last_host {
            Some(host) => host,
            None => read_log_probs(&last.log_probs)?,
        };
        let (x0, log_probs_before, first_div, first_measured) = match first {
            Some(f) => f,
            None => (
                last.x.detach(),
                log_probs_after.clone(),
                last_div.clone(),
                last_measured.clone(),
            ),
        };

        let baseline = self.evaluate(&z_baseline, b)?;
        let at = SearchStage::Baseline;
        let mut probes = vec![Probe::sum(NonFiniteSite::Latent, at, &z_baseline)];
        probes.extend(self.eval_probes(&baseline, at));
        probes.push(Probe::values(
            NonFiniteSite::Divergence,
            at,
            &baseline.divergence,
        ));
        let baseline_div = read_checked(&probes, at)?.swap_remove(0);
        let baseline_div = not_below_zero(baseline_div);
        // As f32, the search's type (z0 and z were read as f64 from f32).
        let row = |values: &[f64], i: usize| -> Vec<f32> {
            values[i * d..(i + 1) * d]
                .iter()
                .map(|&v| v as f32)
                .collect()
        };
        let support = self.generator.latent_support();
        let samples = (0..b)
            .map(|i| {
                let z = row(&last_z, i);
                (support.map(|s| s.count_outside(&z)), z)
            })
            .enumerate()
            .map(|(i, (outside_support, z))| SampleRecord {
                z0: row(&z0_rows, i),
                z,
                outside_support,
                divergence_before: first_div[i],
                divergence_after: last_div[i],
                log_probs_before: log_probs_before.iter().map(|m| m[i].clone()).collect(),
                log_probs_after: log_probs_after.iter().map(|m| m[i].clone()).collect(),
                dz: last_dz[i],
                measures_before: first_measured.iter().map(|m| m[i]).collect(),
                measures_after: last_measured.iter().map(|m| m[i]).collect(),
            })
            .collect();
        Ok(SearchOutcome {
            config: SearchConfig {
                batch: b,
                ..cfg.clone()
            },
            model_names: self.classifiers.iter().map(|(n, _)| n.clone()).collect(),
            class_names: crate::model::distinct_class_labels(self.classifiers[0].1.class_names()),
            measure_names: self.measures.iter().map(|m| m.name()).collect(),
            samples,
            trajectory,
            baseline: Baseline {
                mean: mean(baseline_div.iter().copied()),
                max: baseline_div
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max),
                divergences: baseline_div,
            },
            steps_run: step,
            stopped_early,
            latent_support: support,
            x0,
            x: last.x.detach(),
        })
    }

    /// The step's forward from z: [`Self::evaluate`] and log p(z).
    fn forward(&self, z: &Var, b: usize) -> Result<(Evaluation, Tensor)> {
        let eval = self.evaluate(z.as_tensor(), b)?;
        let log_prior = profiled(z.device(), "log p(z)", || self.log_prior(z.as_tensor(), b))?;
        Ok((eval, log_prior))
    }

    /// The generator's output and each classifier's logits, to check.
    fn eval_probes<'e>(&self, eval: &'e Evaluation, at: SearchStage) -> Vec<Probe<'e>> {
        let x = Probe::sum(
            NonFiniteSite::GeneratorOutput(self.generator_name.clone()),
            at,
            &eval.x,
        );
        let logits = self
            .classifiers
            .iter()
            .zip(&eval.logits)
            .map(|((name, _), l)| Probe::sum(NonFiniteSite::Logits(name.clone()), at, l));
        std::iter::once(x).chain(logits).collect()
    }

    /// Decodes z, runs every classifier and computes the divergence.
    fn evaluate(&self, z: &Tensor, b: usize) -> Result<Evaluation> {
        let device = z.device();
        let x = profiled(device, "decode", || {
            self.generator
                .decode(z, self.condition.as_ref())
                .map_err(Error::model(&self.generator_name, "decode z"))
        })?;
        let mut all_logits = Vec::with_capacity(self.classifiers.len());
        let mut classes = None;
        for (name, classifier) in &self.classifiers {
            let logits = profiled(device, "classifiers", || {
                classifier.logits(&x).map_err(|e| {
                    // Named with the input's shape: a generator whose samples do
                    // not fit the classifier is the usual cause.
                    Error::model(
                        name,
                        format!(
                            "compute logits of `{}`'s samples of shape {:?}",
                            self.generator_name,
                            x.dims()
                        ),
                    )(e)
                })
            })?;
            check_logits_dtype(name, &logits, z.dtype())?;
            let k = classifier.num_classes();
            if logits.dims() != [b, k] {
                return Err(self.shape_error_of(name, "logits", format!("[{b}, {k}]"), &logits));
            }
            match classes {
                None => classes = Some((name, k)),
                Some((first, expected)) if expected != k => {
                    return Err(Error::ClassCount {
                        first: first.clone(),
                        expected,
                        model: name.clone(),
                        got: k,
                    })
                }
                Some(_) => {}
            }
            all_logits.push(logits);
        }
        let head = profiled(device, "log-softmax, divergence", || {
            self.config.divergence.of_logits(&all_logits)
        })?;
        Ok(Evaluation {
            x,
            logits: all_logits,
            log_probs: head.log_probs,
            divergence: head.divergence,
        })
    }

    /// Each measure's values `[measure][sample]`, from the log-probabilities
    /// read to the host (`None`, not read, where there are no measures).
    fn measured(&self, log_probs: Option<&[Vec<Vec<f32>>]>) -> Vec<Vec<f64>> {
        match log_probs {
            Some(lp) => self
                .measures
                .iter()
                .map(|m| m.measure(LogProbs(lp)))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The prior term always has a gradient, so a divergence whose gradient
    /// was dropped (an op without backward, a `detach`) would leave a search
    /// that only walks towards the prior's mode; and the divergence has one
    /// when any classifier has, so one classifier whose gradient was
    /// dropped would leave a search that climbs through the others alone,
    /// and passes. One backward pass per classifier, at step 0, rules both
    /// out: where none reaches z the whole chain is named (the generator,
    /// say), else the first classifier that does not.
    fn check_classifiers_reach_z(&self, logits: &[Tensor], z: &Var) -> Result<()> {
        let mut missing = Vec::new();
        for ((name, _), l) in self.classifiers.iter().zip(logits) {
            let grads = l
                .sum_all()
                .and_then(|s| s.backward())
                .map_err(Error::tensor(format!(
                    "backpropagate the logits of `{name}`"
                )))?;
            if grads.get(z.as_tensor()).is_none() {
                missing.push(name);
            }
        }
        let model = match missing.as_slice() {
            [] => return Ok(()),
            some if some.len() == self.classifiers.len() => self.chain_name(),
            [first, ..] => format!("{} -> {first}", self.generator_name),
        };
        Err(Error::MissingGradient {
            model,
            input: "latent z",
        })
    }

    /// The generator's log p(z), checked to be `[B]` in z's dtype (else
    /// the objective's sum fails naming neither).
    fn log_prior(&self, z: &Tensor, b: usize) -> Result<Tensor> {
        let lp = self
            .generator
            .log_prior(z)
            .map_err(Error::model(&self.generator_name, "compute log p(z)"))?;
        if lp.dims() != [b] {
            return Err(self.shape_error("log p(z) (`log_prior`)", format!("[{b}]"), &lp));
        }
        if lp.dtype() != z.dtype() {
            return Err(Error::model(&self.generator_name, "use its log p(z)")(
                candle_core::Error::Msg(format!(
                    "`log_prior` gave {:?} but the search runs in {:?} (the latent's type): \
                     convert it (`to_dtype`)",
                    lp.dtype(),
                    z.dtype()
                )),
            ));
        }
        Ok(lp)
    }

    fn check_condition(&self, b: usize) -> Result<()> {
        match (self.generator.num_conditions(), &self.condition) {
            (None, None) => Ok(()),
            (Some(c), Some(cond)) if cond.dims() == [b, c] => Ok(()),
            (Some(c), Some(cond)) => Err(Error::setting(
                "condition",
                format!("a tensor of shape {:?}", cond.dims()),
                format!("[{b}, {c}] for generator `{}`", self.generator_name),
            )),
            (Some(c), None) => Err(Error::setting(
                "condition",
                "none",
                format!(
                    "a class condition [B, {c}]: generator `{}` is class-conditional",
                    self.generator_name
                ),
            )),
            (None, Some(_)) => Err(Error::setting(
                "condition",
                "a tensor",
                format!("none: generator `{}` is unconditional", self.generator_name),
            )),
        }
    }

    fn chain_name(&self) -> String {
        let names: Vec<&str> = self.classifiers.iter().map(|(n, _)| n.as_str()).collect();
        format!("{} -> {}", self.generator_name, names.join(", "))
    }

    fn shape_error(&self, what: &str, expected: String, t: &Tensor) -> Error {
        self.shape_error_of(&self.generator_name, what, expected, t)
    }

    fn shape_error_of(&self, model: &str, what: &str, expected: String, t: &Tensor) -> Error {
        Error::Shape {
            model: model.to_string(),
            what: what.to_string(),
            expected,
            got: t.dims().to_vec(),
        }
    }
}

/// Refuses a classifier `model` of fewer than 2 classes: a distribution
/// over one class never differs from another, so every divergence would be
/// 0 wherever the search went, and every threshold would pass.
pub(crate) fn check_two_classes(model: &str, classes: usize) -> Result<()> {
    if classes < 2 {
        return Err(Error::TooFewClasses {
            model: model.to_string(),
            classes,
        });
    }
    Ok(())
}

/// Refuses a classifier whose every row of `logits` (at the gradient
/// audit's samples, or the search's first step) is a probability distribution: a softmax left at the
/// end of a model of one's own. The divergences softmax it again, which
/// squeezes it towards uniform (two certain predictions of different
/// classes give a KL of (e − 1) / (e + K − 1): 0.15 nats over 10 classes,
/// 0.017 over 100), and such a pair passed its `max_divergence`. Logits
/// that happen to be in [0, 1] and sum to 1 on every row, over 2 classes
/// or more, are no real model's.
pub(crate) fn refuse_probabilities(model: &str, logits: &Tensor) -> Result<()> {
    if logits.rank() != 2 || logits.dim(1).map_or(true, |k| k < 2) {
        return Ok(());
    }
    let rows = logits
        .to_dtype(DType::F64)
        .and_then(|t| t.to_vec2::<f64>())
        .map_err(Error::model(model, "read its logits"))?;
    let distribution = |row: &Vec<f64>| {
        row.iter().all(|p| (0.0..=1.0).contains(p)) && (row.iter().sum::<f64>() - 1.0).abs() <= 1e-3
    };
    if !rows.is_empty() && rows.iter().all(distribution) {
        return Err(Error::Probabilities {
            model: model.to_string(),
            samples: rows.len(),
        });
    }
    Ok(())
}

/// Refuses logits of `model` in another type than the search's (`dtype`,
/// the latent's): f64 logits failed in the divergence naming no model, and
/// f16 ones failed the gradient audit as a wrong backward.
pub(crate) fn check_logits_dtype(model: &str, logits: &Tensor, dtype: DType) -> Result<()> {
    if logits.dtype() == dtype {
        return Ok(());
    }
    Err(Error::model(model, "use its logits")(
        candle_core::Error::Msg(format!(
            "they are {:?} but the search runs in {:?} (the latent's type): \
         convert them (`to_dtype`)",
            logits.dtype(),
            dtype
        )),
    ))
}

/// `f()`, a section of the step in `GEVALDI_PROFILE`'s table (with the
/// device synchronised around it; nothing when the profile is off).
fn profiled<T>(device: &Device, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut out = None;
    crate::engine::profile_section(device, name, || {
        out = Some(f());
        Ok(())
    })
    .map_err(Error::tensor("synchronise the device for GEVALDI_PROFILE"))?;
    out.expect("a section runs its closure")
}

/// x0, each model's probabilities `[model][sample][class]`, the divergence
/// and the measures `[measure][sample]` at z0.
type Start = (Tensor, Vec<Vec<Vec<f32>>>, Vec<f64>, Vec<Vec<f64>>);

/// The seeded stream of the baseline's latents: stream 1 of `seed` (z0 is
/// drawn from stream 0), so that the baseline is neither z0 nor depends on
/// whether z0 was given.
pub(super) fn baseline_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

/// The divergences as recorded: every one is ≥ 0 by definition, but two
/// models that (nearly) agree give rounding noise of either sign (JS of
/// identical f32 inputs: ±7e-8), whose means made a lift of noise over
/// noise, positive when both were negative. Read as 0 (NaN stays NaN);
/// the ascent climbs the divergence as computed, so a sample where it is
/// −1e-9 still has its gradient.
fn not_below_zero(divergences: Vec<f64>) -> Vec<f64> {
    divergences
        .into_iter()
        .map(|d| if d < 0.0 { 0.0 } else { d })
        .collect()
}

/// ‖z − z0‖ / ‖z‖ per sample, from the rows of z and z0 (`[B · d]`
/// each, row-major), d the latent dimension. In f64, from the f32 latents.
pub(super) fn dz(z: &[f64], z0: &[f64], d: usize) -> Vec<f64> {
    z.chunks(d.max(1))
        .zip(z0.chunks(d.max(1)))
        .map(|(z, z0)| {
            let moved: f64 = z.iter().zip(z0).map(|(a, b)| (a - b) * (a - b)).sum();
            let norm: f64 = z.iter().map(|a| a * a).sum();
            moved.sqrt() / norm.sqrt()
        })
        .collect()
}

/// Each model's log-probabilities, as `[model][sample][class]`.
fn read_log_probs(log_probs: &[Tensor]) -> Result<Vec<Vec<Vec<f32>>>> {
    log_probs
        .iter()
        .map(|lp| {
            lp.to_dtype(DType::F32)
                .and_then(|lp| lp.to_vec2::<f32>())
                .map_err(Error::tensor("read log-probabilities"))
        })
        .collect()
}
