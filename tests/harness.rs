//! The cargo test harness from the outside: exit codes, failure messages,
//! nextest, partitions, listing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of this test binary (`target/<profile>/deps/harness-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Regression: under `--format json` the harness's own lines (a pair's
/// summary, the report's path) went to stdout after libtest's events, so
/// stdout was no longer JSON lines. Now they go to stderr there.
#[test]
fn format_json_leaves_stdout_to_json_events() {
    let bin = profile_dir().join("examples/harness_expect_fail");
    let out = Command::new(&bin)
        .args(["--format", "json", "--exact", "pair::lenient"])
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("pair::lenient"), "{stdout}");
    for line in stdout.lines() {
        let event: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(event.is_ok(), "not JSON on stdout: {line}");
    }
    assert!(stderr.contains("pair::lenient: mean kl "), "{stderr}");
    assert!(stderr.contains("gevaldi report: "), "{stderr}");
}

/// See issue 4: a failing threshold exits 101 and says why; the passing pair
/// of the same suite passes.
#[test]
fn a_failing_pair_exits_101_with_its_worst_samples() {
    let bin = profile_dir().join("examples/harness_expect_fail");
    assert!(bin.exists(), "{} is built by `cargo test`", bin.display());
    let out = Command::new(&bin)
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .unwrap();
    let all = text(&out);
    println!("{all}");
    assert_eq!(out.status.code(), Some(101), "{all}");
    assert_eq!(status(&all, "pair::lenient"), Some("ok"), "{all}");
    assert_eq!(status(&all, "pair::strict"), Some("FAILED"), "{all}");
    assert_eq!(
        failed_tests(&all),
        [
            "pair::strict",
            "pair::strict-set-distance",
            "tournament::mlp-champion"
        ],
        "{all}"
    );
    assert!(all.contains("pair::lenient: mean kl "), "{all}");
    assert!(all.contains("the max kl after the search is"), "{all}");
    assert!(all.contains("above max_divergence = 0.05"), "{all}");
    assert!(
        all.contains("worst samples (kl after the search vs max_divergence 0.05):"),
        "{all}"
    );
    assert!(all.contains(" > 0.05  cnn_a: "), "{all}");
    assert!(all.contains("more above the threshold"), "{all}");
    assert!(
        all.contains("test result: FAILED. 1 passed; 3 failed"),
        "{all}"
    );
    // The set distance, with class names.
    assert!(
        all.contains("set distance of the top-2 predictions after the search is"),
        "{all}"
    );
    assert!(
        all.contains(
            "worst samples (set distance of the top-2 predictions vs max_set_distance 0):"
        ),
        "{all}"
    );
    // Not a snapshot problem: the snapshots of both pairs are committed.
    assert!(!all.contains("snapshot `"), "{all}");
    // Issue 7: the harness writes the HTML report and prints its path once,
    // at the end; the report shows both failures.
    let reports: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("gevaldi report: "))
        .collect();
    assert_eq!(reports.len(), 1, "{all}");
    let html = std::fs::read_to_string(reports[0]).unwrap();
    assert!(
        html.contains("4 trials, 1 passed, 3 failed, 0 without a record"),
        "{html}"
    );
    assert!(html.contains("data-trial=\"pair::strict\" data-verdict=\"failed\""));
    // Issue 18: a tournament's champion that does not rank first fails,
    // naming its rank and the ranking; the report shows its heatmap.
    assert!(all.contains("champion `bag_3` ranks #"), "{all}");
    assert!(all.contains(" by mad, not first: cnn_"), "{all}");
    assert!(
        html.contains("data-trial=\"tournament::mlp-champion\" data-verdict=\"failed\""),
        "{html}"
    );
    assert!(
        html.contains("<table class=\"heatmap\" data-models=\"4\">"),
        "{html}"
    );
}

/// The result libtest printed for `test`: "ok", "FAILED" or "ignored".
fn status<'a>(all: &'a str, test: &str) -> Option<&'a str> {
    all.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(test) && l.starts_with("test "))
        .and_then(|l| l.split_whitespace().last())
}

/// The tests libtest lists as failed at the end of its output.
fn failed_tests(all: &str) -> Vec<&str> {
    let Some(at) = all.rfind("\nfailures:\n") else {
        return Vec::new();
    };
    all[at + "\nfailures:\n".len()..]
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect()
}

