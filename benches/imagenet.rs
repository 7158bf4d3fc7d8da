//! Benchmark of the paper's ImageNet models against PyTorch: the same
//! seeded random weights, the same inputs, the same workloads as
//! `bench/imagenet_reference.py` (which makes them), timed the same way.
//!
//! ```text
//! bench/.venv/bin/python bench/imagenet_reference.py make --dir DIR   # once
//! cargo bench --bench imagenet -- --dir DIR                           # every workload
//! cargo bench --bench imagenet -- --dir DIR --device cuda step biggan
//! ```
//!
//! `bench/compare-imagenet.sh` runs both and prints the ratios. Workloads
//! (batch 8; `--batch N` repeats the inputs' rows, for timing only):
//!
//! - `alexnet`, `googlenet`, `squeezenet1_0`, `squeezenet1_1`, `resnet18`,
//!   `resnet50`, `convnext_tiny`: forward + gradient w.r.t. the input of
//!   `sum(logits · proj)`, the classifier loaded through the zoo's arch of
//!   that name;
//! - `biggan`: BigGAN-deep-128 (truncation 1) forward + gradient w.r.t. z of
//!   `sum(image * img_proj)`;
//! - `step`: the paper's step, BigGAN → `Preprocess::imagenet((-1, 1), 224)`
//!   → GoogLeNet and AlexNet → log-softmax → `Divergence::Kl` per sample,
//!   summed → gradient w.r.t. z.
//!
//! Each step ends with one read-back of two numbers (the scalar and the
//! gradient's sum). After warm-up steps (the first of which is the one
//! compared with PyTorch, below) it times at least `--min-steps`,
//! then more while under `--budget-s` seconds, at most `--max-steps`, and
//! prints one line per workload:
//!
//! ```text
//! gevaldi workload=alexnet device=cpu batch=8 steps=3 seconds=… steps_per_s=… tensors_per_step=… step_heap_mib=… peak_rss_mib=… out_rel=… grad_rel=… check=ok
//! ```
//!
//! `tensors_per_step` is how many candle tensors a timed step made (each
//! op's output and each view; on a GPU every op other than a view is at
//! least one launch): the same on every device for one engine, so it
//! counts a GPU's launches on the CPU. `step_heap_mib` (CPU only) is the most heap memory a timed step held
//! above what was live before the timed steps (the models' weights and
//! caches, the inputs): every allocation is counted on its way to
//! mimalloc. `peak_rss_mib` is the process's peak resident memory
//! (`VmHWM`), the figure `imagenet_reference.py` prints too: it includes
//! the weights, and memory mimalloc keeps after a free (gevaldi's binaries
//! never return it to the OS: see `allocator.rs`).
//!
//! `out_rel` is max |gevaldi − PyTorch| / max |PyTorch| of the output
//! (logits, image, KL), `grad_rel` ‖gevaldi − PyTorch‖₂ / ‖PyTorch‖₂ of the
//! input gradient, against PyTorch's CPU results saved by `make` (batch 8
//! only). Above the
//! tolerances the line says `check=MISMATCH` and a banner goes to stderr:
//! a loader or an op disagrees with PyTorch. `--save DIR` writes gevaldi's
//! output and gradient per workload (`DIR/<workload>.safetensors`, `out`
//! and `grad`), to look into a mismatch.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use gevaldi::preprocess::Preprocess;
use gevaldi::zoo::{self, Arch};
use gevaldi::{Classifier, Divergence, Generator};

mod common;
use common::Args;

