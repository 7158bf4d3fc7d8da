//! The committed MNIST fixtures: every figure here is recomputed from the
//! weights and the data, never read back from the metadata. Models run on
//! the device of `GEVALDI_DEVICE` (tests/common).

mod common;

use std::path::PathBuf;

use candle_core::{DType, Tensor, D};
use gevaldi::config::ModelKind;
use gevaldi::data::{Mnist, Split};
use gevaldi::model::{one_hot, Classifier, Generator};
use gevaldi::zoo::{
    self, Arch, MnistCnn, MnistCnnConfig, MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig,
};
use gevaldi::{Divergence, GradientAudit, Search, SearchConfig};
use rand::SeedableRng;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    zoo::mnist_fixtures_dir()
}

fn cnn(name: &str, cfg: MnistCnnConfig) -> MnistCnn {
    let path = dir().join(format!("{name}.safetensors"));
    zoo::load_file(path, name, &common::device(), |vb| MnistCnn::load(vb, &cfg)).unwrap()
}

fn vae(name: &str, cfg: MnistVaeConfig) -> MnistVae {
    let path = dir().join(format!("{name}.safetensors"));
    zoo::load_file(path, name, &common::device(), |vb| MnistVae::load(vb, &cfg)).unwrap()
}

fn bag() -> Vec<MnistMlp> {
    (0..5)
        .map(|i| {
            let name = format!("bag_{i}");
            let path = dir().join(format!("{name}.safetensors"));
            zoo::load_file(path, &name, &common::device(), |vb| {
                MnistMlp::load(vb, &MnistMlpConfig::default())
            })
            .unwrap()
        })
        .collect()
}

fn test_set() -> Mnist {
    Mnist::load(dir().join("data"), Split::Test).unwrap()
}

/// Probabilities `[n, 10]` of a classifier on every test digit.
fn test_probs(model: &dyn Classifier, data: &Mnist) -> Tensor {
    let x = data.images_tensor(None, &common::device()).unwrap();
    candle_nn::ops::softmax(&model.logits(&x).unwrap(), D::Minus1).unwrap()
}

fn predictions(probs: &Tensor) -> Vec<u32> {
    probs.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()
}

fn accuracy(pred: &[u32], data: &Mnist) -> f64 {
    let hits = pred
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| **p == **l as u32)
        .count();
    hits as f64 / data.len() as f64
}

