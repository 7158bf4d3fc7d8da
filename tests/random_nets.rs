//! Networks no built-in model has: random graphs from [`NetBuilder`]'s whole
//! vocabulary (convs with any stride, padding, dilation and groups, each
//! of the first three per axis too, depthwise included; linear layers on flat values and per pixel; affine
//! maps; the activations, LeakyReLU and SiLU included; max-pooling with padding
//! and ceil mode; average pooling with padding; adaptive average pooling
//! to smaller and larger sizes; nearest upsampling; transposed convs with
//! stride, padding, output padding and dilation; flatten, reshape, concat,
//! add and product of earlier values, gates per channel; LayerNorm; narrows
//! of dim 1, channel shuffles and constants), each run three ways: on
//! the CPU engine, on the device-generic path (what a GPU runs) and on
//! candle's ops, in f32 and again in f64 (the same draws). Output and
//! input gradient of a random linear functional must agree to f32 noise
//! (max-abs error 1e-4 relative to the largest value, or to 0.1 where all
//! are smaller), with two exceptions: max-pool windows whose two largest
//! values are within rounding of each other (see
//! `tests/engine_agreement.rs`), and nets ill-conditioned at their input
//! (an attention over one channel whose logits nearly cancel), where
//! candle's f32 ops are themselves more than 1e-4 off the f64 result:
//! there a path may be no further from f64 than twice candle's ops are.
//! In f64 every path agrees with candle's ops within 1e-9. Every value
//! must be finite.
//!
//! A user's model built from the same vocabulary takes these paths: the
//! CPU engine's compiler (fusing activations, folding affine maps, reusing
//! buffers between residual adds) meets shapes here that no zoo model has.
//! `GEVALDI_NET_CASES` (default 4000) and `GEVALDI_NET_SEED` (default 0)
//! choose the cases; a failure prints its seed and the net.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use gevaldi::engine::{
    Activation, Conv2dSettings, ConvTranspose2dSettings, Net, NetBuilder, NodeId, Pool2dSettings,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const DEV: Device = Device::Cpu;

/// The LayerNorms' eps: large enough to bound 1/√(var + eps) by 3.2, since
/// random graphs make channels that are equal (a concat of a value with
/// itself, an adaptive pool that replicates) or nearly so, where a small
/// eps multiplies f32 noise by up to 316 (seen: 1e-3 relative).
const LN_EPS: f64 = 0.1;

thread_local! {
    /// Whether [`randn`] makes f64 tensors (of the same f32 draws): the
    /// same seed then builds the same net, input and functional in f64.
    static IN_F64: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let v: f32 = StandardNormal.sample(&mut *rng);
            scale * v
        })
        .collect::<Vec<f32>>();
    let t = Tensor::from_vec(v, shape, &DEV).unwrap();
    if IN_F64.with(|f| f.get()) {
        t.to_dtype(DType::F64).unwrap()
    } else {
        t
    }
}

/// A value's shape per sample: `[C, H, W]` or `[F]`.
type Dims = Vec<usize>;

/// A random net on input `[C, H, H]` or `[F]`, and its description.
fn random_net(rng: &mut ChaCha8Rng) -> (Net, Dims, Vec<String>) {
    let mut b = NetBuilder::new();
    let mut values: Vec<(NodeId, Dims)> = Vec::new();
    let mut log = Vec::new();
    let input: Dims = if rng.random_bool(0.8) {
        let h = rng.random_range(5..=13);
        vec![rng.random_range(1..=6), h, h]
    } else {
        vec![rng.random_range(2..=24)]
    };
    values.push((b.input(), input.clone()));
    log.push(format!("input {input:?}"));
    let steps = rng.random_range(2..=9);
    for _ in 0..steps {
        let (x, d) = values.last().unwrap().clone();
        let (y, dy, what) = if d.len() == 3 {
            step_image(&mut b, rng, x, &d, &values)
        } else {
            step_flat(&mut b, rng, x, &d)
        };
        log.push(format!("{what} -> {dy:?}"));
        values.push((y, dy));
    }
    let (out, _) = values.last().unwrap().clone();
    (b.build(out), input, log)
}

