//! Layers and weight helpers shared by the built-in architectures.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

/// 2×2 max-pooling with stride 2 on `[B, C, H, W]` (H and W even), built
/// from ops whose backward pass is right.
///
/// candle 0.11's `Tensor::max_pool2d` multiplies the gradient at the
/// maximum by 1/k² (0.25 here) instead of 1. `max` over a reshaped window
/// gets that right but sends the whole gradient to every tied maximum (4× the
/// gradient in a constant region, e.g. the bias of a conv over a blank
/// background), which is not a valid subgradient. This picks one maximum per
/// window with `argmax` and takes it with `gather`, whose backward sends the
/// gradient to exactly that position, as PyTorch's `max_pool2d` does.
pub fn max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("max_pool2x2 needs even height and width, got {h}x{w}");
    }
    let windows = x
        .reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((b, c, h / 2, w / 2, 4))?;
    let first_max = windows.argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

/// A k×k conv without bias, padded to keep the size at stride 1 (k / 2),
/// as torchvision's ResNet and GoogLeNet build theirs.
pub(crate) fn conv_same(
    vb: VarBuilder,
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
) -> candle_core::Result<candle_nn::Conv2d> {
    let cfg = candle_nn::Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d_no_bias(i, o, k, cfg, vb)
}

/// Builds a model on a fresh [`VarMap`] and overwrites every variable with
/// seeded values, so that "random weights" are the same on every run
/// (candle's own CPU RNG cannot be seeded).
///
/// Variables are visited in name order. A tensor of rank ≥ 2 with fan-in n
/// (the product of all dims but the first) gets U(−1/√n, 1/√n), PyTorch's
/// default for linear and conv layers; rank-1 tensors get 0 (biases, running
/// means), except normalisation scales and variances (`….weight`,
/// `….running_var`), which get 1.
///
/// Returns the model, whose weights are the VarMap's variables (for
/// training), and the VarMap.
pub fn seeded_varmap<M>(
    seed: u64,
    device: &Device,
    load: impl Fn(VarBuilder) -> candle_core::Result<M>,
) -> candle_core::Result<(M, VarMap)> {
    let varmap = VarMap::new();
    // A first build registers every variable's name and shape.
    load(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims();
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound).expect("valid bound");
            (0..var.elem_count())
                .map(|_| dist.sample(&mut rng))
                .collect()
        } else if name.ends_with(".weight") || name.ends_with("running_var") {
            vec![1.0; var.elem_count()]
        } else {
            vec![0.0; var.elem_count()]
        };
        var.set(&Tensor::from_vec(values, dims, device)?)?;
    }
    drop(data);
    // Built again from the seeded values: layers that derive tensors when
    // they load (a batch norm folds its statistics) see the seeded ones.
    let model = load(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    Ok((model, varmap))
}

/// A `VarBuilder` over detached copies of a VarMap's variables: a model
/// loaded from it is frozen (its weights are constants, not variables).
pub fn frozen(varmap: &VarMap, device: &Device) -> VarBuilder<'static> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let tensors: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    VarBuilder::from_tensors(tensors, DType::F32, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn max_pool2x2_pools_and_sends_the_whole_gradient_to_the_max() {
        let dev = Device::Cpu;
        let x = Var::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &dev).unwrap();
        let y = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), [0.0, 0.0, 0.0, 1.0]);
    }

    // A tie (a constant region) must not multiply the gradient: the window's
    // gradient sums to 1, as for any valid subgradient of max.
    #[test]
    fn max_pool2x2_sends_a_tied_windows_gradient_to_one_position() {
        let dev = Device::Cpu;
        let x = Var::new(&[[[[0.5f32, 0.5, 1.0, 2.0], [0.5, 0.5, 2.0, 0.0]]]], &dev).unwrap();
        let y = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.5, 2.0]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        let left: f32 = [g[0], g[1], g[4], g[5]].iter().sum();
        let right: f32 = [g[2], g[3], g[6], g[7]].iter().sum();
        assert_eq!((left, right), (1.0, 1.0), "{g:?}");
    }

    #[test]
    fn max_pool2x2_matches_candle_forward_on_a_bigger_input() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 6.0, &dev)
            .unwrap()
            .reshape((2, 3, 4, 6))
            .unwrap()
            .sin()
            .unwrap();
        let ours = max_pool2x2(&x).unwrap();
        let candles = x.max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), candles.dims());
        let diff = (ours - candles).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn seeded_weights_repeat() {
        let dev = Device::Cpu;
        let load = |vb: VarBuilder| candle_nn::linear(3, 2, vb.pp("fc"));
        let read = |seed| {
            let (_, vm) = seeded_varmap(seed, &dev, load).unwrap();
            let t = frozen(&vm, &dev).get((2, 3), "fc.weight").unwrap();
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(read(1), read(1));
        assert_ne!(read(1), read(2));
    }
}
