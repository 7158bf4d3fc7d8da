//! GoogLeNet (Szegedy et al., 2014) as torchvision builds it.

use candle_core::{Module, Tensor};
use candle_nn::{linear, Conv2d, Linear, VarBuilder};

use super::imagenet_class_names;
use super::layers::conv_same;
use super::norm::BatchNorm;
use super::pooling::{adaptive_avg_pool2d, max_pool2d};

#[derive(Clone, Debug)]
struct BasicConv {
    conv: Conv2d,
    bn: BatchNorm,
}

impl BasicConv {
    fn load(
        vb: VarBuilder,
        i: usize,
        o: usize,
        k: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        Ok(BasicConv {
            conv: conv_same(vb.pp("conv"), i, o, k, stride)?,
            bn: BatchNorm::load(vb.pp("bn"), o, 1e-3)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?)?.relu()
    }
}

#[derive(Clone, Debug)]
struct Inception {
    b1: BasicConv,
    b2: [BasicConv; 2],
    b3: [BasicConv; 2],
    b4: BasicConv,
}

impl Inception {
    #[expect(clippy::too_many_arguments, reason = "torchvision's signature")]
    fn load(
        vb: VarBuilder,
        i: usize,
        c1: usize,
        c3r: usize,
        c3: usize,
        c5r: usize,
        c5: usize,
        pool: usize,
    ) -> candle_core::Result<Self> {
        Ok(Inception {
            b1: BasicConv::load(vb.pp("branch1"), i, c1, 1, 1)?,
            b2: [
                BasicConv::load(vb.pp("branch2").pp("0"), i, c3r, 1, 1)?,
                BasicConv::load(vb.pp("branch2").pp("1"), c3r, c3, 3, 1)?,
            ],
            // torchvision's "5x5" branch is a 3x3 conv (kept for its weights).
            b3: [
                BasicConv::load(vb.pp("branch3").pp("0"), i, c5r, 1, 1)?,
                BasicConv::load(vb.pp("branch3").pp("1"), c5r, c5, 3, 1)?,
            ],
            b4: BasicConv::load(vb.pp("branch4").pp("1"), i, pool, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b2[1].forward(&self.b2[0].forward(x)?)?;
        let c = self.b3[1].forward(&self.b3[0].forward(x)?)?;
        let d = self.b4.forward(&max_pool2d(x, 3, 1, 1, true)?)?;
        Tensor::cat(&[a, b, c, d], 1)
    }
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
/// re-normalised to mean 0.5, std 0.5 per channel first.
#[derive(Clone, Debug)]
pub struct GoogLeNet {
    stem: [BasicConv; 3],
    blocks: Vec<(Inception, bool)>,
    fc: Linear,
    transform_input: bool,
    class_names: Vec<String>,
}

impl GoogLeNet {
    /// Loads the weights from `vb`.
    pub fn load(
        vb: VarBuilder,
        classes: usize,
        transform_input: bool,
    ) -> candle_core::Result<Self> {
        let inc = |name: &str, a: [usize; 7]| {
            Inception::load(vb.pp(name), a[0], a[1], a[2], a[3], a[4], a[5], a[6])
        };
        // (block, max-pool after it)
        let blocks = vec![
            (inc("inception3a", [192, 64, 96, 128, 16, 32, 32])?, false),
            (inc("inception3b", [256, 128, 128, 192, 32, 96, 64])?, true),
            (inc("inception4a", [480, 192, 96, 208, 16, 48, 64])?, false),
            (inc("inception4b", [512, 160, 112, 224, 24, 64, 64])?, false),
            (inc("inception4c", [512, 128, 128, 256, 24, 64, 64])?, false),
            (inc("inception4d", [512, 112, 144, 288, 32, 64, 64])?, false),
            (
                inc("inception4e", [528, 256, 160, 320, 32, 128, 128])?,
                true,
            ),
            (
                inc("inception5a", [832, 256, 160, 320, 32, 128, 128])?,
                false,
            ),
            (
                inc("inception5b", [832, 384, 192, 384, 48, 128, 128])?,
                false,
            ),
        ];
        Ok(GoogLeNet {
            stem: [
                BasicConv::load(vb.pp("conv1"), 3, 64, 7, 2)?,
                BasicConv::load(vb.pp("conv2"), 64, 64, 1, 1)?,
                BasicConv::load(vb.pp("conv3"), 64, 192, 3, 1)?,
            ],
            blocks,
            fc: linear(1024, classes, vb.pp("fc"))?,
            transform_input,
            class_names: imagenet_class_names(classes),
        })
    }
}

impl Module for GoogLeNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        if self.transform_input {
            let channel = |c: usize, std: f64, mean: f64| {
                x.narrow(1, c, 1)?.affine(std / 0.5, (mean - 0.5) / 0.5)
            };
            x = Tensor::cat(
                &[
                    channel(0, 0.229, 0.485)?,
                    channel(1, 0.224, 0.456)?,
                    channel(2, 0.225, 0.406)?,
                ],
                1,
            )?;
        }
        let x = max_pool2d(&self.stem[0].forward(&x)?, 3, 2, 0, true)?;
        let x = self.stem[2].forward(&self.stem[1].forward(&x)?)?;
        let mut x = max_pool2d(&x, 3, 2, 0, true)?;
        for (i, (block, pool)) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if *pool {
                x = if i == 6 {
                    max_pool2d(&x, 2, 2, 0, true)?
                } else {
                    max_pool2d(&x, 3, 2, 0, true)?
                };
            }
        }
        self.fc
            .forward(&adaptive_avg_pool2d(&x, 1, 1)?.flatten_from(1)?)
    }
}

super::classifier_from_forward!(GoogLeNet);
