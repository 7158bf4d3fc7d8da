//! Issue 9: the catalogue of bad inputs. Each case builds one mistake a
//! user makes (in `gevaldi.toml`, a weights file, an IDX file, a hierarchy,
//! a model) and checks that gevaldi answers with an error that names the
//! file (with line and key where there is one) and what was expected; that
//! nothing panics; and that no trial passes. The README's "Mistakes and
//! what they get" lists the same cases.

mod common;

use std::path::{Path, PathBuf};

use common::CaseDir;
use gevaldi::candle_core::{DType, Device, Tensor};
use gevaldi::config::TrialId;
use gevaldi::harness::Registry;
use gevaldi::hierarchy::Hierarchy;
use gevaldi::suite::Suite;
use gevaldi::zoo::{MnistCnn, MnistCnnConfig};
use gevaldi::{Classifier, Generator};

fn fixture(name: &str) -> String {
    gevaldi::zoo::mnist_fixtures_dir()
        .join(name)
        .display()
        .to_string()
}

/// A valid config with a quick pair `p`, with `extra` appended and
/// `replace` applied.
fn config_text(extra: &str, replace: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[search]\nbatch = 4\nsteps = 2\n\n\
         [generator.vae]\narch = \"mnist-vae\"\nweights = \"{}\"\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
         [classifier.cnn_b]\narch = \"mnist-cnn-b\"\nweights = \"{}\"\n\n\
         [[pair]]\nname = \"p\"\nmodels = [\"cnn_a\", \"cnn_b\"]\ngenerator = \"vae\"\n{extra}",
        fixture("vae.safetensors"),
        fixture("cnn_a.safetensors"),
        fixture("cnn_b.safetensors"),
    );
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The config of [`config_text`] with a third classifier, `bag_0`, and a
/// `[[tournament]]` of the three over the cVAE (from line 26), `extra`
/// appended to it (the cVAE's table comes after).
fn tournament_text(extra: &str) -> String {
    config_text(
        &format!(
            "\n[classifier.bag_0]\narch = \"mnist-mlp\"\nweights = \"{}\"\n\n\
             [[tournament]]\nname = \"t\"\nmodels = [\"cnn_a\", \"cnn_b\", \"bag_0\"]\n\
             generator = \"cvae\"\n{extra}\n\
             [generator.cvae]\narch = \"mnist-cvae\"\nweights = \"{}\"\n",
            fixture("bag_0.safetensors"),
            fixture("cvae.safetensors")
        ),
        &[],
    )
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The config's load error, if any.
fn load(dir: &Path, text: &str) -> Result<(), String> {
    let path = write(dir, "gevaldi.toml", text);
    gevaldi::config::load(&path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs the pair `pair` of the config; Ok only when it passed.
fn trial(dir: &Path, text: &str, registry: Registry, pair: &str) -> Result<(), String> {
    run(dir, text, registry, TrialId::pair(pair))
}

/// Runs the trial `id` of the config; Ok only when it passed.
fn run(dir: &Path, text: &str, registry: Registry, id: TrialId) -> Result<(), String> {
    let path = write(dir, "gevaldi.toml", text);
    let suite = Suite::load(&path, registry).map_err(|e| e.to_string())?;
    match suite.run_trial(&id, &|_, _| {}) {
        Ok(report) => match report.failure_message() {
            None => Ok(()),
            Some(message) => Err(message),
        },
        Err(error) => Err(error.to_string()),
    }
}

/// A pair trial whose `weights` of cnn_b is the file `bytes`.
fn with_weights(dir: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    let path = write(dir, "cnn_b.safetensors", bytes);
    let text = config_text(
        "",
        &[(&fixture("cnn_b.safetensors"), &path.display().to_string())],
    );
    trial(dir, &text, Registry::new(), "p")
}

fn safetensors_bytes(tensors: &[(&str, Tensor)], dir: &Path) -> Vec<u8> {
    let path = dir.join("built.safetensors");
    let map: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    gevaldi::candle_core::safetensors::save(&map, &path).unwrap();
    std::fs::read(path).unwrap()
}

fn hierarchy(dir: &Path, classes: &str, edges: &str) -> Result<(), String> {
    let c = write(dir, "classes.tsv", classes);
    let e = write(dir, "edges.tsv", edges);
    Hierarchy::load(&c, &e, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

const CLASSES: &str = "index\twnid\tname\n0\ta\tA\n1\tb\tB\n";

fn idx_images(count: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [count, 28, 28] {
        b.extend(d.to_be_bytes());
    }
    b.extend(vec![0u8; count as usize * 784]);
    b
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend(count.to_be_bytes());
    b.extend(vec![0u8; count as usize]);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A classifier that emits NaN logits.
struct NanClassifier(Vec<String>);

impl Classifier for NanClassifier {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        // NaN, yet connected to x so that a gradient exists.
        let b = x.dim(0)?;
        let nan = Tensor::full(f32::NAN, (b, 10), x.device())?;
        nan.broadcast_add(&x.flatten_from(1)?.sum_keepdim(1)?)
    }
    fn class_names(&self) -> &[String] {
        &self.0
    }
}

/// A generator whose 28×28 samples are NaN (connected to z, so that a
/// gradient exists).
struct NanGenerator;

impl Generator for NanGenerator {
    fn latent_dim(&self) -> usize {
        8
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let b = z.dim(0)?;
        let nan = Tensor::full(f32::NAN, (b, 784), z.device())?;
        nan.broadcast_add(&z.sum_keepdim(1)?)?
            .reshape((b, 1, 28, 28))
    }
}

/// A generator that says it is conditional on 0 classes.
struct NoClassGenerator;

impl Generator for NoClassGenerator {
    fn latent_dim(&self) -> usize {
        8
    }
    fn num_conditions(&self) -> Option<usize> {
        Some(0)
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        z.sum_keepdim(1)?
            .broadcast_as((z.dim(0)?, 784))?
            .reshape((z.dim(0)?, 1, 28, 28))
    }
}

/// A generator whose samples are `[B, 100]`, which no MNIST classifier
/// takes.
struct WideGenerator;

impl Generator for WideGenerator {
    fn latent_dim(&self) -> usize {
        8
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let w = Tensor::ones((8, 100), DType::F32, z.device())?;
        z.matmul(&w)
    }
}

/// cnn_b's logits made probabilities (a softmax left at the end of a
/// model of one's own), or made f16.
struct Wrapped(MnistCnn, fn(Tensor) -> gevaldi::candle_core::Result<Tensor>);

impl Classifier for Wrapped {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        (self.1)(self.0.logits(x)?)
    }
    fn class_names(&self) -> &[String] {
        self.0.class_names()
    }
}

/// The pair `p` of cnn_a against cnn_b's logits passed through `f`,
/// registered as `mine`.
fn cnn_b_through(
    d: &Path,
    f: fn(Tensor) -> gevaldi::candle_core::Result<Tensor>,
) -> Result<(), String> {
    let text = config_text("\n[classifier.mine]\n", &[("\"cnn_b\"]", "\"mine\"]")]);
    let mut r = Registry::new();
    r.classifier("mine", move |dev| {
        let vb = gevaldi::candle_nn::VarBuilder::from_tensors(
            gevaldi::candle_core::safetensors::load(fixture("cnn_b.safetensors"), dev)?,
            DType::F32,
            dev,
        );
        Ok(Wrapped(MnistCnn::load(vb, &MnistCnnConfig::cnn_b())?, f))
    });
    trial(d, &text, r, "p")
}

/// A generator of 28×28 digits conditional on 12 classes, beside the
/// fixtures' 10-class classifiers.
struct TwelveClassGenerator;

impl Generator for TwelveClassGenerator {
    fn latent_dim(&self) -> usize {
        8
    }
    fn num_conditions(&self) -> Option<usize> {
        Some(12)
    }
    fn decode(&self, z: &Tensor, c: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let zc = Tensor::cat(&[z, c.expect("a condition")], 1)?;
        let w = Tensor::ones((20, 784), DType::F32, z.device())?;
        gevaldi::candle_nn::ops::sigmoid(&(zc.matmul(&w)? / 20.0)?)?.reshape((z.dim(0)?, 1, 28, 28))
    }
}

/// A binary classifier with one logit (a sigmoid's, as PyTorch's
/// `BCEWithLogitsLoss` trains), connected to x.
struct OneLogit(Vec<String>, f64);

impl Classifier for OneLogit {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        x.flatten_from(1)?.mean_keepdim(1)? * self.1
    }
    fn class_names(&self) -> &[String] {
        &self.0
    }
}

type Check = Box<dyn Fn(&Path) -> Result<(), String>>;

/// (what, substrings the error must contain, the check).
fn catalogue() -> Vec<(&'static str, Vec<&'static str>, Check)> {
    let mut cases: Vec<(&'static str, Vec<&'static str>, Check)> = Vec::new();
    let mut add = |what, needles: Vec<&'static str>, f: Check| cases.push((what, needles, f));

    // === gevaldi.toml ===
    add(
        "config: TOML syntax error",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:17:8: invalid TOML: unclosed array table, expected `]`$"],
        Box::new(|d| load(d, &config_text("", &[("[[pair]]", "[[pair]")]))),
    );
    add(
        "config: unknown key (a typo)",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:3:1: `search.step`: unknown key, expected one of `steps`, `lr`, `optimizer`, `lambda`, `batch`, `seed`, `divergence`, `early_stop`$"],
        Box::new(|d| load(d, &config_text("", &[("steps = 2", "step = 2")]))),
    );
    add(
        "config: wrong type",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:3:9: `search.steps`: expected an integer >= 1, found string$"],
        Box::new(|d| load(d, &config_text("", &[("steps = 2", "steps = \"many\"")]))),
    );
    add(
        "config: value out of range",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:4:6: `search.lr`: -1 is out of range: expected a finite number > 0$"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("steps = 2", "steps = 2\nlr = -1.0")]),
            )
        }),
    );
    add(
        "config: truncation on a generator that takes none",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:7:1: `generator.vae.truncation`: `mnist-vae` takes no truncation (only `biggan-deep-128`, `biggan-deep-256`, `biggan-deep-512` do)$"],
        Box::new(|d| {
            load(
                d,
                &config_text(
                    "",
                    &[("arch = \"mnist-vae\"", "arch = \"mnist-vae\"\ntruncation = 0.5")],
                ),
            )
        }),
    );
    add(
        "config: pair names an unknown classifier",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:19:20: `pair[0].models[1]`: unknown classifier `cnn_c`: declared classifiers are `cnn_a`, `cnn_b`$"],
        Box::new(|d| load(d, &config_text("", &[("\"cnn_b\"]", "\"cnn_c\"]")]))),
    );
    add(
        "config: pair names an unknown generator",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:20:13: `pair[0].generator`: unknown generator `gan`: declared generators are `vae`$"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("generator = \"vae\"", "generator = \"gan\"")]),
            )
        }),
    );
    add(
        "config: pair with one model",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:19:10: `pair[0].models`: expected 2 or more classifiers to compare, found 1$"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("[\"cnn_a\", \"cnn_b\"]", "[\"cnn_a\"]")]),
            )
        }),
    );
    add(
        "config: duplicate pair names",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:23:8: `pair[1].name`: duplicate pair name `p` (first at line 17)$"],
        Box::new(|d| {
            load(
                d,
                &config_text(
                    "\n[[pair]]\nname = \"p\"\nmodels = [\"cnn_b\", \"cnn_a\"]\ngenerator = \"vae\"\n",
                    &[],
                ),
            )
        }),
    );
    add(
        "config: NaN threshold",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:21:18: `pair[0].max_divergence`: NaN is out of range: expected a finite number >= 0$"],
        Box::new(|d| load(d, &config_text("max_divergence = nan\n", &[]))),
    );
    // Issue 18: a [[tournament]]'s keys, at the key.
    add(
        "config: tournament of two models",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:28:10: `tournament[0].models`: expected 3 or more classifiers to rank, found 2 (for two, use a [[pair]])$"],
        Box::new(|d| {
            let text = tournament_text("").replacen(", \"bag_0\"]", "]", 1);
            load(d, &text)
        }),
    );
    add(
        "config: tournament champion not among its models",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:30:12: `tournament[0].champion`: `bag_1` is not a model of this tournament: expected one of `cnn_a`, `cnn_b`, `bag_0`$"],
        Box::new(|d| load(d, &tournament_text("champion = \"bag_1\"\n"))),
    );
    add(
        "config: tournament max_rank beyond the models",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:30:22: `tournament[0].max_rank.cnn_a`: 4 is out of range: expected a rank from 1 to 3 (the number of models)$"],
        Box::new(|d| load(d, &tournament_text("max_rank = { cnn_a = 4 }\n"))),
    );
    add(
        "config: tournament min_win_rate above 1",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:30:61: `tournament[0].min_win_rate[0].min`: 1.5 is out of range: expected a fraction in [0, 1]$"],
        Box::new(|d| {
            load(
                d,
                &tournament_text(
                    "min_win_rate = [{ model = \"cnn_a\", against = \"bag_0\", min = 1.5 }]\n",
                ),
            )
        }),
    );
    add(
        "config: `preprocess` on a generator of one's own (it was taken for a key of its own and silently not applied)",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:23:1: `generator.mine.preprocess`: `preprocess` is a classifier's key (gevaldi applies it to the generator's samples before that classifier): give it to the [classifier.*] tables that need it$"],
        Box::new(|d| {
            load(
                d,
                &config_text(
                    "\n[generator.mine]\npreprocess = { input_range = [-1, 1] }\n",
                    &[],
                ),
            )
        }),
    );
    add(
        "config: tournament min_srcc without test data",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:30:12: `tournament[0].min_srcc`: `min_srcc` needs `test_data` (the SRCC is with the models' test accuracy)$"],
        Box::new(|d| load(d, &tournament_text("min_srcc = 0.5\n"))),
    );
    add(
        "config: tournament over a generator without classes",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:29:13: `tournament[0].generator`: `vae` (mnist-vae) takes no class condition: expected a class-conditional generator (the MDS samples' conditions are their labels), e.g. `mnist-cvae` or `biggan-deep-128`$"],
        Box::new(|d| {
            let text = tournament_text("").replacen("generator = \"cvae\"", "generator = \"vae\"", 1);
            load(d, &text)
        }),
    );
    add(
        "config: tournament unknown ranking",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:30:11: `tournament[0].ranking`: unknown value \"elo\", expected one of `mad`, `bradley-terry`$"],
        Box::new(|d| load(d, &tournament_text("ranking = \"elo\"\n"))),
    );
    add(
        "config: weights file missing",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:15:11: `classifier.cnn_b.weights`: weights file `missing.safetensors` does not exist (looked for `<dir>/missing.safetensors`; paths are relative to this file; `optional = true` skips the trials that use it instead)$"],
        Box::new(|d| {
            load(
                d,
                &config_text(
                    "",
                    &[(&fixture("cnn_b.safetensors"), "missing.safetensors")],
                ),
            )
        }),
    );
    add(
        "config: unknown architecture",
        vec!["^1 error in `<dir>/gevaldi.toml`:\n  <dir>/gevaldi.toml:14:8: `classifier.cnn_b.arch`: unknown value \"mnist-cnn-z\", expected one of `mnist-cnn-a`, `mnist-cnn-b`, `mnist-mlp`, `alexnet`, `googlenet`, `squeezenet1_0`, `squeezenet1_1`, `resnet18`, `resnet50`, `convnext_tiny`, `convnext_small`, `convnext_base`$"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("\"mnist-cnn-b\"", "\"mnist-cnn-z\"")]),
            )
        }),
    );
    add(
        "config: file missing",
        vec![
            "^1 error in `<dir>/nowhere.toml`:\n  <dir>/nowhere.toml: failed to read the file: …$",
        ],
        Box::new(|d| {
            gevaldi::config::load(d.join("nowhere.toml"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );

    // === weights ===
    add(
        "weights: truncated",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: not a valid safetensors file (incomplete metadata, file not fully covered): expected an 8-byte header length, a JSON header and the tensors' bytes, as `safetensors.torch.save_file` writes them$"],
        Box::new(|d| {
            let full = std::fs::read(fixture("cnn_b.safetensors")).unwrap();
            with_weights(d, &full[..full.len() / 2])
        }),
    );
    add(
        "weights: not safetensors",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: not a valid safetensors file (header too large): expected an 8-byte header length, a JSON header and the tensors' bytes, as `safetensors.torch.save_file` writes them$"],
        Box::new(|d| with_weights(d, b"hello, I am a text file\n")),
    );
    add(
        "weights: a pickled PyTorch checkpoint",
        vec![
            r#"^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: this is a pickled PyTorch checkpoint (torch.save), and gevaldi loads only safetensors (a pickle can run any code when loaded). Convert it once: python -c "import torch, safetensors.torch as st; st.save_file(torch.load('model.pt', map_location='cpu'), 'model.safetensors')" (for a whole pickled model, save its .state_dict())$"#,
        ],
        Box::new(|d| with_weights(d, b"PK\x03\x04archive/data.pkl")),
    );
    add(
        "weights: wrong tensor names",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: cannot find tensor conv1.weight…$"],
        Box::new(|d| with_weights(d, std::fs::read(fixture("vae.safetensors")).unwrap())),
    );
    add(
        "weights: every name behind a wrapper's prefix (DataParallel's `module.`)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: cannot find tensor conv1.weight, but the file has `module.conv1.weight`: its names carry the prefix `module.` (a state dict saved from a wrapper such as DataParallel); convert it without the prefix, e.g. {k.removeprefix('module.'): v for k, v in state_dict.items()}$"],
        Box::new(|d| {
            let tensors =
                gevaldi::candle_core::safetensors::load(fixture("cnn_b.safetensors"), &Device::Cpu)
                    .unwrap();
            let renamed: Vec<(String, Tensor)> = tensors
                .into_iter()
                .map(|(n, t)| (format!("module.{n}"), t))
                .collect();
            let named: Vec<(&str, Tensor)> =
                renamed.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
            with_weights(d, safetensors_bytes(&named, d))
        }),
    );
    add(
        "weights: wrong shapes (cnn_a's weights for cnn_b)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: shape mismatch for conv1.weight, expected: [24, 1, 3, 3], got: [16, 1, 3, 3]…$"],
        Box::new(|d| with_weights(d, std::fs::read(fixture("cnn_a.safetensors")).unwrap())),
    );
    add(
        "weights: wrong dtype (integers)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: tensor `conv1.weight` has dtype U8, expected floats (f32, f16, bf16 or f64)$"],
        Box::new(|d| {
            let t = Tensor::zeros((24, 1, 3, 3), DType::U8, &Device::Cpu).unwrap();
            let bytes = safetensors_bytes(&[("conv1.weight", t)], d);
            with_weights(d, bytes)
        }),
    );

    // === IDX data ===
    add(
        "IDX: bad magic",
        vec!["^failed to read `<dir>/bad.idx`: bad magic number 16909060 (0x01020304): expected an IDX file, e.g. 2051 (0x00000803) for images or 2049 (0x00000801) for labels$"],
        Box::new(|d| {
            let p = write(d, "bad.idx", [1u8, 2, 3, 4, 0, 0, 0, 1, 7]);
            gevaldi::data::read_idx(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );
    add(
        "IDX: truncated",
        vec!["^failed to read `<dir>/short.idx`: truncated: 2252 data bytes, expected 2352 for dimensions [3, 28, 28]$"],
        Box::new(|d| {
            let full = idx_images(3);
            let p = write(d, "short.idx", &full[..full.len() - 100]);
            gevaldi::data::read_idx(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );
    add(
        "IDX: image and label counts differ",
        vec!["^failed to read `<dir>/test-labels-idx1-ubyte.gz`: 4 labels, but `<dir>/test-images-idx3-ubyte.gz` holds 5 images: the counts must match$"],
        Box::new(|d| {
            write(d, "test-images-idx3-ubyte.gz", gz(&idx_images(5)));
            write(d, "test-labels-idx1-ubyte.gz", gz(&idx_labels(4)));
            gevaldi::data::Mnist::load(d, gevaldi::data::Split::Test)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );

    // === hierarchies ===
    add(
        "hierarchy: cycle",
        vec!["^failed to load hierarchy: <dir>/edges.tsv:5: the edges form a cycle: x -> y -> x (lines 4, 5); a hierarchy must be acyclic$"],
        Box::new(|d| hierarchy(d, CLASSES, "child\tparent\na\tr\nb\tx\nx\ty\ny\tx\n")),
    );
    add(
        "hierarchy: a class ID that no edge knows",
        vec!["^failed to load hierarchy: <dir>/classes.tsv:3: class `c` (C) is in no edge of `<dir>/edges.tsv`: expected a `c<TAB>parent` line there (is the ID misspelt in one of the files?)$"],
        Box::new(|d| {
            hierarchy(
                d,
                "index\twnid\tname\n0\ta\tA\n1\tc\tC\n",
                "child\tparent\na\tr\nb\tr\n",
            )
        }),
    );
    add(
        "hierarchy: duplicate class",
        vec!["^failed to load hierarchy: <dir>/classes.tsv:3: duplicate class ID `a` (first on line 2)$"],
        Box::new(|d| {
            hierarchy(
                d,
                "index\twnid\tname\n0\ta\tA\n1\ta\tA\n",
                "child\tparent\na\tr\n",
            )
        }),
    );
    add(
        "hierarchy: disconnected classes",
        vec!["^failed to load hierarchy: <dir>/classes.tsv:3: 1 class(es) not connected to the root `r`: `b` (B, line 3); expected a chain of `child<TAB>parent` lines in `<dir>/edges.tsv` from each class to the root$"],
        Box::new(|d| hierarchy(d, CLASSES, "child\tparent\na\tr\nb\ts\n")),
    );
    add(
        "hierarchy: label set does not match the classifiers",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): the hierarchy `<root>/fixtures/imagenet/imagenet1k_classes.tsv` has 1000 classes but classifier `cnn_a` has 10: the label sets must match$"],
        Box::new(|d| {
            let root = env!("CARGO_MANIFEST_DIR");
            let extra = format!(
                "\n[hierarchy]\nclasses = \"{root}/fixtures/imagenet/imagenet1k_classes.tsv\"\n\
                 edges = \"{root}/fixtures/imagenet/imagenet1k_wordnet_hypernyms.tsv\"\n"
            );
            trial(d, &config_text(&extra, &[]), Registry::new(), "p")
        }),
    );

    // === models ===
    add(
        "model: generator output does not fit the classifier",
        vec!["^pair `p` (<dir>/gevaldi.toml:18): failed to compute logits of `wide`'s samples of shape [4, 100] for model `cnn_a`: …$"],
        Box::new(|d| {
            let text = config_text(
                "",
                &[(
                    "[generator.vae]\narch = \"mnist-vae\"",
                    "[generator.wide]\n[generator.vae]\narch = \"mnist-vae\"",
                )],
            )
            .replace("generator = \"vae\"", "generator = \"wide\"");
            let mut r = Registry::new();
            r.generator("wide", |_| Ok(WideGenerator));
            trial(d, &text, r, "p")
        }),
    );
    add(
        "model: a registered function's weights of the wrong shape (its bare candle error named no model)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to build classifier `mine` (<dir>/gevaldi.toml:22, weights `<dir>/mine.safetensors`) with the function registered for it: shape mismatch for conv1.weight, expected: [16, 1, 3, 3], got: [24, 1, 3, 3]$"],
        Box::new(|d| {
            std::fs::copy(fixture("cnn_b.safetensors"), d.join("mine.safetensors")).unwrap();
            let text = config_text(
                "\n[classifier.mine]\nweights = \"mine.safetensors\"\n",
                &[("\"cnn_b\"]", "\"mine\"]")],
            );
            let mut r = Registry::new();
            r.classifier_with_table("mine", |t, dev| {
                let weights = t.weights.as_ref().expect("weights");
                let tensors = gevaldi::candle_core::safetensors::load(weights, dev)?;
                let vb = gevaldi::candle_nn::VarBuilder::from_tensors(tensors, DType::F32, dev);
                Ok(MnistCnn::load(vb, &MnistCnnConfig::cnn_a())?)
            });
            trial(d, &text, r, "p")
        }),
    );
    add(
        "model: a classifier of one's own that returns probabilities, not logits (it passed: the divergences softmax them again, towards uniform)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): classifier `mine` returns probabilities, not logits: each of its rows at 2 of the generator's samples is in [0, 1] and sums to 1, and the divergences take a softmax of what it returns (which flattens probabilities towards uniform); return the scores before the softmax, or their log_softmax$"],
        Box::new(|d| cnn_b_through(d, |y| gevaldi::candle_nn::ops::softmax(&y, 1))),
    );
    add(
        "model: a classifier of one's own whose logits are f16 (its gradient audit failed, blaming a wrong backward)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to use its logits for model `mine`: they are F16 but the search runs in F32 (the latent's type): convert them (`to_dtype`)$"],
        Box::new(|d| cnn_b_through(d, |y| y.to_dtype(DType::F16))),
    );
    add(
        "model: an ensemble's generator conditional on 12 classes beside 10-class members (it failed after the whole search: \"the label 11 of sample 0 is not one of the 10 classes\", naming no model)",
        vec!["^ensemble `e` (<dir>/gevaldi.toml:22): generator `twelve` is conditional on 12 classes but classifier `cnn_a` has 10: the MDS samples are labelled by their condition, so the generator's classes must be the classifiers' (in logit order)$"],
        Box::new(|d| {
            let text = format!(
                "{}\n[[ensemble]]\nname = \"e\"\nmembers = [\"cnn_a\", \"cnn_b\"]\n\
                 generator = \"twelve\"\ntest_data = \"{}\"\nsamples = 4\nmin_samples = 2\n\
                 \n[generator.twelve]\n",
                config_text("", &[]),
                fixture("data")
            );
            let mut r = Registry::new();
            r.generator("twelve", |_| Ok(TwelveClassGenerator));
            run(d, &text, r, TrialId::ensemble("e"))
        }),
    );
    add(
        "model: a tournament's generator conditional on 12 classes beside 10-class models (the same typed error as an ensemble's, from the search they share)",
        vec!["^tournament `t` (<dir>/gevaldi.toml:26): generator `twelve` is conditional on 12 classes but classifier `cnn_a` has 10: the MDS samples are labelled by their condition, so the generator's classes must be the classifiers' (in logit order)$"],
        Box::new(|d| {
            let text = tournament_text("samples = 4\n\n[generator.twelve]\n")
                .replacen("generator = \"cvae\"", "generator = \"twelve\"", 1);
            let mut r = Registry::new();
            r.generator("twelve", |_| Ok(TwelveClassGenerator));
            run(d, &text, r, TrialId::tournament("t"))
        }),
    );
    add(
        "model: two binary classifiers with one logit each (it passed: a distribution over one class never differs, every divergence was 0)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): classifier `one_a` has 1 class, expected 2 or more: distributions over fewer classes never differ, so every divergence would be 0 and every threshold would pass; a binary classifier with one logit (a sigmoid's) has the two logits [0, logit]$"],
        Box::new(|d| {
            let text = config_text(
                "\n[classifier.one_a]\n[classifier.one_b]\n",
                &[("[\"cnn_a\", \"cnn_b\"]", "[\"one_a\", \"one_b\"]")],
            );
            let mut r = Registry::new();
            r.classifier("one_a", |_| Ok(OneLogit(vec!["yes".into()], 1.0)));
            r.classifier("one_b", |_| Ok(OneLogit(vec!["yes".into()], -3.0)));
            trial(d, &text, r, "p")
        }),
    );
    add(
        "model: classifier emits NaN",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): the search met a non-finite value: a logit of classifier `nan` is NaN at step 0 for sample 0; check the classifier's weights, and that it takes the generator's samples$"],
        Box::new(|d| {
            let text = config_text("\n[classifier.nan]\n", &[("\"cnn_b\"]", "\"nan\"]")]);
            let mut r = Registry::new();
            r.classifier("nan", |_| {
                Ok(NanClassifier((0..10).map(|c| c.to_string()).collect()))
            });
            trial(d, &text, r, "p")
        }),
    );
    add(
        "model: classifier emits NaN on a tournament's test data (scored as class 0 unless the search met a NaN too)",
        vec!["^tournament `t` (<dir>/gevaldi.toml:26): failed to classify the test data for model `nan`: its logit of class 0 for test image 0 is NaN; a non-finite logit has no top class (check the model's weights)$"],
        Box::new(|d| {
            write(d, "test-images-idx3-ubyte.gz", gz(&idx_images(5)));
            write(d, "test-labels-idx1-ubyte.gz", gz(&idx_labels(5)));
            let text = tournament_text(&format!("test_data = \"{}\"\n", d.display()))
                .replace("\"cnn_b\", \"bag_0\"]", "\"cnn_b\", \"nan\"]")
                + "\n[classifier.nan]\n";
            let mut r = Registry::new();
            r.classifier("nan", |_| {
                Ok(NanClassifier((0..10).map(|c| c.to_string()).collect()))
            });
            run(d, &text, r, TrialId::tournament("t"))
        }),
    );
    add(
        "weights: a NaN in a tensor (candle's ReLU would hide it on a GPU)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): failed to load weights `<dir>/cnn_b.safetensors` for `cnn_b`: tensor `conv1.weight` holds 1 NaN and 1 infinite value(s) of 216: the weights are broken (a diverged training run, or a bad conversion)$"],
        Box::new(|d| {
            let mut tensors =
                gevaldi::candle_core::safetensors::load(fixture("cnn_b.safetensors"), &Device::Cpu)
                    .unwrap();
            let mut values = tensors["conv1.weight"]
                .flatten_all()
                .and_then(|w| w.to_vec1::<f32>())
                .unwrap();
            values[3] = f32::NAN;
            values[7] = f32::INFINITY;
            let broken = Tensor::from_vec(values, (24, 1, 3, 3), &Device::Cpu).unwrap();
            tensors.insert("conv1.weight".into(), broken);
            let named: Vec<(&str, Tensor)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
            let bytes = safetensors_bytes(&named, d);
            with_weights(d, bytes)
        }),
    );
    add(
        "model: generator emits NaN (it passed: ReLU made NaN images a confident class 0)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): the search met a non-finite value: the output of generator `nan_gen` is NaN at step 0 for sample 0; check the generator's weights and decoder (a NaN image can pass a classifier's ReLU as a confident class)$"],
        Box::new(|d| {
            let text = config_text(
                "\n[generator.nan_gen]\n",
                &[("generator = \"vae\"", "generator = \"nan_gen\"")],
            );
            let mut r = Registry::new();
            r.generator("nan_gen", |_| Ok(NanGenerator));
            trial(d, &text, r, "p")
        }),
    );
    add(
        "model: a generator conditional on no class (it panicked dividing by 0)",
        vec!["^pair `p` (<dir>/gevaldi.toml:17): invalid setting `generator.no_class` = num_conditions() = Some(0): expected Some(classes) with 1 or more classes, or None for an unconditional generator$"],
        Box::new(|d| {
            let text = config_text(
                "\n[generator.no_class]\n",
                &[("generator = \"vae\"", "generator = \"no_class\"")],
            );
            let mut r = Registry::new();
            r.generator("no_class", |_| Ok(NoClassGenerator));
            trial(d, &text, r, "p")
        }),
    );
    cases
}

