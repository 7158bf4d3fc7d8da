//! The gradient audit: does backpropagation through a model give the right
//! input gradient?
//!
//! The search trusts candle's backward passes, and some of them are wrong or
//! silently missing (candle 0.11's `max_pool2d` scales its gradient by 1/k²;
//! `softmax_last_dim` and `layer_norm` have none). A search on wrong gradients
//! still "runs", so every built-in architecture is audited, and users can
//! audit their own models with the same call.
//!
//! For a model output y = f(x) and a fixed random weighting r of the same
//! shape as y, the audit takes the scalar s(x) = Σ r ⊙ y (summed in f64) and,
//! along each of a few unit directions v, compares
//!
//! ```text
//! backprop           = ⟨∇_x s(x), v⟩
//! finite difference  = (s(x + h v) − s(x − h v)) / (2h),  h = step · max(‖x‖, 1)
//! ratio              = backprop / finite difference
//! ```
//!
//! Each direction tries h, h/10, h/100 and h/1000 and keeps the ratio
//! closest to 1: in f32, a large h crosses ReLU kinks and a small one drowns
//! in rounding (of logits that are large beside their change: a right
//! gradient failed by 5% where the ladder started at 10⁻⁴·‖x‖), so one step
//! size can fail a right gradient by a few percent; a wrong gradient is
//! wrong at every step size.
//!
//! The first direction is the backpropagated gradient itself, the others mix
//! it half and half with a random unit vector: a purely random direction in
//! a space of thousands of pixels is nearly orthogonal to the gradient, and
//! its tiny directional derivative drowns in f32 rounding and ReLU kinks.
//! A gradient scaled by c gives ratio c along every direction. A gradient
//! missing a component (a branch whose gradient is dropped) is still right
//! along itself, and shows only along the random directions, in proportion
//! to their share of the missing part: about 1/√n of it among n inputs, too
//! little among an image's pixels, enough among a latent's few dimensions,
//! so audit a classifier of your own from z too ([`GradientAudit::chain`],
//! which the suite runs).
//!
//! Audit at generic inputs, such as decoded samples (where the search
//! evaluates models). At a kink the model is not differentiable and no
//! gradient matches finite differences: real MNIST digits have blank
//! backgrounds where a conv's output is constant and every position of a
//! max-pool window ties, and a VAE's decoded digits have backgrounds of
//! about 1e-6, where a conv without bias gives about 1e-6 and every ReLU
//! after it sits on its kink. Move such inputs off their kinks first (the
//! harness audits a classifier at its generator's samples each moved by
//! 1e-3 of the output range).
//!
//! The audit passes when every ratio is within 1 ± `tolerance` (a ratio of
//! exactly 1 is recorded when both are 0). No gradient at all is an error of
//! its own, [`Error::MissingGradient`], and so is an output that is not
//! finite at the audited input, [`Error::NonFiniteOutput`], and a gradient
//! that is not finite where the output is, [`Error::NonFiniteGradient`]; a model's
//! output for a sample that depends on the other samples of its batch
//! (batch statistics) is [`Error::BatchDependent`].

use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{sample_standard_normal, Classifier, Generator};

/// Settings of a gradient audit; see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GradientAudit {
    /// Random directions checked. (Default: `4`.)
    pub directions: usize,
    /// Largest relative finite-difference step: h = step · max(‖x‖, 1),
    /// then h/10, h/100 and h/1000. (Default: `1e-3`.)
    pub step: f64,
    /// Allowed |ratio − 1|. (Default: `0.05`; candle's max_pool2d bug gives
    /// ratios of 1/4 per pooling layer.)
    pub tolerance: f64,
    /// Seed of the directions and of the output weighting r. (Default: `0`.)
    pub seed: u64,
}

impl Default for GradientAudit {
    fn default() -> Self {
        GradientAudit {
            directions: 4,
            step: 1e-3,
            tolerance: 0.05,
            seed: 0,
        }
    }
}

/// One direction of an audit.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionCheck {
    /// ⟨∇s, v⟩ from backpropagation.
    pub backprop: f64,
    /// The central finite difference along v.
    pub finite_difference: f64,
    /// backprop / finite difference.
    pub ratio: f64,
}

/// A passed audit.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditReport {
    /// The model's name.
    pub model: String,
    /// One check per direction.
    pub directions: Vec<DirectionCheck>,
}

impl AuditReport {
    /// The largest |ratio − 1| over the directions.
    pub fn worst_deviation(&self) -> f64 {
        self.directions
            .iter()
            .map(|d| (d.ratio - 1.0).abs())
            .fold(0.0, f64::max)
    }
}