/// A conv of random settings; in three of ten, each axis's kernel,
/// stride, padding and dilation drawn on its own (PyTorch's
/// `Conv2d(kernel_size=(kh, kw), stride=(sh, sw), …)`, through
/// `NetBuilder::conv2d_with`), kept where both axes give the same output
/// size (the images here are square).
fn conv(
    b: &mut NetBuilder,
    rng: &mut ChaCha8Rng,
    x: NodeId,
    d: &Dims,
) -> Option<(NodeId, Dims, String)> {
    let (c, h) = (d[0], d[1]);
    // (kernel, stride, padding, dilation) of one axis, and its output size.
    let axis = |rng: &mut ChaCha8Rng| {
        let k = rng.random_range(1..=5usize);
        let dilation = if k > 1 && rng.random_bool(0.2) { 2 } else { 1 };
        let span = dilation * (k - 1) + 1;
        let padding = rng.random_range(0..=(span / 2).min(2));
        let stride = rng.random_range(1..=3usize);
        (h + 2 * padding >= span).then(|| {
            (
                [k, stride, padding, dilation],
                (h + 2 * padding - span) / stride + 1,
            )
        })
    };
    let (rows, cols, ho) = if rng.random_bool(0.3) {
        (0..20).find_map(|_| {
            let (r, hr) = axis(rng)?;
            let (c, hc) = axis(rng)?;
            (hr == hc && r != c).then_some((r, c, hr))
        })?
    } else {
        let (a, ho) = axis(rng)?;
        (a, a, ho)
    };
    let (groups, cout) = match rng.random_range(0..4) {
        0 if c > 1 => (c, c),     // depthwise
        1 if c > 1 => (c, 2 * c), // depthwise, multiplier 2
        2 if c % 2 == 0 => (2, 2 * rng.random_range(1..=3)),
        _ => (1, rng.random_range(1..=6)),
    };
    let [kh, stride, padding, dilation] = rows;
    let kw = cols[0];
    let w = randn(
        rng,
        &[cout, c / groups, kh, kw],
        1.0 / ((c / groups * kh * kw) as f32).sqrt(),
    );
    let bias = rng.random_bool(0.7).then(|| randn(rng, &[cout], 0.1));
    if rows == cols {
        let cfg = Conv2dConfig {
            padding,
            stride,
            dilation,
            groups,
            cudnn_fwd_algo: None,
        };
        let y = b.conv2d(x, &Conv2d::new(w, bias, cfg));
        let what = format!("conv k{kh} s{stride} p{padding} d{dilation} g{groups} {c}->{cout}");
        return Some((y, vec![cout, ho, ho], what));
    }
    let settings = Conv2dSettings {
        stride: [stride, cols[1]],
        padding: [padding, cols[2]],
        dilation: [dilation, cols[3]],
        groups,
    };
    let y = b.conv2d_with(x, &w, bias.as_ref(), settings);
    let what = format!(
        "conv k{kh}x{kw} s{:?} p{:?} d{:?} g{groups} {c}->{cout}",
        settings.stride, settings.padding, settings.dilation
    );
    Some((y, vec![cout, ho, ho], what))
}

