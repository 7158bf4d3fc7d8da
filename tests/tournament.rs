//! Tournaments on the committed MNIST fixtures: cnn_a, cnn_b and two of the
//! bagging MLPs over the cVAE, with few samples and steps. Structural facts
//! only (the win matrix is the sum of the pairs' winners, the rankings are
//! permutations, the estimates are finite, the result does not depend on
//! the thread count): the figures of the full 7-model tournament are the
//! example `tournament`'s.

mod common;

use std::sync::OnceLock;

use candle_core::Device;
use gevaldi::model::Classifier;
use gevaldi::ranking::WinMatrix;
use gevaldi::tournament::{
    run_pair, MinWinRate, PairResult, PairSettings, RankingMethod, Tournament, TournamentOutcome,
    TournamentThresholds, Winner,
};
use gevaldi::zoo::{
    self, MnistCnn, MnistCnnConfig, MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig,
};
use gevaldi::SearchConfig;

struct Models {
    cnn_a: MnistCnn,
    cnn_b: MnistCnn,
    bag_0: MnistMlp,
    bag_1: MnistMlp,
    cvae: MnistVae,
    vae: MnistVae,
}

fn models(dev: &Device) -> Models {
    let dir = zoo::mnist_fixtures_dir();
    let mlp = |name: &str| {
        zoo::load_file(dir.join(format!("{name}.safetensors")), name, dev, |vb| {
            MnistMlp::load(vb, &MnistMlpConfig::default())
        })
        .unwrap()
    };
    let cnn = |name: &str, cfg: MnistCnnConfig| {
        zoo::load_file(dir.join(format!("{name}.safetensors")), name, dev, |vb| {
            MnistCnn::load(vb, &cfg)
        })
        .unwrap()
    };
    let cvae = zoo::load_file(dir.join("cvae.safetensors"), "cvae", dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::conditional())
    })
    .unwrap();
    let vae = zoo::load_file(dir.join("vae.safetensors"), "vae", dev, |vb| {
        MnistVae::load(vb, &MnistVaeConfig::default())
    })
    .unwrap();
    Models {
        cnn_a: cnn("cnn_a", MnistCnnConfig::cnn_a()),
        cnn_b: cnn("cnn_b", MnistCnnConfig::cnn_b()),
        bag_0: mlp("bag_0"),
        bag_1: mlp("bag_1"),
        cvae,
        vae,
    }
}

fn fixtures() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| models(&common::device()))
}

/// 25 samples per ordered pair in chunks of 10 (so a pair has a short last
/// chunk), 15 Adam steps.
fn config(seed: u64) -> SearchConfig {
    SearchConfig::default()
        .steps(15)
        .batch(10)
        .lr(0.1)
        .seed(seed)
}

const SAMPLES: usize = 25;

fn tournament(m: &Models, seed: u64) -> Tournament<'_> {
    Tournament::new("cvae", &m.cvae)
        .model("cnn_a", &m.cnn_a)
        .model("cnn_b", &m.cnn_b)
        .model("bag_0", &m.bag_0)
        .model("bag_1", &m.bag_1)
        .config(config(seed))
        .samples(SAMPLES)
        // Any four accuracies: the SRCC's wiring, not its value, is tested.
        .test_accuracy(vec![0.98, 0.979, 0.915, 0.9105])
}

/// The tournament of seed 0 on one thread, run once per test binary.
fn outcome() -> &'static TournamentOutcome {
    static OUTCOME: OnceLock<TournamentOutcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        tournament(fixtures(), 0)
            .threads(1)
            .run(&common::device())
            .unwrap()
    })
}

fn is_permutation(order: &[usize], n: usize) -> bool {
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    sorted == (0..n).collect::<Vec<_>>()
}

#[test]
fn the_win_matrix_sums_the_pairs_winners_and_the_rankings_are_permutations() {
    let o = outcome();
    let n = o.models.len();
    assert_eq!(n, 4);
    assert_eq!(o.pairs.len(), n * (n - 1));
    let mut wins = WinMatrix::zeros(n);
    let mut decided = 0;
    for p in &o.pairs {
        p.check().unwrap();
        assert_eq!(p.conditions.len(), SAMPLES);
        // Conditions spread evenly: 25 over 10 classes is 2 or 3 each.
        for c in 0..10 {
            let count = p.conditions.iter().filter(|&&x| x == c).count();
            assert!(
                (2..=3).contains(&count),
                "{}: class {c} {count} times",
                p.name()
            );
        }
        let (i, j) = (o.index(&p.a).unwrap(), o.index(&p.b).unwrap());
        for (k, w) in p.winners.iter().enumerate() {
            let (a_right, b_right) = (
                p.prediction_a[k] == p.conditions[k],
                p.prediction_b[k] == p.conditions[k],
            );
            match w {
                Winner::A => {
                    assert!(a_right && !b_right);
                    wins.add(i, j, 1);
                }
                Winner::B => {
                    assert!(b_right && !a_right);
                    wins.add(j, i, 1);
                }
                Winner::Tie => assert_eq!(a_right, b_right),
            }
        }
        decided += p.wins_a + p.wins_b;
        assert!((0.0..=1.0).contains(&p.accuracy_a) && (0.0..=1.0).contains(&p.accuracy_b));
        assert!(p.divergence_after.iter().all(|d| d.is_finite()));
    }
    assert_eq!(o.wins, wins);
    // The search finds samples on which someone is right and someone wrong:
    // without any, the ranking would say nothing.
    assert!(decided > 0, "no sample decided any pair");

    assert!(is_permutation(&o.power.order, n), "{:?}", o.power.order);
    assert!(is_permutation(&o.bradley_terry.order, n));
    for v in o
        .power
        .scores
        .iter()
        .chain(&o.bradley_terry.theta)
        .chain(&o.bradley_terry.se)
        .chain(&o.mds_accuracy)
        .chain(&o.start_accuracy)
    {
        assert!(v.is_finite(), "{o:?}");
    }
    assert!(o.bradley_terry.se.iter().all(|&s| s > 0.0));
    assert!(o.bradley_terry.theta.iter().sum::<f64>().abs() < 1e-9);
    // The power scores are ordered as the order says.
    for w in o.power.order.windows(2) {
        assert!(o.power.scores[w[0]] >= o.power.scores[w[1]]);
    }
    assert!(o.srcc_power.is_some() && o.srcc_bradley_terry.is_some());
    let names = o.ranking(RankingMethod::Mad);
    assert_eq!(o.rank(names[0], RankingMethod::Mad), Some(1));
}

