//! Issue 17: the memory estimate that refuses a batch too large
//! ([`gevaldi::memory`]) against the memory a search on the MNIST fixtures
//! takes, measured as the growth of the process's peak resident memory (its
//! own test binary, one test, so that nothing else counts).

mod common;

use candle_core::Device;
use gevaldi::memory::Estimate;
use gevaldi::{Classifier, Search, SearchConfig};

/// `VmHWM` (peak) or `VmRSS` (now) of /proc/self/status, in bytes.
fn status(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn the_estimate_is_within_a_factor_of_two_of_a_measured_search() {
    if status("VmHWM:").is_none() {
        eprintln!("no /proc/self/status here: memory not measured");
        return;
    }
    let dev = Device::Cpu;
    let (a, b, vae) = common::fixture_models(&dev);
    let models: [(&str, &dyn Classifier); 2] = [("cnn_a", &a), ("cnn_b", &b)];
    let estimate = Estimate::probe(&vae, &models, &dev).unwrap().unwrap();
    let batch = 1024;
    let before = status("VmRSS:").unwrap();
    Search::new("vae", &vae)
        .classifier("cnn_a", &a)
        .classifier("cnn_b", &b)
        .config(SearchConfig::default().batch(batch).steps(2))
        .run(&dev)
        .unwrap();
    let grown = status("VmHWM:").unwrap().saturating_sub(before);
    let estimated = estimate.bytes(batch);
    let ratio = estimated as f64 / grown as f64;
    println!(
        "batch {batch}: visible {} bytes/sample, estimate {} MiB, measured growth of the peak {} \
         MiB, ratio {ratio:.2}",
        estimate.visible_per_sample,
        estimated >> 20,
        grown >> 20
    );
    assert!((0.5..=2.0).contains(&ratio), "ratio {ratio:.2}");
}
