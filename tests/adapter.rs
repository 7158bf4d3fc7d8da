//! Users' own candle models as classifiers through `ModuleClassifier`,
//! audited as the search needs them; with the `candle-transformers`
//! feature, candle-transformers' EfficientNet (right gradients) and ResNet
//! (a max-pool without backward, refused with what to do).

mod common;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};
use gevaldi::model::sample_standard_normal;
use gevaldi::zoo::{self, MnistVae, MnistVaeConfig};
use gevaldi::{
    Activation, Classifier, Error, Generator, GradientAudit, ModuleClassifier, ModuleGenerator,
    NetBuilder, Search, SearchConfig,
};
use rand::SeedableRng;

fn images(n: usize, c: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    sample_standard_normal((n, c, size, size), &mut rng, &Device::Cpu).unwrap()
}

/// A small MNIST CNN written with candle-nn, as a user would, pooling with
/// `pool`.
fn user_cnn(
    vb: VarBuilder,
    pool: fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<candle_nn::Sequential> {
    let conv = candle_nn::conv2d(1, 8, 3, Conv2dConfig::default(), vb.pp("conv"))?;
    let fc = candle_nn::linear(8 * 13 * 13, 10, vb.pp("fc"))?;
    Ok(candle_nn::seq()
        .add(conv)
        .add(|x: &Tensor| x.relu())
        .add(move |x: &Tensor| pool(x))
        .add(|x: &Tensor| x.flatten_from(1))
        .add(fc))
}

fn right_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    zoo::max_pool2d(x, 2, 2, 0, false)
}

fn candle_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    x.max_pool2d(2)
}

/// A `candle_nn::Module` and a closure become classifiers; a right one
/// passes the audit and drives a search.
#[test]
fn a_users_candle_module_is_a_classifier_that_passes_the_audit() {
    let dev = Device::Cpu;
    let (_, varmap) = zoo::seeded_varmap(1, &dev, |vb| user_cnn(vb, right_pool)).unwrap();
    let module = user_cnn(zoo::frozen(&varmap, &dev), right_pool).unwrap();
    let x = images(2, 1, 28, 2);
    let expected = module.forward(&x).unwrap();
    let cnn = ModuleClassifier::new(module, zoo::mnist_class_names());
    assert_eq!(cnn.num_classes(), 10);
    let logits = cnn.logits(&x).unwrap();
    assert_eq!(logits.dims(), [2, 10]);
    assert_eq!(common::max_abs_diff(&logits, &expected), 0.0);
    let report = GradientAudit::default()
        .classifier("user-cnn", &cnn, &x)
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "user-cnn: worst |ratio - 1| = {:.1e}",
        report.worst_deviation()
    );

    // A closure over the same module, with a softmax-free linear head.
    let (_, head_vars) = zoo::seeded_varmap(3, &dev, |vb| candle_nn::linear(784, 10, vb)).unwrap();
    let head = candle_nn::linear(784, 10, zoo::frozen(&head_vars, &dev)).unwrap();
    let mlp = ModuleClassifier::from_fn(
        move |x: &Tensor| head.forward(&x.flatten_from(1)?),
        zoo::mnist_class_names(),
    );
    GradientAudit::default()
        .classifier("user-mlp", &mlp, &x)
        .unwrap_or_else(|e| panic!("{e}"));

    let vae = MnistVae::random(&MnistVaeConfig::default(), 4, &dev).unwrap();
    let outcome = Search::new("vae", &vae)
        .classifier("user-cnn", &cnn)
        .classifier("user-mlp", &mlp)
        .config(SearchConfig::default().steps(10).batch(4).lambda(0.0))
        .run(&dev)
        .unwrap();
    assert!(outcome.mean_divergence_after().is_finite());
    assert!(outcome.mean_divergence_after() > outcome.mean_divergence_before());
}