#[test]
fn two_threads_give_the_same_outcome_as_one() {
    let two = tournament(fixtures(), 0)
        .threads(2)
        .run(&common::device())
        .unwrap();
    assert_eq!(&two, outcome());
}

#[test]
fn a_pair_run_alone_is_the_pair_of_the_tournament() {
    let m = fixtures();
    let dev = common::device();
    let settings = PairSettings {
        config: config(0),
        samples: SAMPLES,
    };
    let alone = run_pair(
        ("bag_1", &m.bag_1 as &dyn Classifier),
        ("cnn_a", &m.cnn_a as &dyn Classifier),
        ("cvae", &m.cvae),
        &settings,
        &dev,
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(Some(&alone.result), outcome().pair("bag_1", "cnn_a"));
    assert_eq!(alone.x.dims(), [SAMPLES, 1, 28, 28]);
    // Assembling the outcome from the pairs' results, as a harness does
    // from per-pair records, in any order, gives the same outcome.
    let o = outcome();
    let mut pairs = o.pairs.clone();
    pairs.reverse();
    let again = TournamentOutcome::from_pairs(&o.models, pairs, o.test_accuracy.clone()).unwrap();
    assert_eq!(&again, o);
    // A missing pair is an error naming it.
    let short = o.pairs[1..].to_vec();
    let e = TournamentOutcome::from_pairs(&o.models, short, None).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("no result for `{}`", o.pairs[0].name())),
        "{e}"
    );
}

/// Regression: each pair's seed came from the two models' names, so a
/// model and its copy (the same weights under another name) were searched
/// from other starting latents and conditions against every third model,
/// and the copy ranked below or above the original by chance: here the
/// copy ranked below, and `above = [["cnn_a", "copy"]]` passed. Every pair
/// now starts from the tournament's own latents and conditions (common
/// random numbers, as MAD draws every pair's images from one pool), so
/// a copy ties with its original in both rankings and passes no rank
/// threshold against it, whatever the names.
#[test]
fn a_copy_of_a_model_ties_with_it() {
    let m = fixtures();
    let o = Tournament::new("cvae", &m.cvae)
        .model("cnn_a", &m.cnn_a)
        .model("copy", &m.cnn_a)
        .model("bag_0", &m.bag_0)
        .config(config(0))
        .samples(SAMPLES)
        .run(&common::device())
        .unwrap();
    assert_eq!(
        o.wins.get(0, 1) + o.wins.get(1, 0),
        0,
        "a copy never disagrees"
    );
    assert_eq!(o.wins.rows()[0][2], o.wins.rows()[1][2], "{:?}", o.wins);
    assert_eq!(o.wins.rows()[2][0], o.wins.rows()[2][1], "{:?}", o.wins);
    for ranking in [RankingMethod::Mad, RankingMethod::BradleyTerry] {
        let levels = o.levels(ranking);
        assert_eq!(levels[0], levels[1], "{ranking:?}: {:?}", o.scores(ranking));
        let t = TournamentThresholds {
            ranking,
            above: vec![
                ("cnn_a".into(), "copy".into()),
                ("copy".into(), "cnn_a".into()),
            ],
            ..Default::default()
        };
        assert_eq!(t.check(&o).len(), 2, "{ranking:?}");
    }
}

/// With a divergence symmetric in its two models (`js`, `jeffreys`, `tv`),
/// the pairs (a, b) and (b, a) start from the same latents and conditions
/// and ascend the same objective: the same search twice. The tournament
/// runs it once, for (a, b) with a first in its order, and (b, a) is its
/// mirror, which must be what searching (b, a) gives: checked here against
/// (b, a) searched by `run_pair` itself, for every pair. Its samples count
/// once in the win matrix, not twice, which would halve the Bradley–Terry
/// standard errors' variance as if the duplicates were new samples.
#[test]
fn a_symmetric_divergence_searches_each_pair_once() {
    let m = fixtures();
    let dev = common::device();
    let js = config(0).divergence(gevaldi::Divergence::js());
    let models: [(&str, &(dyn Classifier + Sync)); 3] = [
        ("cnn_a", &m.cnn_a),
        ("bag_0", &m.bag_0),
        ("bag_1", &m.bag_1),
    ];
    let mut t = Tournament::new("cvae", &m.cvae)
        .config(js.clone())
        .samples(SAMPLES);
    for (name, model) in models {
        t = t.model(name, model);
    }
    assert_eq!(t.searched_pairs(), [(0, 1), (0, 2), (1, 2)]);
    let total = std::sync::Mutex::new(0);
    let o = t
        .run_with_progress(&dev, &|_, all| *total.lock().unwrap() = all)
        .unwrap();
    let steps = SAMPLES.div_ceil(10) as u64 * 15;
    assert_eq!(*total.lock().unwrap(), 3 * steps, "three searches, not six");
    let settings = PairSettings {
        config: js,
        samples: SAMPLES,
    };
    for i in 0..3 {
        for j in (i + 1)..3 {
            let (a, b) = (models[i].0, models[j].0);
            let (ab, ba) = (o.pair(a, b).unwrap(), o.pair(b, a).unwrap());
            let searched = run_pair(
                (b, models[j].1 as &dyn Classifier),
                (a, models[i].1 as &dyn Classifier),
                ("cvae", &m.cvae),
                &settings,
                &dev,
                &|_, _| {},
            )
            .unwrap();
            assert_eq!(ba, &searched.result, "{b}-vs-{a}: the mirror is the search");
            assert_eq!(ba, &ab.mirrored());
            assert_eq!(
                (o.wins.get(i, j), o.wins.get(j, i)),
                (ab.wins_a, ab.wins_b),
                "{}: counted once",
                ab.name()
            );
        }
    }
    // Run alone, the pair that is not searched is the mirror of the one
    // that is.
    assert_eq!(
        &t.run_pair(2, 0, &dev, &|_, _| {}).unwrap().result,
        o.pair("bag_1", "cnn_a").unwrap()
    );
}

