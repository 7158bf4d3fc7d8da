//! Unit tests of the hierarchy.

use super::*;
use crate::error::Result;
use std::path::Path;

fn parse(classes: &str, edges: &str) -> Result<Hierarchy> {
    Hierarchy::parse(
        (classes, Path::new("classes.tsv")),
        (edges, Path::new("edges.tsv")),
        None,
    )
}

const CLASSES: &str = "index\twnid\tname\n0\tcat\tcat\n1\tdog\tdog\n2\toak\toak\n";
// animal -> {cat, dog}; plant -> oak; entity -> {animal, plant}.
const EDGES: &str =
    "child\tparent\ncat\tanimal\ndog\tanimal\noak\tplant\nanimal\tentity\nplant\tentity\n";

#[test]
fn distances_are_half_the_shortest_path_through_a_common_ancestor() {
    let h = parse(CLASSES, EDGES).unwrap();
    assert_eq!(h.root(), "entity");
    assert_eq!(h.distance(0, 0), 0.0);
    assert_eq!(h.distance(0, 1), 1.0); // cat-animal-dog: 2 edges
    assert_eq!(h.distance(0, 2), 2.0); // cat-animal-entity-plant-oak: 4
    assert_eq!(h.distance(2, 0), 2.0);
    // eq. 3: d({cat, dog}, {oak}) = (2 + 2) / 2; d({cat}, {cat, dog}) = (0 + 1) / 2.
    assert_eq!(h.set_distance(&[0, 1], &[2]), 2.0);
    assert_eq!(h.set_distance(&[0], &[0, 1]), 0.5);
    assert_eq!(top_n(&[0.1, 0.7, 0.2], 2), [1, 2]);
    let (p1, p2) = ([0.8, 0.1, 0.1], [0.1, 0.1, 0.8]);
    assert_eq!(h.models_distance(&[&p1, &p2], 1), 2.0);
    // Through the search's Measure: one value per sample.
    let m = SetDistance::new(std::sync::Arc::new(h), 1);
    assert_eq!(m.name(), "set distance (top-1)");
    let probs = vec![
        vec![p1.to_vec(), p1.to_vec()],
        vec![p2.to_vec(), p1.to_vec()],
    ];
    assert_eq!(m.measure(LogProbs(&probs)), [2.0, 0.0]);
}

#[test]
fn top_n_ranks_nan_of_either_sign_below_every_number() {
    for nan in [f32::NAN, -f32::NAN] {
        assert_eq!(top_n(&[0.5, nan, 0.2], 2), [0, 2], "{nan:?}");
        assert_eq!(top_n(&[nan, 0.2, 0.5], 3), [2, 1, 0], "{nan:?}");
        assert_eq!(top_n(&[nan, f32::NEG_INFINITY], 1), [1], "{nan:?}");
        assert_eq!(top_n(&[nan, nan, nan], 2), [0, 1], "all NaN");
    }
    assert_eq!(top_n(&[-f32::NAN, f32::NAN, 0.0], 3), [2, 0, 1]);
    assert_eq!(top_n(&[0.3, 0.3, 0.4], 5), [2, 0, 1]);
}

#[test]
fn a_dag_takes_the_shortest_route() {
    // dog also sits under `pet`, shared with cat: 2 edges either way, but
    // oak reaches cat through `living` in 2 + 2.
    let edges = format!(
        "{EDGES}dog\tpet\ncat\tpet\npet\tentity\noak\tliving\ncat\tliving\nliving\tentity\n"
    );
    let h = parse(CLASSES, &edges).unwrap();
    assert_eq!(h.distance(0, 1), 1.0);
    assert_eq!(h.distance(0, 2), 1.0);
}

#[test]
fn the_flat_hierarchy_puts_every_class_at_distance_one() {
    let h = Hierarchy::flat(&["a".into(), "b".into(), "c".into()]);
    assert_eq!(h.distance(0, 0), 0.0);
    assert_eq!(h.distance(0, 2), 1.0);
    assert_eq!(h.set_distance(&[0, 1], &[1, 2]), 0.75);
}

#[test]
fn broken_files_are_named_with_their_lines() {
    let e = |c: &str, d: &str| parse(c, d).unwrap_err().to_string();
    let msg = e(CLASSES, &format!("{EDGES}entity\toak\n"));
    // The cycle names the line of its last edge, and all of them (issue
    // 9: it said line 0).
    assert!(msg.contains("edges.tsv:7: the edges form a cycle"), "{msg}");
    assert!(
        msg.contains("entity -> oak -> plant -> entity (lines 7, 4, 6)"),
        "{msg}"
    );
    let msg = e(CLASSES, &format!("{EDGES}oak\toak\n"));
    assert!(
        msg.contains("edges.tsv:7: `oak` is its own parent"),
        "{msg}"
    );
    let msg = e("index\twnid\tname\n0\tcat\tcat\n1\tcat\tcrane\n", EDGES);
    assert!(
        msg.contains("classes.tsv:3: duplicate class ID `cat` (first on line 2)"),
        "{msg}"
    );
    let msg = e("index\twnid\tname\n0\tcat\tcat\n2\tdog\tdog\n", EDGES);
    assert!(
        msg.contains("classes.tsv:3: index \"2\", expected 1"),
        "{msg}"
    );
    // A class in no edge is named as such (issue 9), one whose edges
    // lead elsewhere as cut off from the root.
    let msg = e(&format!("{CLASSES}3\tfish\tfish\n"), EDGES);
    assert!(
        msg.contains("classes.tsv:5: class `fish` (fish) is in no edge of `edges.tsv`"),
        "{msg}"
    );
    let msg = e(
        &format!("{CLASSES}3\tfish\tfish\n"),
        &format!("{EDGES}fish\tsea\n"),
    );
    assert!(
        msg.contains("not connected to the root `entity`: `fish` (fish, line 5)"),
        "{msg}"
    );
    let msg = e("idx\twnid\tname\n", EDGES);
    assert!(msg.contains("classes.tsv:1: header"), "{msg}");
    let names = "wnid\tlemma\nanimal\tanimal\nplant\tplant\n";
    let err = Hierarchy::parse(
        (CLASSES, Path::new("classes.tsv")),
        (EDGES, Path::new("edges.tsv")),
        Some((names, Path::new("names.tsv"))),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("edges.tsv:5: unknown ID `entity`"), "{err}");
}

