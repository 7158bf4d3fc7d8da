//! The CPU kernels against candle's ops (the reference interpreter) and
//! naive loops, one op at a time, at the edge cases of their settings.

use candle_core::{DType, Device, Module, Tensor, Var};

use super::{
    Activation, Conv2dSettings, ConvTranspose2dSettings, Net, NetBuilder, NodeId, Pool2dSettings,
};

const DEV: Device = Device::Cpu;

pub(super) fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a − b| / max(max |b|, 1e-6).
pub(super) fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, crate::test_support::nan_max);
    assert!(!diff.is_nan(), "NaN in a comparison");
    diff / scale
}

/// The engine (and the device-generic path) and candle's ops on `net`:
/// the same output and the same input gradient of a random linear
/// functional, to 1e-5 relative.
fn check(net: &Net, shape: &[usize], seed: u64) {
    let x = Var::from_tensor(&randn(shape, seed)).unwrap();
    assert!(net.uses_cpu_engine(x.as_tensor()), "the engine must apply");
    let y_ref = net.forward_candle(x.as_tensor()).unwrap();
    let w = randn(y_ref.dims(), seed + 1);
    let grad = |y: &Tensor| {
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        g.get(x.as_tensor()).unwrap().clone()
    };
    let g_ref = grad(&y_ref);
    for (path, y) in [
        ("engine", net.forward(x.as_tensor()).unwrap()),
        ("generic", net.forward_generic(x.as_tensor()).unwrap()),
    ] {
        let e = rel_err(&y, &y_ref);
        assert!(e < 1e-5, "{path}: forward: relative error {e}");
        let e = rel_err(&grad(&y), &g_ref);
        assert!(e < 1e-5, "{path}: input gradient: relative error {e}");
    }
}

fn conv(
    b: &mut NetBuilder,
    x: NodeId,
    [cin, cout, k]: [usize; 3],
    [stride, padding, dilation, groups]: [usize; 4],
    seed: u64,
) -> NodeId {
    let w = randn(&[cout, cin / groups, k, k], seed);
    let bias = randn(&[cout], seed + 7);
    let cfg = candle_nn::Conv2dConfig {
        stride,
        padding,
        dilation,
        groups,
        ..Default::default()
    };
    b.conv2d(x, &candle_nn::Conv2d::new(w, Some(bias), cfg))
}

#[test]
fn convs_match_candle_at_every_setting() {
    // (cin, cout, k), (stride, padding, dilation, groups), (h, w)
    let cases = [
        ([3, 5, 3], [1, 1, 1, 1], (7, 6)),
        ([3, 4, 1], [1, 0, 1, 1], (5, 5)),
        ([4, 6, 1], [2, 0, 1, 1], (7, 5)),
        ([3, 8, 11], [4, 2, 1, 1], (23, 19)),
        ([4, 4, 3], [2, 1, 1, 1], (8, 10)),
        ([4, 6, 3], [1, 2, 2, 1], (9, 7)),
        ([6, 4, 3], [1, 1, 1, 2], (6, 6)),
        ([6, 6, 3], [2, 1, 1, 3], (7, 9)),
        ([8, 8, 7], [1, 3, 1, 8], (9, 10)),
        ([5, 5, 3], [2, 0, 1, 5], (8, 10)),
        ([4, 4, 2], [2, 0, 1, 1], (8, 8)),
        ([6, 9, 1], [1, 0, 1, 3], (4, 4)),
        // Depthwise at stride 1 with channels beyond a register block.
        ([19, 19, 3], [1, 1, 1, 19], (5, 6)),
        ([17, 17, 3], [1, 2, 2, 17], (7, 5)),
        // Depthwise with rows wide enough for blocks of interior pixels,
        // channels a multiple of the register block and not.
        ([40, 40, 3], [1, 1, 1, 40], (6, 13)),
        ([35, 35, 7], [1, 3, 1, 35], (9, 16)),
        ([16, 16, 5], [1, 2, 2, 16], (10, 14)),
        ([32, 32, 3], [2, 1, 1, 32], (9, 17)),
        ([48, 48, 7], [1, 0, 1, 48], (8, 12)),
        // Border pixels (most of a 7 × 7 conv's on small images) four
        // register blocks at a time, then one, then the leftover channels.
        ([83, 83, 7], [1, 3, 1, 83], (7, 9)),
        ([128, 128, 7], [1, 3, 1, 128], (7, 7)),
        // Depthwise with more padding than the kernel reaches (the input's
        // gradient then takes the per-tap path), dilated, and on lines of
        // 1 to 3 pixels (the padded path's last pixels, one at a time).
        ([24, 24, 3], [1, 3, 1, 24], (5, 6)),
        ([20, 20, 3], [1, 2, 3, 20], (6, 7)),
        ([33, 33, 7], [1, 3, 1, 33], (3, 3)),
        ([16, 16, 3], [1, 1, 1, 16], (2, 1)),
        // Depthwise at dilation 1 with 3, 5 and 7 taps a row on whole
        // register blocks, lines not a multiple of the pixel block.
        ([32, 32, 3], [1, 1, 1, 32], (6, 13)),
        ([16, 16, 5], [1, 2, 1, 16], (7, 11)),
        ([64, 64, 7], [1, 3, 1, 64], (9, 16)),
        ([4, 6, 1], [2, 0, 1, 1], (8, 8)),
        ([4, 6, 3], [2, 1, 1, 1], (4, 4)),
        ([4, 6, 3], [2, 1, 1, 1], (2, 2)),
        ([4, 6, 3], [2, 1, 1, 1], (1, 1)),
    ];
    for (i, (ck, sp, (h, w))) in cases.into_iter().enumerate() {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, ck, sp, i as u64);
        check(&b.build(y), &[3, ck[0], h, w], 100 + i as u64);
    }
}

/// 3×3 stride-1 convs with 64 input channels or more run by Winograd's
/// F(4×4, 3×3): the same figures as candle's ops, with an affine (a
/// batch norm) folded in first and a ReLU fused, at each padding and odd
/// sizes.
#[test]
fn winograd_convs_match_candle() {
    for (i, (cin, cout, pad, (h, w))) in [
        (64, 64, 1, (7, 9)),
        (72, 16, 0, (6, 5)),
        (64, 96, 2, (3, 4)),
        (96, 16, 1, (1, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, [cin, cout, 3], [1, pad, 1, 1], 30 + i as u64);
        let scale = (randn(&[cout], 40).abs().unwrap() + 0.5).unwrap();
        let y = b.affine(y, &scale, &randn(&[cout], 41));
        let y = b.act(y, Activation::Relu);
        let y = conv(&mut b, y, [cout, 16, 3], [1, 1, 1, 1], 50 + i as u64);
        check(&b.build(y), &[2, cin, h, w], 60 + i as u64);
    }
}

/// The im2col buffer is reused between convs without being cleared: a
/// padded conv after one that left NaN there (its input had NaN) reads
/// zeros in its padding, forward and backward (a regression test).
#[test]
fn a_padded_conv_reads_no_stale_values_from_an_earlier_conv() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [4, 4, 3], [1, 0, 1, 1], 1);
    let first = b.build(y);
    let xs = Var::from_tensor(&Tensor::full(f32::NAN, &[2, 4, 12, 12], &DEV).unwrap()).unwrap();
    let out = first.forward(xs.as_tensor()).unwrap();
    let g = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(values(g.get(xs.as_tensor()).unwrap())
        .iter()
        .all(|v| v.is_nan()));
    for (i, sp) in [[1, 1, 1, 1], [2, 1, 1, 1], [1, 2, 1, 2]]
        .into_iter()
        .enumerate()
    {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, [4, 6, 3], sp, 10 + i as u64);
        check(&b.build(y), &[1, 4, 8, 6], 20 + i as u64);
    }
}

/// A net that is one 1×1 stride-1 conv (as each of BigGAN's) runs on the
/// NCHW values as they are, with no transposes: the same figures.
#[test]
fn a_lone_pointwise_conv_matches_candle_on_nchw_values() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [6, 5, 1], [1, 0, 1, 1], 3);
    let net = b.build(y);
    check(&net, &[4, 6, 9, 7], 31);
    check(&net, &[2, 6, 1, 1], 32);
    // With an activation after it, the general path.
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [6, 5, 1], [1, 0, 1, 1], 3);
    let y = b.relu(y);
    check(&b.build(y), &[4, 6, 9, 7], 33);
}

#[test]
fn a_batch_norm_folds_into_its_conv_and_stays_alone_elsewhere() {
    let scale = randn(&[5], 1);
    let shift = randn(&[5], 2);
    let mut b = NetBuilder::new();
    let x = b.input();
    let c = conv(&mut b, x, [3, 5, 3], [1, 1, 1, 1], 3);
    let y = b.affine(c, &scale, &shift);
    let y = b.relu(y);
    // An affine whose input has two readers does not fold.
    let c2 = conv(&mut b, x, [3, 5, 3], [2, 1, 1, 1], 8);
    let z = b.affine(c2, &scale, &shift);
    let z = b.concat(&[z, c2]);
    let y = b.max_pool2d(y, 2, 2, 0, false);
    let y = b.concat(&[y, z]);
    check(&b.build(y), &[2, 3, 6, 6], 4);
}

#[test]
fn activations_match_candle_fused_or_alone() {
    for a in [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::GeluErf,
        Activation::Silu,
        Activation::LeakyRelu(0.1),
    ] {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, [2, 3, 3], [1, 1, 1, 1], 5);
        let y = b.act(y, a);
        // Alone: after a pool.
        let y = b.max_pool2d(y, 2, 2, 0, false);
        let y = b.act(y, a);
        check(&b.build(y), &[2, 2, 6, 6], 6);
    }
}

#[test]
fn max_pools_match_candle_with_padding_and_ceil_mode() {
    for (i, (k, s, p, ceil, h, w)) in [
        (2, 2, 0, false, 6, 8),
        (3, 2, 0, false, 7, 9),
        (3, 2, 0, true, 6, 8),
        (3, 2, 1, false, 8, 7),
        (3, 1, 1, true, 5, 5),
        (2, 2, 0, true, 7, 7),
        (3, 3, 1, true, 8, 10),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.max_pool2d(x, k, s, p, ceil);
        check(&b.build(y), &[2, 3, h, w], 20 + i as u64);
    }
}

/// PyTorch's max-pool by loops over the NCHW tensor: the first maximum of
/// each window wins and gets the window's whole gradient, on the CPU engine
/// and on the generic path.
#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum() {
    // Values 0, 1, 2 only: many ties.
    let v: Vec<f32> = (0..2 * 7 * 7).map(|i| ((i * 7) % 3) as f32).collect();
    let x = Var::from_tensor(&Tensor::from_vec(v.clone(), (1, 2, 7, 7), &DEV).unwrap()).unwrap();
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.max_pool2d(i, 3, 2, 1, true);
    let net = b.build(y);
    let (o, mut expect_y, mut expect_g) = (4usize, vec![], vec![0f32; v.len()]);
    for c in 0..2 {
        for oy in 0..o {
            for ox in 0..o {
                let mut best: Option<(f32, usize)> = None;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if iy < 0 || ix < 0 || iy >= 7 || ix >= 7 {
                            continue;
                        }
                        let at = (c * 7 + iy as usize) * 7 + ix as usize;
                        if best.is_none_or(|(b, _)| v[at] > b) {
                            best = Some((v[at], at));
                        }
                    }
                }
                let (b, at) = best.unwrap();
                expect_y.push(b);
                expect_g[at] += 1.0;
            }
        }
    }
    // The CPU engine and the generic path (a GPU's: the positions kept by
    // the forward, the gradient added there).
    for y in [
        net.forward(x.as_tensor()).unwrap(),
        net.forward_generic(x.as_tensor()).unwrap(),
    ] {
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = values(g.get(x.as_tensor()).unwrap());
        assert_eq!(values(&y), expect_y);
        assert_eq!(g, expect_g);
    }
}

#[test]
fn adaptive_pools_flatten_and_reshape_match_candle() {
    for (oh, ow, h, w) in [(6, 6, 1, 1), (2, 3, 5, 7), (1, 1, 4, 3), (3, 3, 3, 3)] {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.adaptive_avg_pool2d(x, oh, ow);
        let y = b.flatten(y);
        let y = b.reshape(y, &[3 * ow, oh, 1]);
        let y = b.flatten(y);
        let y = b.reshape(y, &[3, oh, ow]);
        check(&b.build(y), &[2, 3, h, w], 40);
    }
}

