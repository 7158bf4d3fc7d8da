//! The ImageNet-1k / WordNet hierarchy of fixtures/imagenet.

use std::path::PathBuf;
use std::time::Instant;

use gevaldi::hierarchy::Hierarchy;

fn imagenet() -> Hierarchy {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/imagenet");
    Hierarchy::load(
        &dir.join("imagenet1k_classes.tsv"),
        &dir.join("imagenet1k_wordnet_hypernyms.tsv"),
        Some(&dir.join("imagenet1k_wordnet_names.tsv")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_imagenet_hierarchy_loads_with_its_root() {
    let started = Instant::now();
    let h = imagenet();
    println!(
        "loaded 1000 classes and all-pairs distances in {:?}",
        started.elapsed()
    );
    assert_eq!(h.len(), 1000);
    assert_eq!(h.root(), "n00001740"); // entity
    assert_eq!(h.ids()[0], "n01440764");
    assert_eq!(h.names()[0], "tench");
}

/// The figures of the dataset's README (shortest path through a common
/// hypernym, in edges) and of the paper's appendix E, which quotes
/// (path - 1) / 2; H is path / 2.
#[test]
fn known_pairs_measure_half_their_path() {
    let h = imagenet();
    let id = |wnid: &str| h.index_of(wnid).unwrap();
    let (harvestman, barn_spider) = (id("n01770081"), id("n01773549"));
    let (orange, granny_smith, maraca) = (id("n07747607"), id("n07742313"), id("n03720891"));
    assert_eq!(h.distance(harvestman, barn_spider), 1.5); // path 3, paper 1.0
    assert_eq!(h.distance(orange, granny_smith), 2.5); // path 5, paper 2.0
    assert_eq!(h.distance(maraca, granny_smith), 7.5); // path 15, paper 7.0
                                                       // The paper's set distance for fig. 4(e): {orange} vs {Granny Smith},
                                                       // then {maraca} vs {Granny Smith}.
    assert_eq!(h.set_distance(&[orange], &[granny_smith]), 2.5);
    assert_eq!(h.set_distance(&[maraca], &[granny_smith]), 7.5);
}

/// Keyed by IDs: ImageNet has two classes named "crane".
#[test]
fn two_classes_with_one_name_stay_apart() {
    let h = imagenet();
    let cranes: Vec<usize> = (0..h.len()).filter(|&i| h.names()[i] == "crane").collect();
    assert_eq!(cranes.len(), 2);
    let (bird, machine) = (cranes[0], cranes[1]);
    assert_ne!(h.ids()[bird], h.ids()[machine]);
    assert!(
        h.distance(bird, machine) > 3.0,
        "{}",
        h.distance(bird, machine)
    );
    assert_eq!(h.distance(bird, bird), 0.0);
}

#[test]
fn distances_are_symmetric_and_positive_off_the_diagonal() {
    let h = imagenet();
    for a in (0..1000).step_by(37) {
        for b in (0..1000).step_by(41) {
            assert_eq!(h.distance(a, b), h.distance(b, a));
            assert_eq!(h.distance(a, b) == 0.0, a == b);
        }
    }
}
