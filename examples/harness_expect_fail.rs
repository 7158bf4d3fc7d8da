//! A gevaldi harness whose `strict` pair fails by design (see
//! tests/harness/failing.toml); tests/harness.rs runs it as a subprocess.
//! An example rather than a test target, so that `cargo test` builds it but
//! does not run it.
gevaldi::main!("tests/harness/failing.toml");
