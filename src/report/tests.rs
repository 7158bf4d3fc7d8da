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

/// A consistent record of the ordered pair (a, b) under kl in which a won
/// `wins_a` samples and b none, plus one tie (condition 0 throughout).
fn pair_won(a: &str, b: &str, wins_a: usize) -> crate::tournament::PairResult {
    crate::tournament::pair_won_under(crate::Divergence::Kl, a, b, wins_a)
}

/// Regression: the report's ranking table numbered tied models by the
/// config's order (`#2 b`, `#3 c`, MAD rank `#2` and `#3`) while the
/// verdict on the same page read both as 3rd ("`b` ranks #3 …, not above
/// `c` (#3)") and the headline as `a > b = c`: a tie reads as the places
/// the tied models share, `2–3`, in both rank columns.
#[test]
fn the_ranking_table_shows_tied_models_sharing_their_places() {
    use crate::tournament::{RankingMethod, TournamentOutcome};
    let models: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    // a beats b and c; b and c decide nothing between them.
    let pairs = vec![
        pair_won("a", "b", 3),
        pair_won("a", "c", 3),
        pair_won("b", "a", 0),
        pair_won("b", "c", 0),
        pair_won("c", "a", 0),
        pair_won("c", "b", 0),
    ];
    let outcome = TournamentOutcome::from_pairs(&models, pairs, None).unwrap();
    assert_eq!(outcome.ranking_line(RankingMethod::Mad), "a > b = c");
    assert_eq!(
        outcome.ranking_line(RankingMethod::BradleyTerry),
        "a > b = c"
    );
    let t = artifact(outcome);
    let dir = tempfile::tempdir().unwrap();
    let html = super::tournament::tournament_section(dir.path(), &t, 0);
    let rows: Vec<(String, String, String)> = html
        .split("<tr><td class=\"num\">")
        .skip(1)
        .map(|row| {
            let cells: Vec<&str> = row.split("<td").collect();
            let place = row.split('<').next().unwrap().to_string();
            let model = cells[1].split("<code>").nth(1).unwrap();
            let model = model.split('<').next().unwrap().to_string();
            let mad = cells[4].split('>').nth(1).unwrap();
            let mad = mad.split('<').next().unwrap().to_string();
            (place, model, mad)
        })
        .collect();
    let expected = [("1", "a", "#1"), ("2–3", "b", "#2–3"), ("2–3", "c", "#2–3")]
        .map(|(p, m, r)| (p.to_string(), m.to_string(), r.to_string()));
    assert_eq!(rows, expected, "{html}");
}

/// The record of a tournament `t` over `cvae` with `outcome`, no
/// thresholds, 4 samples a pair.
fn artifact(outcome: crate::tournament::TournamentOutcome) -> crate::artifact::TournamentArtifact {
    use crate::snapshot::{Settings, TournamentSummary};
    let mut config = crate::search::SearchConfig::default();
    if let Some(p) = outcome.pairs.first() {
        config.divergence = p.divergence.clone();
    }
    let summary = TournamentSummary::new("t", "cvae", Settings::of(&config), 4, &outcome);
    crate::artifact::TournamentArtifact {
        config: "gevaldi.toml".into(),
        summary,
        outcome,
        thresholds: Default::default(),
        test_data: None,
        weights: Some(Vec::new()),
        latent_support: None,
        outside_support: None,
        class_names: vec!["0".into(), "1".into()],
        passed: true,
        failures: Vec::new(),
        grids: Vec::new(),
        seconds: 0.0,
        written_at: 0,
    }
}

