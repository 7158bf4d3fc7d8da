//! Reading a hierarchy from its TSV files, and the checks that it is a
//! connected DAG over the class list.

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::error::{Error, Result};

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
        cause: source,
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
