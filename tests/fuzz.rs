//! Issue 9: property-based fuzzing (proptest) of the three parsers that read
//! user files: the `gevaldi.toml` parser, the IDX reader and the hierarchy
//! loader. None may panic, whatever the input; what they accept must be
//! consistent, and what they refuse must be said with a location.
//!
//! Under `cargo test` each target runs a fixed number of cases
//! (`GEVALDI_FUZZ_CASES`, default 4096) from a fixed seed
//! (`GEVALDI_FUZZ_SEED`, default 0), so that every run, on every machine,
//! tries the same inputs. `bash fuzz/run.sh` fuzzes for longer:
//! with `GEVALDI_FUZZ_SECONDS` set, each target runs rounds of that many
//! cases from the seeds `GEVALDI_FUZZ_SEED`, +1, +2, … until the time is up,
//! and a failure names the seed that reproduces it. cargo-fuzz needs a
//! nightly compiler, which this project does not require; proptest runs on
//! stable and shrinks a failure to a minimal input.

use std::path::Path;
use std::time::{Duration, Instant};

use gevaldi::hierarchy::Hierarchy;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?}: expected a whole number")),
    )
}

/// Runs `test` on `GEVALDI_FUZZ_CASES` (default 4096) inputs from
/// `strategy`, drawn by a ChaCha generator seeded with `GEVALDI_FUZZ_SEED`
/// (default 0); with `GEVALDI_FUZZ_SECONDS`, repeats with the next seeds
/// until that many seconds have passed. Panics with the minimal failing
/// input and its seed. Returns the number of cases run.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    let cases = env_u64("GEVALDI_FUZZ_CASES").unwrap_or(4096);
    let first_seed = env_u64("GEVALDI_FUZZ_SEED").unwrap_or(0);
    let deadline = env_u64("GEVALDI_FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let mut seed = first_seed;
    loop {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            cases: u32::try_from(cases).expect("GEVALDI_FUZZ_CASES fits in a u32"),
            failure_persistence: None,
            rng_algorithm: RngAlgorithm::ChaCha,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!(
                "{name}: {why} for the minimal input {input:?} \
                 (GEVALDI_FUZZ_SEED={seed} GEVALDI_FUZZ_CASES={cases} reproduces it)"
            ),
            Err(e) => panic!("{name}: {e} (GEVALDI_FUZZ_SEED={seed})"),
        }
        seed += 1;
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    let total = (seed - first_seed) * cases;
    println!(
        "{name}: {total} cases in {} round(s) from seed {first_seed}, no failure",
        seed - first_seed
    );
    total
}

/// [`fuzz`] over a check that also says whether the input was accepted;
/// asserts that some inputs were accepted and some refused, since each
/// side's properties are checked only on inputs of that side (with fewer
/// than 100 cases, only prints the counts).
fn fuzz_both_sides<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let accepted = std::cell::Cell::new(0u64);
    let cases = fuzz(name, strategy, |v| {
        let ok = check(v)?;
        accepted.set(accepted.get() + u64::from(ok));
        Ok(())
    });
    let accepted = accepted.get();
    println!("{name}: {accepted} of {cases} inputs accepted");
    if cases >= 100 {
        assert!(
            accepted > 0 && accepted < cases,
            "{name}: {accepted} of {cases} inputs accepted: one side is never checked"
        );
    }
}

const VALID_CONFIG: &str = r#"[search]
divergence = "kl"
steps = 200
lr = 0.05

[generator.vae]
arch = "mnist-vae"
weights = "vae.safetensors"

[classifier.a]
arch = "mnist-cnn-a"
weights = "cnn_a.safetensors"

[classifier.b]
arch = "mnist-cnn-b"
weights = "cnn_b.safetensors"

[[pair]]
name = "a-vs-b"
models = ["a", "b"]
generator = "vae"
max_divergence = 2.0
statistic = "quantile"
quantile = 0.9
"#;

/// Pieces of TOML a mutation inserts.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\n",
    ",",
    "#",
    "nan",
    "inf",
    "-1",
    "0",
    "1e400",
    "[pair]",
    "[[pair]]",
    "[search]",
    "[hierarchy]",
    "[classifier.x]",
    "[generator.y]",
    "models = []",
    "name = \"a-vs-b\"",
    "steps = -3",
    "lr = nan",
    "batch = 0",
    "divergence = \"js\"",
    "top_n = 99",
    "quantile = 2",
    "weights = 3",
    "arch = {}",
    "preprocess = { resize = 0 }",
    "early_stop = [1]",
    "\u{feff}",
    "é",
    "\\u0000",
];

/// A valid config with up to 8 edits: a token inserted, or a span
/// deleted, at a char boundary.
fn mutated_config() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0..TOKENS.len(),
        any::<bool>(),
        0usize..40,
    );
    prop::collection::vec(edit, 0..8).prop_map(|edits| {
        let mut text = VALID_CONFIG.to_string();
        for (at, token, insert, len) in edits {
            let bounds: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let i = bounds[at.index(bounds.len())];
            if insert {
                text.insert_str(i, TOKENS[token]);
            } else {
                let end = bounds
                    .iter()
                    .copied()
                    .find(|&b| b >= i + len)
                    .unwrap_or(text.len());
                text.replace_range(i..end, "");
            }
        }
        text
    })
}