fn metadata(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_data_has_the_documented_shape() {
    let train = Mnist::load(dir().join("data"), Split::Train).unwrap();
    let test = test_set();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    for d in 0..10u8 {
        let n = test.labels.iter().filter(|l| **l == d).count();
        assert!((184..=219).contains(&n), "digit {d}: {n} test images");
    }
}

#[test]
fn cnn_a_and_cnn_b_are_accurate_and_still_disagree() {
    let test = test_set();
    let a = predictions(&test_probs(&cnn("cnn_a", MnistCnnConfig::cnn_a()), &test));
    let b = predictions(&test_probs(&cnn("cnn_b", MnistCnnConfig::cnn_b()), &test));
    let (acc_a, acc_b) = (accuracy(&a, &test), accuracy(&b, &test));
    let disagree = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    println!(
        "test accuracy: cnn_a {acc_a:.4}, cnn_b {acc_b:.4}; they disagree on {disagree} of 2000"
    );
    assert!(acc_a >= 0.975, "cnn_a: {acc_a}");
    assert!(acc_b >= 0.975, "cnn_b: {acc_b}");
    // The figure of fixtures/mnist/README.md, measured on the CPU, where it
    // is deterministic. Elsewhere another summation order may tip a digit
    // whose two top logits nearly tie.
    if common::device().is_cpu() {
        assert_eq!(
            disagree, 26,
            "cnn_a and cnn_b disagree on {disagree} digits"
        );
    } else {
        assert!(
            disagree.abs_diff(26) <= 2,
            "cnn_a and cnn_b disagree on {disagree} digits (26 on the CPU)"
        );
    }
    // The metadata states what this test measures.
    for (name, acc) in [("cnn_a", acc_a), ("cnn_b", acc_b)] {
        let stated = metadata(name)["test_accuracy"].as_f64().unwrap();
        assert!(
            (stated - acc).abs() < 0.001,
            "{name}: metadata {stated}, measured {acc}"
        );
    }
}

#[test]
fn vae_prior_samples_look_like_digits_to_cnn_a() {
    let dev = common::device();
    let a = cnn("cnn_a", MnistCnnConfig::cnn_a());
    let g = vae("vae", MnistVaeConfig::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let z = g.sample_prior(256, &mut rng, &dev).unwrap();
    let probs =
        candle_nn::ops::softmax(&a.logits(&g.decode(&z, None).unwrap()).unwrap(), D::Minus1)
            .unwrap();
    let mean_max = probs
        .max(D::Minus1)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("cnn_a's mean max-probability on 256 VAE prior samples: {mean_max:.4}");
    assert!(mean_max >= 0.8, "{mean_max}");
}

#[test]
fn cvae_samples_are_classified_as_their_condition() {
    let dev = common::device();
    let a = cnn("cnn_a", MnistCnnConfig::cnn_a());
    let g = vae("cvae", MnistVaeConfig::conditional());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let labels: Vec<usize> = (0..500).map(|i| i % 10).collect();
    let c = one_hot(&labels, 10, &dev).unwrap();
    let z = g.sample_prior(500, &mut rng, &dev).unwrap();
    let pred = predictions(&a.logits(&g.decode(&z, Some(&c)).unwrap()).unwrap());
    let mut per_class = [0usize; 10];
    for (p, l) in pred.iter().zip(&labels) {
        if *p as usize == *l {
            per_class[*l] += 1;
        }
    }
    let rate = per_class.iter().sum::<usize>() as f64 / 500.0;
    println!("cnn_a classifies cVAE samples as their condition: {rate:.4} (per class of 50: {per_class:?})");
    assert!(rate >= 0.9, "{rate}");
}

#[test]
fn the_bagging_ensemble_votes_better_than_its_average_member() {
    let test = test_set();
    let members = bag();
    let probs: Vec<Tensor> = members.iter().map(|m| test_probs(m, &test)).collect();
    let member_acc: Vec<f64> = probs
        .iter()
        .map(|p| accuracy(&predictions(p), &test))
        .collect();
    let mean_probs = (Tensor::stack(&probs, 0).unwrap().sum(0).unwrap() / 5.0).unwrap();
    let vote = accuracy(&predictions(&mean_probs), &test);
    println!("bagging ensemble (mean-probability vote) test accuracy: {vote:.4}; members: {member_acc:.4?}");
    let mean_member = member_acc.iter().sum::<f64>() / 5.0;
    assert!(vote > mean_member, "{vote} <= {mean_member}");
    assert!(vote >= 0.9, "{vote}");
    // Each member saw its own bootstrap sample: their predictions differ.
    let p0 = predictions(&probs[0]);
    for p in &probs[1..] {
        assert_ne!(predictions(p), p0);
    }
}

/// The headline figure of the Quick start: cnn_a vs cnn_b over the VAE, KL,
/// batch 64, 200 steps.
#[test]
fn the_mds_search_lifts_kl_at_least_fivefold_over_the_baseline() {
    let a = cnn("cnn_a", MnistCnnConfig::cnn_a());
    let b = cnn("cnn_b", MnistCnnConfig::cnn_b());
    let g = vae("vae", MnistVaeConfig::default());
    let config = SearchConfig::default()
        .divergence(Divergence::Kl)
        .batch(64)
        .steps(200);
    let out = Search::new("vae", &g)
        .classifier("cnn_a", &a)
        .classifier("cnn_b", &b)
        .config(config)
        .run(&common::device())
        .unwrap();
    println!(
        "mean kl before {:.4} -> after {:.4}; baseline {:.4}; lift {:.1}x; mean dz {:.3}",
        out.mean_divergence_before(),
        out.mean_divergence_after(),
        out.baseline.mean,
        out.lift(),
        out.mean_dz()
    );
    assert!(out.lift() >= 5.0, "lift {}", out.lift());
    assert!(out.mean_dz() > 0.0);
}

#[test]
fn every_trained_architecture_passes_the_gradient_audit() {
    let dev = common::device();
    // Audit where the search evaluates the classifiers: on decoded samples.
    // (Real digits have blank backgrounds where a conv's output is constant
    // and max-pooling ties: there the model is not differentiable and no
    // gradient matches finite differences.)
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let g = vae("vae", MnistVaeConfig::default());
    let z = g.sample_prior(4, &mut rng, &dev).unwrap();
    let x = g.decode(&z, None).unwrap();
    let audit = GradientAudit::default();
    let a = cnn("cnn_a", MnistCnnConfig::cnn_a());
    let b = cnn("cnn_b", MnistCnnConfig::cnn_b());
    let mut classifiers: Vec<(String, &dyn Classifier)> =
        vec![("cnn_a".into(), &a), ("cnn_b".into(), &b)];
    let members = bag();
    for (i, m) in members.iter().enumerate() {
        classifiers.push((format!("bag_{i}"), m));
    }
    for (name, model) in &classifiers {
        let r = audit
            .classifier(name, *model, &x)
            .unwrap_or_else(|e| panic!("{e}"));
        println!("{name}: worst |ratio - 1| = {:.1e}", r.worst_deviation());
    }
    let r = audit
        .generator("vae", &g, &z, None)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("vae: worst |ratio - 1| = {:.1e}", r.worst_deviation());
    let cg = vae("cvae", MnistVaeConfig::conditional());
    let c = one_hot(&[1, 4, 7, 9], 10, &dev).unwrap();
    let z = cg.sample_prior(4, &mut rng, &dev).unwrap();
    let r = audit
        .generator("cvae", &cg, &z, Some(&c))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("cvae: worst |ratio - 1| = {:.1e}", r.worst_deviation());
}

#[test]
fn metadata_describes_each_fixture_and_its_data() {
    let data = dir().join("data");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-ubyte.gz"))
        .collect();
    names.sort();
    let mut all = Sha256::new();
    for p in &names {
        let sum = Sha256::digest(std::fs::read(p).unwrap());
        all.update(format!(
            "{:x}  {}\n",
            sum,
            p.file_name().unwrap().to_string_lossy()
        ));
    }
    let checksum = format!("{:x}", all.finalize());
    let fixtures = [
        ("cnn_a", Arch::MnistCnnA),
        ("cnn_b", Arch::MnistCnnB),
        ("vae", Arch::MnistVae),
        ("cvae", Arch::MnistCvae),
        ("bag_0", Arch::MnistMlp),
        ("bag_1", Arch::MnistMlp),
        ("bag_2", Arch::MnistMlp),
        ("bag_3", Arch::MnistMlp),
        ("bag_4", Arch::MnistMlp),
    ];
    let mut total_bytes = 0;
    for (name, arch) in fixtures {
        let meta = metadata(name);
        assert_eq!(meta["architecture"], arch.name(), "{name}");
        assert_eq!(meta["data_sha256"], checksum.as_str(), "{name}");
        assert!(
            meta["seed"].is_u64() && meta["epochs"].as_u64().unwrap() > 0,
            "{name}"
        );
        let path = dir().join(format!("{name}.safetensors"));
        total_bytes += std::fs::metadata(&path).unwrap().len();
        // Every fixture loads through the by-name registry too.
        let vb = |p: &PathBuf| {
            let t = candle_core::safetensors::load(p, &common::device()).unwrap();
            candle_nn::VarBuilder::from_tensors(t, DType::F32, &common::device())
        };
        if arch.kind() == ModelKind::Generator {
            zoo::generator(arch, vb(&path)).unwrap();
        } else {
            zoo::classifier(arch, vb(&path)).unwrap();
        }
    }
    println!("fixture weights: {:.1} MB", total_bytes as f64 / 1e6);
    assert!(total_bytes < 20_000_000);
}
