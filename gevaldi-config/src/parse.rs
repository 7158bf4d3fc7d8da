//! The walk over a parsed `gevaldi.toml` that validates every key, collecting
//! every mistake with its position rather than stopping at the first.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{ConfigError, ConfigErrors};
use crate::schema::{
    Config, EnsembleDecl, FreeKey, HierarchyDecl, ModelDecl, ModelTable, PairDecl, PreprocessDecl,
    SearchSettings, Statistic, TableValue, Thresholds,
};
mod tournament;

use crate::vocab::{
    Architecture, Channels, Dataset, DivergenceKind, ModelKind, OptimizerKind, Rule, StatisticKind,
    TrialKind, LR, NON_NEGATIVE,
};

const SEARCH_KEYS: [&str; 8] = [
    "steps",
    "lr",
    "optimizer",
    "lambda",
    "batch",
    "seed",
    "divergence",
    "early_stop",
];
const ENSEMBLE_KEYS: [&str; 12] = [
    "name",
    "members",
    "generator",
    "samples",
    "test_data",
    "min_samples",
    "min_mds_accuracy",
    "max_accuracy_drop",
    "min_accuracy_drop",
    "max_regions",
    "ignore",
    "divergence",
];
const PAIR_KEYS: [&str; 11] = [
    "name",
    "models",
    "generator",
    "ignore",
    "max_divergence",
    "statistic",
    "quantile",
    "min_lift",
    "max_set_distance",
    "top_n",
    "search keys",
];

/// Reads and validates a `gevaldi.toml`.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors {
            file: path.to_path_buf(),
            errors: vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("failed to read the file: {e}"),
            }],
        }),
    }
}

/// Validates the text of a `gevaldi.toml` read from `path` (weights paths
/// are resolved against `path`'s directory, and must exist).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_in(text, path, &dir)
}

/// Like [`parse`], but errors name the file as `display` and weights paths
/// are resolved against `dir` (the macro names files as the user wrote
/// them).
pub fn parse_in(text: &str, display: &Path, dir: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        text,
        file: display.to_path_buf(),
        dir: dir.to_path_buf(),
        errors: Vec::new(),
        names: Vec::new(),
        refused_preprocess: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    // Only the first syntax error: the parser's recovery after it reports
    // mistakes that are not there (an unclosed `[[pair]` is followed by a
    // "duplicate key" at the next table).
    if let Some(e) = syntax.first() {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim().to_string();
        if message == "duplicate key" {
            message = duplicate_key(text, span.clone());
        }
        cx.err(span, "", format!("invalid TOML: {message}"));
        return Err(cx.finish());
    }
    let config = cx.config(root.get_ref());
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        Err(cx.finish())
    }
}

struct Cx<'t> {
    text: &'t str,
    file: PathBuf,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    /// Every trial name read so far, (kind, name, line), whether or not
    /// its entry had mistakes: a duplicate of an entry with a mistake is
    /// named in the same run, not only once that one is mended.
    names: Vec<(TrialKind, String, usize)>,
    /// The classifiers whose `preprocess` was written but refused (its own
    /// errors name what is wrong): a trial does not also say they have
    /// none.
    refused_preprocess: Vec<String>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// The parser's "duplicate key", with the key (the text at `span`) and,
