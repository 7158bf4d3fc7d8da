//! Your own candle models as [`Classifier`]s and [`Generator`]s, without
//! porting them.
//!
//! [`ModuleClassifier`] wraps anything that maps a batch of images to
//! logits `[B, K]`: a `candle_nn::Module` (a model from candle-transformers,
//! a `candle_nn::Sequential`, your own struct) or a closure
//! `Fn(&Tensor) -> candle_core::Result<Tensor>`, and gives it the K class
//! names the reports use. [`ModuleGenerator`] wraps one that maps latents
//! `[B, d]` to images, an unconditional generator with a standard normal
//! prior.
//!
//! The search differentiates the logits with respect to the images, so the
//! model's backward passes must be right: run a
//! [`GradientAudit`](crate::GradientAudit) on it first. Some of candle
//! 0.11's ops have a wrong or no backward (`max_pool2d`, `softmax_last_dim`,
//! `layer_norm`); the audit names the fix when it finds one.

use candle_core::{Module, Tensor};

use crate::engine::Net;
use crate::model::{Classifier, Generator};

/// A [`Classifier`] from a module (or closure) that maps images to logits,
/// with the names of its classes.
///
/// ```
/// # fn main() -> gevaldi::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{Module, VarBuilder, VarMap};
/// use gevaldi::{Classifier, GradientAudit, ModuleClassifier};
///
/// let dev = Device::Cpu;
/// // Any candle model: here a linear layer over flattened 1×8×8 images.
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
/// let linear = candle_nn::linear(64, 3, vb.pp("head"))?;
/// let model = ModuleClassifier::from_fn(
///     move |x: &Tensor| linear.forward(&x.flatten_from(1)?),
///     ["cat", "dog", "bird"],
/// );
///
/// let x = Tensor::rand(0f32, 1.0, (2, 1, 8, 8), &dev)?;
/// assert_eq!(model.logits(&x)?.dims(), [2, 3]);
/// assert_eq!(model.class_names()[1], "dog");
/// // Check its input gradients before searching with it.
/// GradientAudit::default().classifier("linear", &model, &x)?;
///
/// // A `candle_nn::Module` is wrapped the same way.
/// let head = candle_nn::seq().add(|x: &Tensor| x.flatten_from(1)).add(
///     candle_nn::linear(64, 3, vb.pp("other"))?,
/// );
/// let model = ModuleClassifier::new(head, ["cat", "dog", "bird"]);
/// assert_eq!(model.num_classes(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ModuleClassifier<M> {
    module: M,
    class_names: Vec<String>,
    /// Whether the module is a [`Net`], whose every op the engine's tape
    /// records ([`ModuleClassifier::from_net`]).
    taped: bool,
}

impl<M: Module> ModuleClassifier<M> {
    /// Wraps `module`, whose `forward` maps images `[B, …]` to logits
    /// `[B, K]`, where K is the number of `class_names` (in logit order).
    pub fn new(module: M, class_names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ModuleClassifier {
            module,
            class_names: class_names.into_iter().map(Into::into).collect(),
            taped: false,
        }
    }

    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }
}

impl ModuleClassifier<Net> {
    /// Wraps a network described with gevaldi's layer vocabulary
    /// ([`NetBuilder`](crate::NetBuilder)), whose output is the logits
    /// `[B, K]` for K `class_names`: it runs on the engine the built-in
    /// models run on (gevaldi's CPU kernels, the device-generic path on a
    /// GPU), and the search walks its backward itself, as for a built-in
    /// model, where [`ModuleClassifier::new`] would leave it to candle's
    /// autograd.
    pub fn from_net(net: Net, class_names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ModuleClassifier {
            taped: true,
            ..ModuleClassifier::new(net, class_names)
        }
    }
}

impl<F> ModuleClassifier<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    /// Wraps a closure that maps images to logits; the same as
    /// [`ModuleClassifier::new`], which takes closures too, but the bound
    /// lets the compiler infer the closure's argument type.
    pub fn from_fn(f: F, class_names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ModuleClassifier::new(f, class_names)
    }
}

