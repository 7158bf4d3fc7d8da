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
//! Tab-separated, each with a header line, as in `fixtures/imagenet/`:
//! the class list `index  id  name` (indices 0..K in logit order), the edges
//! `child  parent`, and optionally the names of every node `id  name`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::search::Measure;

/// A label hierarchy over K classes, with all-pairs distances.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    ids: Vec<String>,
    names: Vec<String>,
    root: String,
    /// H(a, b), row-major K × K.
    distances: Vec<f32>,
}

/// One row of a TSV file with its 1-based line number.
struct Row<'a> {
    line: usize,
    cells: Vec<&'a str>,
}

fn rows<'a>(text: &'a str, path: &Path, header: &[&str]) -> Result<Vec<Row<'a>>> {
    let mut lines = text.lines().enumerate();
    let err = |line, problem: String| Error::Hierarchy {
        path: path.to_path_buf(),
        line,
        problem,
    };
    match lines.next() {
        Some((_, h)) if h.trim_end_matches('\r').split('\t').collect::<Vec<_>>() == header => {}
        Some((_, h)) => {
            return Err(err(
                1,
                format!("header {h:?}, expected the columns {}", header.join(", ")),
            ))
        }
        None => return Err(err(0, "empty file, expected a header line".into())),
    }
    let mut out = Vec::new();
    for (i, l) in lines {
        let l = l.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = l.split('\t').collect();
        if cells.len() != header.len() || cells.iter().any(|c| c.trim().is_empty()) {
            return Err(err(
                i + 1,
                format!(
                    "{} cells, expected {} non-empty: {}",
                    cells.len(),
                    header.len(),
                    header.join(", ")
                ),
            ));
        }
        out.push(Row { line: i + 1, cells });
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

impl Hierarchy {
    /// Loads a hierarchy from a class list and an edge list (and optionally
    /// a names list of every node, which makes an edge to an undeclared ID
    /// an error).
    pub fn load(classes: &Path, edges: &Path, names: Option<&Path>) -> Result<Self> {
        let names_text = names.map(read).transpose()?;
        Self::parse(
            (&read(classes)?, classes),
            (&read(edges)?, edges),
            names.zip(names_text.as_deref()).map(|(p, t)| (t, p)),
        )
    }

    /// [`load`](Self::load) from texts (each with the path that names it in
    /// errors).
    pub fn parse(
        classes: (&str, &Path),
        edges: (&str, &Path),
        names: Option<(&str, &Path)>,
    ) -> Result<Self> {
        let (classes_path, edges_path) = (classes.1.to_path_buf(), edges.1.to_path_buf());
        let err = |path: &PathBuf, line, problem: String| Error::Hierarchy {
            path: path.clone(),
            line,
            problem,
        };
        // Classes, in logit order.
        let mut ids = Vec::new();
        let mut class_names = Vec::new();
        let mut class_line: HashMap<String, usize> = HashMap::new();
        for row in rows(classes.0, classes.1, &["index", "wnid", "name"])? {
            let expected = ids.len();
            if row.cells[0].parse::<usize>().ok() != Some(expected) {
                return Err(err(
                    &classes_path,
                    row.line,
                    format!(
                        "index {:?}, expected {expected} (indices run 0, 1, 2, ... in logit order)",
                        row.cells[0]
                    ),
                ));
            }
            let id = row.cells[1].to_string();
            if let Some(first) = class_line.insert(id.clone(), row.line) {
                return Err(err(
                    &classes_path,
                    row.line,
                    format!("duplicate class ID `{id}` (first on line {first})"),
                ));
            }
            ids.push(id);
            class_names.push(row.cells[2].to_string());
        }
        if ids.is_empty() {
            return Err(err(&classes_path, 0, "no classes".into()));
        }
        // Declared nodes, when a names file is given.
        let declared: Option<HashMap<String, usize>> = match names {
            None => None,
            Some((text, path)) => {
                let mut map = HashMap::new();
                for row in rows(text, path, &["wnid", "lemma"])? {
                    if let Some(first) = map.insert(row.cells[0].to_string(), row.line) {
                        return Err(err(
                            &path.to_path_buf(),
                            row.line,
                            format!("duplicate ID `{}` (first on line {first})", row.cells[0]),
                        ));
                    }
                }
                Some(map)
            }
        };
        // Nodes: classes first, then every other ID the edges name.
        let mut index: HashMap<String, usize> = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut nodes: Vec<String> = ids.clone();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        // The line of each edge (child, parent), to name a cycle's.
        let mut edge_line: HashMap<(usize, usize), usize> = HashMap::new();
        for row in rows(edges.0, edges.1, &["child", "parent"])? {
            let mut node = |id: &str| -> Result<usize> {
                if let Some(d) = &declared {
                    if !d.contains_key(id) && !class_line.contains_key(id) {
                        return Err(err(
                            &edges_path,
                            row.line,
                            format!(
                                "unknown ID `{id}`: it is neither a class nor in the names file"
                            ),
                        ));
                    }
                }
                Ok(*index.entry(id.to_string()).or_insert_with(|| {
                    nodes.push(id.to_string());
                    parents.push(Vec::new());
                    nodes.len() - 1
                }))
            };
            let (child, parent) = (node(row.cells[0])?, node(row.cells[1])?);
            if child == parent {
                return Err(err(
                    &edges_path,
                    row.line,
                    format!("`{}` is its own parent (a cycle)", nodes[child]),
                ));
            }
            if !parents[child].contains(&parent) {
                parents[child].push(parent);
                edge_line.insert((child, parent), row.line);
            }
        }
        if let Some(cycle) = find_cycle(&parents) {
            let path: Vec<&str> = cycle.iter().map(|&n| nodes[n].as_str()).collect();
            let lines: Vec<usize> = cycle
                .windows(2)
                .filter_map(|w| edge_line.get(&(w[0], w[1])).copied())
                .collect();
            let shown: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            return Err(err(
                &edges_path,
                lines.iter().copied().max().unwrap_or(0),
                format!(
                    "the edges form a cycle: {} (lines {}); a hierarchy must be acyclic",
                    path.join(" -> "),
                    shown.join(", ")
                ),
            ));
        }
        // Upward distances from each class to each of its ancestors.
        let ancestors: Vec<Vec<(usize, u32)>> =
            (0..ids.len()).map(|c| upward(c, &parents)).collect();
        // A class in no edge at all (a typo in either file, or a missing
        // line) is named as such, rather than as cut off from the root.
        let mut has_child = vec![false; parents.len()];
        for ps in &parents {
            for &p in ps {
                has_child[p] = true;
            }
        }
        if let Some(c) = (0..ids.len()).find(|&c| parents[c].is_empty() && !has_child[c]) {
            if ids.len() > 1 {
                return Err(err(
                    &classes_path,
                    class_line[&ids[c]],
                    format!(
                        "class `{}` ({}) is in no edge of `{}`: expected a `{}<TAB>parent` line \
                         there (is the ID misspelt in one of the files?)",
                        ids[c],
                        class_names[c],
                        edges_path.display(),
                        ids[c]
                    ),
                ));
            }
        }
        // The root: the parentless ancestor that most classes reach.
        let mut reach: HashMap<usize, usize> = HashMap::new();
        for a in &ancestors {
            for &(n, _) in a.iter().filter(|(n, _)| parents[*n].is_empty()) {
                *reach.entry(n).or_default() += 1;
            }
        }
        let root = reach
            .iter()
            .max_by_key(|(n, count)| (**count, std::cmp::Reverse(**n)))
            .map(|(n, _)| *n)
            .expect("at least one class");
        let cut: Vec<usize> = (0..ids.len())
            .filter(|&c| !ancestors[c].iter().any(|(n, _)| *n == root))
            .collect();
        if !cut.is_empty() {
            let shown: Vec<String> = cut
                .iter()
                .take(5)
                .map(|&c| {
                    format!(
                        "`{}` ({}, line {})",
                        ids[c], class_names[c], class_line[&ids[c]]
                    )
                })
                .collect();
            let more = if cut.len() > 5 {
                format!(" and {} more", cut.len() - 5)
            } else {
                String::new()
            };
            return Err(err(
                &classes_path,
                class_line[&ids[cut[0]]],
                format!(
                    "{} class(es) not connected to the root `{}`: {}{more}; expected a chain \
                     of `child<TAB>parent` lines in `{}` from each class to the root",
                    cut.len(),
                    nodes[root],
                    shown.join(", "),
                    edges_path.display()
                ),
            ));
        }
        let k = ids.len();
        let mut distances = vec![0f32; k * k];
        for a in 0..k {
            for b in (a + 1)..k {
                let h = meet(&ancestors[a], &ancestors[b]) as f32 / 2.0;
                distances[a * k + b] = h;
                distances[b * k + a] = h;
            }
        }
        Ok(Hierarchy {
            ids,
            names: class_names,
            root: nodes[root].clone(),
            distances,
        })
    }

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

    /// The mean of d(top_n(p_i), top_n(p_j)) over all pairs of models i < j,
    /// for one sample's probabilities, one slice `[class]` per model.
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

    fn measure(&self, probs: &[Vec<Vec<f32>>]) -> Vec<f64> {
        let samples = probs.first().map_or(0, Vec::len);
        (0..samples)
            .map(|i| {
                let per_model: Vec<&[f32]> = probs.iter().map(|m| m[i].as_slice()).collect();
                self.hierarchy.models_distance(&per_model, self.top_n)
            })
            .collect()
    }
}

/// The indices of the n largest probabilities, largest first (ties by lower
/// index). A NaN (of either sign) ranks below every number, NaNs among
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

/// A cycle in the parent graph, as a node path that returns to its start.
fn find_cycle(parents: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; parents.len()];
    for start in 0..parents.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            if *next < parents[n].len() {
                let p = parents[n][*next];
                *next += 1;
                match state[p] {
                    0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        let at = stack.iter().position(|(m, _)| *m == p).expect("on stack");
                        let mut cycle: Vec<usize> = stack[at..].iter().map(|(m, _)| *m).collect();
                        cycle.push(p);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[n] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(m.measure(&probs), [2.0, 0.0]);
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
}
