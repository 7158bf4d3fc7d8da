//! Procedural macros of [gevaldi](https://docs.rs/gevaldi), re-exported by
//! that crate; depend on `gevaldi`, not on this crate.
//!
//! The `gevaldi::main!` harness macro lands here with the cargo test harness.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