fn step_image(
    b: &mut NetBuilder,
    rng: &mut ChaCha8Rng,
    x: NodeId,
    d: &Dims,
    values: &[(NodeId, Dims)],
) -> (NodeId, Dims, String) {
    let (c, h) = (d[0], d[1]);
    loop {
        match rng.random_range(0..21) {
            0..=2 => {
                if let Some(r) = conv(b, rng, x, d) {
                    return r;
                }
            }
            3 => {
                let (s, t) = (randn(rng, &[c], 0.5), randn(rng, &[c], 0.5));
                let s = (s + 1.0).unwrap();
                return (b.affine(x, &s, &t), d.clone(), "affine".into());
            }
            4 => {
                let a = activation(rng);
                return (b.act(x, a), d.clone(), format!("{a:?}"));
            }
            5 if rng.random_bool(0.4) => {
                // Each axis's kernel, stride, padding and dilation on its
                // own (kept where both give the same output size).
                let settings = pool_settings(rng, [3, 2, 3], true);
                let Some(ho) = same_pool_len(h, &settings) else {
                    continue;
                };
                let y = b.max_pool2d_with(x, settings);
                return (y, vec![c, ho, ho], format!("maxpool {settings:?}"));
            }
            5 => {
                let k = rng.random_range(1..=3usize);
                let s = rng.random_range(1..=2usize);
                let p = rng.random_range(0..=k / 2);
                let ceil = rng.random_bool(0.5);
                let Ok(ho) = gevaldi_pool_len(h, k, s, p, 1, ceil) else {
                    continue;
                };
                let y = b.max_pool2d(x, k, s, p, ceil);
                return (
                    y,
                    vec![c, ho, ho],
                    format!("maxpool k{k} s{s} p{p} ceil {ceil}"),
                );
            }
            6 => {
                let o = rng.random_range(1..=h + 2);
                let y = b.adaptive_avg_pool2d(x, o, o);
                return (y, vec![c, o, o], format!("adaptive avg {o}"));
            }
            7 => {
                // Concat with an earlier value of the same size (itself
                // included).
                let same: Vec<_> = values
                    .iter()
                    .filter(|(_, e)| e.len() == 3 && e[1] == h)
                    .collect();
                let (other, e) = same[rng.random_range(0..same.len())];
                let y = b.concat(&[x, *other]);
                return (y, vec![c + e[0], h, h], "concat".into());
            }
            8 => {
                let same: Vec<_> = values.iter().filter(|(_, e)| e == d).collect();
                let (other, _) = same[rng.random_range(0..same.len())];
                return (b.add(x, *other), d.clone(), "add".into());
            }
            9 => {
                let (w, bias) = (randn(rng, &[c], 0.5), randn(rng, &[c], 0.5));
                let w = (w + 1.0).unwrap();
                return (
                    b.layer_norm(x, &w, &bias, LN_EPS),
                    d.clone(),
                    "layernorm".into(),
                );
            }
            11 if rng.random_bool(0.4) => {
                // Per axis, ceil mode, count_include_pad drawn.
                let settings = pool_settings(rng, [4, 3, 1], false);
                let Some(ho) = same_pool_len(h, &settings) else {
                    continue;
                };
                let y = b.avg_pool2d_with(x, settings);
                return (y, vec![c, ho, ho], format!("avgpool {settings:?}"));
            }
            11 => {
                let k = rng.random_range(1..=4usize);
                let s = rng.random_range(1..=3usize);
                let p = rng.random_range(0..=k / 2);
                if h + 2 * p < k {
                    continue;
                }
                let ho = (h + 2 * p - k) / s + 1;
                let y = b.avg_pool2d(x, k, s, p);
                return (y, vec![c, ho, ho], format!("avgpool k{k} s{s} p{p}"));
            }
            12 => {
                let scale = rng.random_range(1..=3usize);
                if h * scale > 16 {
                    continue;
                }
                let y = b.upsample_nearest2d(x, scale);
                return (
                    y,
                    vec![c, h * scale, h * scale],
                    format!("upsample x{scale}"),
                );
            }
            13 if rng.random_bool(0.3) => {
                // Each axis's kernel, stride, padding, output padding and
                // dilation on its own (kept where both give the same
                // output size).
                let k = [0; 2].map(|_| rng.random_range(1..=4usize));
                let stride = [0; 2].map(|_| rng.random_range(1..=3usize));
                let dilation = k.map(|k| if k > 1 && rng.random_bool(0.3) { 2 } else { 1 });
                let padding = [0; 2].map(|_| rng.random_range(0..=2usize));
                let output_padding = stride.map(|s| rng.random_range(0..s));
                let full = |a: usize| {
                    (h - 1) * stride[a] + dilation[a] * (k[a] - 1) + output_padding[a] + 1
                };
                let (fh, fw) = (full(0), full(1));
                if fh <= 2 * padding[0] || fh - 2 * padding[0] > 20 {
                    continue;
                }
                let ho = fh - 2 * padding[0];
                if fw <= 2 * padding[1] || fw - 2 * padding[1] != ho {
                    continue;
                }
                let cout = rng.random_range(1..=6);
                let w = randn(
                    rng,
                    &[c, cout, k[0], k[1]],
                    1.0 / ((c * k[0] * k[1]) as f32).sqrt(),
                );
                let bias = rng.random_bool(0.7).then(|| randn(rng, &[cout], 0.1));
                let settings = ConvTranspose2dSettings {
                    stride,
                    padding,
                    output_padding,
                    dilation,
                };
                let y = b.conv_transpose2d_with(x, &w, bias.as_ref(), settings);
                return (
                    y,
                    vec![cout, ho, ho],
                    format!("conv transpose {k:?} {settings:?} {c}->{cout}"),
                );
            }
            13 => {
                let k = rng.random_range(1..=5usize);
                let stride = rng.random_range(1..=3usize);
                let dilation = if k > 1 && rng.random_bool(0.2) { 2 } else { 1 };
                let padding = rng.random_range(0..=2usize);
                let output_padding = rng.random_range(0..stride);
                let full = (h - 1) * stride + dilation * (k - 1) + output_padding + 1;
                if full <= 2 * padding || full - 2 * padding > 20 {
                    continue;
                }
                let ho = full - 2 * padding;
                let cout = rng.random_range(1..=6);
                let w = randn(rng, &[c, cout, k, k], 1.0 / ((c * k * k) as f32).sqrt());
                let bias = rng.random_bool(0.7).then(|| randn(rng, &[cout], 0.1));
                let cfg = ConvTranspose2dConfig {
                    padding,
                    output_padding,
                    stride,
                    dilation,
                };
                let y = b.conv_transpose2d(x, &ConvTranspose2d::new(w, bias, cfg));
                let what = format!(
                    "conv transpose k{k} s{stride} p{padding} op{output_padding} d{dilation} {c}->{cout}"
                );
                return (y, vec![cout, ho, ho], what);
            }
            14 => {
                // A product with an earlier value of the same shape (itself
                // included).
                let same: Vec<_> = values.iter().filter(|(_, e)| e == d).collect();
                let (other, _) = same[rng.random_range(0..same.len())];
                return (b.mul(x, *other), d.clone(), "mul".into());
            }
            17 => {
                // Attention of x's pixels over an earlier image value of
                // as many channels (itself included), as keys and values.
                let kin: Vec<_> = values
                    .iter()
                    .filter(|(_, e)| e.len() == 3 && e[0] == c)
                    .collect();
                let (kv, _) = kin[rng.random_range(0..kin.len())];
                let scale = [1.0 / (c as f32).sqrt(), 0.5, 1.0][rng.random_range(0..3)];
                let y = b.attention(x, *kv, *kv, scale);
                return (y, d.clone(), format!("attention scale {scale}"));
            }
            15 => {
                // A gate per channel (squeeze and excitation).
                let s = b.adaptive_avg_pool2d(x, 1, 1);
                let s = b.act(s, Activation::Sigmoid);
                return (b.mul(x, s), d.clone(), "mul by a channel gate".into());
            }
            18 => {
                let (start, len) = channel_range(rng, c);
                let y = b.narrow(x, 1, start, len);
                return (y, vec![len, h, h], format!("narrow {start}+{len} of {c}"));
            }
            20 => {
                // A constant's channels after x's (a class token's kind).
                let k = rng.random_range(1..=3);
                let token = b.constant(&randn(rng, &[1, k, h, h], 1.0));
                let y = b.concat(&[x, token]);
                return (
                    y,
                    vec![c + k, h, h],
                    format!("constant of {k} channels joined"),
                );
            }
            19 => {
                let groups = divisor(rng, c);
                let y = b.channel_shuffle(x, groups);
                return (y, d.clone(), format!("channel shuffle {groups} of {c}"));
            }
            10 => {
                let out = rng.random_range(1..=6);
                let w = randn(rng, &[out, c], 1.0 / (c as f32).sqrt());
                let bias = rng.random_bool(0.5).then(|| randn(rng, &[out], 0.1));
                let y = b.linear(x, &w, bias.as_ref());
                return (y, vec![out, h, h], format!("linear per pixel {c}->{out}"));
            }
            _ => {
                let f = c * h * h;
                if rng.random_bool(0.5) {
                    return (b.flatten(x), vec![f], "flatten".into());
                }
                return (b.reshape(x, &[f]), vec![f], "reshape flat".into());
            }
        }
    }
}