/// Regression: `js` with weights of its own (the library's, not a
/// config's) is not symmetric in its two models, so every ordered pair is
/// searched and both orders' samples count. The pair's record said only
/// `js`, which read back as uniform JS, symmetric: the outcome skipped the
/// samples of every (j, i) with j after i, although they were searched.
#[test]
fn a_weighted_js_counts_both_orders_of_every_pair() {
    let m = fixtures();
    let dev = common::device();
    let weighted = gevaldi::Divergence::Js {
        weights: Some(vec![1.0, 3.0]),
    };
    let t = Tournament::new("cvae", &m.cvae)
        .model("cnn_a", &m.cnn_a)
        .model("bag_0", &m.bag_0)
        .model("bag_1", &m.bag_1)
        .config(config(0).divergence(weighted.clone()))
        .samples(SAMPLES);
    assert_eq!(t.searched_pairs().len(), 6, "every order searched");
    let o = t.run(&dev).unwrap();
    assert!(o.pairs.iter().all(|p| p.divergence == weighted));
    // The record keeps the weights: read back and assembled again from its
    // pairs (as the verdict assembles per-pair records), the same wins.
    let back: TournamentOutcome =
        serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert!(back.pairs.iter().all(|p| p.divergence == weighted));
    let again = TournamentOutcome::from_pairs(&back.models, back.pairs, None).unwrap();
    assert_eq!(again.wins, o.wins);
    let names = ["cnn_a", "bag_0", "bag_1"];
    for i in 0..3 {
        for j in (i + 1)..3 {
            let (ab, ba) = (
                o.pair(names[i], names[j]).unwrap(),
                o.pair(names[j], names[i]).unwrap(),
            );
            assert_eq!(
                (o.wins.get(i, j), o.wins.get(j, i)),
                (ab.wins_a + ba.wins_b, ab.wins_b + ba.wins_a),
                "{}: both orders count",
                ab.name()
            );
        }
    }
    // Each model met two others in both orders: 4 MDS sets.
    let right = |p: &PairResult, first: bool| {
        let pred = if first {
            &p.prediction_a
        } else {
            &p.prediction_b
        };
        pred.iter()
            .zip(&p.conditions)
            .filter(|(x, c)| x == c)
            .count()
    };
    for (i, name) in names.iter().enumerate() {
        let correct: usize = o
            .pairs
            .iter()
            .filter(|p| p.a == *name || p.b == *name)
            .map(|p| right(p, p.a == *name))
            .sum();
        assert_eq!(
            o.mds_accuracy[i],
            correct as f64 / (4 * SAMPLES) as f64,
            "{name}"
        );
    }
}

#[test]
fn a_seed_gives_the_same_samples_and_another_seed_others() {
    let m = fixtures();
    let dev = common::device();
    let (i, j) = (0, 2);
    let t0 = tournament(m, 0);
    let again = t0.run_pair(i, j, &dev, &|_, _| {}).unwrap().result;
    assert_eq!(Some(&again), outcome().pair("cnn_a", "bag_0"));
    let other = tournament(m, 1)
        .run_pair(i, j, &dev, &|_, _| {})
        .unwrap()
        .result;
    assert_ne!(other.seed, again.seed);
    assert_ne!(other.z, again.z);
}

#[test]
fn the_record_reads_back() {
    let o = outcome();
    let json = serde_json::to_value(o).unwrap();
    let back: TournamentOutcome = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.models, o.models);
    assert_eq!(back.wins, o.wins);
    assert_eq!(back.power.order, o.power.order);
    for (p, q) in back.pairs.iter().zip(&o.pairs) {
        assert_eq!(
            (&p.winners, &p.conditions, &p.prediction_a),
            (&q.winners, &q.conditions, &q.prediction_a)
        );
    }
    assert!(
        matches!(
            json["pairs"][0]["winners"][0].as_str(),
            Some("a" | "b" | "tie")
        ),
        "{}",
        json["pairs"][0]["winners"][0]
    );
}