impl<M: Module> Classifier for ModuleClassifier<M> {
    /// The module's output, checked to be `[B, K]` for a batch of B and K
    /// class names.
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.module.forward(x)?;
        let batch = x.dims().first().copied();
        let k = self.class_names.len();
        if logits.rank() != 2 || Some(logits.dims()[0]) != batch || logits.dims()[1] != k {
            candle_core::bail!(
                "the module gave an output of shape {:?} for an input of shape {:?}; \
                 expected logits [{}, {k}] (batch, one per class name: {k} were given)",
                logits.dims(),
                x.dims(),
                batch.map_or("B".to_string(), |b| b.to_string()),
            );
        }
        Ok(logits)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// A [`Net`] from [`ModuleClassifier::from_net`]: the search records
    /// its ops and checks that the recording reaches from z to every
    /// figure, else it keeps candle's autograd.
    fn taped(&self) -> bool {
        self.taped
    }
}

/// An unconditional [`Generator`] from a module (or closure) that maps
/// latents `[B, d]` to a batch the classifiers take, with a standard
/// normal prior over its d latent dimensions.
///
/// Its defaults, each a [`Generator`] default: the decoded values lie in
/// `(0.0, 1.0)` ([`ModuleGenerator::with_output_range`] declares another
/// range, e.g. `(-1.0, 1.0)` for a tanh output), the prior is N(0, I), and
/// there is no encoder and no condition (a class-conditional generator, or
/// one with another prior, implements [`Generator`] itself).
///
/// ```
/// # fn main() -> gevaldi::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// use gevaldi::{Activation, Generator, GradientAudit, ModuleGenerator, NetBuilder};
///
/// let dev = Device::Cpu;
/// // z [B, 8] -> 2 × 4 × 4 -> upsampled to 8 × 8 -> a 3×3 conv -> tanh.
/// let mut b = NetBuilder::new();
/// let z = b.input();
/// let w = Tensor::randn(0f32, 0.3, (32, 8), &dev)?;
/// let h = b.linear(z, &w, None);
/// let h = b.reshape(h, &[2, 4, 4]);
/// let h = b.upsample_nearest2d(h, 2);
/// let conv = candle_nn::Conv2d::new(
///     Tensor::randn(0f32, 0.3, (1, 2, 3, 3), &dev)?,
///     None,
///     candle_nn::Conv2dConfig { padding: 1, ..Default::default() },
/// );
/// let h = b.conv2d(h, &conv);
/// let x = b.act(h, Activation::Tanh);
/// let generator = ModuleGenerator::from_net(b.build(x), 8).with_output_range(-1.0, 1.0);
///
/// let z = Tensor::randn(0f32, 1.0, (2, 8), &dev)?;
/// assert_eq!(generator.decode(&z, None)?.dims(), [2, 1, 8, 8]);
/// // Check its gradients before searching its latent space.
/// GradientAudit::default().generator("mine", &generator, &z, None)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ModuleGenerator<M> {
    module: M,
    latent_dim: usize,
    output_range: (f32, f32),
    /// Whether the module is a [`Net`] ([`ModuleGenerator::from_net`]).
    taped: bool,
}

impl<M: Module> ModuleGenerator<M> {
    /// Wraps `module`, whose `forward` maps latents `[B, latent_dim]` to a
    /// batch of B images (or whatever the classifiers take).
    pub fn new(module: M, latent_dim: usize) -> Self {
        ModuleGenerator {
            module,
            latent_dim,
            output_range: (0.0, 1.0),
            taped: false,
        }
    }

    /// Declares the range `(low, high)` of the decoded values
    /// ([`Generator::output_range`]; default `(0.0, 1.0)`).
    pub fn with_output_range(mut self, low: f32, high: f32) -> Self {
        self.output_range = (low, high);
        self
    }

    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }
}

impl ModuleGenerator<Net> {
    /// Wraps a network described with gevaldi's layer vocabulary
    /// ([`NetBuilder`](crate::NetBuilder)) that maps latents `[B,
    /// latent_dim]` to images: it runs on the engine the built-in models
    /// run on, and the search walks its backward itself, as for a built-in
    /// generator, where [`ModuleGenerator::new`] would leave it to
    /// candle's autograd.
    pub fn from_net(net: Net, latent_dim: usize) -> Self {
        ModuleGenerator {
            taped: true,
            ..ModuleGenerator::new(net, latent_dim)
        }
    }
}

