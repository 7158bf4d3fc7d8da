//! The small MLP base learner of the bagging ensemble.

use candle_core::Device;
use candle_nn::{linear, VarBuilder};

use super::layers::{frozen, seeded_varmap};
use crate::engine::{Net, NetBuilder};

/// Shape of an MNIST MLP: one hidden layer with ReLU.
#[derive(Clone, Debug, PartialEq)]
pub struct MnistMlpConfig {
    /// Width of the hidden layer. (Default: `32`.)
    pub hidden: usize,
    /// Number of classes. (Default: `10`.)
    pub classes: usize,
}

impl Default for MnistMlpConfig {
    fn default() -> Self {
        MnistMlpConfig {
            hidden: 32,
            classes: 10,
        }
    }
}

/// A one-hidden-layer MLP classifier of 28×28 digits in [0, 1]: the base
/// learner of the fixtures' bagging ensemble (`mnist-mlp`).
///
/// Input `[B, 1, 28, 28]` or `[B, 784]`; logits `[B, classes]`.
/// Tensor names: `fc1.weight` `[hidden, 784]`, `fc1.bias`,
/// `fc2.weight` `[classes, hidden]`, `fc2.bias`.
#[derive(Clone, Debug)]
pub struct MnistMlp {
    net: Net,
    class_names: Vec<String>,
}

impl MnistMlp {
    /// Loads the weights from `vb`.
    pub fn load(vb: VarBuilder, cfg: &MnistMlpConfig) -> candle_core::Result<Self> {
        let fc1 = linear(784, cfg.hidden, vb.pp("fc1"))?;
        let fc2 = linear(cfg.hidden, cfg.classes, vb.pp("fc2"))?;
        let mut b = NetBuilder::new();
        let x = b.input();
        let x = b.linear_layer(x, &fc1);
        let x = b.relu(x);
        let x = b.linear_layer(x, &fc2);
        Ok(MnistMlp {
            net: b.build(x),
            class_names: (0..cfg.classes).map(|c| c.to_string()).collect(),
        })
    }

    /// A frozen model with seeded random weights.
    pub fn random(cfg: &MnistMlpConfig, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let (_, varmap) = seeded_varmap(seed, device, |vb| Self::load(vb, cfg))?;
        Self::load(frozen(&varmap, device), cfg)
    }
}

super::net_classifier!(MnistMlp, |x| &crate::engine::reshape(
    x,
    &[x.dim(0)?, x.dims()[1..].iter().product()]
)?);