/// cnn_b's layers as a user writes them with gevaldi's layer vocabulary
/// (`NetBuilder`), from the fixture's weights.
fn users_net(vb: VarBuilder) -> candle_core::Result<gevaldi::Net> {
    let pad = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let conv1 = candle_nn::conv2d(1, 24, 3, pad, vb.pp("conv1"))?;
    let conv2 = candle_nn::conv2d(24, 48, 3, pad, vb.pp("conv2"))?;
    let fc1 = candle_nn::linear(48 * 7 * 7, 128, vb.pp("fc1"))?;
    let fc2 = candle_nn::linear(128, 10, vb.pp("fc2"))?;
    let mut b = gevaldi::NetBuilder::new();
    let mut x = b.input();
    for conv in [&conv1, &conv2] {
        x = b.conv2d(x, conv);
        x = b.act(x, gevaldi::Activation::Relu);
        x = b.max_pool2d(x, 2, 2, 0, false);
    }
    let x = b.flatten(x);
    let x = b.linear_layer(x, &fc1);
    let x = b.relu(x);
    let x = b.linear_layer(x, &fc2);
    Ok(b.build(x))
}

/// A classifier of one's own described with the layer vocabulary runs as
/// the built-in models do: the same logits as the zoo's cnn_b to the bit,
/// on gevaldi's CPU kernels, the audit passed; through
/// `ModuleClassifier::from_net` the search can walk its backward itself
/// (its step's recording is closed from z to the logits) and ends on the
/// zoo's cnn_b's z to the bit, as through `ModuleClassifier::new` (candle's
/// autograd around the same kernels) to f32 rounding.
#[test]
fn a_users_net_from_the_layer_vocabulary_runs_as_the_built_in_models_do() {
    let dev = Device::Cpu;
    let (cnn_a, cnn_b, vae) = common::fixture_models(&dev);
    let path = zoo::mnist_fixtures_dir().join("cnn_b.safetensors");
    let net = zoo::load_file(&path, "mine", &dev, users_net).unwrap();
    let z = sample_standard_normal((4, 8), &mut rand_chacha::ChaCha8Rng::seed_from_u64(5), &dev)
        .unwrap();
    let x = vae.decode(&z, None).unwrap();
    assert!(net.uses_cpu_engine(&x));
    let mine = ModuleClassifier::from_net(net.clone(), zoo::mnist_class_names());
    let autograd = ModuleClassifier::new(net, zoo::mnist_class_names());
    // The search walks the backward itself where every model says so
    // (`taped`) and the recording of a step reaches from z to the logits.
    assert!(mine.taped() && !autograd.taped());
    let z_var = candle_core::Var::from_tensor(&z).unwrap();
    let (logits, recording) = gevaldi::engine::record_while(|| {
        mine.logits(&vae.decode(z_var.as_tensor(), None).unwrap())
            .unwrap()
    });
    assert!(recording.closed(z_var.as_tensor(), &[&logits]));
    let want = cnn_b.logits(&x).unwrap();
    assert_eq!(common::max_abs_diff(&mine.logits(&x).unwrap(), &want), 0.0);
    GradientAudit::default()
        .classifier("mine", &mine, &x)
        .unwrap_or_else(|e| panic!("{e}"));
    GradientAudit::default()
        .chain("vae -> mine", &vae, &mine, &z, None)
        .unwrap_or_else(|e| panic!("{e}"));

    let config = SearchConfig::default().steps(20).batch(8);
    let run = |b: &dyn Classifier| {
        Search::new("vae", &vae)
            .classifier("cnn_a", &cnn_a)
            .classifier("b", b)
            .config(config.clone())
            .run(&dev)
            .unwrap()
    };
    let (zoo_run, mine_run, autograd_run) = (run(&cnn_b), run(&mine), run(&autograd));
    let zs = |o: &gevaldi::SearchOutcome| -> Vec<f32> {
        o.samples.iter().flat_map(|s| s.z.clone()).collect()
    };
    assert_eq!(zs(&mine_run), zs(&zoo_run));
    let (a, b) = (
        autograd_run.mean_divergence_after(),
        zoo_run.mean_divergence_after(),
    );
    assert!((a - b).abs() <= 1e-4 * b, "{a} against {b}");
}

