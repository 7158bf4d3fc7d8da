//! ResNet-18 and ResNet-50 (He et al., 2016) as torchvision builds them
//! (v1.5: a Bottleneck's stride sits on its 3×3 conv).

use candle_nn::{linear, VarBuilder};

use super::imagenet_class_names;
use super::layers::conv_same as conv;
use super::norm::BatchNorm;
use crate::engine::{Net, NetBuilder, NodeId};

/// Which ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    /// `resnet18`: BasicBlocks [2, 2, 2, 2] (11.7M parameters).
    R18,
    /// `resnet50`: Bottlenecks [3, 4, 6, 3] (25.6M parameters).
    R50,
}

const EPS: f64 = 1e-5;

/// conv (no bias) and batch norm.
fn conv_bn(
    b: &mut NetBuilder,
    x: NodeId,
    vb: VarBuilder,
    bn: VarBuilder,
    [i, o, k, s]: [usize; 4],
) -> candle_core::Result<NodeId> {
    let c = conv(vb, i, o, k, s)?;
    let n = BatchNorm::load(bn, o, EPS)?;
    let x = b.conv2d(x, &c);
    Ok(n.build(b, x))
}

/// A BasicBlock (R18) or Bottleneck (R50); returns its output and width.
fn block(
    b: &mut NetBuilder,
    x: NodeId,
    vb: VarBuilder,
    depth: ResNetDepth,
    [inp, planes, stride]: [usize; 3],
) -> candle_core::Result<(NodeId, usize)> {
    let (convs, out) = match depth {
        ResNetDepth::R18 => (
            vec![[inp, planes, 3, stride], [planes, planes, 3, 1]],
            planes,
        ),
        ResNetDepth::R50 => (
            vec![
                [inp, planes, 1, 1],
                [planes, planes, 3, stride],
                [planes, planes * 4, 1, 1],
            ],
            planes * 4,
        ),
    };
    let mut y = x;
    for (i, sizes) in convs.iter().enumerate() {
        let (c, n) = (
            vb.pp(format!("conv{}", i + 1)),
            vb.pp(format!("bn{}", i + 1)),
        );
        y = conv_bn(b, y, c, n, *sizes)?;
        if i + 1 < convs.len() {
            y = b.relu(y);
        }
    }
    let identity = if stride != 1 || inp != out {
        let d = vb.pp("downsample");
        conv_bn(b, x, d.pp("0"), d.pp("1"), [inp, out, 1, stride])?
    } else {
        x
    };
    let y = b.add(y, identity);
    Ok((b.relu(y), out))
}

/// torchvision's `resnet18` / `resnet50`, loadable from their state dicts
/// saved as safetensors.
///
/// Tensor names: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
/// `layer{1-4}.{i}.conv{1-3}.weight`, `layer{1-4}.{i}.bn{1-3}.*`,
/// `layer{1-4}.0.downsample.{0.weight,1.*}`, `fc.{weight,bias}`
/// (`num_batches_tracked` is ignored). Batch norms run in inference mode
/// (folded into their convs on the [engine](crate::engine)); the stem's
/// 3×3 stride-2 max-pool (which candle's `max_pool2d_with_stride` cannot
/// backpropagate) runs the engine's max-pool kernel, or
/// [`max_pool2d`](super::max_pool2d) on candle's ops.
#[derive(Clone, Debug)]
pub struct ResNet {
    net: Net,
    class_names: Vec<String>,
}

impl ResNet {
    /// Loads the weights from `vb`.
    pub fn load(vb: VarBuilder, depth: ResNetDepth, classes: usize) -> candle_core::Result<Self> {
        let mut b = NetBuilder::new();
        let mut x = b.input();
        x = conv_bn(&mut b, x, vb.pp("conv1"), vb.pp("bn1"), [3, 64, 7, 2])?;
        x = b.relu(x);
        x = b.max_pool2d(x, 3, 2, 1, false);
        let counts = match depth {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R50 => [3, 4, 6, 3],
        };
        let mut inp = 64;
        for (l, (&n, planes)) in counts.iter().zip([64, 128, 256, 512]).enumerate() {
            for i in 0..n {
                let stride = if l > 0 && i == 0 { 2 } else { 1 };
                let vb = vb.pp(format!("layer{}", l + 1)).pp(i.to_string());
                (x, inp) = block(&mut b, x, vb, depth, [inp, planes, stride])?;
            }
        }
        x = b.adaptive_avg_pool2d(x, 1, 1);
        x = b.flatten(x);
        let fc = linear(inp, classes, vb.pp("fc"))?;
        x = b.linear_layer(x, &fc);
        Ok(ResNet {
            net: b.build(x),
            class_names: imagenet_class_names(classes),
        })
    }
}

super::net_classifier!(ResNet);
