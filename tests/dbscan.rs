//! DBSCAN (issue 17): the standard algorithm on hand-computed cases, and
//! scikit-learn's labels on synthetic blobs (tests/data/dbscan_reference.py
//! wrote them).

use gevaldi::regions::{dbscan, Clustering};

/// Points on a line.
fn line(xs: &[f32]) -> Vec<Vec<f32>> {
    xs.iter().map(|&x| vec![x]).collect()
}

fn labels(c: &Clustering) -> Vec<Option<usize>> {
    c.labels.clone()
}

#[test]
fn core_border_and_noise_follow_the_definitions() {
    // eps 1, min_samples 3: 0 has {0, 1} (2 points), 1 has {0, 1, 2} and 2
    // has {1, 2, 3} (core), 3 has {2, 3}; 10 has only itself. Every
    // neighbour sits at exactly eps.
    let c = dbscan(&line(&[0.0, 1.0, 2.0, 3.0, 10.0]), 1.0, 3);
    assert_eq!(labels(&c), [Some(0), Some(0), Some(0), Some(0), None]);
    assert_eq!((c.clusters, c.noise()), (1, 1));
    assert_eq!(c.members(), [vec![0, 1, 2, 3]]);
}

#[test]
fn a_neighbour_at_exactly_eps_counts() {
    let points = line(&[0.0, 0.5, 1.0]);
    // 0.5 reaches both others at exactly 0.5: core, with two border points.
    let c = dbscan(&points, 0.5, 3);
    assert_eq!(labels(&c), [Some(0), Some(0), Some(0)]);
    // Just below, nobody has 3 points.
    let c = dbscan(&points, 0.499_999, 3);
    assert_eq!(labels(&c), [None, None, None]);
    assert_eq!((c.clusters, c.noise()), (0, 3));
}

/// Two clusters sharing a border point s = (0, 0), min_samples 4, eps 1:
/// a = (-1, 0) and b = (1, 0) each have 4 points (themselves, two of their
/// own and s); s has 3 (a, b and itself), their other points 3 each.
fn two_clusters_sharing_a_border_point(b_first: bool) -> Vec<Vec<f32>> {
    let a = [vec![-1.5, 0.0], vec![-1.0, 0.0], vec![-1.0, 0.5]];
    let b = [vec![1.0, 0.0], vec![1.5, 0.0], vec![1.0, -0.5]];
    let s = vec![0.0, 0.0];
    let (first, second) = if b_first { (b, a) } else { (a, b) };
    first
        .into_iter()
        .chain([s])
        .chain(second)
        .collect::<Vec<_>>()
}

#[test]
fn a_cluster_of_fewer_than_min_samples_whose_border_was_claimed_stays_a_cluster() {
    // s joins the first cluster; the second keeps its core point and its
    // two border points: 3 members, fewer than min_samples = 4, yet a
    // cluster (petal-clustering 0.13 made them noise).
    let c = dbscan(&two_clusters_sharing_a_border_point(false), 1.0, 4);
    assert_eq!(
        labels(&c),
        [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(1)
        ]
    );
    assert_eq!(c.members(), [vec![0, 1, 2, 3], vec![4, 5, 6]]);
    // The border point goes to the cluster whose core point comes first.
    let c = dbscan(&two_clusters_sharing_a_border_point(true), 1.0, 4);
    assert_eq!(c.members(), [vec![0, 1, 2, 3], vec![4, 5, 6]]);
}

#[test]
fn all_noise_and_one_cluster() {
    let far = line(&[0.0, 10.0, 20.0, 30.0]);
    assert_eq!(dbscan(&far, 1.0, 2).noise(), 4);
    // min_samples 1: every point is core, each its own cluster.
    assert_eq!(
        labels(&dbscan(&far, 1.0, 1)),
        [Some(0), Some(1), Some(2), Some(3)]
    );
    let near = line(&[0.0, 0.1, 0.2, 0.3]);
    assert_eq!(labels(&dbscan(&near, 1.0, 4)), [Some(0); 4]);
    // More than there are points: nothing is core.
    assert_eq!(dbscan(&near, 1.0, 5).noise(), 4);
    assert_eq!(
        dbscan(&[], 1.0, 3),
        Clustering {
            labels: vec![],
            clusters: 0
        }
    );
}