/// mimalloc, counting the bytes live on the heap and their peak (for
/// `step_heap_mib`): two relaxed atomic operations per allocation.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to mimalloc unchanged; the counters are
// plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        if size >= l.size() {
            grew(size - l.size());
        } else {
            LIVE.fetch_sub(l.size() - size, Relaxed);
        }
        unsafe { mimalloc::MiMalloc.realloc(p, l, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The process's peak resident memory in MiB (`VmHWM`; `None` where there
/// is no /proc).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb >> 10)
}

/// The batch the inputs and the references were saved at.
const SAVED_BATCH: usize = 8;
/// Tolerances of the comparison with PyTorch (see `check`). Measured on
/// the CPU: outputs agree to 1e-5 (f32 noise); gradients to 3e-3
/// (SqueezeNet) and 9e-3 (GoogLeNet, 13 max-pools), from max-pool windows
/// that pick another of two near-tied maxima. A wrong or missing gradient
/// (candle's 1/k² max-pool, a dropped branch) is off by 0.1 to 1.
const OUT_TOL: f64 = 1e-3;
const GRAD_TOL: f64 = 5e-2;

const CLASSIFIERS: [&str; 7] = [
    "alexnet",
    "googlenet",
    "squeezenet1_0",
    "squeezenet1_1",
    "resnet18",
    "resnet50",
    "convnext_tiny",
];

/// Every workload: the classifiers, BigGAN, the paper's step.
const WORKLOADS: [&str; 9] = [
    CLASSIFIERS[0],
    CLASSIFIERS[1],
    CLASSIFIERS[2],
    CLASSIFIERS[3],
    CLASSIFIERS[4],
    CLASSIFIERS[5],
    CLASSIFIERS[6],
    "biggan",
    "step",
];

/// Its arguments ([`common::Args`]).
fn args() -> Result<Args> {
    common::Bench {
        source: "benches/imagenet.rs",
        reference: "bench/imagenet_reference.py",
        saved_batch: SAVED_BATCH,
        workloads: &WORKLOADS,
        takes_device: true,
    }
    .args()
}

fn device(choice: Option<&str>) -> Result<Device> {
    let dev = match choice {
        None => gevaldi::suite::device()?,
        Some("cpu") => Device::Cpu,
        Some("cuda") => Device::new_cuda(0)
            .context("failed to open CUDA device 0 (built without `--features cuda`, or no GPU)")?,
        Some("metal") => Device::new_metal(0).context("failed to open Metal device 0")?,
        Some(other) => bail!("unknown device `{other}`: expected cpu, cuda or metal"),
    };
    gevaldi::suite::bench_cuda_events(&dev);
    if dev.is_cuda() {
        let kept = gevaldi::suite::keep_cuda_pool_memory(&dev);
        eprintln!(
            "device: CUDA memory pool {}",
            if kept {
                "keeps freed memory (release threshold raised from 0)"
            } else {
                "left as it was (GEVALDI_BENCH_CUDA_POOL=release, its threshold set, or no pools)"
            }
        );
    }
    Ok(dev)
}

/// The saved inputs, rows repeated cyclically to `batch`.
struct Inputs {
    x: Var,
    proj: Tensor,
    z: Var,
    c: Tensor,
    img_proj: Tensor,
}

fn inputs(dir: &Path, batch: usize, dev: &Device) -> Result<Inputs> {
    let path = dir.join("inputs.safetensors");
    let t = candle_core::safetensors::load(&path, dev)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let rows: Vec<u32> = (0..batch).map(|i| (i % SAVED_BATCH) as u32).collect();
    let rows = Tensor::from_vec(rows, batch, dev)?;
    let get = |name: &str| -> Result<Tensor> {
        let v = t
            .get(name)
            .with_context(|| format!("no `{name}` in {}", path.display()))?;
        Ok(v.index_select(&rows, 0)?.contiguous()?)
    };
    Ok(Inputs {
        x: Var::from_tensor(&get("x")?)?,
        proj: t["proj"].unsqueeze(1)?,
        z: Var::from_tensor(&get("z")?)?,
        c: get("c")?,
        img_proj: get("img_proj")?,
    })
}

/// The models, loaded once through the zoo and shared by the workloads.
struct Models {
    dir: PathBuf,
    dev: Device,
    classifiers: HashMap<String, Box<dyn Classifier>>,
    biggan: Option<Box<dyn Generator>>,
}

impl Models {
    fn classifier(&mut self, name: &str) -> Result<&dyn Classifier> {
        if !self.classifiers.contains_key(name) {
            let arch =
                Arch::from_name(name).with_context(|| format!("no architecture {name:?}"))?;
            let path = self.dir.join("weights").join(format!("{name}.safetensors"));
            let model = zoo::load_file(&path, name, &self.dev, |vb| zoo::classifier(arch, vb))?;
            self.classifiers.insert(name.to_string(), model);
        }
        Ok(self.classifiers[name].as_ref())
    }

    fn biggan(&mut self) -> Result<&dyn Generator> {
        if self.biggan.is_none() {
            let path = self.dir.join("weights/biggan-deep-128.safetensors");
            let arch = Arch::BigGanDeep128;
            self.biggan = Some(zoo::load_file(&path, arch.name(), &self.dev, |vb| {
                zoo::generator_with(arch, vb, Some(1.0))
            })?);
        }
        Ok(self.biggan.as_deref().expect("loaded above"))
    }
}

/// What a step leaves: the scalar, the output and the input gradient.
struct Step {
    scalar: Tensor,
    out: Tensor,
    grad: Tensor,
}

impl Step {
    /// The one read-back of a step: the scalar and the gradient's sum.
    fn read_back(&self) -> Result<[f32; 2]> {
        let v = Tensor::stack(&[self.scalar.clone(), self.grad.sum_all()?], 0)?.to_vec1()?;
        Ok([v[0], v[1]])
    }
}

fn gradient(scalar: &Tensor, wrt: &Var) -> Result<Tensor> {
    let grads = scalar.backward()?;
    Ok(grads
        .get(wrt.as_tensor())
        .context("no gradient reached the input: an op without backward")?
        .clone())
}

fn classifier_step(model: &dyn Classifier, inp: &Inputs) -> Result<Step> {
    let logits = model.logits(inp.x.as_tensor())?;
    let scalar = logits.matmul(&inp.proj)?.sum_all()?;
    let grad = gradient(&scalar, &inp.x)?;
    Ok(Step {
        scalar,
        out: logits,
        grad,
    })
}

fn biggan_step(gen: &dyn Generator, inp: &Inputs) -> Result<Step> {
    let img = gen.decode(inp.z.as_tensor(), Some(&inp.c))?;
    let scalar = (&img * &inp.img_proj)?.sum_all()?;
    let grad = gradient(&scalar, &inp.z)?;
    Ok(Step {
        scalar,
        out: img,
        grad,
    })
}

struct Paper<'a> {
    gen: &'a dyn Generator,
    p: &'a dyn Classifier,
    q: &'a dyn Classifier,
    pre: Preprocess,
}

