//! SqueezeNet 1.0 and 1.1 (Iandola et al., 2016) as torchvision builds them.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};

use super::imagenet_class_names;
use super::pooling::{adaptive_avg_pool2d, max_pool2d};

/// Which SqueezeNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqueezeNetVersion {
    /// `squeezenet1_0` (1.25M parameters).
    V1_0,
    /// `squeezenet1_1` (1.24M parameters, 2.4x cheaper).
    V1_1,
}

#[derive(Clone, Debug)]
struct Fire {
    squeeze: Conv2d,
    expand1x1: Conv2d,
    expand3x3: Conv2d,
}

impl Fire {
    fn load(
        vb: VarBuilder,
        inp: usize,
        s: usize,
        e1: usize,
        e3: usize,
    ) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Fire {
            squeeze: conv2d(inp, s, 1, Default::default(), vb.pp("squeeze"))?,
            expand1x1: conv2d(s, e1, 1, Default::default(), vb.pp("expand1x1"))?,
            expand3x3: conv2d(s, e3, 3, pad1, vb.pp("expand3x3"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = self.squeeze.forward(x)?.relu()?;
        let a = self.expand1x1.forward(&s)?.relu()?;
        let b = self.expand3x3.forward(&s)?.relu()?;
        Tensor::cat(&[a, b], 1)
    }
}

#[derive(Clone, Debug)]
enum Layer {
    Conv(Conv2d),
    Pool,
    Fire(Fire),
}

/// torchvision's `squeezenet1_0` / `squeezenet1_1`, loadable from their
/// state dicts saved as safetensors.
///
/// Tensor names: `features.0.{weight,bias}` (the stem conv), then
/// `features.N.{squeeze,expand1x1,expand3x3}.{weight,bias}` for each Fire
/// module at its index N in `features`, and `classifier.1.{weight,bias}`
/// (the final 1×1 conv). Max-pools are 3×3 stride 2 with ceil mode.
#[derive(Clone, Debug)]
pub struct SqueezeNet {
    layers: Vec<Layer>,
    final_conv: Conv2d,
    class_names: Vec<String>,
}

impl SqueezeNet {
    /// Loads the weights from `vb`.
    pub fn load(
        vb: VarBuilder,
        version: SqueezeNetVersion,
        classes: usize,
    ) -> candle_core::Result<Self> {
        let f = vb.pp("features");
        let fire = |i: usize, inp, s, e| -> candle_core::Result<Layer> {
            Ok(Layer::Fire(Fire::load(f.pp(i.to_string()), inp, s, e, e)?))
        };
        let stem = |k, c| {
            let cfg = Conv2dConfig {
                stride: 2,
                ..Default::default()
            };
            conv2d(3, c, k, cfg, f.pp("0")).map(Layer::Conv)
        };
        let layers = match version {
            SqueezeNetVersion::V1_0 => vec![
                stem(7, 96)?,
                Layer::Pool,
                fire(3, 96, 16, 64)?,
                fire(4, 128, 16, 64)?,
                fire(5, 128, 32, 128)?,
                Layer::Pool,
                fire(7, 256, 32, 128)?,
                fire(8, 256, 48, 192)?,
                fire(9, 384, 48, 192)?,
                fire(10, 384, 64, 256)?,
                Layer::Pool,
                fire(12, 512, 64, 256)?,
            ],
            SqueezeNetVersion::V1_1 => vec![
                stem(3, 64)?,
                Layer::Pool,
                fire(3, 64, 16, 64)?,
                fire(4, 128, 16, 64)?,
                Layer::Pool,
                fire(6, 128, 32, 128)?,
                fire(7, 256, 32, 128)?,
                Layer::Pool,
                fire(9, 256, 48, 192)?,
                fire(10, 384, 48, 192)?,
                fire(11, 384, 64, 256)?,
                fire(12, 512, 64, 256)?,
            ],
        };
        Ok(SqueezeNet {
            layers,
            final_conv: conv2d(
                512,
                classes,
                1,
                Default::default(),
                vb.pp("classifier").pp("1"),
            )?,
            class_names: imagenet_class_names(classes),
        })
    }
}

impl Module for SqueezeNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(c) => c.forward(&x)?.relu()?,
                Layer::Pool => max_pool2d(&x, 3, 2, 0, true)?,
                Layer::Fire(f) => f.forward(&x)?,
            };
        }
        let x = self.final_conv.forward(&x)?.relu()?;
        adaptive_avg_pool2d(&x, 1, 1)?.flatten_from(1)
    }
}

super::classifier_from_forward!(SqueezeNet);
