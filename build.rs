//! Passes the optimisation level this crate is compiled with on to the
//! harness (`GEVALDI_OPT_LEVEL`), which warns when the search would run
//! unoptimised. A `[profile.dev.package."*"] opt-level = 3` in a user's
//! Cargo.toml compiles gevaldi and candle at level 3 while
//! `debug_assertions` stays on, so `cfg!(debug_assertions)` cannot tell.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=GEVALDI_OPT_LEVEL={level}");
}
