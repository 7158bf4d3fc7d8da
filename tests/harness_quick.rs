//! Quick pairs for the harness's own tests (nextest, partitions), including
//! a classifier registered from Rust.

use gevaldi::candle_core::Device;
use gevaldi::zoo::{self, MnistMlp, MnistMlpConfig};

/// Builds the classifier that `tests/harness/quick.toml` declares as
/// `[classifier.mlp_from_rust]`, with no `arch`.
fn mlp_from_rust(device: &Device) -> gevaldi::Result<MnistMlp> {
    let path = zoo::mnist_fixtures_dir().join("bag_1.safetensors");
    zoo::load_file(path, "mlp_from_rust", device, |vb| {
        MnistMlp::load(vb, &MnistMlpConfig::default())
    })
}

gevaldi::main!(
    "tests/harness/quick.toml",
    classifiers = { "mlp_from_rust" => mlp_from_rust },
);
