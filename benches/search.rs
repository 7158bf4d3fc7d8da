//! Benchmark of the MDS search, the hot loop of every gevaldi trial.
//!
//! ```text
//! cargo bench --bench search                       # MNIST fixtures, batch 64 and 256
//! cargo bench --bench search -- --batch 64 --steps 200
//! cargo bench --bench search -- --resnet           # ResNet-18 pair, batch 8, 224×224
//! cargo bench --bench search -- --save-z0 DIR      # also write z0 for bench/jax_reference.py
//! cargo bench --bench search -- --gradients DIR    # one SGD step per divergence, for
//!                                                  # bench/check_gradients.py
//! ```
//!
//! The MNIST search is the fixtures' pair: cnn_a vs cnn_b over the VAE, kl,
//! Adam, lr 0.05, λ 0.01, from B prior samples drawn with seed 0; the time is
//! that of `Search::run` (its extra work, the baseline and the step-0 check
//! of the gradient, included), models loaded before. It prints one line per
//! batch size:
//!
//! ```text
//! gevaldi batch=64 steps=100 seconds=… steps_per_s=… sample_steps_per_s=… mean_kl_before=… mean_kl_after=…
//! ```
//!
//! The ResNet-18 search runs two ResNet-18s with seeded random weights
//! behind ImageNet preprocessing (resize to 224 × 224, grey to RGB) over the
//! MNIST VAE. `bench/compare.sh` runs this and the JAX reference in one go.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use gevaldi::preprocess::{Channels, Preprocess, Preprocessed};
use gevaldi::zoo::{self, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig, ResNet, ResNetDepth};
use gevaldi::{Divergence, Generator, Search, SearchConfig};
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    batches: Vec<usize>,
    steps: usize,
    resnet: bool,
    save_z0: Option<PathBuf>,
    gradients: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        batches: Vec::new(),
        steps: 100,
        resnet: false,
        save_z0: None,
        gradients: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--batch" => a.batches.push(it.next().context("--batch N")?.parse()?),
            "--steps" => a.steps = it.next().context("--steps N")?.parse()?,
            "--resnet" => a.resnet = true,
            "--save-z0" => a.save_z0 = Some(it.next().context("--save-z0 DIR")?.into()),
            "--gradients" => a.gradients = Some(it.next().context("--gradients DIR")?.into()),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!("unknown argument `{other}` (see benches/search.rs)"),
        }
    }
    if a.batches.is_empty() && !a.resnet && a.gradients.is_none() {
        a.batches = vec![64, 256];
    }
    Ok(a)
}

fn main() -> Result<()> {
    gevaldi::prepare_process();
    let args = args()?;
    // GEVALDI_DEVICE (cpu, cuda, metal), else a GPU of an enabled feature,
    // else the CPU.
    let dev = gevaldi::suite::device()?;
    eprintln!("device: {dev:?}");
    gevaldi::suite::bench_cuda_events(&dev);
    if !args.batches.is_empty() {
        let (cnn_a, cnn_b, vae) = fixtures(&dev)?;
        for &batch in &args.batches {
            let z0 = prior(&vae, batch, &dev)?;
            if let Some(d) = &args.save_z0 {
                std::fs::create_dir_all(d)?;
                z0.save_safetensors("z0", d.join(format!("z0-b{batch}.safetensors")))?;
            }
            let config = SearchConfig::default()
                .divergence(Divergence::Kl)
                .steps(args.steps)
                .lr(0.05)
                .lambda(0.01);
            // GEVALDI_PROFILE: this search's profile only.
            let _ = gevaldi::engine::profile_report(1);
            let tensors = gevaldi::engine::tensors_made();
            let started = Instant::now();
            let outcome = Search::new("vae", &vae)
                .classifier("cnn_a", &cnn_a)
                .classifier("cnn_b", &cnn_b)
                .config(config)
                .z0(z0)
                .run(&dev)?;
            let seconds = started.elapsed().as_secs_f64();
            // Each step's ops (and the baseline's, spread over the steps).
            let tensors = (gevaldi::engine::tensors_made() - tensors) / args.steps.max(1);
            println!(
                "gevaldi batch={batch} steps={} seconds={seconds:.3} steps_per_s={:.2} \
                 sample_steps_per_s={:.0} tensors_per_step={tensors} mean_kl_before={:.4} \
                 mean_kl_after={:.4}",
                args.steps,
                args.steps as f64 / seconds,
                (batch * args.steps) as f64 / seconds,
                outcome.mean_divergence_before(),
                outcome.mean_divergence_after()
            );
            if let Some(profile) = gevaldi::engine::profile_report(args.steps) {
                eprintln!("{profile}");
            }
        }
    }
    if args.resnet {
        resnet(args.steps.min(5), &dev)?;
    }
    if let Some(dir) = &args.gradients {
        gradients(dir, &dev)?;
    }
    Ok(())
}

