//! The Quick start: an MDS search of the committed MNIST classifiers cnn_a
//! vs cnn_b over the committed VAE, printing what it found.
//!
//! ```text
//! cargo run --release --example mds_search
//! ```
//!
//! Settings: KL(cnn_a ‖ cnn_b), Adam, lr 0.05, λ 0.01, batch 64, 200
//! steps, seed 0 (`SearchConfig::default()`). The gradients of all three
//! models are audited first.

use anyhow::Result;
use gevaldi::zoo::{self, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
use gevaldi::{Divergence, GradientAudit, Search, SearchConfig};

// The system allocator keeps mapping and unmapping candle's large buffers;
// mimalloc makes the search markedly faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // GEVALDI_DEVICE (cpu, cuda, metal), else a GPU of an enabled feature,
    // else the CPU.
    let dev = gevaldi::suite::device()?;
    println!("device: {dev:?}");
    let dir = zoo::mnist_fixtures_dir();
    let weights = |name: &str| dir.join(format!("{name}.safetensors"));
    let cnn_a = zoo::load_file(weights("cnn_a"), "cnn_a", &dev, |vb| {
        MnistCnn::load(vb, &MnistCnnConfig::cnn_a())
    })?;
    let cnn_b = zoo::load_file(weights("cnn_b"), "cnn_b", &dev, |vb| {
        MnistCnn::load(vb, &MnistCnnConfig::cnn_b())
    })?;
    let vae = zoo::load_file(weights("vae"), "vae", &dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })?;

    // Audit first: a search on wrong gradients still runs. The classifiers
    // are audited where the search evaluates them, on decoded samples.
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

    let config = SearchConfig::default().divergence(Divergence::Kl);
    let started = std::time::Instant::now();
    let out = Search::new("vae", &vae)
        .classifier("cnn_a", &cnn_a)
        .classifier("cnn_b", &cnn_b)
        .config(config)
        .run(&dev)?;
    let secs = started.elapsed().as_secs_f64();

    let c = &out.config;
    println!(
        "\nMDS search, cnn_a vs cnn_b over vae: {}, {}, lr {}, lambda {}, batch {}, {} steps \
         ({:.1} steps/s)",
        c.divergence,
        c.optimizer,
        c.lr,
        c.lambda,
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
            "  step {:>3}: mean kl {:.4}  max kl {:.4}  mean dz {:.3}",
            t.step, t.mean_divergence, t.max_divergence, t.mean_dz
        );
    }
    println!(
        "mean kl before {:.4} -> after {:.4}; null baseline (64 fresh prior samples) {:.4}; \
         lift {:.1}x",
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
    let argmax = gevaldi::model::argmax;
    let top = |lp: &[f32]| {
        let k = argmax(lp);
        format!("{} ({:.2})", out.class_names[k], lp[k].exp())
    };
    println!("most different samples (before -> after):");
    for &i in order.iter().take(8) {
        let s = &out.samples[i];
        println!(
            "  #{i:<2} kl {:.3} -> {:.3}  cnn_a {} -> {}  cnn_b {} -> {}  dz {:.2}",
            s.divergence_before,
            s.divergence_after,
            top(&s.log_probs_before[0]),
            top(&s.log_probs_after[0]),
            top(&s.log_probs_before[1]),
            top(&s.log_probs_after[1]),
            s.dz
        );
    }
    let flipped = out
        .samples
        .iter()
        .filter(|s| argmax(&s.log_probs_after[0]) != argmax(&s.log_probs_after[1]))
        .count();
    println!(
        "{flipped} of {} samples end with cnn_a and cnn_b predicting different digits",
        out.samples.len()
    );
    Ok(())
}
