#!/usr/bin/env bash
# Fuzzes the config parser, the IDX reader and the hierarchy loader for
# SECONDS each (default 60), one after the other, with the property tests of
# tests/fuzz.rs (proptest; cargo-fuzz would need a nightly compiler).
# A failure prints the minimal failing input: add it to tests/faults.rs or
# beside the parser as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
export GEVALDI_FUZZ_SECONDS="${SECONDS_PER_TARGET:-60}"
cargo test --release --test fuzz -- --test-threads 1 --nocapture 2>&1 | grep -E "cases in|panicked|minimal|test result"
