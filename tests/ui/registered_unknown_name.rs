// Registering a name the TOML does not declare (or declares as built-in),
// or one name twice, is a compile error at that name.
fn build(_: &gevaldi::candle_core::Device) -> gevaldi::Result<gevaldi::zoo::MnistMlp> {
    unimplemented!()
}

gevaldi::main!(
    "rust_models.toml",
    classifiers = { "mine" => build, "a" => build, "other" => build, "mine" => build },
);