impl GradientAudit {
    /// Sets [`directions`](Self::directions).
    pub fn directions(mut self, directions: usize) -> Self {
        self.directions = directions;
        self
    }
    /// Sets [`step`](Self::step).
    pub fn step(mut self, step: f64) -> Self {
        self.step = step;
        self
    }
    /// Sets [`tolerance`](Self::tolerance).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }
    /// Sets [`seed`](Self::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Audits the gradient of a classifier's logits with respect to its
    /// input batch `x`.
    pub fn classifier(
        &self,
        name: &str,
        model: &dyn Classifier,
        x: &Tensor,
    ) -> Result<AuditReport> {
        let logits = |x: &Tensor| model.logits(x);
        self.run(name, "input", x, logits, Some(&logits))
    }

    /// Audits the gradient of a generator's output with respect to the
    /// latents `z` `[B, d]` (with the class condition, if it takes one).
    pub fn generator(
        &self,
        name: &str,
        model: &dyn Generator,
        z: &Tensor,
        condition: Option<&Tensor>,
    ) -> Result<AuditReport> {
        let first = first_row(condition)?;
        self.run(
            name,
            "latent z",
            z,
            |z| model.decode(z, condition),
            Some(&|z: &Tensor| model.decode(z, first.as_ref())),
        )
    }

    /// Audits the gradient the search ascends through a classifier: that of
    /// its logits of a generator's samples with respect to the latents `z`
    /// `[B, d]` (with the class condition, if it takes one). Audit a model of
    /// your own here as well as at images
    /// ([`classifier`](Self::classifier)): a gradient that misses a part of
    /// the model (a `detach` on one branch, an op without backward inside a
    /// residual block) is still the whole gradient along itself, and a
    /// random direction among thousands of pixels sees almost nothing of the
    /// part it misses (a dropped branch that moved the logits by 1 passed
    /// the audit at images), while among the latent's few dimensions it sees
    /// a good share of it.
    pub fn chain(
        &self,
        name: &str,
        generator: &dyn Generator,
        classifier: &dyn Classifier,
        z: &Tensor,
        condition: Option<&Tensor>,
    ) -> Result<AuditReport> {
        let first = first_row(condition)?;
        self.run(
            name,
            "latent z",
            z,
            |z| classifier.logits(&generator.decode(z, condition)?),
            Some(&|z: &Tensor| classifier.logits(&generator.decode(z, first.as_ref())?)),
        )
    }

    /// Audits the gradient of a generator's log p(z) with respect to the
    /// latents `z` `[B, d]`, the prior term the search climbs (weighted by
    /// λ). A log p(z) that carries no gradient passes only where it does
    /// not depend on z (a flat prior: the same value at z and at z + ½);
    /// one that does (computed on the host, say, and made a tensor again)
    /// would leave the search blind to the prior, and is an
    /// [`Error::MissingGradient`].
    pub fn log_prior(&self, name: &str, model: &dyn Generator, z: &Tensor) -> Result<()> {
        let what = format!("{name}.log_prior");
        let var = Var::from_tensor(&z.detach()).map_err(Error::tensor("make z a variable"))?;
        let lp = model
            .log_prior(var.as_tensor())
            .map_err(Error::model(name, "compute log p(z)"))?;
        let grads = lp
            .to_dtype(DType::F64)
            .and_then(|t| t.sum_all())
            .and_then(|t| t.backward())
            .map_err(|e| Error::model(name, "backpropagate log p(z)")(with_backward_hint(e)))?;
        if grads.get(var.as_tensor()).is_some() {
            return self
                .run(&what, "latent z", z, |z| model.log_prior(z), None)
                .map(|_| ());
        }
        let eval = |z: &Tensor| {
            model
                .log_prior(z)
                .map_err(Error::model(name, "compute log p(z)"))
        };
        if unmoved(&z.detach(), &lp, &eval)? {
            return Ok(());
        }
        Err(Error::MissingGradient {
            model: what,
            input: "latent z",
        })
    }