fn step_flat(
    b: &mut NetBuilder,
    rng: &mut ChaCha8Rng,
    x: NodeId,
    d: &Dims,
) -> (NodeId, Dims, String) {
    let f = d[0];
    match rng.random_range(0..7) {
        5 => {
            let (start, len) = channel_range(rng, f);
            let y = b.narrow(x, 1, start, len);
            (y, vec![len], format!("narrow {start}+{len} of {f}"))
        }
        6 => {
            let groups = divisor(rng, f);
            let y = b.channel_shuffle(x, groups);
            (y, d.clone(), format!("channel shuffle {groups} of {f}"))
        }
        0 | 1 => {
            let out = rng.random_range(1..=24);
            let w = randn(rng, &[out, f], 1.0 / (f as f32).sqrt());
            let bias = rng.random_bool(0.7).then(|| randn(rng, &[out], 0.1));
            (
                b.linear(x, &w, bias.as_ref()),
                vec![out],
                format!("linear {f}->{out}"),
            )
        }
        2 => {
            let a = activation(rng);
            (b.act(x, a), d.clone(), format!("{a:?}"))
        }
        3 => {
            let (w, bias) = (randn(rng, &[f], 0.5), randn(rng, &[f], 0.5));
            let w = (w + 1.0).unwrap();
            (
                b.layer_norm(x, &w, &bias, LN_EPS),
                d.clone(),
                "layernorm".into(),
            )
        }
        _ => {
            // Back to an image where f factors as c·h·h.
            for h in (1..=4usize).rev() {
                if f.is_multiple_of(h * h) {
                    let c = f / (h * h);
                    return (
                        b.reshape(x, &[c, h, h]),
                        vec![c, h, h],
                        "reshape image".into(),
                    );
                }
            }
            let a = activation(rng);
            (b.act(x, a), d.clone(), format!("{a:?}"))
        }
    }
}

