//! Issue 17: pair and ensemble names become file names, so they must be
//! portable, not hidden, not too long, and distinct ignoring case.

use std::path::Path;

use gevaldi_config::parse;

const MODELS: &str = r#"[generator.vae]
arch = "mnist-vae"
weights = "Cargo.toml"

[classifier.a]
arch = "mnist-cnn-a"
weights = "Cargo.toml"

[classifier.b]
arch = "mnist-cnn-b"
weights = "Cargo.toml"
"#;

fn pair(name: &str) -> String {
    format!("\n[[pair]]\nname = {name:?}\nmodels = [\"a\", \"b\"]\ngenerator = \"vae\"\n")
}

/// The errors of `text`, one per line, without the file's name.
fn errors(text: &str) -> Vec<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("gevaldi.toml");
    let errors = parse(text, &file).expect_err("refused").errors;
    errors
        .iter()
        .map(|e| format!("{}:{}: `{}`: {}", e.line, e.column, e.key, e.message))
        .collect()
}

#[test]
fn dot_names_are_refused() {
    for name in [".", "..", ".hidden"] {
        assert_eq!(
            errors(&format!("{MODELS}{}", pair(name))),
            [format!(
                "14:8: `pair[0].name`: invalid name {name:?}: a name must not start with `.` \
                 (its files, such as `{name}.json`, would be hidden)"
            )]
        );
    }
    assert_eq!(
        errors(&format!("{MODELS}{}", pair("a."))),
        ["14:8: `pair[0].name`: invalid name \"a.\": a name must not end with `.` (Windows drops \
          it from file names)"]
    );
}

#[test]
fn separators_and_non_portable_characters_are_refused() {
    for (name, c) in [
        ("a/b", '/'),
        ("a\\b", '\\'),
        ("a:b", ':'),
        ("é", 'é'),
        ("a b", ' '),
    ] {
        assert_eq!(
            errors(&format!("{MODELS}{}", pair(name))),
            [format!(
                "14:8: `pair[0].name`: invalid name {name:?}: {c:?} is not portable in a file \
                 name; expected ASCII letters, digits, `_`, `-` or `.`"
            )]
        );
    }
}

#[test]
fn windows_device_names_are_refused() {
    for (name, stem) in [("con", "con"), ("NUL.x", "nul"), ("com1", "com1")] {
        assert_eq!(
            errors(&format!("{MODELS}{}", pair(name))),
            [format!(
                "14:8: `pair[0].name`: invalid name {name:?}: `{stem}` is a Windows device name \
                 (CON, PRN, AUX, NUL, COM1-9, LPT1-9), which no file can take"
            )]
        );
    }
    // Only those: `com10`, `console` and `nul_0` are ordinary names.
    let text = format!(
        "{MODELS}{}{}{}",
        pair("com10"),
        pair("console"),
        pair("nul_0")
    );
    parse(
        &text,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("gevaldi.toml"),
    )
    .unwrap();
}

#[test]
fn long_names_are_refused() {
    let at_most = "a".repeat(gevaldi_config::MAX_NAME_LEN);
    parse(
        &format!("{MODELS}{}", pair(&at_most)),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("gevaldi.toml"),
    )
    .unwrap();
    assert_eq!(
        errors(&format!("{MODELS}{}", pair(&"a".repeat(300)))),
        [
            "14:8: `pair[0].name`: name of 300 bytes is too long: at most 100, so that the file \
          names made from it (with suffixes such as `.pending-snap`) stay within 255 bytes"
        ]
    );
}

#[test]
fn names_equal_ignoring_case_are_refused() {
    assert_eq!(
        errors(&format!("{MODELS}{}{}", pair("Same"), pair("same"))),
        [
            "19:8: `pair[1].name`: `same` differs from pair `Same` (line 13) only in case: their \
          files would collide on case-insensitive file systems (macOS, Windows)"
        ]
    );
    assert_eq!(
        errors(&format!("{MODELS}{}{}", pair("p"), pair("p"))),
        ["19:8: `pair[1].name`: duplicate pair name `p` (first at line 13)"]
    );
}

#[test]
fn a_pair_and_an_ensemble_may_not_share_a_name() {
    let ensemble = "\n[[ensemble]]\nname = \"P\"\nmembers = [\"a\", \"b\"]\ngenerator = \"cvae\"\n\
                    test_data = \"src\"\n\n[generator.cvae]\narch = \"mnist-cvae\"\n\
                    weights = \"Cargo.toml\"\n";
    assert_eq!(
        errors(&format!("{MODELS}{}{ensemble}", pair("p"))),
        [
            "19:8: `ensemble[0].name`: `P` differs from pair `p` (line 13) only in case: their \
          files would collide on case-insensitive file systems (macOS, Windows)"
        ]
    );
    let ensemble = ensemble.replace("\"P\"", "\"p\"");
    assert_eq!(
        errors(&format!("{MODELS}{}{ensemble}", pair("p"))),
        [
            "19:8: `ensemble[0].name`: pair `p` (line 13) has this name too: pairs and ensembles \
          share the snapshot directory, so their names must differ"
        ]
    );
}

#[test]
fn a_weights_directory_and_an_i64_overflow_say_so() {
    let text = MODELS.replace(
        "[classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"Cargo.toml\"",
        "[classifier.b]\narch = \"mnist-cnn-b\"\nweights = \"src\"\noptional = true",
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(
        errors(&format!(
            "[search]\nseed = 0x8000_0000_0000_0000\n{text}{}",
            pair("p")
        )),
        [
            "2:8: `search.seed`: 0x8000_0000_0000_0000 is out of range: expected an integer \
             from 0 to 9223372036854775807 (TOML integers are 64-bit signed)"
                .to_string(),
            format!(
                "13:11: `classifier.b.weights`: weights `src` is a directory (`{}`), expected a \
                 safetensors file",
                dir.display()
            )
        ]
    );
}