/// for a table header written twice, the line of the first.
fn duplicate_key(text: &str, span: std::ops::Range<usize>) -> String {
    let Some(key) = text.get(span.clone()).filter(|k| !k.is_empty()) else {
        return "duplicate key".to_string();
    };
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let before: Vec<&str> = text[..line_start].lines().collect();
    let first = if line.starts_with('[') {
        before.iter().position(|l| l.trim() == line)
    } else {
        // A key given twice in one table: the first is above, after the
        // table's header.
        let unquoted = key.trim_matches(|c| c == '"' || c == '\'');
        before
            .iter()
            .rposition(|l| {
                let l = l.trim();
                l.starts_with('[')
                    || l.split_once('=').is_some_and(|(k, _)| {
                        k.trim().trim_matches(|c| c == '"' || c == '\'') == unquoted
                    })
            })
            .filter(|&i| !before[i].trim().starts_with('['))
    };
    match first {
        Some(i) if line.starts_with('[') => {
            format!("duplicate key `{key}`: `{line}` is also at line {}", i + 1)
        }
        Some(i) => format!(
            "duplicate key `{key}`: first given at line {} (`{}`)",
            i + 1,
            before[i].trim()
        ),
        None => format!("duplicate key `{key}`"),
    }
}

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors {
            file: self.file,
            errors: self.errors,
        }
    }

    fn config(&mut self, root: &DeTable<'_>) -> Config {
        let mut config = Config {
            path: self.file.clone(),
            search: SearchSettings::default(),
            hierarchy: None,
            generators: Vec::new(),
            classifiers: Vec::new(),
            pairs: Vec::new(),
            ensembles: Vec::new(),
            tournaments: Vec::new(),
        };
        let mut pair_values = Vec::new();
        let mut ensemble_values = Vec::new();
        let mut tournament_values = Vec::new();
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "search" => {
                    if let Some(table) = self.table(value, "search") {
                        config.search = self.search(table, "search", &[]);
                    }
                }
                "hierarchy" => config.hierarchy = self.hierarchy(value),
                "generator" => config.generators = self.models(value, ModelKind::Generator),
                "classifier" => config.classifiers = self.models(value, ModelKind::Classifier),
                "ensemble" => match value.get_ref() {
                    DeValue::Array(items) => ensemble_values = items.iter().collect(),
                    other => self.err(
                        value.span(),
                        "ensemble",
                        format!(
                            "expected an array of tables ([[ensemble]]), found {}",
                            other.type_str()
                        ),
                    ),
                },
                "tournament" => match value.get_ref() {
                    DeValue::Array(items) => tournament_values = items.iter().collect(),
                    other => self.err(
                        value.span(),
                        "tournament",
                        format!(
                            "expected an array of tables ([[tournament]]), found {}",
                            other.type_str()
                        ),
                    ),
                },
                "pair" => match value.get_ref() {
                    DeValue::Array(items) => pair_values = items.iter().collect(),
                    other => self.err(
                        value.span(),
                        "pair",
                        format!(
                            "expected an array of tables ([[pair]]), found {}",
                            other.type_str()
                        ),
                    ),
                },
                other => self.err(
                    key.span(),
                    other,
                    "unknown key, expected one of `search`, `hierarchy`, `generator`, `classifier`, \
                     `pair`, `ensemble`, `tournament`",
                ),
            }
        }
        for (i, value) in pair_values.into_iter().enumerate() {
            if let Some(pair) = self.pair(value, i, &config) {
                config.pairs.push(pair);
            }
        }
        for (i, value) in ensemble_values.into_iter().enumerate() {
            if let Some(e) = self.ensemble(value, i, &config) {
                config.ensembles.push(e);
            }
        }
        for (i, value) in tournament_values.into_iter().enumerate() {
            if let Some(t) = self.tournament(value, i, &config) {
                config.tournaments.push(t);
            }
        }
        if config.pairs.is_empty()
            && config.ensembles.is_empty()
            && config.tournaments.is_empty()
            && self.errors.is_empty()
        {
            self.err(
                0..0,
                "pair",
                "no [[pair]], [[ensemble]] or [[tournament]] entries: declare at least one test",
            );
        }
        config
    }

    fn table<'a, 'i>(&mut self, value: &'a Value<'i>, key: &str) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    value.span(),
                    key,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn search(&mut self, table: &DeTable<'_>, path: &str, extra: &[&str]) -> SearchSettings {
        let mut s = SearchSettings::default();
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            let key_path = format!("{path}.{name}");
            let k = key_path.as_str();
            match name {
                "steps" => s.steps = self.uint(value, k, 1),
                "batch" => s.batch = self.uint(value, k, 1),
                "seed" => s.seed = self.uint(value, k, 0),
                "lr" => s.lr = self.rule(value, k, LR),
                "lambda" => s.lambda = self.rule(value, k, NON_NEGATIVE),
                "optimizer" => {
                    s.optimizer = self.choice(value, k, OptimizerKind::ALL, |o| o.name())
                }
                "divergence" => {
                    s.divergence = self.choice(value, k, DivergenceKind::ALL, |d| d.name())
                }
                "early_stop" => s.early_stop = self.early_stop(value, k),
                _ if extra.contains(&name) => {}
                _ => {
                    // The entry's own keys (without the placeholder), then
                    // the search keys.
                    let mut expected: Vec<&str> = extra
                        .iter()
                        .copied()
                        .filter(|k| *k != "search keys")
                        .collect();
                    expected.extend(SEARCH_KEYS.iter().filter(|k| !extra.contains(k)));
                    self.err(
                        key.span(),
                        k,
                        format!("unknown key, expected one of {}", quote_list(&expected)),
                    );
                }
            }
        }
        s
    }

    fn early_stop(&mut self, value: &Value<'_>, key: &str) -> Option<(u64, f64)> {
        let table = self.table(value, key)?;
        // Each as found and, once checked, its value: a key that is there
        // but out of range has its own error, not also "expected both".
        let (mut window, mut tolerance) = ((false, None), (false, None));
        for (k, v) in table {
            let path = format!("{key}.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "window" => window = (true, self.uint(v, &path, 1)),
                "tolerance" => tolerance = (true, self.rule(v, &path, NON_NEGATIVE)),
                _ => self.err(
                    k.span(),
                    &path,
                    "unknown key, expected `window` or `tolerance`",
                ),
            }
        }
        match (window, tolerance) {
            ((_, Some(w)), (_, Some(t))) => Some((w, t)),
            ((true, _), (true, _)) => None,
            _ => {
                self.err(
                    value.span(),
                    key,
                    "expected both `window` (steps) and `tolerance`",
                );
                None
            }
        }
    }

    /// A file path relative to the config, which must exist.
    fn file(&mut self, value: &Value<'_>, key: &str, what: &str) -> Option<PathBuf> {
        let written = self.string(value, key)?;
        let resolved = self.dir.join(&written);
        if resolved.is_file() {
            Some(resolved)
        } else if resolved.is_dir() {
            self.err(
                value.span(),
                key,
                format!(
                    "{what} `{written}` is a directory (`{}`), expected a TSV file",
                    resolved.display()
                ),
            );
            None
        } else {
            self.err(
                value.span(),
                key,
                format!(
                    "{what} `{written}` does not exist (looked for `{}`; paths are relative to \
                     this file)",
                    resolved.display()
                ),
            );
            None
        }
    }

    fn hierarchy(&mut self, value: &Value<'_>) -> Option<HierarchyDecl> {
        let table = self.table(value, "hierarchy")?;
        let (mut classes, mut edges, mut names) = (None, None, None);
        let before = self.errors.len();
        for (k, v) in table {
            let key = format!("hierarchy.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "classes" => classes = self.file(v, &key, "class list"),
                "edges" => edges = self.file(v, &key, "edge list"),
                "names" => names = self.file(v, &key, "names list"),
                _ => self.err(
                    k.span(),
                    &key,
                    "unknown key, expected `classes`, `edges` and optionally `names`",
                ),
            }
        }
        if self.errors.len() > before {
            return None;
        }
        match (classes, edges) {
            (Some(classes), Some(edges)) => Some(HierarchyDecl {
                classes,
                edges,
                names,
            }),
            _ => {
                self.err(
                    value.span(),
                    "hierarchy",
                    "expected `classes` (index, id, name) and `edges` (child, parent) TSV files",
                );
                None
            }
        }
    }

    fn models(&mut self, value: &Value<'_>, model_kind: ModelKind) -> Vec<ModelDecl> {
        let kind = model_kind.name();
        let archs: Vec<Architecture> = Architecture::ALL
            .iter()
            .copied()
            .filter(|a| a.kind() == model_kind)
            .collect();
        let Some(table) = self.table(value, kind) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, decl) in table {
            let name_str = name.get_ref().to_string();
            let path = format!("{kind}.{name_str}");
            let Some(fields) = self.table(decl, &path) else {
                continue;
            };
            let (mut arch, mut weights, mut preprocess) = (None, None, None);
            let (mut truncation, mut optional) = (None, false);
            let mut transform_input = None;
            // A table without `arch` is registered from Rust: its own keys
            // are the registration's business.
            let has_arch = fields.get("arch").is_some();
            let mut free = Vec::new();
            for (k, v) in fields {
                let key_path = format!("{path}.{}", k.get_ref());
                match k.get_ref().as_ref() {
                    "arch" => {
                        arch = self
                            .choice(v, &key_path, &archs, |a| a.name())
                            .map(|a| (a, v.span()))
                    }
                    "weights" => weights = self.string(v, &key_path).map(|w| (w, v.span())),
                    "preprocess" if model_kind == ModelKind::Classifier => {
                        preprocess = self.preprocess(v, &key_path);
                        if preprocess.is_none() {
                            self.refused_preprocess.push(name_str.clone());
                        }
                    }
                    // Not a key of its own even without `arch`: it reads as
                    // gevaldi's, and would be silently not applied.
                    "preprocess" => self.err(
                        k.span(),
                        &key_path,
                        "`preprocess` is a classifier's key (gevaldi applies it to the \
                         generator's samples before that classifier): give it to the \
                         [classifier.*] tables that need it",
                    ),
                    "truncation" if model_kind == ModelKind::Generator && has_arch => {
                        truncation = self
                            .float(v, &key_path, |t| t > 0.0 && t <= 1.0, "a number in (0, 1]")
                            .map(|t| (t, k.span()));
                    }
                    "transform_input" if model_kind == ModelKind::Classifier && has_arch => {
                        transform_input = self.boolean(v, &key_path).map(|t| (t, k.span()));
                    }
                    "optional" => optional = self.boolean(v, &key_path).unwrap_or(false),
                    other if !has_arch => {
                        let (line, column) = self.position(k.span().start);
                        free.push(FreeKey {
                            name: other.to_string(),
                            value: table_value(v.get_ref()),
                            line,
                            column,
                        });
                    }
                    _ => self.err(
                        k.span(),
                        &key_path,
                        if model_kind == ModelKind::Classifier {
                            "unknown key in a table with `arch`: expected `arch`, `weights`, and \
                             optionally `preprocess`, `transform_input` (googlenet), `optional` \
                             (keys of your own go in a table without `arch`, registered from \
                             Rust)"
                        } else {
                            "unknown key in a table with `arch`: expected `arch`, `weights`, and \
                             optionally `truncation`, `optional` (keys of your own go in a table \
                             without `arch`, registered from Rust)"
                        },
                    ),
                }
            }
            free.sort_by_key(|k| (k.line, k.column));
            // `truncation`, on an architecture that takes one (the keys
            // come in any order, so after `arch` is known).
            if let (Some((_, span)), Some((arch, _))) = (&truncation, &arch) {
                if !arch.takes_truncation() {
                    let takers: Vec<String> = Architecture::ALL
                        .iter()
                        .filter(|a| a.takes_truncation())
                        .map(|a| format!("`{a}`"))
                        .collect();
                    self.err(
                        span.clone(),
                        &format!("{path}.truncation"),
                        format!(
                            "`{arch}` takes no truncation (only {} do)",
                            takers.join(", ")
                        ),
                    );
                }
            }
            let truncation = truncation.map(|(t, _)| t);
            if let (Some((_, span)), Some((arch, _))) = (&transform_input, &arch) {
                if !arch.takes_transform_input() {
                    self.err(
                        span.clone(),
                        &format!("{path}.transform_input"),
                        format!("`{arch}` takes no transform_input (only `googlenet` does)"),
                    );
                }
            }
            let transform_input = transform_input.map(|(t, _)| t);
            // `weights`, resolved; it must exist unless the model is optional.
            let resolved = weights.map(|(weights, span)| {
                let resolved = self.dir.join(&weights);
                if resolved.is_dir() {
                    // Even when `optional`: a directory is not an absent
                    // file but a mistake.
                    self.err(
                        span,
                        &format!("{path}.weights"),
                        format!(
                            "weights `{weights}` is a directory (`{}`), expected a safetensors \
                             file",
                            resolved.display()
                        ),
                    );
                } else if is_lfs_pointer(&resolved) {
                    // Even when `optional`: the file is there, but not
                    // fetched (a checkout without `git lfs`).
                    self.err(
                        span,
                        &format!("{path}.weights"),
                        format!(
                            "weights `{weights}` is a Git LFS pointer, not the weights \
                             (`{}` starts with `version https://git-lfs`): run `git lfs pull` \
                             to fetch them",
                            resolved.display()
                        ),
                    );
                } else if !resolved.is_file() && !optional {
                    self.err(
                        span,
                        &format!("{path}.weights"),
                        format!(
                            "weights file `{weights}` does not exist (looked for `{}`; paths \
                             are relative to this file; `optional = true` skips the trials \
                             that use it instead)",
                            resolved.display()
                        ),
                    );
                }
                resolved
            });
            let builtin = match (arch, &resolved) {
                (Some((arch, _)), Some(resolved)) => Some((arch, resolved.clone())),
                (Some((_, span)), None) => {
                    self.err(
                        span,
                        &format!("{path}.arch"),
                        "a built-in `arch` needs `weights`, a safetensors file",
                    );
                    None
                }
                (None, _) => None,
            };
            let line = self.line(&decl.span());
            out.push(ModelDecl {
                table: ModelTable {
                    name: name_str.clone(),
                    weights: resolved,
                    dir: self.dir.clone(),
                    kind: model_kind,
                    file: self.file.clone(),
                    line,
                    keys: free,
                },
                name: name_str,
                builtin,
                preprocess,
                truncation,
                transform_input,
                optional,
                line,
            });
        }
        out
    }

    fn numbers(
        &mut self,
        value: &Value<'_>,
        key: &str,
        ok: impl Fn(f64) -> bool,
        expected: &str,
    ) -> Option<Vec<f64>> {
        match value.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(self.float(item, &format!("{key}[{i}]"), &ok, expected)?);
                }
                Some(out)
            }
            other => {
                self.err(
                    value.span(),
                    key,
                    format!("expected an array of numbers, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn preprocess(&mut self, value: &Value<'_>, key: &str) -> Option<PreprocessDecl> {
        let table = self.table(value, key)?;
        let before = self.errors.len();
        let mut p = PreprocessDecl::default();
        for (k, v) in table {
            let path = format!("{key}.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "input_range" => {
                    if let Some(r) = self.numbers(v, &path, |_| true, "a finite number") {
                        if r.len() == 2 && r[0] < r[1] {
                            p.input_range = Some((r[0], r[1]));
                        } else {
                            self.err(
                                v.span(),
                                &path,
                                "expected [lo, hi] with lo < hi, e.g. [-1, 1]",
                            );
                        }
                    }
                }
                "resize" => match v.get_ref() {
                    DeValue::Integer(_) => {
                        p.resize = self.uint(v, &path, 1).map(|s| (s as usize, s as usize))
                    }
                    _ => {
                        if let Some(r) = self.numbers(
                            v,
                            &path,
                            |x| x >= 1.0 && x.fract() == 0.0,
                            "an integer >= 1",
                        ) {
                            if r.len() == 2 {
                                p.resize = Some((r[0] as usize, r[1] as usize));
                            } else {
                                self.err(v.span(), &path, "expected a size or [height, width]");
                            }
                        }
                    }
                },
                "channels" => p.channels = self.choice(v, &path, Channels::ALL, |c| c.name()),
                "mean" => p.mean = self.numbers(v, &path, |_| true, "a finite number"),
                "std" => p.std = self.numbers(v, &path, |s| s > 0.0, "a finite number > 0"),
                _ => self.err(
                    k.span(),
                    &path,
                    "unknown key, expected `input_range`, `resize`, `channels`, `mean`, `std`",
                ),
            }
        }
        // Whether each was written: one that was written but refused (its
        // own error above) still goes with the other.
        let written = (table.get("mean").is_some(), table.get("std").is_some());
        match (&p.mean, &p.std) {
            (Some(m), Some(s)) if m.len() != s.len() || !(m.len() == 1 || m.len() == 3) => self
                .err(
                    value.span(),
                    key,
                    "`mean` and `std` need the same length, 1 or 3 (one per channel)",
                ),
            _ if written.0 != written.1 => {
                self.err(value.span(), key, "`mean` and `std` go together")
            }
            _ => {}
        }
        (self.errors.len() == before).then_some(p)
    }

    fn ensemble(
        &mut self,
        value: &Value<'_>,
        index: usize,
        config: &Config,
    ) -> Option<EnsembleDecl> {
        let path = format!("ensemble[{index}]");
        let table = self.table(value, &path)?;
        let before = self.errors.len();
        let search = self.search(table, &path, &ENSEMBLE_KEYS);
        if let Some(v) = table.get("divergence") {
            self.err(
                v.span(),
                &format!("{path}.divergence"),
                "an ensemble is always searched with `js`",
            );
        }
        let get = |k: &str| table.get(k);
        let entry = Entry {
            value,
            table,
            path: &path,
        };
        let name = self.entry_name(&entry, TrialKind::Ensemble);
        let members = self.entry_classifiers(&entry, "members", config, "base learners");
        let generator = self.entry_generator(&entry, config, true);
        self.entry_inputs(&entry, "members", generator.as_deref(), config);
        let test_data = match get("test_data") {
            Some(v) => {
                let written = self.string(v, &format!("{path}.test_data"));
                written.and_then(|w| {
                    let dir = self.dir.join(&w);
                    if dir.is_dir() {
                        Some(dir)
                    } else {
                        self.err(
                            v.span(),
                            &format!("{path}.test_data"),
                            format!(
                                "directory `{w}` does not exist (looked for `{}`)",
                                dir.display()
                            ),
                        );
                        None
                    }
                })
            }
            None => {
                self.err(
                    value.span(),
                    &path,
                    "missing `test_data` (a directory of IDX test images and labels)",
                );
                None
            }
        };
        let samples = get("samples")
            .and_then(|v| self.uint(v, &format!("{path}.samples"), 1))
            .unwrap_or(2000) as usize;
        let min_samples = get("min_samples")
            .and_then(|v| self.uint(v, &format!("{path}.min_samples"), 1))
            .unwrap_or(10) as usize;
        let fraction = |cx: &mut Self, k: &str| {
            get(k).and_then(|v| {
                cx.float(
                    v,
                    &format!("{path}.{k}"),
                    |f| (0.0..=1.0).contains(&f),
                    "a fraction in [0, 1]",
                )
            })
        };
        let min_mds_accuracy = fraction(self, "min_mds_accuracy");
        let max_accuracy_drop = fraction(self, "max_accuracy_drop");
        let min_accuracy_drop = fraction(self, "min_accuracy_drop");
        // Bounds an accuracy (in [0, 1]) or a drop (at most 1) never passes.
        for (key, value, never, why) in [
            (
                "min_mds_accuracy",
                min_mds_accuracy,
                0.0,
                "an accuracy is never below 0",
            ),
            (
                "max_accuracy_drop",
                max_accuracy_drop,
                1.0,
                "a drop in accuracy is never above 1",
            ),
        ] {
            if let (Some(v), Some(at)) = (value, get(key)) {
                if v == never {
                    self.err(
                        at.span(),
                        &format!("{path}.{key}"),
                        format!("{v} can never fail: {why}; expected a fraction in (0, 1)"),
                    );
                }
            }
        }
        if let (Some(min), Some(max)) = (min_accuracy_drop, max_accuracy_drop) {
            if min > max {
                let span = get("min_accuracy_drop")
                    .map(|v| v.span())
                    .unwrap_or_default();
                self.err(
                    span,
                    &format!("{path}.min_accuracy_drop"),
                    format!(
                        "{min} can never pass beside max_accuracy_drop = {max}: expected at \
                         most max_accuracy_drop"
                    ),
                );
            }
        }
        let max_regions = get("max_regions")
            .and_then(|v| self.uint(v, &format!("{path}.max_regions"), 0))
            .map(|v| v as usize);
        // Region counts DBSCAN can never reach: no region at all, or never
        // more than `max_regions`.
        let min_samples_at = get("min_samples").filter(|_| min_samples > samples);
        if let Some(v) = min_samples_at {
            self.err(
                v.span(),
                &format!("{path}.min_samples"),
                format!(
                    "{min_samples} can never form a region: a region's core point needs \
                     min_samples MDS samples within eps, and samples = {samples}; expected at \
                     most {samples}"
                ),
            );
        }
        if let (Some(max), Some(v), None) = (max_regions, get("max_regions"), min_samples_at) {
            let most = crate::most_dbscan_clusters(samples, min_samples);
            let message = if most == 0 {
                Some(format!(
                    "{max} can never fail: samples = {samples} is below min_samples = \
                     {min_samples} (the default unless set), so DBSCAN forms no region; expected \
                     samples >= min_samples"
                ))
            } else if max >= most {
                Some(format!(
                    "{max} can never fail: DBSCAN finds at most {most} regions in samples = \
                     {samples} with min_samples = {min_samples}; expected fewer than {most}"
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.err(v.span(), &format!("{path}.max_regions"), message);
            }
        }
        let ignore = self.entry_ignore(&entry);
        if self.errors.len() > before {
            return None;
        }
        Some(EnsembleDecl {
            name: name?,
            members,
            generator: generator?,
            samples,
            test_data: test_data?,
            min_samples,
            search,
            min_mds_accuracy,
            max_accuracy_drop,
            min_accuracy_drop,
            max_regions,
            ignore,
            line: self.line(&value.span()),
        })
    }

    fn pair(&mut self, value: &Value<'_>, index: usize, config: &Config) -> Option<PairDecl> {
        let path = format!("pair[{index}]");
        let table = self.table(value, &path)?;
        let search = self.search(table, &path, &PAIR_KEYS);
        let errors_before = self.errors.len();
        let get = |k: &str| table.get(k);
        let entry = Entry {
            value,
            table,
            path: &path,
        };
        let name = self.entry_name(&entry, TrialKind::Pair);
        let models = self.entry_classifiers(&entry, "models", config, "classifiers to compare");
        let generator = self.entry_generator(&entry, config, false);
        self.entry_inputs(&entry, "models", generator.as_deref(), config);
        // The library's default divergence.
        let divergence = search
            .divergence
            .or(config.search.divergence)
            .unwrap_or(DivergenceKind::Kl);
        // Fewer than 2 models is `models`' own error.
        if models.len() >= 2 && !divergence.arity().accepts(models.len()) {
            let span = get("models").map(|v| v.span()).unwrap_or(value.span());
            self.err(
                span,
                &format!("{path}.models"),
                format!(
                    "divergence `{divergence}` compares {} models; use `js` for {}",
                    divergence.arity().describe(),
                    models.len()
                ),
            );
        }
        let threshold = |cx: &mut Self, k: &str| {
            get(k).and_then(|v| cx.rule(v, &format!("{path}.{k}"), NON_NEGATIVE))
        };
        let max_divergence = threshold(self, "max_divergence");
        // A threshold the divergence cannot reach passes every search.
        if let (Some(max), Some(v)) = (max_divergence, get("max_divergence")) {
            let (ceiling, why) = divergence.ceiling(models.len());
            if max >= ceiling {
                self.err(
                    v.span(),
                    &format!("{path}.max_divergence"),
                    format!(
                        "{max} can never fail: `{divergence}` of {} models is at most {ceiling:.4} \
                         ({why}); expected a number below it",
                        models.len().max(2)
                    ),
                );
            }
        }
        // Any finite number reads; one at or below 0 is refused below with
        // why (the lift is a ratio of non-negative means: never below 0).
        let min_lift = get("min_lift").and_then(|v| {
            self.float(
                v,
                &format!("{path}.min_lift"),
                f64::is_finite,
                "a finite number > 0",
            )
        });
        if let (Some(min), Some(v)) = (min_lift, get("min_lift")) {
            if min <= 0.0 {
                self.err(
                    v.span(),
                    &format!("{path}.min_lift"),
                    format!(
                        "{min} can never fail: the lift (the mean divergence after the search \
                         over the baseline's) is never below 0; expected a number above 0"
                    ),
                );
            }
        }
        let batch = search.batch.or(config.search.batch);
        if let (Some(_), Some(v), Some(batch)) = (min_lift, get("min_lift"), batch) {
            if (batch as usize) < crate::MIN_BASELINE_SAMPLES {
                self.err(
                    v.span(),
                    &format!("{path}.min_lift"),
                    format!(
                        "the lift cannot be checked with batch = {batch}: its baseline is the \
                         divergence over `batch` prior samples, and fewer than {} are too few to \
                         mean anything; expected batch >= {} or no min_lift",
                        crate::MIN_BASELINE_SAMPLES,
                        crate::MIN_BASELINE_SAMPLES
                    ),
                );
            }
        }
        let max_set_distance = threshold(self, "max_set_distance");
        let top_n = match get("top_n") {
            Some(v) => {
                let n = self.uint(v, &format!("{path}.top_n"), 1).unwrap_or(1) as usize;
                if let Some((model, arch, classes)) = fewest_classes(config, &models) {
                    if n > classes {
                        self.err(
                            v.span(),
                            &format!("{path}.top_n"),
                            format!(
                                "{n} is out of range: expected an integer from 1 to {classes}, \
                                 the number of classes of classifier `{model}` ({arch})"
                            ),
                        );
                    }
                }
                n
            }
            None => 1,
        };
        let quantile = get("quantile").and_then(|v| {
            self.float(
                v,
                &format!("{path}.quantile"),
                |q| (0.0..=1.0).contains(&q),
                "a number in [0, 1]",
            )
            .map(|q| (q, v.span()))
        });
        let statistic = match get("statistic") {
            None => None,
            Some(v) => self
                .choice(v, &format!("{path}.statistic"), StatisticKind::ALL, |s| {
                    s.name()
                })
                .map(|s| (s, v.span())),
        };
        let statistic = match statistic {
            Some((StatisticKind::Quantile, span)) => match quantile {
                Some((q, _)) => Statistic::Quantile(q),
                // Given but invalid: its own error says so.
                None if get("quantile").is_some() => Statistic::Max,
                None => {
                    self.err(
                        span,
                        &format!("{path}.statistic"),
                        "`statistic = \"quantile\"` needs `quantile`, a number in [0, 1]",
                    );
                    Statistic::Max
                }
            },
            other => {
                if let Some((_, span)) = quantile {
                    self.err(
                        span,
                        &format!("{path}.quantile"),
                        "`quantile` is only read with `statistic = \"quantile\"`",
                    );
                }
                match other {
                    Some((StatisticKind::Mean, _)) => Statistic::Mean,
                    _ => Statistic::Max,
                }
            }
        };
        let ignore = self.entry_ignore(&entry);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(PairDecl {
            name: name?,
            models,
            generator: generator?,
            search,
            thresholds: Thresholds {
                max_divergence,
                statistic,
                min_lift,
                max_set_distance,
                top_n,
            },
            ignore,
            line: self.line(&value.span()),
        })
    }

    fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let found = other.type_str();
                self.err(
                    value.span(),
                    key,
                    format!("expected true or false, found {found}"),
                );
                None
            }
        }
    }

    fn string(&mut self, value: &Value<'_>, key: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    value.span(),
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// One of `options` (a vocabulary's values), by its name.
    fn choice<T: Copy>(
        &mut self,
        value: &Value<'_>,
        key: &str,
        options: &[T],
        name: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        let s = self.string(value, key)?;
        if let Some(found) = options.iter().copied().find(|&o| name(o) == s) {
            Some(found)
        } else {
            let names: Vec<&str> = options.iter().map(|&o| name(o)).collect();
            self.err(
                value.span(),
                key,
                format!(
                    "unknown value {s:?}, expected one of {}",
                    quote_list(&names)
                ),
            );
            None
        }
    }

    /// A number that keeps `rule`.
    fn rule(&mut self, value: &Value<'_>, key: &str, rule: Rule) -> Option<f64> {
        self.float(value, key, |v| rule.holds(v), rule.expected)
    }

    fn uint(&mut self, value: &Value<'_>, key: &str, min: u64) -> Option<u64> {
        let expected = format!("an integer >= {min}");
        match value.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(v) if v >= min as i64 => Some(v as u64),
                    Ok(v) => {
                        self.err(
                            value.span(),
                            key,
                            format!("{v} is out of range: expected {expected}"),
                        );
                        None
                    }
                    Err(_) => {
                        // Beyond i64: TOML's integers are 64-bit signed.
                        self.err(
                            value.span(),
                            key,
                            format!(
                                "{} is out of range: expected an integer from {min} to {} \
                                 (TOML integers are 64-bit signed)",
                                self.text.get(value.span()).unwrap_or(i.as_str()).trim(),
                                i64::MAX
                            ),
                        );
                        None
                    }
                }
            }
            other => {
                self.err(
                    value.span(),
                    key,
                    format!("expected {expected}, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn float(
        &mut self,
        value: &Value<'_>,
        key: &str,
        ok: impl Fn(f64) -> bool,
        expected: &str,
    ) -> Option<f64> {
        let v = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                .ok()
                .map(|v| v as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                self.err(
                    value.span(),
                    key,
                    format!("expected {expected}, found {}", other.type_str()),
                );
                return None;
            }
        };
        match v {
            Some(v) if v.is_finite() && ok(v) => Some(v),
            Some(v) => {
                self.err(
                    value.span(),
                    key,
                    format!("{v} is out of range: expected {expected}"),
                );
                None
            }
            None => {
                self.err(value.span(), key, format!("expected {expected}"));
                None
            }
        }
    }
}