/// A random range `[start, start + len)` of `c` entries, `len` ≥ 1.
fn channel_range(rng: &mut ChaCha8Rng, c: usize) -> (usize, usize) {
    let start = rng.random_range(0..c);
    (start, rng.random_range(1..=c - start))
}

/// A random divisor of `c` (1 and `c` included).
fn divisor(rng: &mut ChaCha8Rng, c: usize) -> usize {
    let ds: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
    ds[rng.random_range(0..ds.len())]
}

fn activation(rng: &mut ChaCha8Rng) -> Activation {
    [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::GeluErf,
        Activation::LeakyRelu(0.2),
        Activation::LeakyRelu(0.01),
        Activation::Silu,
        Activation::Hardtanh(0.0, 6.0),
        Activation::Hardtanh(-1.0, 1.0),
        Activation::Hardswish,
        Activation::Hardsigmoid,
    ][rng.random_range(0..11)]
}

/// PyTorch's pooled length (refusing a window that starts in the padding),
/// the window spanning `(k − 1)·d + 1`.
fn gevaldi_pool_len(
    h: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    ceil: bool,
) -> Result<usize, ()> {
    let e = (k - 1) * d + 1;
    if h + 2 * p < e {
        return Err(());
    }
    let span = h + 2 * p - e;
    let mut o = if ceil { span.div_ceil(s) } else { span / s } + 1;
    if ceil && (o - 1) * s >= h + p {
        o -= 1;
    }
    // A dilated window holding padding only (gevaldi refuses it).
    let taps_inside = |o: usize| {
        (0..k).any(|t| (0..h as isize).contains(&((o * s + t * d) as isize - p as isize)))
    };
    if (0..o).all(taps_inside) {
        Ok(o)
    } else {
        Err(())
    }
}

