//! The schema's checks, each pointing at its line and key.

use std::path::Path;

use gevaldi_config::{parse, ConfigErrors, Statistic};

fn dir() -> &'static Path {
    // A directory with a file to stand in for weights.
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn errors(text: &str) -> ConfigErrors {
    parse(text, &dir().join("gevaldi.toml")).unwrap_err()
}

const MODELS: &str = r#"
[generator.vae]
arch = "mnist-vae"
weights = "Cargo.toml"

[classifier.a]
arch = "mnist-cnn-a"
weights = "Cargo.toml"

[classifier.b]

[classifier.c]
arch = "mnist-mlp"
weights = "Cargo.toml"
"#;

#[test]
fn a_good_file_parses_with_defaults_and_overrides() {
    let text = format!(
        r#"
[search]
steps = 10
lr = 1e-2
divergence = "js"

{MODELS}
[[pair]]
name = "a-vs-b"
models = ["a", "b", "c"]
generator = "vae"
max_divergence = 0.5
statistic = "quantile"
quantile = 0.9
steps = 3

[[pair]]
name = "b-vs-a"
models = ["b", "a"]
generator = "vae"
divergence = "kl"
min_lift = 2
ignore = true
"#
    );
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.search.steps, Some(10));
    assert_eq!(c.pairs.len(), 2);
    let p = &c.pairs[0];
    assert_eq!(p.models, ["a", "b", "c"]);
    assert_eq!(p.search.or(&c.search).steps, Some(3));
    assert_eq!(p.search.or(&c.search).lr, Some(0.01));
    assert_eq!(p.thresholds.statistic, Statistic::Quantile(0.9));
    assert_eq!(p.thresholds.max_divergence, Some(0.5));
    assert_eq!(c.pairs[1].thresholds.min_lift, Some(2.0));
    assert!(c.pairs[1].ignore);
    assert_eq!(c.classifier("b").unwrap().builtin, None);
    assert_eq!(
        c.generator("vae").unwrap().builtin.as_ref().unwrap().0,
        gevaldi_config::Architecture::MnistVae
    );
    assert_eq!(c.pairs[1].line, 31);
}

/// See issue 4: five different mistakes give five errors, each with
/// file:line and key.
#[test]
fn five_mistakes_give_five_errors_with_lines_and_keys() {
    let text = r#"[search]
stepz = 10
lr = "fast"

[generator.vae]
arch = "mnist-vae"
weights = "missing.safetensors"

[classifier.a]
arch = "mnist-cnn-a"
weights = "Cargo.toml"

[[pair]]
name = "p"
models = ["a", "nobody"]
generator = "vae"
max_divergence = -1.0
"#;
    let e = errors(text);
    let shown: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    println!("{e}");
    assert_eq!(e.errors.len(), 5, "{shown:#?}");
    let expect = [
        (2, "search.stepz", "unknown key"),
        (3, "search.lr", "expected a finite number > 0, found string"),
        (
            7,
            "generator.vae.weights",
            "weights file `missing.safetensors` does not exist",
        ),
        (
            15,
            "pair[0].models[1]",
            "unknown classifier `nobody`: declared classifiers are `a`",
        ),
        (
            17,
            "pair[0].max_divergence",
            "-1 is out of range: expected a finite number >= 0",
        ),
    ];
    for (err, (line, key, msg)) in e.errors.iter().zip(expect) {
        assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
        assert!(err.message.contains(msg), "{err}");
        assert!(err
            .to_string()
            .starts_with(&format!("{}:{line}:", dir().join("gevaldi.toml").display())));
    }
    assert!(e.to_string().starts_with("5 errors in `"));
}

