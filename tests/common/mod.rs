//! Helpers shared by the integration tests (`mod common;` in each).
// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gevaldi::candle_core::{Device, Tensor};
use gevaldi::zoo::{self, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};

/// The device the tests run models on: `GEVALDI_DEVICE` (`cpu`, `cuda`,
/// `metal`), else the first GPU of an enabled feature, else the CPU
/// ([`gevaldi::suite::device`]). Opened once per test binary, so that every
/// tensor of a test lives on the same device (two `Device::new_cuda(0)` are
/// different devices to candle). A `GEVALDI_DEVICE` that cannot be opened
/// fails the test rather than falling back.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| gevaldi::suite::device().unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// The committed MNIST fixtures' cnn_a, cnn_b and VAE, loaded on `dev`.
pub fn fixture_models(dev: &Device) -> (MnistCnn, MnistCnn, MnistVae) {
    let dir = zoo::mnist_fixtures_dir();
    let cnn = |name: &str, cfg: MnistCnnConfig| {
        zoo::load_file(dir.join(name), name, dev, |vb| MnistCnn::load(vb, &cfg)).unwrap()
    };
    let vae = zoo::load_file(dir.join("vae.safetensors"), "vae", dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })
    .unwrap();
    (
        cnn("cnn_a.safetensors", MnistCnnConfig::cnn_a()),
        cnn("cnn_b.safetensors", MnistCnnConfig::cnn_b()),
        vae,
    )
}

/// The larger of `m` and `v`, NaN where either is: `f32::max`, and so a
/// fold of it, passes a NaN over, and so does candle 0.11's `max_all`
/// unless the NaN comes first, either of which lets a comparison of a
/// NaN result pass. `.fold(0f32, nan_max)` is the largest value.
pub fn nan_max<T: Copy + PartialOrd + Into<f64>>(m: T, v: T) -> T {
    let nan = |x: T| Into::<f64>::into(x).is_nan();
    if nan(m) || !(nan(v) || v > m) {
        m
    } else {
        v
    }
}

/// max |a − b| over all elements; NaN where any difference is.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.to_dtype(gevaldi::candle_core::DType::F32))
        .and_then(|d| d.to_vec1::<f32>())
        .unwrap()
        .into_iter()
        .fold(0f32, nan_max)
}

/// A fresh directory `name` under the system's temporary directory (an
/// earlier one of that name removed first), removed when dropped: a
/// test's files do not outlive it. Derefs to its path.
pub struct CaseDir(PathBuf);

impl CaseDir {
    pub fn fresh(name: &str) -> CaseDir {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        CaseDir(dir)
    }
}

impl std::ops::Deref for CaseDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for CaseDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