/// Checks one config; `Ok(true)` when it was accepted.
fn check_config(text: &str) -> Result<bool, TestCaseError> {
    let path = Path::new("fuzz/gevaldi.toml");
    match gevaldi::config::parse_in(text, path, Path::new("fixtures/mnist")) {
        Ok(_) => Ok(true),
        Err(errors) => {
            prop_assert!(!errors.errors.is_empty());
            let lines = text.lines().count() + 1;
            for e in &errors.errors {
                prop_assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
                prop_assert!(!e.message.is_empty());
            }
            // Every error is printed with the file and its line.
            let shown = errors.to_string();
            prop_assert!(shown.contains("fuzz/gevaldi.toml:"), "{shown}");
            Ok(false)
        }
    }
}

#[test]
fn fuzz_the_config_parser() {
    fuzz_both_sides("config (mutated)", mutated_config(), |t| check_config(&t));
    // Arbitrary text is almost never a valid config: only refusals here.
    fuzz("config (arbitrary text)", ".{0,300}", |t| {
        check_config(&t).map(|_| ())
    });
}

/// Checks one IDX input; `Ok(true)` when it was accepted.
fn check_idx(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let parsed = gevaldi::data::parse_idx(bytes, Path::new("fuzz.idx"));
    let accepted = parsed.is_ok();
    if let Ok(a) = parsed {
        let n: usize = a.dims.iter().product();
        prop_assert_eq!(a.data.len(), n);
        // What it read, it writes back to the same bytes (past the header).
        let again = gevaldi::data::encode_idx(&a).unwrap();
        prop_assert_eq!(&again[..], &bytes[..again.len()]);
    }
    Ok(accepted)
}

/// Valid IDX files (unsigned bytes, rank 1 to 3, small dims, exactly the
/// data they declare), IDX headers with any dims (huge ones included) over
/// a few data bytes, and arbitrary bytes.
fn idx_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::collection::vec(0u32..5, 1..4)
        .prop_flat_map(|dims| {
            let n: usize = dims.iter().map(|d| *d as usize).product();
            (Just(dims), prop::collection::vec(any::<u8>(), n))
        })
        .prop_map(|(dims, data)| {
            let mut b = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b.extend(data);
            b
        });
    let header = (
        prop_oneof![Just(8u8), any::<u8>()],
        0u8..6,
        prop::collection::vec(prop_oneof![0u32..5, any::<u32>()], 0..5),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ty, rank, dims, data)| {
            let mut b = vec![0, 0, ty, rank];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b.extend(data);
            b
        });
    prop_oneof![valid, header, prop::collection::vec(any::<u8>(), 0..64)]
}

#[test]
fn fuzz_the_idx_reader() {
    fuzz_both_sides("idx", idx_bytes(), |b| check_idx(&b));
}

/// Class lists and edge lists over a few IDs, headers included or not.
fn hierarchy_files() -> impl Strategy<Value = (String, String)> {
    let id = prop::sample::select(vec!["a", "b", "c", "d", "r", "", "a b"]);
    let classes =
        prop::collection::vec((0usize..6, id.clone(), "[A-Za-z]{0,3}"), 0..6).prop_map(|rows| {
            let mut t = String::from("index\twnid\tname\n");
            for (i, id, name) in rows {
                t.push_str(&format!("{i}\t{id}\t{name}\n"));
            }
            t
        });
    let edges = prop::collection::vec((id.clone(), id, any::<bool>()), 0..8).prop_map(|rows| {
        let mut t = String::from("child\tparent\n");
        for (c, p, tab) in rows {
            t.push_str(&format!("{c}{}{p}\n", if tab { "\t" } else { " " }));
        }
        t
    });
    (classes, edges)
}

/// Checks one pair of hierarchy files; `Ok(true)` when they were accepted.
fn check_hierarchy(classes: &str, edges: &str) -> Result<bool, TestCaseError> {
    let parsed = Hierarchy::parse(
        (classes, Path::new("classes.tsv")),
        (edges, Path::new("edges.tsv")),
        None,
    );
    let mut accepted = false;
    match parsed {
        Ok(h) => {
            accepted = true;
            for a in 0..h.len() {
                prop_assert_eq!(h.distance(a, a), 0.0);
                for b in 0..h.len() {
                    let d = h.distance(a, b);
                    prop_assert!(d.is_finite() && d >= 0.0);
                    prop_assert_eq!(d, h.distance(b, a));
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(
                shown.contains("classes.tsv") || shown.contains("edges.tsv"),
                "{shown}"
            );
        }
    }
    Ok(accepted)
}

#[test]
fn fuzz_the_hierarchy_loader() {
    fuzz_both_sides("hierarchy", hierarchy_files(), |(c, e)| {
        check_hierarchy(&c, &e)
    });
}
