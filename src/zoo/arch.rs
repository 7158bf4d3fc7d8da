//! The built-in architectures by name, as configs and metadata name them.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::{
    AlexNet, BigGan, BigGanConfig, ConvNext, ConvNextSize, GoogLeNet, MnistCnn, MnistCnnConfig,
    MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig, ResNet, ResNetDepth, SqueezeNet,
    SqueezeNetVersion,
};
use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};

pub use crate::config::Architecture as Arch;

/// Builds the classifier `arch` from `vb`; an error for a generator.
pub fn classifier(arch: Arch, vb: VarBuilder) -> candle_core::Result<Box<dyn Classifier>> {
    classifier_with(arch, vb, None)
}

/// [`classifier`] with GoogLeNet's `transform_input` (see
/// [`Arch::takes_transform_input`]; default `true`, as torchvision's
/// pretrained weights; an error for the others: a config refuses it at its
/// `transform_input` key, this check is for callers from Rust).
pub fn classifier_with(
    arch: Arch,
    vb: VarBuilder,
    transform_input: Option<bool>,
) -> candle_core::Result<Box<dyn Classifier>> {
    if transform_input.is_some() && !arch.takes_transform_input() {
        candle_core::bail!("`{arch}` takes no transform_input (only `googlenet` does)");
    }
    Ok(match arch {
        Arch::MnistCnnA => Box::new(MnistCnn::load(vb, &MnistCnnConfig::cnn_a())?),
        Arch::MnistCnnB => Box::new(MnistCnn::load(vb, &MnistCnnConfig::cnn_b())?),
        Arch::MnistMlp => Box::new(MnistMlp::load(vb, &MnistMlpConfig::default())?),
        Arch::AlexNet => Box::new(AlexNet::load(vb, 1000)?),
        Arch::GoogLeNet => Box::new(GoogLeNet::load(vb, 1000, transform_input.unwrap_or(true))?),
        Arch::SqueezeNet1_0 => Box::new(SqueezeNet::load(vb, SqueezeNetVersion::V1_0, 1000)?),
        Arch::SqueezeNet1_1 => Box::new(SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 1000)?),
        Arch::ResNet18 => Box::new(ResNet::load(vb, ResNetDepth::R18, 1000)?),
        Arch::ResNet50 => Box::new(ResNet::load(vb, ResNetDepth::R50, 1000)?),
        Arch::ConvNextTiny => Box::new(ConvNext::load(vb, ConvNextSize::Tiny, 1000)?),
        Arch::ConvNextSmall => Box::new(ConvNext::load(vb, ConvNextSize::Small, 1000)?),
        Arch::ConvNextBase => Box::new(ConvNext::load(vb, ConvNextSize::Base, 1000)?),
        Arch::MnistVae
        | Arch::MnistCvae
        | Arch::BigGanDeep128
        | Arch::BigGanDeep256
        | Arch::BigGanDeep512 => {
            candle_core::bail!("`{arch}` is a generator, not a classifier")
        }
    })
}

/// Builds the generator `arch` from `vb`; an error for a classifier.
pub fn generator(arch: Arch, vb: VarBuilder) -> candle_core::Result<Box<dyn Generator>> {
    generator_with(arch, vb, None)
}

/// [`generator`] with a truncation (BigGAN's, see
/// [`Arch::takes_truncation`]; default 1, an error for the others: a
/// config refuses it at its `truncation` key, this check is for callers
/// from Rust).
pub fn generator_with(
    arch: Arch,
    vb: VarBuilder,
    truncation: Option<f64>,
) -> candle_core::Result<Box<dyn Generator>> {
    if truncation.is_some() && !arch.takes_truncation() {
        candle_core::bail!("`{arch}` takes no truncation");
    }
    let biggan = |vb, resolution| -> candle_core::Result<Box<dyn Generator>> {
        let cfg = BigGanConfig::deep(resolution).expect("a BigGAN-deep resolution");
        Ok(Box::new(BigGan::load(vb, &cfg, truncation.unwrap_or(1.0))?))
    };
    Ok(match arch {
        Arch::MnistVae => Box::new(MnistVae::load(vb, &MnistVaeConfig::default())?),
        Arch::MnistCvae => Box::new(MnistVae::load(vb, &MnistVaeConfig::conditional())?),
        Arch::BigGanDeep128 => biggan(vb, 128)?,
        Arch::BigGanDeep256 => biggan(vb, 256)?,
        Arch::BigGanDeep512 => biggan(vb, 512)?,
        Arch::MnistCnnA
        | Arch::MnistCnnB
        | Arch::MnistMlp
        | Arch::AlexNet
        | Arch::GoogLeNet
        | Arch::SqueezeNet1_0
        | Arch::SqueezeNet1_1
        | Arch::ResNet18
        | Arch::ResNet50
        | Arch::ConvNextTiny
        | Arch::ConvNextSmall
        | Arch::ConvNextBase => {
            candle_core::bail!("`{arch}` is a classifier, not a generator")
        }
    })
}

