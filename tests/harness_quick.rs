//! Quick pairs for the harness's own tests (nextest, partitions), including
//! a classifier registered from Rust.

use gevaldi::candle_core::Device;
use gevaldi::config::ModelTable;
use gevaldi::zoo::{self, MnistMlp, MnistMlpConfig};

/// Builds the classifier that `tests/harness/quick.toml` declares as
/// `[classifier.mlp_from_rust]`, with no `arch`: from its table's
/// `weights` (resolved against the TOML) and its own key `hidden`.
fn mlp_from_rust(table: &ModelTable, device: &Device) -> gevaldi::Result<MnistMlp> {
    let weights = table
        .weights
        .clone()
        .ok_or_else(|| table.error("weights", "missing: expected a safetensors file"))?;
    let hidden = table
        .get_i64("hidden")?
        .ok_or_else(|| table.error("hidden", "missing: expected the hidden layer's width"))?;
    let config = MnistMlpConfig {
        hidden: usize::try_from(hidden).map_err(|_| table.error("hidden", "expected >= 0"))?,
        ..MnistMlpConfig::default()
    };
    zoo::load_file(weights, &table.name, device, |vb| {
        MnistMlp::load(vb, &config)
    })
}

gevaldi::main!(
    "tests/harness/quick.toml",
    classifiers = { "mlp_from_rust" => mlp_from_rust },
);
