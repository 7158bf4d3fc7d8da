//! Issue 9: the catalogue of bad inputs. Each case builds one mistake a
//! user makes (in `gevaldi.toml`, a weights file, an IDX file, a hierarchy,
//! a model) and checks that gevaldi answers with an error that names the
//! file (with line and key where there is one) and what was expected; that
//! nothing panics; and that no trial passes. The README's "Mistakes and
//! what they get" lists the same cases.

use std::path::{Path, PathBuf};

use gevaldi::candle_core::{DType, Device, Tensor};
use gevaldi::harness::Registry;
use gevaldi::hierarchy::Hierarchy;
use gevaldi::suite::Suite;
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

/// Runs `trial` of the config; Ok only when it passed.
fn trial(dir: &Path, text: &str, registry: Registry, name: &str) -> Result<(), String> {
    let path = write(dir, "gevaldi.toml", text);
    let suite = Suite::load(&path, registry).map_err(|e| e.to_string())?;
    let outcome = suite.run_trial(name, &|_, _| {});
    if outcome.passed {
        Ok(())
    } else {
        Err(outcome.message.unwrap_or(outcome.line))
    }
}

/// A pair trial whose `weights` of cnn_b is the file `bytes`.
fn with_weights(dir: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    let path = write(dir, "cnn_b.safetensors", bytes);
    let text = config_text(
        "",
        &[(&fixture("cnn_b.safetensors"), &path.display().to_string())],
    );
    trial(dir, &text, Registry::new(), "pair::p")
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

type Check = Box<dyn Fn(&Path) -> Result<(), String>>;

/// (what, substrings the error must contain, the check).
fn catalogue() -> Vec<(&'static str, Vec<&'static str>, Check)> {
    let mut cases: Vec<(&'static str, Vec<&'static str>, Check)> = Vec::new();
    let mut add = |what, needles: Vec<&'static str>, f: Check| cases.push((what, needles, f));

    // === gevaldi.toml ===
    add(
        "config: TOML syntax error",
        vec!["gevaldi.toml:17:"],
        Box::new(|d| load(d, &config_text("", &[("[[pair]]", "[[pair]")]))),
    );
    add(
        "config: unknown key (a typo)",
        vec!["gevaldi.toml:3:", "`search.step`", "unknown key"],
        Box::new(|d| load(d, &config_text("", &[("steps = 2", "step = 2")]))),
    );
    add(
        "config: wrong type",
        vec!["gevaldi.toml:3:", "`search.steps`", "integer"],
        Box::new(|d| load(d, &config_text("", &[("steps = 2", "steps = \"many\"")]))),
    );
    add(
        "config: value out of range",
        vec!["gevaldi.toml:", "`search.lr`"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("steps = 2", "steps = 2\nlr = -1.0")]),
            )
        }),
    );
    add(
        "config: pair names an unknown classifier",
        vec!["gevaldi.toml:", "cnn_c"],
        Box::new(|d| load(d, &config_text("", &[("\"cnn_b\"]", "\"cnn_c\"]")]))),
    );
    add(
        "config: pair names an unknown generator",
        vec![
            "gevaldi.toml:20:",
            "`pair[0].generator`",
            "gan",
            "declared generators",
        ],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("generator = \"vae\"", "generator = \"gan\"")]),
            )
        }),
    );
    add(
        "config: pair with one model",
        vec!["gevaldi.toml:", "models"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("[\"cnn_a\", \"cnn_b\"]", "[\"cnn_a\"]")]),
            )
        }),
    );
    add(
        "config: duplicate pair names",
        vec!["gevaldi.toml:", "duplicate", "p"],
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
        vec!["gevaldi.toml:", "max_divergence"],
        Box::new(|d| load(d, &config_text("max_divergence = nan\n", &[]))),
    );
    add(
        "config: weights file missing",
        vec!["gevaldi.toml:", "missing.safetensors"],
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
        vec!["gevaldi.toml:", "mnist-cnn-z"],
        Box::new(|d| {
            load(
                d,
                &config_text("", &[("\"mnist-cnn-b\"", "\"mnist-cnn-z\"")]),
            )
        }),
    );
    add(
        "config: file missing",
        vec!["nowhere.toml"],
        Box::new(|d| {
            gevaldi::config::load(d.join("nowhere.toml"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );

    // === weights ===
    add(
        "weights: truncated",
        vec![
            "cnn_b.safetensors",
            "`cnn_b`",
            "not a valid safetensors file",
        ],
        Box::new(|d| {
            let full = std::fs::read(fixture("cnn_b.safetensors")).unwrap();
            with_weights(d, &full[..full.len() / 2])
        }),
    );
    add(
        "weights: not safetensors",
        vec![
            "cnn_b.safetensors",
            "not a valid safetensors file",
            "expected an 8-byte header",
        ],
        Box::new(|d| with_weights(d, b"hello, I am a text file\n")),
    );
    add(
        "weights: a pickled PyTorch checkpoint",
        vec![
            "cnn_b.safetensors",
            "pickled PyTorch checkpoint",
            "safetensors.torch",
        ],
        Box::new(|d| with_weights(d, b"PK\x03\x04archive/data.pkl")),
    );
    add(
        "weights: wrong tensor names",
        vec!["cnn_b.safetensors", "conv1.weight"],
        Box::new(|d| with_weights(d, std::fs::read(fixture("vae.safetensors")).unwrap())),
    );
    add(
        "weights: wrong shapes (cnn_a's weights for cnn_b)",
        vec!["cnn_b.safetensors", "shape"],
        Box::new(|d| with_weights(d, std::fs::read(fixture("cnn_a.safetensors")).unwrap())),
    );
    add(
        "weights: wrong dtype (integers)",
        vec!["cnn_b.safetensors", "dtype", "expected floats"],
        Box::new(|d| {
            let t = Tensor::zeros((24, 1, 3, 3), DType::U8, &Device::Cpu).unwrap();
            let bytes = safetensors_bytes(&[("conv1.weight", t)], d);
            with_weights(d, bytes)
        }),
    );

    // === IDX data ===
    add(
        "IDX: bad magic",
        vec!["bad.idx", "magic"],
        Box::new(|d| {
            let p = write(d, "bad.idx", [1u8, 2, 3, 4, 0, 0, 0, 1, 7]);
            gevaldi::data::read_idx(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );
    add(
        "IDX: truncated",
        vec!["short.idx"],
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
        vec!["test-labels-idx1-ubyte", "5", "4"],
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
        vec!["edges.tsv:5:", "cycle", "lines 4, 5"],
        Box::new(|d| hierarchy(d, CLASSES, "child\tparent\na\tr\nb\tx\nx\ty\ny\tx\n")),
    );
    add(
        "hierarchy: a class ID that no edge knows",
        vec!["classes.tsv:3", "`c`", "is in no edge of", "edges.tsv"],
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
        vec!["classes.tsv:3", "a"],
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
        vec![
            "classes.tsv:3",
            "`b`",
            "not connected to the root `r`",
            "edges.tsv",
        ],
        Box::new(|d| hierarchy(d, CLASSES, "child\tparent\na\tr\nb\ts\n")),
    );
    add(
        "hierarchy: label set does not match the classifiers",
        vec!["imagenet1k_classes.tsv", "1000 classes", "10"],
        Box::new(|d| {
            let root = env!("CARGO_MANIFEST_DIR");
            let extra = format!(
                "\n[hierarchy]\nclasses = \"{root}/fixtures/imagenet/imagenet1k_classes.tsv\"\n\
                 edges = \"{root}/fixtures/imagenet/imagenet1k_wordnet_hypernyms.tsv\"\n"
            );
            trial(d, &config_text(&extra, &[]), Registry::new(), "pair::p")
        }),
    );

    // === models ===
    add(
        "model: generator output does not fit the classifier",
        vec![
            "pair `p`",
            "gevaldi.toml:",
            "`cnn_a`",
            "`wide`'s samples of shape [4, 100]",
        ],
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
            trial(d, &text, r, "pair::p")
        }),
    );
    add(
        "model: classifier emits NaN",
        vec![
            "pair `p`",
            "gevaldi.toml:17",
            "a logit of classifier `nan` is NaN at step 0 for sample 0",
        ],
        Box::new(|d| {
            let text = config_text("\n[classifier.nan]\n", &[("\"cnn_b\"]", "\"nan\"]")]);
            let mut r = Registry::new();
            r.classifier("nan", |_| {
                Ok(NanClassifier((0..10).map(|c| c.to_string()).collect()))
            });
            trial(d, &text, r, "pair::p")
        }),
    );
    cases
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
                println!("--- {what}\n{message}\n");
                let missing: Vec<_> = needles.iter().filter(|n| !message.contains(**n)).collect();
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