fn paper_step(m: &Paper, inp: &Inputs) -> Result<Step> {
    // GEVALDI_PROFILE: each part of the step a row of its own.
    let dev = inp.z.device();
    use gevaldi::engine::profile_section as section;
    let forward = || -> Result<[Tensor; 4]> {
        let img = section(dev, "BigGAN forward", || {
            m.gen.decode(inp.z.as_tensor(), Some(&inp.c))
        })?;
        let x = section(dev, "preprocessing", || m.pre.apply(&img))?;
        let lp = section(dev, "GoogLeNet forward", || m.p.logits(&x))?;
        let lq = section(dev, "AlexNet forward", || m.q.logits(&x))?;
        // The search's head: log-softmaxes and KL as one op.
        let kl = section(dev, "log-softmax + KL", || {
            Divergence::Kl
                .of_logits(&[lp.clone(), lq.clone()])
                .map(|head| head.divergence)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        Ok([img, lp, lq, kl])
    };
    // As the search does: its own backward (the engine's tape) where the
    // chain's recording is closed, else candle's.
    let own = std::env::var("GEVALDI_BENCH_BACKWARD").as_deref() != Ok("candle");
    let (result, recording) = gevaldi::engine::record_while(|| own.then(forward));
    if let Some(result) = result {
        let [img, lp, lq, kl] = result?;
        if recording.closed(inp.z.as_tensor(), &[&img, &lp, &lq, &kl]) {
            let ones = kl.ones_like()?;
            let grad = section(dev, "backward (all of it)", || {
                recording.gradient(vec![(&kl, ones)], inp.z.as_tensor())
            })?
            .context("no gradient reached z through the recording")?;
            return Ok(Step {
                scalar: kl.sum_all()?,
                out: kl,
                grad,
            });
        }
    }
    let [_, _, _, kl] = forward()?;
    let scalar = kl.sum_all()?;
    let grad = section(dev, "backward (all of it)", || {
        gradient(&scalar, &inp.z).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    })?;
    Ok(Step {
        scalar,
        out: kl,
        grad,
    })
}

/// The values of `a` (any device) and `b` as f64, checked for the same count.
fn values(a: &Tensor, b: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let read = |t: &Tensor| -> Result<Vec<f64>> {
        let v = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(v.into_iter().map(f64::from).collect())
    };
    let (a, b) = (read(a)?, read(b)?);
    if a.len() != b.len() {
        bail!("{} values against PyTorch's {}", a.len(), b.len());
    }
    Ok((a, b))
}

/// max |a − b| / max |b| ([`common::relative_max_diff`]).
fn relative_max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = values(a, b)?;
    Ok(common::relative_max_diff(&a, &b))
}

/// ‖a − b‖₂ / ‖b‖₂ (NaN when `a` holds a NaN, which fails every check).
///
/// The gradients are compared by norm, not by their largest difference: a
/// max-pool window whose two largest inputs differ by less than f32 noise
/// may pick the other one in gevaldi than in PyTorch, which moves that
/// window's whole gradient (SqueezeNet: ~0.2% of the input's positions,
/// 3e-2 of the largest value, 3e-3 of the norm).
fn relative_l2_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = values(a, b)?;
    Ok(common::relative_l2_diff(&a, &b))
}