/// Every n-subset of 0..k, in lexicographic order.
fn subsets(k: usize, n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    (n - 1..k)
        .flat_map(|last| {
            subsets(last, n - 1).into_iter().map(move |mut s| {
                s.push(last);
                s
            })
        })
        .collect()
}

/// The largest d(C1, C2) over every pair of n-sets, by brute force.
fn largest_set_distance(h: &Hierarchy, n: usize) -> f64 {
    let sets = subsets(h.len(), n);
    sets.iter()
        .flat_map(|a| sets.iter().map(move |b| h.set_distance(a, b)))
        .fold(0.0, f64::max)
}

#[test]
fn the_set_distance_ceiling_bounds_every_pair_of_top_n_sets() {
    // Flat: exact, including the sets that must share classes (2n > K).
    for k in 1..=7 {
        let names: Vec<String> = (0..k).map(|i| i.to_string()).collect();
        let h = Hierarchy::flat(&names);
        for n in 1..=k {
            assert_eq!(
                h.set_distance_ceiling(n),
                largest_set_distance(&h, n),
                "flat, K {k}, n {n}"
            );
        }
    }
    assert_eq!(
        Hierarchy::flat(&["a".into(), "b".into()]).set_distance_ceiling(2),
        0.5
    );
    // A deeper one: animal -> {cat, dog, bird}, plant -> {oak, fir},
    // fir -> {pine}... (a class may also sit below another class).
    let classes = "index\twnid\tname\n0\tcat\tcat\n1\tdog\tdog\n2\tbird\tbird\n\
                   3\toak\toak\n4\tfir\tfir\n5\tpine\tpine\n";
    let edges = "child\tparent\ncat\tmammal\ndog\tmammal\nmammal\tanimal\nbird\tanimal\n\
                 oak\tplant\nfir\tplant\npine\tfir\nanimal\tentity\nplant\tentity\n";
    let h = parse(classes, edges).unwrap();
    for n in 1..=6 {
        let (ceiling, largest) = (h.set_distance_ceiling(n), largest_set_distance(&h, n));
        assert_eq!(ceiling, largest, "n {n}");
    }
    // n = 1 is the largest distance: cat-mammal-animal-entity-plant-fir-pine.
    assert_eq!(h.set_distance_ceiling(1), 3.0);
    assert_eq!(largest_set_distance(&h, 1), 3.0);
    // The 3-class one: the bounds gave 1.5 (by overlap 2 · (4 - 1) / 4,
    // below by rows (4 + 3) / 4), where no two top-2 sets are more than
    // 1.25 apart, and a max_set_distance of 1.4 could never fail.
    let h = parse(CLASSES, EDGES).unwrap();
    assert_eq!(h.set_distance_ceiling(2), 1.25);
    assert_eq!(largest_set_distance(&h, 2), 1.25);
    // A class under two parents: d -> p <- c -> a <- b, with p and a
    // three edges below the root each. H(d, b) = 4 through the root (the
    // path d-p-c-a-b, half as long, goes down through c); top-2 sets are
    // at most 2.0 apart ({d, b} and {d, b}), where the bounds said 2.5.
    let classes = "index\twnid\tname\n0\tc\tcat\n1\td\tdog\n2\tb\tbird\n";
    let edges = "child\tparent\nx1\tr\nx2\tx1\na\tx2\ny1\tr\ny2\ty1\np\ty2\n\
                 c\ta\nc\tp\nd\tp\nb\ta\n";
    let h = parse(classes, edges).unwrap();
    assert_eq!(h.distance(1, 2), 4.0);
    assert_eq!(h.set_distance_ceiling(2), 2.0);
    assert_eq!(largest_set_distance(&h, 2), 2.0);
}

/// Beyond [`EXACT_CEILING_SETS`] n-sets the ceiling is the bounds, which
/// never fall below the largest set distance.
#[test]
fn the_set_distance_ceiling_of_many_sets_is_a_bound() {
    // A chain-like hierarchy of 30 classes: class i under node i / 3.
    let mut classes = String::from("index\twnid\tname\n");
    let mut edges = String::from("child\tparent\n");
    for i in 0..30 {
        classes.push_str(&format!("{i}\tc{i}\tc{i}\n"));
        edges.push_str(&format!("c{i}\tg{}\n", i / 3));
    }
    for g in 0..10 {
        edges.push_str(&format!(
            "g{g}\t{}\n",
            if g == 0 {
                "root".into()
            } else {
                format!("g{}", g - 1)
            }
        ));
    }
    let h = parse(&classes, &edges).unwrap();
    // C(30, 2) = 435 sets: exact; C(30, 5) = 142506: the bounds.
    assert_eq!(h.set_distance_ceiling(2), largest_set_distance(&h, 2));
    let sets = subsets(30, 5);
    assert!(sets.len() > EXACT_CEILING_SETS);
    let ceiling = h.set_distance_ceiling(5);
    let probe = sets.iter().step_by(97).fold(0f64, |m, a| {
        sets.iter()
            .step_by(89)
            .fold(m, |m, b| m.max(h.set_distance(a, b)))
    });
    assert!(ceiling >= probe, "{ceiling} < {probe}");
}
