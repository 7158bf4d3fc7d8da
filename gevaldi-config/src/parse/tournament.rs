//! `[[tournament]]`: its keys, its models and its thresholds, validated
//! against the tournament's own models.

use toml::de::DeValue;

use super::{Cx, Entry, Value};
use crate::schema::{Config, TournamentDecl, WinRateDecl};
use crate::vocab::RankingKind;

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
        let name = self.entry_name(&entry, "tournament");
        let models = self.entry_classifiers(&entry, "models", config, "classifiers to rank");
        if models.len() == 2 {
            let v = get("models").expect("read above");
            self.err(
                v.span(),
                &format!("{path}.models"),
                "expected 3 or more classifiers to rank, found 2 (for two, use a [[pair]])",
            );
        }
        // A pair is named `<a>-vs-<b>` (its trial and record): with `-vs-`
        // in a name, two pairs could get one name.
        if let Some(DeValue::Array(items)) = get("models").map(|v| v.get_ref()) {
            for (i, item) in items.iter().enumerate() {
                if let Some(m) = item.get_ref().as_str().filter(|m| m.contains("-vs-")) {
                    self.err(
                        item.span(),
                        &format!("{path}.models[{i}]"),
                        format!(
                            "`{m}` contains `-vs-`, which a tournament's pair names put \
                             between two models (`<a>-vs-<b>`): rename the classifier"
                        ),
                    );
                }
            }
        }
        let generator = self.entry_generator(&entry, config, true);
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

    /// `above = [[a, b], …]`: two different models each.
    fn above(&mut self, value: &Value<'_>, key: &str, models: &[String]) -> Vec<(String, String)> {
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
                            out.push((a, b));
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

fn quote(models: &[String]) -> String {
    let quoted: Vec<String> = models.iter().map(|m| format!("`{m}`")).collect();
    quoted.join(", ")
}