/// Regression: under a divergence symmetric in the two models (js,
/// jeffreys, tv) a tournament searches one order of each pair and counts
/// its samples once, and the harness said "3 pairs x 4 samples"; the
/// report's index said "6 pairs × 4 samples" and its section "6 ordered
/// pairs × 4 MDS samples, searched with js", twice the searches and the
/// samples there were. Both count the searches; an asymmetric divergence
/// keeps every ordered pair.
#[test]
fn the_report_counts_the_pairs_searched_under_a_symmetric_divergence() {
    use crate::tournament::{PairResult, TournamentOutcome};
    let models: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let outcome =
        |divergence: crate::Divergence| {
            let searched = [("a", "b", 2), ("a", "c", 3), ("b", "c", 1)];
            let mut pairs: Vec<PairResult> = searched
                .iter()
                .map(|&(a, b, w)| crate::tournament::pair_won_under(divergence.clone(), a, b, w))
                .collect();
            if divergence.symmetric() {
                let mirrors: Vec<PairResult> = pairs.iter().map(PairResult::mirrored).collect();
                pairs.extend(mirrors);
            } else {
                pairs.extend(searched.iter().map(|&(a, b, _)| {
                    crate::tournament::pair_won_under(divergence.clone(), b, a, 0)
                }));
            }
            TournamentOutcome::from_pairs(&models, pairs, None).unwrap()
        };
    let dir = tempfile::tempdir().unwrap();
    let js = artifact(outcome(crate::Divergence::js()));
    assert_eq!(js.outcome.searches(), 3);
    let html = super::tournament::tournament_section(dir.path(), &js, 0);
    assert!(
        html.contains(
            "3 models over <code>cvae</code>: 3 pairs (one for both orders of each: js is \
             symmetric in the two models) × 4 MDS samples, searched with js"
        ),
        "{html}"
    );
    let line = headline(&crate::artifact::Record::Tournament(Box::new(js)));
    assert!(line.ends_with("by mad; 3 pairs × 4 samples"), "{line}");
    let kl = artifact(outcome(crate::Divergence::Kl));
    assert_eq!(kl.outcome.searches(), 6);
    let html = super::tournament::tournament_section(dir.path(), &kl, 0);
    assert!(
        html.contains(
            "3 models over <code>cvae</code>: 6 ordered pairs × 4 MDS samples, searched with kl"
        ),
        "{html}"
    );
    let line = headline(&crate::artifact::Record::Tournament(Box::new(kl)));
    assert!(line.ends_with("by mad; 6 pairs × 4 samples"), "{line}");
}

/// A tournament's record of the trial the config declares is not stale,
/// and the report says that the code of a model registered from Rust
/// cannot be checked against the run's (the files its table names are);
/// once that file changes, the trial is stale, naming the model.
#[test]
fn a_registered_model_s_code_is_named_unchecked_and_its_files_checked() {
    use crate::tournament::TournamentOutcome;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.safetensors"), b"{}").unwrap();
    std::fs::write(dir.path().join("c.bin"), b"c").unwrap();
    let text = "[generator.cvae]\narch = \"mnist-cvae\"\nweights = \"w.safetensors\"\n\
                [classifier.a]\narch = \"mnist-cnn-a\"\nweights = \"w.safetensors\"\n\
                [classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"w.safetensors\"\n\
                [classifier.c]\nfile = \"c.bin\"\n\
                [[tournament]]\nname = \"t\"\nmodels = [\"a\", \"b\", \"c\"]\n\
                generator = \"cvae\"\nsamples = 4\n";
    let path = dir.path().join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let config = crate::config::parse(text, &path).unwrap();
    let models: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let pairs = vec![
        pair_won("a", "b", 3),
        pair_won("a", "c", 3),
        pair_won("b", "a", 0),
        pair_won("b", "c", 2),
        pair_won("c", "a", 0),
        pair_won("c", "b", 0),
    ];
    let outcome = TournamentOutcome::from_pairs(&models, pairs, None).unwrap();
    let mut t = artifact(outcome);
    t.weights = Some(artifact::ModelFiles::of_trial(&config, "cvae", &models));
    let record = artifact::tournament_record(&artifact_dir(&path), "t");
    Record::Tournament(Box::new(t)).write(&record).unwrap();
    let report = || {
        let written = write(&config).unwrap();
        let html = std::fs::read_to_string(&written.index).unwrap();
        (written, html)
    };
    let (written, html) = report();
    assert_eq!(
        (written.passed, written.stale_records.len()),
        (1, 0),
        "{html}"
    );
    assert!(
        html.contains(
            "<p>The code of <code>c</code> (registered from Rust) cannot be checked against \
             the run's"
        ),
        "{html}"
    );
    std::fs::write(dir.path().join("c.bin"), b"retrained").unwrap();
    let (written, html) = report();
    let _ = std::fs::remove_dir_all(written.index.parent().unwrap());
    assert_eq!(
        (written.passed, written.stale_records.len()),
        (0, 1),
        "{html}"
    );
    assert_eq!(
        written.stale_records,
        [(
            TrialId::tournament("t"),
            vec![Difference::Weights { model: "c".into() }]
        )]
    );
    assert!(
        html.contains("weights of `c` changed since the run"),
        "{html}"
    );
}