/// Runs the quick suite under nextest.
fn nextest(args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "nextest",
            "run",
            "--release",
            "--test",
            "harness_quick",
            "--no-fail-fast",
        ])
        .args(args)
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .expect("cargo nextest is installed (.ci/run installs it)")
}

/// The `PASS` lines of a nextest run: the pairs that ran.
fn passed(out: &Output) -> Vec<String> {
    let all = text(out);
    let mut names: Vec<String> = all
        .lines()
        .filter(|l| l.trim_start().starts_with("PASS"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    names.sort();
    names
}

const QUICK: [&str; 5] = [
    "pair::a-vs-b",
    "pair::a-vs-bag-tv",
    "pair::b-vs-a",
    "pair::rust-vs-a",
    "pair::three-js",
];

/// See issue 4: nextest runs the dogfood suites, each pair (and ensemble)
/// as its own test
/// (nextest runs every test in a process of its own).
#[test]
fn nextest_runs_each_pair_as_its_own_test() {
    let report = profile_dir()
        .parent()
        .unwrap()
        .join("gevaldi/mnist/gevaldi/index.html");
    let _ = std::fs::remove_file(&report);
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["nextest", "run", "--release", "--no-fail-fast"])
        .args(["--test", "gevaldi", "--test", "harness_quick"])
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .expect("cargo nextest is installed (.ci/run installs it)");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let mut expected: Vec<String> = [
        "ensemble::bagging",
        "pair::cnn_a-vs-cnn_b",
        "pair::cnn_b-vs-cnn_a",
        "tournament::mnist",
    ]
    .iter()
    .chain(QUICK.iter())
    .map(|t| t.to_string())
    .collect();
    // Issue 18: under nextest each ordered pair of the tournament is a test
    // of its own.
    expected.extend(tournament_pairs());
    expected.sort();
    assert_eq!(passed(&out), expected, "{all}");
    // "51 passed (2 slow), 1 skipped" when the dogfood trials take long.
    assert!(all.contains("51 tests run: 51 passed"), "{all}");
    assert!(all.contains(", 1 skipped"), "{all}");
    assert!(
        all.contains("gevaldi::gevaldi pair::cnn_a-vs-cnn_b"),
        "{all}"
    );
    // Regression: with a tournament's pairs among the tests, every process
    // counted more trials filtered out than the suite has, and none wrote
    // the report.
    assert!(report.is_file(), "no report at {}: {all}", report.display());
}

#[test]
fn two_partitions_run_every_pair_exactly_once() {
    let one = nextest(&["--partition", "count:1/2"]);
    let two = nextest(&["--partition", "count:2/2"]);
    assert!(one.status.success(), "{}", text(&one));
    assert!(two.status.success(), "{}", text(&two));
    let (a, b) = (passed(&one), passed(&two));
    assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
    let mut both: Vec<String> = a.iter().chain(&b).cloned().collect();
    both.sort();
    assert_eq!(both, QUICK, "partition 1/2 ran {a:?}, 2/2 ran {b:?}");
}

/// Listing loads no model: with weights that are not safetensors, `--list`
/// still succeeds, and running says which file is wrong.
#[test]
fn listing_loads_no_model() {
    let dir = std::env::temp_dir().join(format!("gevaldi-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("garbage.safetensors"), b"not safetensors").unwrap();
    let config = root().join("tests/harness/quick.toml");
    let text = std::fs::read_to_string(config).unwrap();
    // Without the pair whose classifier is registered from Rust.
    let text = text[..text.find("# Registered from Rust").unwrap()]
        .replace(
            "../../fixtures/mnist/vae.safetensors",
            "garbage.safetensors",
        )
        .replace(
            "../../fixtures/mnist/",
            &format!("{}/fixtures/mnist/", root().display()),
        );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let list = run_child(&path, &[("GEVALDI_CHILD_ARGS", "--list")]);
    assert!(list.contains("GEVALDI-CHILD passed"), "{list}");
    assert!(list.contains("pair::a-vs-b: test"), "{list}");
    let run = run_child(&path, &[("GEVALDI_CHILD_ARGS", "--exact pair::a-vs-b")]);
    assert!(run.contains("GEVALDI-CHILD failed"), "{run}");
    assert!(run.contains("garbage.safetensors"), "{run}");
    // Regression: listing opened the device, and failed where it cannot be
    // opened (a CUDA device named on a build without the `cuda` feature).
    if !cfg!(feature = "cuda") {
        let env = [("GEVALDI_CHILD_ARGS", "--list"), ("GEVALDI_DEVICE", "cuda")];
        let list = run_child(&path, &env);
        assert!(list.contains("GEVALDI-CHILD passed"), "{list}");
        assert!(list.contains("pair::a-vs-b: test"), "{list}");
        let env = [
            ("GEVALDI_CHILD_ARGS", "--exact pair::a-vs-b"),
            ("GEVALDI_DEVICE", "cuda"),
        ];
        let run = run_child(&path, &env);
        assert!(run.contains("GEVALDI-CHILD failed"), "{run}");
        assert!(run.contains("gevaldi's `cuda` feature"), "{run}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the suite at `GEVALDI_CHILD_CONFIG` (with the libtest arguments in
/// `GEVALDI_CHILD_ARGS`) in this process; spawned by the tests here with an
/// environment of their own (insta reads `CI` and `INSTA_UPDATE` from the
/// process's).
#[test]
#[ignore = "run as a child process by the tests here"]
fn harness_child() {
    let Ok(path) = std::env::var("GEVALDI_CHILD_CONFIG") else {
        // Run by itself (`--include-ignored`): nothing to do.
        println!(
            "harness_child is a helper: the tests here run it in a child process with \
             GEVALDI_CHILD_CONFIG set; without it, it does nothing"
        );
        return;
    };
    let extra = std::env::var("GEVALDI_CHILD_ARGS").unwrap_or_default();
    let args = libtest_mimic::Arguments::from_iter(
        ["harness", "--test-threads", "1"]
            .into_iter()
            .chain(extra.split_whitespace()),
    );
    let code = gevaldi::harness::run_with_args(&path, Default::default(), args);
    let ok = code == std::process::ExitCode::SUCCESS;
    println!("GEVALDI-CHILD {}", if ok { "passed" } else { "failed" });
}

fn run_child(config: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "harness_child", "--ignored", "--nocapture"])
        .env("GEVALDI_CHILD_CONFIG", config)
        .env_remove("INSTA_FORCE_PASS")
        .env_remove("CI")
        .env_remove("INSTA_UPDATE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    text(&cmd.output().unwrap())
}

/// The committed suite's verdicts and snapshots hold on a GPU's path, as
/// far as the CPU can show it: the engine's device-generic path with
/// gevaldi's CUDA ops through their CPU twins (`GEVALDI_ENGINE=generic
/// GEVALDI_CUDA_OPS_ON_CPU=1`, the second read once per process, hence a
/// child). `tests/snapshot_policy.rs` runs the generic path on candle's ops
/// alone. The tournament (94 s this way) is left out; by hand it passed too
/// (2026-12-05).
#[test]
fn the_committed_suite_passes_on_a_gpus_path_run_on_the_cpu() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "harness_child", "--ignored", "--nocapture"])
        .env(
            "GEVALDI_CHILD_CONFIG",
            root().join("fixtures/mnist/gevaldi.toml"),
        )
        .env("GEVALDI_CHILD_ARGS", "--skip tournament::")
        .env("GEVALDI_ENGINE", "generic")
        .env("GEVALDI_CUDA_OPS_ON_CPU", "1")
        .env("CI", "1")
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .unwrap();
    let out = text(&out);
    assert!(out.contains("GEVALDI-CHILD passed"), "{out}");
    // Both pairs and the ensemble ran and passed (a summary line is printed
    // for each trial that passed).
    assert!(out.contains("3 passed; 0 failed"), "{out}");
    for trial in [
        "pair::cnn_a-vs-cnn_b",
        "pair::cnn_b-vs-cnn_a",
        "ensemble::bagging",
    ] {
        assert!(out.contains(&format!("\n{trial}: ")), "{trial}: {out}");
    }
}

/// See issue 4: two runs give identical snapshots; with CI=true a model
/// whose output changed fails its snapshot and nothing is written.
#[test]
fn snapshots_repeat_and_a_changed_model_fails_its_snapshot() {
    let dir = std::env::temp_dir().join(format!("gevaldi-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let quick = std::fs::read_to_string(root().join("tests/harness/quick.toml")).unwrap();
    let quick = quick[..quick.find("# Registered from Rust").unwrap()].replace(
        "../../fixtures/mnist/",
        &format!("{}/fixtures/mnist/", root().display()),
    );
    let config = dir.join("gevaldi.toml");
    std::fs::write(&config, &quick).unwrap();
    let snaps = dir.join("snapshots").join("gevaldi");
    let read_all = || {
        let mut files: Vec<(String, String)> = std::fs::read_dir(&snaps)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    };

    let first = run_child(&config, &[("INSTA_UPDATE", "always")]);
    assert!(first.contains("GEVALDI-CHILD passed"), "{first}");
    let written = read_all();
    assert_eq!(written.len(), 4, "{written:?}");

    let second = run_child(&config, &[("CI", "true"), ("INSTA_UPDATE", "no")]);
    assert!(second.contains("GEVALDI-CHILD passed"), "{second}");
    assert_eq!(read_all(), written, "a second run changed the snapshots");

    // bag_0 now loads other weights: same architecture, different outputs.
    let changed = quick.replace("bag_0.safetensors", "bag_2.safetensors");
    std::fs::write(&config, changed).unwrap();
    let third = run_child(&config, &[("CI", "true")]);
    assert!(third.contains("GEVALDI-CHILD failed"), "{third}");
    // The two pairs that use bag_0, and only those.
    assert_eq!(
        failed_tests(&third),
        ["pair::three-js", "pair::a-vs-bag-tv"],
        "{third}"
    );
    assert!(third.contains("snapshot `"), "{third}");
    assert!(
        third.contains("pair-a-vs-bag-tv.snap` changed: "),
        "{third}"
    );
    assert!(
        third.contains("test result: FAILED. 2 passed; 2 failed"),
        "{third}"
    );
    assert_eq!(read_all(), written, "CI=true must write nothing");
    // Regression: INSTA_FORCE_PASS passed a changed snapshot with a bare
    // `ok`, showing no difference; now the difference is shown, as insta
    // shows it, and the pair passes.
    let forced = run_child(&config, &[("CI", "true"), ("INSTA_FORCE_PASS", "1")]);
    assert!(forced.contains("GEVALDI-CHILD passed"), "{forced}");
    assert!(
        forced.contains("passed because INSTA_FORCE_PASS is set: snapshot `"),
        "{forced}"
    );
    assert!(
        forced.contains("pair-a-vs-bag-tv.snap` changed: "),
        "{forced}"
    );
    // Regression: insta takes `INSTA_UPDATE=1` for `always`, and refuses a
    // value it does not know; gevaldi read both as unset.
    let unknown = run_child(&config, &[("INSTA_UPDATE", "yes")]);
    assert!(unknown.contains("GEVALDI-CHILD failed"), "{unknown}");
    assert!(
        unknown.contains(
            "invalid setting `INSTA_UPDATE` = yes: expected auto, always (or 1), force, new, \
             unseen or no"
        ),
        "{unknown}"
    );
    assert_eq!(
        read_all(),
        written,
        "an unknown INSTA_UPDATE must write nothing"
    );
    // Regression: it was refused only when the snapshot was checked, after
    // the search (minutes on a real suite); now before it, as the trial's
    // error at its line of the config, not a snapshot problem after a
    // verdict.
    assert!(
        unknown.contains(&format!("pair `three-js` ({}:", config.display())),
        "{unknown}"
    );
    // insta refuses an INSTA_FORCE_PASS other than 1, 0 or nothing; gevaldi
    // read `true` as set.
    let truthy = run_child(&config, &[("CI", "true"), ("INSTA_FORCE_PASS", "true")]);
    assert!(truthy.contains("GEVALDI-CHILD failed"), "{truthy}");
    assert!(
        truthy.contains("invalid setting `INSTA_FORCE_PASS` = true: expected 1, or 0 or nothing"),
        "{truthy}"
    );
    let one = run_child(&config, &[("INSTA_UPDATE", "1")]);
    assert!(one.contains("GEVALDI-CHILD passed"), "{one}");
    assert_ne!(
        read_all(),
        written,
        "INSTA_UPDATE=1 writes the changed snapshots"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A made-up grouping of the ten digits by shape (loops, strokes, curves),
/// for the `[hierarchy]` table on MNIST-sized label sets.
const DIGIT_HIERARCHY: &str = r#"
[hierarchy]
classes = "ROOT/tests/harness/digits_classes.tsv"
edges = "ROOT/tests/harness/digits_edges.tsv"
"#;

fn quick_with(extra: &str, dir: &Path) -> PathBuf {
    let quick = std::fs::read_to_string(root().join("tests/harness/quick.toml")).unwrap();
    let quick = quick[..quick.find("# Registered from Rust").unwrap()].replace(
        "../../fixtures/mnist/",
        &format!("{}/fixtures/mnist/", root().display()),
    );
    let text = format!(
        "{}\n{quick}",
        extra.replace("ROOT", &root().display().to_string())
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `[hierarchy]` of a config is used for the set distance (written to
/// the snapshot), and a hierarchy whose label set does not match the
/// classifiers fails the trial with both counts.
#[test]
fn a_config_hierarchy_is_used_and_checked_against_the_classifiers() {
    let dir = std::env::temp_dir().join(format!("gevaldi-hier-{}", std::process::id()));
    let path = quick_with(DIGIT_HIERARCHY, &dir.join("digits"));
    // Distances reach 2 in this hierarchy, against 1 in the flat one.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("max_set_distance = 0.95", "max_set_distance = 1.9"),
    )
    .unwrap();
    let out = run_child(&path, &[("INSTA_UPDATE", "always")]);
    assert!(out.contains("GEVALDI-CHILD passed"), "{out}");
    let snap =
        std::fs::read_to_string(dir.join("digits/snapshots/gevaldi/pair-three-js.snap")).unwrap();
    assert!(snap.contains("\nstart.set_distance: top-3 mean "), "{snap}");

    let imagenet = r#"
[hierarchy]
classes = "ROOT/fixtures/imagenet/imagenet1k_classes.tsv"
edges = "ROOT/fixtures/imagenet/imagenet1k_wordnet_hypernyms.tsv"
"#;
    let path = quick_with(imagenet, &dir.join("imagenet"));
    let out = run_child(&path, &[("INSTA_UPDATE", "always")]);
    assert!(out.contains("GEVALDI-CHILD failed"), "{out}");
    assert!(out.contains("imagenet1k_classes.tsv` has 1000 classes but classifier `cnn_a` has 10: the label sets must match"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The paper's ImageNet chain on a small scale: two torchvision-named
/// classifiers (seeded random weights saved as safetensors), preprocessing
/// from the MNIST VAE's grey 28×28 output to normalised RGB 64×64, and the
/// WordNet hierarchy's set distance of the top-5 predictions.
#[test]
fn imagenet_classifiers_run_through_preprocessing_and_the_wordnet_hierarchy() {
    use gevaldi::zoo::{self, ResNet, ResNetDepth, SqueezeNet, SqueezeNetVersion};
    let dir = std::env::temp_dir().join(format!("gevaldi-imagenet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dev = common::device();
    let (_, vm) = zoo::seeded_varmap(1, &dev, |vb| {
        SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 1000)
    })
    .unwrap();
    vm.save(dir.join("squeezenet1_1.safetensors")).unwrap();
    let (_, vm) =
        zoo::seeded_varmap(2, &dev, |vb| ResNet::load(vb, ResNetDepth::R18, 1000)).unwrap();
    vm.save(dir.join("resnet18.safetensors")).unwrap();
    let root = root().display().to_string();
    let config = format!(
        r#"
[search]
batch = 2
steps = 3
lambda = 0.0

[hierarchy]
classes = "{root}/fixtures/imagenet/imagenet1k_classes.tsv"
edges = "{root}/fixtures/imagenet/imagenet1k_wordnet_hypernyms.tsv"
names = "{root}/fixtures/imagenet/imagenet1k_wordnet_names.tsv"

[generator.vae]
arch = "mnist-vae"
weights = "{root}/fixtures/mnist/vae.safetensors"

[classifier.squeezenet]
arch = "squeezenet1_1"
weights = "squeezenet1_1.safetensors"
preprocess = {{ resize = 64, channels = "grey-to-rgb", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}

[classifier.resnet]
arch = "resnet18"
weights = "resnet18.safetensors"
preprocess = {{ resize = [64, 64], channels = "grey-to-rgb", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}

[[pair]]
name = "squeezenet-vs-resnet"
models = ["squeezenet", "resnet"]
generator = "vae"
top_n = 5
max_set_distance = 12.0
"#
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, config).unwrap();
    let out = run_child(&path, &[("INSTA_UPDATE", "always")]);
    assert!(out.contains("GEVALDI-CHILD passed"), "{out}");
    let snap =
        std::fs::read_to_string(dir.join("snapshots/gevaldi/pair-squeezenet-vs-resnet.snap"))
            .unwrap();
    assert!(snap.contains("\nstart.set_distance: top-5 mean "), "{snap}");
    // Predictions are named by ImageNet class names, not indices:
    // "start.sample.0: kl 0.01; squeezenet <name> (0.0012), resnet <name> (…)".
    let names = std::fs::read_to_string(format!("{root}/fixtures/imagenet/imagenet1k_classes.tsv"))
        .unwrap();
    let first = snap
        .lines()
        .find_map(|l| l.strip_prefix("start.sample.0: "))
        .and_then(|l| l.split_once("; squeezenet "))
        .and_then(|(_, rest)| rest.split_once(", resnet "))
        .and_then(|(p, _)| p.rsplit_once(" ("))
        .unwrap()
        .0
        .to_string();
    assert!(
        names.lines().any(|l| l.ends_with(&format!("\t{first}"))),
        "{first:?} in {snap}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 18: under nextest each ordered pair of a tournament is a test of
/// its own, and `--partition` splits them: the two halves of the dogfood
/// suite's 7-model tournament hold its 42 pairs between them, each once.
#[test]
fn partitions_split_a_tournaments_pairs() {
    let list = |k: u32| {
        let out = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "nextest",
                "list",
                "--release",
                "--test",
                "gevaldi",
                "--message-format",
                "oneline",
                "--partition",
                &format!("count:{k}/2"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|t| t.starts_with("tournament::mnist::"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (one, two) = (list(1), list(2));
    assert!(!one.is_empty() && !two.is_empty(), "{one:?} {two:?}");
    let mut both: Vec<String> = one.iter().chain(&two).cloned().collect();
    both.sort();
    let mut expected = tournament_pairs();
    expected.sort();
    assert_eq!(both, expected, "1/2 listed {one:?}, 2/2 listed {two:?}");
}

/// The pair tests of the dogfood suite's tournament: its 42 ordered pairs.
fn tournament_pairs() -> Vec<String> {
    let models = [
        "cnn_a", "cnn_b", "bag_0", "bag_1", "bag_2", "bag_3", "bag_4",
    ];
    models
        .iter()
        .flat_map(|a| {
            models
                .iter()
                .filter(move |b| *b != a)
                .map(move |b| format!("tournament::mnist::{a}-vs-{b}"))
        })
        .collect()
}

/// Regression: a `gevaldi::main!` file built by libtest's harness (its test
/// target without `harness = false`) passed `cargo test` with no trial
/// run. Built so (`rustc --test`, against this build's gevaldi), it runs
/// one test, which fails saying what to add.
#[test]
fn a_main_file_under_libtest_s_harness_fails_saying_harness_false() {
    let deps = profile_dir().join("deps");
    // This build's gevaldi libraries, newest first (the one this test
    // links among them); the first that builds the file is used.
    let mut rlibs: Vec<PathBuf> = std::fs::read_dir(&deps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("libgevaldi-") && name.ends_with(".rlib")
        })
        .collect();
    rlibs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().modified().unwrap()));
    let dir = std::env::temp_dir().join(format!("gevaldi-libtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("suite.rs");
    std::fs::write(&src, "gevaldi::main!(\"fixtures/mnist/gevaldi.toml\");\n").unwrap();
    let exe = dir.join("suite");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut tried = String::new();
    let built = rlibs.iter().any(|rlib| {
        let build = Command::new(&rustc)
            .args(["--edition", "2021", "--test"])
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg("--extern")
            .arg(format!("gevaldi={}", rlib.display()))
            .arg("-L")
            .arg(&deps)
            .env("CARGO_MANIFEST_DIR", root())
            .output()
            .unwrap();
        tried.push_str(&format!("{}:\n{}\n", rlib.display(), text(&build)));
        build.status.success()
    });
    assert!(
        built,
        "no gevaldi library of this build built the file:\n{tried}"
    );
    let out = Command::new(&exe).output().unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("test gevaldi_main_needs_harness_false ... FAILED"),
        "{all}"
    );
    assert!(all.contains("`harness = false`"), "{all}");
    std::fs::remove_dir_all(&dir).unwrap();
}
