//! Weights files as the README's recipe writes them,
//! `safetensors.torch.save_file(model.state_dict(), path)`: every batch
//! norm has an int64 scalar `num_batches_tracked` beside its running
//! statistics, and a `model.half()` state dict holds f16 weights. They load
//! through `zoo::load_file` and `Arch`, as the harness loads them, and give
//! the same logits as the model they were written from.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gevaldi::model::{sample_standard_normal, Classifier};
use gevaldi::zoo::{self, Arch};
use rand::SeedableRng;

fn images(n: usize, size: usize) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    sample_standard_normal((n, 3, size, size), &mut rng, &Device::Cpu).unwrap()
}

/// A file `name.safetensors` in a fresh folder, removed with the folder
/// when the first value is dropped.
fn temp_path(name: &str) -> (common::CaseDir, PathBuf) {
    let dir = common::CaseDir::fresh(&format!(
        "gevaldi-torchvision-{}-{name}",
        std::process::id()
    ));
    let path = dir.join(format!("{name}.safetensors"));
    (dir, path)
}

/// The state dict torchvision would give for a seeded random `arch`: the
/// VarMap's tensors (the names and shapes the loader asks for) in `dtype`,
/// and an I64 scalar `<bn>.num_batches_tracked` beside every batch norm's
/// `running_mean`, as torchvision names it. Returns it, the VarMap and
/// the number of batch norms.
fn state_dict(arch: Arch, seed: u64, dtype: DType) -> (HashMap<String, Tensor>, VarMap, usize) {
    let dev = Device::Cpu;
    let (_, varmap) = zoo::seeded_varmap(seed, &dev, |vb| zoo::classifier(arch, vb)).unwrap();
    let mut tensors = HashMap::new();
    let mut batch_norms = 0;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let t = var.as_tensor().detach().to_dtype(dtype).unwrap();
        tensors.insert(name.clone(), t);
        if let Some(bn) = name.strip_suffix(".running_mean") {
            // torchvision counts the training batches; any value will do.
            let count = Tensor::new(450_360i64, &dev).unwrap();
            tensors.insert(format!("{bn}.num_batches_tracked"), count);
            batch_norms += 1;
        }
    }
    (tensors, varmap, batch_norms)
}

/// Writes `tensors` with candle's safetensors writer and loads them as the
/// harness does (`tag` keeps the files of tests running at once apart).
fn load(
    arch: Arch,
    tag: &str,
    tensors: &HashMap<String, Tensor>,
) -> gevaldi::Result<Box<dyn Classifier>> {
    let (_dir, path) = temp_path(&format!("{arch}-{tag}"));
    candle_core::safetensors::save(tensors, &path).unwrap();
    zoo::load_file(&path, arch.name(), &Device::Cpu, |vb| {
        zoo::classifier(arch, vb)
    })
}

fn assert_same_logits(arch: Arch, loaded: &dyn Classifier, reference: &dyn Classifier) {
    let x = images(2, 64);
    let (a, b) = (loaded.logits(&x).unwrap(), reference.logits(&x).unwrap());
    assert_eq!(a.dims(), [2, 1000], "{arch}");
    let values = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        values.iter().all(|v| v.is_finite()),
        "{arch}: non-finite logits"
    );
    assert!(values.iter().any(|&v| v != 0.0), "{arch}: all logits are 0");
    assert_eq!(
        common::max_abs_diff(&a, &b),
        0.0,
        "{arch}: the loaded model differs"
    );
}

/// A torchvision state dict of a batch-norm architecture loads, skipping
/// `num_batches_tracked`, and gives exactly the f32 model's logits. (The
/// loader before issue 16 refused it: "has dtype I64, expected floats".)
#[test]
fn batch_norm_architectures_load_torchvision_state_dicts() {
    for (arch, seed) in [
        (Arch::GoogLeNet, 1),
        (Arch::ResNet18, 2),
        (Arch::ResNet50, 3),
    ] {
        let (tensors, varmap, batch_norms) = state_dict(arch, seed, DType::F32);
        assert!(batch_norms > 0, "{arch} has no batch norm");
        assert!(tensors
            .values()
            .any(|t| t.dtype() == DType::I64 && t.rank() == 0));
        let loaded = load(arch, "f32", &tensors).unwrap_or_else(|e| panic!("{e}"));
        let reference = zoo::classifier(arch, zoo::frozen(&varmap, &Device::Cpu)).unwrap();
        assert_same_logits(arch, &loaded, &reference);
    }
}

/// `model.half().state_dict()` (f16 weights, int64 counters still) and a
/// bf16 one load too: the weights are converted to f32, so the logits are
/// exactly those of the f32 model with its weights rounded to that dtype,
/// and within that rounding of the f32 model's.
#[test]
fn half_precision_state_dicts_load_as_f32() {
    let dev = Device::Cpu;
    for (arch, seed, dtype) in [
        (Arch::SqueezeNet1_1, 4, DType::F16),
        (Arch::SqueezeNet1_0, 5, DType::BF16),
        (Arch::ResNet18, 6, DType::F16),
    ] {
        let (tensors, varmap, batch_norms) = state_dict(arch, seed, dtype);
        assert_eq!(batch_norms > 0, arch == Arch::ResNet18, "{arch}");
        let loaded =
            load(arch, &format!("{dtype:?}"), &tensors).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let rounded: HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(_, t)| t.dtype() == dtype)
            .map(|(k, t)| (k.clone(), t.to_dtype(DType::F32).unwrap()))
            .collect();
        let reference =
            zoo::classifier(arch, VarBuilder::from_tensors(rounded, DType::F32, &dev)).unwrap();
        assert_same_logits(arch, &loaded, &reference);

        let full = zoo::classifier(arch, zoo::frozen(&varmap, &dev)).unwrap();
        let x = images(2, 64);
        let (a, b) = (loaded.logits(&x).unwrap(), full.logits(&x).unwrap());
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // f16 keeps 11 significant bits, bf16 8: a relative rounding of
        // 2^-11 or 2^-8 per weight, averaged over many products.
        let eps = if dtype == DType::F16 {
            2f32.powi(-11)
        } else {
            2f32.powi(-8)
        };
        let diff = common::max_abs_diff(&a, &b);
        println!("{arch} {dtype:?}: max |logit diff| {diff:.2e}, max |logit| {scale:.2e}");
        assert!(diff > 0.0, "{arch}: the {dtype:?} weights were not rounded");
        assert!(
            diff <= 8.0 * eps * scale,
            "{arch}: {dtype:?} logits differ by {diff}, logits up to {scale}"
        );
    }
}

/// An integer tensor the model needs is still refused, naming the tensor,
/// its dtype and the model.
#[test]
fn an_integer_tensor_the_model_needs_is_refused() {
    let (mut tensors, _, _) = state_dict(Arch::ResNet18, 7, DType::F32);
    let shape = tensors["layer1.0.bn1.running_var"].shape().clone();
    let ints = Tensor::ones(shape, DType::I64, &Device::Cpu).unwrap();
    tensors.insert("layer1.0.bn1.running_var".to_string(), ints);
    let err = load(Arch::ResNet18, "int", &tensors)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("tensor `layer1.0.bn1.running_var` has dtype I64, expected floats"),
        "{err}"
    );
    assert!(err.contains("`resnet18`"), "{err}");
}
