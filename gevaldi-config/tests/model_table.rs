//! Tables without `arch` (models registered from Rust) carry `weights` and
//! keys of their own; tables with `arch` still reject unknown keys.

use std::path::Path;

use gevaldi_config::{parse, TableValue};

fn dir() -> &'static Path {
    // A directory with files to stand in for weights.
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const PAIR: &str = r#"
[generator.vae]
arch = "mnist-vae"
weights = "Cargo.toml"

[classifier.a]
arch = "mnist-cnn-a"
weights = "Cargo.toml"

[[pair]]
name = "mine-vs-a"
models = ["mine", "a"]
generator = "vae"
"#;

#[test]
fn a_table_without_arch_has_weights_and_keys_of_its_own() {
    let text = format!(
        r#"[classifier.mine]
weights = "Cargo.toml"
hidden = 128
scale = 0.5
labels = "src/lib.rs"
layers = [64, 32]
fast = true
optional = false
{PAIR}"#
    );
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mine = c.classifier("mine").unwrap();
    assert!(mine.builtin.is_none());
    let t = &mine.table;
    assert_eq!(t.name, "mine");
    assert_eq!(t.kind(), gevaldi_config::ModelKind::Classifier);
    assert_eq!(
        t.weights.as_deref(),
        Some(dir().join("Cargo.toml").as_path())
    );
    assert_eq!(
        t.keys().collect::<Vec<_>>(),
        ["hidden", "scale", "labels", "layers", "fast"]
    );
    assert_eq!(t.get_i64("hidden").unwrap(), Some(128));
    assert_eq!(t.get_f64("hidden").unwrap(), Some(128.0));
    assert_eq!(t.get_f64("scale").unwrap(), Some(0.5));
    assert_eq!(t.get_str("labels").unwrap(), Some("src/lib.rs"));
    assert_eq!(
        t.get_path("labels").unwrap(),
        Some(dir().join("src/lib.rs"))
    );
    assert_eq!(t.get_bool("fast").unwrap(), Some(true));
    assert_eq!(
        t.get("layers"),
        Some(&TableValue::Array(vec![
            TableValue::Integer(64),
            TableValue::Integer(32)
        ]))
    );
    assert_eq!(t.get_str("absent").unwrap(), None);

    // A key of the wrong type names the file, line and key.
    let e = t.get_str("hidden").unwrap_err();
    assert_eq!(e.errors.len(), 1);
    let err = &e.errors[0];
    assert_eq!((err.line, err.column), (3, 1), "{e}");
    assert_eq!(err.key, "classifier.mine.hidden");
    assert!(
        err.message.contains("expected a string, found integer"),
        "{e}"
    );
    let e = t.get_i64("scale").unwrap_err().to_string();
    assert!(
        e.contains(":4:1: `classifier.mine.scale`: expected an integer, found float"),
        "{e}"
    );
    // The registration's own checks point at the key too.
    let e = t.error("layers", "expected 3 layers").to_string();
    assert!(
        e.contains(":6:1: `classifier.mine.layers`: expected 3 layers"),
        "{e}"
    );

    // A table with `arch` has no free keys, and its weights in `table`.
    let a = &c.classifier("a").unwrap().table;
    assert_eq!(a.keys().count(), 0);
    assert_eq!(
        a.weights.as_deref(),
        Some(dir().join("Cargo.toml").as_path())
    );
}

#[test]
fn a_nan_is_not_a_number_to_get_f64() {
    let text = format!("[classifier.mine]\nscale = nan\nbig = inf\n{PAIR}");
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap();
    let t = &c.classifier("mine").unwrap().table;
    let e = t.get_f64("scale").unwrap_err().to_string();
    assert!(e.contains("expected a finite number, found NaN"), "{e}");
    let e = t.get_f64("big").unwrap_err().to_string();
    assert!(e.contains("expected a finite number, found inf"), "{e}");
}

#[test]
fn unknown_keys_in_a_table_with_arch_are_still_errors() {
    let text = format!(
        "[classifier.b]\narch = \"mnist-mlp\"\nweights = \"Cargo.toml\"\nhidden = 128\n\
         [generator.g]\narch = \"mnist-vae\"\nweights = \"Cargo.toml\"\nscale = 1\n{PAIR}"
    )
    .replace("[classifier.a]", "[classifier.mine]\n[classifier.a]");
    let e = parse(&text, &dir().join("gevaldi.toml")).unwrap_err();
    let keys: Vec<(&str, usize)> = e.errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [("classifier.b.hidden", 4), ("generator.g.scale", 8)],
        "{e}"
    );
    assert!(
        e.errors[0]
            .message
            .contains("unknown key in a table with `arch`"),
        "{e}"
    );
}

#[test]
fn the_weights_of_a_table_without_arch_must_exist_unless_optional() {
    let text = format!("[classifier.mine]\nweights = \"mine.safetensors\"\n{PAIR}");
    let e = parse(&text, &dir().join("gevaldi.toml")).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].key, "classifier.mine.weights");
    assert!(
        e.errors[0]
            .message
            .contains("weights file `mine.safetensors` does not exist"),
        "{e}"
    );

    let text =
        format!("[classifier.mine]\nweights = \"mine.safetensors\"\noptional = true\n{PAIR}");
    let c = parse(&text, &dir().join("gevaldi.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mine = c.classifier("mine").unwrap();
    assert_eq!(
        mine.missing_weights(),
        Some(dir().join("mine.safetensors").as_path())
    );
    assert!(c
        .skip_reason(&gevaldi_config::TrialId::pair("mine-vs-a"))
        .is_some_and(|r| r.contains("classifier `mine`")));
}
