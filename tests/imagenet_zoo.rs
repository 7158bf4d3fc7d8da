//! The ImageNet classifiers of the zoo: torchvision's tensor names and
//! parameter counts, a save/load round trip, and the gradient audit.

mod common;

use std::collections::HashMap;

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gevaldi::model::{sample_standard_normal, Classifier};
use gevaldi::zoo::{
    self, AlexNet, ConvNext, ConvNextSize, GoogLeNet, ResNet, ResNetDepth, SqueezeNet,
    SqueezeNetVersion,
};
use gevaldi::GradientAudit;
use rand::SeedableRng;

/// Parameters (running statistics excluded) and shapes by name.
fn params(varmap: &VarMap) -> (usize, HashMap<String, Vec<usize>>) {
    let data = varmap.data().lock().unwrap();
    let shapes: HashMap<String, Vec<usize>> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let count = data
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, v)| v.elem_count())
        .sum();
    (count, shapes)
}

fn images(n: usize, size: usize) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    sample_standard_normal((n, 3, size, size), &mut rng, &common::device()).unwrap()
}

/// Saves the seeded weights under their names, loads them back through
/// `zoo::load_file` and checks that it equals the model loaded frozen from
/// the same weights (both on the engine), then audits the loaded model's
/// input gradient.
fn round_trip_and_audit<M: Classifier + Module>(
    name: &str,
    varmap: &VarMap,
    load: impl Fn(VarBuilder) -> candle_core::Result<M>,
    size: usize,
) {
    let model = load(zoo::frozen(varmap, &common::device())).unwrap();
    let dir = common::CaseDir::fresh(&format!("gevaldi-zoo-{}-{name}", std::process::id()));
    let path = dir.join(format!("{name}.safetensors"));
    varmap.save(&path).unwrap();
    let loaded = zoo::load_file(&path, name, &common::device(), load).unwrap();
    drop(dir);
    let x = images(2, size);
    let (a, b) = (model.forward(&x).unwrap(), loaded.forward(&x).unwrap());
    assert_eq!(a.dims(), [2, 1000]);
    assert_eq!(
        common::max_abs_diff(&a, &b),
        0.0,
        "{name}: the reloaded model differs"
    );
    assert_eq!(loaded.class_names()[0], "tench");
    let report = GradientAudit::default()
        .classifier(name, &loaded, &x)
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{name}: audit worst |ratio - 1| = {:.1e}",
        report.worst_deviation()
    );
}

#[test]
fn alexnet_has_torchvisions_names_and_right_gradients() {
    let (_, vm) = zoo::seeded_varmap(1, &common::device(), |vb| AlexNet::load(vb, 1000)).unwrap();
    let (count, shapes) = params(&vm);
    assert_eq!(count, 61_100_840);
    assert_eq!(shapes["features.0.weight"], [64, 3, 11, 11]);
    assert_eq!(shapes["features.10.weight"], [256, 256, 3, 3]);
    assert_eq!(shapes["classifier.1.weight"], [4096, 9216]);
    assert_eq!(shapes["classifier.6.weight"], [1000, 4096]);
    round_trip_and_audit("alexnet", &vm, |vb| AlexNet::load(vb, 1000), 64);
}

#[test]
fn squeezenets_have_torchvisions_names_and_right_gradients() {
    for (version, name, expected) in [
        (SqueezeNetVersion::V1_0, "squeezenet1_0", 1_248_424),
        (SqueezeNetVersion::V1_1, "squeezenet1_1", 1_235_496),
    ] {
        let (_, vm) = zoo::seeded_varmap(2, &common::device(), |vb| {
            SqueezeNet::load(vb, version, 1000)
        })
        .unwrap();
        let (count, shapes) = params(&vm);
        assert_eq!(count, expected, "{name}");
        assert_eq!(
            shapes["features.12.expand3x3.weight"],
            [256, 64, 3, 3],
            "{name}"
        );
        assert_eq!(shapes["classifier.1.weight"], [1000, 512, 1, 1], "{name}");
        round_trip_and_audit(name, &vm, |vb| SqueezeNet::load(vb, version, 1000), 64);
    }
    let (_, vm) = zoo::seeded_varmap(2, &common::device(), |vb| {
        SqueezeNet::load(vb, SqueezeNetVersion::V1_0, 1000)
    })
    .unwrap();
    assert_eq!(params(&vm).1["features.3.squeeze.weight"], [16, 96, 1, 1]);
}

