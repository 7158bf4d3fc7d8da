//! Issue 10: BigGAN-deep in the zoo. The loader takes the PyTorch port's
//! state dict (the real names and shapes of BigGAN-deep-128, with random
//! values) and refuses a wrong one naming the tensor; a reduced-width
//! BigGAN-deep-128 survives a safetensors round trip, decodes a batch in
//! [−1, 1], passes the gradient audit with respect to z, and drives a short
//! search of two zoo classifiers through ImageNet preprocessing.
//!
//! The expected layout is written here from the port's own definition
//! (`pytorch_pretrained_biggan/model.py` and `config.py` of
//! huggingface/pytorch-pretrained-BigGAN), not from gevaldi's
//! `BigGanConfig::tensor_shapes`, so that a mistake shared by gevaldi's
//! layout and its loader still fails here.

mod common;

use gevaldi::config::TrialId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use gevaldi::candle_core::{DType, Device, Shape, Tensor};
use gevaldi::candle_nn::var_builder::SimpleBackend;
use gevaldi::candle_nn::{Init, VarBuilder};
use gevaldi::preprocess::{Preprocess, Preprocessed};
use gevaldi::zoo::{
    self, BigGan, BigGanConfig, ResNet, ResNetDepth, SqueezeNet, SqueezeNetVersion,
};
use gevaldi::{Divergence, Generator, GradientAudit, LatentSupport, Search, SearchConfig};

type Layout = BTreeMap<String, Vec<usize>>;

/// The port's state dict for BigGAN-deep-128, name by name, transliterated
/// from its modules: `BigGANConfig()`'s defaults (config.py), `BigGAN`,
/// `Generator`, `GenBlock`, `SelfAttn` and `BigGANBatchNorm` (model.py).
/// `spectral_norm` turns a module's `weight` into `weight_orig` and adds
/// `weight_u` `[out]` and `weight_v` `[in·k·k]`.
fn port_layout_biggan_deep_128() -> Layout {
    // config.py: BigGANConfig() defaults.
    let (z_dim, channel_width, num_classes, n_stats) = (128, 128, 1000, 51);
    let attention_layer_position = 8;
    let layers = [
        (false, 16, 16),
        (true, 16, 16),
        (false, 16, 16),
        (true, 16, 8),
        (false, 8, 8),
        (true, 8, 4),
        (false, 4, 4),
        (true, 4, 2),
        (false, 2, 2),
        (true, 2, 1),
    ];
    let cond = z_dim * 2; // condition_vector_dim
    fn spectral(sd: &mut Layout, p: &str, weight: Vec<usize>, bias: bool) {
        sd.insert(format!("{p}.weight_u"), vec![weight[0]]);
        sd.insert(format!("{p}.weight_v"), vec![weight[1..].iter().product()]);
        if bias {
            sd.insert(format!("{p}.bias"), vec![weight[0]]);
        }
        sd.insert(format!("{p}.weight_orig"), weight);
    }
    // snconv2d: nn.Conv2d, weight [out, in, k, k]; snlinear: nn.Linear, [out, in].
    fn snconv2d(sd: &mut Layout, p: &str, cin: usize, cout: usize, k: usize, bias: bool) {
        spectral(sd, p, vec![cout, cin, k, k], bias)
    }
    fn snlinear(sd: &mut Layout, p: &str, fin: usize, fout: usize, bias: bool) {
        spectral(sd, p, vec![fout, fin], bias)
    }
    // BigGANBatchNorm(num_features, condition_vector_dim, n_stats, conditional).
    let batch_norm = |sd: &mut Layout, p: &str, n: usize, conditional: bool| {
        sd.insert(format!("{p}.running_means"), vec![n_stats, n]);
        sd.insert(format!("{p}.running_vars"), vec![n_stats, n]);
        if conditional {
            snlinear(sd, &format!("{p}.scale"), cond, n, false);
            snlinear(sd, &format!("{p}.offset"), cond, n, false);
        } else {
            sd.insert(format!("{p}.weight"), vec![n]);
            sd.insert(format!("{p}.bias"), vec![n]);
        }
    };
    let mut sd = Layout::new();
    // BigGAN.embeddings: nn.Linear(num_classes, z_dim, bias=False).
    sd.insert("embeddings.weight".into(), vec![z_dim, num_classes]);
    // Generator.
    let ch = channel_width;
    snlinear(&mut sd, "generator.gen_z", cond, 4 * 4 * 16 * ch, true);
    let mut modules = 0; // the index in generator.layers (nn.ModuleList)
    for (i, &(_, cin, cout)) in layers.iter().enumerate() {
        if i == attention_layer_position {
            // SelfAttn(ch * layer[1]): four bias-free 1x1 convs and gamma.
            let (c, p) = (ch * cin, format!("generator.layers.{modules}"));
            snconv2d(&mut sd, &format!("{p}.snconv1x1_theta"), c, c / 8, 1, false);
            snconv2d(&mut sd, &format!("{p}.snconv1x1_phi"), c, c / 8, 1, false);
            snconv2d(&mut sd, &format!("{p}.snconv1x1_g"), c, c / 2, 1, false);
            snconv2d(
                &mut sd,
                &format!("{p}.snconv1x1_o_conv"),
                c / 2,
                c,
                1,
                false,
            );
            sd.insert(format!("{p}.gamma"), vec![1]);
            modules += 1;
        }
        // GenBlock(ch * layer[1], ch * layer[2], ...), reduction_factor 4.
        let (cin, cout) = (ch * cin, ch * cout);
        let mid = cin / 4;
        let p = format!("generator.layers.{modules}");
        batch_norm(&mut sd, &format!("{p}.bn_0"), cin, true);
        snconv2d(&mut sd, &format!("{p}.conv_0"), cin, mid, 1, true);
        batch_norm(&mut sd, &format!("{p}.bn_1"), mid, true);
        snconv2d(&mut sd, &format!("{p}.conv_1"), mid, mid, 3, true);
        batch_norm(&mut sd, &format!("{p}.bn_2"), mid, true);
        snconv2d(&mut sd, &format!("{p}.conv_2"), mid, mid, 3, true);
        batch_norm(&mut sd, &format!("{p}.bn_3"), mid, true);
        snconv2d(&mut sd, &format!("{p}.conv_3"), mid, cout, 1, true);
        modules += 1;
    }
    // Generator.bn: BigGANBatchNorm(ch, conditional=False); conv_to_rgb.
    batch_norm(&mut sd, "generator.bn", ch, false);
    snconv2d(&mut sd, "generator.conv_to_rgb", ch, ch, 3, true);
    sd
}

