//! Unit tests of the report.

use super::*;

#[test]
fn text_and_paths_are_escaped() {
    assert_eq!(
        esc("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
    assert_eq!(url("plots/a b#1.svg"), "plots/a%20b%231.svg");
    assert_eq!(
        anchor(&TrialId::pair("cnn_a-vs-cnn_b")),
        "pair-cnn_a-vs-cnn_b"
    );
    assert_eq!(url_stem("a/b c"), "a_b_c");
}

#[test]
fn ages_read_naturally() {
    assert_eq!(age(100, 130), "30 s before this report");
    assert_eq!(age(0, 180), "3 min before this report");
    assert_eq!(age(0, 7200), "2 h before this report");
}

/// Regression: "1 regions of uncertainty".
#[test]
fn counts_are_singular_for_one() {
    assert_eq!(super::count(1, "region"), "1 region");
    assert_eq!(super::count(0, "region"), "0 regions");
    assert_eq!(super::count(39, "region"), "39 regions");
}

/// Regression: the index of a config of one trial said "1 trials".
#[test]
fn the_index_counts_one_trial_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.safetensors"), b"{}").unwrap();
    let text = "[generator.vae]\narch = \"mnist-vae\"\nweights = \"w.safetensors\"\n\
                [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"w.safetensors\"\n\
                [classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"w.safetensors\"\n\
                [[pair]]\nname = \"p\"\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n";
    let path = dir.path().join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let config = crate::config::parse(text, &path).unwrap();
    let written = write(&config).unwrap();
    let html = std::fs::read_to_string(&written.index).unwrap();
    let _ = std::fs::remove_dir_all(written.index.parent().unwrap());
    assert!(
        html.contains("</code>: 1 trial, 0 passed, 0 failed, 1 without a record"),
        "{html}"
    );
}
