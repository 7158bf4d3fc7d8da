//! Built-in architectures, in candle-nn style: a `Config`, `load(vb, &cfg)`
//! from a `VarBuilder`, and `Module::forward`: the MNIST fixtures' CNNs,
//! MLP and (conditional) VAE, and the paper's ImageNet classifiers with
//! torchvision's tensor names (AlexNet, GoogLeNet, SqueezeNet 1.0/1.1,
//! ResNet-18/50, ConvNeXt tiny/small/base). [`Arch`] (the config's
//! `Architecture`) names them; [`classifier`] and [`generator_with`] build
//! them.
//!
//! Every architecture here is built from ops whose backward pass is right
//! (max-pooling by reshape + `max`, see [`max_pool2x2`]) and passes the
//! [`GradientAudit`](crate::GradientAudit) in the tests.
//!
//! Tensor names in safetensors files are stable and listed on each model.

/// A classifier whose layers are one engine [`Net`](crate::engine::Net)
/// (field `net`) and whose classes are named by its field `class_names`:
/// `net()`, `Module` (the net on the input, or on what the closure-like
/// second argument makes of it) and `Classifier`.
macro_rules! net_classifier {
    ($model:ty) => {
        $crate::zoo::net_classifier!($model, |x| x);
    };
    ($model:ty, |$x:ident| $input:expr) => {
        impl $model {
            /// The network, as the [engine](crate::engine) runs it.
            pub fn net(&self) -> &$crate::engine::Net {
                &self.net
            }
        }

        impl candle_core::Module for $model {
            fn forward(
                &self,
                $x: &candle_core::Tensor,
            ) -> candle_core::Result<candle_core::Tensor> {
                candle_core::Module::forward(&self.net, $input)
            }
        }

        impl $crate::model::Classifier for $model {
            fn logits(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
                candle_core::Module::forward(self, x)
            }
            fn class_names(&self) -> &[String] {
                &self.class_names
            }
            fn taped(&self) -> bool {
                true
            }
        }
    };
}
pub(crate) use net_classifier;

mod alexnet;
mod arch;
mod biggan;
mod convnext;
mod googlenet;
mod layers;
mod mnist_cnn;
mod mnist_mlp;
mod mnist_vae;
mod norm;
mod pooling;
mod resnet;
mod squeezenet;

pub use alexnet::AlexNet;
pub use arch::{classifier, classifier_with, generator, generator_with, load_file, Arch};
pub use biggan::{BigGan, BigGanConfig};
pub use convnext::{ConvNext, ConvNextSize};
pub use googlenet::GoogLeNet;
pub use layers::{frozen, max_pool2x2, seeded_varmap};
pub use mnist_cnn::{MnistCnn, MnistCnnConfig};
pub use mnist_mlp::{MnistMlp, MnistMlpConfig};
pub use mnist_vae::{MnistVae, MnistVaeConfig};
pub use norm::{BatchNorm, LayerNorm};
pub use pooling::{adaptive_avg_pool2d, avg_pool2d, avg_pool2d_with, max_pool2d, max_pool2d_with};
pub(crate) use pooling::{
    max_pool2d_backward, max_pool2d_indexed, padded_len, upsample_nearest, MaxPoolPositions,
};
pub use resnet::{ResNet, ResNetDepth};
pub use squeezenet::{SqueezeNet, SqueezeNetVersion};

/// The ImageNet-1k class names (in logit order, from
/// `fixtures/imagenet/imagenet1k_classes.tsv`, compiled in) when `classes`
/// is 1000, else "0", "1", ….
pub fn imagenet_class_names(classes: usize) -> Vec<String> {
    const LIST: &str = include_str!("../../fixtures/imagenet/imagenet1k_classes.tsv");
    if classes == 1000 {
        LIST.lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(2))
            .map(str::to_string)
            .collect()
    } else {
        (0..classes).map(|c| c.to_string()).collect()
    }
}

/// The ten MNIST class names, "0" to "9".
pub fn mnist_class_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// `fixtures/mnist` of this crate's source tree: the committed MNIST data
/// and trained weights (see its README).
///
/// The path is the source tree's, compiled in: it serves this repository's
/// tests, examples and benchmarks, and breaks in a binary that outlives or
/// leaves the checkout. Nothing that is installed calls it: `cargo gevaldi`
/// carries its own copy of these files (`cargo gevaldi init` writes them
/// out), and a `gevaldi::main!` harness finds its TOML at run time.
pub fn mnist_fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist")
}