/// `found` is the port's BigGAN-deep-128 state dict: every name with its
/// shape, 506 tensors, 50,388,609 parameters (`model.parameters()`: all
/// but the spectral norms' `weight_u`, `weight_v` and the batch norms'
/// running statistics, which are buffers).
fn assert_port_layout(found: &Layout, what: &str) {
    let expected = port_layout_biggan_deep_128();
    let missing: Vec<_> = expected
        .keys()
        .filter(|n| !found.contains_key(*n))
        .collect();
    let extra: Vec<_> = found
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter_map(|(n, s)| found.get(n).filter(|f| *f != s).map(|f| (n, s, f)))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{what}: missing {missing:?}; unexpected {extra:?}; wrong shapes (name, expected, found) {wrong:?}"
    );
    let params: usize = found
        .iter()
        .filter(|(n, _)| {
            !n.ends_with(".weight_u") && !n.ends_with(".weight_v") && !n.contains(".running_")
        })
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!((found.len(), params), (506, 50_388_609), "{what}");
}

/// A state dict in memory that records what a loader asks for.
struct Recording {
    tensors: HashMap<String, Tensor>,
    asked: Arc<Mutex<Layout>>,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> gevaldi::candle_core::Result<Tensor> {
        self.asked
            .lock()
            .unwrap()
            .insert(name.to_string(), s.dims().to_vec());
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            gevaldi::candle_core::bail!("shape mismatch for {name}: {:?} vs {s:?}", t.shape());
        }
        Ok(t)
    }
    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> gevaldi::candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            gevaldi::candle_core::Error::CannotFindTensor { path: name.into() }.bt()
        })?;
        t.to_dtype(dtype)?.to_device(dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

fn load(dict: HashMap<String, Tensor>, cfg: &BigGanConfig) -> Result<BigGan, String> {
    let vb = VarBuilder::from_tensors(dict, DType::F32, &common::device());
    BigGan::load(vb, cfg, 0.4).map_err(|e| e.to_string())
}

#[test]
fn the_loader_takes_the_ports_biggan_deep_128_state_dict_and_names_a_wrong_tensor() {
    let dev = common::device();
    let cfg = BigGanConfig::deep(128).unwrap();
    let dict = cfg.random_state_dict(1, &dev).unwrap();
    let layout: Layout = dict
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    assert_port_layout(&layout, "BigGanConfig::deep(128).random_state_dict");
    // The loader asks for every tensor of the port's layout, with its shape,
    // and for nothing else.
    let asked = Arc::new(Mutex::new(Layout::new()));
    let backend = Recording {
        tensors: dict.clone(),
        asked: asked.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    let g = BigGan::load(vb, &cfg, 0.4).unwrap();
    assert_port_layout(&asked.lock().unwrap(), "what BigGan::load reads");
    assert_eq!((g.latent_dim(), g.num_conditions()), (128, Some(1000)));

    let mut missing = dict.clone();
    missing.remove("generator.layers.3.conv_1.weight_v");
    let e = load(missing, &cfg).unwrap_err();
    assert!(e.contains("generator.layers.3.conv_1.weight_v"), "{e}");

    let mut wrong = dict.clone();
    wrong.insert(
        "generator.gen_z.weight_orig".into(),
        Tensor::zeros((100, 256), DType::F32, &dev).unwrap(),
    );
    let e = load(wrong, &cfg).unwrap_err();
    assert!(e.contains("gen_z.weight_orig"), "{e}");

    // u and v that are not the power iteration's give σ ≤ 0: refused.
    let mut flipped = dict;
    let u = flipped["generator.conv_to_rgb.weight_u"].neg().unwrap();
    flipped.insert("generator.conv_to_rgb.weight_u".into(), u);
    let e = load(flipped, &cfg).unwrap_err();
    assert!(
        e.contains("generator.conv_to_rgb.weight_u") && e.contains("spectral norm"),
        "{e}"
    );
}

#[test]
fn a_reduced_biggan_deep_128_round_trips_passes_the_audit_and_searches() {
    let dev = common::device();
    let cfg = BigGanConfig::reduced(128, 4, 10).unwrap();
    let dict = cfg.random_state_dict(2, &dev).unwrap();
    let path =
        std::env::temp_dir().join(format!("gevaldi-biggan-{}.safetensors", std::process::id()));
    gevaldi::candle_core::safetensors::save(&dict, &path).unwrap();
    let mut g = zoo::load_file(&path, "biggan", &dev, |vb| BigGan::load(vb, &cfg, 0.5)).unwrap();
    std::fs::remove_file(&path).unwrap();

    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    // Class 3, and a half-half mixture of classes 1 and 7.
    let mut c = vec![0f32; 20];
    c[3] = 1.0;
    c[10 + 1] = 0.5;
    c[10 + 7] = 0.5;
    let c = Tensor::from_vec(c, (2, 10), &dev).unwrap();
    // Random weights: standing statistics from a calibration batch first.
    let calibration = g.sample_prior(16, &mut rng, &dev).unwrap();
    let classes: Vec<usize> = (0..16).map(|i| i % 10).collect();
    let one_hot = gevaldi::model::one_hot(&classes, 10, &dev).unwrap();
    g.calibrate(&calibration, &one_hot).unwrap();
    let z = g.sample_prior(2, &mut rng, &dev).unwrap();
    assert!(
        z.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            <= 2.0 * 0.5
    );
    let x = g.decode(&z, Some(&c)).unwrap();
    assert_eq!(x.dims(), [2, 3, 128, 128]);
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(v.iter().any(|v| v.abs() > 1e-3), "a blank image");

    // Standing statistics keep the activations in tanh's range.
    let saturated = v.iter().filter(|v| v.abs() > 0.999).count();
    assert!(
        saturated < v.len() / 10,
        "{saturated} of {} saturated",
        v.len()
    );
    let report = GradientAudit::default()
        .generator("biggan", &g, &z, Some(&c))
        .unwrap();
    println!(
        "audit: worst |ratio - 1| = {:.1e}",
        report.worst_deviation()
    );

    // Two zoo classifiers behind ImageNet preprocessing ([-1, 1] -> 64x64).
    let pre = Preprocess::imagenet((-1.0, 1.0), 64);
    let (_, vm) = zoo::seeded_varmap(4, &dev, |vb| {
        SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 10)
    })
    .unwrap();
    let a = Preprocessed {
        inner: SqueezeNet::load(zoo::frozen(&vm, &dev), SqueezeNetVersion::V1_1, 10).unwrap(),
        preprocess: pre.clone(),
    };
    let (_, vm) = zoo::seeded_varmap(5, &dev, |vb| ResNet::load(vb, ResNetDepth::R18, 10)).unwrap();
    let b = Preprocessed {
        inner: ResNet::load(zoo::frozen(&vm, &dev), ResNetDepth::R18, 10).unwrap(),
        preprocess: pre,
    };
    let outcome = Search::new("biggan", &g)
        .classifier("squeezenet1_1", &a)
        .classifier("resnet18", &b)
        .config(
            SearchConfig::default()
                .steps(3)
                .batch(2)
                .lambda(0.0)
                .divergence(Divergence::js()),
        )
        .z0(z)
        .condition(c)
        .run(&dev)
        .unwrap();
    assert_eq!(outcome.steps_run, 3);
    assert!(outcome
        .samples
        .iter()
        .all(|s| s.divergence_after.is_finite()));
}

/// The names and shapes in a safetensors file's header.
fn safetensors_layout(path: &std::path::Path) -> Layout {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header).unwrap();
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).unwrap();
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let shape = info["shape"].as_array().unwrap();
            let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize);
            (name, shape.collect())
        })
        .collect()
}

