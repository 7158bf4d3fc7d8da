//! Label hierarchies and the hierarchical prediction-set distance (paper
//! eq. 3, appendix D).
//!
//! A hierarchy is a DAG over class IDs (WordNet noun synsets for ImageNet:
//! a node may have several parents), keyed by stable IDs, never by names
//! (ImageNet has two classes named "crane"). For classes a and b,
//!
//! ```text
//! H(a, b) = min over common ancestors c of (d(a, c) + d(b, c)) / 2
//! ```
//!
//! where d(x, c) is the length in edges of the shortest upward path from x to
//! its ancestor c (a node is its own ancestor at distance 0): half the length
//! of the shortest path between a and b through a common ancestor, and
//! H(a, a) = 0. For the top-n sets C1 and C2 of two models,
//!
//! ```text
//! d(C1, C2) = 1 / (|C1| |C2|) * sum_{a in C1} sum_{b in C2} H(a, b)
//! ```
//!
//! The paper's quoted figures (harvestman vs barn spider 1.0, orange vs
//! Granny Smith 2.0, maraca vs Granny Smith 7.0) equal (path − 1) / 2, which
//! would give −0.5 for identical classes; gevaldi implements the written
//! definition, so those pairs measure 1.5, 2.5 and 7.5 here (paths of 3, 5
//! and 15 edges; tested).
//!
//! All-pairs distances are computed once when a hierarchy is built (a K × K
//! table), and a hierarchy is shared, behind an `Arc`, by every trial that
//! uses it. With no hierarchy file, a config's hierarchy is flat: every class
//! is a child of one root, so H(a, b) = 1 for any two different classes.
//!
//! # File format
//!
//! Tab-separated, each with a header line naming its columns, as in
//! `fixtures/imagenet/`: the class list `index  wnid  name` (indices 0..K
//! in logit order; `wnid` any node ID, WordNet's or one's own), the edges
//! `child  parent`, and optionally the names of every node `wnid  lemma`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use crate::search::{LogProbs, Measure};

mod load;
#[cfg(test)]
mod tests;

/// The most n-sets of a hierarchy's classes over which
/// [`Hierarchy::set_distance_ceiling`] finds the largest set distance
/// itself (each costing K · n additions and a sort of K), rather than a
/// bound: every n for up to 16 classes, n ≤ 2 for up to 200, none of
/// ImageNet's top-5.
pub const EXACT_CEILING_SETS: usize = 20_000;

/// A label hierarchy over K classes, with all-pairs distances.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    ids: Vec<String>,
    names: Vec<String>,
    root: String,
    /// H(a, b), row-major K × K.
    distances: Vec<f32>,
}

impl Hierarchy {
    /// The flat hierarchy of `names`: every class a child of one root, so
    /// H(a, b) = 1 for a ≠ b. IDs are the names.
    pub fn flat(names: &[String]) -> Self {
        let k = names.len();
        let mut distances = vec![1f32; k * k];
        for a in 0..k {
            distances[a * k + a] = 0.0;
        }
        Hierarchy {
            ids: names.to_vec(),
            names: names.to_vec(),
            root: "(root)".into(),
            distances,
        }
    }

