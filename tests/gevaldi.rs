//! The dogfood suite: `cargo test` runs the MNIST fixtures' gevaldi.toml,
//! one test per pair, exactly as in a user's model repository.
gevaldi::main!("fixtures/mnist/gevaldi.toml");