#[test]
fn resnets_have_torchvisions_names_and_right_gradients() {
    for (depth, name, expected) in [
        (ResNetDepth::R18, "resnet18", 11_689_512),
        (ResNetDepth::R50, "resnet50", 25_557_032),
    ] {
        let (_, vm) =
            zoo::seeded_varmap(3, &common::device(), |vb| ResNet::load(vb, depth, 1000)).unwrap();
        let (count, shapes) = params(&vm);
        assert_eq!(count, expected, "{name}");
        assert_eq!(shapes["conv1.weight"], [64, 3, 7, 7]);
        assert_eq!(
            shapes["layer2.0.downsample.0.weight"][0],
            if depth == ResNetDepth::R18 { 128 } else { 512 }
        );
        assert!(shapes.contains_key("layer4.1.bn2.running_var"));
        round_trip_and_audit(name, &vm, |vb| ResNet::load(vb, depth, 1000), 64);
    }
}

/// A checkpoint with a wrong shape is refused with the tensor's name.
#[test]
fn a_wrong_tensor_is_named() {
    let dev = common::device();
    let (_, vm) = zoo::seeded_varmap(4, &dev, |vb| {
        SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 10)
    })
    .unwrap();
    let dir = common::CaseDir::fresh(&format!("gevaldi-zoo-bad-{}", std::process::id()));
    let path = dir.join("sq.safetensors");
    vm.save(&path).unwrap();
    let err = zoo::load_file(&path, "squeezenet1_1", &dev, |vb| {
        SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 1000)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("classifier.1.weight"), "{err}");
    assert!(err.contains("squeezenet1_1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn googlenet_has_torchvisions_names_and_right_gradients() {
    let load = |vb: VarBuilder| GoogLeNet::load(vb, 1000, true);
    let (_, vm) = zoo::seeded_varmap(5, &common::device(), load).unwrap();
    let (count, shapes) = params(&vm);
    assert_eq!(count, 6_624_904);
    assert_eq!(shapes["conv1.conv.weight"], [64, 3, 7, 7]);
    assert_eq!(shapes["inception3a.branch3.1.conv.weight"], [32, 16, 3, 3]);
    assert_eq!(shapes["inception5b.branch4.1.bn.running_mean"], [128]);
    assert_eq!(shapes["fc.weight"], [1000, 1024]);
    round_trip_and_audit("googlenet", &vm, load, 64);
}

#[test]
fn convnexts_have_torchvisions_names_and_right_gradients() {
    for (size, name, expected) in [
        (ConvNextSize::Tiny, "convnext_tiny", 28_589_128),
        (ConvNextSize::Small, "convnext_small", 50_223_688),
        (ConvNextSize::Base, "convnext_base", 88_591_464),
    ] {
        let load = |vb: VarBuilder| ConvNext::load(vb, size, 1000);
        let (_, vm) = zoo::seeded_varmap(6, &common::device(), load).unwrap();
        let (count, shapes) = params(&vm);
        assert_eq!(count, expected, "{name}");
        assert_eq!(shapes["features.1.0.layer_scale"][1..], [1, 1], "{name}");
        assert_eq!(
            shapes["features.1.0.block.0.weight"][1], 1,
            "{name}: depthwise"
        );
        if size == ConvNextSize::Tiny {
            assert_eq!(shapes["features.6.1.weight"], [768, 384, 2, 2]);
            assert_eq!(shapes["classifier.2.weight"], [1000, 768]);
            round_trip_and_audit(name, &vm, load, 64);
        }
    }
}