    /// Audits any differentiable function of one tensor.
    pub fn function(
        &self,
        name: &str,
        x: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<AuditReport> {
        self.run(name, "input", x, f, None)
    }

    /// The audit of `f` at `x`; `first`, where `f` is a model of a batch,
    /// maps the batch's first sample alone (its condition too), whose
    /// output must be the first row of the batch's
    /// ([`Error::BatchDependent`]).
    fn run(
        &self,
        name: &str,
        input: &'static str,
        x: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        first: Option<&FirstSample<'_>>,
    ) -> Result<AuditReport> {
        if self.directions == 0 {
            return Err(Error::setting("audit.directions", 0, "at least 1"));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(Error::setting(
                "audit.step",
                self.step,
                "a finite number > 0",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(Error::setting(
                "audit.tolerance",
                self.tolerance,
                "a finite number > 0",
            ));
        }
        let eval = |x: &Tensor| f(x).map_err(Error::model(name, "run the forward pass"));
        let dev = x.device();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let x = x.detach();
        let var = Var::from_tensor(&x).map_err(Error::tensor("make the input a variable"))?;
        let y = eval(var.as_tensor())?;
        self.check_deterministic(name, input, &y, &eval(&x)?)?;
        if let Some(first) = first {
            check_per_sample(name, input, &x, &y, first)?;
        }
        let weights = sample_standard_normal(y.shape(), &mut rng, dev)
            .and_then(|r| r.to_dtype(DType::F64))
            .map_err(Error::tensor("draw the output weighting"))?;
        let scalar = |y: &Tensor| -> candle_core::Result<Tensor> {
            y.to_dtype(DType::F64)?.mul(&weights)?.sum_all()
        };
        let grads = scalar(&y)
            .and_then(|s| s.backward())
            .map_err(|e| Error::model(name, "backpropagate")(with_backward_hint(e)))?;
        let Some(grad) = grads.get(var.as_tensor()) else {
            // A constant, or the input multiplied by 0: candle keeps no
            // graph for those, and a search through it has nothing to climb.
            let model = name.to_string();
            return Err(if unmoved(&x, &y, &eval)? {
                Error::ConstantOutput { model, input }
            } else {
                Error::MissingGradient { model, input }
            });
        };
        let grad = grad
            .to_dtype(DType::F64)
            .map_err(Error::tensor("read the gradient"))?;
        let gradient = values(&grad)?;
        let count = gradient.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(Error::NonFiniteGradient {
                model: name.to_string(),
                input,
                count,
                total: gradient.len(),
            });
        }
        let x_norm = norm(&x)?;
        let h = self.step * x_norm.max(1.0);

        let mut checks = Vec::with_capacity(self.directions);
        for direction in 0..self.directions {
            let v = self.direction(direction, &grad, &x, &mut rng)?;
            let backprop = (&grad * v.to_dtype(DType::F64).map_err(Error::tensor("cast"))?)
                .and_then(|p| p.sum_all()?.to_scalar::<f64>())
                .map_err(Error::tensor("project the gradient"))?;
            let shifted = |h: f64| -> Result<f64> {
                let xs = (&x + v.affine(h, 0.0).map_err(Error::tensor("shift the input"))?)
                    .and_then(|xs| xs.to_dtype(x.dtype()))
                    .map_err(Error::tensor("shift the input"))?;
                scalar(&eval(&xs)?)
                    .and_then(|s| s.to_scalar::<f64>())
                    .map_err(Error::tensor("evaluate the shifted input"))
            };
            let ratio_of = |fd: f64| {
                if backprop == 0.0 && fd == 0.0 {
                    1.0
                } else {
                    backprop / fd
                }
            };
            let mut best: Option<(f64, f64)> = None;
            for h in [h, h / 10.0, h / 100.0, h / 1000.0] {
                let fd = (shifted(h)? - shifted(-h)?) / (2.0 * h);
                let ratio = ratio_of(fd);
                let closer = best.is_none_or(|(_, r)| (ratio - 1.0).abs() < (r - 1.0).abs());
                if closer {
                    best = Some((fd, ratio));
                }
            }
            let (finite_difference, ratio) = best.expect("four step sizes");
            let within = (ratio - 1.0).abs() <= self.tolerance; // false for NaN
            if !within {
                return Err(Error::GradientMismatch {
                    model: name.to_string(),
                    direction,
                    backprop,
                    finite_difference,
                    ratio,
                    tolerance: self.tolerance,
                });
            }
            checks.push(DirectionCheck {
                backprop,
                finite_difference,
                ratio,
            });
        }
        Ok(AuditReport {
            model: name.to_string(),
            directions: checks,
        })
    }
}

impl GradientAudit {
    /// Refuses a model whose output `y` is not finite
    /// ([`Error::NonFiniteOutput`]), or whose two outputs `y`, `again` for
    /// one input differ by more than 10⁻³ of their largest magnitude
    /// (dropout left on moves them by O(1); rounding, on a GPU, by 10⁻⁷),
    /// where finite differences would measure the noise.
    fn check_deterministic(
        &self,
        name: &str,
        input: &'static str,
        y: &Tensor,
        again: &Tensor,
    ) -> Result<()> {
        let (a, b) = (values(y)?, values(again)?);
        let count = a.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(Error::NonFiniteOutput {
                model: name.to_string(),
                input,
                count,
                total: a.len(),
            });
        }
        let scale = a.iter().fold(0f64, |m, v| m.max(v.abs()));
        let difference = largest_difference(&a, &b);
        if difference > 1e-3 * scale {
            return Err(Error::Nondeterministic {
                model: name.to_string(),
                input,
                difference,
                scale,
            });
        }
        Ok(())
    }

    /// Direction 0 is the backpropagated gradient itself; direction i > 0
    /// is (ĝ + u_i) / ‖ĝ + u_i‖ for a random unit vector u_i, where ĝ is the
    /// unit gradient. A purely random direction in a space of thousands of
    /// pixels is nearly orthogonal to the gradient, so its directional
    /// derivative drowns in f32 rounding and ReLU kinks; these directions
    /// keep a large derivative and still probe components the gradient may
    /// have missed.
    fn direction(
        &self,
        index: usize,
        grad: &Tensor,
        x: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let unit = |t: &Tensor| -> Result<Tensor> {
            let n = norm(t)?;
            if n == 0.0 {
                return Ok(t.clone());
            }
            (t / n).map_err(Error::tensor("normalise a direction"))
        };
        let g = unit(
            &grad
                .to_dtype(x.dtype())
                .map_err(Error::tensor("cast the gradient"))?,
        )?;
        let u = sample_standard_normal(x.shape(), rng, x.device())
            .map_err(Error::tensor("draw a direction"))?;
        if index == 0 && norm(&g)? > 0.0 {
            return Ok(g);
        }
        unit(&(&g + unit(&u)?).map_err(Error::tensor("mix a direction"))?)
    }
}

/// A model of a batch evaluated at the batch's first sample alone.
type FirstSample<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

/// The first row of a batch's condition, for its first sample alone.
fn first_row(condition: Option<&Tensor>) -> Result<Option<Tensor>> {
    condition
        .map(|c| c.narrow(0, 0, 1))
        .transpose()
        .map_err(Error::tensor("take the first sample's condition"))
}

/// Refuses a model whose output `y` for the batch `x` (of 2 or more
/// samples) has a first row that differs from its output for the first
/// sample alone, `first`, by more than 10⁻³ of the largest magnitude of
/// both: batch statistics (a batch norm in training mode) couple the
/// samples, and the search, which climbs each sample's divergence, would
/// climb through the others. It passed the audit, and one with only two
/// samples to normalise over failed it with the advice for a wrong
/// backward. A forward pass that fails on one sample, or gives another
/// shape, is left to the checks that see it.
fn check_per_sample(
    name: &str,
    input: &'static str,
    x: &Tensor,
    y: &Tensor,
    first: &FirstSample<'_>,
) -> Result<()> {
    let batch = x.dims().first().copied().unwrap_or(0);
    if batch < 2 || y.dims().first() != Some(&batch) {
        return Ok(());
    }
    let Ok(alone) = x.narrow(0, 0, 1).and_then(|x0| first(&x0)) else {
        return Ok(());
    };
    if alone.dims()[1..] != y.dims()[1..] {
        return Ok(());
    }
    let row = y
        .narrow(0, 0, 1)
        .map_err(Error::tensor("take the first row"))?;
    let (a, b) = (values(&row)?, values(&alone)?);
    let scale = a
        .iter()
        .chain(&b)
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let difference = largest_difference(&a, &b);
    if difference > 1e-3 * scale {
        return Err(Error::BatchDependent {
            model: name.to_string(),
            input,
            batch,
            difference,
            scale,
        });
    }
    Ok(())
}

/// The largest |a − b| over the places where both are finite.
fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(p, q)| p.is_finite() && q.is_finite())
        .fold(0f64, |m, (p, q)| m.max((p - q).abs()))
}