/// A user's MNIST generator in the layer vocabulary: z [B, 16] -> linear
/// -> 32 × 7 × 7 -> ReLU -> transposed conv (4×4, stride 2) to 14 × 14 ->
/// batch norm -> LeakyReLU -> nearest upsampling to 28 × 28 -> 3×3 conv ->
/// 3×3 average pool -> gain -> sigmoid (images in [0, 1], as the MNIST
/// classifiers take).
fn users_generator(vb: VarBuilder) -> candle_core::Result<gevaldi::Net> {
    let fc = candle_nn::linear(16, 32 * 7 * 7, vb.pp("fc"))?;
    let cfg = ConvTranspose2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let up = candle_nn::conv_transpose2d(32, 16, 4, cfg, vb.pp("up"))?;
    // A batch norm's scale in [0.5, 1.5] and shift in [-0.1, 0.1].
    let scale = vb
        .get((16, 1), "bn.gamma")?
        .flatten_all()?
        .affine(0.5, 1.0)?;
    let shift = vb
        .get((16, 1), "bn.beta")?
        .flatten_all()?
        .affine(0.1, 0.0)?;
    let pad = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let out = candle_nn::conv2d(16, 1, 3, pad, vb.pp("out"))?;
    let mut b = NetBuilder::new();
    let z = b.input();
    let h = b.linear_layer(z, &fc);
    let h = b.reshape(h, &[32, 7, 7]);
    let h = b.relu(h);
    let h = b.conv_transpose2d(h, &up);
    let h = b.affine(h, &scale, &shift);
    let h = b.act(h, Activation::LeakyRelu(0.2));
    let h = b.upsample_nearest2d(h, 2);
    let h = b.conv2d(h, &out);
    let h = b.avg_pool2d(h, 3, 1, 1);
    // Contrast: random weights give images near a flat grey.
    let (gain, offset) = (
        Tensor::new(&[12f32], vb.device())?,
        Tensor::new(&[-1f32], vb.device())?,
    );
    let h = b.affine(h, &gain, &offset);
    let x = b.act(h, Activation::Sigmoid);
    Ok(b.build(x))
}

/// A ShuffleNetV2-style classifier of one's own on MNIST: a strided stem,
/// then a unit that splits its channels in halves (`narrow`), runs one
/// half through 1×1, depthwise 3×3 and 1×1 convs with batch norms, joins
/// the halves and shuffles the channels (`channel_shuffle`), as
/// torchvision's `InvertedResidual` at stride 1.
fn users_shufflenet(vb: VarBuilder) -> candle_core::Result<gevaldi::Net> {
    let stem_cfg = Conv2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let stem = candle_nn::conv2d_no_bias(1, 8, 3, stem_cfg, vb.pp("stem"))?;
    let pw1 = candle_nn::conv2d_no_bias(4, 4, 1, Default::default(), vb.pp("pw1"))?;
    let dw_cfg = Conv2dConfig {
        padding: 1,
        groups: 4,
        ..Default::default()
    };
    let dw = candle_nn::conv2d_no_bias(4, 4, 3, dw_cfg, vb.pp("dw"))?;
    let pw2 = candle_nn::conv2d_no_bias(4, 4, 1, Default::default(), vb.pp("pw2"))?;
    let fc = candle_nn::linear(8, 10, vb.pp("fc"))?;
    // Batch norms' scales in [0.5, 1.5], shifts in [-0.1, 0.1]. (The
    // stem's shifts also keep its ReLU's inputs off 0 over the decoded
    // images' blank background, where a conv without bias gives ~1e-6: a
    // kink there fails the finite differences of a right gradient.)
    let norm = |name: &str, c: usize| -> candle_core::Result<(Tensor, Tensor)> {
        let v = vb.pp(name);
        let scale = v.get((c, 1), "gamma")?.flatten_all()?.affine(0.5, 1.0)?;
        Ok((
            scale,
            v.get((c, 1), "beta")?.flatten_all()?.affine(0.1, 0.0)?,
        ))
    };
    let mut b = NetBuilder::new();
    let x = b.input();
    let x = b.conv2d(x, &stem);
    let (scale, shift) = norm("bn_stem", 8)?;
    let x = b.affine(x, &scale, &shift);
    let x = b.relu(x);
    let (left, right) = (b.narrow(x, 1, 0, 4), b.narrow(x, 1, 4, 4));
    let mut h = right;
    for (i, conv) in [&pw1, &dw, &pw2].into_iter().enumerate() {
        h = b.conv2d(h, conv);
        let (scale, shift) = norm(&format!("bn{i}"), 4)?;
        h = b.affine(h, &scale, &shift);
        if i != 1 {
            h = b.relu(h);
        }
    }
    let x = b.concat(&[left, h]);
    let x = b.channel_shuffle(x, 2);
    let x = b.adaptive_avg_pool2d(x, 1, 1);
    let x = b.flatten(x);
    let x = b.linear_layer(x, &fc);
    Ok(b.build(x))
}