/// Loads a model from a safetensors file, naming the file and the model in
/// every error (missing file, not safetensors, missing tensor, wrong shape).
///
/// The file may be a PyTorch state dict exactly as
/// `safetensors.torch.save_file(model.state_dict(), path)` writes it:
/// floating-point tensors (f16, bf16, f32, f64) are converted to f32 when
/// the model takes them, and integer tensors the model never asks for
/// (batch norms' int64 `num_batches_tracked`) are ignored. A tensor the
/// model needs that holds integers is refused, naming it.
///
/// The file is read into memory (no mmap), so gevaldi stays free of
/// `unsafe`. Only safetensors is loaded: pickled PyTorch checkpoints are
/// refused; convert them with
/// `safetensors.torch.save_file(model.state_dict(), "model.safetensors")`.
pub fn load_file<M>(
    path: impl AsRef<Path>,
    model: &str,
    device: &Device,
    load: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
) -> Result<M> {
    let path = path.as_ref();
    let err = |source| Error::Weights {
        path: path.to_path_buf(),
        model: model.to_string(),
        cause: Box::new(source),
    };
    if !path.is_file() {
        return Err(Error::Io {
            action: "open weights",
            path: path.to_path_buf(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let head = std::fs::File::open(path)
        .and_then(|f| {
            let mut head = Vec::with_capacity(4);
            f.take(4).read_to_end(&mut head)?;
            Ok(head)
        })
        .map_err(|source| Error::Io {
            action: "read weights",
            path: path.to_path_buf(),
            cause: source,
        })?;
    if is_pickle(&head) {
        return Err(err(candle_core::Error::Msg(PICKLE.to_string())));
    }
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
        err(candle_core::Error::Msg(format!(
            "not a valid safetensors file ({e}): expected an 8-byte header length, a JSON \
             header and the tensors' bytes, as `safetensors.torch.save_file` writes them"
        )))
    })?;
    let vb = VarBuilder::from_backend(
        Box::new(StateDict::new(tensors)),
        candle_core::DType::F32,
        device.clone(),
    );
    load(vb).map_err(err)
}

/// The tensors of a weights file as a `VarBuilder` backend: floating-point
/// tensors are handed out in the dtype the model asks for (f32), integer
/// ones only as an error naming them, when a model asks for one.
struct StateDict {
    tensors: HashMap<String, Tensor>,
}

impl StateDict {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        StateDict { tensors }
    }

    /// The tensor `name`, if it holds floats.
    fn float(&self, name: &str) -> candle_core::Result<&Tensor> {
        let Some(tensor) = self.tensors.get(name) else {
            // A state dict saved from a wrapper (`DataParallel`'s
            // `module.`, a Lightning module's `model.`) has every name
            // behind a prefix: say which, rather than only what is missing.
            let suffix = format!(".{name}");
            let mut prefixed: Vec<&str> = self
                .tensors
                .keys()
                .filter(|k| k.ends_with(&suffix))
                .map(|k| &k[..k.len() - name.len()])
                .collect();
            prefixed.sort_unstable();
            if let Some(prefix) = prefixed.first() {
                candle_core::bail!(
                    "cannot find tensor {name}, but the file has `{prefix}{name}`: its names \
                     carry the prefix `{prefix}` (a state dict saved from a wrapper such as \
                     DataParallel); convert it without the prefix, e.g. \
                     {{k.removeprefix('{prefix}'): v for k, v in state_dict.items()}}"
                );
            }
            return Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt());
        };
        let dtype = tensor.dtype();
        if !dtype.is_float() {
            candle_core::bail!(
                "tensor `{name}` has dtype {dtype:?}, expected floats (f32, f16, bf16 or f64)"
            );
        }
        // A NaN or an infinity in a weight would be hidden on some paths
        // (candle's ReLU makes NaN 0): refused here, named. The sum (in
        // f64, which no f32 weights overflow) is finite exactly when every
        // value is.
        let sum = tensor.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if !sum.is_finite() {
            let values = tensor
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            let nan = values.iter().filter(|v| v.is_nan()).count();
            let inf = values.iter().filter(|v| v.is_infinite()).count();
            candle_core::bail!(
                "tensor `{name}` holds {nan} NaN and {inf} infinite value(s) of {}: the weights \
                 are broken (a diverged training run, or a bad conversion)",
                values.len()
            );
        }
        Ok(tensor)
    }
}

impl SimpleBackend for StateDict {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.float(name)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        tensor.to_device(device)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.float(name)?.to_device(device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// What a pickled checkpoint gets told.
const PICKLE: &str = "this is a pickled PyTorch checkpoint (torch.save), and gevaldi loads \
only safetensors (a pickle can run any code when loaded). Convert it once: python -c \
\"import torch, safetensors.torch as st; st.save_file(torch.load('model.pt', \
map_location='cpu'), 'model.safetensors')\" (for a whole pickled model, save its \
.state_dict())";

/// A zip archive (torch.save since PyTorch 1.6) or a raw pickle (protocol
/// 2 to 5).
fn is_pickle(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
        || (head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]))
}