#[test]
fn linear_layers_match_candle_on_flat_values_and_per_pixel() {
    let (w1, b1) = (randn(&[7, 5], 1), randn(&[7], 2));
    let w2 = randn(&[3, 7 * 4 * 3], 3);
    let mut b = NetBuilder::new();
    let x = b.input();
    // Over the channels of each pixel, then flattened in (c, y, x) order.
    let y = b.linear(x, &w1, Some(&b1));
    let y = b.act(y, Activation::GeluErf);
    let y = b.flatten(y);
    let y = b.linear(y, &w2, None);
    check(&b.build(y), &[3, 5, 4, 3], 50);
}

/// A linear layer's bias, a LayerNorm's bias or an affine map's shift of
/// the wrong length is an error, not a panic in the engine's kernels nor
/// a result computed with part of it (their loops zip the parameters).
#[test]
fn parameters_of_the_wrong_length_are_an_error() {
    let (w, short) = (randn(&[7, 5], 1), randn(&[4], 2));
    let five = randn(&[5], 3);
    let x = randn(&[2, 5, 3, 3], 4);
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.linear(i, &w, Some(&short));
    let y = b.act(y, Activation::GeluErf);
    assert!(b.build(y).forward(&x).is_err(), "linear");
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.layer_norm(i, &five, &short, 1e-6);
    assert!(b.build(y).forward(&x).is_err(), "layer norm");
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.affine(i, &five, &short);
    assert!(b.build(y).forward(&x).is_err(), "affine");
}

/// A dense layer takes its input's gradient back through the activation
/// before it as it makes it, where it is that activation's only reader;
/// an activated value read twice (by two dense layers, by a dense layer
/// and an add) sums its gradients first.
#[test]
fn a_dense_layer_takes_its_gradient_through_the_activation_before_it() {
    let (w1, b1) = (randn(&[40, 5], 1), randn(&[40], 2));
    let (w2, w3) = (randn(&[6, 40], 3), randn(&[6, 40], 4));
    for act in [Activation::GeluErf, Activation::Relu, Activation::Tanh] {
        // Sole reader (ConvNeXt's MLP), 7200 rows: a product in pieces.
        let mut b = NetBuilder::new();
        let x = b.input();
        let h = b.linear(x, &w1, Some(&b1));
        let h = b.act(h, act);
        let y = b.linear(h, &w2, None);
        check(&b.build(y), &[8, 5, 30, 30], 80);
        // Two dense readers.
        let mut b = NetBuilder::new();
        let x = b.input();
        let h = b.linear(x, &w1, Some(&b1));
        let h = b.act(h, act);
        let (y2, y3) = (b.linear(h, &w2, None), b.linear(h, &w3, None));
        let y = b.add(y2, y3);
        check(&b.build(y), &[2, 5, 6, 6], 81);
        // A dense reader and a residual add.
        let mut b = NetBuilder::new();
        let x = b.input();
        let h = b.linear(x, &w1, Some(&b1));
        let h = b.act(h, act);
        let y = b.linear(h, &w2, None);
        let y = b.linear(y, &w2.t().unwrap().contiguous().unwrap(), None);
        let y = b.add(y, h);
        check(&b.build(y), &[2, 5, 6, 6], 82);
    }
}

/// A per-channel affine after a dense layer (ConvNeXt's layer scale)
/// folds into its weights; after a dense layer with an activation, or
/// one whose output has another reader, it stays a step of its own.
#[test]
fn an_affine_folds_into_the_dense_layer_before_it() {
    let (w1, b1) = (randn(&[7, 5], 1), randn(&[7], 2));
    let (s, t) = (randn(&[7], 3), randn(&[7], 4));
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = b.linear(x, &w1, Some(&b1));
    let folded = b.affine(y, &s, &t);
    let g = b.linear(x, &w1, None);
    let g = b.act(g, Activation::GeluErf);
    let after_act = b.affine(g, &s, &t);
    let read_twice = b.linear(x, &w1, Some(&b1));
    let z = b.affine(read_twice, &s, &t);
    let y = b.concat(&[folded, after_act, z, read_twice]);
    let net = b.build(y);
    check(&net, &[2, 5, 4, 3], 70);
    let x = randn(&[2, 5, 4, 3], 71);
    net.forward(&x).unwrap();
    let affines = net.compiled_kernels().filter(|k| k == &"Affine").count();
    assert_eq!(
        affines,
        2,
        "{:?}",
        net.compiled_kernels().collect::<Vec<_>>()
    );
}

/// A LayerNorm's affine map folds into the layer after it: a dense layer
/// (ConvNeXt's blocks, per pixel and on flat values) and a conv with no
/// padding, in groups (its downsamplings). Not into a padded conv (its
/// border taps read zeros, not the shift), nor where the normalised value
/// has another reader or an activation.
#[test]
fn a_layer_norms_affine_folds_into_the_layer_after_it() {
    let c = 6;
    let norm =
        |b: &mut NetBuilder, x, s| b.layer_norm(x, &randn(&[c], s), &randn(&[c], s + 1), 1e-5);
    let mut b = NetBuilder::new();
    let x = b.input();
    let n = norm(&mut b, x, 1);
    let dense = b.linear(n, &randn(&[5, c], 3), Some(&randn(&[5], 4)));
    let n = norm(&mut b, x, 5);
    let down = conv(&mut b, n, [c, 4, 2], [2, 0, 1, 2], 7);
    let n = norm(&mut b, x, 8);
    let padded = conv(&mut b, n, [c, 5, 3], [1, 1, 1, 1], 10);
    let n = norm(&mut b, x, 11);
    let read_twice = b.linear(n, &randn(&[3, c], 13), None);
    let n2 = norm(&mut b, x, 14);
    let n2 = b.act(n2, Activation::GeluErf);
    let after_act = b.linear(n2, &randn(&[3, c], 16), None);
    let parts: Vec<NodeId> = [dense, down, padded, read_twice, n, after_act]
        .into_iter()
        .map(|v| b.flatten(v))
        .collect();
    let y = b.concat(&parts);
    let net = b.build(y);
    check(&net, &[2, c, 6, 6], 90);
    let kernels: Vec<_> = net.compiled_kernels().collect();
    let count = |name| kernels.iter().filter(|k| **k == name).count();
    assert_eq!(count("LayerNorm (affine folded)"), 2, "{kernels:?}");
    assert_eq!(count("LayerNorm"), 3, "{kernels:?}");
    // On flat values.
    let mut b = NetBuilder::new();
    let x = b.input();
    let n = norm(&mut b, x, 20);
    let y = b.linear(n, &randn(&[4, c], 22), Some(&randn(&[4], 23)));
    let net = b.build(y);
    check(&net, &[3, c], 91);
    assert_eq!(
        net.compiled_kernels().collect::<Vec<_>>(),
        ["LayerNorm (affine folded)", "Dense"]
    );
}

/// An Add writes into an input's buffer only where this is that value's
/// last reader and nothing else holds it: a ReLU output kept for the
/// backward, or a value read again later, is left as it is.
#[test]
fn residual_adds_reuse_only_buffers_nothing_else_reads() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let a = conv(&mut b, x, [4, 4, 3], [1, 1, 1, 1], 1);
    let r = b.relu(a);
    let c = conv(&mut b, r, [4, 4, 1], [1, 0, 1, 1], 2);
    // r is kept by its ReLU's backward: the sum goes into c's buffer.
    let s = b.add(r, c);
    let d = conv(&mut b, s, [4, 4, 3], [1, 1, 1, 1], 3);
    // s is read again below: the sum goes into d's buffer.
    let t = b.add(s, d);
    let t = b.relu(t);
    let y = b.concat(&[t, s]);
    // The input, at its last reader.
    let e = conv(&mut b, x, [4, 8, 1], [1, 0, 1, 1], 4);
    let y = b.add(e, y);
    check(&b.build(y), &[2, 4, 5, 5], 80);
}

#[test]
fn residuals_concat_and_layer_norm_match_candle() {
    let (lw, lb) = (randn(&[6], 1), randn(&[6], 2));
    let mut b = NetBuilder::new();
    let x = b.input();
    let a = conv(&mut b, x, [4, 2, 3], [1, 1, 1, 1], 3);
    let c = conv(&mut b, x, [4, 4, 1], [1, 0, 1, 1], 4);
    let y = b.concat(&[a, c]);
    let y = b.layer_norm(y, &lw, &lb, 1e-6);
    let z = conv(&mut b, x, [4, 6, 1], [1, 0, 1, 1], 5);
    let y = b.add(y, z);
    let y = b.relu(y);
    // The input read again at the end: its gradient sums two paths.
    let y = b.add(y, y);
    check(&b.build(y), &[2, 4, 5, 5], 60);
}

/// Engine passes run on rayon's threads, several at once where several
/// threads call them (tests, tournaments): a worker waiting inside one
/// conv may run another pass's conv, which then takes fresh scratch
/// buffers rather than the ones in use (it panicked on a borrowed
/// buffer). Every pass gives the figures of a pass alone, bit for bit.
#[test]
fn engine_passes_on_several_threads_at_once_agree() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [8, 64, 3], [1, 1, 1, 1], 1);
    let y = b.relu(y);
    let y = conv(&mut b, y, [64, 16, 3], [1, 1, 1, 1], 2);
    let y = conv(&mut b, y, [16, 8, 3], [2, 1, 1, 1], 3);
    let y = b.flatten(y);
    let w = randn(&[5, 8 * 5 * 5], 4);
    let y = b.linear(y, &w, None);
    let net = b.build(y);
    let run = |seed: u64| {
        let x = Var::from_tensor(&randn(&[3, 8, 10, 10], seed)).unwrap();
        let y = net.forward(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        (values(&y), values(g.get(x.as_tensor()).unwrap()))
    };
    let want: Vec<_> = (0..4).map(run).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                let run = &run;
                s.spawn(move || (0..30).map(|_| run(t % 4)).collect::<Vec<_>>())
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            for got in h.join().expect("no panic") {
                assert_eq!(got, want[t % 4], "thread {t}");
            }
        }
    });
}

/// Issue 17: ReLU turned a NaN into 0, so a NaN image came out of the
/// CNNs as a confident class.
#[test]
fn a_nan_propagates_through_relu_and_pooling() {
    for nan in [f32::NAN, -f32::NAN] {
        // A NaN in each position of one 2×2 window, the other clean.
        for at in 0..8 {
            let mut v = vec![1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
            v[at] = nan;
            let x = Tensor::from_vec(v, (1, 1, 2, 4), &DEV).unwrap();
            let mut b = NetBuilder::new();
            let i = b.input();
            let y = b.max_pool2d(i, 2, 2, 0, false);
            let y = values(&b.build(y).forward(&x).unwrap());
            let window = [0, 0, 1, 1, 0, 0, 1, 1][at];
            assert!(y[window].is_nan(), "{nan:?} at {at}: {y:?}");
            assert_eq!(y[1 - window], if window == 0 { 4.0 } else { 2.0 });
        }
        let mut b = NetBuilder::new();
        let i = b.input();
        let one = Tensor::ones((1, 1), DType::F32, &DEV).unwrap();
        let y = b.linear(i, &one, None);
        let y = b.relu(y);
        let x = Tensor::new(&[[nan], [-1.0], [2.0]], &DEV).unwrap();
        let y = b.build(y).forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!(y[0][0].is_nan(), "{y:?}");
        assert_eq!((y[1][0], y[2][0]), (0.0, 2.0));
    }
}

#[test]
fn variable_weights_run_candles_ops() {
    let w = Var::from_tensor(&randn(&[2, 3], 1)).unwrap();
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.linear(i, w.as_tensor(), None);
    let net = b.build(y);
    let x = randn(&[4, 3], 2);
    assert!(!net.uses_cpu_engine(&x));
    // The weight gets its gradient (training).
    let g = net
        .forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(w.as_tensor()).is_some());
}

#[test]
fn the_engine_counts_what_it_keeps() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [1, 2, 3], [1, 1, 1, 1], 1);
    let y = b.relu(y);
    let y = b.max_pool2d(y, 2, 2, 0, false);
    let net = b.build(y);
    super::take_kept_bytes();
    net.forward(&randn(&[2, 1, 4, 4], 3)).unwrap();
    // The ReLU's output (2·2·4·4 floats) and the pool's argmax (2·2·2·2).
    assert_eq!(super::take_kept_bytes(), 4 * (64 + 16));
}

