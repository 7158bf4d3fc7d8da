gevaldi::main!("no_such_gevaldi.toml");
