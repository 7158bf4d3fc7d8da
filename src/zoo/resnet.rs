//! ResNet-18 and ResNet-50 (He et al., 2016) as torchvision builds them
//! (v1.5: a Bottleneck's stride sits on its 3×3 conv).

use candle_core::{Module, Tensor};
use candle_nn::{linear, Conv2d, Linear, VarBuilder};

use super::imagenet_class_names;
use super::layers::conv_same as conv;
use super::norm::BatchNorm;
use super::pooling::{adaptive_avg_pool2d, max_pool2d};

/// Which ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    /// `resnet18`: BasicBlocks [2, 2, 2, 2] (11.7M parameters).
    R18,
    /// `resnet50`: Bottlenecks [3, 4, 6, 3] (25.6M parameters).
    R50,
}

const EPS: f64 = 1e-5;

#[derive(Clone, Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn load(
        vb: VarBuilder,
        depth: ResNetDepth,
        inp: usize,
        planes: usize,
        stride: usize,
    ) -> candle_core::Result<(Self, usize)> {
        let cb = |i: usize, a, b, k, s| -> candle_core::Result<(Conv2d, BatchNorm)> {
            Ok((
                conv(vb.pp(format!("conv{i}")), a, b, k, s)?,
                BatchNorm::load(vb.pp(format!("bn{i}")), b, EPS)?,
            ))
        };
        let (convs, out) = match depth {
            ResNetDepth::R18 => (
                vec![cb(1, inp, planes, 3, stride)?, cb(2, planes, planes, 3, 1)?],
                planes,
            ),
            ResNetDepth::R50 => (
                vec![
                    cb(1, inp, planes, 1, 1)?,
                    cb(2, planes, planes, 3, stride)?,
                    cb(3, planes, planes * 4, 1, 1)?,
                ],
                planes * 4,
            ),
        };
        let downsample = if stride != 1 || inp != out {
            let d = vb.pp("downsample");
            Some((
                conv(d.pp("0"), inp, out, 1, stride)?,
                BatchNorm::load(d.pp("1"), out, EPS)?,
            ))
        } else {
            None
        };
        Ok((Block { convs, downsample }, out))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            y = bn.forward(&c.forward(&y)?)?;
            if i < last {
                y = y.relu()?;
            }
        }
        let identity = match &self.downsample {
            Some((c, bn)) => bn.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        (y + identity)?.relu()
    }
}

/// torchvision's `resnet18` / `resnet50`, loadable from their state dicts
/// saved as safetensors.
///
/// Tensor names: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
/// `layer{1-4}.{i}.conv{1-3}.weight`, `layer{1-4}.{i}.bn{1-3}.*`,
/// `layer{1-4}.0.downsample.{0.weight,1.*}`, `fc.{weight,bias}`
/// (`num_batches_tracked` is ignored). Batch norms run in inference mode,
/// built from plain ops; the stem's 3×3 stride-2 max-pool (which candle's
/// `max_pool2d_with_stride` cannot backpropagate) is
/// [`max_pool2d`](super::max_pool2d).
#[derive(Clone, Debug)]
pub struct ResNet {
    stem: (Conv2d, BatchNorm),
    blocks: Vec<Block>,
    fc: Linear,
    class_names: Vec<String>,
}

impl ResNet {
    /// Loads the weights from `vb`.
    pub fn load(vb: VarBuilder, depth: ResNetDepth, classes: usize) -> candle_core::Result<Self> {
        let stem = (
            conv(vb.pp("conv1"), 3, 64, 7, 2)?,
            BatchNorm::load(vb.pp("bn1"), 64, EPS)?,
        );
        let counts = match depth {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R50 => [3, 4, 6, 3],
        };
        let mut blocks = Vec::new();
        let mut inp = 64;
        for (l, (&n, planes)) in counts.iter().zip([64, 128, 256, 512]).enumerate() {
            for i in 0..n {
                let stride = if l > 0 && i == 0 { 2 } else { 1 };
                let vb = vb.pp(format!("layer{}", l + 1)).pp(i.to_string());
                let (block, out) = Block::load(vb, depth, inp, planes, stride)?;
                blocks.push(block);
                inp = out;
            }
        }
        Ok(ResNet {
            stem,
            blocks,
            fc: linear(inp, classes, vb.pp("fc"))?,
            class_names: imagenet_class_names(classes),
        })
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.1.forward(&self.stem.0.forward(x)?)?.relu()?;
        let mut x = max_pool2d(&x, 3, 2, 1, false)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        self.fc
            .forward(&adaptive_avg_pool2d(&x, 1, 1)?.flatten_from(1)?)
    }
}

super::classifier_from_forward!(ResNet);