/// A `[[pair]]`, `[[ensemble]]` or `[[tournament]]` table being read.
struct Entry<'a, 'i> {
    value: &'a Value<'i>,
    table: &'a DeTable<'i>,
    path: &'a str,
}

impl Cx<'_> {
    /// `name`: required, a portable file name (see [`name_problem`]), not
    /// taken, even in another case: by another pair or ensemble for a pair
    /// or an ensemble (they share the snapshot directory), by another
    /// tournament for a tournament (its files are all `tournament-<name>`).
    fn entry_name(&mut self, e: &Entry, kind: TrialKind) -> Option<String> {
        let key = format!("{}.name", e.path);
        let Some(v) = e.table.get("name") else {
            self.err(e.value.span(), e.path, "missing `name`");
            return None;
        };
        let n = self.string(v, &key)?;
        let shares =
            |other: TrialKind| (kind == TrialKind::Tournament) == (other == TrialKind::Tournament);
        let taken = (self.names.iter())
            .find(|(k, other, _)| shares(*k) && other.eq_ignore_ascii_case(&n))
            .map(|(k, other, line)| (*k, other.clone(), *line));
        let line = self.line(&e.value.span());
        self.names.push((kind, n.clone(), line));
        if let Some(problem) = name_problem(&n) {
            self.err(v.span(), &key, problem);
        } else if let Some((other_kind, other, line)) = taken {
            let message = if other == n && other_kind == kind {
                format!("duplicate {kind} name `{n}` (first at line {line})")
            } else if other == n {
                format!(
                    "{other_kind} `{other}` (line {line}) has this name too: pairs and \
                     ensembles share the snapshot directory, so their names must differ"
                )
            } else {
                format!(
                    "`{n}` differs from {other_kind} `{other}` (line {line}) only in case: \
                     their files would collide on case-insensitive file systems (macOS, Windows)"
                )
            };
            self.err(v.span(), &key, message);
        }
        Some(n)
    }

    /// `models` / `members`: 2 or more declared classifiers, none twice.
    fn entry_classifiers(
        &mut self,
        e: &Entry,
        key: &str,
        config: &Config,
        what: &str,
    ) -> Vec<String> {
        let path = format!("{}.{key}", e.path);
        let mut names = Vec::new();
        let Some(v) = e.table.get(key) else {
            self.err(
                e.value.span(),
                e.path,
                format!("missing `{key}` (2 or more {what})"),
            );
            return names;
        };
        let DeValue::Array(items) = v.get_ref() else {
            let found = v.get_ref().type_str();
            self.err(
                v.span(),
                &path,
                format!("expected an array of classifier names, found {found}"),
            );
            return names;
        };
        for (i, item) in items.iter().enumerate() {
            let key = format!("{path}[{i}]");
            if let Some(m) = self.string(item, &key) {
                if config.classifier(&m).is_none() {
                    self.err(
                        item.span(),
                        &key,
                        unknown(ModelKind::Classifier, &m, &config.classifiers),
                    );
                } else if names.contains(&m) {
                    self.err(item.span(), &key, format!("`{m}` is listed twice"));
                }
                names.push(m);
            }
        }
        if items.len() < 2 {
            self.err(
                v.span(),
                &path,
                format!("expected 2 or more {what}, found {}", items.len()),
            );
        }
        names
    }

    /// `generator`: a declared generator.
    /// `generator`: a declared generator; with `conditional` (an ensemble,
    /// a tournament: the MDS samples' conditions are their labels) not a
    /// built-in one that takes no condition (a registered one is checked
    /// when the trial loads it).
    fn entry_generator(&mut self, e: &Entry, config: &Config, conditional: bool) -> Option<String> {
        let key = format!("{}.generator", e.path);
        let Some(v) = e.table.get("generator") else {
            self.err(e.value.span(), e.path, "missing `generator`");
            return None;
        };
        let g = self.string(v, &key)?;
        match config.generator(&g).map(|d| &d.builtin) {
            None => self.err(
                v.span(),
                &key,
                unknown(ModelKind::Generator, &g, &config.generators),
            ),
            Some(Some((arch, _))) if conditional && !arch.is_conditional() => self.err(
                v.span(),
                &key,
                format!(
                    "`{g}` ({}) takes no class condition: expected a class-conditional \
                     generator (the MDS samples' conditions are their labels), e.g. \
                     `mnist-cvae` or `biggan-deep-128`",
                    arch.name()
                ),
            ),
            Some(_) => {}
        }
        Some(g)
    }

    /// The classifiers of `key` against the trial's built-in generator: a
    /// built-in ImageNet classifier without `preprocess` would take the
    /// generator's images as they are (BigGAN's in [-1, 1] at 128 × 128,
    /// the MNIST decoders' grey digits), not the ImageNet-normalised
    /// images torchvision's weights were trained on, and every figure of
    /// the trial would be of the wrong inputs; `preprocess = {}` says they
    /// are meant as they are.
    fn entry_inputs(&mut self, e: &Entry, key: &str, generator: Option<&str>, config: &Config) {
        let Some(g) = generator else {
            return;
        };
        let Some((gen_arch, _)) = config.generator(g).and_then(|d| d.builtin.as_ref()) else {
            return;
        };
        let Some(DeValue::Array(items)) = e.table.get(key).map(|v| v.get_ref()) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let Some(m) = item.get_ref().as_str() else {
                continue;
            };
            let Some(decl) = config.classifier(m) else {
                continue;
            };
            let Some((arch, _)) = &decl.builtin else {
                continue;
            };
            if arch.dataset() != Dataset::ImageNet
                || decl.preprocess.is_some()
                || self.refused_preprocess.iter().any(|r| r == m)
            {
                continue;
            }
            let (makes, suggested) = match gen_arch.dataset() {
                Dataset::ImageNet => (
                    "colour images in [-1, 1]",
                    Dataset::ImageNet.preprocess_from(-1.0, 1.0, false),
                ),
                Dataset::Mnist => (
                    "grey 28 x 28 images in [0, 1]",
                    Dataset::ImageNet.preprocess_from(0.0, 1.0, true),
                ),
            };
            self.err(
                item.span(),
                &format!("{}.{key}[{i}]", e.path),
                format!(
                    "`{m}` ({arch}) has no `preprocess`, so it would take the images of `{g}` \
                     ({gen_arch}), {makes}, as they are, where its weights expect \
                     ImageNet-normalised colour images: give [classifier.{m}] a `preprocess`, \
                     e.g. preprocess = {suggested} (`preprocess = {{}}` feeds the images as \
                     they are)"
                ),
            );
        }
    }

    /// `ignore`: a boolean, false when absent.
    fn entry_ignore(&mut self, e: &Entry) -> bool {
        e.table
            .get("ignore")
            .and_then(|v| self.boolean(v, &format!("{}.ignore", e.path)))
            .unwrap_or(false)
    }
}

