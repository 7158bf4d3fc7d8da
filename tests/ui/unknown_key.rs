gevaldi::main!("rust_models.toml", allocater = "system");
