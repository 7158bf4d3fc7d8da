//! Runs an MDS search of two MNIST CNNs over a VAE and prints what it found.
//!
//! ```text
//! cargo run --release --example mds_search
//! ```
//!
//! The models here have seeded random weights (the trained MNIST fixtures
//! replace them when they land), so the disagreements are small in absolute
//! terms; what the example shows is the search lifting them well above
//! fresh prior samples.

use anyhow::Result;
use candle_core::Device;
use gevaldi::zoo::{MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
use gevaldi::{Divergence, GradientAudit, Search, SearchConfig};

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let cnn_a = MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &dev)?;
    let cnn_b = MnistCnn::random(&MnistCnnConfig::cnn_b(), 2, &dev)?;
    let vae = MnistVae::random(&MnistVaeConfig::default(), 3, &dev)?;

    // Audit first: a search on wrong gradients still runs.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let z = gevaldi::model::sample_standard_normal((4, 8), &mut rng, &dev)?;
    let x = gevaldi::Generator::decode(&vae, &z, None)?;
    for (name, model) in [("cnn_a", &cnn_a), ("cnn_b", &cnn_b)] {
        let r = GradientAudit::default().classifier(name, model, &x)?;
        println!(
            "gradient audit {name}: ok (worst |ratio - 1| = {:.1e})",
            r.worst_deviation()
        );
    }
    let r = GradientAudit::default().generator("vae", &vae, &z, None)?;
    println!(
        "gradient audit vae: ok (worst |ratio - 1| = {:.1e})",
        r.worst_deviation()
    );

    let config = SearchConfig::default()
        .divergence(Divergence::Kl)
        .batch(64)
        .steps(200)
        .lr(0.05)
        .lambda(0.0)
        .seed(0);
    let started = std::time::Instant::now();
    let out = Search::new("vae", &vae)
        .classifier("cnn_a", &cnn_a)
        .classifier("cnn_b", &cnn_b)
        .config(config)
        .run(&dev)?;
    let secs = started.elapsed().as_secs_f64();

    println!(
        "\nMDS search, cnn_a vs cnn_b over vae: kl, adam, batch {}, {} steps, {:.1} steps/s",
        out.samples.len(),
        out.steps_run,
        out.steps_run as f64 / secs
    );
    let every = out.trajectory.iter().step_by(50);
    let last = (out.steps_run % 50 != 0)
        .then(|| out.trajectory.last())
        .flatten();
    for t in every.chain(last) {
        println!(
            "  step {:>3}: mean kl {:.4e}  max kl {:.4e}  mean dz {:.3}",
            t.step, t.mean_divergence, t.max_divergence, t.mean_dz
        );
    }
    println!(
        "mean kl before {:.4e} -> after {:.4e}; null baseline {:.4e}; lift {:.2}x",
        out.mean_divergence_before(),
        out.mean_divergence_after(),
        out.baseline.mean,
        out.lift()
    );
    let mut order: Vec<usize> = (0..out.samples.len()).collect();
    order.sort_by(|&i, &j| {
        out.samples[j]
            .divergence_after
            .total_cmp(&out.samples[i].divergence_after)
    });
    println!("most different samples:");
    for &i in order.iter().take(5) {
        let s = &out.samples[i];
        let top = |p: &[f32]| {
            let (k, v) = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .expect("classes");
            format!("{} ({:.2})", out.class_names[k], v)
        };
        println!(
            "  #{i:<3} kl {:.4e}  cnn_a {}  cnn_b {}  dz {:.2}",
            s.divergence_after,
            top(&s.probs_after[0]),
            top(&s.probs_after[1]),
            s.dz
        );
    }
    Ok(())
}
