//! AlexNet (Krizhevsky et al., 2012) as torchvision builds it.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::imagenet_class_names;
use super::pooling::{adaptive_avg_pool2d, max_pool2d};

/// torchvision's `alexnet` (61.1M parameters), loadable from
/// `safetensors.torch.save_file(torchvision.models.alexnet(weights=...).state_dict(), path)`.
///
/// Tensor names: `features.{0,3,6,8,10}.{weight,bias}` (the five convs),
/// `classifier.{1,4,6}.{weight,bias}` (the three linear layers). Input
/// `[B, 3, H, W]` normalised as the weights expect (ImageNet mean and std,
/// H, W ≥ 63); logits `[B, classes]`. Max-pools are 3×3 stride 2 from
/// [`max_pool2d`](super::max_pool2d); dropout is the identity (inference).
#[derive(Clone, Debug)]
pub struct AlexNet {
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
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
        let convs = vec![
            conv2d(3, 64, 11, c(2, 4), f.pp("0"))?,
            conv2d(64, 192, 5, c(2, 1), f.pp("3"))?,
            conv2d(192, 384, 3, c(1, 1), f.pp("6"))?,
            conv2d(384, 256, 3, c(1, 1), f.pp("8"))?,
            conv2d(256, 256, 3, c(1, 1), f.pp("10"))?,
        ];
        let cl = vb.pp("classifier");
        let fcs = vec![
            linear(256 * 36, 4096, cl.pp("1"))?,
            linear(4096, 4096, cl.pp("4"))?,
            linear(4096, classes, cl.pp("6"))?,
        ];
        Ok(AlexNet {
            convs,
            fcs,
            class_names: imagenet_class_names(classes),
        })
    }
}

impl Module for AlexNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.relu()?;
            if matches!(i, 0 | 1 | 4) {
                x = max_pool2d(&x, 3, 2, 0, false)?;
            }
        }
        let x = adaptive_avg_pool2d(&x, 6, 6)?.flatten_from(1)?;
        let x = self.fcs[0].forward(&x)?.relu()?;
        let x = self.fcs[1].forward(&x)?.relu()?;
        self.fcs[2].forward(&x)
    }
}

super::classifier_from_forward!(AlexNet);