/// One SGD step of lr 1 per divergence (`js` weighted 1 : 3) on the
/// fixtures' cnn_a vs cnn_b over the VAE, batch 8, seed 3: z − z0 is then
/// the objective's gradient at z0. Writes `DIR/<engine>.json` (z0, z and
/// the divergence at z0 per sample, per divergence), which
/// `bench/check_gradients.py` holds to PyTorch's autograd in float64.
fn gradients(dir: &Path, dev: &Device) -> Result<()> {
    let (a, b, vae) = fixtures(dev)?;
    let divergences = [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::Jeffreys,
        Divergence::Tv,
        Divergence::Js {
            weights: Some(vec![1.0, 3.0]),
        },
    ];
    let mut entries = Vec::new();
    for d in divergences {
        let config = SearchConfig::default()
            .divergence(d.clone())
            .optimizer(gevaldi::Optimizer::Sgd)
            .lr(1.0)
            .steps(1)
            .batch(8)
            .seed(3);
        let o = Search::new("vae", &vae)
            .classifier("cnn_a", &a)
            .classifier("cnn_b", &b)
            .config(config)
            .run(dev)?;
        let rows = |f: &dyn Fn(&gevaldi::search::SampleRecord) -> Vec<f32>| -> Vec<Vec<f32>> {
            o.samples.iter().map(f).collect()
        };
        let divergence: Vec<f64> = o.samples.iter().map(|s| s.divergence_before).collect();
        entries.push(format!(
            "\"{}\": {{\"z0\": {:?}, \"z\": {:?}, \"divergence\": {divergence:?}}}",
            d.name(),
            rows(&|s| s.z0.clone()),
            rows(&|s| s.z.clone()),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let engine = gevaldi::engine::Engine::current().name();
    let path = dir.join(format!("{engine}.json"));
    std::fs::write(&path, format!("{{{}}}", entries.join(", ")))?;
    println!("gradients: {}", path.display());
    Ok(())
}

/// The committed MNIST fixtures: cnn_a, cnn_b and the VAE.
fn fixtures(dev: &Device) -> Result<(MnistCnn, MnistCnn, MnistVae)> {
    let dir = zoo::mnist_fixtures_dir();
    let cnn =
        |name: &str, cfg: MnistCnnConfig| load(&dir.join(name), dev, |vb| MnistCnn::load(vb, &cfg));
    let vae = load(&dir.join("vae.safetensors"), dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })?;
    Ok((
        cnn("cnn_a.safetensors", MnistCnnConfig::cnn_a())?,
        cnn("cnn_b.safetensors", MnistCnnConfig::cnn_b())?,
        vae,
    ))
}

fn load<M>(
    path: &Path,
    dev: &Device,
    build: impl FnOnce(candle_nn::VarBuilder) -> candle_core::Result<M>,
) -> Result<M> {
    Ok(zoo::load_file(path, "bench", dev, build)?)
}

/// B latents from the VAE's prior, drawn as the search draws them (seed 0).
fn prior(vae: &MnistVae, batch: usize, dev: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    Ok(vae.sample_prior(batch, &mut rng, dev)?)
}

fn resnet(steps: usize, dev: &Device) -> Result<()> {
    let batch = 8;
    let vae = MnistVae::random(&MnistVaeConfig::default(), 1, dev)?;
    let pre = Preprocess {
        channels: Channels::GreyToRgb,
        ..Preprocess::imagenet((0.0, 1.0), 224)
    };
    let build = |seed| -> Result<Preprocessed<ResNet>> {
        let (_, vm) = zoo::seeded_varmap(seed, dev, |vb| ResNet::load(vb, ResNetDepth::R18, 1000))?;
        Ok(Preprocessed {
            inner: ResNet::load(zoo::frozen(&vm, dev), ResNetDepth::R18, 1000)?,
            preprocess: pre.clone(),
        })
    };
    let (a, b) = (build(2)?, build(3)?);
    let config = SearchConfig::default()
        .divergence(Divergence::Kl)
        .steps(steps)
        .batch(batch)
        .lambda(0.0);
    let started = Instant::now();
    let outcome = Search::new("vae", &vae)
        .classifier("resnet18_a", &a)
        .classifier("resnet18_b", &b)
        .config(config)
        .run(dev)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "gevaldi resnet18 batch={batch} size=224 steps={steps} seconds={seconds:.3} steps_per_s={:.3} \
         sample_steps_per_s={:.2} mean_kl_before={:.4} mean_kl_after={:.4}",
        steps as f64 / seconds,
        (batch * steps) as f64 / seconds,
        outcome.mean_divergence_before(),
        outcome.mean_divergence_after()
    );
    Ok(())
}
