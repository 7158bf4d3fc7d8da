//! Loads the ImageNet-1k / WordNet hierarchy of fixtures/imagenet, computes
//! all 1000 x 1000 class distances, and prints how long that took and the
//! paper's example pairs.
//!
//! ```text
//! cargo run --release --example hierarchy_distances
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use gevaldi::hierarchy::Hierarchy;

fn main() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/imagenet");
    let started = Instant::now();
    let h = Hierarchy::load(
        &dir.join("imagenet1k_classes.tsv"),
        &dir.join("imagenet1k_wordnet_hypernyms.tsv"),
        Some(&dir.join("imagenet1k_wordnet_names.tsv")),
    )?;
    let took = started.elapsed();
    println!(
        "loaded {} classes under `{}` and all {} x {} distances H(a, b) in {:.1} ms",
        h.len(),
        h.root(),
        h.len(),
        h.len(),
        took.as_secs_f64() * 1e3
    );
    let id = |wnid: &str| h.index_of(wnid).context(wnid.to_string());
    let pairs = [
        ("n01770081", "n01773549"), // harvestman, barn spider
        ("n07747607", "n07742313"), // orange, Granny Smith
        ("n03720891", "n07742313"), // maraca, Granny Smith
        ("n02012849", "n03126707"), // crane (bird), crane (machine)
    ];
    for (a, b) in pairs {
        let (i, j) = (id(a)?, id(b)?);
        println!(
            "  H({} {a}, {} {b}) = {}",
            h.names()[i],
            h.names()[j],
            h.distance(i, j)
        );
    }
    Ok(())
}
