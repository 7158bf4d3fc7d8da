//! Where the device-generic path spends its time, per kind of op
//! (`GEVALDI_PROFILE=1`): each node's forward and each node's backward
//! waits for the device before and after (so a GPU's queue is empty and
//! the time is the op's own: its launches and its kernels), and the time
//! is added to the op's kind. The synchronisations slow the whole run; the
//! table says where the time goes, not how long a step takes.
//! [`report`] gives the table (the ImageNet bench prints it).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;

use super::net::{Activation, Op};
use super::Pool2dSettings;

/// The environment variable that turns the profile on.
pub(crate) const PROFILE_VAR: &str = "GEVALDI_PROFILE";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(PROFILE_VAR).is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A row of the table: the phase (forward, backward) and the kind of op.
type Row = (&'static str, String);

/// Time, count and tensors made ([`tensors_made`]) per row.
static TABLE: Mutex<BTreeMap<Row, (Duration, u64, usize)>> = Mutex::new(BTreeMap::new());

/// `s` where both axes have it, else `{rows}x{columns}`.
fn axes([s, t]: [usize; 2]) -> String {
    if s == t {
        s.to_string()
    } else {
        format!("{s}x{t}")
    }
}

/// The kind of `op` in the table: its name and the settings that change
/// its cost.
pub(crate) fn kind(op: &Op) -> String {
    // A pool's window, stride (one number where the axes agree) and
    // dilation where there is one.
    let pool_label = |s: &Pool2dSettings| {
        let [kh, kw] = s.kernel;
        let dilated = if s.dilation == [1, 1] {
            String::new()
        } else {
            format!(" dilation {}", axes(s.dilation))
        };
        format!("{kh}x{kw} stride {}{dilated}", axes(s.stride))
    };
    match op {
        Op::Input => "input".into(),
        Op::Conv {
            weight, settings, ..
        } => {
            let (k, kk) = (weight.dim(2).unwrap_or(0), weight.dim(3).unwrap_or(0));
            let dw = if settings.groups > 1 && weight.dim(1).is_ok_and(|d| d == 1) {
                " depthwise"
            } else {
                ""
            };
            format!("conv {k}x{kk} stride {}{dw}", axes(settings.stride))
        }
        Op::Linear { .. } => "linear".into(),
        Op::Affine { .. } => "affine".into(),
        Op::Act(a) => match a {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::GeluErf => "gelu",
            Activation::Silu => "silu",
            Activation::LeakyRelu(_) => "leaky relu",
            Activation::Hardtanh(..) => "hardtanh",
            Activation::Hardswish => "hardswish",
            Activation::Hardsigmoid => "hardsigmoid",
        }
        .into(),
        Op::AvgPool(settings) => format!("avgpool {}", pool_label(settings)),
        Op::Upsample { scale } => format!("upsample x{scale}"),
        Op::ConvTranspose {
            weight, settings, ..
        } => {
            let (k, kk) = (weight.dim(2).unwrap_or(0), weight.dim(3).unwrap_or(0));
            format!("conv transpose {k}x{kk} stride {}", axes(settings.stride))
        }
        Op::MaxPool(settings) => format!("maxpool {}", pool_label(settings)),
        Op::AdaptiveAvgPool { .. } => "adaptive avgpool".into(),
        Op::Flatten | Op::Reshape(_) => "reshape".into(),
        Op::Concat { .. } => "concat".into(),
        Op::Narrow { .. } => "narrow".into(),
        Op::Constant(_) => "constant".into(),
        Op::ChannelShuffle { .. } => "channel shuffle".into(),
        Op::Add => "add".into(),
        Op::Mul => "mul".into(),
        Op::LayerNorm { .. } => "layernorm".into(),
        Op::Attention { .. } => "attention".into(),
    }
}

/// `f()`, timed into the row of `phase` and the kind `kind()` names, when
/// the profile is on.
pub(crate) fn time<T>(
    dev: &Device,
    phase: &'static str,
    kind: impl FnOnce() -> String,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    if !enabled() {
        return f();
    }
    dev.synchronize()?;
    let tensors = tensors_made();
    let started = Instant::now();
    let out = f()?;
    dev.synchronize()?;
    let took = started.elapsed();
    let tensors = tensors_made().saturating_sub(tensors);
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let row = table.entry((phase, kind())).or_default();
    row.0 += took;
    row.1 += 1;
    row.2 += tensors;
    Ok(out)
}

/// The phase of [`section`]'s rows.
const SECTION: &str = "section";

/// `f()`, timed as a section of a step named `name` (a caller's phase: the
/// generator's forward, the backward, …), when the profile is on. A
/// section's time includes the ops inside it; the report lists sections
/// apart and leaves them out of its total.
#[doc(hidden)]
pub fn section<T>(
    dev: &Device,
    name: &str,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    time(dev, SECTION, || name.to_string(), f)
}

/// The profile so far, slowest rows first, `per` dividing the times (the
/// steps run); `None` when it is off. Empties the table.
#[doc(hidden)]
pub fn report(per: usize) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    Some(render(std::mem::take(&mut *table), per))
}

