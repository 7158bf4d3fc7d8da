//! ConvNeXt (Liu et al., 2022) as torchvision builds it.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::imagenet_class_names;
use super::norm::LayerNorm;
use super::pooling::adaptive_avg_pool2d;

/// Which ConvNeXt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvNextSize {
    /// `convnext_tiny`: dims 96-768, depths 3, 3, 9, 3 (28.6M parameters).
    Tiny,
    /// `convnext_small`: dims 96-768, depths 3, 3, 27, 3 (50.2M).
    Small,
    /// `convnext_base`: dims 128-1024, depths 3, 3, 27, 3 (88.6M).
    Base,
}

impl ConvNextSize {
    fn dims_depths(self) -> ([usize; 4], [usize; 4]) {
        match self {
            ConvNextSize::Tiny => ([96, 192, 384, 768], [3, 3, 9, 3]),
            ConvNextSize::Small => ([96, 192, 384, 768], [3, 3, 27, 3]),
            ConvNextSize::Base => ([128, 256, 512, 1024], [3, 3, 27, 3]),
        }
    }
}

const EPS: f64 = 1e-6;

#[derive(Clone, Debug)]
struct Block {
    dwconv: Conv2d,
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_scale: Tensor,
}

impl Block {
    fn load(vb: VarBuilder, dim: usize) -> candle_core::Result<Self> {
        let b = vb.pp("block");
        let dw = Conv2dConfig {
            padding: 3,
            groups: dim,
            ..Default::default()
        };
        Ok(Block {
            dwconv: conv2d(dim, dim, 7, dw, b.pp("0"))?,
            norm: LayerNorm::load(b.pp("2"), dim, EPS)?,
            fc1: linear(dim, 4 * dim, b.pp("3"))?,
            fc2: linear(4 * dim, dim, b.pp("5"))?,
            layer_scale: vb.get((dim, 1, 1), "layer_scale")?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.dwconv.forward(x)?.permute((0, 2, 3, 1))?;
        let y = self.norm.forward(&y)?;
        let y = self.fc2.forward(&self.fc1.forward(&y)?.gelu_erf()?)?;
        let y = y.permute((0, 3, 1, 2))?.broadcast_mul(&self.layer_scale)?;
        x + y
    }
}

/// A stage: its downsampling (none for the first) and its blocks.
type Stage = (Option<(LayerNorm, Conv2d)>, Vec<Block>);

/// torchvision's `convnext_tiny` / `convnext_small` / `convnext_base`,
/// loadable from their state dicts saved as safetensors.
///
/// Tensor names: `features.0.0` (stem conv) and `features.0.1` (its
/// LayerNorm2d); stages `features.{1,3,5,7}.{i}.block.{0,2,3,5}` (depthwise
/// conv, LayerNorm, the two linear layers) and `….layer_scale`;
/// downsamplings `features.{2,4,6}.{0,1}` (LayerNorm2d, conv);
/// `classifier.{0,2}` (LayerNorm2d, linear). LayerNorm is built from plain
/// ops (candle-nn's has no backward), GELU is the exact (erf) one;
/// stochastic depth is the identity (inference).
#[derive(Clone, Debug)]
pub struct ConvNext {
    stem: (Conv2d, LayerNorm),
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head: Linear,
    class_names: Vec<String>,
}

impl ConvNext {
    /// Loads the weights from `vb`.
    pub fn load(vb: VarBuilder, size: ConvNextSize, classes: usize) -> candle_core::Result<Self> {
        let (dims, depths) = size.dims_depths();
        let f = vb.pp("features");
        let patch = |k| Conv2dConfig {
            stride: k,
            ..Default::default()
        };
        let stem = (
            conv2d(3, dims[0], 4, patch(4), f.pp("0").pp("0"))?,
            LayerNorm::load(f.pp("0").pp("1"), dims[0], EPS)?,
        );
        let mut stages = Vec::new();
        for s in 0..4 {
            let down = if s == 0 {
                None
            } else {
                let d = f.pp((2 * s).to_string());
                Some((
                    LayerNorm::load(d.pp("0"), dims[s - 1], EPS)?,
                    conv2d(dims[s - 1], dims[s], 2, patch(2), d.pp("1"))?,
                ))
            };
            let st = f.pp((2 * s + 1).to_string());
            let blocks = (0..depths[s])
                .map(|i| Block::load(st.pp(i.to_string()), dims[s]))
                .collect::<candle_core::Result<Vec<_>>>()?;
            stages.push((down, blocks));
        }
        let c = vb.pp("classifier");
        Ok(ConvNext {
            stem,
            stages,
            head_norm: LayerNorm::load(c.pp("0"), dims[3], EPS)?,
            head: linear(dims[3], classes, c.pp("2"))?,
            class_names: imagenet_class_names(classes),
        })
    }
}

impl Module for ConvNext {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.stem.1.forward_channels(&self.stem.0.forward(x)?)?;
        for (down, blocks) in &self.stages {
            if let Some((norm, conv)) = down {
                x = conv.forward(&norm.forward_channels(&x)?)?;
            }
            for b in blocks {
                x = b.forward(&x)?;
            }
        }
        let x = self
            .head_norm
            .forward_channels(&adaptive_avg_pool2d(&x, 1, 1)?)?;
        self.head.forward(&x.flatten_from(1)?)
    }
}

super::classifier_from_forward!(ConvNext);