/// candle 0.11's `relu` passes the gradient at exactly 0 (its backward
/// masks with x ≥ 0), PyTorch's does not; a bias-free conv over an
/// all-zero region gives exact zeros (ResNet's did). Both paths follow
/// PyTorch, and all three paths keep a NaN.
#[test]
fn relu_sends_no_gradient_at_zero_and_keeps_nan_on_every_path() {
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.relu(i);
    let y = b.adaptive_avg_pool2d(y, 1, 1);
    let net = b.build(y);
    let x = Var::from_tensor(&Tensor::new(&[[[[0f32, 1.0], [-1.0, f32::NAN]]]], &DEV).unwrap())
        .unwrap();
    for y in [
        net.forward(x.as_tensor()).unwrap(),
        net.forward_candle(x.as_tensor()).unwrap(),
        net.forward_generic(x.as_tensor()).unwrap(),
    ] {
        assert!(values(&y)[0].is_nan());
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = values(g.get(x.as_tensor()).unwrap());
        assert_eq!(&g[..3], &[0.0, 0.25, 0.0]);
    }
}

/// An empty batch gives empty logits and an empty input gradient; the
/// CPU engine's matrix views had panicked on a 0-row batch ("gemm view:
/// out of bounds").
#[test]
fn an_empty_batch_gives_empty_outputs() {
    use crate::zoo::{MnistCnn, MnistCnnConfig, MnistMlp, MnistMlpConfig};
    use crate::Classifier;
    let cnn = MnistCnn::random(&MnistCnnConfig::cnn_a(), 1, &DEV).unwrap();
    let mlp = MnistMlp::random(&MnistMlpConfig::default(), 2, &DEV).unwrap();
    let models: [&dyn Classifier; 2] = [&cnn, &mlp];
    for (i, m) in models.iter().enumerate() {
        let x =
            Var::from_tensor(&Tensor::zeros((0, 1, 28, 28), DType::F32, &DEV).unwrap()).unwrap();
        let y = m.logits(x.as_tensor()).unwrap();
        assert_eq!(y.dims(), [0, 10], "model {i}");
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("an input gradient");
        assert_eq!(g.dims(), [0, 1, 28, 28], "model {i}");
    }
}

/// The network `f` builds on the input, its output the value `f` returns.
fn net_of(f: &dyn Fn(&mut NetBuilder, NodeId) -> NodeId) -> Net {
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = f(&mut b, i);
    b.build(y)
}

/// Each `(what, net, expected)`: running `net` on `x` is an error whose
/// message holds `expected` on every path, never a panic or a result.
fn errors_on_every_path(x: &Tensor, cases: Vec<(&str, Net, &str)>) {
    for (what, net, expected) in cases {
        let run = |f: &dyn Fn() -> candle_core::Result<Tensor>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f().map(|_| ())))
        };
        for (path, y) in [
            ("auto", run(&|| net.forward(x))),
            ("generic", run(&|| net.forward_generic(x))),
            ("candle", run(&|| net.forward_candle(x))),
        ] {
            let message = match y {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => panic!("{what} on {path}: no error"),
                Err(_) => panic!("{what} on {path}: panicked"),
            };
            assert!(message.contains(expected), "{what} on {path}: {message}");
        }
    }
}

/// Inputs that do not fit an op's weights or each other are the same
/// error on every path, naming the op: on the generic path and candle's
/// they were candle's ("shape mismatch in matmul, lhs: [2, 192], rhs:
/// [99, 10]", "shape mismatch in broadcast_mul", "shape mismatch in cat
/// for dim 2", "Shape mismatch, got buffer of size 384 …"), naming none,
/// and a GPU runs the generic path (found by the audit).
#[test]
fn inputs_that_do_not_fit_an_op_are_the_same_error_on_every_path() {
    let x = randn(&[2, 3, 8, 8], 1);
    let v3 = randn(&[3], 2);
    let v4 = randn(&[4], 3);
    let conv = |b: &mut NetBuilder, x| conv(b, x, [3, 3, 3], [1, 0, 1, 1], 4);
    let mut cases = Vec::new();
    let mut b = NetBuilder::new();
    let f = b.flatten(b.input());
    let y = b.linear(f, &randn(&[10, 99], 5), None);
    cases.push((
        "linear",
        b.build(y),
        "linear: 192 input features, expected 99",
    ));
    let mut b = NetBuilder::new();
    let y = b.linear(b.input(), &randn(&[5, 4], 6), None);
    cases.push((
        "linear per pixel",
        b.build(y),
        "linear: 3 input features, expected 4",
    ));
    let mut b = NetBuilder::new();
    let y = b.affine(b.input(), &v4, &v4);
    cases.push(("affine", b.build(y), "affine: 3 channels, expected 4"));
    let mut b = NetBuilder::new();
    let y = b.layer_norm(b.input(), &v4, &v4, 1e-5);
    cases.push((
        "layer_norm",
        b.build(y),
        "layer_norm: 3 channels, expected 4",
    ));
    let mut b = NetBuilder::new();
    let f = b.flatten(b.input());
    let y = b.layer_norm(f, &v3, &v3, 1e-5);
    cases.push((
        "flat layer_norm",
        b.build(y),
        "layer_norm: 192 channels, expected 3",
    ));
    let mut b = NetBuilder::new();
    let y = b.reshape(b.input(), &[4, 7, 5]);
    cases.push((
        "reshape",
        b.build(y),
        "reshape: 192 values per sample are not [4, 7, 5]",
    ));
    let mut b = NetBuilder::new();
    let x0 = b.input();
    let c = conv(&mut b, x0);
    let y = b.add(x0, c);
    cases.push((
        "add",
        b.build(y),
        "add: shapes [2, 3, 8, 8] and [2, 3, 6, 6], expected the same",
    ));
    let mut b = NetBuilder::new();
    let x0 = b.input();
    let c = conv(&mut b, x0);
    let y = b.concat(&[x0, c]);
    cases.push((
        "concat",
        b.build(y),
        "concat: shapes [[2, 3, 8, 8], [2, 3, 6, 6]], expected one batch and one height and width",
    ));
    errors_on_every_path(&x, cases);
}

/// A net whose settings do not fit its input is an error on every path,
/// never a panic: a max-pool padded by more than half its window (the CPU
/// kernels panicked, "range end index 3 out of range for slice of length
/// 0", and candle's ops gave windows of padding only, which PyTorch
/// refuses), a max-pool of stride 0 (it was called "smaller than the
/// window"), and a conv whose kernel spans more than the padded input
/// (candle's conv2d panicked on the generic path and candle's:
/// "index out of bounds"); a max-pool window of 0 and an adaptive pool to
/// 0 rows (the CPU kernels panicked, "range end index 3 out of range for
/// slice of length 0" and "chunk_size must not be zero", candle's ops
/// said "stack/cat expects at least one tensor"; found by the audit).
#[test]
fn settings_that_do_not_fit_the_input_are_errors_on_every_path() {
    let x = randn(&[2, 3, 8, 8], 1);
    let pool = |k, s, p| {
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.max_pool2d(i, k, s, p, false);
        b.build(y)
    };
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = conv(&mut b, i, [3, 4, 11], [1, 0, 1, 1], 7);
    let wide_conv = b.build(y);
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = conv(&mut b, i, [3, 4, 3], [0, 1, 1, 1], 8);
    let still_conv = b.build(y);
    let mut b = NetBuilder::new();
    let i = b.input();
    let y = b.adaptive_avg_pool2d(i, 0, 2);
    let empty_pool = b.build(y);
    let cases = vec![
        (
            "window",
            pool(0, 1, 0),
            "max_pool2d: window 0, expected 1 or more",
        ),
        (
            "adaptive",
            empty_pool,
            "adaptive_avg_pool2d: output 0 × 2, expected 1 or more rows and columns",
        ),
        (
            "padding",
            pool(2, 2, 2),
            "max_pool2d: padding 2 is more than half the window 2",
        ),
        (
            "stride",
            pool(2, 0, 0),
            "max_pool2d: stride 0, expected 1 or more",
        ),
        (
            "conv",
            wide_conv,
            "conv: input 8 (+2·0 padding) is smaller than the kernel's span 11",
        ),
        (
            "conv stride",
            still_conv,
            "conv: stride 0, expected 1 or more",
        ),
    ];
    errors_on_every_path(&x, cases);
}

/// Output and input gradient of Σ y·r on each path (`auto`: the CPU
/// kernels, `generic`, `candle`), for `r` drawn from `seed`.
fn on_every_path(net: &Net, x: &Tensor, seed: u64) -> Vec<(&'static str, Vec<f32>, Vec<f32>)> {
    let x = Var::from_tensor(x).unwrap();
    assert!(net.uses_cpu_engine(x.as_tensor()), "the engine must apply");
    type Run<'a> = &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>;
    let runs: [(&str, Run); 3] = [
        ("auto", &|x| net.forward(x)),
        ("generic", &|x| net.forward_generic(x)),
        ("candle", &|x| net.forward_candle(x)),
    ];
    runs.iter()
        .map(|(path, f)| {
            let y = f(x.as_tensor()).unwrap_or_else(|e| panic!("{path}: {e}"));
            let r = randn(y.dims(), seed);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = values(g.get(x.as_tensor()).expect("an input gradient"));
            (*path, values(&y), gx)
        })
        .collect()
}

/// Each path's output and input gradient against `naive`'s (f64 loops
/// from the same f32 values: the output, and the input gradient of
/// Σ y·r given r), within 1e-5 of the largest value.
fn check_naive(
    what: &str,
    net: &Net,
    x: &Tensor,
    naive: impl Fn(&[f64], &[f64]) -> (Vec<f64>, Vec<f64>),
) {
    let xs: Vec<f64> = values(x).iter().map(|&v| f64::from(v)).collect();
    for (path, y, gx) in on_every_path(net, x, 99) {
        let r: Vec<f64> = values(&randn(&[y.len()], 99))
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let (ny, ngx) = naive(&xs, &r);
        for (name, got, want) in [("output", &y, &ny), ("input gradient", &gx, &ngx)] {
            assert_eq!(got.len(), want.len(), "{what} on {path}: {name} length");
            let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(want)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0f64, crate::test_support::nan_max);
            assert!(
                err / scale < 1e-5, // false for NaN
                "{what} on {path}: {name} relative error {}",
                err / scale
            );
        }
    }
}

/// Every (input, output) pair a linear map links, with its weight, each
/// handed to the closure it is given.
type Links<'a> = dyn Fn(&mut dyn FnMut(usize, usize, f64)) + 'a;

/// [`check_naive`] for a conv given by its `links` and its bias `bv` per
/// output channel: `[n, bv.len(), plane]` outputs.
fn check_links(
    what: &str,
    net: &Net,
    x: &Tensor,
    bv: &[f64],
    [n, plane]: [usize; 2],
    links: &Links,
) {
    check_naive(what, net, x, |x, r| {
        let mut y = vec![0f64; n * bv.len() * plane];
        for (k, v) in y.iter_mut().enumerate() {
            *v = bv[(k / plane) % bv.len()];
        }
        let mut gx = vec![0f64; x.len()];
        links(&mut |xi, yi, wt| {
            y[yi] += x[xi] * wt;
            gx[xi] += r[yi] * wt;
        });
        (y, gx)
    });
}

