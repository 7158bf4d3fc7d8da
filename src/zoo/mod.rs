//! Built-in architectures, in candle-nn style: a `Config`, `load(vb, &cfg)`
//! from a `VarBuilder`, and `Module::forward`.
//!
//! Every architecture here is built from ops whose backward pass is right
//! (max-pooling by reshape + `max`, see [`max_pool2x2`]) and passes the
//! [`GradientAudit`](crate::GradientAudit) in the tests.
//!
//! Tensor names in safetensors files are stable and listed on each model.

mod arch;
mod layers;
mod mnist_cnn;
mod mnist_mlp;
mod mnist_vae;

pub use arch::{load_file, Arch};
pub use layers::{frozen, max_pool2x2, seeded_varmap};
pub use mnist_cnn::{MnistCnn, MnistCnnConfig};
pub use mnist_mlp::{MnistMlp, MnistMlpConfig};
pub use mnist_vae::{MnistVae, MnistVaeConfig};

/// The ten MNIST class names, "0" to "9".
pub fn mnist_class_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// `fixtures/mnist` of this crate's source tree: the committed MNIST data
/// and trained weights (see its README).
pub fn mnist_fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist")
}
