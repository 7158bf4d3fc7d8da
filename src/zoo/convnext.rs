//! ConvNeXt (Liu et al., 2022) as torchvision builds it.

use candle_nn::{conv2d, linear, Conv2dConfig, VarBuilder};

use super::imagenet_class_names;
use super::norm::LayerNorm;
use crate::engine::{Activation, Net, NetBuilder, NodeId};

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

/// A ConvNeXt block: depthwise 7×7 conv, LayerNorm, linear, GELU,
/// linear, layer scale, residual.
fn block(b: &mut NetBuilder, x: NodeId, vb: VarBuilder, dim: usize) -> candle_core::Result<NodeId> {
    let l = vb.pp("block");
    let dw = Conv2dConfig {
        padding: 3,
        groups: dim,
        ..Default::default()
    };
    let dwconv = conv2d(dim, dim, 7, dw, l.pp("0"))?;
    let norm = LayerNorm::load(l.pp("2"), dim, EPS)?;
    let fc1 = linear(dim, 4 * dim, l.pp("3"))?;
    let fc2 = linear(4 * dim, dim, l.pp("5"))?;
    let layer_scale = vb.get((dim, 1, 1), "layer_scale")?.reshape(dim)?;
    let zeros = layer_scale.zeros_like()?;
    let y = b.conv2d(x, &dwconv);
    let y = norm.build(b, y);
    let y = b.linear_layer(y, &fc1);
    let y = b.act(y, Activation::GeluErf);
    let y = b.linear_layer(y, &fc2);
    let y = b.affine(y, &layer_scale, &zeros);
    Ok(b.add(x, y))
}

/// torchvision's `convnext_tiny` / `convnext_small` / `convnext_base`,
/// loadable from their state dicts saved as safetensors.
///
/// Tensor names: `features.0.0` (stem conv) and `features.0.1` (its
/// LayerNorm2d); stages `features.{1,3,5,7}.{i}.block.{0,2,3,5}` (depthwise
/// conv, LayerNorm, the two linear layers) and `….layer_scale`;
/// downsamplings `features.{2,4,6}.{0,1}` (LayerNorm2d, conv);
/// `classifier.{0,2}` (LayerNorm2d, linear). LayerNorm is built from plain
/// ops (candle-nn's has no backward), GELU is the exact (erf) one;
/// stochastic depth is the identity (inference). Runs on the
/// [engine](crate::engine) (the depthwise convs by a loop of their own).
#[derive(Clone, Debug)]
pub struct ConvNext {
    net: Net,
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
        let mut b = NetBuilder::new();
        let mut x = b.input();
        let stem = conv2d(3, dims[0], 4, patch(4), f.pp("0").pp("0"))?;
        x = b.conv2d(x, &stem);
        x = LayerNorm::load(f.pp("0").pp("1"), dims[0], EPS)?.build(&mut b, x);
        for s in 0..4 {
            if s > 0 {
                let d = f.pp((2 * s).to_string());
                x = LayerNorm::load(d.pp("0"), dims[s - 1], EPS)?.build(&mut b, x);
                let down = conv2d(dims[s - 1], dims[s], 2, patch(2), d.pp("1"))?;
                x = b.conv2d(x, &down);
            }
            let st = f.pp((2 * s + 1).to_string());
            for i in 0..depths[s] {
                x = block(&mut b, x, st.pp(i.to_string()), dims[s])?;
            }
        }
        let c = vb.pp("classifier");
        x = b.adaptive_avg_pool2d(x, 1, 1);
        x = LayerNorm::load(c.pp("0"), dims[3], EPS)?.build(&mut b, x);
        x = b.flatten(x);
        let head = linear(dims[3], classes, c.pp("2"))?;
        x = b.linear_layer(x, &head);
        Ok(ConvNext {
            net: b.build(x),
            class_names: imagenet_class_names(classes),
        })
    }
}

super::net_classifier!(ConvNext);
