//! `[[tournament]]`: its keys, its models and its thresholds, validated
//! against the tournament's own models.

use toml::de::DeValue;

use super::{Cx, Entry, Value};
use crate::schema::{Config, TournamentDecl, WinRateDecl};
use crate::vocab::{RankingKind, TrialKind};

const TOURNAMENT_KEYS: [&str; 13] = [
    "name",
    "models",
    "generator",
    "samples",
    "test_data",
    "ranking",
    "champion",
    "max_rank",
    "above",
    "min_win_rate",
    "min_srcc",
    "ignore",
    "search keys",
];

impl Cx<'_> {
    pub(super) fn tournament(
        &mut self,
        value: &Value<'_>,
        index: usize,
        config: &Config,
    ) -> Option<TournamentDecl> {
        let path = format!("tournament[{index}]");
        let table = self.table(value, &path)?;
        let before = self.errors.len();
        let search = self.search(table, &path, &TOURNAMENT_KEYS);
        let get = |k: &str| table.get(k);
        let entry = Entry {
            value,
            table,
            path: &path,
        };
        let name = self.entry_name(&entry, TrialKind::Tournament);
        let models = self.entry_classifiers(&entry, "models", config, "classifiers to rank");
        if models.len() == 2 {
            let v = get("models").expect("read above");
            self.err(
                v.span(),
                &format!("{path}.models"),
                "expected 3 or more classifiers to rank, found 2 (for two, use a [[pair]])",
            );
        }
        // A pair is named `<a>-vs-<b>` (its trial and its record's file,
        // `pairs/<a>-vs-<b>.json`): with `-vs-` in a name, two pairs could
        // get one name, and a name must make a portable file name (`x/y`
        // made a folder).
        if let Some(DeValue::Array(items)) = get("models").map(|v| v.get_ref()) {
            for (i, item) in items.iter().enumerate() {
                let Some(m) = item.get_ref().as_str() else {
                    continue;
                };
                let problem = if m.contains("-vs-") {
                    Some(format!(
                        "`{m}` contains `-vs-`, which a tournament's pair names put between \
                         two models (`<a>-vs-<b>`): rename the classifier"
                    ))
                } else {
                    super::first_unportable(m).map(|c| {
                        format!(
                            "`{m}`: {c:?} is not portable in a file name, and a \
                             tournament's pair records are `pairs/<a>-vs-<b>.json`; rename \
                             the classifier (ASCII letters, digits, `_`, `-`, `.`)"
                        )
                    })
                };
                if let Some(problem) = problem {
                    self.err(item.span(), &format!("{path}.models[{i}]"), problem);
                }
            }
            let mut lengths: Vec<usize> = items
                .iter()
                .filter_map(|item| item.get_ref().as_str().map(str::len))
                .collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            if let [a, b, ..] = lengths[..] {
                let longest = a + "-vs-".len() + b;
                if longest > crate::MAX_NAME_LEN {
                    self.err(
                        get("models").expect("read above").span(),
                        &format!("{path}.models"),
                        format!(
                            "the longest pair name, `<a>-vs-<b>`, is {longest} bytes: at most {}, \
                             so that its record's file name stays within 255 bytes; shorten the \
                             longest classifier names",
                            crate::MAX_NAME_LEN
                        ),
                    );
                }
            }
        }
        let generator = self.entry_generator(&entry, config, true);
        self.entry_inputs(&entry, "models", generator.as_deref(), config);
        let test_data = get("test_data").and_then(|v| {
            let key = format!("{path}.test_data");
            let written = self.string(v, &key)?;
            let dir = self.dir.join(&written);
            if dir.is_dir() {
                Some(dir)
            } else {
                let message = format!(
                    "directory `{written}` does not exist (looked for `{}`)",
                    dir.display()
                );
                self.err(v.span(), &key, message);
                None
            }
        });
        let samples = get("samples")
            .and_then(|v| self.uint(v, &format!("{path}.samples"), 1))
            .unwrap_or(100) as usize;
        let ranking = get("ranking")
            .and_then(|v| {
                self.choice(v, &format!("{path}.ranking"), RankingKind::ALL, |r| {
                    r.name()
                })
            })
            .unwrap_or_default();
        let champion =
            get("champion").and_then(|v| self.member(v, &format!("{path}.champion"), &models));
        let max_rank = get("max_rank")
            .map(|v| self.max_rank(v, &format!("{path}.max_rank"), &models))
            .unwrap_or_default();
        let above = get("above")
            .map(|v| self.above(v, &format!("{path}.above"), &models))
            .unwrap_or_default();
        let min_win_rate = get("min_win_rate")
            .map(|v| self.min_win_rate(v, &format!("{path}.min_win_rate"), &models))
            .unwrap_or_default();
        let min_srcc = get("min_srcc").and_then(|v| {
            let key = format!("{path}.min_srcc");
            let s = self.float(
                v,
                &key,
                |s| (-1.0..=1.0).contains(&s),
                "a number in [-1, 1]",
            )?;
            if test_data.is_none() && get("test_data").is_none() {
                self.err(
                    v.span(),
                    &key,
                    "`min_srcc` needs `test_data` (the SRCC is with the models' test accuracy)",
                );
            }
            if s == -1.0 {
                self.err(
                    v.span(),
                    &key,
                    "-1 can never fail: an SRCC is never below -1; expected a number in (-1, 1]",
                );
            }
            Some(s)
        });
        self.ranks_that_can_pass(&entry, champion.as_deref(), &max_rank, &above);
        let above = above.into_iter().map(|(a, b, _)| (a, b)).collect();
        let ignore = self.entry_ignore(&entry);
        if self.errors.len() > before {
            return None;
        }
        Some(TournamentDecl {
            name: name?,
            models,
            generator: generator?,
            samples,
            test_data,
            search,
            ranking,
            champion,
            max_rank,
            above,
            min_win_rate,
            min_srcc,
            ignore,
            line: self.line(&value.span()),
        })
    }

    /// A string naming one of the tournament's `models`.
    fn member(&mut self, value: &Value<'_>, key: &str, models: &[String]) -> Option<String> {
        let m = self.string(value, key)?;
        if models.contains(&m) {
            Some(m)
        } else {
            let message = format!(
                "`{m}` is not a model of this tournament: expected one of {}",
                quote(models)
            );
            self.err(value.span(), key, message);
            None
        }
    }

    /// `max_rank = { model = r }`, r in 1..=N.
    fn max_rank(
        &mut self,
        value: &Value<'_>,
        key: &str,
        models: &[String],
    ) -> Vec<(String, usize)> {
        let Some(table) = self.table(value, key) else {
            return Vec::new();
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut out = Vec::new();
        for (k, v) in entries {
            let m = k.get_ref().to_string();
            let path = format!("{key}.{m}");
            if !models.contains(&m) {
                let message = format!(
                    "`{m}` is not a model of this tournament: expected one of {}",
                    quote(models)
                );
                self.err(k.span(), &path, message);
                continue;
            }
            if let Some(r) = self.uint(v, &path, 1) {
                if r as usize == models.len() {
                    let message = format!(
                        "{r} can never fail: of the tournament's {r} models, every one ranks {r} \
                         or better; expected a rank from 1 to {}",
                        r - 1
                    );
                    self.err(v.span(), &path, message);
                } else if r as usize > models.len() {
                    let message = format!(
                        "{r} is out of range: expected a rank from 1 to {} (the number of models)",
                        models.len()
                    );
                    self.err(v.span(), &path, message);
                } else {
                    out.push((m, r as usize));
                }
            }
        }
        out
    }

    /// Rank thresholds that no ranking passes together (ranks are
    /// pessimistic, so a tie passes none: the best a tournament can give is
    /// one strict order): `above` pairs that form a cycle, a model above
    /// the `champion`, `max_rank = 1` for another model than the champion,
    /// more models with `max_rank` r or better (the champion's rank is 1)
    /// than r, and a `max_rank` r of a model that r or more models must
    /// rank above (the champion, and `above` through any chain). Each is
    /// refused at the entry that makes it impossible.
    fn ranks_that_can_pass(
        &mut self,
        e: &Entry,
        champion: Option<&str>,
        max_rank: &[(String, usize)],
        above: &[(String, String, usize)],
    ) {
        let path = e.path;
        let above_span = |i: usize| match e.table.get("above").map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items.get(i).map(|v| v.span()),
            _ => None,
        };
        let rank_span = |m: &str| match e.table.get("max_rank").map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => t.get(m).map(|v| v.span()),
            _ => None,
        };
        if let Some(c) = champion {
            for (a, b, i) in above {
                if b == c {
                    let span = above_span(*i).unwrap_or_default();
                    self.err(
                        span,
                        &format!("{path}.above[{i}]"),
                        format!(
                            "[`{a}`, `{b}`] can never pass beside champion = `{c}`: the \
                             champion must rank above every other model"
                        ),
                    );
                }
            }
        }
        // Ranks r or better, in file order, the champion's first.
        let mut bounded: Vec<(&str, usize)> = champion.map(|c| (c, 1)).into_iter().collect();
        for (m, r) in max_rank {
            let key = format!("{path}.max_rank.{m}");
            if let Some(c) = champion.filter(|c| *r == 1 && c != m) {
                let span = rank_span(m).unwrap_or_default();
                self.err(
                    span,
                    &key,
                    format!("1 can never pass beside champion = `{c}`: only the champion ranks 1"),
                );
                continue;
            }
            if champion == Some(m.as_str()) {
                continue;
            }
            // Ranks q ≥ r hold this model too: each must hold no more
            // than q models, whichever entry came first.
            let crowded = std::iter::once(*r)
                .chain(bounded.iter().map(|(_, q)| *q).filter(|q| q >= r))
                .filter_map(|q| {
                    let within: Vec<&str> = bounded
                        .iter()
                        .filter(|(_, b)| *b <= q)
                        .map(|(n, _)| *n)
                        .collect();
                    (within.len() >= q).then_some((q, within))
                })
                .min_by_key(|(q, _)| *q);
            if let Some((q, within)) = crowded {
                let span = rank_span(m).unwrap_or_default();
                let others: Vec<String> = within.iter().map(|n| format!("`{n}`")).collect();
                self.err(
                    span,
                    &key,
                    format!(
                        "{r} can never pass: {} must rank {q} or better too, and only {q} \
                         model(s) can (a tie passes no rank threshold)",
                        others.join(", ")
                    ),
                );
                continue;
            }
            bounded.push((m, *r));
        }
        // A cycle: the entry that closes it, and the chain back.
        let mut edges: Vec<(&str, &str, usize)> = Vec::new();
        for (a, b, i) in above {
            if let Some(chain) = chain(&edges, b, a) {
                let span = above_span(*i).unwrap_or_default();
                let links: Vec<String> = chain
                    .iter()
                    .map(|&k| {
                        let (x, y, j) = edges[k];
                        format!("`{x}` above `{y}` (above[{j}])")
                    })
                    .collect();
                self.err(
                    span,
                    &format!("{path}.above[{i}]"),
                    format!(
                        "[`{a}`, `{b}`] can never pass: {} put `{b}` above `{a}`, a cycle \
                         that no ranking passes",
                        links.join(", ")
                    ),
                );
                continue;
            }
            edges.push((a, b, *i));
        }
        // A bound above the ancestors: the models that `above` (through
        // any chain) and the champion put above a model all rank before it.
        for &(m, r) in bounded.iter().filter(|(m, _)| champion != Some(*m)) {
            let mut over: Vec<String> = champion
                .map(|c| format!("`{c}` (champion)"))
                .into_iter()
                .collect();
            let mut seen: Vec<&str> = champion.into_iter().chain([m]).collect();
            for (a, _, _) in &edges {
                if seen.contains(a) {
                    continue;
                }
                if let Some(&first) = chain(&edges, a, m).as_ref().and_then(|l| l.first()) {
                    over.push(format!("`{a}` (above[{}])", edges[first].2));
                    seen.push(a);
                }
            }
            if over.len() >= r {
                let span = rank_span(m).unwrap_or_default();
                self.err(
                    span,
                    &format!("{path}.max_rank.{m}"),
                    format!(
                        "{r} can never pass: {} must rank above `{m}`, so it ranks {} or lower",
                        over.join(", "),
                        over.len() + 1
                    ),
                );
            }
        }
    }

    /// `above = [[a, b], …]`: two different models each, with each one's
    /// index in the array.
    fn above(
        &mut self,
        value: &Value<'_>,
        key: &str,
        models: &[String],
    ) -> Vec<(String, String, usize)> {
        let DeValue::Array(items) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.err(
                value.span(),
                key,
                format!("expected an array of [model, model] pairs, found {found}"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{key}[{i}]");
            match item.get_ref() {
                DeValue::Array(two) if two.len() == 2 => {
                    let a = self.member(&two[0], &format!("{path}[0]"), models);
                    let b = self.member(&two[1], &format!("{path}[1]"), models);
                    if let (Some(a), Some(b)) = (a, b) {
                        if a == b {
                            self.err(
                                item.span(),
                                &path,
                                format!("`{a}` cannot rank above itself"),
                            );
                        } else {
                            out.push((a, b, i));
                        }
                    }
                }
                _ => self.err(
                    item.span(),
                    &path,
                    "expected [model, model]: the first must rank above the second",
                ),
            }
        }
        out
    }

    /// `min_win_rate = [{ model, against, min }, …]`.
    fn min_win_rate(
        &mut self,
        value: &Value<'_>,
        key: &str,
        models: &[String],
    ) -> Vec<WinRateDecl> {
        let DeValue::Array(items) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.err(
                value.span(),
                key,
                format!("expected an array of {{ model, against, min }} tables, found {found}"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{key}[{i}]");
            let Some(t) = self.table(item, &path) else {
                continue;
            };
            let (mut model, mut against, mut min) = (None, None, None);
            for (k, v) in t {
                let p = format!("{path}.{}", k.get_ref());
                match k.get_ref().as_ref() {
                    "model" => model = self.member(v, &p, models),
                    "against" => against = self.member(v, &p, models),
                    "min" => {
                        min =
                            self.float(v, &p, |m| (0.0..=1.0).contains(&m), "a fraction in [0, 1]");
                        if min == Some(0.0) {
                            self.err(
                                v.span(),
                                &p,
                                "0 can never fail: a win rate is never below 0; expected a \
                                 fraction in (0, 1]",
                            );
                        }
                    }
                    _ => self.err(
                        k.span(),
                        &p,
                        "unknown key, expected `model`, `against`, `min`",
                    ),
                }
            }
            match (model, against, min) {
                (Some(m), Some(a), _) if m == a => self.err(
                    item.span(),
                    &path,
                    format!("`{m}` cannot play against itself"),
                ),
                (Some(model), Some(against), Some(min)) => out.push(WinRateDecl {
                    model,
                    against,
                    min,
                }),
                _ if t.get("model").is_none()
                    || t.get("against").is_none()
                    || t.get("min").is_none() =>
                {
                    self.err(item.span(), &path, "expected `model`, `against` and `min`")
                }
                _ => {}
            }
        }
        out
    }
}

/// The edges (indices into `edges`, each `(above, below, _)`) of a chain
/// from `from` down to `to`, if one exists.
fn chain(edges: &[(&str, &str, usize)], from: &str, to: &str) -> Option<Vec<usize>> {
    // Breadth first, remembering the edge that reached each model.
    let mut reached: Vec<(&str, Option<usize>)> = vec![(from, None)];
    let mut next = 0;
    while next < reached.len() {
        let (m, _) = reached[next];
        if m == to {
            let mut path = Vec::new();
            let mut at = next;
            while let Some(k) = reached[at].1 {
                path.push(k);
                at = reached.iter().position(|(n, _)| *n == edges[k].0)?;
            }
            path.reverse();
            return Some(path);
        }
        for (k, (a, b, _)) in edges.iter().enumerate() {
            if *a == m && !reached.iter().any(|(n, _)| n == b) {
                reached.push((b, Some(k)));
            }
        }
        next += 1;
    }
    None
}

fn quote(models: &[String]) -> String {
    let quoted: Vec<String> = models.iter().map(|m| format!("`{m}`")).collect();
    quoted.join(", ")
}
