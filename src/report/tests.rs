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