/// Weights in `fixtures/imagenet/weights/biggan-deep-128.safetensors` are
/// the port's BigGAN-deep-128 (every tensor, no other), load, and generate
/// distinct images in [−1, 1] for two classes.
fn check_biggan_weights(path: &std::path::Path) {
    assert_port_layout(&safetensors_layout(path), &path.display().to_string());
    let dev = common::device();
    let cfg = BigGanConfig::deep(128).unwrap();
    let g = zoo::load_file(path, "biggan", &dev, |vb| BigGan::load(vb, &cfg, 0.4))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
    let z = g.sample_prior(2, &mut rng, &dev).unwrap();
    // A golden retriever (207) and a volcano (980).
    let c = gevaldi::model::one_hot(&[207, 980], 1000, &dev).unwrap();
    let x = g.decode(&z, Some(&c)).unwrap();
    assert_eq!(x.dims(), [2, 3, 128, 128]);
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        v.iter().all(|v| (-1.0..=1.0).contains(v)),
        "outside [-1, 1]"
    );
    let (first, second) = v.split_at(v.len() / 2);
    let spread = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(spread(first) > 0.1 && spread(second) > 0.1, "a blank image");
    assert_ne!(first, second, "two classes gave the same image");
}

/// The paper's ImageNet suite loads without its weights, and every trial is
/// skipped with a message naming the missing file. With BigGAN's weights
/// present, they are checked instead, and no trial is skipped for them.
#[test]
fn the_imagenet_suite_skips_without_its_weights_and_checks_them_when_present() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/imagenet/gevaldi.toml");
    let weights = path
        .with_file_name("weights")
        .join("biggan-deep-128.safetensors");
    if weights.exists() {
        println!("{} present: checking it", weights.display());
        check_biggan_weights(&weights);
        let suite = gevaldi::suite::Suite::load(&path, gevaldi::harness::Registry::new()).unwrap();
        let trials = suite.trials();
        assert_eq!(trials.len(), 5);
        for t in &trials {
            if let Some(why) = &t.skipped {
                assert!(!why.contains("generator `biggan`"), "{}: {why}", t.id);
            }
        }
        return;
    }
    let suite = gevaldi::suite::Suite::load(&path, gevaldi::harness::Registry::new()).unwrap();
    let trials = suite.trials();
    let names: Vec<String> = trials.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(
        names,
        [
            "pair::googlenet-vs-alexnet",
            "pair::low-capacity",
            "pair::high-capacity",
            "pair::different-capacity",
            "pair::different-capacity-reversed"
        ]
    );
    for t in &trials {
        assert!(t.ignored);
        let why = t.skipped.as_deref().unwrap();
        assert!(
            why.contains("biggan-deep-128.safetensors") && why.contains("optional"),
            "{why}"
        );
    }
    // Run anyway, it fails naming the file rather than passing.
    let outcome = suite.run_trial(&TrialId::pair("googlenet-vs-alexnet"), &|_, _| {});
    assert!(!outcome.as_ref().is_ok_and(|r| r.passed()));
    let line = summary_line(&outcome);
    assert!(line.contains("biggan-deep-128.safetensors"), "{line}");
    // The report lists every trial as skipped, with the reason (the error
    // record just written is not shown as a result).
    let written = suite.write_report().unwrap();
    let html = std::fs::read_to_string(&written.index).unwrap();
    assert_eq!(html.matches("data-verdict=\"skipped\"").count(), 5);
    assert_eq!(
        html.matches("Skipped: the weights of generator `biggan`")
            .count(),
        5
    );
}

