//! The built-in architectures by name, as configs and metadata name them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::Device;
use candle_nn::VarBuilder;

use super::{MnistCnn, MnistCnnConfig, MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig};
use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};

/// A built-in architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// [`MnistCnn`] with [`MnistCnnConfig::cnn_a`].
    MnistCnnA,
    /// [`MnistCnn`] with [`MnistCnnConfig::cnn_b`].
    MnistCnnB,
    /// [`MnistMlp`] with the default config (the bagging base learner).
    MnistMlp,
    /// [`MnistVae`] with the default config.
    MnistVae,
    /// [`MnistVae`] with [`MnistVaeConfig::conditional`].
    MnistCvae,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 5] = [
        Arch::MnistCnnA,
        Arch::MnistCnnB,
        Arch::MnistMlp,
        Arch::MnistVae,
        Arch::MnistCvae,
    ];

    /// The name configs use: `mnist-cnn-a`, `mnist-cnn-b`, `mnist-mlp`,
    /// `mnist-vae`, `mnist-cvae`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::MnistCnnA => "mnist-cnn-a",
            Arch::MnistCnnB => "mnist-cnn-b",
            Arch::MnistMlp => "mnist-mlp",
            Arch::MnistVae => "mnist-vae",
            Arch::MnistCvae => "mnist-cvae",
        }
    }

    /// Whether it is a generator (else a classifier).
    pub fn is_generator(self) -> bool {
        matches!(self, Arch::MnistVae | Arch::MnistCvae)
    }

    /// Builds the classifier from `vb`; an error for a generator.
    pub fn classifier(self, vb: VarBuilder) -> candle_core::Result<Box<dyn Classifier>> {
        Ok(match self {
            Arch::MnistCnnA => Box::new(MnistCnn::load(vb, &MnistCnnConfig::cnn_a())?),
            Arch::MnistCnnB => Box::new(MnistCnn::load(vb, &MnistCnnConfig::cnn_b())?),
            Arch::MnistMlp => Box::new(MnistMlp::load(vb, &MnistMlpConfig::default())?),
            Arch::MnistVae | Arch::MnistCvae => {
                candle_core::bail!("`{}` is a generator, not a classifier", self.name())
            }
        })
    }

    /// Builds the generator from `vb`; an error for a classifier.
    pub fn generator(self, vb: VarBuilder) -> candle_core::Result<Box<dyn Generator>> {
        Ok(match self {
            Arch::MnistVae => Box::new(MnistVae::load(vb, &MnistVaeConfig::default())?),
            Arch::MnistCvae => Box::new(MnistVae::load(vb, &MnistVaeConfig::conditional())?),
            _ => candle_core::bail!("`{}` is a classifier, not a generator", self.name()),
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Error::setting(
                    "arch",
                    format!("{s:?}"),
                    format!("one of {}", names.join(", ")),
                )
            })
    }
}

/// Loads a model from a safetensors file, naming the file and the model in
/// every error (missing file, not safetensors, missing tensor, wrong shape).
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
        source: Box::new(source),
    };
    if !path.is_file() {
        return Err(Error::Io {
            action: "open weights",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let tensors = candle_core::safetensors::load(path, device).map_err(err)?;
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
    load(vb).map_err(err)
}