/// A pool's settings drawn per axis: kernels up to `k`, strides up to
/// `s`, dilations up to `d` (a max pool's), padding up to half the kernel,
/// ceil mode, and for an average `count_include_pad`.
fn pool_settings(rng: &mut ChaCha8Rng, [k, s, d]: [usize; 3], max: bool) -> Pool2dSettings {
    let kernel = [0; 2].map(|_| rng.random_range(1..=k));
    Pool2dSettings {
        kernel,
        stride: [0; 2].map(|_| rng.random_range(1..=s)),
        padding: kernel.map(|k| rng.random_range(0..=k / 2)),
        dilation: [0; 2].map(|_| rng.random_range(1..=d)),
        ceil_mode: rng.random_bool(0.5),
        count_include_pad: max || rng.random_bool(0.5),
    }
}

/// The pooled length over `h` where both axes of `settings` give the
/// same one.
fn same_pool_len(h: usize, settings: &Pool2dSettings) -> Option<usize> {
    let len = |a: usize| {
        let (k, s, p, d) = (
            settings.kernel[a],
            settings.stride[a],
            settings.padding[a],
            settings.dilation[a],
        );
        gevaldi_pool_len(h, k, s, p, d, settings.ceil_mode).ok()
    };
    len(0).filter(|&o| len(1) == Some(o))
}

/// The smallest scale errors are measured against: values are O(1) here
/// (weights scaled by 1/√fan-in), and a value that is 0 analytically (a
/// LayerNorm over equal channels) comes out as f32 noise of about 1e-6.
const FLOOR: f64 = 0.1;

/// max |a − b| / max(max |b|, FLOOR); NaN where a difference is (not
/// `m.max(d)`, which passes a NaN over).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, common::nan_max);
    diff / scale(b)
}

fn scale(b: &[f64]) -> f64 {
    b.iter().fold(FLOOR, |m, v| m.max(v.abs()))
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: a whole number"))
        })
        .unwrap_or(default)
}

/// A path's output and the input gradient of a random linear functional,
/// as f64 values.
type Run = (Vec<f64>, Vec<f64>);