/// Convs against the definition, on every path: output (oy, ox) of
/// channel o sums x·W[o, i, ky, kx] over its group's inputs i at
/// (oy·s − p + d·ky, ox·s − p + d·kx), inside the image. Strided, with
/// inputs and kernels whose height and width leave different numbers of
/// rows and columns unread below the last window (candle's backward of
/// conv2d gave the gradient of such a conv one output padding for both
/// dims and candle's autograd failed, "shape mismatch in add", on the
/// candle path: a 5 × 2 kernel at stride 2 on 10 × 4, a 3 × 3 one at
/// stride 2 on 10 × 9), with padding, dilation and groups; and with each
/// setting differing across from down (PyTorch's `Conv2d(stride=(sh, sw),
/// padding=(ph, pw), dilation=(dh, dw))`): Inception-v3's 1×7 and 7×1
/// convs with padding (0, 3) and (3, 0), strides (2, 1) and (3, 2),
/// dilation (2, 1), grouped and depthwise ones (on the CPU kernels' paths
/// for depthwise convs: padded, per tap, strided, register blocks), a
/// 3×3 conv with 64 channels in that Winograd would take were its padding
/// one for both axes, 1×1 convs strided or padded along one axis.
#[test]
fn convs_match_their_definition_on_every_path() {
    let square = |s, p, d, g| Conv2dSettings::square(s, p, d, g);
    let axes = |stride, padding, dilation, groups| Conv2dSettings {
        stride,
        padding,
        dilation,
        groups,
    };
    // (cin, cout, kh, kw), settings, (b, h, w)
    let cases = [
        ([6, 5, 5, 2], square(2, 1, 1, 1), (2, 10, 4)),
        ([4, 6, 3, 3], square(2, 1, 1, 1), (2, 10, 9)),
        ([4, 6, 3, 3], square(2, 1, 1, 2), (1, 9, 10)),
        ([6, 6, 3, 3], square(3, 2, 2, 6), (2, 11, 13)),
        ([3, 4, 1, 7], square(2, 0, 1, 1), (1, 6, 9)),
        ([4, 4, 3, 3], square(1, 1, 1, 1), (2, 5, 6)),
        // Per axis.
        ([3, 4, 1, 7], axes([1, 1], [0, 3], [1, 1], 1), (2, 7, 9)),
        ([3, 4, 7, 1], axes([1, 1], [3, 0], [1, 1], 1), (2, 9, 7)),
        ([4, 5, 3, 3], axes([2, 1], [1, 1], [1, 1], 1), (2, 9, 8)),
        ([4, 5, 3, 3], axes([1, 2], [1, 0], [2, 1], 1), (1, 9, 10)),
        ([4, 4, 3, 3], axes([1, 1], [2, 1], [2, 1], 1), (2, 8, 7)),
        ([2, 3, 2, 3], axes([3, 2], [2, 0], [1, 2], 1), (1, 10, 15)),
        ([3, 4, 3, 3], axes([2, 4], [1, 2], [2, 2], 1), (1, 11, 17)),
        ([3, 6, 4, 2], axes([3, 3], [2, 1], [2, 2], 3), (2, 12, 12)),
        ([4, 6, 3, 1], axes([1, 2], [1, 0], [1, 1], 2), (2, 7, 8)),
        ([4, 6, 1, 1], axes([1, 2], [0, 0], [1, 1], 1), (1, 5, 7)),
        ([4, 6, 1, 1], axes([1, 1], [0, 1], [1, 1], 1), (1, 4, 5)),
        ([64, 16, 3, 3], axes([1, 1], [1, 0], [1, 1], 1), (1, 6, 7)),
        ([6, 6, 3, 5], axes([2, 1], [1, 2], [1, 2], 6), (2, 9, 11)),
        ([6, 6, 1, 7], axes([1, 1], [0, 3], [1, 1], 6), (1, 5, 9)),
        ([6, 6, 1, 3], axes([1, 1], [1, 1], [1, 1], 6), (1, 5, 6)),
        ([16, 16, 7, 1], axes([1, 1], [3, 0], [1, 1], 16), (1, 9, 6)),
        ([32, 32, 1, 7], axes([1, 1], [0, 3], [1, 2], 32), (1, 6, 17)),
        ([32, 32, 3, 3], axes([1, 2], [1, 1], [1, 1], 32), (1, 6, 9)),
    ];
    for (i, ([cin, cout, kh, kw], settings, (bn, h, w))) in cases.into_iter().enumerate() {
        let seed = 70 + i as u64;
        let Conv2dSettings {
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
            groups: g,
        } = settings;
        let weight = randn(&[cout, cin / g, kh, kw], seed);
        let bias = randn(&[cout], seed + 1);
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = if settings.uniform().is_some() {
            let cfg = candle_nn::Conv2dConfig {
                padding: ph,
                stride: sh,
                dilation: dh,
                groups: g,
                ..Default::default()
            };
            let conv = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), cfg);
            b.conv2d(x, &conv)
        } else {
            b.conv2d_with(x, &weight, Some(&bias), settings)
        };
        let net = b.build(y);
        let (ho, wo) = (
            (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1,
            (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1,
        );
        let wv: Vec<f64> = values(&weight).iter().map(|&v| f64::from(v)).collect();
        let bv: Vec<f64> = values(&bias).iter().map(|&v| f64::from(v)).collect();
        let (cig, cog) = (cin / g, cout / g);
        // Every (input, output) pair that a tap links, with its weight.
        let links = |f: &mut dyn FnMut(usize, usize, f64)| {
            for n in 0..bn {
                for co in 0..cout {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            for cl in 0..cig {
                                let ci = co / cog * cig + cl;
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let iy = (oy * sh + dh * ky) as isize - ph as isize;
                                        let ix = (ox * sw + dw * kx) as isize - pw as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        let xi =
                                            ((n * cin + ci) * h + iy as usize) * w + ix as usize;
                                        let yi = ((n * cout + co) * ho + oy) * wo + ox;
                                        f(xi, yi, wv[((co * cig + cl) * kh + ky) * kw + kx]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        let xin = randn(&[bn, cin, h, w], seed + 2);
        check_links(&format!("case {i}"), &net, &xin, &bv, [bn, ho * wo], &links);
    }
}

/// Transposed convs (one group) against the definition, on every path:
/// input (iy, ix) adds x·W[i, o, ky, kx] at output (iy·s − p + d·ky,
/// ix·s − p + d·kx), whatever lands inside; strides 1 to 3, padding,
/// output padding, dilation, non-square kernels and inputs, 1-pixel
/// inputs, and a shape the CPU kernels run as a Winograd conv; and with
/// each setting differing across from down (PyTorch's
/// `ConvTranspose2d(stride=(sh, sw), padding=(ph, pw), output_padding=(oh,
/// ow), dilation=(dh, dw))`: strides (2, 1) and (1, 3), padding past the
/// kernel's reach on one axis, dilation (2, 1), a 1×4 kernel of stride
/// (1, 2)), which candle's path runs as a conv of the spread input.
#[test]
fn transposed_convs_match_their_definition_on_every_path() {
    let sq = |[s, p, op, d]: [usize; 4]| ConvTranspose2dSettings {
        stride: [s; 2],
        padding: [p; 2],
        output_padding: [op; 2],
        dilation: [d; 2],
    };
    let axes = |stride, padding, output_padding, dilation| ConvTranspose2dSettings {
        stride,
        padding,
        output_padding,
        dilation,
    };
    // (cin, cout, kh, kw), settings, (b, h, w)
    let cases = [
        ([3, 5, 3, 3], sq([1, 1, 0, 1]), (2, 6, 5)),
        ([4, 3, 4, 4], sq([2, 1, 0, 1]), (2, 4, 4)),
        ([2, 3, 3, 3], sq([2, 1, 1, 1]), (1, 5, 3)),
        ([3, 2, 5, 3], sq([3, 2, 2, 1]), (2, 4, 6)),
        ([2, 2, 3, 3], sq([2, 0, 1, 2]), (2, 5, 4)),
        ([3, 4, 3, 2], sq([1, 2, 0, 2]), (1, 5, 5)),
        ([5, 3, 4, 4], sq([1, 0, 0, 1]), (3, 1, 1)),
        ([4, 6, 4, 4], sq([2, 1, 0, 1]), (1, 1, 1)),
        ([16, 64, 3, 3], sq([1, 1, 0, 1]), (2, 5, 7)),
        ([6, 4, 1, 1], sq([2, 0, 1, 1]), (2, 3, 4)),
        (
            [3, 4, 3, 3],
            axes([2, 1], [1, 0], [1, 0], [1, 1]),
            (2, 4, 5),
        ),
        (
            [2, 3, 4, 2],
            axes([1, 3], [1, 1], [0, 2], [1, 1]),
            (1, 5, 3),
        ),
        (
            [3, 2, 3, 3],
            axes([2, 2], [3, 1], [1, 0], [1, 1]),
            (2, 5, 4),
        ),
        (
            [2, 4, 3, 3],
            axes([2, 1], [1, 2], [0, 0], [2, 1]),
            (1, 4, 5),
        ),
        (
            [4, 3, 1, 4],
            axes([1, 2], [0, 1], [0, 1], [1, 1]),
            (2, 3, 4),
        ),
        (
            [16, 64, 3, 3],
            axes([1, 1], [1, 0], [0, 0], [1, 1]),
            (1, 4, 5),
        ),
    ];
    for (i, ([cin, cout, kh, kw], settings, (bn, h, w))) in cases.into_iter().enumerate() {
        let seed = 40 + i as u64;
        let weight = randn(&[cin, cout, kh, kw], seed);
        let bias = randn(&[cout], seed + 1);
        let net = net_of(&|b, x| match settings.uniform() {
            Some((s, p, op, d)) => {
                let cfg = candle_nn::ConvTranspose2dConfig {
                    padding: p,
                    output_padding: op,
                    stride: s,
                    dilation: d,
                };
                let conv = candle_nn::ConvTranspose2d::new(weight.clone(), Some(bias.clone()), cfg);
                b.conv_transpose2d(x, &conv)
            }
            None => b.conv_transpose2d_with(x, &weight, Some(&bias), settings),
        });
        let ConvTranspose2dSettings {
            stride: [sh, sw],
            padding: [ph, pw],
            output_padding: [oph, opw],
            dilation: [dh, dw],
        } = settings;
        let (ho, wo) = (
            (h - 1) * sh + dh * (kh - 1) + oph + 1 - 2 * ph,
            (w - 1) * sw + dw * (kw - 1) + opw + 1 - 2 * pw,
        );
        let wv: Vec<f64> = values(&weight).iter().map(|&v| f64::from(v)).collect();
        let bv: Vec<f64> = values(&bias).iter().map(|&v| f64::from(v)).collect();
        // Every (input, output) pair that a tap links, with its weight.
        let links = |f: &mut dyn FnMut(usize, usize, f64)| {
            for n in 0..bn {
                for ci in 0..cin {
                    for iy in 0..h {
                        for ix in 0..w {
                            for co in 0..cout {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let oy = (iy * sh + dh * ky) as isize - ph as isize;
                                        let ox = (ix * sw + dw * kx) as isize - pw as isize;
                                        if oy < 0
                                            || ox < 0
                                            || oy >= ho as isize
                                            || ox >= wo as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((n * cin + ci) * h + iy) * w + ix;
                                        let yi =
                                            ((n * cout + co) * ho + oy as usize) * wo + ox as usize;
                                        f(xi, yi, wv[((ci * cout + co) * kh + ky) * kw + kx]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        let xin = randn(&[bn, cin, h, w], seed + 2);
        check_links(&format!("case {i}"), &net, &xin, &bv, [bn, ho * wo], &links);
    }
}

/// A batch norm after a transposed conv folds into it (its weight scaled
/// per output channel, its bias moved) and the activation after them runs
/// in its bias pass, as a generator's blocks (DCGAN's, with and without a
/// bias): every activation, a stride-2 layer, a 1-pixel input (DCGAN's
/// first layer), one the CPU kernels run as a Winograd conv, against
/// candle's ops. Not where the transposed conv's output has another
/// reader, nor after its activation.
#[test]
fn a_batch_norm_and_activation_fold_into_the_transposed_conv_before_them() {
    // (cin, cout, k), (stride, padding), input (h, w), bias
    let layers = [
        ([4, 6, 4], [2, 1], (3, 4), true),
        ([5, 7, 4], [1, 0], (1, 1), false),
        ([16, 64, 3], [1, 1], (4, 5), true),
    ];
    let acts = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::GeluErf,
        Activation::LeakyRelu(0.2),
    ];
    for (i, ([cin, cout, k], [s, p], (h, w), bias)) in layers.into_iter().enumerate() {
        for (j, a) in acts.into_iter().enumerate() {
            let seed = 200 + 10 * i as u64 + j as u64;
            let cfg = candle_nn::ConvTranspose2dConfig {
                padding: p,
                stride: s,
                ..Default::default()
            };
            // Of the scale of an initialised layer: pre-activations of
            // order 1, where tanh and sigmoid are not flat (Winograd's
            // rounding, relative to pre-activations of order 30, was 3e-5
            // of tanh's largest output).
            let weight = (randn(&[cin, cout, k, k], seed) / ((cin * k * k) as f64).sqrt()).unwrap();
            let layer = candle_nn::ConvTranspose2d::new(
                weight,
                bias.then(|| randn(&[cout], seed + 1)),
                cfg,
            );
            let (scale, shift) = (randn(&[cout], seed + 2), randn(&[cout], seed + 3));
            let mut b = NetBuilder::new();
            let x = b.input();
            let y = b.conv_transpose2d(x, &layer);
            let y = b.affine(y, &scale, &shift);
            let y = b.act(y, a);
            let net = b.build(y);
            check(&net, &[2, cin, h, w], seed + 4);
            assert_eq!(
                net.compiled_kernels().collect::<Vec<_>>(),
                ["ConvTranspose"],
                "{a:?}, layer {i}"
            );
        }
    }
    // Read twice: the affine stays; after the activation: it stays.
    let layer = candle_nn::ConvTranspose2d::new(
        randn(&[3, 4, 4, 4], 1),
        None,
        candle_nn::ConvTranspose2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        },
    );
    let (scale, shift) = (randn(&[4], 2), randn(&[4], 3));
    let mut b = NetBuilder::new();
    let x = b.input();
    let t = b.conv_transpose2d(x, &layer);
    let y = b.affine(t, &scale, &shift);
    let y = b.concat(&[y, t]);
    let t2 = b.conv_transpose2d(x, &layer);
    let t2 = b.relu(t2);
    let z = b.affine(t2, &scale, &shift);
    let y = b.concat(&[y, z]);
    let net = b.build(y);
    check(&net, &[2, 3, 3, 3], 4);
    let affines = net.compiled_kernels().filter(|k| k == &"Affine").count();
    assert_eq!(
        affines,
        2,
        "{:?}",
        net.compiled_kernels().collect::<Vec<_>>()
    );
}

/// Average pools (zero padding counted in each window's k², PyTorch's
/// default) against the definition on every path: k ≠ s, padding, sizes
/// the stride does not divide (the rows past the last window get no
/// gradient), 1-pixel outputs.
#[test]
fn average_pools_match_their_definition_on_every_path() {
    // (k, s, p), (h, w)
    let cases = [
        ([2, 2, 0], (6, 4)),
        ([2, 2, 0], (5, 7)),
        ([3, 2, 1], (7, 6)),
        ([3, 1, 1], (4, 5)),
        ([3, 3, 0], (8, 10)),
        ([4, 3, 2], (9, 5)),
        ([5, 2, 0], (5, 6)),
        ([1, 2, 0], (5, 4)),
    ];
    for (i, ([k, s, p], (h, w))) in cases.into_iter().enumerate() {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.avg_pool2d(x, k, s, p);
        let net = b.build(y);
        let (bn, c) = (2, 3);
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let xin = randn(&[bn, c, h, w], 60 + i as u64);
        check_naive(&format!("case {i}"), &net, &xin, |x, r| {
            let mut y = vec![0f64; bn * c * ho * wo];
            let mut gx = vec![0f64; x.len()];
            let inv = 1.0 / (k * k) as f64;
            for plane in 0..bn * c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let yi = (plane * ho + oy) * wo + ox;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xi = (plane * h + iy as usize) * w + ix as usize;
                                y[yi] += x[xi] * inv;
                                gx[xi] += r[yi] * inv;
                            }
                        }
                    }
                }
            }
            (y, gx)
        });
    }
}

/// Nearest-neighbour upsampling by 1, 2 and 3 against the definition on
/// every path, then a conv (a generator's upsampling block).
#[test]
fn upsampling_matches_its_definition_on_every_path() {
    for (i, (scale, (h, w))) in [(2, (3, 4)), (3, (2, 5)), (1, (4, 4)), (2, (1, 1))]
        .into_iter()
        .enumerate()
    {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.upsample_nearest2d(x, scale);
        let net = b.build(y);
        let (bn, c) = (2, 3);
        let (ho, wo) = (h * scale, w * scale);
        let xin = randn(&[bn, c, h, w], 70 + i as u64);
        check_naive(&format!("scale {scale}"), &net, &xin, |x, r| {
            let mut y = vec![0f64; bn * c * ho * wo];
            let mut gx = vec![0f64; x.len()];
            for plane in 0..bn * c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let yi = (plane * ho + oy) * wo + ox;
                        let xi = (plane * h + oy / scale) * w + ox / scale;
                        y[yi] = x[xi];
                        gx[xi] += r[yi];
                    }
                }
            }
            (y, gx)
        });
        // Then a conv, as a generator's upsampling block.
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.upsample_nearest2d(x, scale);
        let y = conv(&mut b, y, [3, 4, 3], [1, 1, 1, 1], 80 + i as u64);
        check(&b.build(y), &[2, 3, h, w], 90 + i as u64);
    }
}

/// LeakyReLU against its definition on every path, alone and fused into
/// a conv and a transposed conv: x where x > 0, else slope·x; the
/// gradient 1 where x > 0, else the slope (0 at 0, as PyTorch's); a NaN
/// stays NaN.
#[test]
fn leaky_relu_matches_its_definition_on_every_path() {
    for slope in [0.2f32, 0.01, 0.0, 1.5] {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.act(x, Activation::LeakyRelu(slope));
        let net = b.build(y);
        let mut xin = values(&randn(&[2, 3, 4, 5], 5));
        xin[3] = 0.0;
        let xin = Tensor::from_vec(xin, (2, 3, 4, 5), &DEV).unwrap();
        let a = f64::from(slope);
        check_naive(&format!("slope {slope}"), &net, &xin, |x, r| {
            let y = x.iter().map(|&v| if v > 0.0 { v } else { a * v }).collect();
            let gx = x
                .iter()
                .zip(r)
                .map(|(&v, r)| if v > 0.0 { *r } else { a * r })
                .collect();
            (y, gx)
        });
        // Fused into the layer before it.
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, [3, 4, 3], [1, 1, 1, 1], 11);
        let y = b.act(y, Activation::LeakyRelu(slope));
        let cfg = candle_nn::ConvTranspose2dConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let t = candle_nn::ConvTranspose2d::new(randn(&[4, 2, 4, 4], 12), None, cfg);
        let y = b.conv_transpose2d(y, &t);
        let y = b.act(y, Activation::LeakyRelu(slope));
        check(&b.build(y), &[2, 3, 5, 4], 13);
    }
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = b.act(x, Activation::LeakyRelu(0.2));
    let net = b.build(y);
    let x = Var::from_tensor(&Tensor::new(&[[f32::NAN, -1.0]], &DEV).unwrap()).unwrap();
    for y in [
        net.forward(x.as_tensor()).unwrap(),
        net.forward_generic(x.as_tensor()).unwrap(),
        net.forward_candle(x.as_tensor()).unwrap(),
    ] {
        let v = values(&y);
        assert!(v[0].is_nan() && v[1] == -0.2, "{v:?}");
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = values(g.get(x.as_tensor()).unwrap());
        assert_eq!(g[1], 0.2);
    }
}

/// The new ops' settings that PyTorch refuses are errors on every path,
/// never a panic or a result: a transposed conv whose output padding is
/// not less than its stride, or whose input has other channels than its
/// weight's Cin; an average pool padded by more than half its window;
/// upsampling by 0; a LeakyReLU slope below 0 or NaN.
#[test]
fn generator_op_settings_pytorch_refuses_are_errors_on_every_path() {
    let x = randn(&[2, 3, 6, 6], 1);
    let transposed = |cin: usize, stride: usize, output_padding: usize| {
        net_of(&move |b: &mut NetBuilder, i: NodeId| {
            let cfg = candle_nn::ConvTranspose2dConfig {
                stride,
                output_padding,
                dilation: 1 + (output_padding == 1) as usize,
                ..Default::default()
            };
            let t = candle_nn::ConvTranspose2d::new(randn(&[cin, 2, 3, 3], 2), None, cfg);
            b.conv_transpose2d(i, &t)
        })
    };
    let cases = vec![
        (
            "output padding",
            transposed(3, 2, 2),
            "conv_transpose2d: output padding 2, expected less than the stride 2",
        ),
        (
            "output padding PyTorch takes, below the dilation",
            transposed(3, 1, 1),
            "conv_transpose2d: output padding 1, expected less than the stride 1 (PyTorch also \
             takes one less than the dilation 2, gevaldi not: its transposed conv is the input \
             gradient of a conv of stride 1)",
        ),
        (
            "channels",
            transposed(4, 1, 0),
            "conv_transpose2d: input of 3 channels, the weight [Cin, Cout, kh, kw] takes 4",
        ),
        (
            "avg pool padding",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.avg_pool2d(i, 2, 2, 2)),
            "avg_pool2d: padding 2 is more than half the window 2",
        ),
        (
            "upsample 0",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.upsample_nearest2d(i, 0)),
            "upsample_nearest2d: scale 0, expected 1 or more",
        ),
        (
            "negative slope",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.act(i, Activation::LeakyRelu(-0.1))),
            "leaky_relu: negative slope -0.1, expected a finite slope of 0 or more",
        ),
        (
            "NaN slope",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.act(i, Activation::LeakyRelu(f32::NAN))),
            "leaky_relu: negative slope NaN",
        ),
        (
            "hardtanh bounds reversed",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.act(i, Activation::Hardtanh(6.0, 0.0))),
            "hardtanh: bounds [6, 0], expected finite bounds, the first below the second",
        ),
        (
            "hardtanh bounds equal",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.act(i, Activation::Hardtanh(1.0, 1.0))),
            "hardtanh: bounds [1, 1]",
        ),
        (
            "hardtanh bound infinite",
            net_of(&|b: &mut NetBuilder, i: NodeId| {
                b.act(i, Activation::Hardtanh(f32::NEG_INFINITY, 1.0))
            }),
            "hardtanh: bounds [-inf, 1]",
        ),
    ];
    errors_on_every_path(&x, cases);
}