/// A classifier of one's own from the layer vocabulary (`load`, seeded
/// weights) runs on the CPU engine, agrees with candle's ops, passes the
/// gradient audit alone and from z through the VAE (at its decoded
/// samples for `seed`'s latents), and has the search walk its backward
/// itself (the recording of a step is closed from z to the logits).
fn check_users_classifier(load: fn(VarBuilder) -> candle_core::Result<gevaldi::Net>, seed: u64) {
    let dev = Device::Cpu;
    let (_, _, vae) = common::fixture_models(&dev);
    let (_, varmap) = zoo::seeded_varmap(seed, &dev, load).unwrap();
    let net = load(zoo::frozen(&varmap, &dev)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let z = sample_standard_normal((4, 8), &mut rng, &dev).unwrap();
    let x = vae.decode(&z, None).unwrap();
    assert!(net.uses_cpu_engine(&x));
    let diff = common::max_abs_diff(&net.forward(&x).unwrap(), &net.forward_candle(&x).unwrap());
    assert!(diff < 1e-5, "engine against candle's ops: {diff}");
    let mine = ModuleClassifier::from_net(net, zoo::mnist_class_names());
    assert!(mine.taped());
    GradientAudit::default()
        .classifier("mine", &mine, &x)
        .unwrap_or_else(|e| panic!("{e}"));
    GradientAudit::default()
        .chain("vae -> mine", &vae, &mine, &z, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let z_var = candle_core::Var::from_tensor(&z).unwrap();
    let (logits, recording) = gevaldi::engine::record_while(|| {
        mine.logits(&vae.decode(z_var.as_tensor(), None).unwrap())
            .unwrap()
    });
    assert!(recording.closed(z_var.as_tensor(), &[&logits]));
}

/// A classifier of one's own with channel splits and shuffles
/// (`NetBuilder::narrow`, `channel_shuffle`) runs as the built-in models
/// do ([`check_users_classifier`]).
#[test]
fn a_users_shufflenet_from_the_layer_vocabulary_passes_the_audit() {
    check_users_classifier(users_shufflenet, 4);
}

/// A small vision transformer of one's own on MNIST, as torchvision's
/// `VisionTransformer` (pre-norm blocks): 7×7 patches as the rows of a
/// `[B, D, 16, 1]` value, a class token in front (`constant`,
/// `concat_dim` along dim 2), a position embedding, two heads per block
/// from narrowed channels, and the class token's row to the head
/// (`narrow` along dim 2).
fn users_vit(vb: VarBuilder) -> candle_core::Result<gevaldi::Net> {
    const D: usize = 16;
    let patch_cfg = Conv2dConfig {
        stride: 7,
        ..Default::default()
    };
    let patch = candle_nn::conv2d(1, D, 7, patch_cfg, vb.pp("patch"))?;
    let class_token = (vb.get((1, D, 1, 1), "class_token")? * 0.1)?;
    let position = (vb.get((1, D, 17, 1), "position")? * 0.1)?;
    let norm = |v: VarBuilder| -> candle_core::Result<(Tensor, Tensor)> {
        let w = (v.get(D, "weight")?.affine(0.2, 1.0))?;
        Ok((w, v.get(D, "bias")?.affine(0.1, 0.0)?))
    };
    let mut b = NetBuilder::new();
    let x = b.input();
    let x = b.conv2d(x, &patch);
    let x = b.reshape(x, &[D, 16, 1]);
    let token = b.constant(&class_token);
    let x = b.concat_dim(&[token, x], 2);
    let pos = b.constant(&position);
    let mut x = b.add(x, pos);
    for i in 0..2 {
        let v = vb.pp(format!("block{i}"));
        let (w, bias) = norm(v.pp("ln1"))?;
        let h = b.layer_norm(x, &w, &bias, 1e-6);
        let mut qkv = Vec::new();
        for name in ["q", "k", "v"] {
            qkv.push(b.linear_layer(h, &candle_nn::linear(D, D, v.pp(name))?));
        }
        let (q, k, vv) = (qkv[0], qkv[1], qkv[2]);
        let heads: Vec<_> = [0, 8]
            .into_iter()
            .map(|at| {
                let [q, k, vv] = [q, k, vv].map(|t| b.narrow(t, 1, at, 8));
                b.attention(q, k, vv, 1.0 / 8f32.sqrt())
            })
            .collect();
        let h = b.concat(&heads);
        let h = b.linear_layer(h, &candle_nn::linear(D, D, v.pp("out"))?);
        x = b.add(x, h);
        let (w, bias) = norm(v.pp("ln2"))?;
        let h = b.layer_norm(x, &w, &bias, 1e-6);
        let h = b.linear_layer(h, &candle_nn::linear(D, 2 * D, v.pp("mlp1"))?);
        let h = b.act(h, Activation::GeluErf);
        let h = b.linear_layer(h, &candle_nn::linear(2 * D, D, v.pp("mlp2"))?);
        x = b.add(x, h);
    }
    let (w, bias) = norm(vb.pp("ln"))?;
    let x = b.layer_norm(x, &w, &bias, 1e-6);
    let x = b.narrow(x, 2, 0, 1);
    let x = b.flatten(x);
    let x = b.linear_layer(x, &candle_nn::linear(D, 10, vb.pp("head"))?);
    Ok(b.build(x))
}

/// A vision transformer of one's own (class token, position embedding,
/// heads from narrowed channels) runs as the built-in models do
/// ([`check_users_classifier`]).
#[test]
fn a_users_vision_transformer_from_the_layer_vocabulary_passes_the_audit() {
    check_users_classifier(users_vit, 5);
}

/// A generator built from the layer vocabulary (`ModuleGenerator::from_net`)
/// runs on the CPU engine, agrees with candle's ops, passes the audits
/// (its decoder, and from z through a classifier), has the search walk its
/// backward itself (the recording of a step is closed from z to the
/// logits), and drives a search that finds disagreement, to the same z as
/// under candle's autograd (`ModuleGenerator::new`).
#[test]
fn a_users_generator_from_the_layer_vocabulary_drives_a_search() {
    let dev = Device::Cpu;
    let (cnn_a, cnn_b, _) = common::fixture_models(&dev);
    let (_, varmap) = zoo::seeded_varmap(3, &dev, users_generator).unwrap();
    let net = users_generator(zoo::frozen(&varmap, &dev)).unwrap();
    let z = sample_standard_normal(
        (4, 16),
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
        &dev,
    )
    .unwrap();
    assert!(net.uses_cpu_engine(&z));
    let mine = ModuleGenerator::from_net(net.clone(), 16);
    let autograd = ModuleGenerator::new(net.clone(), 16);
    assert!(mine.taped() && !autograd.taped());
    let x = mine.decode(&z, None).unwrap();
    assert_eq!(x.dims(), [4, 1, 28, 28]);
    let reference = net.forward_candle(&z).unwrap();
    let diff = common::max_abs_diff(&x, &reference);
    assert!(diff < 1e-5, "engine against candle's ops: {diff}");
    let audit = GradientAudit::default();
    audit
        .generator("mine", &mine, &z, None)
        .unwrap_or_else(|e| panic!("{e}"));
    audit
        .chain("mine -> cnn_a", &mine, &cnn_a, &z, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let z_var = candle_core::Var::from_tensor(&z).unwrap();
    let (logits, recording) = gevaldi::engine::record_while(|| {
        cnn_a
            .logits(&mine.decode(z_var.as_tensor(), None).unwrap())
            .unwrap()
    });
    assert!(recording.closed(z_var.as_tensor(), &[&logits]));

    let config = SearchConfig::default().steps(30).batch(8);
    let run = |g: &dyn Generator| {
        Search::new("mine", g)
            .classifier("cnn_a", &cnn_a)
            .classifier("cnn_b", &cnn_b)
            .config(config.clone())
            .run(&dev)
            .unwrap()
    };
    let (taped, candle) = (run(&mine), run(&autograd));
    let (before, after) = (
        taped.mean_divergence_before(),
        taped.mean_divergence_after(),
    );
    println!("mean divergence {before} -> {after}");
    assert!(
        after > 1.5 * before,
        "the search found no disagreement: {before} -> {after}"
    );
    let c = candle.mean_divergence_after();
    assert!((after - c).abs() <= 1e-4 * c, "{after} against {c}");
}

/// The same generator registered from Rust for a `[generator.mine]` table
/// without `arch`: the harness's checks before the search (the audits of
/// the generator, of each classifier from z through it, its output range
/// at prior samples) accept it, and the pair passes its `min_lift`.
#[test]
fn a_registered_vocabulary_generator_runs_a_pair_trial() {
    use gevaldi::config::TrialId;
    use gevaldi::harness::Registry;
    use gevaldi::suite::Suite;
    let dir = tempfile::tempdir().unwrap();
    let fixture = |f: &str| zoo::mnist_fixtures_dir().join(f).display().to_string();
    let text = format!(
        "[search]\nbatch = 16\nsteps = 30\n\n[generator.mine]\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
         [classifier.cnn_b]\narch = \"mnist-cnn-b\"\nweights = \"{}\"\n\n\
         [[pair]]\nname = \"p\"\nmodels = [\"cnn_a\", \"cnn_b\"]\ngenerator = \"mine\"\n\
         min_lift = 3.0\n",
        fixture("cnn_a.safetensors"),
        fixture("cnn_b.safetensors"),
    );
    let path = dir.path().join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let mut registry = Registry::new();
    registry.generator("mine", |dev| {
        let (_, varmap) = zoo::seeded_varmap(3, dev, users_generator)?;
        Ok(ModuleGenerator::from_net(
            users_generator(zoo::frozen(&varmap, dev))?,
            16,
        ))
    });
    let suite = Suite::load(&path, registry).unwrap();
    let report = suite
        .run_trial(&TrialId::pair("p"), &|_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    // Its thresholds pass (its snapshot is new in a fresh folder).
    println!("{}", report.result());
    assert!(report.failures.is_empty(), "{:?}", report.failure_message());
    let gevaldi::suite::Figures::Pair { lift, .. } = report.figures else {
        panic!("a pair's figures")
    };
    assert!(lift > 3.0, "lift {lift}");
}

/// The same module pooling with candle's `max_pool2d` (its gradient is a
/// quarter of the right one) fails the audit, which says what to use.
#[test]
fn a_module_on_candles_max_pool2d_fails_the_audit_with_the_fix() {
    let dev = Device::Cpu;
    let (_, varmap) = zoo::seeded_varmap(1, &dev, |vb| user_cnn(vb, candle_pool)).unwrap();
    let module = user_cnn(zoo::frozen(&varmap, &dev), candle_pool).unwrap();
    let cnn = ModuleClassifier::new(module, zoo::mnist_class_names());
    let err = GradientAudit::default()
        .classifier("user-cnn", &cnn, &images(2, 1, 28, 2))
        .unwrap_err();
    match &err {
        Error::GradientMismatch { ratio, .. } => {
            assert!((ratio - 0.25).abs() < 0.01, "ratio {ratio}")
        }
        other => panic!("expected a gradient mismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("gevaldi::zoo::max_pool2d"), "{msg}");
    println!("{msg}");
}

/// Logits of the wrong width are refused when the classifier is used.
#[test]
fn a_module_with_the_wrong_number_of_classes_is_refused() {
    let dev = Device::Cpu;
    let (_, varmap) = zoo::seeded_varmap(1, &dev, |vb| user_cnn(vb, right_pool)).unwrap();
    let module = user_cnn(zoo::frozen(&varmap, &dev), right_pool).unwrap();
    let cnn = ModuleClassifier::new(module, ["even", "odd"]);
    let err = cnn.logits(&images(3, 1, 28, 2)).unwrap_err().to_string();
    assert!(err.contains("[3, 10]"), "{err}");
    assert!(err.contains("expected logits [3, 2]"), "{err}");
}

#[cfg(feature = "candle-transformers")]
mod candle_transformers_models {
    use super::*;
    use gevaldi::candle_transformers::models::{efficientnet, resnet};

    /// EfficientNet-B0 from candle-transformers, seeded random weights:
    /// its input gradients are right.
    #[test]
    fn efficientnet_b0_passes_the_audit() {
        let dev = Device::Cpu;
        let build = |vb: VarBuilder| {
            efficientnet::EfficientNet::new(vb, efficientnet::MBConvConfig::b0(), 10)
        };
        let (_, varmap) = zoo::seeded_varmap(5, &dev, build).unwrap();
        let model = build(zoo::frozen(&varmap, &dev)).unwrap();
        let classifier = ModuleClassifier::new(model, zoo::imagenet_class_names(10));
        // 32 × 32 is the smallest input its five stride-2 stages take.
        let x = images(1, 3, 32, 6);
        let logits = classifier.logits(&x).unwrap();
        assert_eq!(logits.dims(), [1, 10]);
        let report = GradientAudit::default()
            .classifier("efficientnet-b0", &classifier, &x)
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "efficientnet-b0: worst |ratio - 1| = {:.1e}",
            report.worst_deviation()
        );
    }

    /// ResNet-18 from candle-transformers pools with
    /// `max_pool2d_with_stride(3, 2)`, which has no backward in candle 0.11:
    /// the audit refuses it and names gevaldi's ResNet and max-pool.
    #[test]
    fn candle_transformers_resnet18_is_refused_with_what_to_do() {
        let dev = Device::Cpu;
        // A `Func` borrows its VarBuilder's lifetime: only the weights are kept.
        let (_, varmap) =
            zoo::seeded_varmap(7, &dev, |vb| resnet::resnet18(10, vb).map(drop)).unwrap();
        let model = resnet::resnet18(10, zoo::frozen(&varmap, &dev)).unwrap();
        let classifier = ModuleClassifier::new(model, zoo::imagenet_class_names(10));
        let x = images(2, 3, 64, 8);
        assert_eq!(classifier.logits(&x).unwrap().dims(), [2, 10]);
        let err = GradientAudit::default()
            .classifier("candle-resnet18", &classifier, &x)
            .unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        assert!(
            matches!(&err, Error::Model { model, .. } if model == "candle-resnet18"),
            "{msg}"
        );
        assert!(msg.contains("gevaldi::zoo::max_pool2d"), "{msg}");
        assert!(msg.contains("zoo::ResNet"), "{msg}");
    }
}