/// Compares a step's output and gradient with PyTorch's saved ones:
/// `out_rel=… grad_rel=… check=ok|MISMATCH`.
fn check(dir: &Path, name: &str, step: &Step, save: Option<&Path>) -> Result<String> {
    if let Some(save) = save {
        std::fs::create_dir_all(save)?;
        let out = step.out.to_device(&Device::Cpu)?;
        let grad = step.grad.to_device(&Device::Cpu)?;
        candle_core::safetensors::save(
            &HashMap::from([("out", out), ("grad", grad)]),
            save.join(format!("{name}.safetensors")),
        )?;
    }
    let path = dir.join("reference").join(format!("{name}.safetensors"));
    let r = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let out = relative_max_diff(&step.out, &r["out"])?;
    let grad = relative_l2_diff(&step.grad, &r["grad"])?;
    // Written so that a NaN fails.
    let ok = out <= OUT_TOL && grad <= GRAD_TOL;
    if !ok {
        eprintln!(
            "\n!!!!!!!! MISMATCH: gevaldi's `{name}` differs from PyTorch's: output {out:.3e} \
             (max difference / max value, tolerance {OUT_TOL:e}), input gradient {grad:.3e} \
             (norm of the difference / norm, tolerance {GRAD_TOL:e}) !!!!!!!!\n"
        );
    }
    Ok(format!(
        "out_rel={out:.2e} grad_rel={grad:.2e} check={}",
        if ok { "ok" } else { "MISMATCH" }
    ))
}

/// What the timed steps took.
struct Timed {
    steps: usize,
    seconds: f64,
    /// The most heap memory a timed step held above what was live before
    /// it (models, inputs), in bytes.
    heap: usize,
    /// candle tensors made per step (ops and views: on a GPU each op other
    /// than a view is at least one launch).
    tensors: usize,
}