/// A dilation of 0 (conv or transposed conv), groups 0, groups that do
/// not divide a conv's output channels and a weight with a dimension of 0
/// are PyTorch's errors, and now every path's, forward or backward:
/// before, the CPU kernels ran dilation 0 as 1 (a 3x3 conv of a 5x5 input
/// gave 3x3), the generic path as 0 (5x5), and candle's backward divided
/// by it and panicked; groups 0 and a transposed conv of 0 channels
/// panicked on the CPU path; a kernel of height 0 gave zeros.
#[test]
fn conv_settings_the_paths_would_read_differently_are_errors_on_every_path() {
    let x = randn(&[2, 3, 5, 5], 1);
    let conv = |cout: usize, cin_g: usize, dilation: usize, groups: usize| {
        let cfg = candle_nn::Conv2dConfig {
            dilation,
            groups,
            ..Default::default()
        };
        let c = candle_nn::Conv2d::new(randn(&[cout, cin_g, 3, 3], 2), None, cfg);
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv2d(i, &c);
        b.build(y)
    };
    let transposed = |cout: usize, dilation: usize| {
        let cfg = candle_nn::ConvTranspose2dConfig {
            dilation,
            ..Default::default()
        };
        let t = candle_nn::ConvTranspose2d::new(randn(&[3, cout, 3, 3], 3), None, cfg);
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv_transpose2d(i, &t);
        b.build(y)
    };
    let per_axis = |stride, dilation| {
        let settings = Conv2dSettings {
            stride,
            dilation,
            ..Default::default()
        };
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv2d_with(i, &randn(&[4, 3, 3, 3], 2), None, settings);
        b.build(y)
    };
    let kernel_height_0 = {
        let c = candle_nn::Conv2d::new(randn(&[4, 3, 0, 3], 2), None, Default::default());
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv2d(i, &c);
        b.build(y)
    };
    for (what, net, expected) in [
        (
            "conv dilation 0",
            conv(4, 3, 0, 1),
            "conv: dilation 0, expected 1 or more",
        ),
        (
            "conv groups 0",
            conv(4, 3, 1, 0),
            "conv: groups 0, expected 1 or more",
        ),
        (
            "conv groups 3 of 4 outputs",
            conv(4, 1, 1, 3),
            "conv: 4 output channels do not split into 3 groups",
        ),
        (
            "transposed conv dilation 0",
            transposed(2, 0),
            "conv_transpose2d: dilation 0, expected 1 or more",
        ),
        (
            "transposed conv of 0 channels",
            transposed(0, 1),
            "conv_transpose2d: a weight of shape [3, 0, 3, 3], expected no dimension of 0",
        ),
        (
            "conv kernel of height 0",
            kernel_height_0,
            "conv: a weight of shape [4, 3, 0, 3], expected no dimension of 0",
        ),
        (
            "conv stride 0 across",
            per_axis([2, 0], [1, 1]),
            "conv: stride [2, 0] ([rows, columns]), expected 1 or more",
        ),
        (
            "conv dilation 0 down",
            per_axis([1, 1], [0, 2]),
            "conv: dilation [0, 2] ([rows, columns]), expected 1 or more",
        ),
    ] {
        let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let v = Var::from_tensor(&x)?;
                f(v.as_tensor())?.sum_all()?.backward().map(|_| ())
            }))
        };
        for (path, y) in [
            ("auto", run(&|x| net.forward(x))),
            ("generic", run(&|x| net.forward_generic(x))),
            ("candle", run(&|x| net.forward_candle(x))),
        ] {
            let message = match y {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => panic!("{what} on {path}: no error"),
                Err(_) => panic!("{what} on {path}: panicked"),
            };
            assert!(message.contains(expected), "{what} on {path}: {message}");
        }
        assert!(!net.uses_cpu_engine(&x), "{what}");
    }
}