/// A class-conditional generator in a `[[pair]]`: one seeded class per
/// sample, recorded with the trial.
#[test]
fn a_pair_over_a_conditional_generator_draws_a_class_per_sample() {
    let dir = std::env::temp_dir().join(format!("gevaldi-cond-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = gevaldi::zoo::mnist_fixtures_dir();
    let text = format!(
        "[search]\nbatch = 6\nsteps = 3\n\n[generator.cvae]\narch = \"mnist-cvae\"\nweights = \"{}\"\n\n\
         [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n[classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"{}\"\n\n\
         [[pair]]\nname = \"c\"\nmodels = [\"a\", \"b\"]\ngenerator = \"cvae\"\n",
        fixtures.join("cvae.safetensors").display(),
        fixtures.join("cnn_a.safetensors").display(),
        fixtures.join("cnn_b.safetensors").display(),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let suite = gevaldi::suite::Suite::load(&path, gevaldi::harness::Registry::new()).unwrap();
    let outcome = suite.run_trial(&TrialId::pair("c"), &|_, _| {});
    // The search ran (a new snapshot may fail under INSTA_UPDATE=no).
    let line = summary_line(&outcome);
    assert!(line.starts_with("pair::c: mean kl"), "{line}");
    let record = gevaldi::artifact::Record::read(&gevaldi::artifact::pair_record(
        &suite.artifact_dir(),
        "c",
    ))
    .unwrap();
    let gevaldi::artifact::Record::Pair(p) = record else {
        panic!("not a pair record")
    };
    let classes = p.conditions.unwrap();
    assert_eq!(classes.len(), 6);
    assert!(classes.iter().all(|&c| c < 10));
    assert!(classes.iter().any(|&c| c != classes[0]), "{classes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A trial's one-line summary, or its error's first line.
fn summary_line(
    outcome: &Result<gevaldi::suite::TrialReport, gevaldi::suite::TrialError>,
) -> String {
    match outcome {
        Ok(report) => report.to_string(),
        Err(error) => error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A reduced-width BigGAN-deep-128 over 10 classes at `truncation`, its
/// standing statistics calibrated on its own prior (random weights).
fn reduced_biggan(dev: &Device, truncation: f64) -> gevaldi::Result<BigGan> {
    let cfg = BigGanConfig::reduced(128, 4, 10).unwrap();
    let dict = cfg.random_state_dict(2, dev)?;
    let vb = VarBuilder::from_tensors(dict, DType::F32, dev);
    let mut g = BigGan::load(vb, &cfg, truncation)?;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let calibration = g.sample_prior(16, &mut rng, dev)?;
    let classes: Vec<usize> = (0..16).map(|i| i % 10).collect();
    g.calibrate(&calibration, &gevaldi::model::one_hot(&classes, 10, dev)?)?;
    Ok(g)
}

/// SqueezeNet 1.1 (`resnet = false`) or ResNet-18 over 10 classes, seeded,
/// behind ImageNet preprocessing of BigGAN's [-1, 1] images at 64x64.
fn imagenet_classifier(
    dev: &Device,
    resnet: bool,
) -> gevaldi::Result<Preprocessed<Box<dyn gevaldi::Classifier>>> {
    let inner: Box<dyn gevaldi::Classifier> = if resnet {
        let (_, vm) = zoo::seeded_varmap(5, dev, |vb| ResNet::load(vb, ResNetDepth::R18, 10))?;
        Box::new(ResNet::load(zoo::frozen(&vm, dev), ResNetDepth::R18, 10)?)
    } else {
        let (_, vm) = zoo::seeded_varmap(4, dev, |vb| {
            SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 10)
        })?;
        Box::new(SqueezeNet::load(
            zoo::frozen(&vm, dev),
            SqueezeNetVersion::V1_1,
            10,
        )?)
    };
    Ok(Preprocessed {
        inner,
        preprocess: Preprocess::imagenet((-1.0, 1.0), 64),
    })
}

/// The search does not keep BigGAN's latents in its truncation box
/// |z_i| ≤ 2t (its `log_prior` is the Gaussian part only); a pair's record
/// says how many coordinates ended outside, per sample, as counting its z
/// against ±2t gives (none at z0), and records the truncation; the trial's
/// report and the HTML report say so in words. Before, nothing did.
#[test]
fn a_pair_over_biggan_records_the_latents_that_left_its_truncation_box() {
    let dir = std::env::temp_dir().join(format!("gevaldi-biggan-box-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = "[search]\nbatch = 4\nsteps = 4\nlambda = 0.0\ndivergence = \"js\"\n\n\
                [generator.big]\n\n[classifier.squeezenet]\n\n[classifier.resnet]\n\n\
                [[pair]]\nname = \"box\"\nmodels = [\"squeezenet\", \"resnet\"]\ngenerator = \"big\"\n";
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let mut registry = gevaldi::harness::Registry::new();
    registry.generator("big", |dev| reduced_biggan(dev, 0.4));
    registry.classifier("squeezenet", |dev| imagenet_classifier(dev, false));
    registry.classifier("resnet", |dev| imagenet_classifier(dev, true));
    let suite = gevaldi::suite::Suite::load(&path, registry).unwrap();
    let report = suite
        .run_trial(&TrialId::pair("box"), &|_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let record_path = gevaldi::artifact::pair_record(&suite.artifact_dir(), "box");
    let gevaldi::artifact::Record::Pair(p) = gevaldi::artifact::Record::read(&record_path).unwrap()
    else {
        panic!("not a pair record")
    };
    let support = LatentSupport::TruncatedNormal {
        truncation: 0.4,
        cut: 2.0,
    };
    assert_eq!(p.latent_support, Some(support));
    // Counted by hand against ±2t, in the f32 the latents are held in.
    let bound = 2.0 * 0.4f32;
    let outside = |z: &[f32]| z.iter().filter(|v| v.abs() > bound).count();
    let mut total = 0;
    for (i, s) in p.samples.iter().enumerate() {
        assert_eq!(s.z.len(), 128);
        assert_eq!(outside(&s.z0), 0, "sample {i}: z0 outside the box");
        assert_eq!(s.outside_support, Some(outside(&s.z)), "sample {i}");
        total += outside(&s.z);
    }
    println!(
        "{total} of 4x128 latent coordinates left the box |z| <= {bound} after 4 steps: {:?}",
        p.samples
            .iter()
            .map(|s| s.outside_support.unwrap())
            .collect::<Vec<_>>()
    );
    assert!(
        total > 0,
        "no coordinate left the box: the test shows nothing"
    );
    let note = report
        .outside_support
        .as_ref()
        .expect("the trial's report has the note");
    assert_eq!(note.coordinates, total);
    assert_eq!(note, &p.outside_support().unwrap());
    let line = note.to_string();
    assert!(
        line.starts_with(&format!("{total} of 4×128 latent coordinates (in ")),
        "{line}"
    );
    assert!(
        line.contains(
            "samples) ended outside generator `big`'s truncation box |z| ≤ 0.8 (truncation \
             0.4); the images there are beyond what the generator was sampled on"
        ),
        "{line}"
    );
    // The one-line summary is as it was; the note is a line of its own.
    assert!(!report.to_string().contains("latent"), "{report}");
    let written = suite.write_report().unwrap();
    let html = std::fs::read_to_string(&written.index).unwrap();
    assert!(
        html.contains(
            "over <code>big</code> at truncation 0.4 (its prior&#39;s latents in the box |z| ≤ \
             0.8);"
        ),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<p class=\"outside-support\">Note: {total} of 4×128 latent coordinates"
        )),
        "{html}"
    );
    // A record written before the count and the support were recorded
    // still reads back, with neither.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("latent_support");
    for s in json["samples"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("outside_support");
    }
    let old: gevaldi::artifact::Record = serde_json::from_value(json).unwrap();
    let gevaldi::artifact::Record::Pair(old) = old else {
        panic!("not a pair record")
    };
    assert_eq!(old.latent_support, None);
    assert!(old.samples.iter().all(|s| s.outside_support.is_none()));
    assert_eq!(old.outside_support(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