#[test]
fn thresholds_pass_and_fail_with_messages_naming_the_ranking() {
    let o = outcome();
    let names = o.ranking(RankingMethod::Mad);
    let (first, last) = (names[0].to_string(), names[names.len() - 1].to_string());
    let holds = TournamentThresholds {
        champion: Some(first.clone()),
        max_rank: vec![(names[2].to_string(), 3)],
        above: vec![(first.clone(), last.clone())],
        ..Default::default()
    };
    holds.validate(&o.models).unwrap();
    let held: Vec<String> = holds.check(o).iter().map(ToString::to_string).collect();
    assert_eq!(held, Vec::<String>::new());

    let fails = TournamentThresholds {
        champion: Some(last.clone()),
        above: vec![(last.clone(), first.clone())],
        min_win_rate: vec![MinWinRate {
            model: last.clone(),
            against: first.clone(),
            min: 1.0,
        }],
        ..Default::default()
    };
    let failures: Vec<String> = fails.check(o).iter().map(ToString::to_string).collect();
    assert_eq!(
        failures.len(),
        2 + usize::from(o.win_rate(&last, &first) != Some(1.0))
    );
    assert!(
        failures[0].contains(&format!("champion `{last}` ranks #4 by mad")),
        "{failures:?}"
    );
    assert!(failures[0].contains(&names.join(" > ")), "{failures:?}");

    let unknown = TournamentThresholds {
        champion: Some("cnn_c".into()),
        ..Default::default()
    };
    let e = unknown.validate(&o.models).unwrap_err();
    assert!(e.to_string().contains("\"cnn_c\""), "{e}");
    // Regression: the last rank holds every model, so a bound there passed
    // every tournament.
    let never = TournamentThresholds {
        max_rank: vec![(last.clone(), 4)],
        ..Default::default()
    };
    let e = never.validate(&o.models).unwrap_err().to_string();
    assert!(
        e.contains("expected 1 to 3 (every one of 4 models ranks 4 or better)"),
        "{e}"
    );
}

#[test]
fn an_unconditional_generator_or_too_few_models_are_refused() {
    let m = fixtures();
    let dev = common::device();
    let e = run_pair(
        ("cnn_a", &m.cnn_a as &dyn Classifier),
        ("cnn_b", &m.cnn_b as &dyn Classifier),
        ("vae", &m.vae),
        &PairSettings::default(),
        &dev,
        &|_, _| {},
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("a class-conditional generator"),
        "{e}"
    );
    let e = Tournament::new("cvae", &m.cvae)
        .model("cnn_a", &m.cnn_a)
        .model("cnn_b", &m.cnn_b)
        .run(&dev)
        .unwrap_err();
    assert!(e.to_string().contains("2 models"), "{e}");
}

