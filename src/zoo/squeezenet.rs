//! SqueezeNet 1.0 and 1.1 (Iandola et al., 2016) as torchvision builds them.

use candle_nn::{conv2d, Conv2dConfig, VarBuilder};

use super::imagenet_class_names;
use crate::engine::{Net, NetBuilder, NodeId};

/// Which SqueezeNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqueezeNetVersion {
    /// `squeezenet1_0` (1.25M parameters).
    V1_0,
    /// `squeezenet1_1` (1.24M parameters, 2.4x cheaper).
    V1_1,
}

/// A Fire module: a 1×1 squeeze conv, then 1×1 and 3×3 expand convs
/// side by side, each with ReLU.
fn fire(
    b: &mut NetBuilder,
    x: NodeId,
    vb: VarBuilder,
    [inp, s, e]: [usize; 3],
) -> candle_core::Result<NodeId> {
    let pad1 = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let squeeze = conv2d(inp, s, 1, Default::default(), vb.pp("squeeze"))?;
    let e1 = conv2d(s, e, 1, Default::default(), vb.pp("expand1x1"))?;
    let e3 = conv2d(s, e, 3, pad1, vb.pp("expand3x3"))?;
    let x = b.conv2d(x, &squeeze);
    let x = b.relu(x);
    let a = b.conv2d(x, &e1);
    let a = b.relu(a);
    let c = b.conv2d(x, &e3);
    let c = b.relu(c);
    Ok(b.concat(&[a, c]))
}

/// torchvision's `squeezenet1_0` / `squeezenet1_1`, loadable from their
/// state dicts saved as safetensors.
///
/// Tensor names: `features.0.{weight,bias}` (the stem conv), then
/// `features.N.{squeeze,expand1x1,expand3x3}.{weight,bias}` for each Fire
/// module at its index N in `features`, and `classifier.1.{weight,bias}`
/// (the final 1×1 conv). Max-pools are 3×3 stride 2 with ceil mode. Runs
/// on the [engine](crate::engine).
#[derive(Clone, Debug)]
pub struct SqueezeNet {
    net: Net,
    class_names: Vec<String>,
}

/// A stage of `features`: a Fire module at its index, or a max-pool.
enum Layer {
    Pool,
    Fire(usize, [usize; 3]),
}

impl SqueezeNet {
    /// Loads the weights from `vb`.
    pub fn load(
        vb: VarBuilder,
        version: SqueezeNetVersion,
        classes: usize,
    ) -> candle_core::Result<Self> {
        use Layer::{Fire, Pool};
        let f = vb.pp("features");
        let ((k, c), layers) = match version {
            SqueezeNetVersion::V1_0 => (
                (7, 96),
                [
                    Pool,
                    Fire(3, [96, 16, 64]),
                    Fire(4, [128, 16, 64]),
                    Fire(5, [128, 32, 128]),
                    Pool,
                    Fire(7, [256, 32, 128]),
                    Fire(8, [256, 48, 192]),
                    Fire(9, [384, 48, 192]),
                    Fire(10, [384, 64, 256]),
                    Pool,
                    Fire(12, [512, 64, 256]),
                ],
            ),
            SqueezeNetVersion::V1_1 => (
                (3, 64),
                [
                    Pool,
                    Fire(3, [64, 16, 64]),
                    Fire(4, [128, 16, 64]),
                    Pool,
                    Fire(6, [128, 32, 128]),
                    Fire(7, [256, 32, 128]),
                    Pool,
                    Fire(9, [256, 48, 192]),
                    Fire(10, [384, 48, 192]),
                    Fire(11, [384, 64, 256]),
                    Fire(12, [512, 64, 256]),
                ],
            ),
        };
        let stride2 = Conv2dConfig {
            stride: 2,
            ..Default::default()
        };
        let mut b = NetBuilder::new();
        let stem = conv2d(3, c, k, stride2, f.pp("0"))?;
        let mut x = b.input();
        x = b.conv2d(x, &stem);
        x = b.relu(x);
        for layer in layers {
            x = match layer {
                Pool => b.max_pool2d(x, 3, 2, 0, true),
                Fire(i, sizes) => fire(&mut b, x, f.pp(i.to_string()), sizes)?,
            };
        }
        let final_conv = conv2d(
            512,
            classes,
            1,
            Default::default(),
            vb.pp("classifier").pp("1"),
        )?;
        x = b.conv2d(x, &final_conv);
        x = b.relu(x);
        x = b.adaptive_avg_pool2d(x, 1, 1);
        x = b.flatten(x);
        Ok(SqueezeNet {
            net: b.build(x),
            class_names: imagenet_class_names(classes),
        })
    }
}

super::net_classifier!(SqueezeNet);