#[test]
fn structural_mistakes_are_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\"]\ngenerator = \"vae\"\n", "pair[0].models", "expected 2 or more"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"a\"]\ngenerator = \"vae\"\n", "pair[0].models[1]", "listed twice"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"gan\"\n", "pair[0].generator", "unknown generator `gan`"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\", \"c\"]\ngenerator = \"vae\"\n", "pair[0].models", "use `js` for 3"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\nmax_divergence = nan\n", "pair[0].max_divergence", "NaN is out of range"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\nstatistic = \"quantile\"\n", "pair[0].statistic", "needs `quantile`"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\nquantile = 0.5\n", "pair[0].quantile", "only read with"),
        ("[[pair]]\nname = \"p q\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "pair[0].name", "invalid name"),
        ("[[pair]]\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "pair[0]", "missing `name`"),
        ("[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "pair[1].name", "duplicate pair name `p`"),
        ("[classifier.d]\nweights = \"nope.safetensors\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "classifier.d.weights", "weights file `nope.safetensors` does not exist"),
        ("[classifier.d]\narch = \"resnet\"\nweights = \"Cargo.toml\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "classifier.d.arch", "unknown value \"resnet\""),
        ("[search]\nbatch = 0\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "search.batch", "0 is out of range: expected an integer >= 1"),
        ("[search]\noptimizer = \"rmsprop\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "search.optimizer", "expected one of `sgd`, `adam`"),
        ("[classifier.d]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\npreprocess = { mean = [0.5, 0.5, 0.5] }\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "classifier.d.preprocess", "`mean` and `std` go together"),
        ("[classifier.d]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\npreprocess = { input_range = [1, -1] }\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "classifier.d.preprocess.input_range", "lo < hi"),
        ("[classifier.d]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\npreprocess = { std = [0.2, 0.0, 0.2], mean = [0, 0, 0] }\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "classifier.d.preprocess.std[1]", "expected a finite number > 0"),
        ("[hierarchy]\nclasses = \"nope.tsv\"\nedges = \"Cargo.toml\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "hierarchy.classes", "class list `nope.tsv` does not exist"),
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\"]\ngenerator = \"vae\"\ntest_data = \"src\"\n", "ensemble[0].members", "expected 2 or more base learners"),
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\ndivergence = \"kl\"\n", "ensemble[0].divergence", "always searched with `js`"),
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"nowhere\"\n", "ensemble[0].test_data", "directory `nowhere` does not exist"),
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\nmax_accuracy_drop = 2.0\n", "ensemble[0].max_accuracy_drop", "a fraction in [0, 1]"),
        ("[serach]\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n", "serach", "unknown key"),
        // A built-in generator without a class condition, where the MDS
        // samples' conditions are their labels: refused when read (it
        // used to fail only when the trial ran).
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\n", "ensemble[0].generator", "`vae` (mnist-vae) takes no class condition"),
        ("[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"c\", \"b\"]\ngenerator = \"vae\"\n", "tournament[0].generator", "takes no class condition"),
        // Regression: thresholds that can never pass beside each other.
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\nmin_accuracy_drop = 0.5\nmax_accuracy_drop = 0.1\n", "ensemble[0].min_accuracy_drop", "can never pass beside max_accuracy_drop = 0.1"),
        // Regression: bounds that can never fail passed every run.
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\nmin_mds_accuracy = 0\n", "ensemble[0].min_mds_accuracy", "0 can never fail: an accuracy is never below 0; expected a fraction in (0, 1)"),
        ("[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\ngenerator = \"vae\"\ntest_data = \"src\"\nmax_accuracy_drop = 1.0\n", "ensemble[0].max_accuracy_drop", "1 can never fail: a drop in accuracy is never above 1; expected a fraction in (0, 1)"),
        ("[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"c\", \"b\"]\ngenerator = \"vae\"\nmax_rank = { c = 3 }\n", "tournament[0].max_rank.c", "3 can never fail: of the tournament's 3 models, every one ranks 3 or better; expected a rank from 1 to 2"),
        // Regression: `x-vs-y` beside `z` and `x` beside `y-vs-z` gave two
        // pairs one name (`x-vs-y-vs-z`) under nextest.
        ("[classifier.x-vs-y]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"x-vs-y\", \"c\"]\ngenerator = \"vae\"\n", "tournament[0].models[1]", "`x-vs-y` contains `-vs-`"),
        // Regression: an ImageNet classifier without `preprocess` took
        // BigGAN's [-1, 1] images (or the MNIST decoders' grey digits) as
        // they were, silently.
        ("[generator.big]\narch = \"biggan-deep-128\"\nweights = \"Cargo.toml\"\n[classifier.alex]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\n[classifier.res]\narch = \"resnet18\"\nweights = \"Cargo.toml\"\npreprocess = { input_range = [-1, 1], resize = 224 }\n[[pair]]\nname = \"p\"\nmodels = [\"alex\", \"res\"]\ngenerator = \"big\"\n", "pair[0].models[0]", "`alex` (alexnet) has no `preprocess`, so it would take the images of `big` (biggan-deep-128), colour images in [-1, 1], as they are"),
        ("[classifier.alex]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"alex\"]\ngenerator = \"vae\"\n", "pair[0].models[1]", "grey 28 x 28 images in [0, 1]"),
        // Regression: a tournament's model names become its pair records'
        // file names; `x/y` made a folder, `a:b` fails on Windows.
        ("[classifier.\"x/y\"]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"x/y\", \"c\"]\ngenerator = \"vae\"\n", "tournament[0].models[1]", "`x/y`: '/' is not portable in a file name"),
        ("[classifier.\"a:b\"]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n[[tournament]]\nname = \"t\"\nmodels = [\"a:b\", \"a\", \"c\"]\ngenerator = \"vae\"\n", "tournament[0].models[0]", "`a:b`: ':' is not portable"),
        ("[classifier.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n[classifier.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"]\ngenerator = \"vae\"\n", "tournament[0].models", "the longest pair name, `<a>-vs-<b>`, is 124 bytes: at most 100"),
    ];
    for (extra, key, msg) in cases {
        let e = errors(&format!("{MODELS}\n{extra}"));
        assert!(
            e.errors
                .iter()
                .any(|e| e.key == *key && e.message.contains(msg)),
            "expected `{key}`: {msg}\ngot: {e}"
        );
    }
}

#[test]
fn syntax_errors_and_empty_files_are_reported() {
    let e = errors("[search\nsteps = 1\n");
    assert!(e.errors[0].message.starts_with("invalid TOML"), "{e}");
    assert_eq!(e.errors[0].line, 1);
    // Only the first syntax error: the parser's recovery after an unclosed
    // `[[pair]` reported a "duplicate key" that is not there.
    let e = errors("[[pair]\nname = \"a\"\n\n[[pair]]\nname = \"b\"\n");
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].line, 1, "{e}");
    let e = errors(MODELS);
    assert!(
        e.errors[0]
            .message
            .contains("no [[pair]], [[ensemble]] or [[tournament]] entries"),
        "{e}"
    );
    let e = gevaldi_config::load("/no/such/gevaldi.toml").unwrap_err();
    assert!(e.to_string().contains("failed to read the file"), "{e}");
}

/// Regression: an `early_stop` with both keys, one out of range, also got
/// "expected both `window` and `tolerance`". Each mistake gets its own
/// error and only that; a key that is missing still gets that one.
#[test]
fn early_stop_names_only_the_mistakes_it_has() {
    let pair = "[[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n";
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "early_stop = { window = 0, tolerance = -1 }",
            &[
                ("pair[0].early_stop.window", "out of range"),
                ("pair[0].early_stop.tolerance", "out of range"),
            ],
        ),
        (
            "early_stop = { window = 5, tolerance = -1 }",
            &[("pair[0].early_stop.tolerance", "out of range")],
        ),
        (
            "early_stop = { window = 5 }",
            &[("pair[0].early_stop", "expected both")],
        ),
    ];
    for (line, expected) in cases {
        let e = errors(&format!("{MODELS}\n{pair}{line}\n"));
        let got: Vec<(&str, &str)> = e
            .errors
            .iter()
            .map(|e| (e.key.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(got.len(), expected.len(), "{line}: {e}");
        for (key, msg) in *expected {
            assert!(
                got.iter().any(|(k, m)| k == key && m.contains(msg)),
                "{line}: expected `{key}`: {msg}\ngot: {e}"
            );
        }
    }
}

/// A key or table written twice is named (the parser says only
/// "duplicate key"), with the first one's line: a table header's, and (a
/// regression) a key's within its table, which was not given.
#[test]
fn a_duplicate_key_is_named() {
    let e = errors(&format!("{MODELS}\n[classifier.a]\narch = \"mnist-mlp\"\n"));
    let m = &e.errors[0].message;
    assert!(m.contains("duplicate key `a`"), "{e}");
    assert!(m.contains("`[classifier.a]` is also at line 6"), "{e}");
    let e = errors("[search]\nsteps = 1\nlr = 0.1\n  steps= 2\n");
    let m = &e.errors[0].message;
    assert!(m.contains("duplicate key `steps`"), "{e}");
    assert!(m.contains("first given at line 2 (`steps = 1`)"), "{e}");
    assert_eq!(e.errors[0].line, 4, "{e}");
    // The same key in another table above is not the first.
    let e = errors("[search]\nsteps = 1\n[search.early_stop]\nwindow = 1\nwindow = 2\n");
    let m = &e.errors[0].message;
    assert!(m.contains("first given at line 4 (`window = 1`)"), "{e}");
    let e = errors("[pair.x]\nsteps = 1\n[search]\nsteps = 2\nsteps = 3\n");
    assert!(e.errors[0].message.contains("first given at line 4"), "{e}");
}

/// Regression: a `max_divergence` the divergence can never reach (`js` of
/// two models is at most ln 2 = 0.6931; `tv` at most 1; KL at most 10⁴ by
/// the log-probability floor) passed every search without a word.
#[test]
fn a_threshold_that_can_never_fail_is_refused() {
    let pair = |divergence: &str, models: &str, max: f64| {
        format!(
            "{MODELS}\n[[pair]]\nname = \"p\"\nmodels = [{models}]\ngenerator = \"vae\"\n\
             divergence = \"{divergence}\"\nmax_divergence = {max:?}\n"
        )
    };
    let e = errors(&pair("js", "\"a\", \"c\"", 0.7));
    let m = &e.errors[0];
    assert!(
        m.message
            .contains("0.7 can never fail: `js` of 2 models is at most 0.6931 (ln 2"),
        "{e}"
    );
    assert_eq!(
        (m.key.as_str(), m.line),
        ("pair[0].max_divergence", 21),
        "{e}"
    );
    assert!(errors(&pair("tv", "\"a\", \"c\"", 1.0)).errors[0]
        .message
        .contains("`tv` of 2 models is at most 1.0000"));
    assert!(errors(&pair("kl", "\"a\", \"c\"", 1e4)).errors[0]
        .message
        .contains("clamped at -10000"));
    // Just below each ceiling parses; three models raise js's to ln 3.
    for (d, models, max) in [
        ("js", "\"a\", \"c\"", 0.69),
        ("js", "\"a\", \"c\", \"a\"", 1.0),
        ("tv", "\"a\", \"c\"", 0.99),
        ("kl", "\"a\", \"c\"", 1000.0),
        ("jeffreys", "\"a\", \"c\"", 1.5e4),
    ] {
        let text = pair(d, models, max);
        if let Err(e) = parse(&text, &dir().join("gevaldi.toml")) {
            assert!(!e.to_string().contains("can never fail"), "{d} {max}: {e}");
        }
    }
}

/// Regression: `min_lift = 0` passed every search (the lift, a ratio of
/// non-negative means, is never below 0).
#[test]
fn a_min_lift_of_zero_is_refused() {
    let pair = |min: &str| {
        format!(
            "{MODELS}\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"c\"]\ngenerator = \"vae\"\n\
             min_lift = {min}\n"
        )
    };
    for zero in ["0", "0.0", "-0.0", "-1"] {
        let e = errors(&pair(zero));
        let m = &e.errors[0];
        assert!(
            m.message.contains(
                "can never fail: the lift (the mean divergence after the search over the \
                 baseline's) is never below 0; expected a number above 0"
            ),
            "{zero}: {e}"
        );
        assert_eq!((m.key.as_str(), m.line), ("pair[0].min_lift", 20), "{e}");
    }
    let text = pair("1e-9");
    if let Err(e) = parse(&text, &dir().join("gevaldi.toml")) {
        assert!(!e.to_string().contains("can never fail"), "{e}");
    }
}

/// Regression: with `batch = 1` the lift's baseline was one prior sample's
/// divergence (0.0000), and `min_lift = 1` passed with a lift of 169498.
/// `min_lift` with a batch below `MIN_BASELINE_SAMPLES` is refused at its
/// key, whether the batch is the pair's or `[search]`'s.
#[test]
fn a_min_lift_over_too_small_a_batch_is_refused() {
    let least = gevaldi_config::MIN_BASELINE_SAMPLES;
    let text = |global: &str, own: &str, min_lift: &str| {
        format!(
            "[search]\n{global}\n{MODELS}\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"c\"]\n\
             generator = \"vae\"\n{own}\n{min_lift}\n"
        )
    };
    let refused = |t: &str| {
        let line = t.lines().position(|l| l.starts_with("min_lift")).unwrap() + 1;
        let e = errors(t);
        let m = &e.errors[0];
        assert_eq!((m.key.as_str(), m.line), ("pair[0].min_lift", line), "{e}");
        assert!(
            m.message.contains(&format!(
                "the lift cannot be checked with batch = {}: its baseline is the divergence \
                 over `batch` prior samples, and fewer than {least} are too few to mean \
                 anything; expected batch >= {least} or no min_lift",
                least - 1
            )),
            "{e}"
        );
    };
    let small = format!("batch = {}", least - 1);
    let enough = format!("batch = {least}");
    refused(&text(&small, "", "min_lift = 1"));
    refused(&text("", &small, "min_lift = 1"));
    refused(&text(&enough, &small, "min_lift = 1"));
    for t in [
        text(&enough, "", "min_lift = 1"),
        text(&small, &enough, "min_lift = 1"),
        text("", "", "min_lift = 1"),
        text("batch = 1", "", ""),
    ] {
        if let Err(e) = parse(&t, &dir().join("gevaldi.toml")) {
            assert!(!e.to_string().contains("cannot be checked"), "{t}: {e}");
        }
    }
}

/// Regression: a duplicate name was found only against the entries that
/// parsed without a mistake, so a second `p` was named only once the first
/// `p`'s own mistake was mended. Now both come at once.
#[test]
fn a_duplicate_name_is_named_beside_the_first_entrys_own_mistake() {
    let e = errors(&format!(
        "{MODELS}\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"nobody\"]\ngenerator = \"vae\"\n\
         [[pair]]\nname = \"P\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n"
    ));
    let keys: Vec<&str> = e.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["pair[0].models[1]", "pair[1].name"], "{e}");
    assert!(e.errors[1].message.contains("only in case"), "{e}");
}

/// Regression: ensemble and tournament thresholds that can never fail were
/// accepted, and passed every run: a `min_samples` above `samples` (DBSCAN
/// forms no region, so any `max_regions` passes), a `max_regions` at or
/// above the most regions DBSCAN can find, a `min_win_rate` of 0 and a
/// `min_srcc` of -1. Each is refused at its line and key; the bound just
/// inside still reads.
#[test]
fn ensemble_and_tournament_thresholds_that_can_never_fail_are_refused() {
    let cvae = "[generator.cv]\narch = \"mnist-cvae\"\nweights = \"Cargo.toml\"\n";
    let ensemble = |keys: &str| {
        format!(
            "{MODELS}{cvae}[[ensemble]]\nname = \"e\"\nmembers = [\"a\", \"c\"]\n\
             generator = \"cv\"\ntest_data = \"src\"\n{keys}"
        )
    };
    let tournament = |keys: &str| {
        format!(
            "{MODELS}{cvae}[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"c\", \"b\"]\n\
             generator = \"cv\"\ntest_data = \"src\"\n{keys}"
        )
    };
    // The line of the last key written: each case's key is the last.
    let last_line = |text: &str| text.lines().count();
    let cases = [
        (
            ensemble("samples = 100\nmin_samples = 101\n"),
            "ensemble[0].min_samples",
            "101 can never form a region: a region's core point needs min_samples MDS samples \
             within eps, and samples = 100; expected at most 100",
        ),
        (
            ensemble("samples = 100\nmax_regions = 0\nmin_samples = 1000\n"),
            "ensemble[0].min_samples",
            "1000 can never form a region",
        ),
        (
            ensemble("samples = 5\nmax_regions = 3\n"),
            "ensemble[0].max_regions",
            "3 can never fail: samples = 5 is below min_samples = 10 (the default unless set), \
             so DBSCAN forms no region; expected samples >= min_samples",
        ),
        (
            ensemble("samples = 100\nmin_samples = 4\nmax_regions = 40\n"),
            "ensemble[0].max_regions",
            "40 can never fail: DBSCAN finds at most 40 regions in samples = 100 with \
             min_samples = 4; expected fewer than 40",
        ),
        (
            ensemble("samples = 100\nmax_regions = 100\n"),
            "ensemble[0].max_regions",
            "100 can never fail: DBSCAN finds at most 47 regions in samples = 100 with \
             min_samples = 10; expected fewer than 47",
        ),
        (
            tournament("min_win_rate = [{ model = \"a\", against = \"c\", min = 0 }]\n"),
            "tournament[0].min_win_rate[0].min",
            "0 can never fail: a win rate is never below 0; expected a fraction in (0, 1]",
        ),
        (
            tournament("min_srcc = -1\n"),
            "tournament[0].min_srcc",
            "-1 can never fail: an SRCC is never below -1; expected a number in (-1, 1]",
        ),
    ];
    for (text, key, message) in &cases {
        let e = errors(text);
        assert_eq!(e.errors.len(), 1, "{e}");
        let err = &e.errors[0];
        assert_eq!((err.line, err.key.as_str()), (last_line(text), *key), "{e}");
        assert!(
            err.message.starts_with(message),
            "expected {message}\ngot: {e}"
        );
    }
    // Just inside: each can fail.
    for text in [
        ensemble("samples = 100\nmin_samples = 100\n"),
        ensemble("samples = 100\nmin_samples = 4\nmax_regions = 39\n"),
        // Above samples / min_samples = 10: DBSCAN can find more.
        ensemble("samples = 100\nmax_regions = 46\n"),
        tournament("min_win_rate = [{ model = \"a\", against = \"c\", min = 0.01 }]\n"),
        tournament("min_srcc = -0.99\n"),
    ] {
        parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Regression: rank thresholds that no ranking can pass together were
/// accepted, and the tournament failed every run: `above` pairs in a
/// cycle, a model `above` the champion, `max_rank = 1` for another model
/// than the champion, more models within rank r than r. Each is refused at
/// the entry that makes it impossible, naming the keys it contradicts;
/// thresholds that one strict order passes still read.
#[test]
fn tournament_rank_thresholds_that_can_never_pass_are_refused() {
    let cvae = "[generator.cv]\narch = \"mnist-cvae\"\nweights = \"Cargo.toml\"\n";
    let tournament = |keys: &str| {
        format!(
            "{MODELS}{cvae}[[tournament]]\nname = \"t\"\nmodels = [\"a\", \"c\", \"b\"]\n\
             generator = \"cv\"\n{keys}"
        )
    };
    let cases = [
        (
            tournament("above = [[\"a\", \"c\"], [\"c\", \"a\"]]\n"),
            "tournament[0].above[1]",
            "[`c`, `a`] can never pass: `a` above `c` (above[0]) put `a` above `c`, a cycle that \
             no ranking passes",
        ),
        (
            tournament("above = [[\"a\", \"c\"], [\"c\", \"b\"], [\"b\", \"a\"]]\n"),
            "tournament[0].above[2]",
            "[`b`, `a`] can never pass: `a` above `c` (above[0]), `c` above `b` (above[1]) put \
             `a` above `b`, a cycle that no ranking passes",
        ),
        (
            tournament("champion = \"a\"\nabove = [[\"c\", \"a\"]]\n"),
            "tournament[0].above[0]",
            "[`c`, `a`] can never pass beside champion = `a`: the champion must rank above \
             every other model",
        ),
        (
            tournament("champion = \"a\"\nmax_rank = { c = 1 }\n"),
            "tournament[0].max_rank.c",
            "1 can never pass beside champion = `a`: only the champion ranks 1",
        ),
        (
            tournament("max_rank = { a = 1, c = 1 }\n"),
            "tournament[0].max_rank.c",
            "1 can never pass: `a` must rank 1 or better too, and only 1 model(s) can (a tie \
             passes no rank threshold)",
        ),
        // Regression: only the models bounded at r or better before an
        // entry were counted, so the entry with the smaller rank, last in
        // the file, got through: c and b in the top 2 and a first is
        // three models in the top 2.
        (
            tournament("max_rank = { c = 2, b = 2, a = 1 }\n"),
            "tournament[0].max_rank.a",
            "1 can never pass: `c`, `b` must rank 2 or better too, and only 2 model(s) can (a \
             tie passes no rank threshold)",
        ),
        // Regression: `above` chains and the champion were not counted
        // against a model's max_rank: b can rank no better than 3rd.
        (
            tournament("above = [[\"a\", \"c\"], [\"c\", \"b\"]]\nmax_rank = { b = 2 }\n"),
            "tournament[0].max_rank.b",
            "2 can never pass: `a` (above[0]), `c` (above[1]) must rank above `b`, so it ranks 3 \
             or lower",
        ),
        (
            tournament("champion = \"a\"\nabove = [[\"c\", \"b\"]]\nmax_rank = { b = 2 }\n"),
            "tournament[0].max_rank.b",
            "2 can never pass: `a` (champion), `c` (above[0]) must rank above `b`, so it ranks 3 \
             or lower",
        ),
        (
            tournament("champion = \"a\"\nmax_rank = { c = 2, b = 2 }\n"),
            "tournament[0].max_rank.b",
            "2 can never pass: `a`, `c` must rank 2 or better too, and only 2 model(s) can (a \
             tie passes no rank threshold)",
        ),
    ];
    for (text, key, message) in &cases {
        let e = errors(text);
        assert_eq!(e.errors.len(), 1, "{e}");
        let err = &e.errors[0];
        assert_eq!(
            (err.line, err.key.as_str()),
            (text.lines().count(), *key),
            "{e}"
        );
        assert_eq!(err.message, *message, "{e}");
    }
    // One strict order passes each.
    for keys in [
        "above = [[\"a\", \"c\"], [\"c\", \"b\"], [\"a\", \"b\"]]\n",
        "champion = \"a\"\nabove = [[\"a\", \"c\"], [\"c\", \"b\"]]\nmax_rank = { a = 1, c = 2 }\n",
        "max_rank = { a = 2, c = 2 }\n",
        "above = [[\"a\", \"c\"]]\nmax_rank = { c = 2 }\n",
    ] {
        let text = tournament(keys);
        parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{keys}: {e}"));
    }
}

/// Regression: `preprocess = { mean = [0.5], std = [0.0] }` gave a second,
/// false error ("`mean` and `std` go together") beside the real one: a
/// refused `std` counted as missing. Only the real error now; a missing
/// one still gets its own.
#[test]
fn a_refused_mean_or_std_is_its_only_error() {
    let with = |pre: &str| {
        format!(
            "{MODELS}[classifier.d]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\n\
             preprocess = {{ {pre} }}\n[[pair]]\nname = \"p\"\nmodels = [\"a\", \"d\"]\n\
             generator = \"vae\"\n"
        )
    };
    for (pre, key, message) in [
        (
            "mean = [0.5], std = [0.0]",
            "classifier.d.preprocess.std[0]",
            "0 is out of range: expected a finite number > 0",
        ),
        (
            "mean = [\"x\"], std = [1.0]",
            "classifier.d.preprocess.mean[0]",
            "expected a finite number, found string",
        ),
        (
            "mean = [0.5]",
            "classifier.d.preprocess",
            "`mean` and `std` go together",
        ),
    ] {
        let e = errors(&with(pre));
        assert_eq!(e.errors.len(), 1, "{pre}: {e}");
        assert_eq!(
            (e.errors[0].key.as_str(), e.errors[0].message.as_str()),
            (key, message),
            "{pre}: {e}"
        );
    }
}

/// Regression: an ImageNet classifier whose `preprocess` was written but
/// refused (`input_range = [1, 1]`, a `std` of 0) was also said to have
/// none ("`alex` (alexnet) has no `preprocess` … give [classifier.alex] a
/// `preprocess`"), once per trial that used it, beside the real error.
/// Only the real error now; one without `preprocess` still gets its own.
#[test]
fn a_refused_preprocess_is_not_also_called_missing() {
    let with = |pre: &str| {
        format!(
            "{MODELS}\n[generator.big]\narch = \"biggan-deep-128\"\nweights = \"Cargo.toml\"\n\
             [classifier.alex]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\n{pre}\n\
             [classifier.res]\narch = \"resnet18\"\nweights = \"Cargo.toml\"\npreprocess = {{}}\n\
             [[pair]]\nname = \"p\"\nmodels = [\"alex\", \"res\"]\ngenerator = \"big\"\n\
             [[pair]]\nname = \"q\"\nmodels = [\"res\", \"alex\"]\ngenerator = \"big\"\n"
        )
    };
    for (pre, key, message) in [
        (
            "preprocess = { input_range = [1, 1], resize = 224 }",
            "classifier.alex.preprocess.input_range",
            "expected [lo, hi] with lo < hi, e.g. [-1, 1]",
        ),
        (
            "preprocess = { input_range = [-1, 1], mean = [0.5], std = [0.0] }",
            "classifier.alex.preprocess.std[0]",
            "0 is out of range: expected a finite number > 0",
        ),
        (
            "preprocess = 3",
            "classifier.alex.preprocess",
            "expected a table",
        ),
    ] {
        let e = errors(&with(pre));
        assert_eq!(e.errors.len(), 1, "{pre}: {e}");
        assert_eq!(e.errors[0].key, key, "{pre}: {e}");
        assert!(e.errors[0].message.contains(message), "{pre}: {e}");
    }
    let e = errors(&with(""));
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(
        e.errors
            .iter()
            .all(|e| e.message.contains("has no `preprocess`")),
        "{e}"
    );
}

/// `preprocess = {}` says an ImageNet classifier takes the generator's
/// images as they are: no error (one without `preprocess` is refused).
#[test]
fn an_empty_preprocess_feeds_the_images_as_they_are() {
    let text = format!(
        "{MODELS}\n[generator.big]\narch = \"biggan-deep-128\"\nweights = \"Cargo.toml\"\n\
         [classifier.alex]\narch = \"alexnet\"\nweights = \"Cargo.toml\"\npreprocess = {{}}\n\
         [classifier.res]\narch = \"resnet18\"\nweights = \"Cargo.toml\"\npreprocess = {{}}\n\
         [[pair]]\nname = \"p\"\nmodels = [\"alex\", \"res\"]\ngenerator = \"big\"\n"
    );
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.classifier("alex").unwrap().preprocess.is_some());
}

/// `transform_input` is GoogLeNet's only, and a boolean.
#[test]
fn transform_input_is_googlenet_s_only() {
    let text = format!(
        "{MODELS}\n[classifier.g]\narch = \"googlenet\"\nweights = \"Cargo.toml\"\n\
         transform_input = false\npreprocess = {{}}\n\
         [[pair]]\nname = \"p\"\nmodels = [\"a\", \"c\"]\ngenerator = \"vae\"\n"
    );
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.classifier("g").unwrap().transform_input, Some(false));
    assert_eq!(c.classifier("a").unwrap().transform_input, None);
    let e = errors(&text.replace(
        "[classifier.g]\narch = \"googlenet\"",
        "[classifier.g]\narch = \"alexnet\"",
    ));
    assert!(
        e.errors
            .iter()
            .any(|e| e.key == "classifier.g.transform_input"
                && e.message == "`alexnet` takes no transform_input (only `googlenet` does)"),
        "{e}"
    );
    let e = errors(&text.replace("transform_input = false", "transform_input = \"no\""));
    assert!(
        e.errors
            .iter()
            .any(|e| e.key == "classifier.g.transform_input"),
        "{e}"
    );
}