/// A weight that is a view (a transposed conv's `[Cin, Cout, k, k]` made
/// by transposing a `[Cout, Cin, k, k]` tensor) gives the same output and
/// input gradient as its contiguous copy on every path, for a strided
/// transposed conv and a strided conv: before, the generic path (every
/// dtype but f32 on the CPU, and CUDA) failed with "index-select only
/// supports contiguous tensors" preparing the strided kernels' phases.
#[test]
fn a_weight_that_is_a_view_runs_as_its_contiguous_copy_on_every_path() {
    let x = randn(&[2, 4, 5, 6], 1);
    let view = randn(&[3, 4, 4, 4], 2).transpose(0, 1).unwrap();
    assert!(!view.is_contiguous());
    let nets = |w: &Tensor| {
        let cfg = candle_nn::ConvTranspose2dConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let t = candle_nn::ConvTranspose2d::new(w.clone(), None, cfg);
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv_transpose2d(i, &t);
        let transposed = b.build(y);
        // The same view as a conv's weight [Cout 4, Cin 3, 4, 4].
        let c = candle_nn::Conv2d::new(
            w.clone(),
            None,
            candle_nn::Conv2dConfig {
                stride: 2,
                padding: 1,
                ..Default::default()
            },
        );
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = b.conv2d(i, &c);
        (transposed, b.build(y))
    };
    let (tv, cv) = nets(&view);
    let (tc, cc) = nets(&view.contiguous().unwrap());
    let xc = randn(&[2, 3, 7, 7], 3);
    let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Tensor| {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let r = randn(y.dims(), 4);
        let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    };
    for (what, view, copy, x) in [("transposed", &tv, &tc, &x), ("conv", &cv, &cc, &xc)] {
        for (path, a, b) in [
            (
                "auto",
                run(&|x| view.forward(x), x),
                run(&|x| copy.forward(x), x),
            ),
            (
                "generic",
                run(&|x| view.forward_generic(x), x),
                run(&|x| copy.forward_generic(x), x),
            ),
            (
                "candle",
                run(&|x| view.forward_candle(x), x),
                run(&|x| copy.forward_candle(x), x),
            ),
        ] {
            let (ey, eg) = (rel_err(&a.0, &b.0), rel_err(&a.1, &b.1));
            assert!(ey < 1e-6 && eg < 1e-6, "{what} on {path}: {ey}, {eg}");
        }
    }
}

/// An op on images given a flat value names itself on every path: the
/// generic path and candle's ops said only "unexpected rank, expected: 4,
/// got: 2 ([2, 4])" where the CPU kernels named the op.
#[test]
fn an_image_op_on_a_flat_value_names_itself_on_every_path() {
    let x = randn(&[2, 4], 1);
    let conv = candle_nn::Conv2d::new(randn(&[3, 4, 1, 1], 2), None, Default::default());
    let transposed = candle_nn::ConvTranspose2d::new(
        randn(&[4, 3, 2, 2], 3),
        None,
        candle_nn::ConvTranspose2dConfig::default(),
    );
    type Make<'a> = &'a dyn Fn(&mut NetBuilder, NodeId) -> NodeId;
    let ops: [(&str, Make); 6] = [
        ("conv", &|b, i| b.conv2d(i, &conv)),
        ("conv_transpose2d", &|b, i| {
            b.conv_transpose2d(i, &transposed)
        }),
        ("max_pool2d", &|b, i| b.max_pool2d(i, 2, 2, 0, false)),
        ("avg_pool2d", &|b, i| b.avg_pool2d(i, 2, 2, 0)),
        ("adaptive_avg_pool2d", &|b, i| {
            b.adaptive_avg_pool2d(i, 1, 1)
        }),
        ("upsample_nearest2d", &|b, i| b.upsample_nearest2d(i, 2)),
    ];
    for (name, make) in ops {
        let mut b = NetBuilder::new();
        let i = b.input();
        let y = make(&mut b, i);
        let net = b.build(y);
        for (path, y) in [
            ("auto", net.forward(&x)),
            ("generic", net.forward_generic(&x)),
            ("candle", net.forward_candle(&x)),
        ] {
            let message = y.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                message.starts_with(&format!("{name}: expected [B, ")),
                "{name} on {path}: {message}"
            );
        }
    }
}

/// A value that an upsampling and another op both read gets both
/// gradients on every path: candle 0.11's backward of
/// `upsample_nearest2d` replaced its input's gradient instead of adding
/// to it (huggingface/candle#3507), and the reference path (candle's ops)
/// dropped the other reader's share (`concat [upsample x1, x]`: 5.7
/// relative to the largest value).
#[test]
fn an_upsampled_value_read_elsewhere_too_gets_every_gradient() {
    for (scale, k) in [(1, 1), (2, 2), (3, 3)] {
        let mut b = NetBuilder::new();
        let x = b.input();
        let u = b.upsample_nearest2d(x, scale);
        let back = b.avg_pool2d(u, k, k, 0);
        let c = b.concat(&[x, back]);
        let y = b.add(back, x);
        let y = b.concat(&[c, y]);
        let net = b.build(y);
        let xin = randn(&[2, 3, 4, 5], 21);
        check_naive(&format!("scale {scale}"), &net, &xin, |x, r| {
            // y = [x, x, 2x] per sample along the channels.
            let n = x.len() / 2;
            let mut y = Vec::with_capacity(4 * n);
            let mut gx = vec![0f64; x.len()];
            for s in 0..2 {
                let xs = &x[s * n..][..n];
                let base = y.len();
                y.extend_from_slice(xs);
                y.extend_from_slice(xs);
                y.extend(xs.iter().map(|v| 2.0 * v));
                for i in 0..n {
                    gx[s * n + i] = r[base + i] + r[base + n + i] + 2.0 * r[base + 2 * n + i];
                }
            }
            (y, gx)
        });
    }
}

/// SiLU against its definition on every path, alone, after a batch norm
/// (its activation pass), before a dense layer (whose input gradient
/// goes through it as the product is made) and after a conv (which does
/// not take it into its bias pass): x·σ(x), its slope σ(x)·(1 + x·(1 −
/// σ(x))), at large |x| too.
#[test]
fn silu_matches_its_definition_on_every_path() {
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let slope = |v: f64| {
        let s = 1.0 / (1.0 + (-v).exp());
        s * (1.0 + v * (1.0 - s))
    };
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = b.act(x, Activation::Silu);
    let net = b.build(y);
    let mut xin = values(&randn(&[2, 3, 4, 5], 15));
    xin[..6].copy_from_slice(&[-100.0, -30.0, 0.0, 12.0, 100.0, -1e-3]);
    let xin = Tensor::from_vec(xin, (2, 3, 4, 5), &DEV).unwrap();
    check_naive("alone", &net, &xin, |x, r| {
        let y = x.iter().map(|&v| silu(v)).collect();
        let gx = x.iter().zip(r).map(|(&v, r)| r * slope(v)).collect();
        (y, gx)
    });
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = b.affine(x, &randn(&[3], 16), &randn(&[3], 17));
    let y = b.act(y, Activation::Silu);
    let y = b.flatten(y);
    let y = b.linear(y, &randn(&[4, 60], 18), None);
    let y = b.act(y, Activation::Silu);
    check(&b.build(y), &[2, 3, 4, 5], 19);
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = conv(&mut b, x, [3, 4, 3], [1, 1, 1, 1], 20);
    let y = b.act(y, Activation::Silu);
    let y = b.linear(y, &randn(&[2, 4], 21), Some(&randn(&[2], 22)));
    let y = b.act(y, Activation::Silu);
    let net = b.build(y);
    check(&net, &[2, 3, 5, 4], 23);
    let kernels: Vec<&str> = net.compiled_kernels().collect();
    assert_eq!(kernels, ["Conv", "Act", "Dense", "Act"]);
}

/// The hard activations (MobileNetV2's ReLU6 = Hardtanh(0, 6),
/// MobileNetV3's hardswish and hardsigmoid) against their definitions on
/// every path, at their kinks exactly and beside them, with PyTorch's
/// gradient there (2.15, measured: hardswish's 0 at −3 and 1 at 3,
/// hardsigmoid's and hardtanh's 0 at their bounds); alone, fused into a
/// conv's bias pass (hardtanh) or a pass of their own after it (the two
/// that keep their slope), and after a batch norm; a NaN stays NaN.
#[test]
fn hard_activations_match_their_definitions_on_every_path() {
    // Each activation's value and gradient at one input.
    type Def = Box<dyn Fn(f64) -> (f64, f64)>;
    let hardswish = |v: f64| {
        let s = if v <= -3.0 {
            0.0
        } else if v < 3.0 {
            v / 3.0 + 0.5
        } else {
            1.0
        };
        (v * (v + 3.0).clamp(0.0, 6.0) / 6.0, s)
    };
    let hardsigmoid = |v: f64| {
        let s = if v > -3.0 && v < 3.0 { 1.0 / 6.0 } else { 0.0 };
        ((v + 3.0).clamp(0.0, 6.0) / 6.0, s)
    };
    let kinks = [
        -7.0, -6.0, -3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0, 5.9, 6.0, 8.0,
    ];
    let mut xin = values(&(randn(&[2, 3, 4, 5], 31) * 4.0).unwrap());
    xin[..kinks.len()].copy_from_slice(&kinks);
    let xin = Tensor::from_vec(xin, (2, 3, 4, 5), &DEV).unwrap();
    let hardtanh = |lo: f64, hi: f64| {
        move |v: f64| {
            let inside = v > lo && v < hi;
            (v.clamp(lo, hi), if inside { 1.0 } else { 0.0 })
        }
    };
    let cases: Vec<(&str, Activation, Def)> = vec![
        ("hardswish", Activation::Hardswish, Box::new(hardswish)),
        (
            "hardsigmoid",
            Activation::Hardsigmoid,
            Box::new(hardsigmoid),
        ),
        (
            "relu6",
            Activation::Hardtanh(0.0, 6.0),
            Box::new(hardtanh(0.0, 6.0)),
        ),
        (
            "hardtanh",
            Activation::Hardtanh(-1.0, 2.5),
            Box::new(hardtanh(-1.0, 2.5)),
        ),
    ];
    for (name, a, def) in &cases {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.act(x, *a);
        check_naive(name, &b.build(y), &xin, |x, r| {
            let y = x.iter().map(|&v| def(v).0).collect();
            let gx = x.iter().zip(r).map(|(&v, r)| r * def(v).1).collect();
            (y, gx)
        });
        // After a conv and after a batch norm.
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = conv(&mut b, x, [3, 4, 3], [1, 1, 1, 1], 32);
        let y = b.act(y, *a);
        let y = b.affine(y, &randn(&[4], 33), &randn(&[4], 34));
        let y = b.act(y, *a);
        let net = b.build(y);
        check(&net, &[2, 3, 5, 4], 35);
        let kernels: Vec<&str> = net.compiled_kernels().collect();
        let own_pass = matches!(a, Activation::Hardswish | Activation::Hardsigmoid);
        let want: &[&str] = if own_pass {
            &["Conv", "Act", "Affine"]
        } else {
            &["Conv", "Affine"]
        };
        assert_eq!(kernels, want, "{name}");
        // A NaN stays NaN on every path.
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.act(x, *a);
        let net = b.build(y);
        let x = Tensor::new(&[[f32::NAN, 1.0]], &DEV).unwrap();
        for y in [
            net.forward(&x).unwrap(),
            net.forward_generic(&x).unwrap(),
            net.forward_candle(&x).unwrap(),
        ] {
            assert!(values(&y)[0].is_nan(), "{name}: {:?}", values(&y));
        }
    }
}

