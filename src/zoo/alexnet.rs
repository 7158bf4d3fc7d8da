//! AlexNet (Krizhevsky et al., 2012) as torchvision builds it.

use candle_nn::{conv2d, linear, Conv2dConfig, VarBuilder};

use super::imagenet_class_names;
use crate::engine::{Net, NetBuilder};

/// torchvision's `alexnet` (61.1M parameters), loadable from
/// `safetensors.torch.save_file(torchvision.models.alexnet(weights=...).state_dict(), path)`.
///
/// Tensor names: `features.{0,3,6,8,10}.{weight,bias}` (the five convs),
/// `classifier.{1,4,6}.{weight,bias}` (the three linear layers). Input
/// `[B, 3, H, W]` normalised as the weights expect (ImageNet mean and std,
/// H, W ≥ 63); logits `[B, classes]`. Max-pools are 3×3 stride 2, each
/// window's gradient to its first maximum; dropout is the identity
/// (inference). Runs on the [engine](crate::engine).
#[derive(Clone, Debug)]
pub struct AlexNet {
    net: Net,
    class_names: Vec<String>,
}

impl AlexNet {
    /// Loads the weights from `vb`, for `classes` outputs (1000 for
    /// ImageNet, whose class names it then has).
    pub fn load(vb: VarBuilder, classes: usize) -> candle_core::Result<Self> {
        let f = vb.pp("features");
        let c = |pad, stride| Conv2dConfig {
            padding: pad,
            stride,
            ..Default::default()
        };
        let convs = [
            conv2d(3, 64, 11, c(2, 4), f.pp("0"))?,
            conv2d(64, 192, 5, c(2, 1), f.pp("3"))?,
            conv2d(192, 384, 3, c(1, 1), f.pp("6"))?,
            conv2d(384, 256, 3, c(1, 1), f.pp("8"))?,
            conv2d(256, 256, 3, c(1, 1), f.pp("10"))?,
        ];
        let cl = vb.pp("classifier");
        let fcs = [
            linear(256 * 36, 4096, cl.pp("1"))?,
            linear(4096, 4096, cl.pp("4"))?,
            linear(4096, classes, cl.pp("6"))?,
        ];
        let mut b = NetBuilder::new();
        let mut x = b.input();
        for (i, conv) in convs.iter().enumerate() {
            x = b.conv2d(x, conv);
            x = b.relu(x);
            if matches!(i, 0 | 1 | 4) {
                x = b.max_pool2d(x, 3, 2, 0, false);
            }
        }
        x = b.adaptive_avg_pool2d(x, 6, 6);
        x = b.flatten(x);
        for (i, fc) in fcs.iter().enumerate() {
            x = b.linear_layer(x, fc);
            if i < 2 {
                x = b.relu(x);
            }
        }
        Ok(AlexNet {
            net: b.build(x),
            class_names: imagenet_class_names(classes),
        })
    }
}

super::net_classifier!(AlexNet);