/// The first character of `name` that is not portable in a file name (ASCII
/// letters, digits, `_`, `-` and `.` are).
fn first_unportable(name: &str) -> Option<char> {
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
}

/// What is wrong with `name` as a pair's or ensemble's name, which becomes
/// file names (`<name>.snap`, `<name>.json`, `ensemble-<name>/`): it must
/// be 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes of the portable
/// file name characters (ASCII letters, digits, `_`, `-`, `.`), must not
/// start with `.` (a hidden file, and `.`, `..`) nor end with `.` (Windows
/// drops it), and must not be a Windows device name (`con`, `nul`, `com1`,
/// …), which no file there can take, whatever its extension.
fn name_problem(name: &str) -> Option<String> {
    let max = crate::MAX_NAME_LEN;
    if name.is_empty() {
        return Some("empty name: expected letters, digits, `_`, `-` or `.`".into());
    }
    if let Some(c) = first_unportable(name) {
        return Some(format!(
            "invalid name {name:?}: {c:?} is not portable in a file name; expected ASCII \
             letters, digits, `_`, `-` or `.`"
        ));
    }
    if name.len() > max {
        return Some(format!(
            "name of {} bytes is too long: at most {max}, so that the file names made from it \
             (with suffixes such as `.pending-snap`) stay within 255 bytes",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Some(format!(
            "invalid name {name:?}: a name must not start with `.` (its files, such as \
             `{name}.json`, would be hidden)"
        ));
    }
    if name.ends_with('.') {
        return Some(format!(
            "invalid name {name:?}: a name must not end with `.` (Windows drops it from file \
             names)"
        ));
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_lowercase();
    let device = ["con", "prn", "aux", "nul"].contains(&stem.as_str())
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    if device {
        return Some(format!(
            "invalid name {name:?}: `{stem}` is a Windows device name (CON, PRN, AUX, NUL, \
             COM1-9, LPT1-9), which no file can take"
        ));
    }
    None
}

/// The classifier of `models` with the fewest classes, its architecture
/// and its class count, when every one of `models` is a built-in
/// architecture (a model registered from Rust has a class count only once
/// it is built).
fn fewest_classes<'c>(
    config: &'c Config,
    models: &[String],
) -> Option<(&'c str, Architecture, usize)> {
    let mut fewest: Option<(&str, Architecture, usize)> = None;
    for m in models {
        let decl = config.classifier(m)?;
        let (arch, _) = decl.builtin.as_ref()?;
        let arch = *arch;
        let classes = arch.classes()?;
        if fewest.is_none_or(|(_, _, k)| classes < k) {
            fewest = Some((&decl.name, arch, classes));
        }
    }
    fewest
}

/// Whether `path` is a Git LFS pointer file (what a checkout without
/// `git lfs` holds in place of the file it tracks): it starts with
/// `version https://git-lfs`.
fn is_lfs_pointer(path: &Path) -> bool {
    use std::io::Read;
    const PREFIX: &[u8] = b"version https://git-lfs";
    let mut head = Vec::with_capacity(PREFIX.len());
    std::fs::File::open(path)
        .and_then(|f| f.take(PREFIX.len() as u64).read_to_end(&mut head))
        .is_ok_and(|_| head == PREFIX)
}

/// A free-form value as written (numbers as TOML reads them).
fn table_value(value: &DeValue<'_>) -> TableValue {
    match value {
        DeValue::String(s) => TableValue::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
            Ok(v) => TableValue::Integer(v),
            // Out of i64's range: kept as written.
            Err(_) => TableValue::String(i.as_str().to_string()),
        },
        DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
            Ok(v) => TableValue::Float(v),
            Err(_) => TableValue::String(f.as_str().to_string()),
        },
        DeValue::Boolean(b) => TableValue::Boolean(*b),
        DeValue::Datetime(d) => TableValue::Datetime(d.to_string()),
        DeValue::Array(items) => {
            TableValue::Array(items.iter().map(|v| table_value(v.get_ref())).collect())
        }
        DeValue::Table(t) => {
            let mut keys: Vec<_> = t.iter().collect();
            keys.sort_by_key(|(k, _)| k.span().start);
            TableValue::Table(
                keys.into_iter()
                    .map(|(k, v)| (k.get_ref().to_string(), table_value(v.get_ref())))
                    .collect(),
            )
        }
    }
}

fn quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    quoted.join(", ")
}

fn unknown(kind: ModelKind, name: &str, declared: &[ModelDecl]) -> String {
    let names: BTreeSet<&str> = declared.iter().map(|m| m.name.as_str()).collect();
    if names.is_empty() {
        format!("unknown {kind} `{name}`: no [{kind}.<name>] tables are declared")
    } else {
        let list: Vec<&str> = names.into_iter().collect();
        format!(
            "unknown {kind} `{name}`: declared {kind}s are {}",
            quote_list(&list)
        )
    }
}