/// Attention over pixels on every path: self-attention of a value with
/// itself (queries, keys and values one value, whose gradient is the sum
/// of the three) against f64 loops of its definition, at two scales, one
/// sample's map sharp; a SAGAN block (queries, keys and values from 1×1
/// convs, the keys and values max-pooled to fewer pixels, a 1×1 conv out,
/// a residual add) against candle's ops; shapes that do not fit, a flat
/// value and a scale that is not finite are errors on every path.
#[test]
fn attention_matches_its_definition_on_every_path() {
    for scale in [0.3f32, 1.0] {
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.attention(x, x, x, scale);
        let net = b.build(y);
        let (nb, c, h, w) = (2, 3, 2, 3);
        let n = h * w;
        let x = randn(&[nb, c, h, w], 41);
        check_naive(&format!("scale {scale}"), &net, &x, |x, r| {
            let at = |bi: usize, ci: usize, p: usize| x[(bi * c + ci) * n + p];
            let s = f64::from(scale);
            let (mut y, mut gx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
            for bi in 0..nb {
                // p[i][j] = softmax_j(s · x_i · x_j).
                let p: Vec<Vec<f64>> = (0..n)
                    .map(|i| {
                        let l: Vec<f64> = (0..n)
                            .map(|j| {
                                s * (0..c).map(|ci| at(bi, ci, i) * at(bi, ci, j)).sum::<f64>()
                            })
                            .collect();
                        let top = l.iter().cloned().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = l.iter().map(|v| (v - top).exp()).collect();
                        let z: f64 = e.iter().sum();
                        e.iter().map(|v| v / z).collect()
                    })
                    .collect();
                let g = |ci: usize, i: usize| r[(bi * c + ci) * n + i];
                for i in 0..n {
                    for ci in 0..c {
                        y[(bi * c + ci) * n + i] = (0..n).map(|j| p[i][j] * at(bi, ci, j)).sum();
                    }
                }
                // dP[i][j] = g_i · x_j; dL = P ⊙ (dP − rowsum(dP ⊙ P)).
                for i in 0..n {
                    let dp: Vec<f64> = (0..n)
                        .map(|j| (0..c).map(|ci| g(ci, i) * at(bi, ci, j)).sum())
                        .collect();
                    let dot: f64 = (0..n).map(|j| dp[j] * p[i][j]).sum();
                    for j in 0..n {
                        let dl = p[i][j] * (dp[j] - dot);
                        for ci in 0..c {
                            // As a query (i), as a key (j); as a value below.
                            gx[(bi * c + ci) * n + i] += s * dl * at(bi, ci, j);
                            gx[(bi * c + ci) * n + j] += s * dl * at(bi, ci, i);
                        }
                    }
                    for j in 0..n {
                        for ci in 0..c {
                            gx[(bi * c + ci) * n + j] += p[i][j] * g(ci, i);
                        }
                    }
                }
            }
            (y, gx)
        });
    }
    // SAGAN's block, keys and values pooled to a quarter of the pixels.
    let mut b = NetBuilder::new();
    let x = b.input();
    let q = conv(&mut b, x, [4, 2, 1], [1, 0, 1, 1], 42);
    let k = conv(&mut b, x, [4, 2, 1], [1, 0, 1, 1], 43);
    let k = b.max_pool2d(k, 2, 2, 0, false);
    let v = conv(&mut b, x, [4, 3, 1], [1, 0, 1, 1], 44);
    let v = b.max_pool2d(v, 2, 2, 0, false);
    let o = b.attention(q, k, v, 0.5);
    let o = conv(&mut b, o, [3, 4, 1], [1, 0, 1, 1], 45);
    let y = b.add(o, x);
    let net = b.build(y);
    check(&net, &[2, 4, 6, 4], 46);
    let kernels: Vec<&str> = net.compiled_kernels().collect();
    assert!(kernels.contains(&"Attention"), "{kernels:?}");

    let x = randn(&[2, 4, 4, 4], 47);
    let cases = vec![
        (
            "keys of other channels",
            net_of(&|b: &mut NetBuilder, i: NodeId| {
                let k = b.concat(&[i, i]);
                b.attention(i, k, k, 1.0)
            }),
            "attention: queries [2, 4, 4, 4], keys [2, 8, 4, 4] and values [2, 8, 4, 4], \
             expected [B, K, H, W], [B, K, H', W'] and [B, C, H', W']",
        ),
        (
            "values of another size",
            net_of(&|b: &mut NetBuilder, i: NodeId| {
                let v = b.max_pool2d(i, 2, 2, 0, false);
                b.attention(i, i, v, 1.0)
            }),
            "attention: queries [2, 4, 4, 4], keys [2, 4, 4, 4] and values [2, 4, 2, 2]",
        ),
        (
            "a flat value",
            net_of(&|b: &mut NetBuilder, i: NodeId| {
                let f = b.flatten(i);
                b.attention(f, f, f, 1.0)
            }),
            "attention: expected [B, C, H, W], got a value of shape [2, 64]",
        ),
        (
            "a scale that is not finite",
            net_of(&|b: &mut NetBuilder, i: NodeId| b.attention(i, i, i, f32::NAN)),
            "attention: scale NaN, expected a finite scale",
        ),
    ];
    errors_on_every_path(&x, cases);
}

/// Products on every path: a value with itself against its definition
/// (x², gradient 2x), two branches of the same shape, a flat product,
/// and a squeeze-and-excitation gate per channel (`[B, C, 1, 1]` from a
/// global pool, two 1×1 convs and a sigmoid, times the block's input)
/// against candle's ops; shapes neither equal nor a gate are an error.
#[test]
fn products_and_channel_gates_match_on_every_path() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let y = b.mul(x, x);
    check_naive("x · x", &b.build(y), &randn(&[2, 3, 4, 5], 30), |x, r| {
        let y = x.iter().map(|v| v * v).collect();
        let gx = x.iter().zip(r).map(|(v, r)| 2.0 * v * r).collect();
        (y, gx)
    });
    let mut b = NetBuilder::new();
    let x = b.input();
    let l = conv(&mut b, x, [3, 4, 3], [1, 1, 1, 1], 31);
    let r = conv(&mut b, x, [3, 4, 1], [1, 0, 1, 1], 32);
    let r = b.act(r, Activation::Sigmoid);
    let y = b.mul(l, r);
    check(&b.build(y), &[2, 3, 5, 6], 33);
    let mut b = NetBuilder::new();
    let x = b.input();
    let l = b.linear(x, &randn(&[4, 6], 34), None);
    let r = b.act(l, Activation::Tanh);
    let y = b.mul(r, l);
    check(&b.build(y), &[3, 6], 35);
    // Squeeze and excitation.
    let mut b = NetBuilder::new();
    let x = b.input();
    let h = conv(&mut b, x, [3, 8, 3], [1, 1, 1, 1], 36);
    let s = b.adaptive_avg_pool2d(h, 1, 1);
    let s = conv(&mut b, s, [8, 2, 1], [1, 0, 1, 1], 37);
    let s = b.act(s, Activation::Silu);
    let s = conv(&mut b, s, [2, 8, 1], [1, 0, 1, 1], 38);
    let s = b.act(s, Activation::Sigmoid);
    let y = b.mul(h, s);
    let y = b.add(y, h);
    check(&b.build(y), &[2, 3, 6, 7], 39);
    let mut b = NetBuilder::new();
    let x = b.input();
    let s = b.adaptive_avg_pool2d(x, 2, 1);
    let y = b.mul(x, s);
    errors_on_every_path(
        &randn(&[2, 3, 6, 6], 40),
        vec![(
            "a gate of 2 rows",
            b.build(y),
            "mul: shapes [2, 3, 6, 6] and [2, 3, 2, 1], expected the same or [B, C, H, W] and [B, C, 1, 1]",
        )],
    );
}

/// SiLU after a transposed conv (and its batch norm) is a pass of its
/// own, not the transposed conv's bias pass, which keeps GELU's slope
/// only: merged with the bias pass fusion, SiLU there panicked ("bias_act:
/// a slope buffer for Silu").
#[test]
fn silu_after_a_transposed_conv_runs_as_a_pass_of_its_own() {
    let mut b = NetBuilder::new();
    let x = b.input();
    let cfg = candle_nn::ConvTranspose2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let t = candle_nn::ConvTranspose2d::new(randn(&[3, 4, 4, 4], 50), Some(randn(&[4], 51)), cfg);
    let y = b.conv_transpose2d(x, &t);
    let y = b.affine(y, &randn(&[4], 52), &randn(&[4], 53));
    let y = b.act(y, Activation::Silu);
    let net = b.build(y);
    check(&net, &[2, 3, 4, 5], 54);
    let kernels: Vec<&str> = net.compiled_kernels().collect();
    assert_eq!(kernels, ["ConvTranspose", "Act"]);
}

/// Narrowing dim 1 and shuffling channels against their definitions on
/// every path, forward and input gradient: a ShuffleNetV2 unit (split in
/// two halves, one half through a 1×1 conv, concat, shuffle in 2 groups)
/// on images, and a narrow then a shuffle in 3 groups on a flat value.
/// Output channel j·g + i of a shuffle is input channel i·C/g + j; a
/// narrow's gradient is zero outside its range.
#[test]
fn narrow_and_channel_shuffle_match_their_definitions_on_every_path() {
    let (n, c, plane) = (2, 8, 5 * 3);
    let x = randn(&[n, c, 5, 3], 21);
    let w = randn(&[4, 4, 1, 1], 22);
    let wv = values(&w);
    let mut b = NetBuilder::new();
    let i = b.input();
    let (left, right) = (b.narrow(i, 1, 0, 4), b.narrow(i, 1, 4, 4));
    let conv = b.conv2d(right, &candle_nn::Conv2d::new(w, None, Default::default()));
    let joined = b.concat(&[left, conv]);
    let y = b.channel_shuffle(joined, 2);
    let net = b.build(y);
    // Shuffled channel k of the concat [x0..x3, W·x4..7] is concat
    // channel (k % 2)·4 + k / 2.
    check_naive("shuffle unit", &net, &x, |x, r| {
        let at = |s: usize, ch: usize, p: usize| (s * c + ch) * plane + p;
        let mut y = vec![0f64; x.len()];
        let mut gx = vec![0f64; x.len()];
        for s in 0..n {
            for k in 0..c {
                let from = (k % 2) * 4 + k / 2;
                for p in 0..plane {
                    if from < 4 {
                        y[at(s, k, p)] = x[at(s, from, p)];
                        gx[at(s, from, p)] += r[at(s, k, p)];
                    } else {
                        let o = from - 4;
                        for ci in 0..4 {
                            let wt = f64::from(wv[o * 4 + ci]);
                            y[at(s, k, p)] += wt * x[at(s, 4 + ci, p)];
                            gx[at(s, 4 + ci, p)] += wt * r[at(s, k, p)];
                        }
                    }
                }
            }
        }
        (y, gx)
    });

    let (f, start, len, groups) = (11, 2, 9, 3);
    let x = randn(&[3, f], 23);
    let mut b = NetBuilder::new();
    let i = b.input();
    let narrowed = b.narrow(i, 1, start, len);
    let y = b.channel_shuffle(narrowed, groups);
    let net = b.build(y);
    check_naive("flat narrow and shuffle", &net, &x, |x, r| {
        let mut y = vec![0f64; 3 * len];
        let mut gx = vec![0f64; x.len()];
        for s in 0..3 {
            for k in 0..len {
                let from = start + (k % groups) * (len / groups) + k / groups;
                y[s * len + k] = x[s * f + from];
                gx[s * f + from] += r[s * len + k];
            }
        }
        (y, gx)
    });
}

/// A narrow past dim 1's end and a shuffle whose groups do not divide the
/// channels are the same error on every path, naming the op; a narrow of
/// length 0 and a shuffle in 0 groups are refused when the network runs
/// (candle's narrow of length 0 gave an empty value, and a shuffle in 0
/// groups divided by 0).
#[test]
fn narrow_and_shuffle_settings_that_do_not_fit_are_errors_on_every_path() {
    let x = randn(&[2, 6, 4, 4], 24);
    let cases = vec![
        (
            "narrow past the end",
            net_of(&|b, i| b.narrow(i, 1, 4, 3)),
            "narrow: entries [4, 7) of dim 1, which has 6",
        ),
        (
            "narrow of nothing",
            net_of(&|b, i| b.narrow(i, 1, 1, 0)),
            "narrow: length 0, expected 1 or more",
        ),
        (
            "shuffle groups",
            net_of(&|b, i| b.channel_shuffle(i, 4)),
            "channel_shuffle: 6 channels do not split into 4 groups",
        ),
        (
            "shuffle in no groups",
            net_of(&|b, i| b.channel_shuffle(i, 0)),
            "channel_shuffle: groups 0, expected 1 or more",
        ),
    ];
    errors_on_every_path(&x, cases);
}

