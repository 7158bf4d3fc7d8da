//! Issue 8: a batch-256 search on the MNIST fixtures peaks well under 1 GiB
//! of memory (its own test binary, so that no other test's memory counts).
//! `bash bench/compare.sh` prints the same figure measured by
//! `/usr/bin/time -v`.

use candle_core::Device;
use gevaldi::zoo::{self, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
use gevaldi::{Search, SearchConfig};

/// The process's peak resident memory in bytes (Linux: VmHWM).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_batch_256_search_stays_under_one_gib() {
    let Some(before) = peak_rss() else {
        eprintln!("no /proc/self/status here: peak memory not measured");
        return;
    };
    let dev = Device::Cpu;
    let dir = zoo::mnist_fixtures_dir();
    let cnn = |name: &str, cfg: MnistCnnConfig| {
        zoo::load_file(dir.join(name), name, &dev, |vb| MnistCnn::load(vb, &cfg)).unwrap()
    };
    let (a, b) = (
        cnn("cnn_a.safetensors", MnistCnnConfig::cnn_a()),
        cnn("cnn_b.safetensors", MnistCnnConfig::cnn_b()),
    );
    let vae = zoo::load_file(dir.join("vae.safetensors"), "vae", &dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })
    .unwrap();
    let outcome = Search::new("vae", &vae)
        .classifier("cnn_a", &a)
        .classifier("cnn_b", &b)
        .config(SearchConfig::default().batch(256).steps(30))
        .run(&dev)
        .unwrap();
    assert!(outcome.mean_divergence_after() > outcome.mean_divergence_before());
    let peak = peak_rss().unwrap();
    println!(
        "peak resident memory: {} MiB (before the search: {} MiB)",
        peak >> 20,
        before >> 20
    );
    assert!(peak < 1 << 30, "peak {} MiB", peak >> 20);
}
