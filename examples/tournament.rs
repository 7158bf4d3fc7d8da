//! The 7-model tournament of issue 18 on the committed MNIST fixtures:
//! cnn_a, cnn_b and the five bagging MLPs, over the cVAE, every ordered
//! pair searched for K maximally different samples (KL, Adam, lr 0.05,
//! λ 0.01), ranked by who is right on them, and compared with the models'
//! accuracy on the 2,000 test digits.
//!
//! ```text
//! cargo run --release --example tournament -- [samples per pair, 200] [steps, 200] [record.json]
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::D;
use gevaldi::data::{Mnist, Split};
use gevaldi::model::{argmax, Classifier};
use gevaldi::tournament::{RankingMethod, Tournament};
use gevaldi::zoo::{
    self, MnistCnn, MnistCnnConfig, MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig,
};
use gevaldi::SearchConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    gevaldi::prepare_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples: usize = args
        .first()
        .map_or(Ok(200), |s| s.parse())
        .context("samples")?;
    let steps: usize = args
        .get(1)
        .map_or(Ok(200), |s| s.parse())
        .context("steps")?;
    let dev = gevaldi::suite::device()?;
    let dir = zoo::mnist_fixtures_dir();
    let weights = |name: &str| dir.join(format!("{name}.safetensors"));
    let mut models: Vec<(String, Box<dyn Classifier + Sync>)> = Vec::new();
    for (name, cfg) in [
        ("cnn_a", MnistCnnConfig::cnn_a()),
        ("cnn_b", MnistCnnConfig::cnn_b()),
    ] {
        let m = zoo::load_file(weights(name), name, &dev, |vb| MnistCnn::load(vb, &cfg))?;
        models.push((name.into(), Box::new(m)));
    }
    for i in 0..5 {
        let name = format!("bag_{i}");
        let m = zoo::load_file(weights(&name), &name, &dev, |vb| {
            MnistMlp::load(vb, &MnistMlpConfig::default())
        })?;
        models.push((name, Box::new(m)));
    }
    let cvae = zoo::load_file(weights("cvae"), "cvae", &dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::conditional())
    })?;

    let test = Mnist::load(dir.join("data"), Split::Test)?;
    let x = test.images_tensor(None, &dev)?;
    let mut test_accuracy = Vec::new();
    for (_, m) in &models {
        let p = candle_nn::ops::softmax(&m.logits(&x)?, D::Minus1)?.to_vec2::<f32>()?;
        let right = p
            .iter()
            .zip(&test.labels)
            .filter(|(p, &l)| argmax(p) == l as usize)
            .count();
        test_accuracy.push(right as f64 / test.labels.len() as f64);
    }

    let config = SearchConfig::default().batch(samples.min(256)).steps(steps);
    let mut t = Tournament::new("cvae", &cvae)
        .config(config)
        .samples(samples)
        .test_accuracy(test_accuracy.clone());
    for (name, m) in &models {
        t = t.model(name.clone(), m.as_ref());
    }
    let started = Instant::now();
    let o = t.run(&dev)?;
    let secs = started.elapsed().as_secs_f64();
    let n = o.models.len();
    println!(
        "tournament of {n} models over the cVAE: {} ordered pairs x {samples} MDS samples, kl, adam, lr 0.05, lambda 0.01, {steps} steps, seed 0, in {secs:.0} s",
        o.pairs.len()
    );
    println!();
    println!("rank  model   MAD score  BT theta +- se   test acc  z0 acc  MDS acc  wins");
    for (r, &i) in o.power.order.iter().enumerate() {
        println!(
            "{:>4}  {:<6}  {:>9.4}  {:>+7.3} +- {:.3}  {:>7.2}%  {:>5.1}%  {:>6.1}%  {:>5}",
            r + 1,
            o.models[i],
            o.power.scores[i],
            o.bradley_terry.theta[i],
            o.bradley_terry.se[i],
            100.0 * test_accuracy[i],
            100.0 * o.start_accuracy[i],
            100.0 * o.mds_accuracy[i],
            o.wins.total_wins(i)
        );
    }
    println!();
    println!(
        "MAD ranking:           {}",
        o.ranking(RankingMethod::Mad).join(" > ")
    );
    println!(
        "Bradley-Terry ranking: {}",
        o.ranking(RankingMethod::BradleyTerry).join(" > ")
    );
    let fmt = |s: Option<f64>| s.map_or("undefined".into(), |s| format!("{s:.3}"));
    println!(
        "SRCC with test accuracy: MAD {}, Bradley-Terry {}  (MAD eigenvalue {:.4}, {} corrected pairs; BT pseudo-wins {})",
        fmt(o.srcc_power),
        fmt(o.srcc_bradley_terry),
        o.power.eigenvalue,
        o.power.corrected_pairs,
        o.bradley_terry.pseudo_wins
    );
    println!();
    println!("win matrix (row right, column wrong, both orders):");
    print!("{:<7}", "");
    for m in &o.models {
        print!("{m:>7}");
    }
    println!();
    for (i, row) in o.wins.rows().iter().enumerate() {
        print!("{:<7}", o.models[i]);
        for w in row {
            print!("{w:>7}");
        }
        println!();
    }
    println!();
    println!("pair              acc a   acc b  wins a  wins b  ties  disagree");
    for p in &o.pairs {
        println!(
            "{:<16} {:>6.1}% {:>6.1}% {:>6} {:>7} {:>5} {:>8}",
            p.name(),
            100.0 * p.accuracy_a,
            100.0 * p.accuracy_b,
            p.wins_a,
            p.wins_b,
            p.ties,
            p.disagreements()
        );
        for w in &p.warnings {
            println!("  warning: {w}");
        }
    }
    if let Some(path) = args.get(2) {
        std::fs::write(path, serde_json::to_vec(&o)?)?;
        println!("record: {path}");
    }
    Ok(())
}