/// One seed's net run on each path.
struct Case {
    log: Vec<String>,
    /// Candle's ops and autograd.
    reference: Run,
    /// `("engine", …)` (the CPU engine in f32, the generic path in f64,
    /// as `auto` chooses) and `("generic", …)`.
    paths: [(&'static str, Run); 2],
}

/// The net, input and functional of `seed`, in f32 or (the same draws) f64.
fn run_case(seed: u64, f64: bool) -> Case {
    IN_F64.with(|f| f.set(f64));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (net, input, log) = random_net(&mut rng);
    let mut shape = vec![2];
    shape.extend(&input);
    let x = Var::from_tensor(&randn(&mut rng, &shape, 1.0)).unwrap();
    let dtype = x.dtype();
    assert_eq!(
        net.uses_cpu_engine(x.as_tensor()),
        !f64,
        "seed {seed}: the CPU engine runs f32 (only)"
    );
    let reference = net.forward_candle(x.as_tensor()).unwrap();
    let w = randn(&mut rng, reference.dims(), 1.0);
    IN_F64.with(|f| f.set(false));
    let run = |path: &str, y: Tensor| -> Run {
        let at = || format!("seed {seed} ({path}, {dtype:?}): {}", log.join(", "));
        assert_eq!(y.dims(), reference.dims(), "{}: output shape", at());
        assert_eq!(y.dtype(), dtype, "{}: output dtype", at());
        let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g
            .get(x.as_tensor())
            .expect("the output depends on the input");
        let (y, g) = (values(&y), values(g));
        let bad = |v: &[f64]| v.iter().filter(|v| !v.is_finite()).count();
        assert_eq!(bad(&y), 0, "{}: values of the output not finite", at());
        assert_eq!(
            bad(&g),
            0,
            "{}: values of the input gradient not finite",
            at()
        );
        (y, g)
    };
    let paths = [
        ("engine", run("engine", net.forward(x.as_tensor()).unwrap())),
        (
            "generic",
            run("generic", net.forward_generic(x.as_tensor()).unwrap()),
        ),
    ];
    let reference = run("candle", reference.clone());
    Case {
        log,
        reference,
        paths,
    }
}

/// How a path's output or input gradient `a` may differ from candle's
/// `b` in f32: within 1e-4 of the largest value, or (`truth`, the same
/// in f64, given) no further from the truth than twice candle's own f32
/// result is, where that is itself more than 1e-4 off: a net
/// ill-conditioned at its input (e.g. an attention over one channel whose
/// logits cancel), where each path's rounding is amplified, shows its
/// paths to the truth, not to each other (seen: seed 20930, candle's ops
/// 10% off f64, the CPU engine 0.5%).
fn off_in_f32(a: &[f64], b: &[f64], truth: Option<&[f64]>) -> Option<String> {
    let e = rel_err(a, b);
    if e < 1e-4 {
        return None;
    }
    let Some(t) = truth else {
        return Some(format!("relative error {e}"));
    };
    let (ea, eb) = (rel_err(a, t), rel_err(b, t));
    (eb < 1e-4 || ea > 2.0 * eb)
        .then(|| format!("relative error {e}; against f64 {ea}, candle's ops' {eb}"))
}

#[test]
fn random_nets_agree_on_every_path() {
    let cases = env_u64("GEVALDI_NET_CASES", 4000);
    let first = env_u64("GEVALDI_NET_SEED", 0);
    let mut tie_flips = 0;
    let mut ill_conditioned = 0;
    for seed in first..first + cases {
        let case = run_case(seed, false);
        let at = || format!("seed {seed}: {}", case.log.join(", "));
        // The same net in f64: its paths agree to f64 rounding (max-pool
        // near-ties within it are not expected), and its output and
        // gradient are the truth that decides where the f32 paths differ.
        let truth = run_case(seed, true);
        for (path, (y, g)) in &truth.paths {
            let e = rel_err(y, &truth.reference.0);
            assert!(
                e < 1e-9,
                "{} ({path}, f64): forward relative error {e}",
                at()
            );
            let e = rel_err(g, &truth.reference.1);
            assert!(
                e < 1e-9,
                "{} ({path}, f64): input gradient relative error {e}",
                at()
            );
        }
        let t = Some(&truth.reference);
        for (path, (y, g)) in &case.paths {
            if let Some(why) = off_in_f32(y, &case.reference.0, t.map(|t| &t.0[..])) {
                panic!("{} ({path}): forward {why}", at());
            }
            if rel_err(y, &case.reference.0) >= 1e-4 {
                ill_conditioned += 1;
            }
            let gr = &case.reference.1;
            if off_in_f32(g, gr, t.map(|t| &t.1[..])).is_some() {
                // A max-pool near-tie sends a window's gradient elsewhere:
                // few elements, and only with a max-pool.
                let off = g
                    .iter()
                    .zip(gr)
                    .filter(|(a, b)| (*a - *b).abs() > 1e-4 * scale(gr))
                    .count();
                assert!(
                    case.log.iter().any(|l| l.starts_with("maxpool")) && off * 20 <= g.len(),
                    "{} ({path}): input gradient {}, {off} of {} off",
                    at(),
                    off_in_f32(g, gr, t.map(|t| &t.1[..])).unwrap_or_default(),
                    g.len()
                );
                tie_flips += 1;
            } else if rel_err(g, gr) >= 1e-4 {
                ill_conditioned += 1;
            }
        }
    }
    println!(
        "{cases} nets, each in f32 and f64; {tie_flips} max-pool near-ties, \
         {ill_conditioned} ill-conditioned (decided against f64)"
    );
}