/// The table of [`report`] from its rows, `per` dividing the times.
fn render(table: BTreeMap<Row, (Duration, u64, usize)>, per: usize) -> String {
    let mut rows: Vec<_> = table.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let per = per.max(1) as f64;
    let (sections, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.0 .0 == SECTION);
    // From +0 (an empty float sum is −0, printed "-0.00").
    let total = rows.iter().fold(0.0, |t, r| t + r.1 .0.as_secs_f64());
    // A row's figures per step, then its name.
    let line = |(took, count, tensors): (Duration, u64, usize), name: String| {
        format!(
            "{:9.3} ms {:7.1}x {:8.0}t  {name}\n",
            took.as_secs_f64() * 1e3 / per,
            count as f64 / per,
            tensors as f64 / per
        )
    };
    let mut out = String::new();
    if !sections.is_empty() {
        out.push_str(
            "step sections (synchronised; each includes the ops inside), per step: time, \
             calls, candle tensors made\n",
        );
        for ((_, name), figures) in sections {
            out.push_str(&line(figures, name));
        }
    }
    if rows.is_empty() {
        // A net on the CPU engine: its kernels run inside one candle op
        // per net, which this table does not time op by op.
        out.push_str(
            "engine profile: no op ran on the generic path (the CPU engine's kernels are not \
             timed op by op: GEVALDI_ENGINE=generic times the same net's ops on the generic \
             path; a sampling profiler such as perf sees the CPU engine's)\n",
        );
        return out;
    }
    out.push_str(&format!(
        "engine profile (generic path, synchronised per op), per step: {:.2} ms in all; \
         time, calls, candle tensors made\n",
        total * 1e3 / per
    ));
    for ((phase, kind), figures) in rows {
        out.push_str(&line(figures, format!("{phase:8} {kind}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::super::net::Op;
    use super::super::{Conv2dSettings, Pool2dSettings};
    use super::{kind, render, report, time};

    /// Off (this test process has no GEVALDI_PROFILE): `time` runs its
    /// closure and records nothing, and there is no report. The kinds
    /// name a conv's shape.
    #[test]
    fn off_by_default_and_kinds_name_the_shape() {
        if std::env::var_os(super::PROFILE_VAR).is_some() {
            return;
        }
        let out = time(&Device::Cpu, "forward", || unreachable!(), || Ok(7)).unwrap();
        assert_eq!(out, 7);
        assert!(report(1).is_none());
        let conv = |groups: usize, cin_g: usize, stride| Op::Conv {
            weight: Tensor::zeros((8, cin_g, 3, 5), DType::F32, &Device::Cpu).unwrap(),
            bias: None,
            settings: Conv2dSettings {
                stride,
                padding: [1; 2],
                dilation: [1; 2],
                groups,
            },
        };
        assert_eq!(kind(&conv(1, 4, [2, 2])), "conv 3x5 stride 2");
        assert_eq!(kind(&conv(8, 1, [2, 2])), "conv 3x5 stride 2 depthwise");
        assert_eq!(kind(&conv(1, 4, [2, 1])), "conv 3x5 stride 2x1");
        let stem = Op::MaxPool(Pool2dSettings::square(3, 2, 1, false));
        assert_eq!(kind(&stem), "maxpool 3x3 stride 2");
        let tall = Pool2dSettings {
            stride: [2, 1],
            dilation: [2, 1],
            ..Pool2dSettings::new([3, 1])
        };
        assert_eq!(
            kind(&Op::AvgPool(Pool2dSettings::new([1, 2]))),
            "avgpool 1x2 stride 1x2"
        );
        assert_eq!(
            kind(&Op::MaxPool(tall)),
            "maxpool 3x1 stride 2x1 dilation 2x1"
        );
    }

    /// Regression: a step whose net ran whole on the CPU engine (no op
    /// on the generic path) printed an empty table, "0.00 ms in all",
    /// as if nothing had run; it now says why there are no rows. Rows
    /// print slowest first, per step.
    #[test]
    fn a_table_without_generic_ops_says_why() {
        let empty = render(Default::default(), 3);
        assert!(empty.contains("no op ran on the generic path"), "{empty}");
        assert!(!empty.contains("0.00 ms in all"), "{empty}");
        let mut rows = std::collections::BTreeMap::new();
        let ms = std::time::Duration::from_millis;
        rows.insert(("forward", "relu".to_string()), (ms(30), 3, 6));
        rows.insert(("forward", "conv 3x3 stride 1".to_string()), (ms(90), 3, 9));
        let table = render(rows, 3);
        assert!(table.contains("40.00 ms in all"), "{table}");
        let (conv, relu) = (table.find("conv 3x3").unwrap(), table.find("relu").unwrap());
        assert!(conv < relu, "{table}");
    }
}

/// How many candle tensors the process has made so far, not counting
/// this function's own probes: every op's output and every view (reshape,
/// narrow, transpose, detach) gets the next id of candle's counter. The
/// difference over a step is a device-independent count of the step's ops
/// (on a GPU each op other than a view is at least one launch), for the
/// benches and the profile.
pub fn tensors_made() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let probes = PROBES.fetch_add(1, Ordering::Relaxed) + 1;
    let probe = candle_core::Tensor::zeros((), candle_core::DType::F32, &Device::Cpu);
    let id = probe.ok().and_then(|t| {
        let id = format!("{:?}", t.id());
        id.strip_prefix("TensorId(")?
            .strip_suffix(')')?
            .parse::<usize>()
            .ok()
    });
    id.unwrap_or(0).saturating_sub(probes)
}

#[cfg(test)]
mod tensor_count_tests {
    use candle_core::{Device, Tensor};

    /// Three ops make three tensors, the probes none (other tests'
    /// tensors, made on other threads meanwhile, can only add to them).
    #[test]
    fn counts_the_ops_in_between_not_the_probes() {
        let before = super::tensors_made();
        let t = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let _ = (t.exp().unwrap() + 1.0).unwrap();
        let made = super::tensors_made() - before;
        assert!(made >= 3, "{made} tensors counted for 3 ops");
        // Back to back, two reads differ only by what other threads made
        // meanwhile: at least once in 1000 tries, by nothing (a probe
        // counted would make every difference at least 1).
        let still = (0..1000).any(|_| super::tensors_made() == super::tensors_made());
        assert!(still, "the probes are counted");
    }
}
