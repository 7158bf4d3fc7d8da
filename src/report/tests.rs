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

/// The report names the generator's truncation beside it, and notes the
/// latents a search left outside its support only when any did.
#[test]
fn the_truncation_and_the_latents_outside_its_box_are_shown() {
    use crate::model::LatentSupport;
    use crate::search::OutsideSupport;
    let support = LatentSupport::TruncatedNormal {
        truncation: 0.4,
        cut: 2.0,
    };
    assert_eq!(
        html::support_text(Some(support)),
        " at truncation 0.4 (its prior's latents in the box |z| ≤ 0.8)"
    );
    assert_eq!(
        html::support_text(Some(LatentSupport::Box { half_width: 1.5 })),
        " (its prior's latents in the box |z| ≤ 1.5)"
    );
    assert_eq!(html::support_text(None), "");
    assert_eq!(html::outside_support_note(None), "");
    let o = OutsideSupport::of_counts("big", support, &[0, 5, 0, 7, 0, 0, 0, 0], 128);
    assert_eq!(
        html::outside_support_note(Some(o)),
        "<p class=\"outside-support\">Note: 12 of 8×128 latent coordinates (in 2 of 8 \
         samples) ended outside generator `big`&#39;s truncation box |z| ≤ 0.8 (truncation \
         0.4); the images there are beyond what the generator was sampled on.</p>"
    );
}