    /// The number of classes K.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no classes (never true for a loaded hierarchy).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The class IDs, in logit order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The class names, in logit order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The root's ID.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The index of the class with ID `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id)
    }

    /// H(a, b) for class indices a and b.
    pub fn distance(&self, a: usize, b: usize) -> f64 {
        self.distances[a * self.len() + b] as f64
    }

    /// d(C1, C2) of eq. 3 (0 when either set is empty).
    pub fn set_distance(&self, c1: &[usize], c2: &[usize]) -> f64 {
        if c1.is_empty() || c2.is_empty() {
            return 0.0;
        }
        let total: f64 = c1
            .iter()
            .flat_map(|&a| c2.iter().map(move |&b| (a, b)))
            .map(|(a, b)| self.distance(a, b))
            .sum();
        total / (c1.len() * c2.len()) as f64
    }

    /// A number the set distance d(C1, C2) of two top-`n` sets (n distinct
    /// classes each, `1 <= n <= K`) never exceeds, so neither does the mean
    /// over model pairs: a `max_set_distance` at or above it can never
    /// fail.
    ///
    /// Where the n-sets of K classes number at most [`EXACT_CEILING_SETS`],
    /// it is the largest d itself: for each C1, the best C2 holds the n
    /// classes b of largest Σ_{a ∈ C1} H(a, b). Otherwise it is the smaller
    /// of two bounds:
    ///
    /// - by rows: each a in C1 adds at most R(a), the sum of the n largest
    ///   H(a, ·), so d ≤ (the n largest R(a) summed) / n²;
    /// - by overlap: two n-sets of K classes share at least 2n − K classes,
    ///   each a pair (a, a) of distance 0, and every other pair is at most
    ///   the largest distance D, so d ≤ D (n² − max(0, 2n − K)) / n².
    ///
    /// The bounds are exact for a flat hierarchy; for another, d may stay
    /// below them (a DAG of 3 classes, top-2: bounds 2.5, largest d 2.0,
    /// and a `max_set_distance` of 2.2 passed every search).
    pub fn set_distance_ceiling(&self, n: usize) -> f64 {
        let k = self.len();
        let n = n.clamp(1, k.max(1));
        if k == 0 {
            return 0.0;
        }
        if let Some(largest) = self.largest_set_distance(n) {
            return largest;
        }
        let mut row_sums: Vec<f64> = (0..k)
            .map(|a| {
                let mut row: Vec<f32> = self.distances[a * k..(a + 1) * k].to_vec();
                row.sort_unstable_by(|x, y| y.total_cmp(x));
                row[..n].iter().map(|&h| h as f64).sum()
            })
            .collect();
        row_sums.sort_unstable_by(|x, y| y.total_cmp(x));
        let squares = (n * n) as f64;
        let by_rows = row_sums[..n].iter().sum::<f64>() / squares;
        let largest = self.distances.iter().fold(0f32, |m, &h| m.max(h)) as f64;
        let shared = (2 * n).saturating_sub(k) as f64;
        let by_overlap = largest * (squares - shared) / squares;
        by_rows.min(by_overlap)
    }

    /// The largest d(C1, C2) over every pair of n-sets (`1 <= n <= K`), or
    /// `None` where the n-sets number more than [`EXACT_CEILING_SETS`].
    fn largest_set_distance(&self, n: usize) -> Option<f64> {
        let k = self.len();
        // C(k, n), stopping once it passes the limit.
        let mut sets: u128 = 1;
        for i in 0..n.min(k - n) {
            sets = sets * (k - i) as u128 / (i + 1) as u128;
            if sets > EXACT_CEILING_SETS as u128 {
                return None;
            }
        }
        let mut c1: Vec<usize> = (0..n).collect();
        let mut columns = vec![0f64; k];
        let mut largest = 0f64;
        loop {
            columns.iter_mut().for_each(|c| *c = 0.0);
            for &a in &c1 {
                let row = &self.distances[a * k..(a + 1) * k];
                for (c, &h) in columns.iter_mut().zip(row) {
                    *c += h as f64;
                }
            }
            columns.sort_unstable_by(|x, y| y.total_cmp(x));
            largest = largest.max(columns[..n].iter().sum::<f64>());
            // The next n-set in lexicographic order.
            let Some(i) = (0..n).rev().find(|&i| c1[i] < k - n + i) else {
                break;
            };
            c1[i] += 1;
            for j in i + 1..n {
                c1[j] = c1[j - 1] + 1;
            }
        }
        Some(largest / (n * n) as f64)
    }

    /// The mean of d(top_n(p_i), top_n(p_j)) over all pairs of models i < j,
    /// for one sample's probabilities or log-probabilities (only their
    /// order counts), one slice `[class]` per model.
    pub fn models_distance(&self, probs: &[&[f32]], n: usize) -> f64 {
        let tops: Vec<Vec<usize>> = probs.iter().map(|p| top_n(p, n)).collect();
        let mut total = 0.0;
        let mut pairs = 0;
        for i in 0..tops.len() {
            for j in (i + 1)..tops.len() {
                total += self.set_distance(&tops[i], &tops[j]);
                pairs += 1;
            }
        }
        if pairs == 0 {
            0.0
        } else {
            total / pairs as f64
        }
    }
}

/// The hierarchical set distance of the models' top-n predictions, as a
/// [`Measure`] of a search: per sample, the mean over model pairs i < j of
/// d(top_n(p_i), top_n(p_j)).
#[derive(Clone, Debug)]
pub struct SetDistance {
    /// The hierarchy (shared).
    pub hierarchy: Arc<Hierarchy>,
    /// n.
    pub top_n: usize,
}

impl SetDistance {
    /// The set distance of the top-`top_n` predictions over `hierarchy`.
    pub fn new(hierarchy: Arc<Hierarchy>, top_n: usize) -> Self {
        SetDistance { hierarchy, top_n }
    }
}

impl Measure for SetDistance {
    fn name(&self) -> String {
        format!("set distance (top-{})", self.top_n)
    }

    fn measure(&self, log_probs: LogProbs<'_>) -> Vec<f64> {
        let samples = log_probs.0.first().map_or(0, Vec::len);
        (0..samples)
            .map(|i| {
                let per_model: Vec<&[f32]> = log_probs.0.iter().map(|m| m[i].as_slice()).collect();
                self.hierarchy.models_distance(&per_model, self.top_n)
            })
            .collect()
    }
}

/// The indices of the n largest probabilities (or log-probabilities),
/// largest first (ties by lower index). A NaN (of either sign) ranks below every number, NaNs among
/// themselves by index: when every value is NaN, the result is `0..n`.
pub fn top_n(p: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    // Numbers first, largest first; `total_cmp` alone would put a positive
    // NaN above every number.
    idx.sort_by(|&a, &b| {
        match (p[a].is_nan(), p[b].is_nan()) {
            (false, false) => p[b].total_cmp(&p[a]),
            (nan_a, nan_b) => nan_a.cmp(&nan_b),
        }
        .then(a.cmp(&b))
    });
    idx.truncate(n);
    idx
}

/// BFS upwards: every ancestor of `start` (itself included) with its
/// shortest distance, sorted by node.
fn upward(start: usize, parents: &[Vec<usize>]) -> Vec<(usize, u32)> {
    let mut dist: HashMap<usize, u32> = HashMap::from([(start, 0)]);
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let d = dist[&n];
        for &p in &parents[n] {
            if let std::collections::hash_map::Entry::Vacant(e) = dist.entry(p) {
                e.insert(d + 1);
                queue.push_back(p);
            }
        }
    }
    let mut out: Vec<(usize, u32)> = dist.into_iter().collect();
    out.sort_unstable();
    out
}

/// min over common ancestors of the summed distances (both lists sorted).
fn meet(a: &[(usize, u32)], b: &[(usize, u32)]) -> u32 {
    let (mut i, mut j, mut best) = (0, 0, u32::MAX);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                best = best.min(a[i].1 + b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    best
}