/// A suite in a fresh temporary folder named after `name`: the tournament
/// `t` of cnn_a, bag_0 and bag_1 over the cVAE, 4 samples of 3 steps, with
/// `search` (lines) added to its `[search]` table; the folder is removed
/// when the first value is dropped.
fn three_model_suite(name: &str, search: &str) -> (common::CaseDir, gevaldi::suite::Suite) {
    let dir = common::CaseDir::fresh(&format!("{name}-{}", std::process::id()));
    let weights = |m: &str| zoo::mnist_fixtures_dir().join(format!("{m}.safetensors"));
    let text = format!(
        "[search]\nbatch = 4\nsteps = 3\n{search}\n\
         [generator.cvae]\narch = \"mnist-cvae\"\nweights = {:?}\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = {:?}\n\n\
         [classifier.bag_0]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
         [classifier.bag_1]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
         [[tournament]]\nname = \"t\"\nmodels = [\"cnn_a\", \"bag_0\", \"bag_1\"]\n\
         generator = \"cvae\"\nsamples = 4\n",
        weights("cvae"),
        weights("cnn_a"),
        weights("bag_0"),
        weights("bag_1"),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let suite = gevaldi::suite::Suite::load(&path, gevaldi::suite::Registry::new()).unwrap();
    (dir, suite)
}

/// Issue 18: a pair trial (under nextest) writes its pair's record with a
/// fingerprint; the verdict reads a current record instead of running the
/// pair again, and runs the pair again when the fingerprint is stale.
/// Marks a tournament's pair record with a warning no run gives (its JSON
/// read back, to be changed further and written again).
fn mark_pair_record(path: &std::path::Path) -> serde_json::Value {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["result"]["warnings"] = serde_json::json!(["marked"]);
    std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
    json
}

/// Whether tournament `t`'s verdict took its pair (a, b) from the marked
/// record ([`mark_pair_record`]) rather than searching it again.
fn verdict_read_the_marked_record(suite: &gevaldi::suite::Suite, a: &str, b: &str) -> bool {
    use gevaldi::artifact::{self, Record};
    use gevaldi::config::TrialId;
    suite
        .run_trial(&TrialId::tournament("t"), &|_, _| {})
        .unwrap();
    let record = artifact::tournament_record(&suite.artifact_dir(), "t");
    match Record::read(&record).unwrap() {
        Record::Tournament(t) => t.outcome.pair(a, b).unwrap().warnings == ["marked"],
        other => panic!("not a tournament record: {other:?}"),
    }
}

#[test]
fn the_verdict_reads_current_pair_records_and_reruns_stale_ones() {
    use gevaldi::artifact;

    let (_dir, suite) = three_model_suite("gevaldi-tour-pairs", "");
    let pairs = suite.tournament_pairs("t");
    assert_eq!(pairs.len(), 6, "{pairs:?}");
    assert_eq!(pairs[0], "cnn_a-vs-bag_0");
    let alone = suite
        .run_tournament_pair("t", &pairs[0], &|_, _| {})
        .unwrap();
    let pair_path = artifact::tournament_dir(&suite.artifact_dir(), "t")
        .join("pairs")
        .join("cnn_a-vs-bag_0.json");
    let mut json = mark_pair_record(&pair_path);
    assert_eq!(json["result"]["seed"].as_u64(), Some(alone.seed));
    let verdict_read_the_record = || verdict_read_the_marked_record(&suite, "cnn_a", "bag_0");
    assert!(
        verdict_read_the_record(),
        "the verdict read the current record"
    );
    // A record searched from another seed (as a gevaldi that derived each
    // pair's seed from the names wrote it, under the same fingerprint) is
    // run again.
    json["result"]["seed"] = 12345.into();
    std::fs::write(&pair_path, serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(
        !verdict_read_the_record(),
        "a record of another seed is run again"
    );
    json["result"]["seed"] = alone.seed.into();
    json["fingerprint"] = "stale".into();
    std::fs::write(&pair_path, serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(!verdict_read_the_record(), "a stale record is run again");
}

/// A plain `cargo nextest run` starts the verdict beside the pairs' tests,
/// each its own process: a pair is searched under its lock, a current
/// record read first, so no pair is searched twice (the verdict searched
/// every pair that no test had recorded yet, alongside the tests). The
/// verdict records the pairs it searches; a pair's test waits while
/// another holds the pair's lock, then reads the record it wrote.
#[test]
fn the_verdict_and_the_pairs_tests_search_each_pair_once() {
    use gevaldi::artifact;
    use gevaldi::config::TrialId;

    let (_dir, suite) = three_model_suite("gevaldi-tour-lock", "");
    suite
        .run_trial(&TrialId::tournament("t"), &|_, _| {})
        .unwrap();
    let pairs_dir = artifact::tournament_dir(&suite.artifact_dir(), "t").join("pairs");
    for pair in suite.tournament_pairs("t") {
        assert!(
            pairs_dir.join(format!("{pair}.json")).is_file(),
            "the verdict recorded {pair}"
        );
    }
    // Another process holds the pair's lock while it searches, then
    // writes its record (marked) and lets go: the pair's test here waits
    // and reads it rather than searching the pair itself.
    let record = pairs_dir.join("cnn_a-vs-bag_0.json");
    let json = mark_pair_record(&record);
    std::fs::remove_file(&record).unwrap();
    let lock = std::fs::File::options()
        .write(true)
        .open(pairs_dir.join("cnn_a-vs-bag_0.lock"))
        .unwrap();
    lock.lock().unwrap();
    let (held, wait) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        held.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
        lock.unlock().unwrap();
    });
    wait.recv().unwrap();
    let result = suite
        .run_tournament_pair("t", "cnn_a-vs-bag_0", &|_, _| {})
        .unwrap();
    other.join().unwrap();
    assert_eq!(result.warnings, ["marked"], "the pair was searched again");
}

/// A classifier of one's own: ten pixels at the digits' centre, scaled.
#[derive(Clone)]
struct CentrePixels(f64, Vec<String>);

impl Classifier for CentrePixels {
    fn logits(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        x.flatten_from(1)?.narrow(1, 400, 10)? * self.0
    }
    fn class_names(&self) -> &[String] {
        &self.1
    }
}

/// Regression: a registered model's code is in no table, so a pair record
/// searched before the code changed (its logits scaled by −3, the TOML and
/// the weights as they were) kept its fingerprint, and the verdict ranked
/// the models as they had been: `cargo test` after a nextest run passed
/// against the old snapshot. The fingerprint now holds a digest of what a
/// registered model computes at a fixed probe.
#[test]
fn the_verdict_reruns_a_pair_whose_registered_model_computes_otherwise() {
    use gevaldi::artifact;
    use gevaldi::suite::{Registry, Suite};

    let dir = common::CaseDir::fresh(&format!("gevaldi-tour-registered-{}", std::process::id()));
    let weights = |m: &str| zoo::mnist_fixtures_dir().join(format!("{m}.safetensors"));
    let text = format!(
        "[search]\nbatch = 4\nsteps = 3\n\n\
         [generator.cvae]\narch = \"mnist-cvae\"\nweights = {:?}\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = {:?}\n\n\
         [classifier.bag_0]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
         [classifier.mine]\n\n\
         [[tournament]]\nname = \"t\"\nmodels = [\"cnn_a\", \"bag_0\", \"mine\"]\n\
         generator = \"cvae\"\nsamples = 4\n",
        weights("cvae"),
        weights("cnn_a"),
        weights("bag_0"),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let suite = |scale: f64| {
        let mut r = Registry::new();
        r.classifier("mine", move |_| {
            Ok(CentrePixels(scale, zoo::mnist_class_names()))
        });
        Suite::load(&path, r).unwrap()
    };
    let first = suite(1.0);
    first
        .run_tournament_pair("t", "cnn_a-vs-mine", &|_, _| {})
        .unwrap();
    let pair_path = artifact::tournament_dir(&first.artifact_dir(), "t")
        .join("pairs")
        .join("cnn_a-vs-mine.json");
    mark_pair_record(&pair_path);
    let verdict_read_the_record =
        |suite: &Suite| verdict_read_the_marked_record(suite, "cnn_a", "mine");
    assert!(
        verdict_read_the_record(&suite(1.0)),
        "the same code: the verdict read the current record"
    );
    assert!(
        !verdict_read_the_record(&suite(-3.0)),
        "other code: the pair is run again"
    );
}

/// Under a symmetric divergence the suite lists (and nextest runs) one
/// trial per pair of models, not per order: `b-vs-a` is `a-vs-b`'s search.
/// Asked for by name, the other order runs and records the pair that is
/// searched and gives its mirror, and the verdict reads that record for
/// both orders.
#[test]
fn under_a_symmetric_divergence_the_suite_searches_each_pair_once() {
    use gevaldi::artifact::{self, Record};
    use gevaldi::config::TrialId;

    let (_dir, suite) = three_model_suite("gevaldi-tour-js", "divergence = \"js\"\n");
    assert_eq!(
        suite.tournament_pairs("t"),
        ["cnn_a-vs-bag_0", "cnn_a-vs-bag_1", "bag_0-vs-bag_1"]
    );
    let pairs_dir = artifact::tournament_dir(&suite.artifact_dir(), "t").join("pairs");
    let mirrored = suite
        .run_tournament_pair("t", "bag_1-vs-cnn_a", &|_, _| {})
        .unwrap();
    assert_eq!(mirrored.name(), "bag_1-vs-cnn_a");
    let written: Vec<_> = std::fs::read_dir(&pairs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert_eq!(written, ["cnn_a-vs-bag_1.json"], "the pair searched");
    // Mark the record: the verdict must take both orders from it.
    let record = pairs_dir.join("cnn_a-vs-bag_1.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    json["result"]["warnings"] = serde_json::json!(["marked"]);
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    suite
        .run_trial(&TrialId::tournament("t"), &|_, _| {})
        .unwrap();
    let Record::Tournament(t) =
        Record::read(&artifact::tournament_record(&suite.artifact_dir(), "t")).unwrap()
    else {
        panic!("not a tournament record");
    };
    let (ab, ba) = (
        t.outcome.pair("cnn_a", "bag_1").unwrap(),
        t.outcome.pair("bag_1", "cnn_a").unwrap(),
    );
    assert_eq!(ab.warnings, ["marked"]);
    assert_eq!(ba, &ab.mirrored());
    assert_eq!(ba.prediction_a, mirrored.prediction_a);
}

/// Issue 18: the snapshot's ranking puts neighbours in the Bradley–Terry
/// order in one tier exactly when their strengths are within
/// `TIER_SE` standard errors of their difference, every model once.
#[test]
fn the_snapshot_ranking_braces_neighbours_within_two_standard_errors() {
    use gevaldi::snapshot::{tiers, TIER_SE};
    let o = outcome();
    let line = tiers(o);
    let groups: Vec<Vec<&str>> = line
        .split(" > ")
        .map(|g| {
            g.trim_start_matches('{')
                .trim_end_matches('}')
                .split(", ")
                .collect()
        })
        .collect();
    let mut all: Vec<&str> = groups.concat();
    all.sort();
    let mut models: Vec<&str> = o.models.iter().map(String::as_str).collect();
    models.sort();
    assert_eq!(all, models, "{line}");
    let tier = |i: usize| {
        groups
            .iter()
            .position(|g| g.contains(&o.models[i].as_str()))
            .unwrap()
    };
    let bt = &o.bradley_terry;
    for w in bt.order.windows(2) {
        let (i, j) = (w[0], w[1]);
        let close = bt.theta[i] - bt.theta[j] < TIER_SE * bt.se_of_difference(i, j);
        assert_eq!(tier(i) == tier(j), close, "{line}");
        assert!(tier(i) <= tier(j), "{line}");
    }
}

/// A consistent record of the ordered pair (a, b) in which a won `wins_a`
/// samples, b `wins_b`, and one more was a tie: no search, for outcomes of
/// given win matrices.
fn synthetic_pair(a: &str, b: &str, wins_a: u64, wins_b: u64) -> PairResult {
    let (na, nb) = (wins_a as usize, wins_b as usize);
    let k = na + nb + 1;
    // Condition 0 throughout; the winner predicts 0, the loser 1.
    let prediction_a: Vec<usize> = [vec![0; na], vec![1; nb], vec![0]].concat();
    let prediction_b: Vec<usize> = [vec![1; na], vec![0; nb], vec![0]].concat();
    let winners = [vec![Winner::A; na], vec![Winner::B; nb], vec![Winner::Tie]].concat();
    let accuracy = |p: &[usize]| p.iter().filter(|&&x| x == 0).count() as f64 / k as f64;
    PairResult {
        a: a.into(),
        b: b.into(),
        seed: 0,
        divergence: gevaldi::Divergence::Kl,
        steps_run: 1,
        conditions: vec![0; k],
        z: vec![vec![0.0]; k],
        outside_support: None,
        divergence_after: vec![0.0; k],
        accuracy_a: accuracy(&prediction_a),
        accuracy_b: accuracy(&prediction_b),
        start_prediction_a: prediction_a.clone(),
        start_prediction_b: prediction_b.clone(),
        prediction_a,
        prediction_b,
        confidence_a: vec![0.9; k],
        confidence_b: vec![0.9; k],
        p_condition_a: vec![0.9; k],
        p_condition_b: vec![0.9; k],
        winners,
        wins_a,
        wins_b,
        ties: 1,
        warnings: Vec::new(),
    }
}

/// The outcome of `models` whose win matrix is `wins[i][j]` (all of i's
/// wins over j in the pair (i, j)).
fn synthetic_outcome(
    models: &[&str],
    wins: &[[u64; 3]; 3],
    test_accuracy: Option<Vec<f64>>,
) -> TournamentOutcome {
    let names: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    let mut pairs = Vec::new();
    for i in 0..3 {
        for j in (0..3).filter(|&j| j != i) {
            let (w, l) = if i < j {
                (wins[i][j], wins[j][i])
            } else {
                (0, 0)
            };
            pairs.push(synthetic_pair(models[i], models[j], w, l));
        }
    }
    let o = TournamentOutcome::from_pairs(&names, pairs, test_accuracy).unwrap();
    assert_eq!(o.wins.rows(), wins.map(|r| r.to_vec()), "{models:?}");
    o
}

/// Regression: the symmetric cycle's MAD scores are equal in exact
/// arithmetic and a last bit apart in f64. The SRCC is undefined (every
/// score equal), not ±0.866 or 0 as the noise had it, so `min_srcc` fails.
#[test]
fn the_srcc_of_a_symmetric_cycle_is_undefined_whatever_the_accuracies() {
    let cycle = [[0, 2, 0], [0, 0, 2], [2, 0, 0]];
    for acc in [
        [0.7, 0.8, 0.9],
        [0.7, 0.9, 0.8],
        [0.8, 0.7, 0.9],
        [0.8, 0.9, 0.7],
        [0.9, 0.7, 0.8],
        [0.9, 0.8, 0.7],
    ] {
        let o = synthetic_outcome(&["a", "b", "c"], &cycle, Some(acc.to_vec()));
        assert_eq!(
            (o.srcc_power, o.srcc_bradley_terry),
            (None, None),
            "{acc:?}: {o:?}"
        );
        let min_srcc = TournamentThresholds {
            min_srcc: Some(0.5),
            ..Default::default()
        };
        let failures: Vec<String> = min_srcc.check(&o).iter().map(ToString::to_string).collect();
        assert_eq!(
            failures,
            [
                "the SRCC of the mad ranking with the test accuracy is undefined, below \
              min_srcc = 0.5"
            ],
            "{acc:?}"
        );
    }
    // A real order still correlates.
    let o = synthetic_outcome(
        &["a", "b", "c"],
        &[[0, 4, 8], [2, 0, 6], [2, 3, 0]],
        Some(vec![0.9, 0.8, 0.7]),
    );
    assert_eq!((o.srcc_power, o.srcc_bradley_terry), (Some(1.0), Some(1.0)));
}

/// Regression: where scores tie (no sample decided anything, or the
/// symmetric cycle), the first model declared used to be the champion,
/// above the second and within `max_rank = 1`: the config's order decided.
/// A tie passes none of them, in either declared order, by either ranking,
/// and the message says it is a tie.
#[test]
fn tied_scores_pass_no_rank_threshold_whatever_the_models_order() {
    let none_decided = [[0; 3]; 3];
    let cycle = [[0, 2, 0], [0, 0, 2], [2, 0, 0]];
    for wins in [none_decided, cycle] {
        for models in [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"]] {
            let o = synthetic_outcome(&models, &wins, None);
            for ranking in [RankingMethod::Mad, RankingMethod::BradleyTerry] {
                let (first, second) = (models[0].to_string(), models[1].to_string());
                let t = TournamentThresholds {
                    ranking,
                    champion: Some(first.clone()),
                    above: vec![(first.clone(), second.clone())],
                    max_rank: vec![(first.clone(), 1), (second.clone(), 2)],
                    ..Default::default()
                };
                t.validate(&o.models).unwrap();
                let failures: Vec<String> = t.check(&o).iter().map(ToString::to_string).collect();
                assert_eq!(
                    failures.len(),
                    4,
                    "{wins:?} {models:?} {ranking:?}: {failures:#?}"
                );
                for f in &failures {
                    assert!(f.contains(&format!("{first} ties with ")), "{f}");
                }
                // Every model is third, counting the ties against it.
                assert!(failures[0].starts_with(&format!("champion `{first}` ranks #3 by ")));
                assert_eq!(o.pessimistic_rank(&second, ranking), Some(3));
                let all_third = TournamentThresholds {
                    ranking,
                    max_rank: models.iter().map(|m| (m.to_string(), 3)).collect(),
                    ..Default::default()
                };
                assert!(all_third.check(&o).is_empty());
            }
        }
    }
    let o = synthetic_outcome(&["a", "b", "c"], &none_decided, None);
    let champion = TournamentThresholds {
        champion: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(
        champion.check(&o)[0].to_string(),
        "champion `a` ranks #3 by mad, not first: a ties with b and c (scores 0.5774, 0.5774 \
         and 0.5774)"
    );
}

/// A tie below a clear winner: a beat b and c, b and c decided nothing
/// between them. a's thresholds hold; b is not above c, nor second.
#[test]
fn a_tie_below_a_clear_winner_fails_only_the_thresholds_it_decides() {
    let o = synthetic_outcome(&["a", "b", "c"], &[[0, 3, 3], [0, 0, 0], [0, 0, 0]], None);
    for ranking in [RankingMethod::Mad, RankingMethod::BradleyTerry] {
        let holds = TournamentThresholds {
            ranking,
            champion: Some("a".into()),
            above: vec![("a".into(), "b".into()), ("a".into(), "c".into())],
            max_rank: vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 3)],
            ..Default::default()
        };
        assert!(
            holds.check(&o).is_empty(),
            "{ranking:?}: {:?}",
            holds.check(&o)
        );
        let fails = TournamentThresholds {
            ranking,
            above: vec![("b".into(), "c".into())],
            max_rank: vec![("b".into(), 2)],
            ..Default::default()
        };
        let failures: Vec<String> = fails.check(&o).iter().map(ToString::to_string).collect();
        assert_eq!(failures.len(), 2, "{ranking:?}: {failures:#?}");
        let name = ranking.name();
        assert!(
            failures[0].starts_with(&format!(
                "`b` ranks #3 by {name}, below max_rank = 2: a > b ties with c (scores "
            )),
            "{failures:#?}"
        );
        assert!(
            failures[1].starts_with(&format!(
                "`b` ranks #3 by {name}, not above `c` (#3): a > b ties with c (scores "
            )),
            "{failures:#?}"
        );
    }
}

/// Regression: a full tie's summary and report headline read "a > b > c
/// by mad" (the tournament's order) although every score is equal. Ties
/// by the ranking's own rule (equal within rounding: the cycle's scores are
/// a last bit apart) show as `=`, whatever the models' order.
#[test]
fn the_ranking_line_shows_ties_as_equal() {
    let none_decided = [[0; 3]; 3];
    let cycle = [[0, 2, 0], [0, 0, 2], [2, 0, 0]];
    for wins in [none_decided, cycle] {
        for models in [["a", "b", "c"], ["c", "b", "a"]] {
            let o = synthetic_outcome(&models, &wins, None);
            for ranking in [RankingMethod::Mad, RankingMethod::BradleyTerry] {
                assert_eq!(
                    o.ranking_line(ranking),
                    models.join(" = "),
                    "{wins:?} {ranking:?}"
                );
            }
        }
    }
    let o = synthetic_outcome(&["a", "b", "c"], &[[0, 3, 3], [0, 0, 0], [0, 0, 0]], None);
    for ranking in [RankingMethod::Mad, RankingMethod::BradleyTerry] {
        assert_eq!(o.ranking_line(ranking), "a > b = c", "{ranking:?}");
    }
    let o = synthetic_outcome(&["a", "b", "c"], &[[0, 4, 8], [2, 0, 6], [2, 3, 0]], None);
    assert_eq!(o.ranking_line(RankingMethod::Mad), "a > b > c");
}

/// The fixture cVAE stating a box |z_i| ≤ 1 as its support, its prior's
/// draws clamped into it: a generator with a support besides BigGAN.
struct Boxed(MnistVae);

const BOX: f64 = 1.0;

impl gevaldi::Generator for Boxed {
    fn latent_dim(&self) -> usize {
        self.0.latent_dim()
    }
    fn num_conditions(&self) -> Option<usize> {
        self.0.num_conditions()
    }
    fn decode(
        &self,
        z: &candle_core::Tensor,
        condition: Option<&candle_core::Tensor>,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0.decode(z, condition)
    }
    fn latent_support(&self) -> Option<gevaldi::LatentSupport> {
        Some(gevaldi::LatentSupport::Box { half_width: BOX })
    }
    fn sample_prior(
        &self,
        n: usize,
        rng: &mut dyn rand::RngCore,
        device: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0.sample_prior(n, rng, device)?.clamp(-BOX, BOX)
    }
}

/// A tournament's pairs and an ensemble's MDS samples over a generator
/// that states a support record, per sample, how many latent coordinates
/// ended outside it (as counting z against it gives), the tournament over
/// the pairs searched (one order of each under `js`), and their trial
/// reports say so; a generator without one records nothing.
#[test]
fn tournaments_and_ensembles_count_the_latents_that_left_the_support() {
    use gevaldi::artifact::{self, Record};
    use gevaldi::config::TrialId;

    let dir = common::CaseDir::fresh(&format!("gevaldi-tour-box-{}", std::process::id()));
    let weights = |m: &str| zoo::mnist_fixtures_dir().join(format!("{m}.safetensors"));
    let text = format!(
        "[search]\nbatch = 4\nsteps = 3\ndivergence = \"js\"\n\n\
         [generator.boxed]\n\n\
         [classifier.cnn_a]\narch = \"mnist-cnn-a\"\nweights = {:?}\n\n\
         [classifier.bag_0]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
         [classifier.bag_1]\narch = \"mnist-mlp\"\nweights = {:?}\n\n\
         [[tournament]]\nname = \"t\"\nmodels = [\"cnn_a\", \"bag_0\", \"bag_1\"]\n\
         generator = \"boxed\"\nsamples = 4\n\n\
         [[ensemble]]\nname = \"e\"\nmembers = [\"cnn_a\", \"bag_0\"]\ngenerator = \"boxed\"\n\
         test_data = {:?}\nsamples = 4\nmin_samples = 2\n",
        weights("cnn_a"),
        weights("bag_0"),
        weights("bag_1"),
        zoo::mnist_fixtures_dir().join("data"),
    );
    let path = dir.join("gevaldi.toml");
    std::fs::write(&path, text).unwrap();
    let mut registry = gevaldi::suite::Registry::new();
    registry.generator("boxed", |dev| {
        Ok(Boxed(zoo::load_file(
            zoo::mnist_fixtures_dir().join("cvae.safetensors"),
            "cvae",
            dev,
            |vb| MnistVae::load(vb, &MnistVaeConfig::conditional()),
        )?))
    });
    let suite = gevaldi::suite::Suite::load(&path, registry).unwrap();
    let outside = |z: &[f32]| z.iter().filter(|v| v.abs() > BOX as f32).count();

    let report = suite
        .run_trial(&TrialId::tournament("t"), &|_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let Record::Tournament(t) =
        Record::read(&artifact::tournament_record(&suite.artifact_dir(), "t")).unwrap()
    else {
        panic!("not a tournament record");
    };
    let support = gevaldi::LatentSupport::Box { half_width: BOX };
    assert_eq!(t.latent_support, Some(support));
    let mut total = 0;
    for p in &t.outcome.pairs {
        let counts: Vec<usize> = p.z.iter().map(|z| outside(z)).collect();
        assert_eq!(p.outside_support.as_ref(), Some(&counts), "{}", p.name());
        // Under js, a-vs-b and b-vs-a are one search: counted once.
        if t.outcome.models.iter().position(|m| *m == p.a)
            < t.outcome.models.iter().position(|m| *m == p.b)
        {
            total += counts.iter().sum::<usize>();
        }
    }
    let recorded = t.outside_support.as_ref().expect("a support, a count");
    assert_eq!((recorded.coordinates, recorded.samples), (total, 3 * 4));
    println!("tournament: {recorded}");
    assert!(
        total > 0,
        "no coordinate left the box: the test shows nothing"
    );
    assert_eq!(report.outside_support.as_ref(), Some(recorded));

    let report = suite
        .run_trial(&TrialId::ensemble("e"), &|_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let Record::Ensemble(e) =
        Record::read(&artifact::ensemble_record(&suite.artifact_dir(), "e")).unwrap()
    else {
        panic!("not an ensemble record");
    };
    assert_eq!(e.latent_support, Some(support));
    let counts: Vec<usize> = e.z.iter().map(|z| outside(z)).collect();
    assert_eq!(e.outside_support.as_ref(), Some(&counts));
    println!("ensemble: {:?}", e.outside_support());
    assert_eq!(report.outside_support, e.outside_support());
    if counts.iter().sum::<usize>() > 0 {
        let html = std::fs::read_to_string(suite.write_report().unwrap().index).unwrap();
        assert_eq!(
            html.matches("<p class=\"outside-support\">Note: ").count(),
            2
        );
    }
}
