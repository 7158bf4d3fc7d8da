//! GoogLeNet (Szegedy et al., 2014) as torchvision builds it.

use candle_core::Tensor;
use candle_nn::{linear, VarBuilder};

use super::imagenet_class_names;
use super::layers::conv_same;
use super::norm::BatchNorm;
use crate::engine::{Net, NetBuilder, NodeId};

/// torchvision's `BasicConv2d`: conv (no bias), batch norm (eps 0.001),
/// ReLU.
fn basic_conv(
    b: &mut NetBuilder,
    x: NodeId,
    vb: VarBuilder,
    [i, o, k, stride]: [usize; 4],
) -> candle_core::Result<NodeId> {
    let conv = conv_same(vb.pp("conv"), i, o, k, stride)?;
    let bn = BatchNorm::load(vb.pp("bn"), o, 1e-3)?;
    let x = b.conv2d(x, &conv);
    let x = bn.build(b, x);
    Ok(b.relu(x))
}

/// An Inception block: `a` = [in, c1, c3r, c3, c5r, c5, pool].
fn inception(
    b: &mut NetBuilder,
    x: NodeId,
    vb: VarBuilder,
    a: [usize; 7],
) -> candle_core::Result<NodeId> {
    let [i, c1, c3r, c3, c5r, c5, pool] = a;
    let b1 = basic_conv(b, x, vb.pp("branch1"), [i, c1, 1, 1])?;
    let b2 = basic_conv(b, x, vb.pp("branch2").pp("0"), [i, c3r, 1, 1])?;
    let b2 = basic_conv(b, b2, vb.pp("branch2").pp("1"), [c3r, c3, 3, 1])?;
    // torchvision's "5x5" branch is a 3x3 conv (kept for its weights).
    let b3 = basic_conv(b, x, vb.pp("branch3").pp("0"), [i, c5r, 1, 1])?;
    let b3 = basic_conv(b, b3, vb.pp("branch3").pp("1"), [c5r, c5, 3, 1])?;
    let b4 = b.max_pool2d(x, 3, 1, 1, true);
    let b4 = basic_conv(b, b4, vb.pp("branch4").pp("1"), [i, pool, 1, 1])?;
    Ok(b.concat(&[b1, b2, b3, b4]))
}

/// torchvision's `googlenet` (6.6M parameters without the auxiliary
/// classifiers, which are ignored when present), loadable from its state
/// dict saved as safetensors.
///
/// Tensor names: `conv{1,2,3}.conv.weight`, `conv{1,2,3}.bn.*`,
/// `inception{3a,…,5b}.branch1.{conv,bn}.*`, `….branch2.{0,1}.…`,
/// `….branch3.{0,1}.…`, `….branch4.1.…`, `fc.{weight,bias}`. Batch norms
/// (eps 0.001) run in inference mode. With `transform_input` (as
/// torchvision's pretrained weights expect), an ImageNet-normalised input is
/// re-normalised to mean 0.5, std 0.5 per channel first. Runs on the
/// [engine](crate::engine).
#[derive(Clone, Debug)]
pub struct GoogLeNet {
    net: Net,
    class_names: Vec<String>,
}

impl GoogLeNet {
    /// Loads the weights from `vb`.
    pub fn load(
        vb: VarBuilder,
        classes: usize,
        transform_input: bool,
    ) -> candle_core::Result<Self> {
        let mut b = NetBuilder::new();
        let mut x = b.input();
        if transform_input {
            let (std, mean) = ([0.229f32, 0.224, 0.225], [0.485f32, 0.456, 0.406]);
            let scale = Tensor::new(&std.map(|s| s / 0.5), vb.device())?.to_dtype(vb.dtype())?;
            let shift =
                Tensor::new(&mean.map(|m| (m - 0.5) / 0.5), vb.device())?.to_dtype(vb.dtype())?;
            x = b.affine(x, &scale, &shift);
        }
        x = basic_conv(&mut b, x, vb.pp("conv1"), [3, 64, 7, 2])?;
        x = b.max_pool2d(x, 3, 2, 0, true);
        x = basic_conv(&mut b, x, vb.pp("conv2"), [64, 64, 1, 1])?;
        x = basic_conv(&mut b, x, vb.pp("conv3"), [64, 192, 3, 1])?;
        x = b.max_pool2d(x, 3, 2, 0, true);
        // (block, its sizes, the max-pool after it: kernel size)
        let blocks: [(&str, [usize; 7], Option<usize>); 9] = [
            ("inception3a", [192, 64, 96, 128, 16, 32, 32], None),
            ("inception3b", [256, 128, 128, 192, 32, 96, 64], Some(3)),
            ("inception4a", [480, 192, 96, 208, 16, 48, 64], None),
            ("inception4b", [512, 160, 112, 224, 24, 64, 64], None),
            ("inception4c", [512, 128, 128, 256, 24, 64, 64], None),
            ("inception4d", [512, 112, 144, 288, 32, 64, 64], None),
            ("inception4e", [528, 256, 160, 320, 32, 128, 128], Some(2)),
            ("inception5a", [832, 256, 160, 320, 32, 128, 128], None),
            ("inception5b", [832, 384, 192, 384, 48, 128, 128], None),
        ];
        for (name, sizes, pool) in blocks {
            x = inception(&mut b, x, vb.pp(name), sizes)?;
            if let Some(k) = pool {
                x = b.max_pool2d(x, k, 2, 0, true);
            }
        }
        x = b.adaptive_avg_pool2d(x, 1, 1);
        x = b.flatten(x);
        let fc = linear(1024, classes, vb.pp("fc"))?;
        x = b.linear_layer(x, &fc);
        Ok(GoogLeNet {
            net: b.build(x),
            class_names: imagenet_class_names(classes),
        })
    }
}

super::net_classifier!(GoogLeNet);
