//! The README's first command, `cargo run --release -- run`, on the MNIST
//! fixtures, and its HTML report opened in headless Chromium: every trial
//! of the config appears and every picture loads. The screenshot is kept
//! at `target/tmp/report-test/screenshot.png`.
//!
//! Needs Chromium (Debian: `apt-get install chromium`; `.ci/run` installs
//! it). `GEVALDI_CHROMIUM` names another binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A target directory of this test's own, so that its records and report
/// do not mix with other tests'.
fn target(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn cli(target: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-gevaldi"))
        .args(args)
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target)
        // The built-in suite is unpacked under here, not in the user's cache.
        .env("XDG_CACHE_HOME", target.join("cache"))
        .env("INSTA_UPDATE", "no")
        .output()
        .expect("run cargo-gevaldi")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stdout of a run that must exit with 1 (a trial failed).
fn failed(out: &Output) -> String {
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    stdout
}

fn chromium() -> String {
    if let Ok(c) = std::env::var("GEVALDI_CHROMIUM") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!(
        "this test opens the report in headless Chromium, and none was found: install it \
         (Debian: `apt-get install chromium`) or name it in GEVALDI_CHROMIUM"
    );
}

fn headless(args: &[&str]) -> Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        text(&out.stderr)
    );
    out
}

/// Opens `index` in an iframe of a page beside it and returns, from the
/// page's script, every `<img>` of the report (src, loaded, width) and every
/// trial section (name, verdict).
fn inspect(index: &Path) -> Value {
    let check = index.with_file_name("check.html");
    std::fs::write(
        &check,
        r#"<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="index.html" width="1280" height="800"></iframe>
<script>
document.getElementById('report').addEventListener('load', function () {
  var d = this.contentDocument, out = {images: [], trials: []};
  for (var img of d.images)
    out.images.push({src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth});
  for (var s of d.querySelectorAll('section[data-trial]'))
    out.trials.push({name: s.dataset.trial, verdict: s.dataset.verdict});
  out.heatmaps = [];
  for (var h of d.querySelectorAll('table.heatmap'))
    out.heatmaps.push({models: h.dataset.models, rows: h.rows.length, cells: h.querySelectorAll('td').length,
                       coloured: h.querySelectorAll('td[style*="background"]').length});
  out.ranking_rows = d.querySelectorAll('table.ranking tr').length;
  document.getElementById('result').textContent = JSON.stringify(out);
});
</script></body></html>"#,
    )
    .unwrap();
    let url = format!("file://{}", check.display());
    let out = headless(&[
        "--allow-file-access-from-files",
        "--virtual-time-budget=20000",
        "--dump-dom",
        &url,
    ]);
    let dom = text(&out.stdout);
    let start = dom.find("<pre id=\"result\">").expect("the check page") + 17;
    let end = start + dom[start..].find("</pre>").unwrap();
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn trials_of(config: &Path) -> Vec<String> {
    let c = gevaldi::config::load(config).unwrap();
    c.pairs
        .iter()
        .map(|p| format!("pair::{}", p.name))
        .chain(c.ensembles.iter().map(|e| format!("ensemble::{}", e.name)))
        .chain(
            c.tournaments
                .iter()
                .map(|t| format!("tournament::{}", t.name)),
        )
        .collect()
}

fn report_line(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no `report:` line in\n{stdout}"));
    PathBuf::from(line)
}

#[test]
fn the_first_quick_start_command_writes_a_report_that_chromium_shows_whole() {
    let target = target("report-test");
    let _ = std::fs::remove_dir_all(&target);
    // `cargo run --release -- run` in the repository: no CONFIG.
    let out = cli(&target, &["run"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "running the built-in MNIST suite {}",
            target
                .join("cache/gevaldi")
                .join(env!("CARGO_PKG_VERSION"))
                .join("mnist/gevaldi.toml")
                .display()
        )),
        "{stderr}"
    );
    let config = workspace().join("fixtures/mnist/gevaldi.toml");
    let trials = trials_of(&config);
    // The summary table has a row per trial.
    for t in &trials {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(t.as_str()) && l.contains("passed")),
            "{t} missing from the table:\n{stdout}"
        );
    }
    let index = report_line(&stdout);
    assert_eq!(index, target.join("gevaldi/mnist/gevaldi/index.html"));

    // `report` rebuilds the HTML and the plots from the records alone.
    std::fs::remove_file(&index).unwrap();
    std::fs::remove_dir_all(index.with_file_name("plots")).unwrap();
    let out = cli(&target, &["report"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(report_line(&text(&out.stdout)), index);
    assert!(text(&out.stdout).contains("4 trials: 4 passed, 0 failed, 0 without a record"));

    let seen = inspect(&index);
    let shown: Vec<&str> = seen["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(shown, trials, "{seen}");
    assert!(seen["trials"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["verdict"] == "passed"));
    let images = seen["images"].as_array().unwrap();
    // Per pair: its grid and three plots; the ensemble: regions and
    // latents; the tournament: the grids of its two closest pairs.
    assert_eq!(images.len(), 2 * 4 + 2 + 2, "{seen}");
    for img in images {
        assert_eq!(img["loaded"], true, "did not load: {img}");
    }
    for grid in [
        "cnn_a-vs-cnn_b.png",
        "cnn_b-vs-cnn_a.png",
        "ensemble-bagging/regions.png",
    ] {
        let img = images.iter().find(|i| i["src"] == grid).unwrap();
        // 8 columns of 4x-upscaled digits.
        assert_eq!(img["width"], 8 + 8 * (112 + 8), "{img}");
    }
    // Issue 18: the tournament's heatmap of win rates (7 models: a header
    // row and 7 rows of 7 cells, every cell off the diagonal coloured),
    // its ranking (a header and 7 rows) and its closest pairs' grids.
    let heatmaps = seen["heatmaps"].as_array().unwrap();
    assert_eq!(heatmaps.len(), 1, "{seen}");
    assert_eq!(heatmaps[0]["models"], "7", "{seen}");
    assert_eq!(heatmaps[0]["rows"], 8, "{seen}");
    assert_eq!(heatmaps[0]["cells"], 49, "{seen}");
    assert_eq!(heatmaps[0]["coloured"], 42, "{seen}");
    assert_eq!(seen["ranking_rows"], 8, "{seen}");
    let grids: Vec<&Value> = images
        .iter()
        .filter(|i| i["src"].as_str().unwrap().starts_with("tournament-mnist/"))
        .collect();
    assert_eq!(grids.len(), 2, "{seen}");

    // The check can fail: without a picture, its <img> is reported broken.
    let broken = target.join("broken");
    copy_dir(index.parent().unwrap(), &broken);
    std::fs::remove_file(broken.join("plots/cnn_a-vs-cnn_b-dz.svg")).unwrap();
    let seen = inspect(&broken.join("index.html"));
    let not_loaded: Vec<&Value> = seen["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["loaded"] != true)
        .collect();
    assert_eq!(not_loaded.len(), 1, "{seen}");
    assert_eq!(not_loaded[0]["src"], "plots/cnn_a-vs-cnn_b-dz.svg");

    // The screenshot, kept for people to look at.
    let shot = target.join("screenshot.png");
    headless(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,4200",
        &format!("file://{}", index.display()),
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{}",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn failing_trials_fail_the_command_and_show_in_the_report() {
    let target = target("report-failing");
    let _ = std::fs::remove_dir_all(&target);
    let config = workspace().join("tests/harness/failing.toml");
    let out = cli(&target, &["run", config.to_str().unwrap()]);
    let stdout = failed(&out);
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" FAILED "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "pair::strict",
            "pair::strict-set-distance",
            "tournament::mlp-champion"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("3 of 4 trials failed"), "{stdout}");
    let html = std::fs::read_to_string(report_line(&stdout)).unwrap();
    assert!(html.contains("4 trials, 1 passed, 3 failed, 0 without a record"));
    assert!(
        html.contains("above max_divergence = 0.05"),
        "the failure is in the report"
    );
}

/// Regression: a trial marked `ignore = true` after a failing run kept
/// counting as failed in the report, beside a green `cargo test`. Its
/// record is shown as ignored, counted with those without a record.
#[test]
fn an_ignored_trial_s_old_record_is_not_counted_as_its_verdict() {
    let target = target("report-ignored");
    let _ = std::fs::remove_dir_all(&target);
    let dir = target.join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = workspace().join("fixtures/mnist/");
    let original = std::fs::read_to_string(workspace().join("tests/harness/failing.toml"))
        .unwrap()
        .replace("../../fixtures/mnist/", fixtures.to_str().unwrap());
    let config = dir.join("failing.toml");
    std::fs::write(&config, &original).unwrap();
    let out = cli(
        &target,
        &["run", config.to_str().unwrap(), "--filter", "pair::strict"],
    );
    failed(&out);
    let ignored = original.replacen(
        "max_divergence = 0.05\n",
        "max_divergence = 0.05\nignore = true\n",
        1,
    );
    assert_ne!(ignored, original);
    std::fs::write(&config, ignored).unwrap();
    let out = cli(&target, &["report", config.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        // pair::strict-set-distance ran too (the filter is a substring)
        stdout.contains("4 trials: 0 passed, 1 failed, 3 without a record"),
        "{stdout}"
    );
    let index = report_line(&stdout);
    // Where the records were sought, for a run under another target folder.
    assert!(
        stdout.contains(&format!(
            "records sought in {}: 3 of the trials had none there",
            index.parent().unwrap().display()
        )),
        "{stdout}"
    );
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("ignored; its last record: "), "{html}");
}

#[test]
fn a_trial_that_stops_on_an_error_replaces_its_old_record_in_the_report() {
    let target = target("report-error");
    let _ = std::fs::remove_dir_all(&target);
    let dir = target.join("suite-with-a-missing-file");
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = workspace().join("fixtures/mnist");
    let toml = |cnn_b: &str| {
        format!(
            "[search]\nsteps = 3\nbatch = 4\n\n\
             [generator.vae]\narch = \"mnist-vae\"\nweights = \"{}\"\n\n\
             [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = \"{}\"\n\n\
             [classifier.cnn_b]\narch = \"mnist-cnn-b\"\nweights = \"{cnn_b}\"\n\n\
             [[pair]]\nname = \"a-vs-b\"\nmodels = [\"cnn_a\", \"cnn_b\"]\ngenerator = \"vae\"\n",
            fixtures.join("vae.safetensors").display(),
            fixtures.join("cnn_a.safetensors").display(),
        )
    };
    let config = dir.join("gevaldi.toml");
    let good = fixtures.join("cnn_b.safetensors");
    std::fs::write(&config, toml(&good.display().to_string())).unwrap();
    let out = cli(&target, &["run", config.to_str().unwrap()]);
    // A new pair has no snapshot yet: with INSTA_UPDATE=no that fails, but
    // the search ran and left its record.
    let stdout = text(&out.stdout);
    let index = report_line(&stdout);
    let record = index.with_file_name("a-vs-b.json");
    assert!(std::fs::read_to_string(&record)
        .unwrap()
        .contains(r#""kind":"pair""#));

    // The config names files that exist (a missing one is a config error,
    // found before any trial runs); this one is not safetensors.
    std::fs::write(dir.join("truncated.safetensors"), b"\x10\x00\x00").unwrap();
    std::fs::write(&config, toml("truncated.safetensors")).unwrap();
    let out = cli(&target, &["run", config.to_str().unwrap()]);
    let stdout = failed(&out);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("pair::a-vs-b "))
        .unwrap();
    assert!(
        row.contains("FAILED") && row.contains("truncated.safetensors"),
        "{row}"
    );
    let json = std::fs::read_to_string(&record).unwrap();
    assert!(json.contains(r#""kind":"error""#), "{json}");
    assert!(json.contains("truncated.safetensors"), "{json}");
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(html.contains("data-verdict=\"error\""), "{html}");
    assert!(html.contains("truncated.safetensors"));
}
