//! Issue 8: a batch-256 search on the MNIST fixtures peaks well under 1 GiB
//! of memory (its own test binary, so that no other test's memory counts).
//! `bash bench/compare.sh` prints the same figure measured by
//! `/usr/bin/time -v`.
//!
//! The peak is the process's maximum resident set size from `getrusage`
//! (Linux, macOS and the BSDs). Where there is no `getrusage` the test is
//! ignored, and says why, rather than passing without measuring.

mod common;

use gevaldi::{Search, SearchConfig};

/// The process's peak resident memory in bytes (`ru_maxrss` of
/// `getrusage(RUSAGE_SELF)`: KiB on Linux and the BSDs, bytes on macOS).
#[cfg(unix)]
fn peak_rss() -> u64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let max = u64::try_from(usage.ru_maxrss).expect("a nonnegative ru_maxrss");
    if cfg!(target_vendor = "apple") {
        max
    } else {
        max * 1024
    }
}

#[cfg(not(unix))]
fn peak_rss() -> u64 {
    unreachable!("the test is ignored without getrusage")
}

#[test]
#[cfg_attr(
    not(unix),
    ignore = "peak memory is measured with getrusage, which this platform lacks"
)]
fn a_batch_256_search_stays_under_one_gib() {
    let before = peak_rss();
    let dev = common::device();
    let (a, b, vae) = common::fixture_models(&dev);
    let outcome = Search::new("vae", &vae)
        .classifier("cnn_a", &a)
        .classifier("cnn_b", &b)
        .config(SearchConfig::default().batch(256).steps(30))
        .run(&dev)
        .unwrap();
    assert!(outcome.mean_divergence_after() > outcome.mean_divergence_before());
    let peak = peak_rss();
    println!(
        "peak resident memory: {} MiB (before the search: {} MiB)",
        peak >> 20,
        before >> 20
    );
    assert!(peak < 1 << 30, "peak {} MiB", peak >> 20);

    // The gauge moves: a block larger than the peak so far, written (not
    // just reserved), raises it by at least the block's size less what was
    // resident before, so a measurement that reads nothing fails here.
    let block = std::hint::black_box(vec![1u8; peak as usize + (64 << 20)]);
    let with_block = peak_rss();
    drop(block);
    assert!(
        with_block >= peak + (60 << 20),
        "peak {} MiB after writing {} MiB, {} MiB before",
        with_block >> 20,
        (peak >> 20) + 64,
        peak >> 20
    );
}
