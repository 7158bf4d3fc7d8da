//! The bagging ensemble of the MNIST fixtures on test data and on an MDS
//! dataset searched among its members (paper appendix F, Table 1).

mod common;

use std::time::Instant;

use candle_core::D;
use gevaldi::data::{Mnist, Split};
use gevaldi::ensemble::{mean_probs, MdsDataset, Metrics};
use gevaldi::model::Classifier;
use gevaldi::regions::find_regions;
use gevaldi::zoo::{self, MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig};
use gevaldi::SearchConfig;

/// See issue 6: Table 1 of the paper (93.8 / 0.95 / 0.83 on test vs
/// 65.3 / 0.80 / 0.66 on MDS), recomputed on the fixtures: the MDS accuracy
/// is at least 15 points below the test accuracy.
#[test]
fn the_ensemble_is_much_less_accurate_on_its_mds_dataset() {
    let dev = common::device();
    let dir = zoo::mnist_fixtures_dir();
    let members: Vec<MnistMlp> = (0..5)
        .map(|i| {
            let name = format!("bag_{i}");
            zoo::load_file(dir.join(format!("{name}.safetensors")), &name, &dev, |vb| {
                MnistMlp::load(vb, &MnistMlpConfig::default())
            })
            .unwrap()
        })
        .collect();
    let cvae = zoo::load_file(dir.join("cvae.safetensors"), "cvae", &dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::conditional())
    })
    .unwrap();

    let test = Mnist::load(dir.join("data"), Split::Test).unwrap();
    let x = test.images_tensor(None, &dev).unwrap();
    let member_probs: Vec<Vec<Vec<f32>>> = members
        .iter()
        .map(|m| {
            candle_nn::ops::softmax(&m.logits(&x).unwrap(), D::Minus1)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        })
        .collect();
    let labels: Vec<usize> = test.labels.iter().map(|l| *l as usize).collect();
    let on_test = Metrics::of(&mean_probs(&member_probs), &labels).unwrap();

    let named: Vec<(String, &dyn Classifier)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("bag_{i}"), m as &dyn Classifier))
        .collect();
    let named: Vec<(&str, &dyn Classifier)> = named.iter().map(|(n, m)| (n.as_str(), *m)).collect();
    let started = Instant::now();
    let config = SearchConfig::default().batch(500).steps(200).lr(0.1);
    let mds = MdsDataset::search(&named, &cvae, 2000, &config, &dev).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let on_mds = Metrics::of(&mds.vote(), &mds.labels).unwrap();

    println!("bagging ensemble of 5 MLPs, cVAE, K = 2000 MDS samples (js, adam, lr 0.1, 200 steps, {secs:.0} s)");
    println!("           accuracy   AUC    F1");
    println!(
        "test       {:>7.1}   {:.2}   {:.2}",
        100.0 * on_test.accuracy,
        on_test.auc.unwrap(),
        on_test.f1
    );
    println!(
        "MDS        {:>7.1}   {:.2}   {:.2}",
        100.0 * on_mds.accuracy,
        on_mds.auc.unwrap(),
        on_mds.f1
    );
    assert_eq!(mds.labels.len(), 2000);
    for c in 0..10 {
        assert_eq!(mds.labels.iter().filter(|&&l| l == c).count(), 200);
    }

    // Exported as extra training data, read back by the project's reader.
    let out = std::env::temp_dir().join(format!("gevaldi-mds-{}", std::process::id()));
    mds.export(&out, "mds").unwrap();
    let images = gevaldi::data::read_idx(out.join("mds-images-idx3-ubyte")).unwrap();
    assert_eq!(images.dims, [2000, 28, 28]);
    let raw = std::fs::read(out.join("mds-images-idx3-ubyte")).unwrap();
    assert_eq!(
        gevaldi::data::encode_idx(&images).unwrap(),
        raw,
        "byte-identical"
    );
    let labels = gevaldi::data::read_idx(out.join("mds-labels-idx1-ubyte")).unwrap();
    assert_eq!(
        labels.data,
        mds.labels.iter().map(|l| *l as u8).collect::<Vec<_>>()
    );
    let back = Mnist::load(&out, Split::Train);
    assert!(back.is_err(), "named mds-*, not train-*");
    let t = candle_core::safetensors::load(out.join("mds.safetensors"), &dev).unwrap();
    assert_eq!(t["z"].dims(), [2000, 4]);
    assert_eq!(t["probs.4"].dims(), [2000, 10]);
    std::fs::remove_dir_all(&out).unwrap();

    // Regions of uncertainty: DBSCAN over the MDS latents.
    let regions = find_regions(&mds, 10, None);
    println!(
        "DBSCAN (min_samples 10): eps {:.3} chosen from {:?}",
        regions.eps,
        regions
            .grid
            .iter()
            .map(|(e, r, n)| format!("{e:.3}: {r} regions, {n} noise"))
            .collect::<Vec<_>>()
    );
    println!(
        "{} regions, {} noise samples",
        regions.regions.len(),
        regions.noise
    );
    for (i, r) in regions.regions.iter().take(5).enumerate() {
        println!(
            "  region {i}: {} samples, conditions {:?}, ensemble predicts {:?}",
            r.members.len(),
            r.conditions,
            &r.predictions[..r.predictions.len().min(3)]
        );
    }
    assert!(regions.regions.len() > 1, "{regions:?}");
    assert!(
        regions.regions.len() < 2000 / 10,
        "{} regions",
        regions.regions.len()
    );

    assert!(
        on_mds.accuracy <= on_test.accuracy - 0.15,
        "MDS accuracy {} is not 15 points below test accuracy {}",
        on_mds.accuracy,
        on_test.accuracy
    );
}