/// Runs the warm-up steps, then the timed ones.
fn time(args: &Args, warmup: usize, mut step: impl FnMut() -> Result<Step>) -> Result<Timed> {
    for _ in 0..warmup {
        step()?.read_back()?;
    }
    // GEVALDI_PROFILE: the timed steps' profile only.
    let _ = gevaldi::engine::profile_report(1);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let tensors = gevaldi::engine::tensors_made();
    let started = Instant::now();
    let mut n = 0;
    while n < args.min_steps
        || (n < args.max_steps && started.elapsed().as_secs_f64() < args.budget_s)
    {
        step()?.read_back()?;
        n += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let tensors = (gevaldi::engine::tensors_made() - tensors) / n.max(1);
    if let Some(profile) = gevaldi::engine::profile_report(n) {
        eprintln!("{profile}");
    }
    Ok(Timed {
        steps: n,
        seconds,
        heap: PEAK.load(Relaxed).saturating_sub(base),
        tensors,
    })
}

fn main() -> Result<()> {
    gevaldi::prepare_process();
    let args = args()?;
    let dev = device(args.device.as_deref())?;
    let dev_name = match &dev {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    };
    let inp = inputs(&args.dir, args.batch, &dev)?;
    let mut models = Models {
        dir: args.dir.clone(),
        dev: dev.clone(),
        classifiers: HashMap::new(),
        biggan: None,
    };
    let mut mismatches = 0;
    for name in &args.workloads {
        // Loaded before the clock starts.
        let run = |args: &Args, step: &dyn Fn() -> Result<Step>| -> Result<String> {
            // The first warm-up step (or an extra one without warm-up) is
            // the one checked against PyTorch.
            let checked = if args.batch == SAVED_BATCH {
                let first = step()?;
                first.read_back()?;
                check(&args.dir, name, &first, args.save.as_deref())?
            } else {
                "check=skipped".to_string()
            };
            let warmup = if args.batch == SAVED_BATCH {
                args.warmup.saturating_sub(1)
            } else {
                args.warmup
            };
            let Timed {
                steps,
                seconds,
                heap,
                tensors,
            } = time(args, warmup, step)?;
            // Host memory: on a GPU the heap holds little of a step.
            let mut memory = format!(" tensors_per_step={tensors}");
            if dev_name == "cpu" {
                memory += &format!(" step_heap_mib={}", heap >> 20);
            }
            if let Some(rss) = peak_rss_mib() {
                memory += &format!(" peak_rss_mib={rss}");
            }
            Ok(format!(
                "gevaldi workload={name} device={dev_name} batch={} steps={steps} \
                 seconds={seconds:.3} steps_per_s={:.3}{memory} {checked}",
                args.batch,
                steps as f64 / seconds
            ))
        };
        let line = match name.as_str() {
            "biggan" => {
                let gen = models.biggan()?;
                run(&args, &|| biggan_step(gen, &inp))?
            }
            "step" => {
                models.classifier("googlenet")?;
                models.classifier("alexnet")?;
                models.biggan()?;
                let paper = Paper {
                    gen: models.biggan.as_deref().expect("loaded"),
                    p: models.classifiers["googlenet"].as_ref(),
                    q: models.classifiers["alexnet"].as_ref(),
                    pre: Preprocess::imagenet((-1.0, 1.0), 224),
                };
                run(&args, &|| paper_step(&paper, &inp))?
            }
            c => {
                let model = models.classifier(c)?;
                run(&args, &|| classifier_step(model, &inp))?
            }
        };
        if line.contains("MISMATCH") {
            mismatches += 1;
        }
        println!("{line}");
    }
    if mismatches > 0 {
        eprintln!("{mismatches} workload(s) disagree with PyTorch: see the MISMATCH lines above");
    }
    Ok(())
}
