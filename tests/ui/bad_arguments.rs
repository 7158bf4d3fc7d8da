// The macro's own arguments are checked.
gevaldi::main!(gevaldi_toml);
