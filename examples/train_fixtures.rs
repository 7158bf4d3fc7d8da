//! Retrains every MNIST fixture from `fixtures/mnist/data`, seeded, and
//! writes `<name>.safetensors` plus `<name>.json` (metadata) per model.
//!
//! ```text
//! cargo run --release --example train_fixtures                  # all, into fixtures/mnist
//! cargo run --release --example train_fixtures -- --out /tmp/f  # elsewhere
//! cargo run --release --example train_fixtures -- cnn_a vae     # some of them
//! ```
//!
//! The models: `cnn_a` and `cnn_b` (the classifiers compared by the default
//! suite), `vae` and `cvae` (generators), and `bag_0` to `bag_4`, the base
//! learners of a bagging ensemble, each trained on its own bootstrap sample
//! of the training set. Everything is seeded: initial weights, shuffles,
//! bootstrap samples, augmentation and the VAEs' noise.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use gevaldi::config::ModelKind;
use gevaldi::data::{Mnist, Split};
use gevaldi::model::{one_hot, sample_standard_normal, Classifier};
use gevaldi::zoo::{self, Arch, MnistVae, MnistVaeConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

// The system allocator keeps mapping and unmapping candle's large buffers;
// mimalloc makes training markedly faster here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How one model is trained.
struct Plan {
    name: &'static str,
    arch: Arch,
    seed: u64,
    epochs: usize,
    batch: usize,
    lr: f64,
    /// Bootstrap sample of the training set (with replacement) instead of
    /// all of it, drawn with `seed`.
    bootstrap: bool,
    /// Random shifts of up to this many pixels (classifiers only).
    shift: usize,
}

#[rustfmt::skip]
const PLANS: &[Plan] = &[
    Plan { name: "cnn_a", arch: Arch::MnistCnnA, seed: 1, epochs: 12, batch: 64, lr: 2e-3, bootstrap: false, shift: 2 },
    Plan { name: "cnn_b", arch: Arch::MnistCnnB, seed: 2, epochs: 12, batch: 64, lr: 1e-3, bootstrap: false, shift: 2 },
    Plan { name: "vae", arch: Arch::MnistVae, seed: 3, epochs: 60, batch: 64, lr: 1e-3, bootstrap: false, shift: 0 },
    Plan { name: "cvae", arch: Arch::MnistCvae, seed: 4, epochs: 60, batch: 64, lr: 1e-3, bootstrap: false, shift: 0 },
    Plan { name: "bag_0", arch: Arch::MnistMlp, seed: 10, epochs: 10, batch: 64, lr: 1e-3, bootstrap: true, shift: 0 },
    Plan { name: "bag_1", arch: Arch::MnistMlp, seed: 11, epochs: 10, batch: 64, lr: 1e-3, bootstrap: true, shift: 0 },
    Plan { name: "bag_2", arch: Arch::MnistMlp, seed: 12, epochs: 10, batch: 64, lr: 1e-3, bootstrap: true, shift: 0 },
    Plan { name: "bag_3", arch: Arch::MnistMlp, seed: 13, epochs: 10, batch: 64, lr: 1e-3, bootstrap: true, shift: 0 },
    Plan { name: "bag_4", arch: Arch::MnistMlp, seed: 14, epochs: 10, batch: 64, lr: 1e-3, bootstrap: true, shift: 0 },
];

fn main() -> Result<()> {
    let mut out = zoo::mnist_fixtures_dir();
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            name if PLANS.iter().any(|p| p.name == name) => only.push(name.to_string()),
            other => bail!(
                "unknown argument {other:?}: expected --out DIR or model names ({})",
                PLANS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    std::fs::create_dir_all(&out)?;
    let data_dir = zoo::mnist_fixtures_dir().join("data");
    let train = Mnist::load(&data_dir, Split::Train)?;
    let test = Mnist::load(&data_dir, Split::Test)?;
    let checksum = data_checksum(&data_dir)?;
    // GEVALDI_DEVICE (cpu, cuda, metal), else a GPU of an enabled feature,
    // else the CPU. The committed fixtures were trained on the CPU; another
    // device gives other (equally valid) weights.
    let dev = gevaldi::suite::device()?;
    println!("device: {dev:?}");
    let started = Instant::now();
    for plan in PLANS
        .iter()
        .filter(|p| only.is_empty() || only.iter().any(|n| n == p.name))
    {
        let t = Instant::now();
        let (varmap, metric) = if plan.arch.kind() == ModelKind::Generator {
            train_vae(plan, &train, &test, &dev)?
        } else {
            train_classifier(plan, &train, &test, &dev)?
        };
        let secs = t.elapsed().as_secs_f64();
        let weights = out.join(format!("{}.safetensors", plan.name));
        varmap.save(&weights)?;
        let meta = serde_json::json!({
            "name": plan.name,
            "architecture": plan.arch.name(),
            "seed": plan.seed,
            "epochs": plan.epochs,
            "batch": plan.batch,
            "optimizer": "adamw (weight decay 0)",
            "lr": plan.lr,
            "training_set": if plan.bootstrap { "bootstrap sample (8000 draws with replacement, seeded)" } else { "all 8000 training digits" },
            "augmentation": if plan.shift > 0 { format!("random shifts of up to {} pixels", plan.shift) } else { "none".into() },
            "data": "fixtures/mnist/data (train: 8000, test: 2000)",
            "data_sha256": checksum,
            metric.0: metric.1,
            "training_seconds": (secs * 10.0).round() / 10.0,
            "trained_by": "cargo run --release --example train_fixtures",
        });
        std::fs::write(
            out.join(format!("{}.json", plan.name)),
            serde_json::to_string_pretty(&meta)? + "\n",
        )?;
        println!(
            "{:<6} {}: {} = {:.4} ({secs:.0} s)",
            plan.name, plan.arch, metric.0, metric.1
        );
    }
    println!(
        "all done in {:.0} s, written to {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// sha256 over the four data files' sha256 sums, in name order.
fn data_checksum(dir: &Path) -> Result<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.retain(|p| p.to_string_lossy().ends_with("-ubyte.gz"));
    names.sort();
    let mut all = Sha256::new();
    for p in &names {
        let sum = Sha256::digest(std::fs::read(p)?);
        all.update(format!(
            "{:x}  {}\n",
            sum,
            p.file_name().unwrap().to_string_lossy()
        ));
    }
    Ok(format!("{:x}", all.finalize()))
}

fn indices(plan: &Plan, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if plan.bootstrap {
        (0..n).map(|_| rng.random_range(0..n)).collect()
    } else {
        (0..n).collect()
    }
}

/// A batch of images, each shifted by up to `shift` pixels (zero fill).
fn batch_images(
    data: &Mnist,
    idx: &[usize],
    shift: usize,
    rng: &mut ChaCha8Rng,
    dev: &Device,
) -> Result<Tensor> {
    if shift == 0 {
        return Ok(data.images_tensor(Some(idx), dev)?);
    }
    let s = shift as i64;
    let mut values = vec![0f32; idx.len() * 784];
    for (row, &i) in idx.iter().enumerate() {
        let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
        let img = &data.images[i * 784..(i + 1) * 784];
        for y in 0..28i64 {
            for x in 0..28i64 {
                let (sy, sx) = (y - dy, x - dx);
                if (0..28).contains(&sy) && (0..28).contains(&sx) {
                    values[row * 784 + (y * 28 + x) as usize] =
                        img[(sy * 28 + sx) as usize] as f32 / 255.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(values, (idx.len(), 1, 28, 28), dev)?)
}

/// AdamW without weight decay over every variable of `varmap`.
fn adamw(varmap: &VarMap, lr: f64) -> Result<AdamW> {
    let params = ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    Ok(AdamW::new(varmap.all_vars(), params)?)
}

fn train_classifier(
    plan: &Plan,
    train: &Mnist,
    test: &Mnist,
    dev: &Device,
) -> Result<(VarMap, (&'static str, f64))> {
    let (model, varmap) = zoo::seeded_varmap(plan.seed, dev, |vb| zoo::classifier(plan.arch, vb))?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut order = indices(plan, train.len(), &mut rng);
    let mut opt = adamw(&varmap, plan.lr)?;
    for epoch in 0..plan.epochs {
        order.shuffle(&mut rng);
        // Cosine decay of the learning rate over the epochs.
        let lr = plan.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / plan.epochs as f64).cos());
        opt.set_learning_rate(lr);
        let mut total = 0.0;
        for idx in order.chunks(plan.batch) {
            let x = batch_images(train, idx, plan.shift, &mut rng, dev)?;
            let y = train.labels_tensor(Some(idx), dev)?;
            let loss = candle_nn::loss::cross_entropy(&model.logits(&x)?, &y)?;
            opt.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64 * idx.len() as f64;
        }
        eprintln!(
            "  {} epoch {epoch}: train loss {:.4}",
            plan.name,
            total / order.len() as f64
        );
    }
    let acc = accuracy(model.as_ref(), test, dev)?;
    Ok((varmap, ("test_accuracy", acc)))
}

fn accuracy(model: &dyn Classifier, data: &Mnist, dev: &Device) -> Result<f64> {
    let mut correct = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for idx in all.chunks(500) {
        let pred = model
            .logits(&data.images_tensor(Some(idx), dev)?)?
            .argmax(D::Minus1)?;
        let y = data.labels_tensor(Some(idx), dev)?;
        correct += pred
            .eq(&y)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
    }
    Ok(correct as f64 / data.len() as f64)
}

/// Negative ELBO per digit (Bernoulli likelihood on grey levels in [0, 1],
/// one seeded sample of z), summed over pixels and averaged over the batch.
fn neg_elbo(
    vae: &MnistVae,
    x: &Tensor,
    c: Option<&Tensor>,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<Tensor> {
    let (mu, logvar) = vae.encode(x, c)?;
    let eps = sample_standard_normal(mu.shape(), rng, x.device())?;
    let z = (&mu + (logvar.affine(0.5, 0.0)?.exp()? * eps)?)?;
    let l = vae.decode_logits(&z, c)?;
    let x = x.flatten_from(1)?;
    // BCE with logits: softplus(l) - x l, with softplus(l) = relu(l) + ln(1 + e^-|l|).
    let softplus = (l.relu()? + (l.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let recon = (softplus - (&l * &x)?)?.sum(1)?;
    let kl = ((mu.sqr()? + logvar.exp()? - &logvar)? - 1.0)?
        .sum(1)?
        .affine(0.5, 0.0)?;
    (recon + kl)?.mean_all()
}

fn train_vae(
    plan: &Plan,
    train: &Mnist,
    test: &Mnist,
    dev: &Device,
) -> Result<(VarMap, (&'static str, f64))> {
    let cfg = match plan.arch {
        Arch::MnistVae => MnistVaeConfig::default(),
        Arch::MnistCvae => MnistVaeConfig::conditional(),
        other => bail!("{other} is not a generator"),
    };
    let (vae, varmap) = zoo::seeded_varmap(plan.seed, dev, |vb| MnistVae::load(vb, &cfg))?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut order = indices(plan, train.len(), &mut rng);
    let mut opt = adamw(&varmap, plan.lr)?;
    let condition = |data: &Mnist, idx: &[usize]| -> Result<Option<Tensor>> {
        Ok(match cfg.conditions {
            None => None,
            Some(k) => {
                let labels: Vec<usize> = idx.iter().map(|&i| data.labels[i] as usize).collect();
                Some(one_hot(&labels, k, dev)?)
            }
        })
    };
    for epoch in 0..plan.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for idx in order.chunks(plan.batch) {
            let x = train.images_tensor(Some(idx), dev)?;
            let c = condition(train, idx)?;
            let loss = neg_elbo(&vae, &x, c.as_ref(), &mut rng)?;
            opt.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64 * idx.len() as f64;
        }
        if epoch % 10 == 9 || epoch + 1 == plan.epochs {
            eprintln!(
                "  {} epoch {epoch}: train -ELBO {:.2}",
                plan.name,
                total / order.len() as f64
            );
        }
    }
    let all: Vec<usize> = (0..test.len()).collect();
    let x = test.images_tensor(None, dev)?;
    let c = condition(test, &all)?;
    let elbo = -(neg_elbo(&vae, &x, c.as_ref(), &mut rng)?.to_scalar::<f32>()? as f64);
    Ok((varmap, ("test_elbo_nats", elbo)))
}
