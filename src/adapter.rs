//! Your own candle models as [`Classifier`]s, without porting them.
//!
//! [`ModuleClassifier`] wraps anything that maps a batch of images to
//! logits `[B, K]`: a `candle_nn::Module` (a model from candle-transformers,
//! a `candle_nn::Sequential`, your own struct) or a closure
//! `Fn(&Tensor) -> candle_core::Result<Tensor>`, and gives it the K class
//! names the reports use.
//!
//! The search differentiates the logits with respect to the images, so the
//! model's backward passes must be right: run a
//! [`GradientAudit`](crate::GradientAudit) on it first. Some of candle
//! 0.11's ops have a wrong or no backward (`max_pool2d`, `softmax_last_dim`,
//! `layer_norm`); the audit names the fix when it finds one.

use candle_core::{Module, Tensor};

use crate::engine::Net;
use crate::model::Classifier;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