impl<F> ModuleGenerator<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    /// Wraps a closure that maps latents to images; the same as
    /// [`ModuleGenerator::new`], with the closure's argument type
    /// inferred.
    pub fn from_fn(f: F, latent_dim: usize) -> Self {
        ModuleGenerator::new(f, latent_dim)
    }
}

impl<M: Module> Generator for ModuleGenerator<M> {
    fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// The module's output for `z` `[B, d]`, checked to hold B samples; a
    /// condition is an error (the generator is unconditional).
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if condition.is_some() {
            candle_core::bail!(
                "this ModuleGenerator is unconditional but was given a condition: a \
                 class-conditional generator implements gevaldi::Generator itself"
            );
        }
        let d = self.latent_dim;
        if z.rank() != 2 || z.dims()[1] != d {
            candle_core::bail!(
                "the generator takes latents [B, {d}] (its latent_dim), got shape {:?}",
                z.dims()
            );
        }
        let x = self.module.forward(z)?;
        if x.dims().first() != z.dims().first() {
            candle_core::bail!(
                "the module gave an output of shape {:?} for latents of shape {:?}; \
                 expected one sample per latent ([{}, …])",
                x.dims(),
                z.dims(),
                z.dims()[0]
            );
        }
        Ok(x)
    }

    fn output_range(&self) -> (f32, f32) {
        self.output_range
    }

    /// A [`Net`] from [`ModuleGenerator::from_net`]: the search records
    /// its ops and checks that the recording reaches from z to every
    /// figure, else it keeps candle's autograd.
    fn taped(&self) -> bool {
        self.taped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_module_generator_checks_its_latents_and_its_output_batch() {
        let dev = Device::Cpu;
        let g = ModuleGenerator::from_fn(|z: &Tensor| z.affine(2.0, 0.0), 3);
        let z = Tensor::new(&[[1f32, 2.0, 3.0]], &dev).unwrap();
        assert_eq!(
            g.decode(&z, None).unwrap().to_vec2::<f32>().unwrap(),
            [[2.0, 4.0, 6.0]]
        );
        assert_eq!(g.latent_dim(), 3);
        assert_eq!(g.output_range(), (0.0, 1.0));
        assert_eq!(g.with_output_range(-1.0, 1.0).output_range(), (-1.0, 1.0));
        let g = ModuleGenerator::from_fn(|z: &Tensor| z.affine(2.0, 0.0), 2);
        let err = g.decode(&z, None).unwrap_err().to_string();
        assert!(
            err.contains("takes latents [B, 2] (its latent_dim), got shape [1, 3]"),
            "{err}"
        );
        let err = g
            .decode(&z.narrow(1, 0, 2).unwrap(), Some(&z))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unconditional but was given a condition"),
            "{err}"
        );
        let g = ModuleGenerator::from_fn(|z: &Tensor| z.flatten_all(), 3);
        let z2 = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let err = g.decode(&z2, None).unwrap_err().to_string();
        assert!(
            err.contains("shape [6] for latents of shape [2, 3]"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_number_of_classes_is_an_error_naming_the_shapes() {
        let dev = Device::Cpu;
        let model = ModuleClassifier::from_fn(|x: &Tensor| x.flatten_from(1), ["a", "b"]);
        let x = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        let err = model.logits(&x).unwrap_err().to_string();
        assert!(err.contains("[4, 3]"), "{err}");
        assert!(err.contains("expected logits [4, 2]"), "{err}");
        let x = Tensor::zeros((4, 2), candle_core::DType::F32, &dev).unwrap();
        assert_eq!(model.logits(&x).unwrap().dims(), [4, 2]);
    }

    #[test]
    fn logits_are_the_modules_output() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, -2.0], [3.0, 0.5]], &dev).unwrap();
        let model = ModuleClassifier::new(|x: &Tensor| x.affine(2.0, 1.0), vec!["a", "b"]);
        assert_eq!(
            model.logits(&x).unwrap().to_vec2::<f32>().unwrap(),
            [[3.0, -3.0], [7.0, 2.0]]
        );
        assert_eq!(model.class_names(), ["a", "b"]);
        assert_eq!(model.num_classes(), 2);
    }
}
