//! An installed `cargo gevaldi` away from the checkout: `init` writes a
//! starter suite that `run` passes, the built-in suite is unpacked from the
//! binary, configs with models registered from Rust are listed and
//! reported, `report` marks a record of other settings, thresholds,
//! weights or hierarchy than the config's stale, and no binary (this one,
//! or a harness of `gevaldi::main!`) holds the checkout's path to the
//! fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// An empty folder of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An empty folder of this test's own outside any cargo package (the
/// target folder is inside this repository's workspace).
fn scratch_outside(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("gevaldi-init-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        !dir.ancestors().any(|d| d.join("Cargo.toml").is_file()),
        "{} is inside a cargo package",
        dir.display()
    );
    dir
}

/// The built binary, copied out of the target folder as `cargo install`
/// would.
fn install(root: &Path) -> PathBuf {
    let bin = root.join("bin").join("cargo-gevaldi");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cargo-gevaldi"), &bin).unwrap();
    bin
}

/// Runs `bin` in `cwd` with only PATH and HOME (no CARGO_MANIFEST_DIR, no
/// CARGO_TARGET_DIR), plus `extra`.
fn cli(bin: &Path, cwd: &Path, home: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(extra.iter().copied())
        .output()
        .expect("run cargo-gevaldi")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The checkout's path to the fixtures, which no binary may hold.
fn fixtures_path() -> String {
    workspace().join("fixtures").display().to_string()
}

#[test]
fn an_installed_binary_inits_a_starter_suite_that_runs_and_passes() {
    let root = scratch("init-starter");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("work"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();

    let bytes = std::fs::read(&bin).unwrap();
    assert!(
        !contains(&bytes, &fixtures_path()),
        "the binary holds {}",
        fixtures_path()
    );

    let out = cli(&bin, &work, &home, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("wrote a starter gevaldi suite"),
        "{}",
        text(&out)
    );
    for f in [
        "gevaldi.toml",
        "vae.safetensors",
        "cvae.safetensors",
        "cnn_a.safetensors",
        "bag_4.safetensors",
        "data/test-images-idx3-ubyte.gz",
        "data/README.md",
        "snapshots/gevaldi/pair-cnn_a-vs-cnn_b.snap",
        "snapshots/gevaldi/ensemble-bagging.snap",
        "snapshots/gevaldi/tournament-mnist.snap",
    ] {
        assert!(work.join(f).is_file(), "init wrote no {f}");
    }
    let toml = std::fs::read_to_string(work.join("gevaldi.toml")).unwrap();
    assert!(toml.starts_with("# A starter gevaldi suite"), "{toml}");

    // A second init overwrites nothing and says what is in the way.
    std::fs::write(work.join("snapshots/gevaldi/ensemble-bagging.snap"), "mine").unwrap();
    let out = cli(&bin, &work, &home, &["init"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("failed to write a starter suite into"),
        "{all}"
    );
    assert!(
        all.contains("already there, and init overwrites nothing"),
        "{all}"
    );
    assert!(
        all.contains("gevaldi.toml") && all.contains("snapshots/gevaldi/ensemble-bagging.snap"),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("snapshots/gevaldi/ensemble-bagging.snap")).unwrap(),
        "mine"
    );
    std::fs::write(
        work.join("snapshots/gevaldi/ensemble-bagging.snap"),
        std::fs::read(workspace().join("fixtures/mnist/snapshots/gevaldi/ensemble-bagging.snap"))
            .unwrap(),
    )
    .unwrap();

    // The whole suite passes against the snapshots init wrote.
    let out = cli(&bin, &work, &home, &["run"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for t in [
        "pair::cnn_a-vs-cnn_b",
        "pair::cnn_b-vs-cnn_a",
        "ensemble::bagging",
        "tournament::mnist",
    ] {
        assert!(
            all.lines()
                .any(|l| l.starts_with(t) && l.contains("passed")),
            "{t} did not pass:\n{all}"
        );
    }
    // Records and report go to ./target, not beside the binary.
    let report = work.join("target/gevaldi/work/gevaldi/index.html");
    assert!(
        all.contains(&format!("report: {}", report.display())),
        "{all}"
    );
    assert!(report.is_file());
    assert!(!all.contains(&fixtures_path()), "{all}");

    // A new snapshot names its config by its file name, not the checkout.
    std::fs::remove_file(work.join("snapshots/gevaldi/pair-cnn_a-vs-cnn_b.snap")).unwrap();
    let out = cli(
        &bin,
        &work,
        &home,
        &["run", "--filter", "cnn_a-vs-cnn_b"],
        &[("INSTA_UPDATE", "always")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let snap =
        std::fs::read_to_string(work.join("snapshots/gevaldi/pair-cnn_a-vs-cnn_b.snap")).unwrap();
    assert!(snap.contains("\nsource: \"gevaldi.toml\"\n"), "{snap}");
}

/// Regression: run from a package's subfolder (its `src/`), `cargo gevaldi`
/// ran the built-in suite instead of the package's `gevaldi.toml`. It looks
/// in the folders above, up to the package's root.
#[test]
fn the_package_s_config_is_found_from_a_subfolder() {
    let root = scratch("init-subfolder");
    let bin = install(&root);
    let (home, pkg) = (root.join("home"), root.join("pkg"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(pkg.join("src/deep")).unwrap();
    std::fs::write(pkg.join("Cargo.toml"), "[package]\nname = \"pkg\"\n").unwrap();
    let out = cli(&bin, &pkg, &home, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&bin, &pkg.join("src/deep"), &home, &["list"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "using {} (no gevaldi.toml here)",
            pkg.join("gevaldi.toml").display()
        )),
        "{all}"
    );
    assert!(!all.contains("built-in"), "{all}");
    // Above a package's root it does not look: a package without a config
    // inside a folder with one runs the built-in suite.
    let inner = pkg.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("Cargo.toml"), "[package]\nname = \"inner\"\n").unwrap();
    let out = cli(&bin, &inner, &home, &["list"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("running the built-in MNIST suite"), "{all}");
}

/// Regression: an installed `cargo gevaldi` used `./target` of the folder
/// it ran in, so from a package's subfolder (where it finds the package's
/// config) or in a member of a workspace it wrote `target/` into the
/// sources and its report counted the records `cargo test` had written
/// under the workspace's target folder as missing. It uses the target
/// folder `cargo metadata` reports for the config's package: at its
/// workspace's root, or a cargo config's `build.target-dir`.
#[test]
fn records_go_to_the_target_folder_cargo_reports_for_the_config() {
    let root = scratch_outside("workspace-target");
    let bin = install(&root);
    let (home, ws) = (root.join("home"), root.join("ws"));
    let pkg = ws.join("models");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(pkg.join("src/deep")).unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"models\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("Cargo.toml"),
        "[package]\nname = \"models\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(pkg.join("src/lib.rs"), "").unwrap();
    // The cargo that runs this test, as cargo gives a subcommand it runs.
    let cargo = std::env::var("CARGO").expect("CARGO is set by cargo test");
    let with_cargo = [("CARGO", cargo.as_str())];
    let report_line = |cwd: &Path, extra: &[(&str, &str)]| {
        let out = cli(&bin, cwd, &home, &["report"], extra);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("warning"), "{all}");
        all.lines()
            .find_map(|l| l.strip_prefix("report: ").map(PathBuf::from))
            .unwrap_or_else(|| panic!("no report line: {all}"))
    };
    let out = cli(&bin, &pkg, &home, &["init"], &with_cargo);
    assert!(out.status.success(), "{}", text(&out));
    let index = ws.join("target/gevaldi/models/gevaldi/index.html");
    for cwd in [pkg.join("src/deep"), pkg.clone()] {
        assert_eq!(
            report_line(&cwd, &with_cargo),
            index,
            "from {}",
            cwd.display()
        );
        assert!(!cwd.join("target").exists(), "{}", cwd.display());
    }
    // A cargo config's build.target-dir, as cargo reads it.
    std::fs::create_dir_all(ws.join(".cargo")).unwrap();
    std::fs::write(
        ws.join(".cargo/config.toml"),
        "[build]\ntarget-dir = \"elsewhere\"\n",
    )
    .unwrap();
    assert_eq!(
        report_line(&pkg, &with_cargo),
        ws.join("elsewhere/gevaldi/models/gevaldi/index.html")
    );
    std::fs::remove_dir_all(ws.join(".cargo")).unwrap();
    // CARGO_TARGET_DIR still decides.
    let set = root.join("set");
    let set_dir = [
        ("CARGO", cargo.as_str()),
        ("CARGO_TARGET_DIR", set.to_str().unwrap()),
    ];
    assert_eq!(
        report_line(&pkg, &set_dir),
        set.join("gevaldi/models/gevaldi/index.html")
    );
    // Where cargo cannot tell (a manifest it refuses), ./target, saying so.
    std::fs::write(pkg.join("Cargo.toml"), "[package\n").unwrap();
    let out = cli(&bin, &pkg, &home, &["report"], &with_cargo);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("warning: failed to ask"), "{all}");
    assert!(
        all.contains(&format!(
            "report: {}",
            pkg.join("target/gevaldi/models/gevaldi/index.html")
                .display()
        )),
        "{all}"
    );
    // A config in no package: ./target, as before.
    let loose = root.join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    let out = cli(&bin, &loose, &home, &["init"], &with_cargo);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        report_line(&loose, &with_cargo),
        loose.join("target/gevaldi/loose/gevaldi/index.html")
    );
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[test]
fn the_built_in_suite_is_unpacked_into_the_cache_folder() {
    let root = scratch("init-builtin");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("empty"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let out = cli(&bin, &work, &home, &["list"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let cache = home
        .join(".cache/gevaldi")
        .join(env!("CARGO_PKG_VERSION"))
        .join("mnist");
    let config = cache.join("gevaldi.toml");
    assert!(
        all.contains(&format!(
            "running the built-in MNIST suite {}",
            config.display()
        )),
        "{all}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "pair::cnn_a-vs-cnn_b",
            "pair::cnn_b-vs-cnn_a",
            "ensemble::bagging",
            "tournament::mnist"
        ]
    );
    // Byte for byte the fixtures.
    for f in [
        "gevaldi.toml",
        "cnn_b.safetensors",
        "data/train-labels-idx1-ubyte.gz",
    ] {
        assert_eq!(
            std::fs::read(cache.join(f)).unwrap(),
            std::fs::read(workspace().join("fixtures/mnist").join(f)).unwrap(),
            "{f}"
        );
    }
    // XDG_CACHE_HOME moves it.
    let xdg = root.join("xdg");
    let out = cli(
        &bin,
        &work,
        &home,
        &["list"],
        &[("XDG_CACHE_HOME", xdg.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(xdg
        .join("gevaldi")
        .join(env!("CARGO_PKG_VERSION"))
        .join("mnist/vae.safetensors")
        .is_file());
}

/// A config whose pair `mine-vs-a` uses a classifier registered from Rust.
fn rust_config(dir: &Path) -> PathBuf {
    let fixtures = workspace().join("fixtures/mnist");
    let w = |f: &str| fixtures.join(f).display().to_string();
    let text = format!(
        "[search]\nbatch = 4\nsteps = 2\nlambda = 0.0\n\n\
         [generator.vae]\narch = \"mnist-vae\"\nweights = \"{}\"\n\n\
         [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
         [classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"{}\"\n\n\
         [classifier.mine]\nweights = \"{}\"\nhidden = 32\n\n\
         [[pair]]\nname = \"mine-vs-a\"\nmodels = [\"mine\", \"a\"]\ngenerator = \"vae\"\n\n\
         [[pair]]\nname = \"a-vs-b\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n",
        w("vae.safetensors"),
        w("cnn_a.safetensors"),
        w("cnn_b.safetensors"),
        w("bag_1.safetensors"),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn list_and_report_take_configs_with_rust_models_and_run_skips_their_trials() {
    let root = scratch("init-rust-models");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("suite"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    rust_config(&work);

    let out = cli(&bin, &work, &home, &["list"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "pair::mine-vs-a (registered from Rust: runs under cargo test)",
            "pair::a-vs-b"
        ]
    );

    let out = cli(&bin, &work, &home, &["report"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 trials: 0 passed, 0 failed, 2 without a record"),
        "{}",
        text(&out)
    );

    let out = cli(&bin, &work, &home, &["run"], &[("INSTA_UPDATE", "always")]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("skip   pair::mine-vs-a: skipped: classifier `mine` is registered from Rust"),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("pair::a-vs-b") && l.contains("passed")),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("pair::mine-vs-a") && l.contains("ignored")),
        "{all}"
    );

    // Nothing left to run: a mistake, not a pass.
    let out = cli(&bin, &work, &home, &["run", "--filter", "mine"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("every trial selected uses models registered from Rust"),
        "{}",
        text(&out)
    );
}

/// `target/<profile>` of this test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The `gevaldi` test target (`gevaldi::main!("fixtures/mnist/gevaldi.toml")`)
/// holds only the TOML's relative path, and finds it at run time under
/// CARGO_MANIFEST_DIR.
#[test]
fn a_main_harness_holds_no_checkout_path_and_finds_its_toml_at_run_time() {
    // Built here (a no-op when `cargo test` built it already), so that this
    // test does not depend on another target having been built.
    let profile = profile_dir();
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(workspace())
        .args([
            "build",
            "-p",
            "gevaldi",
            "--test",
            "gevaldi",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", profile.parent().unwrap());
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = build.output().expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let harness = stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "gevaldi" && v["target"]["kind"][0] == "test")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the harness's executable");
    let bytes = std::fs::read(&harness).unwrap();
    assert!(
        !contains(&bytes, &fixtures_path()),
        "{} holds {}",
        harness.display(),
        fixtures_path()
    );
    assert!(contains(&bytes, "fixtures/mnist/gevaldi.toml"));

    // Copied elsewhere, it finds the TOML under CARGO_MANIFEST_DIR...
    let root = scratch("init-harness");
    let copy = root.join("gevaldi-harness");
    std::fs::copy(&harness, &copy).unwrap();
    let list = |manifest: Option<&Path>| {
        let mut c = Command::new(&copy);
        c.arg("--list").current_dir(&root).env_clear();
        c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if let Some(m) = manifest {
            c.env("CARGO_MANIFEST_DIR", m);
        }
        c.output().unwrap()
    };
    let out = list(Some(&workspace()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pair::cnn_a-vs-cnn_b: test"),
        "{}",
        text(&out)
    );
    // ...and says what it looked for without it.
    let out = list(None);
    assert_eq!(out.status.code(), Some(101), "{}", text(&out));
    let expected = format!(
        "failed to find the config `fixtures/mnist/gevaldi.toml` of this gevaldi harness: looked \
         for `{}`",
        root.join("fixtures/mnist/gevaldi.toml").display()
    );
    assert!(text(&out).contains(&expected), "{}", text(&out));
}

/// Regression: `report` after an edit of a pair's threshold (or settings)
/// showed the verdict of the record, of the run before the edit, as the
/// trial's: "1 passed" for a pair whose new `max_divergence` its search
/// exceeds.
#[test]
fn report_marks_a_pair_record_of_other_settings_than_the_config_s_stale() {
    let root = scratch("stale-record");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("suite"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let config = rust_config(&work);
    let out = cli(&bin, &work, &home, &["run"], &[("INSTA_UPDATE", "always")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&bin, &work, &home, &["report"], &[]);
    assert!(
        text(&out).contains("2 trials: 1 passed, 0 failed, 1 without a record"),
        "{}",
        text(&out)
    );

    let edited = std::fs::read_to_string(&config).unwrap().replace(
        "name = \"a-vs-b\"\n",
        "name = \"a-vs-b\"\nmax_divergence = 1e-9\nlr = 0.07\n",
    );
    std::fs::write(&config, edited).unwrap();
    let out = cli(&bin, &work, &home, &["report"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("2 trials: 0 passed, 0 failed, 1 without a record")
            && all.contains("1 of the trials have a stale record"),
        "{all}"
    );
    let index = all
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .expect("the report's path");
    let html = std::fs::read_to_string(index).unwrap();
    assert!(
        html.contains("data-trial=\"pair::a-vs-b\" data-verdict=\"stale\""),
        "{html}"
    );
    assert!(
        html.contains("max_divergence ~ -&gt; 0.000000001"),
        "{html}"
    );
    assert!(
        html.contains(
            "settings kl, adam, lr 0.05, lambda 0, batch 4, steps 2, seed 0 -&gt; kl, adam, \
             lr 0.07, lambda 0, batch 4, steps 2, seed 0"
        ),
        "{html}"
    );
}

/// A config of a pair `p` (bag_0, cnn_a), an ensemble `e` (cnn_a, bag_0)
/// and a tournament `t` (cnn_a, bag_0, bag_1) over the cVAE, 4 samples of
/// 2 steps, with bag_0's weights copied beside it (for the test to change
/// them).
fn ensemble_and_tournament_config(dir: &Path) -> PathBuf {
    let fixtures = workspace().join("fixtures/mnist");
    let w = |f: &str| fixtures.join(f).display().to_string();
    std::fs::copy(
        fixtures.join("bag_0.safetensors"),
        dir.join("bag_0.safetensors"),
    )
    .unwrap();
    let text = format!(
        "[search]\nbatch = 4\nsteps = 2\nlambda = 0.0\n\n\
         [generator.cvae]\narch = \"mnist-cvae\"\nweights = \"{}\"\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
         [classifier.bag_0]\narch = \"mnist-mlp\"\nweights = \"bag_0.safetensors\"\n\n\
         [classifier.bag_1]\narch = \"mnist-mlp\"\nweights = \"{}\"\n\n\
         [[pair]]\nname = \"p\"\nmodels = [\"bag_0\", \"cnn_a\"]\ngenerator = \"cvae\"\n\n\
         [[ensemble]]\nname = \"e\"\nmembers = [\"cnn_a\", \"bag_0\"]\ngenerator = \"cvae\"\n\
         test_data = \"{}\"\nsamples = 4\nmin_samples = 2\n\n\
         [[tournament]]\nname = \"t\"\nmodels = [\"cnn_a\", \"bag_0\", \"bag_1\"]\n\
         generator = \"cvae\"\nsamples = 4\n",
        w("cvae.safetensors"),
        w("cnn_a.safetensors"),
        w("bag_1.safetensors"),
        w("data"),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The file called `name` under `dir`, at any depth.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// The report's HTML, from `report`'s output.
fn report_html(all: &str) -> String {
    let index = all
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .expect("the report's path");
    std::fs::read_to_string(index).unwrap()
}

/// Regression: `report` checked only a pair's record against the config,
/// and only its settings: an ensemble's or a tournament's record of other
/// thresholds than the config's (the TOML edited since the run), any
/// trial's record of weights retrained since, or one written before
/// gevaldi recorded those, showed the old run's verdict, "passed", as the
/// trial's.
#[test]
fn report_marks_an_ensemble_or_tournament_record_of_other_thresholds_or_weights_stale() {
    let root = scratch("stale-ensemble-tournament");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("suite"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let config = ensemble_and_tournament_config(&work);
    let out = cli(&bin, &work, &home, &["run"], &[("INSTA_UPDATE", "always")]);
    assert!(out.status.success(), "{}", text(&out));
    let report = || {
        let out = cli(&bin, &work, &home, &["report"], &[]);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        all
    };
    let all = report();
    assert!(
        all.contains("3 trials: 3 passed, 0 failed, 0 without a record")
            && !all.contains("stale record"),
        "{all}"
    );
    let stale = |all: &str, trials: &[&str]| {
        let passed = 3 - trials.len();
        assert!(
            all.contains(&format!(
                "3 trials: {passed} passed, 0 failed, 0 without a record"
            )) && all.contains(&format!(
                "{} of the trials have a stale record",
                trials.len()
            )),
            "{all}"
        );
        let html = report_html(all);
        for trial in trials {
            assert!(
                html.contains(&format!("data-trial=\"{trial}\" data-verdict=\"stale\"")),
                "{trial}: {html}"
            );
        }
    };

    // A threshold of each added since the run.
    let declared = std::fs::read_to_string(&config).unwrap();
    let edited = declared
        .replace("min_samples = 2\n", "min_samples = 2\nmax_regions = 1\n")
        .replace(
            "generator = \"cvae\"\nsamples = 4\n",
            "generator = \"cvae\"\nsamples = 4\nchampion = \"bag_1\"\n",
        );
    std::fs::write(&config, edited).unwrap();
    let all = report();
    stale(&all, &["ensemble::e", "tournament::t"]);
    assert!(
        all.contains("  ensemble::e: max_regions ~ -> 1\n")
            && all.contains("  tournament::t: champion ~ -> bag_1\n"),
        "{all}"
    );
    assert!(report_html(&all).contains("max_regions ~ -&gt; 1"), "{all}");
    std::fs::write(&config, &declared).unwrap();

    // bag_0 retrained: its weights' bytes changed.
    let weights = work.join("bag_0.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut retrained = original.clone();
    *retrained.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, &retrained).unwrap();
    let all = report();
    stale(&all, &["pair::p", "ensemble::e", "tournament::t"]);
    assert!(
        all.contains("  pair::p: weights of `bag_0` changed since the run\n")
            && all.contains("  ensemble::e: weights of `bag_0` changed since the run\n")
            && all.contains("  tournament::t: weights of `bag_0` changed since the run\n"),
        "{all}"
    );
    std::fs::write(&weights, &original).unwrap();
    let all = report();
    assert!(
        all.contains("3 trials: 3 passed, 0 failed, 0 without a record"),
        "{all}"
    );

    // Records of a gevaldi that did not record the thresholds and digests.
    for (file, fields) in [
        ("p.json", &["weights"][..]),
        ("ensemble.json", &["thresholds", "weights"][..]),
        ("tournament.json", &["weights"][..]),
    ] {
        let path = find(&work.join("target"), file).expect(file);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for field in fields {
            assert!(
                json.as_object_mut().unwrap().remove(*field).is_some(),
                "{field}"
            );
        }
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    }
    let all = report();
    stale(&all, &["pair::p", "ensemble::e", "tournament::t"]);
    assert!(
        all.contains("  pair::p: recorded before gevaldi recorded the digests of the weights\n")
            && all.contains(
                "  ensemble::e: recorded before gevaldi recorded the thresholds; recorded before \
             gevaldi recorded the digests of the weights\n"
            )
            && all.contains(
                "  tournament::t: recorded before gevaldi recorded the digests of the weights\n"
            ),
        "{all}"
    );
}

/// Regression: a pair's record under a `max_set_distance` kept its verdict
/// after the label hierarchy that the set distances read had changed.
#[test]
fn report_marks_a_pair_record_of_another_hierarchy_stale() {
    let root = scratch("stale-hierarchy");
    let bin = install(&root);
    let (home, work) = (root.join("home"), root.join("suite"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let fixtures = workspace().join("fixtures/mnist");
    let w = |f: &str| fixtures.join(f).display().to_string();
    for file in ["digits_classes.tsv", "digits_edges.tsv"] {
        std::fs::copy(
            workspace().join("tests/harness").join(file),
            work.join(file),
        )
        .unwrap();
    }
    let toml = format!(
        "[search]\nbatch = 4\nsteps = 2\nlambda = 0.0\n\n\
         [hierarchy]\nclasses = \"digits_classes.tsv\"\nedges = \"digits_edges.tsv\"\n\n\
         [generator.vae]\narch = \"mnist-vae\"\nweights = \"{}\"\n\n\
         [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
         [classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"{}\"\n\n\
         [[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n\
         max_set_distance = 1.5\n",
        w("vae.safetensors"),
        w("cnn_a.safetensors"),
        w("cnn_b.safetensors"),
    );
    std::fs::write(work.join("gevaldi.toml"), toml).unwrap();
    let out = cli(&bin, &work, &home, &["run"], &[("INSTA_UPDATE", "always")]);
    // The search may break the threshold (a record of a verdict all the
    // same), not stop on an error.
    let record = find(&work.join("target"), "p.json").expect("the pair's record");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["kind"], "pair", "{}\n{record}", text(&out));
    let out = cli(&bin, &work, &home, &["report"], &[]);
    let all = text(&out);
    assert!(
        all.contains("1 trial: ")
            && all.contains(", 0 without a record")
            && !all.contains("stale record"),
        "{all}"
    );

    // Digits 2 and 3 moved under `loops`.
    let edges = work.join("digits_edges.tsv");
    let moved = std::fs::read_to_string(&edges)
        .unwrap()
        .replace("digit_2\tcurves", "digit_2\tloops")
        .replace("digit_3\tcurves", "digit_3\tloops");
    std::fs::write(&edges, moved).unwrap();
    let out = cli(&bin, &work, &home, &["report"], &[]);
    let all = text(&out);
    assert!(
        all.contains("1 trial: 0 passed, 0 failed, 0 without a record")
            && all.contains(
                "  pair::p: the label hierarchy ([hierarchy]), which `max_set_distance` reads, \
                 changed since the run\n"
            ),
        "{all}"
    );
}
