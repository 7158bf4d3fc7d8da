//! What the benches against PyTorch share: their arguments, and how they
//! compare a step with PyTorch's saved one.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// A bench's arguments: `--dir DIR` (the folder its reference script's
/// `make --dir DIR` wrote), `--batch N` (default: the saved batch, the one
/// checked against PyTorch), `--warmup N` (1), `--min-steps N` (1),
/// `--max-steps N` (20), `--budget-s SECONDS` (8), `--save DIR`, `--device
/// cpu|cuda|metal` where the bench takes one, and workload names (default:
/// all).
pub struct Args {
    pub dir: PathBuf,
    pub device: Option<String>,
    pub batch: usize,
    pub warmup: usize,
    pub min_steps: usize,
    pub max_steps: usize,
    pub budget_s: f64,
    pub save: Option<PathBuf>,
    pub workloads: Vec<String>,
}

/// The bench whose arguments are parsed.
pub struct Bench<'a> {
    /// Its source, named in errors (`benches/imagenet.rs`).
    pub source: &'a str,
    /// The script that makes its `--dir`.
    pub reference: &'a str,
    /// The batch its reference saved.
    pub saved_batch: usize,
    /// Every workload, in their default order.
    pub workloads: &'a [&'a str],
    /// Whether it takes `--device`.
    pub takes_device: bool,
}

impl Bench<'_> {
    /// This process's arguments.
    pub fn args(&self) -> Result<Args> {
        let mut a = Args {
            dir: PathBuf::new(),
            device: None,
            batch: self.saved_batch,
            warmup: 1,
            min_steps: 1,
            max_steps: 20,
            budget_s: 8.0,
            save: None,
            workloads: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        let mut dir = None;
        while let Some(arg) = it.next() {
            let mut value = |what: &str| it.next().with_context(|| format!("{arg} {what}"));
            match arg.as_str() {
                "--dir" => dir = Some(PathBuf::from(value("DIR")?)),
                "--device" if self.takes_device => a.device = Some(value("cpu|cuda|metal")?),
                "--batch" => a.batch = value("N")?.parse()?,
                "--warmup" => a.warmup = value("N")?.parse()?,
                "--min-steps" => a.min_steps = value("N")?.parse()?,
                "--max-steps" => a.max_steps = value("N")?.parse()?,
                "--budget-s" => a.budget_s = value("SECONDS")?.parse()?,
                "--save" => a.save = Some(PathBuf::from(value("DIR")?)),
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                w if !w.starts_with('-') => a.workloads.push(w.to_string()),
                other => bail!("unknown argument `{other}` (see {})", self.source),
            }
        }
        a.dir = dir.with_context(|| {
            format!(
                "--dir DIR is required: the folder `{} make --dir DIR` wrote",
                self.reference
            )
        })?;
        if a.workloads.is_empty() {
            a.workloads = self.workloads.iter().map(|s| s.to_string()).collect();
        }
        for w in &a.workloads {
            if !self.workloads.contains(&w.as_str()) {
                bail!(
                    "unknown workload `{w}`: expected one of {:?}",
                    self.workloads
                );
            }
        }
        Ok(a)
    }
}

/// max |a − b| / max |b|; infinite where `a` holds a NaN.
pub fn relative_max_diff(a: &[f64], b: &[f64]) -> f64 {
    let mut diff = 0f64;
    let mut scale = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        // A NaN must not pass: `max` would drop it.
        diff = if d.is_nan() {
            f64::INFINITY
        } else {
            diff.max(d)
        };
        scale = scale.max(y.abs());
    }
    diff / scale.max(f64::MIN_POSITIVE)
}

/// ‖a − b‖₂ / ‖b‖₂ (NaN where `a` holds a NaN, which fails every check).
pub fn relative_l2_diff(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}
