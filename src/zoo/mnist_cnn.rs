//! The MNIST CNN classifiers.

use candle_core::Device;
use candle_nn::{conv2d, linear, Conv2dConfig, VarBuilder};

use super::layers::{frozen, seeded_varmap};
use crate::engine::{Net, NetBuilder};

/// Shape of an MNIST CNN: two 3×3 conv layers (padding 1), each followed by
/// ReLU and 2×2 max-pooling, then a hidden linear layer with ReLU and the
/// output layer.
#[derive(Clone, Debug, PartialEq)]
pub struct MnistCnnConfig {
    /// Output channels of the two conv layers.
    pub channels: [usize; 2],
    /// Width of the hidden linear layer.
    pub hidden: usize,
    /// Number of classes. (Default: `10`.)
    pub classes: usize,
}

impl MnistCnnConfig {
    /// The smaller fixture classifier, `mnist-cnn-a`: channels 16, 32;
    /// hidden 64 (about 106k parameters).
    pub fn cnn_a() -> Self {
        MnistCnnConfig {
            channels: [16, 32],
            hidden: 64,
            classes: 10,
        }
    }

    /// The larger fixture classifier, `mnist-cnn-b`: channels 24, 48;
    /// hidden 128 (about 313k parameters).
    pub fn cnn_b() -> Self {
        MnistCnnConfig {
            channels: [24, 48],
            hidden: 128,
            classes: 10,
        }
    }
}

/// A CNN classifier of 28×28 greyscale digits in [0, 1].
///
/// Input `[B, 1, 28, 28]` (or `[B, 784]`); output logits `[B, classes]`.
///
/// Tensor names: `conv1.weight` `[c1, 1, 3, 3]`, `conv1.bias` `[c1]`,
/// `conv2.weight` `[c2, c1, 3, 3]`, `conv2.bias` `[c2]`,
/// `fc1.weight` `[hidden, c2·49]`, `fc1.bias`, `fc2.weight`
/// `[classes, hidden]`, `fc2.bias`. The flatten before `fc1` is in
/// (channel, row, column) order, as PyTorch's `flatten(1)`.
#[derive(Clone, Debug)]
pub struct MnistCnn {
    net: Net,
    class_names: Vec<String>,
}

impl MnistCnn {
    /// Loads the weights from `vb` (e.g. a safetensors file).
    pub fn load(vb: VarBuilder, cfg: &MnistCnnConfig) -> candle_core::Result<Self> {
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let [c1, c2] = cfg.channels;
        let conv1 = conv2d(1, c1, 3, pad, vb.pp("conv1"))?;
        let conv2 = conv2d(c1, c2, 3, pad, vb.pp("conv2"))?;
        let fc1 = linear(c2 * 7 * 7, cfg.hidden, vb.pp("fc1"))?;
        let fc2 = linear(cfg.hidden, cfg.classes, vb.pp("fc2"))?;
        let mut b = NetBuilder::new();
        let mut x = b.input();
        for conv in [&conv1, &conv2] {
            x = b.conv2d(x, conv);
            x = b.relu(x);
            x = b.max_pool2d(x, 2, 2, 0, false);
        }
        let x = b.flatten(x);
        let x = b.linear_layer(x, &fc1);
        let x = b.relu(x);
        let x = b.linear_layer(x, &fc2);
        Ok(MnistCnn {
            net: b.build(x),
            class_names: if cfg.classes == 10 {
                super::mnist_class_names()
            } else {
                (0..cfg.classes).map(|c| c.to_string()).collect()
            },
        })
    }

    /// A frozen model with seeded random weights (see
    /// [`seeded_varmap`]).
    pub fn random(cfg: &MnistCnnConfig, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let (_, varmap) = seeded_varmap(seed, device, |vb| Self::load(vb, cfg))?;
        Self::load(frozen(&varmap, device), cfg)
    }
}

super::net_classifier!(MnistCnn, |x| &crate::engine::reshape(
    x,
    &[x.dim(0)?, 1, 28, 28]
)?);