/// `message` with the case's directory written `<dir>`, the MNIST fixtures'
/// `<fixtures>` and the repository's `<root>`.
fn shorten_paths(message: &str, dir: &Path) -> String {
    let fixtures = gevaldi::zoo::mnist_fixtures_dir().display().to_string();
    message
        .replace(&dir.display().to_string(), "<dir>")
        .replace(&fixtures, "<fixtures>")
        .replace(env!("CARGO_MANIFEST_DIR"), "<root>")
}

/// Whether `message` has `needle`: a substring, or, for a needle that
/// starts with `^` and ends with `$`, the whole message, where `…` stands
/// for any text (an OS's or candle's wording).
fn matches(message: &str, needle: &str) -> bool {
    let Some(whole) = needle.strip_prefix('^').and_then(|n| n.strip_suffix('$')) else {
        return message.contains(needle);
    };
    let pieces: Vec<&str> = whole.split('…').collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return message == first;
    }
    if message.len() < first.len() + last.len()
        || !message.starts_with(first)
        || !message.ends_with(last)
    {
        return false;
    }
    let mut rest = &message[first.len()..message.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_matcher_checks_the_whole_message() {
    let m = "gevaldi.toml:3:1: `search.step`: unknown key, expected one of `steps`, `lr`";
    assert!(matches(m, "unknown key"));
    assert!(matches(
        m,
        "^gevaldi.toml:3:1: `search.step`: unknown key, expected one of `steps`, `lr`$"
    ));
    assert!(matches(m, "^gevaldi.toml:3:1: …unknown key…`lr`$"));
    assert!(!matches(
        m,
        "^gevaldi.toml:3:1: `search.step`: unknown key$"
    ));
    assert!(!matches(m, "^`search.step`…`lr`$"));
    assert!(!matches(m, "^gevaldi.toml:3:1: …`lr`…unknown key…$"));
    assert!(!matches(m, "^gevaldi.toml:3:1: …`lr`, `lr`$"));
}

#[test]
fn every_mistake_gets_a_clear_error_and_nothing_passes() {
    let root = std::env::temp_dir().join(format!("gevaldi-faults-{}", std::process::id()));
    let cases = catalogue();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut problems = Vec::new();
    for (i, (what, needles, check)) in cases.iter().enumerate() {
        let dir = root.join(format!("case-{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&dir)));
        match result {
            Err(_) => problems.push(format!("{what}: panicked")),
            Ok(Ok(())) => problems.push(format!("{what}: passed")),
            Ok(Err(message)) => {
                let message = shorten_paths(&message, &dir);
                println!("--- {what}\n{message}\n");
                let missing: Vec<_> = needles.iter().filter(|n| !matches(&message, n)).collect();
                if !missing.is_empty() {
                    problems.push(format!("{what}: {missing:?} not in\n{message}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n\n")
    );
}

// === Issue 17: each message checked in full ===

/// A fresh directory for one case of issue 17, removed when the case
/// ends.
fn case_dir(name: &str) -> CaseDir {
    CaseDir::fresh(&format!("gevaldi-faults17-{}-{name}", std::process::id()))
}
/// The one error of a config that has exactly one, as printed.
fn one_config_error(dir: &Path, text: &str) -> (String, String) {
    let message = load(dir, text).expect_err("the config must be refused");
    let path = dir.join("gevaldi.toml").display().to_string();
    (message, path)
}

/// A classifier of MNIST-shaped inputs with `width` logits (the first
/// `width` pixels, scaled) that names `names` classes.
struct Pixels {
    width: usize,
    names: Vec<String>,
}

impl Pixels {
    fn new(width: usize, names: usize) -> Self {
        Pixels {
            width,
            names: (0..names).map(|c| c.to_string()).collect(),
        }
    }
}

impl Classifier for Pixels {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        x.flatten_from(1)?.narrow(1, 0, self.width)? * 10.0
    }
    fn class_names(&self) -> &[String] {
        &self.names
    }
}

/// A classifier that panics when it is run.
struct Bomb(Vec<String>);

impl Classifier for Bomb {
    fn logits(&self, _: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        panic!("the bomb went off")
    }
    fn class_names(&self) -> &[String] {
        &self.0
    }
}

/// The pair `p` of cnn_a and the registered classifier `mine`, with
/// `extra` appended to the pair.
fn with_registered(
    extra: &str,
    mine: impl Classifier + Clone + Send + Sync + 'static,
) -> (String, Registry) {
    let text = config_text(
        &format!("{extra}\n[classifier.mine]\n"),
        &[("\"cnn_b\"]", "\"mine\"]")],
    );
    let mut r = Registry::new();
    r.classifier("mine", move |_| Ok(mine.clone()));
    (text, r)
}

/// Regression: a name registered twice was accepted, the first
/// registration built and the second silently ignored.
#[test]
fn a_name_registered_twice_is_refused() {
    let d = case_dir("registered-twice");
    let (text, mut r) = with_registered(
        "",
        Pixels {
            width: 10,
            names: gevaldi::zoo::mnist_class_names(),
        },
    );
    r.classifier("mine", |_| {
        Ok(Pixels {
            width: 10,
            names: gevaldi::zoo::mnist_class_names(),
        })
    });
    let e = trial(&d, &text, r, "p").unwrap_err();
    assert!(e.contains("`classifier.mine`"), "{e}");
    assert!(e.contains("registered twice from Rust"), "{e}");
}

impl Clone for Pixels {
    fn clone(&self) -> Self {
        Pixels {
            width: self.width,
            names: self.names.clone(),
        }
    }
}

impl Clone for Bomb {
    fn clone(&self) -> Self {
        Bomb(self.0.clone())
    }
}

#[test]
fn weights_that_are_a_directory_are_called_a_directory() {
    let d = case_dir("weights-dir");
    let weights = d.join("cnn_b.safetensors");
    std::fs::create_dir_all(&weights).unwrap();
    let w = weights.display().to_string();
    let (message, path) =
        one_config_error(&d, &config_text("", &[(&fixture("cnn_b.safetensors"), &w)]));
    assert_eq!(
        message,
        format!(
            "1 error in `{path}`:\n  {path}:15:11: `classifier.cnn_b.weights`: weights `{w}` is \
             a directory (`{w}`), expected a safetensors file"
        )
    );
}

/// Regression: a Git LFS pointer given as weights (a checkout without
/// `git lfs`) failed as "not a valid safetensors file (header too large)".
#[test]
fn weights_that_are_a_git_lfs_pointer_say_to_pull_them() {
    let d = case_dir("weights-lfs");
    let weights = write(
        &d,
        "cnn_b.safetensors",
        "version https://git-lfs.github.com/spec/v1\n\
         oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
         size 12345\n",
    );
    let w = weights.display().to_string();
    let (message, path) =
        one_config_error(&d, &config_text("", &[(&fixture("cnn_b.safetensors"), &w)]));
    assert_eq!(
        message,
        format!(
            "1 error in `{path}`:\n  {path}:15:11: `classifier.cnn_b.weights`: weights `{w}` is \
             a Git LFS pointer, not the weights (`{w}` starts with `version \
             https://git-lfs`): run `git lfs pull` to fetch them"
        )
    );
}

#[test]
fn classifiers_with_different_class_counts_are_told_apart() {
    let d = case_dir("class-count");
    let (text, r) = with_registered("", Pixels::new(5, 5));
    let message = trial(&d, &text, r, "p").unwrap_err();
    let path = d.join("gevaldi.toml").display().to_string();
    assert_eq!(
        message,
        format!(
            "pair `p` ({path}:17): classifier `mine` has 5 classes but `cnn_a` has 10: the \
             classifiers of a pair or ensemble must share one label set"
        )
    );
}

#[test]
fn a_classifier_whose_logits_and_names_differ_is_named() {
    let d = case_dir("class-names");
    let (text, r) = with_registered("", Pixels::new(10, 5));
    let message = trial(&d, &text, r, "p").unwrap_err();
    let path = d.join("gevaldi.toml").display().to_string();
    assert_eq!(
        message,
        format!(
            "pair `p` ({path}:17): classifier `mine` names 5 classes (`class_names`) but its \
             logits have 10 columns: the two must match"
        )
    );
}

#[test]
fn a_quantile_out_of_range_is_one_error() {
    let d = case_dir("quantile");
    let (message, path) = one_config_error(
        &d,
        &config_text("statistic = \"quantile\"\nquantile = 1.5\n", &[]),
    );
    assert_eq!(
        message,
        format!(
            "1 error in `{path}`:\n  {path}:22:12: `pair[0].quantile`: 1.5 is out of range: \
             expected a number in [0, 1]"
        )
    );
}

#[test]
fn a_seed_beyond_i64_says_the_range() {
    let d = case_dir("seed");
    let (message, path) = one_config_error(
        &d,
        &config_text(
            "",
            &[("steps = 2", "steps = 2\nseed = 18446744073709551615")],
        ),
    );
    assert_eq!(
        message,
        format!(
            "1 error in `{path}`:\n  {path}:4:8: `search.seed`: 18446744073709551615 is out of \
             range: expected an integer from 0 to 9223372036854775807 (TOML integers are 64-bit \
             signed)"
        )
    );
}

#[test]
fn top_n_beyond_a_built_in_classifiers_classes_is_refused_by_the_config() {
    let d = case_dir("top-n-config");
    let (message, path) = one_config_error(&d, &config_text("top_n = 11\n", &[]));
    assert_eq!(
        message,
        format!(
            "1 error in `{path}`:\n  {path}:21:9: `pair[0].top_n`: 11 is out of range: expected \
             an integer from 1 to 10, the number of classes of classifier `cnn_a` (mnist-cnn-a)"
        )
    );
}

#[test]
fn top_n_beyond_a_registered_classifiers_classes_is_refused_before_the_search() {
    let path_of = |d: &Path| d.join("gevaldi.toml").display().to_string();
    for extra in ["top_n = 11\nmax_set_distance = 1.0\n", "top_n = 11\n"] {
        let d = case_dir("top-n-trial");
        let (text, r) = with_registered(extra, Pixels::new(10, 10));
        let message = trial(&d, &text, r, "p").unwrap_err();
        assert_eq!(
            message,
            format!(
                "pair `p` ({}:17): `top_n` = 11 is out of range: expected 1 to 10, the number \
                 of classes of classifier `cnn_a`",
                path_of(&d)
            ),
            "{extra}"
        );
    }
}

/// A `max_set_distance` the set distance cannot pass would pass every
/// search silently: the trial fails before the search, with the bound. With
/// top-6 of 10 classes, two sets share at least 2 classes: at most 34/36.
#[test]
fn a_max_set_distance_that_can_never_fail_is_refused() {
    let d = case_dir("set-distance-ceiling");
    let path = d.join("gevaldi.toml").display().to_string();
    for (extra, ceiling) in [
        (
            "top_n = 3\nmax_set_distance = 1.0\n",
            "1 in the flat hierarchy of 10 classes",
        ),
        (
            "max_set_distance = 7\n",
            "1 in the flat hierarchy of 10 classes",
        ),
        (
            "top_n = 6\nmax_set_distance = 0.95\n",
            "0.9444444444444444 in the flat",
        ),
    ] {
        let message = trial(&d, &config_text(extra, &[]), Registry::new(), "p").unwrap_err();
        let (max, top_n) = if extra.starts_with("top_n = 6") {
            ("0.95", 6)
        } else if extra.starts_with("top_n") {
            ("1", 3)
        } else {
            ("7", 1)
        };
        assert!(
            message.starts_with(&format!(
                "pair `p` ({path}:17): `max_set_distance` = {max} can never fail: the set \
                 distance of top-{top_n} predictions is at most {ceiling}"
            )),
            "{message}"
        );
        assert!(
            message.ends_with("; expected a number below it"),
            "{message}"
        );
    }
    // Just below the bound, the search runs: it passes, and the trial
    // stops only at its first snapshot.
    let message = trial(
        &d,
        &config_text("top_n = 6\nmax_set_distance = 0.944\n", &[]),
        Registry::new(),
        "p",
    )
    .unwrap_err();
    assert!(
        message.starts_with("new snapshot for pair::p: "),
        "{message}"
    );
}

#[test]
fn a_trial_that_panics_fails_with_an_error_record() {
    let d = case_dir("panic");
    let (text, r) = with_registered("", Bomb((0..10).map(|c| c.to_string()).collect()));
    let path = write(&d, "gevaldi.toml", &text);
    let suite = Suite::load(&path, r).unwrap();
    let outcome = suite.run_trial(&TrialId::pair("p"), &|_, _| {});
    let expected = format!(
        "pair `p` ({}:17): panicked: the bomb went off",
        path.display()
    );
    let error = outcome.expect_err("the trial stops on the panic");
    assert_eq!(error.to_string(), expected);
    assert_eq!(error.message(), expected);
    let record = gevaldi::artifact::pair_record(&suite.artifact_dir(), "p");
    match gevaldi::artifact::Record::read(&record).unwrap() {
        gevaldi::artifact::Record::Error(e) => {
            assert_eq!(e.trial, "pair::p");
            assert_eq!(e.message, expected);
        }
        _ => panic!("{} is not an error record", record.display()),
    }
}

#[test]
fn a_batch_too_large_for_memory_is_refused_before_the_search() {
    let d = case_dir("batch");
    let text = config_text("", &[("batch = 4", "batch = 1000000")]);
    let message = trial(&d, &text, Registry::new(), "p").unwrap_err();
    // The figures the message must carry: the probe's estimate on the same
    // models, and /proc/meminfo's (which moves, so it is read from the
    // message and checked for its form).
    let dev = Device::Cpu;
    let dir = gevaldi::zoo::mnist_fixtures_dir();
    use gevaldi::zoo::{load_file, MnistCnn, MnistCnnConfig, MnistVae, MnistVaeConfig};
    let a = load_file(dir.join("cnn_a.safetensors"), "cnn_a", &dev, |vb| {
        MnistCnn::load(vb, &MnistCnnConfig::cnn_a())
    })
    .unwrap();
    let b = load_file(dir.join("cnn_b.safetensors"), "cnn_b", &dev, |vb| {
        MnistCnn::load(vb, &MnistCnnConfig::cnn_b())
    })
    .unwrap();
    let vae = load_file(dir.join("vae.safetensors"), "vae", &dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })
    .unwrap();
    let estimate = gevaldi::memory::Estimate::probe(
        &vae,
        &[("cnn_a", &a as &dyn Classifier), ("cnn_b", &b)],
        &dev,
    )
    .unwrap()
    .expect("the fixtures run");
    let human = |n: u64| {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let (mut v, mut u) = (n as f64, 0);
        while v >= 1024.0 && u + 1 < units.len() {
            v /= 1024.0;
            u += 1;
        }
        format!("{v:.1} {}", units[u])
    };
    let head = format!(
        "pair `p` ({}:17): `search.batch` = 1000000 needs about {} of memory ({} per sample) but ",
        d.join("gevaldi.toml").display(),
        human(estimate.bytes(1_000_000)),
        human(estimate.per_sample()),
    );
    let tail = " is available (MemAvailable in /proc/meminfo); lower `search.batch`";
    assert!(
        message.starts_with(&head),
        "{message}\nexpected it to start with\n{head}"
    );
    assert!(message.ends_with(tail), "{message}");
    let available = &message[head.len()..message.len() - tail.len()];
    let (number, unit) = available.split_once(' ').expect(available);
    assert!(
        number.parse::<f64>().is_ok() && ["MiB", "GiB", "TiB"].contains(&unit),
        "{available}"
    );
}

/// Case 7 runs in a child process of this test binary with
/// `RUST_BACKTRACE=1` (std reads it once per process), selected by this
/// variable.
const CHILD: &str = "GEVALDI_FAULTS_BACKTRACE_CHILD";

#[test]
fn candle_backtraces_stay_out_of_messages() {
    if std::env::var_os(CHILD).is_some() {
        assert_eq!(
            std::backtrace::Backtrace::capture().status(),
            std::backtrace::BacktraceStatus::Captured,
            "RUST_BACKTRACE=1 must be in force in the child"
        );
        // cnn_a on the wide generator's [4, 100] samples: candle's reshape
        // fails with an error that carries a backtrace.
        let d = case_dir("bt-child");
        let text = config_text(
            "",
            &[(
                "[generator.vae]\narch = \"mnist-vae\"",
                "[generator.wide]\n[generator.vae]\narch = \"mnist-vae\"",
            )],
        )
        .replace("generator = \"vae\"", "generator = \"wide\"");
        let mut r = Registry::new();
        r.generator("wide", |_| Ok(WideGenerator));
        let message = trial(&d, &text, r, "p").unwrap_err();
        println!("<<<{message}>>>");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "candle_backtraces_stay_out_of_messages",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = stdout.find("<<<").expect("the child's message") + 3;
    let end = stdout.rfind(">>>").unwrap();
    let message = &stdout[start..end];
    for frame in ["backtrace", "BACKTRACE", " at ", "\n"] {
        assert!(!message.contains(frame), "{frame:?} in\n{message}");
    }
    // The child's directory: `bt-child` under the child's process id.
    let path = std::env::temp_dir().join(format!(
        "gevaldi-faults17-{}-bt-child/gevaldi.toml",
        out_pid(message)
    ));
    assert_eq!(
        message,
        format!(
            "pair `p` ({}:18): failed to compute logits of `wide`'s samples of shape [4, 100] \
             for model `cnn_a`: Shape mismatch, got buffer of size 400 which is compatible with \
             shape [4, 1, 28, 28]",
            path.display()
        )
    );
}

/// The process id in a message naming a `gevaldi-faults17-<pid>-` directory.
fn out_pid(message: &str) -> u32 {
    let rest = message
        .split_once("gevaldi-faults17-")
        .expect("a case directory")
        .1;
    rest.split('-').next().unwrap().parse().unwrap()
}

/// Ten pixels of candle 0.11's own 2×2 max-pool of the image, whose
/// backward scales the gradient by 1/4.
#[derive(Clone)]
struct CandlePool(Vec<String>);

impl Classifier for CandlePool {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        x.max_pool2d(2)?.flatten_from(1)?.narrow(1, 0, 10)? * 10.0
    }
    fn class_names(&self) -> &[String] {
        &self.0
    }
}

/// Regression: a hierarchy was matched to the classifiers by class count
/// only, so a classifier naming the same classes in another order read
/// every distance from the wrong rows. One that numbers its classes, or
/// names them as the hierarchy does (by ID or by name), still runs.
#[test]
fn a_classifier_whose_classes_are_not_the_hierarchys_is_refused() {
    let d = case_dir("hierarchy-order");
    let root = env!("CARGO_MANIFEST_DIR");
    let extra = format!(
        "\n[hierarchy]\nclasses = \"{root}/tests/harness/digits_classes.tsv\"\n\
         edges = \"{root}/tests/harness/digits_edges.tsv\"\n"
    );
    let named = |names: Vec<String>| Pixels { width: 10, names };
    // Named by the hierarchy's IDs (cnn_a only numbers its classes, so
    // the two classifiers do not conflict), two of them swapped.
    let mut swapped: Vec<String> = (0..10).map(|c| format!("digit_{c}")).collect();
    swapped.swap(3, 5);
    let (text, r) = with_registered(&extra, named(swapped));
    let message = trial(&d, &text, r, "p").unwrap_err();
    assert!(
        message.contains("failed to match classifier `mine`'s classes to the hierarchy `")
            && message.contains(
                "digits_classes.tsv`: its class 3 is `digit_5`, the hierarchy's is `digit_3` (3); the \
             hierarchy's classes must be the classifier's in logit order, by ID or by name"
            ),
        "{message}"
    );
    for names in [
        (0..10).map(|c| c.to_string()).collect(),
        (0..10).map(|c| format!("digit_{c}")).collect(),
    ] {
        let (text, r) = with_registered(&extra, named(names));
        if let Err(message) = trial(&d, &text, r, "p") {
            assert!(!message.contains("failed to match"), "{message}");
        }
    }
}

/// Regression: without a `[hierarchy]` the classifiers' class names were
/// never compared: one listing MNIST's labels in reverse was compared
/// with cnn_a index by index, its logit 0 ("9") against cnn_a's "0", and
/// the disagreement was fake. Pairs, ensembles and tournaments refuse it,
/// naming both models and the first logit that differs; a classifier
/// that numbers its classes, or names them with words, still runs.
#[test]
fn classifiers_naming_their_classes_in_another_order_are_refused() {
    let d = case_dir("class-order");
    let reversed: Vec<String> = (0..10).rev().map(|c| c.to_string()).collect();
    let named = |names: Vec<String>| Pixels { width: 10, names };
    let (text, r) = with_registered("", named(reversed.clone()));
    let message = trial(&d, &text, r, "p").unwrap_err();
    assert!(
        message.ends_with(
            "classifier `mine` calls its class 0 `9` but `cnn_a` calls it `0`: the classifiers \
             of a pair, ensemble or tournament must name the same classes in the same logit \
             order"
        ),
        "{message}"
    );
    // A tournament's pairs, and an ensemble's members.
    let registry = || {
        let mut r = Registry::new();
        let names = reversed.clone();
        r.classifier("mine", move |_| Ok(named(names.clone())));
        r
    };
    let text = tournament_text("").replace("\"cnn_b\", \"bag_0\"]", "\"cnn_b\", \"mine\"]")
        + "\n[classifier.mine]\n";
    let message = run(&d, &text, registry(), TrialId::tournament("t")).unwrap_err();
    assert!(
        message.contains("classifier `mine` calls its class 0 `9` but `cnn_a`"),
        "{message}"
    );
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = format!(
        "{}\n[[ensemble]]\nname = \"e\"\nmembers = [\"cnn_b\", \"mine\"]\ngenerator = \"cvae\"\n\
         test_data = \"data\"\nsamples = 4\n",
        tournament_text("")
    ) + "\n[classifier.mine]\n";
    let message = run(&d, &text, registry(), TrialId::ensemble("e")).unwrap_err();
    assert!(
        message.contains("classifier `mine` calls its class 0 `9` but `cnn_b`"),
        "{message}"
    );
    // Numbered, or named with words: nothing to compare with cnn_a's
    // numbers (the search runs, and the pair passes or fails on its own).
    for names in [
        (0..10).map(|c| c.to_string()).collect(),
        (0..10).map(|c| format!("digit {c}")).collect(),
    ] {
        let (text, r) = with_registered("", named(names));
        if let Err(message) = trial(&d, &text, r, "p") {
            assert!(!message.contains("calls its class"), "{message}");
        }
    }
}

/// Regression: test data of 0 images failed as "failed to classify the
/// test data for model `bag_0`: linear: 0 input features, expected 784",
/// naming neither the file nor that it is empty.
#[test]
fn empty_test_data_is_named() {
    let d = case_dir("empty-test-data");
    let images = write(&d, "test-images-idx3-ubyte.gz", gz(&idx_images(0)));
    write(&d, "test-labels-idx1-ubyte.gz", gz(&idx_labels(0)));
    let text = tournament_text(&format!("test_data = \"{}\"\n", d.display()));
    let message = run(&d, &text, Registry::new(), TrialId::tournament("t")).unwrap_err();
    let path = d.join("gevaldi.toml");
    assert_eq!(
        message,
        format!(
            "tournament `t` ({}:26): failed to read `{}`: it holds no images (an IDX file of 0 \
             items), expected at least one",
            path.display(),
            images.display()
        )
    );
}

/// A generator of 28×28 images conditional on `.0` classes.
struct ConditionalOn(usize);

impl Generator for ConditionalOn {
    fn latent_dim(&self) -> usize {
        8
    }
    fn num_conditions(&self) -> Option<usize> {
        Some(self.0)
    }
    fn decode(&self, z: &Tensor, c: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let zc = Tensor::cat(&[z, c.expect("a condition")], 1)?;
        let w = Tensor::ones((8 + self.0, 784), DType::F32, z.device())?;
        gevaldi::candle_nn::ops::sigmoid(&(zc.matmul(&w)? / (8 + self.0) as f64)?)?.reshape((
            z.dim(0)?,
            1,
            28,
            28,
        ))
    }
}

/// Regression: test data labelled 0-9 (the fixtures' digits) beside
/// classifiers of 3 classes: a tournament counted every image of labels 3
/// to 9 as wrong, and its test accuracies (0.08 to 0.10) and SRCC meant
/// nothing, with nothing said; an ensemble failed only when it computed
/// its metrics, as "the label 4 of sample 1 is not one of the 3 classes",
/// naming no file.
#[test]
fn test_data_labelled_beyond_the_classifiers_classes_is_refused() {
    let d = case_dir("test-data-classes");
    let data = gevaldi::zoo::mnist_fixtures_dir().join("data");
    let labels = data.join("test-labels-idx1-ubyte.gz");
    let registry = || {
        let mut r = Registry::new();
        for name in ["a", "b", "c"] {
            r.classifier(name, |_| Ok(Pixels::new(3, 3)));
        }
        r.generator("three", |_| Ok(ConditionalOn(3)));
        r
    };
    let text = format!(
        "[search]\nbatch = 4\nsteps = 2\n\n[generator.three]\n\n\
         [classifier.a]\n\n[classifier.b]\n\n[classifier.c]\n\n\
         [[tournament]]\nname = \"t\"\nmodels = [\"a\", \"b\", \"c\"]\n\
         generator = \"three\"\nsamples = 3\ntest_data = \"{0}\"\n\n\
         [[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"b\", \"c\"]\n\
         generator = \"three\"\nsamples = 6\nmin_samples = 2\ntest_data = \"{0}\"\n",
        data.display()
    );
    let path = d.join("gevaldi.toml");
    let message = run(&d, &text, registry(), TrialId::tournament("t")).unwrap_err();
    assert_eq!(
        message,
        format!(
            "tournament `t` ({}:13): failed to read `{}`: label 4 at index 1 (1399 of its \
             2000 labels are 3 or more), but classifier `a` has 3 classes: the labels must \
             be its class indices, 0 to 2 in logit order",
            path.display(),
            labels.display()
        )
    );
    let message = run(&d, &text, registry(), TrialId::ensemble("e")).unwrap_err();
    assert!(
        message.contains("label 4 at index 1 (1399 of its 2000 labels are 3 or more), but classifier `a` has 3 classes"),
        "{message}"
    );
}

/// Regression: a registered classifier on candle's max-pool was searched
/// on its wrong gradients, and the pair passed. A registered model is now
/// audited before its search; a right one (`Pixels`) still passes.
#[test]
fn a_registered_classifier_with_a_wrong_gradient_fails_its_audit() {
    let d = case_dir("registered-audit");
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let (text, r) = with_registered("", CandlePool(names));
    let message = trial(&d, &text, r, "p").unwrap_err();
    assert!(
        message.contains("gradient audit of `mine` failed") && message.contains("max_pool2d"),
        "{message}"
    );
    let (text, r) = with_registered("", Pixels::new(10, 10));
    if let Err(message) = trial(&d, &text, r, "p") {
        assert!(!message.contains("gradient audit"), "{message}");
    }
}

/// A conv without bias (8 seeded 3×3 filters), ReLU, gevaldi's 2×2
/// max-pool and a seeded linear map to ten logits: a right gradient whose
/// ReLUs sit on their kink wherever a decoded digit's background is blank
/// (the conv of values ~1e-6 is ~1e-6, either side of 0).
#[derive(Clone)]
struct BiasFreeStem {
    conv: Tensor,
    fc: Tensor,
    names: Vec<String>,
}

impl BiasFreeStem {
    fn new() -> Self {
        use rand::SeedableRng;
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut normal = |shape: &[usize], scale: f64| {
            (gevaldi::model::sample_standard_normal(shape, &mut rng, &dev).unwrap() * scale)
                .unwrap()
        };
        BiasFreeStem {
            conv: normal(&[8, 1, 3, 3], 1.0 / 3.0),
            fc: normal(&[8 * 14 * 14, 10], 0.05),
            names: (0..10).map(|c| c.to_string()).collect(),
        }
    }
}

impl Classifier for BiasFreeStem {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        let h = x.conv2d(&self.conv, 1, 1, 1, 1)?.relu()?;
        gevaldi::zoo::max_pool2d(&h, 2, 2, 0, false)?
            .flatten_from(1)?
            .matmul(&self.fc)
    }
    fn class_names(&self) -> &[String] {
        &self.names
    }
}

/// Regression: the harness audited a registered classifier at the
/// generator's decoded samples as they are, where a blank background puts
/// every ReLU after a conv without bias on its kink: finite differences
/// there disagree with any gradient (ratio 1.1 to 1.5 at every step size),
/// so a right model failed its audit, "along direction 0, backprop gives
/// … but central finite differences give …", and its trial could not run.
/// It is now audited at those samples jittered by 1e-3 of their largest
/// value, off the kinks; a wrong gradient still fails there
/// (`a_registered_classifier_with_a_wrong_gradient_fails_its_audit`).
#[test]
fn a_registered_classifier_with_relus_on_a_blank_background_passes_its_audit() {
    let d = case_dir("registered-kinks");
    let (text, r) = with_registered("", BiasFreeStem::new());
    // It runs to the end: a fresh folder's first snapshot is new.
    let message = trial(&d, &text, r, "p").unwrap_err();
    assert!(message.starts_with("new snapshot for pair::p"), "{message}");
}

/// cnn_b's logits plus a linear map of the pixels (weights `scale` times
/// seeded normals) whose gradient is dropped by a `detach`, as a branch
/// through an op without backward would be.
#[derive(Clone)]
struct DroppedBranch {
    cnn: std::sync::Arc<MnistCnn>,
    w: Tensor,
    detach: bool,
}

impl DroppedBranch {
    fn new(scale: f64, detach: bool) -> Self {
        let dev = Device::Cpu;
        let vb = gevaldi::candle_nn::VarBuilder::from_tensors(
            gevaldi::candle_core::safetensors::load(fixture("cnn_b.safetensors"), &dev).unwrap(),
            DType::F32,
            &dev,
        );
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        let w = gevaldi::model::sample_standard_normal((784, 10), &mut rng, &dev).unwrap();
        DroppedBranch {
            cnn: std::sync::Arc::new(MnistCnn::load(vb, &MnistCnnConfig::cnn_b()).unwrap()),
            w: (w * scale).unwrap(),
            detach,
        }
    }
}

impl Classifier for DroppedBranch {
    fn logits(&self, x: &Tensor) -> gevaldi::candle_core::Result<Tensor> {
        let pixels = if self.detach { x.detach() } else { x.clone() };
        self.cnn.logits(x)? + pixels.flatten_from(1)?.matmul(&self.w)?
    }
    fn class_names(&self) -> &[String] {
        self.cnn.class_names()
    }
}

/// Regression: a registered classifier with a branch whose gradient was
/// dropped (here moving its logits by about 1) passed its audit, which
/// checked only at the images, where a random direction among 784 pixels
/// sees a 28th of the missing part, and the search climbed without it.
/// The audit from z, through the generator, fails it naming the chain
/// (the audit at the images, which runs first, still passes it); the same
/// model with its gradient still passes.
#[test]
fn a_registered_classifier_missing_a_branchs_gradient_fails_its_audit() {
    let d = case_dir("registered-dropped-branch");
    let (text, r) = with_registered("", DroppedBranch::new(0.2, true));
    let message = trial(&d, &text, r, "p").unwrap_err();
    assert!(
        message.starts_with(&format!(
            "pair `p` ({}:17): gradient audit of `vae -> mine` failed: along direction ",
            d.join("gevaldi.toml").display()
        )) && message.contains("a part of the gradient is dropped"),
        "{message}"
    );
    let (text, r) = with_registered("", DroppedBranch::new(0.2, false));
    if let Err(message) = trial(&d, &text, r, "p") {
        assert!(!message.contains("gradient audit"), "{message}");
    }
}

/// A generator of 28×28 images in [-1, 1] (a tanh output), as BigGAN's
/// are, which says so (`output_range`).
struct TanhGenerator;

impl Generator for TanhGenerator {
    fn latent_dim(&self) -> usize {
        8
    }
    fn output_range(&self) -> (f32, f32) {
        (-1.0, 1.0)
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let w = Tensor::ones((8, 784), DType::F32, z.device())?.affine(0.1, 0.0)?;
        z.matmul(&w)?.tanh()?.reshape((z.dim(0)?, 1, 28, 28))
    }
}

/// Regression: a `preprocess` with `mean` and `std` but no `input_range`
/// (torchvision's normalisation, written as for images in [0, 1]) behind
/// BigGAN took its [-1, 1] images as if they were in [0, 1], and the trial
/// ran (KL 2.30 at the start of the paper's pair instead of 1.04) with
/// nothing said. Refused, naming the classifier, its table's line, the
/// generator and its range; with `input_range`, or without `mean` and
/// `std` (`preprocess = {}`: the images as they are), the trial runs.
#[test]
fn a_normalisation_without_input_range_behind_a_tanh_generator_is_refused() {
    let d = case_dir("input-range");
    let text = |preprocess: &str| {
        config_text(
            "",
            &[
                (
                    "[generator.vae]\narch = \"mnist-vae\"",
                    "[generator.tanh]\n[generator.vae]\narch = \"mnist-vae\"",
                ),
                (
                    "arch = \"mnist-cnn-a\"\n",
                    "arch = \"mnist-cnn-a\"\npreprocess = { input_range = [-1, 1] }\n",
                ),
                (
                    "arch = \"mnist-cnn-b\"\n",
                    &format!("arch = \"mnist-cnn-b\"\n{preprocess}\n"),
                ),
            ],
        )
        .replace("generator = \"vae\"", "generator = \"tanh\"")
    };
    let registry = || {
        let mut r = Registry::new();
        r.generator("tanh", |_| Ok(TanhGenerator));
        r
    };
    let message = trial(
        &d,
        &text("preprocess = { mean = [0.1307], std = [0.3081] }"),
        registry(),
        "p",
    )
    .unwrap_err();
    let path = d.join("gevaldi.toml").display().to_string();
    assert_eq!(
        message,
        format!(
            "pair `p` ({path}:20): classifier `cnn_b` ([classifier.cnn_b], {path}:15) normalises \
             with `mean` and `std`, which apply to images in [0, 1], but its `preprocess` has no \
             `input_range`, so the images of generator `tanh`, in [-1, 1] (its `output_range`), \
             would go in as if they were in [0, 1]: add `input_range = [-1, 1]` to its \
             `preprocess`"
        )
    );
    for fine in [
        "preprocess = { input_range = [-1, 1], mean = [0.1307], std = [0.3081] }",
        "preprocess = {}",
    ] {
        if let Err(message) = trial(&d, &text(fine), registry(), "p") {
            assert!(
                !message.contains("input_range"),
                "{fine}: refused for its input range:\n{message}"
            );
        }
    }
}

/// [`TanhGenerator`]'s images without its `output_range`: they reach
/// nearly -1, beyond the default [0, 1].
struct UndeclaredTanh;

impl Generator for UndeclaredTanh {
    fn latent_dim(&self) -> usize {
        8
    }
    fn decode(&self, z: &Tensor, _: Option<&Tensor>) -> gevaldi::candle_core::Result<Tensor> {
        let w = Tensor::ones((8, 784), DType::F32, z.device())?;
        z.matmul(&w)?.tanh()?.reshape((z.dim(0)?, 1, 28, 28))
    }
}

/// The config of [`config_text`] with the pair over the generator `tanh`
/// registered from Rust, and `cnn_a`'s and `cnn_b`'s `preprocess`.
fn tanh_pair(preprocess: &str) -> String {
    config_text(
        "",
        &[
            (
                "[generator.vae]\narch = \"mnist-vae\"",
                "[generator.tanh]\n[generator.vae]\narch = \"mnist-vae\"",
            ),
            (
                "arch = \"mnist-cnn-a\"\n",
                &format!("arch = \"mnist-cnn-a\"\n{preprocess}\n"),
            ),
            (
                "arch = \"mnist-cnn-b\"\n",
                &format!("arch = \"mnist-cnn-b\"\n{preprocess}\n"),
            ),
        ],
    )
    .replace("generator = \"vae\"", "generator = \"tanh\"")
}

/// Regression: the MNIST CNNs without `preprocess` behind a generator of
/// one's own declaring [-1, 1] images took them as they were (the fixtures'
/// VAE so rescaled started cnn_a vs cnn_b at KL 2.0 instead of 0.11), with
/// nothing said. Refused, naming the classifier, its table, the generator,
/// its range and the `preprocess` that maps it; with it, the trial runs.
#[test]
fn a_builtin_classifier_without_preprocess_behind_a_tanh_generator_is_refused() {
    let d = case_dir("unprepared");
    let registry = || {
        let mut r = Registry::new();
        r.generator("tanh", |_| Ok(TanhGenerator));
        r
    };
    let message = trial(&d, &tanh_pair(""), registry(), "p").unwrap_err();
    let path = d.join("gevaldi.toml").display().to_string();
    assert_eq!(
        message,
        format!(
            "pair `p` ({path}:20): classifier `cnn_a` (mnist-cnn-a, [classifier.cnn_a], \
             {path}:10) has no `preprocess`, so it would take the images of generator `tanh`, in \
             [-1, 1] (its `output_range`), as they are, where its weights expect grey images in \
             [0, 1]: give it a `preprocess`, e.g. preprocess = {{ input_range = [-1, 1] }} \
             (`preprocess = {{}}` feeds the images as they are)"
        )
    );
    let fine = tanh_pair("preprocess = { input_range = [-1, 1] }");
    if let Err(message) = trial(&d, &fine, registry(), "p") {
        assert!(!message.contains("preprocess"), "{message}");
    }
    // An ImageNet architecture behind a generator of one's own, refused
    // before its weights are read (the config refuses it behind a built-in
    // generator).
    let imagenet = format!(
        "{}\n[classifier.alex]\narch = \"alexnet\"\nweights = \"{w}\"\n\n\
         [classifier.alex2]\narch = \"alexnet\"\nweights = \"{w}\"\n\n\
         [[pair]]\nname = \"q\"\nmodels = [\"alex\", \"alex2\"]\ngenerator = \"tanh\"\n",
        tanh_pair("preprocess = { input_range = [-1, 1] }"),
        w = fixture("cnn_a.safetensors")
    );
    let message = trial(&d, &imagenet, registry(), "q").unwrap_err();
    assert!(
        message.contains(&format!(
            "classifier `alex` (alexnet, [classifier.alex], \
             {path}:25) has no `preprocess`, so it would take the images of generator `tanh`, in \
             [-1, 1] (its `output_range`), as they are, where its weights expect \
             ImageNet-normalised colour images: give it a `preprocess`, e.g. preprocess = \
             {{ input_range = [-1, 1], resize = 224, mean = [0.485, 0.456, 0.406], std = [0.229, \
             0.224, 0.225] }} (`preprocess = {{}}` feeds the images as they are)"
        )),
        "{message}"
    );
}

/// Regression: a generator of one's own with a tanh output that did not
/// declare its `output_range` was taken for [0, 1]: its pictures clipped
/// every negative value to black, and a `preprocess` mapped the wrong
/// range, with nothing said. Refused, naming what it decodes. A declared
/// range that is none (reversed) is refused as such.
#[test]
fn a_generator_decoding_beyond_its_output_range_is_refused() {
    let d = case_dir("outside-output-range");
    let mut r = Registry::new();
    r.generator("tanh", |_| Ok(UndeclaredTanh));
    let message = trial(&d, &tanh_pair(""), r, "p").unwrap_err();
    let path = d.join("gevaldi.toml").display().to_string();
    let prefix = format!("pair `p` ({path}:20): generator `tanh` decodes values from -0.");
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.ends_with(
            "at 2 samples of its prior, far outside its `output_range` [0, 1] (the default, \
             where a generator declares none): declare the range its decoder outputs \
             (`Generator::output_range`, e.g. (-1.0, 1.0) for a tanh output), which the \
             classifiers' `preprocess` and the pictures read"
        ),
        "{message}"
    );
    let mut r = Registry::new();
    r.generator("tanh", |_| Ok(TanhGenerator));
    let fine = tanh_pair("preprocess = { input_range = [-1, 1] }");
    if let Err(message) = trial(&d, &fine, r, "p") {
        assert!(!message.contains("output_range"), "{message}");
    }
    // A range that is none (reversed: it was called "far outside its
    // `output_range` [1, -1]", of samples inside [-1, 1]).
    let mut r = Registry::new();
    r.generator("tanh", |_| {
        Ok(
            gevaldi::ModuleGenerator::from_fn(|z: &Tensor| TanhGenerator.decode(z, None), 8)
                .with_output_range(1.0, -1.0),
        )
    });
    let message = trial(&d, &fine, r, "p").unwrap_err();
    assert_eq!(
        message,
        format!(
            "pair `p` ({path}:20): invalid setting `output_range` of generator `tanh` = (1, -1): \
             expected a finite (low, high) with low below high (`Generator::output_range`, \
             `ModuleGenerator::with_output_range`)"
        )
    );
}
