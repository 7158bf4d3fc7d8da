// A table without `arch` that Rust does not register is a compile error.
gevaldi::main!("rust_models.toml");