/// The points (read as the script reads them: f64, then rounded to f32)
/// and scikit-learn's labels of a CSV written by dbscan_reference.py.
fn reference(csv: &str) -> (Vec<Vec<f32>>, Vec<Option<usize>>) {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (label, coords) = fields.split_last().unwrap();
        points.push(
            coords
                .iter()
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect::<Vec<f32>>(),
        );
        let label: i64 = label.parse().unwrap();
        expected.push(usize::try_from(label).ok());
    }
    (points, expected)
}

/// Our labels equal scikit-learn's, numbered the same way (clusters in the
/// order of their first core point, -1 for noise).
fn check_against_scikit_learn(csv: &str, n: usize, dim: usize, eps: f64, min_samples: usize) {
    let (points, expected) = reference(csv);
    assert_eq!(points.len(), n);
    assert!(points.iter().all(|p| p.len() == dim));
    let c = dbscan(&points, eps, min_samples);
    let sizes: Vec<usize> = c.members().iter().map(Vec::len).collect();
    println!(
        "{} clusters of sizes {sizes:?}, {} noise",
        c.clusters,
        c.noise()
    );
    assert_eq!(c.noise(), expected.iter().filter(|l| l.is_none()).count());
    let differ: Vec<usize> = (0..n).filter(|&i| c.labels[i] != expected[i]).collect();
    assert!(
        differ.is_empty(),
        "{} labels differ: {differ:?}",
        differ.len()
    );
}

/// 2000 points in 4-d (4 Gaussian blobs of different sizes and a uniform
/// background), eps 0.35, min_samples 10, against scikit-learn 1.9.1.
#[test]
fn the_labels_equal_scikit_learns_on_blobs() {
    check_against_scikit_learn(include_str!("data/dbscan_blobs.csv"), 2000, 4, 0.35, 10);
}

/// 600 points of an integer lattice, eps 1, min_samples 4: every
/// neighbour at exactly eps, and clusters smaller than min_samples whose
/// border points were claimed first (both lost by petal-clustering 0.13).
#[test]
fn the_labels_equal_scikit_learns_on_a_lattice() {
    check_against_scikit_learn(include_str!("data/dbscan_lattice.csv"), 600, 2, 1.0, 4);
}

/// 300 points in 3-d, six (eps, min_samples) from 1 (every point a
/// cluster or in one) to 40 (one cluster), against scikit-learn 1.9.1's
/// labels (`bench/dbscan_sweep_reference.py`): same labels, same numbering.
#[test]
fn the_labels_equal_scikit_learns_over_a_sweep() {
    let csv = include_str!("data/dbscan_sweep.csv");
    let sweep = [
        (0.2, 1),
        (0.2, 2),
        (0.3, 5),
        (0.45, 8),
        (0.6, 15),
        (1.0, 40),
    ];
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let points: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| {
            r[..3]
                .iter()
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect()
        })
        .collect();
    for (k, (eps, min_samples)) in sweep.into_iter().enumerate() {
        let expected: Vec<Option<usize>> = rows
            .iter()
            .map(|r| usize::try_from(r[3 + k].parse::<i64>().unwrap()).ok())
            .collect();
        let c = dbscan(&points, eps, min_samples);
        let differ: Vec<usize> = (0..points.len())
            .filter(|&i| c.labels[i] != expected[i])
            .collect();
        assert!(
            differ.is_empty(),
            "eps {eps}, min_samples {min_samples}: {differ:?} differ"
        );
    }
}
