//! gevaldi's CPU engine and its device-generic path (what a GPU runs)
//! against candle's ops (the reference path), per built-in architecture:
//! seeded random weights, small inputs, the same output and the same input
//! gradient of a random linear functional of the output, to f32 noise: a
//! relative max-abs error (max |a − b| / max |b|) below 1e-4.
//!
//! The input gradient of a net of ReLUs and max-pools is piecewise
//! constant, and f32 rounding decides which piece holds an input near a
//! kink: a max-pool window whose two largest values lie within rounding of
//! each other (seen in ResNet-18: 0.63997394 and 0.63997436 on one path,
//! 0.63997394 and 0.63997376 on the other), or a ReLU whose input rounds to
//! either side of 0 (ResNet-50 with its batch norms' means moved off 0:
//! 1.6e-3, 755 of 24576 elements), picks another piece on each path; both
//! are valid gradients. Where the gradients differ at the input, they must
//! agree to the same tolerance at one of three inputs nearby
//! (x · (1 + k·10⁻³)): a wrong gradient differs at every input.

mod common;

use candle_core::{Device, Tensor, Var};
use gevaldi::engine::Net;
use gevaldi::zoo::{
    self, AlexNet, ConvNext, ConvNextSize, GoogLeNet, MnistCnn, MnistCnnConfig, MnistMlp,
    MnistMlpConfig, MnistVae, MnistVaeConfig, ResNet, ResNetDepth, SqueezeNet, SqueezeNetVersion,
};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const DEV: Device = Device::Cpu;
const TOLERANCE: f32 = 1e-4;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, common::nan_max);
    assert!(!diff.is_nan() && scale > 0.0, "NaN or an all-zero output");
    diff / scale
}

/// The CPU engine and the device-generic path (`GEVALDI_ENGINE=generic`,
/// what a GPU runs) each against candle's ops: the forward at `x`, the
/// input gradient at `x` or, where it differs there, at a nearby input
/// (see the module docs).
fn agree(name: &str, net: &Net, shape: &[usize]) {
    let x = randn(shape, 11);
    assert!(net.uses_cpu_engine(&x), "{name}: engine not used");
    type Path = fn(&Net, &Tensor) -> candle_core::Result<Tensor>;
    let paths: [(&str, Path); 2] = [
        ("engine", |n, x| candle_core::Module::forward(n, x)),
        ("generic", |n, x| n.forward_generic(x)),
    ];
    for (path, run) in paths {
        let name = format!("{name} ({path})");
        let mut flips = Vec::new();
        for k in 0..=NEARBY {
            let x = (&x * (1.0 + 1e-3 * k as f64)).unwrap();
            let (y, gf) = output_and_gradient(&x, |x| run(net, x));
            let (reference, gr) = output_and_gradient(&x, |x| net.forward_candle(x));
            let e = rel_err(&y, &reference);
            println!("{name}: forward relative error {e:.1e}");
            assert!(e < TOLERANCE, "{name}: forward relative error {e}");
            let Some(off) = gradient_differs(&gf, &gr) else {
                break;
            };
            flips.push(off);
            assert!(
                k < NEARBY,
                "{name}: the input gradient differs at x and at {NEARBY} inputs nearby: {}",
                flips.join("; ")
            );
        }
        if !flips.is_empty() {
            println!(
                "{name}: agrees at a nearby input; at x: {}",
                flips.join("; ")
            );
        }
    }
}

/// Nearby inputs tried where the gradient differs at `x`.
const NEARBY: usize = 3;

/// The output at `x` and the input gradient of a fixed random linear
/// functional of it.
fn output_and_gradient(
    x: &Tensor,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Tensor, Tensor) {
    let x = Var::from_tensor(x).unwrap();
    let y = forward(x.as_tensor()).unwrap();
    let w = randn(y.dims(), 12);
    let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap().clone();
    (y, g)
}

/// `None` where the two gradients agree to [`TOLERANCE`], else how far
/// they are apart.
fn gradient_differs(gf: &Tensor, gr: &Tensor) -> Option<String> {
    let e = rel_err(gf, gr);
    if e < TOLERANCE {
        return None;
    }
    let a = gf.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = gr.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let off = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (*x - *y).abs() > TOLERANCE * scale)
        .count();
    Some(format!(
        "relative error {e:.1e}, {off} of {} elements off",
        a.len()
    ))
}

/// The model loaded frozen from seeded weights. `seeded_varmap` leaves
/// every vector as a fresh layer has it (norm weights and running
/// variances 1, biases and means 0), under which a norm's affine map or a
/// batch norm folded wrongly still agrees: each vector is moved off it
/// (weights and variances into [0.5, 1.5], the rest into [−0.5, 0.5]).
fn frozen<M>(seed: u64, load: impl Fn(candle_nn::VarBuilder) -> candle_core::Result<M>) -> M {
    let (_, vm) = zoo::seeded_varmap(seed, &DEV, &load).unwrap();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        if var.rank() == 1 {
            let n = var.elem_count();
            let u = randn(&[n], seed * 1000 + i as u64).tanh().unwrap() * 0.5;
            let moved = (var.as_tensor() + u.unwrap()).unwrap();
            var.set(&moved).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    drop(data);
    load(zoo::frozen(&vm, &DEV)).unwrap()
}

#[test]
fn mnist_models_agree() {
    for (name, cfg) in [
        ("cnn_a", MnistCnnConfig::cnn_a()),
        ("cnn_b", MnistCnnConfig::cnn_b()),
    ] {
        let m = MnistCnn::random(&cfg, 1, &DEV).unwrap();
        agree(name, m.net(), &[3, 1, 28, 28]);
    }
    let m = MnistMlp::random(&MnistMlpConfig::default(), 2, &DEV).unwrap();
    agree("mlp", m.net(), &[3, 784]);
    let v = MnistVae::random(&MnistVaeConfig::default(), 3, &DEV).unwrap();
    agree("vae decoder", v.decoder_net(), &[3, 8]);
    let v = MnistVae::random(&MnistVaeConfig::conditional(), 4, &DEV).unwrap();
    agree("cvae decoder", v.decoder_net(), &[3, 14]);
}

#[test]
fn alexnet_agrees() {
    let m = frozen(1, |vb| AlexNet::load(vb, 1000));
    agree("alexnet", m.net(), &[2, 3, 64, 64]);
}

#[test]
fn squeezenets_agree() {
    for v in [SqueezeNetVersion::V1_0, SqueezeNetVersion::V1_1] {
        let m = frozen(2, |vb| SqueezeNet::load(vb, v, 1000));
        agree(&format!("{v:?}"), m.net(), &[2, 3, 64, 64]);
    }
}

#[test]
fn googlenet_agrees() {
    let m = frozen(5, |vb| GoogLeNet::load(vb, 1000, true));
    agree("googlenet", m.net(), &[2, 3, 64, 64]);
}

#[test]
fn resnets_agree() {
    for d in [ResNetDepth::R18, ResNetDepth::R50] {
        let m = frozen(3, |vb| ResNet::load(vb, d, 1000));
        agree(&format!("{d:?}"), m.net(), &[2, 3, 64, 64]);
    }
}

#[test]
fn convnext_tiny_agrees() {
    let m = frozen(6, |vb| ConvNext::load(vb, ConvNextSize::Tiny, 1000));
    agree("convnext_tiny", m.net(), &[2, 3, 64, 64]);
}