/// A backward pass that failed outright, with what to do about it.
fn with_backward_hint(e: candle_core::Error) -> candle_core::Error {
    let hint = if e.to_string().contains("maxpool2d") {
        "candle 0.11's max_pool2d_with_stride has no backward when the kernel and the stride \
         differ (and a wrong one when they agree): pool with gevaldi::zoo::max_pool2d, which \
         has a right one, or use gevaldi's zoo models (e.g. zoo::ResNet for a ResNet)"
    } else {
        "an op of the model has no backward pass: build it from ops that have one"
    };
    // The backtrace candle captures under RUST_BACKTRACE would split the
    // cause from the hint; the cause names the op.
    let e = match e {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        e => e,
    };
    candle_core::Error::Msg(format!("{e}; {hint}"))
}

fn norm(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>())
        .map_err(Error::tensor("compute a norm"))
}

/// Whether `y = eval(x)` stays the same, to the bit, with every value of `x`
/// moved by ½: what tells an output that does not depend on its input (a
/// flat log p(z), a constant classifier) from one whose gradient was
/// dropped, where backpropagation gave none.
fn unmoved(x: &Tensor, y: &Tensor, eval: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<bool> {
    let moved = (x + 0.5).map_err(Error::tensor("shift the input"))?;
    Ok(values(y)? == values(&eval(&moved)?)?)
}

/// A model's output, every value in f64.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(Error::tensor("read a model's output"))
}