/// Joins and narrows along rows and columns, and a constant repeated over
/// the batch, against their definitions on every path, forward and input
/// gradient: a class token `k` `[1, 3, 1, 5]` in front of the rows of x
/// `[2, 3, 4, 5]` (a transformer's tokens as rows), the columns of that
/// rotated by one (two narrows along dim 3 joined the other way round),
/// plus the joined value itself; and on a flat value, a constant after
/// its features. Nothing flows back through the constant.
#[test]
fn joins_narrows_and_constants_along_any_dim_match_their_definitions() {
    let (n, c, h, w) = (2, 3, 4, 5);
    let x = randn(&[n, c, h, w], 31);
    let k = randn(&[1, c, 1, w], 32);
    let kv = values(&k);
    let mut b = NetBuilder::new();
    let i = b.input();
    let token = b.constant(&k);
    let joined = b.concat_dim(&[token, i], 2);
    let right = b.narrow(joined, 3, 1, 4);
    let left = b.narrow(joined, 3, 0, 1);
    let rotated = b.concat_dim(&[right, left], 3);
    let y = b.add(rotated, joined);
    let net = b.build(y);
    check_naive("rows and columns", &net, &x, |x, r| {
        // joined[s, ch, row, col]: the token's row 0, then x's rows.
        let joined = |s: usize, ch: usize, row: usize, col: usize| -> (f64, Option<usize>) {
            if row == 0 {
                (f64::from(kv[ch * w + col]), None)
            } else {
                let at = ((s * c + ch) * h + row - 1) * w + col;
                (x[at], Some(at))
            }
        };
        let mut y = vec![0f64; n * c * (h + 1) * w];
        let mut gx = vec![0f64; x.len()];
        for s in 0..n {
            for ch in 0..c {
                for row in 0..=h {
                    for col in 0..w {
                        let o = ((s * c + ch) * (h + 1) + row) * w + col;
                        for (v, at) in [joined(s, ch, row, (col + 1) % w), joined(s, ch, row, col)]
                        {
                            y[o] += v;
                            if let Some(at) = at {
                                gx[at] += r[o];
                            }
                        }
                    }
                }
            }
        }
        (y, gx)
    });

    let x = randn(&[3, 4], 33);
    let k = randn(&[1, 2], 34);
    let kv = values(&k);
    let mut b = NetBuilder::new();
    let i = b.input();
    let token = b.constant(&k);
    let y = b.concat(&[i, token]);
    let net = b.build(y);
    check_naive("flat constant", &net, &x, |x, r| {
        let mut y = vec![0f64; 3 * 6];
        let mut gx = vec![0f64; x.len()];
        for s in 0..3 {
            for f in 0..6 {
                y[s * 6 + f] = if f < 4 {
                    gx[s * 4 + f] += r[s * 6 + f];
                    x[s * 4 + f]
                } else {
                    f64::from(kv[f - 4])
                };
            }
        }
        (y, gx)
    });
}

/// A narrow or a concat along a dim the value lacks, a concat whose other
/// sizes differ, a dim other than 1, 2 and 3, and a constant of more than
/// one sample are the same error on every path, naming the op.
#[test]
fn dims_and_constants_that_do_not_fit_are_errors_on_every_path() {
    let flat = randn(&[2, 5], 35);
    errors_on_every_path(
        &flat,
        vec![
            (
                "narrow of a flat value's rows",
                net_of(&|b, i| b.narrow(i, 2, 0, 1)),
                "narrow: dim 2 of a value of shape [2, 5]",
            ),
            (
                "concat of a flat value's rows",
                net_of(&|b, i| b.concat_dim(&[i, i], 2)),
                "concat: dim 2 of a value of shape [2, 5]",
            ),
        ],
    );
    let x = randn(&[2, 3, 4, 5], 36);
    let two = randn(&[2, 3, 1, 5], 37);
    let wide = randn(&[1, 3, 1, 6], 38);
    errors_on_every_path(
        &x,
        vec![
            (
                "concat of rows of other widths",
                net_of(&|b, i| {
                    let k = b.constant(&wide);
                    b.concat_dim(&[k, i], 2)
                }),
                "concat: shapes [[2, 3, 1, 6], [2, 3, 4, 5]], expected one batch, one channel \
                 count and one width",
            ),
            (
                "narrow of the batch",
                net_of(&|b, i| b.narrow(i, 0, 0, 1)),
                "narrow: dim 0, expected 1 (channels or features), 2 (rows) or 3 (columns)",
            ),
            (
                "concat along dim 4",
                net_of(&|b, i| b.concat_dim(&[i, i], 4)),
                "concat: dim 4, expected 1 (channels or features), 2 (rows) or 3 (columns)",
            ),
            (
                "narrow past the last column",
                net_of(&|b, i| b.narrow(i, 3, 2, 4)),
                "narrow: entries [2, 6) of dim 3, which has 5",
            ),
            (
                "constant of two samples",
                net_of(&|b, _| b.constant(&two)),
                "constant: a value of shape [2, 3, 1, 5], expected one sample, [1, C, H, W] or \
                 [1, F]",
            ),
        ],
    );
}

/// A pool's window along one axis as PyTorch's loops compute it: its start
/// (padding included), and for an average its divisor with and without
/// the padding (`(hend − hstart)` before clamping to the input, after
/// clamping to input and padding; and after clamping to the input).
fn naive_window(o: usize, k: usize, s: usize, p: usize, n: usize) -> (isize, usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end = (start + k as isize).min((n + p) as isize);
    let counted = (end - start) as usize;
    let inside = (end.min(n as isize) - start.max(0)) as usize;
    (start, counted, inside)
}

/// Max and average pools with their settings per axis (PyTorch's
/// `MaxPool2d((3, 1), stride=(2, 1))`, dilation, ceil mode, ResNet-D's
/// `AvgPool2d(2, ceil_mode=True, count_include_pad=False)`, an average
/// whose last window hangs over the padding in ceil mode, pools along one
/// axis) against their definitions on every path, output and input
/// gradient: a max window's taps at `o·s − p + t·d` inside the input,
/// its first maximum taking the gradient; an average's taps summed over
/// PyTorch's divisor.
#[test]
fn per_axis_pools_match_their_definition_on_every_path() {
    let axes = |kernel, stride, padding, dilation, ceil_mode, count_include_pad| Pool2dSettings {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
    };
    // (max, settings, (h, w))
    let cases = [
        (
            true,
            axes([3, 1], [2, 1], [1, 0], [1, 1], false, true),
            (9, 6),
        ),
        (
            true,
            axes([1, 3], [1, 2], [0, 1], [1, 1], true, true),
            (5, 8),
        ),
        (
            true,
            axes([3, 3], [2, 2], [1, 1], [2, 2], true, true),
            (10, 9),
        ),
        (
            true,
            axes([2, 3], [1, 2], [1, 1], [3, 1], false, true),
            (7, 8),
        ),
        (
            true,
            axes([3, 2], [3, 2], [0, 1], [1, 2], true, true),
            (8, 7),
        ),
        (
            false,
            axes([2, 2], [2, 2], [0, 0], [1, 1], true, false),
            (7, 5),
        ),
        (
            false,
            axes([3, 1], [2, 1], [1, 0], [1, 1], false, false),
            (8, 5),
        ),
        (
            false,
            axes([1, 3], [1, 2], [0, 1], [1, 1], true, true),
            (4, 8),
        ),
        (
            false,
            axes([3, 3], [2, 2], [1, 1], [1, 1], true, true),
            (6, 6),
        ),
        (
            false,
            axes([2, 3], [2, 2], [1, 1], [1, 1], true, false),
            (5, 8),
        ),
        (false, Pool2dSettings::new([1, 2]), (4, 5)),
    ];
    for (i, (max, settings, (h, w))) in cases.into_iter().enumerate() {
        let net = net_of(&|b, x| {
            if max {
                b.max_pool2d_with(x, settings)
            } else {
                b.avg_pool2d_with(x, settings)
            }
        });
        let Pool2dSettings {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
            ceil_mode,
            count_include_pad,
        } = settings;
        // PyTorch's output length, the last window dropped where it
        // starts in the right padding.
        let len = |n: usize, k: usize, s: usize, p: usize, d: usize| {
            let rest = n + 2 * p - (k - 1) * d - 1;
            let o = if ceil_mode {
                rest.div_ceil(s)
            } else {
                rest / s
            } + 1;
            o - usize::from(ceil_mode && (o - 1) * s >= n + p)
        };
        let (ho, wo) = (len(h, kh, sh, ph, dh), len(w, kw, sw, pw, dw));
        let (bn, c) = (2, 3);
        let xin = randn(&[bn, c, h, w], 70 + i as u64);
        check_naive(&format!("case {i}: {settings:?}"), &net, &xin, |x, r| {
            let mut y = vec![0f64; bn * c * ho * wo];
            let mut gx = vec![0f64; x.len()];
            for plane in 0..bn * c {
                for oy in 0..ho {
                    let (y0, rows_counted, rows_inside) = naive_window(oy, kh, sh, ph, h);
                    for ox in 0..wo {
                        let (x0, cols_counted, cols_inside) = naive_window(ox, kw, sw, pw, w);
                        let yi = (plane * ho + oy) * wo + ox;
                        let taps: Vec<usize> = (0..kh)
                            .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                            .filter_map(|(ky, kx)| {
                                let iy = y0 + (ky * dh) as isize;
                                let ix = x0 + (kx * dw) as isize;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                                inside.then(|| (plane * h + iy as usize) * w + ix as usize)
                            })
                            .collect();
                        if max {
                            let best =
                                taps.iter().copied().fold(
                                    taps[0],
                                    |b, t| {
                                        if x[t] > x[b] {
                                            t
                                        } else {
                                            b
                                        }
                                    },
                                );
                            y[yi] = x[best];
                            gx[best] += r[yi];
                        } else {
                            let count = if count_include_pad {
                                rows_counted * cols_counted
                            } else {
                                rows_inside * cols_inside
                            };
                            for t in taps {
                                y[yi] += x[t] / count as f64;
                                gx[t] += r[yi] / count as f64;
                            }
                        }
                    }
                }
            }
            (y, gx)
        });
    }
}

/// Pool settings PyTorch refuses are the same error on every path, naming
/// the op and the axes: a window or stride of 0 on one axis, padding more
/// than half the window on one axis, a dilated average (PyTorch's
/// `AvgPool2d` has no dilation), `count_include_pad` on a max pool, which
/// never reads it, and a dilated window that steps over the whole input.
#[test]
fn per_axis_pool_settings_that_do_not_fit_are_errors_on_every_path() {
    let x = randn(&[2, 3, 8, 2], 1);
    let max = |s: Pool2dSettings| net_of(&|b, x| b.max_pool2d_with(x, s));
    let avg = |s: Pool2dSettings| net_of(&|b, x| b.avg_pool2d_with(x, s));
    let of = Pool2dSettings::new;
    let cases = vec![
        (
            "window",
            max(Pool2dSettings {
                kernel: [2, 0],
                ..of([2, 1])
            }),
            "max_pool2d: window [2, 0] ([rows, columns]), expected 1 or more",
        ),
        (
            "stride",
            avg(Pool2dSettings {
                stride: [0, 1],
                ..of([2, 1])
            }),
            "avg_pool2d: stride [0, 1] ([rows, columns]), expected 1 or more",
        ),
        (
            "padding",
            avg(Pool2dSettings {
                padding: [1, 1],
                ..of([3, 1])
            }),
            "avg_pool2d: padding 1 is more than half the window [3, 1] ([rows, columns])",
        ),
        (
            "dilation",
            avg(Pool2dSettings {
                dilation: [2, 1],
                ..of([2, 2])
            }),
            "avg_pool2d: dilation [2, 1] ([rows, columns]), expected 1 (PyTorch's AvgPool2d has none)",
        ),
        (
            "count_include_pad",
            max(Pool2dSettings {
                count_include_pad: false,
                ..of([2, 2])
            }),
            "max_pool2d: count_include_pad false, which only an average pool reads",
        ),
        (
            "padding only",
            max(Pool2dSettings {
                padding: [0, 1],
                dilation: [1, 3],
                ..of([1, 2])
            }),
            "max_pool2d: window 0 of an input 2 long holds padding only",
        ),
        (
            "too small",
            max(Pool2dSettings {
                dilation: [4, 1],
                ..of([3, 1])
            }),
            "max_pool2d: input 8 (+2·0 padding) is smaller than the window's span 9",
        ),
    ];
    errors_on_every_path(&x, cases);
}

/// Transposed-conv settings PyTorch refuses, on one axis, are the same
/// error on every path, naming the op: a stride or dilation of 0, an
/// output padding not below its axis's stride, padding that leaves no
/// output along one axis.
#[test]
fn per_axis_transposed_conv_settings_that_do_not_fit_are_errors_on_every_path() {
    let x = randn(&[2, 3, 4, 5], 1);
    let weight = randn(&[3, 2, 3, 3], 2);
    let net = |settings| net_of(&|b, x| b.conv_transpose2d_with(x, &weight, None, settings));
    let of = |stride, padding, output_padding, dilation| ConvTranspose2dSettings {
        stride,
        padding,
        output_padding,
        dilation,
    };
    let cases = vec![
        (
            "stride",
            net(of([2, 0], [0, 0], [0, 0], [1, 1])),
            "conv_transpose2d: stride [2, 0] ([rows, columns]), expected 1 or more",
        ),
        (
            "dilation",
            net(of([1, 1], [0, 0], [0, 0], [0, 1])),
            "conv_transpose2d: dilation [0, 1] ([rows, columns]), expected 1 or more",
        ),
        (
            "output padding",
            net(of([2, 1], [0, 0], [1, 1], [1, 1])),
            "conv_transpose2d: output padding 1, expected less than the stride 1",
        ),
        (
            "padding",
            net(of([1, 1], [0, 4], [0, 0], [1, 1])),
            "conv_transpose2d: input 5, kernel 3, stride 1: padding 4 leaves no output",
        ),
    ];
    errors_on_every_path(&x, cases);
}
