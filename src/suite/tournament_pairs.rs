//! A tournament's pairs as trials of their own, for nextest partitions:
//! `tournament::<name>::<a>-vs-<b>` runs one pair searched and writes its
//! record with a fingerprint of everything its result depends on; the
//! verdict trial `tournament::<name>` reads the records whose fingerprint
//! is current instead of running those pairs again.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use rand::SeedableRng;

use crate::artifact::weights::{files_of, FileDigest};
use crate::artifact::{self, Record, TournamentPairArtifact};
use crate::config::{self, ModelDecl, TournamentDecl};
use crate::error::{Error, Result};
use crate::model::{one_hot, Classifier, Generator};
use crate::tournament::{pair_name, run_pair, searched_pairs, PairResult, PairSettings};

use super::Suite;

impl Suite {
    /// The names (`<a>-vs-<b>`) of the pairs the tournament `name`
    /// searches ([`searched_pairs`]: every ordered pair, or one order of
    /// each under a divergence symmetric in its two models), in the order
    /// the verdict runs them; empty for a tournament that is not in the
    /// config or whose search settings do not parse.
    pub fn tournament_pairs(&self, name: &str) -> Vec<String> {
        let Some(t) = self.config.tournament(name) else {
            return Vec::new();
        };
        let Ok(settings) = self.pair_settings(t) else {
            return Vec::new();
        };
        searched_pairs(t.models.len(), &settings.config.divergence)
            .into_iter()
            .map(|(i, j)| pair_name(&t.models[i], &t.models[j]))
            .collect()
    }

    /// Runs the ordered pair `pair` (`<a>-vs-<b>`) of the tournament
    /// `name` alone and writes its record, which the verdict trial reads
    /// while its fingerprint is current (a current record is read, not
    /// searched again: [`Self::pair_result`]). A pair that is not searched
    /// (under a symmetric divergence, the second order of a pair) runs
    /// and records its other order and returns it mirrored.
    pub fn run_tournament_pair(
        &self,
        name: &str,
        pair: &str,
        progress: &dyn Fn(u64, u64),
    ) -> Result<PairResult> {
        let t = self
            .config
            .tournament(name)
            .ok_or_else(|| Error::setting("tournament", name, "a [[tournament]] of the config"))?;
        let (i, j) = crate::tournament::ordered_pairs(t.models.len())
            .into_iter()
            .find(|&(i, j)| pair_name(&t.models[i], &t.models[j]) == pair)
            .ok_or_else(|| {
                Error::setting(
                    format!("tournament[{name}].pair"),
                    pair,
                    "an ordered pair `<a>-vs-<b>` of the tournament's models",
                )
            })?;
        let settings = self.pair_settings(t)?;
        if !searched_pairs(t.models.len(), &settings.config.divergence).contains(&(i, j)) {
            let other = pair_name(&t.models[j], &t.models[i]);
            return Ok(self.run_tournament_pair(name, &other, progress)?.mirrored());
        }
        let generator = self.generator(&t.generator)?;
        let (a, b) = (
            self.classifier(&t.models[i])?,
            self.classifier(&t.models[j])?,
        );
        let named = [
            (t.models[i].as_str(), a.as_ref()),
            (t.models[j].as_str(), b.as_ref()),
        ];
        super::check_classes(&named)?;
        let generator = (t.generator.as_str(), generator.as_ref());
        let outputs = self.registered_outputs(generator, &named)?;
        let fingerprint = self.pair_fingerprint(t, named[0].0, named[1].0, &settings)
            + &outputs.of_pair(named[0].0, named[1].0);
        self.pair_result(t, named, generator, &settings, fingerprint, progress)
    }

    /// The pair (a, b) of `t`: its current record's result ([`Self::fresh_pair`],
    /// `fingerprint` the pair's), else searched and recorded, under the
    /// pair's lock ([`Self::lock_pair`]). A pair's test and the verdict
    /// both take their pairs from here, so that a process waits while
    /// another searches a pair, then reads the record it wrote (a plain
    /// `cargo nextest run` starts the verdict beside the pairs' tests).
    pub(super) fn pair_result(
        &self,
        t: &TournamentDecl,
        [a, b]: [(&str, &dyn Classifier); 2],
        generator: (&str, &dyn Generator),
        settings: &PairSettings,
        fingerprint: String,
        progress: &dyn Fn(u64, u64),
    ) -> Result<PairResult> {
        let _lock = self.lock_pair(t, &pair_name(a.0, b.0))?;
        if let Some(result) = self.fresh_pair(t, a.0, b.0, &fingerprint, settings.config.seed) {
            return Ok(result);
        }
        let started = Instant::now();
        let outcome = run_pair(a, b, generator, settings, self.device()?, progress)?;
        let record = Record::TournamentPair(Box::new(TournamentPairArtifact {
            config: self.config.path.clone(),
            tournament: t.name.clone(),
            fingerprint,
            result: outcome.result.clone(),
            seconds: started.elapsed().as_secs_f64(),
            written_at: artifact::now(),
        }));
        record.write(&self.pair_record(t, &pair_name(a.0, b.0)))?;
        Ok(outcome.result)
    }

    /// Holds the lock of the pair `pair`'s record (`<pair>.lock` beside
    /// it) until the file returned is dropped, waiting while another
    /// process holds it (see [`Self::pair_result`]: without it, the verdict
    /// searched every pair a test had not yet recorded, alongside it).
    fn lock_pair(&self, t: &TournamentDecl, pair: &str) -> Result<std::fs::File> {
        let path = self.pair_record(t, pair).with_extension("lock");
        let io = |action, cause| Error::Io {
            action,
            path: path.clone(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open the lock file", e))?;
        file.lock().map_err(|e| io("lock", e))?;
        Ok(file)
    }

    /// The search settings of every pair of `t`.
    pub(super) fn pair_settings(&self, t: &TournamentDecl) -> Result<PairSettings> {
        Ok(PairSettings {
            config: config::search_config(&t.search.or(&self.config.search))?,
            samples: t.samples,
        })
    }

    fn pair_record(&self, t: &TournamentDecl, pair: &str) -> PathBuf {
        artifact::tournament_dir(&self.artifact_dir(), &t.name)
            .join("pairs")
            .join(format!("{pair}.json"))
    }

    /// What a pair's result depends on, as text: gevaldi's version and a
    /// digest of its source (`GEVALDI_SOURCE_DIGEST`, see build.rs), the
    /// engine (`GEVALDI_ENGINE`), the settings, the device kind, and the
    /// two classifiers' and the generator's whole tables
    /// ([`model_fingerprint`]).
    pub(super) fn pair_fingerprint(
        &self,
        t: &TournamentDecl,
        a: &str,
        b: &str,
        settings: &PairSettings,
    ) -> String {
        let model = |decl: Option<&ModelDecl>| decl.map_or("?".to_string(), model_fingerprint);
        format!(
            "gevaldi {} (source {}); engine {}; {:?}; samples {}; device {}; {}; {}; {}",
            env!("CARGO_PKG_VERSION"),
            env!("GEVALDI_SOURCE_DIGEST"),
            crate::engine::Engine::current().name(),
            settings.config,
            settings.samples,
            self.device()
                .map(|d| format!("{:?}", d.location()))
                .unwrap_or_default(),
            model(self.config.classifier(a)),
            model(self.config.classifier(b)),
            model(self.config.generator(&t.generator)),
        )
    }

    /// What the models registered from Rust compute ([`RegisteredOutputs`]):
    /// a digest of the generator's samples at a fixed probe (2 latents of
    /// seed 0, conditions 0 and 1) where it is registered, and of each
    /// registered classifier's logits of them; nothing where every model
    /// is built in. Their code is in no table, so a record searched before
    /// it changed (a layer or a scale edited in the registered function,
    /// the TOML and the weights as they were) matched the fingerprint, and
    /// the verdict ranked the models as they had been. Computed once for
    /// the models given (a pair's, or a whole tournament's for its verdict).
    pub(super) fn registered_outputs(
        &self,
        generator: (&str, &dyn Generator),
        classifiers: &[(&str, &dyn Classifier)],
    ) -> Result<RegisteredOutputs> {
        let registered = |decl: Option<&ModelDecl>| decl.is_some_and(|d| d.builtin.is_none());
        let own_generator = registered(self.config.generator(generator.0));
        let own: Vec<_> = classifiers
            .iter()
            .filter(|(name, _)| registered(self.config.classifier(name)))
            .collect();
        let mut digests = RegisteredOutputs::default();
        if !own_generator && own.is_empty() {
            return Ok(digests);
        }
        let (name, g) = generator;
        let device = self.device()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let z = crate::model::sample_standard_normal((2, g.latent_dim()), &mut rng, device)
            .map_err(Error::tensor("draw the probe's latents"))?;
        let condition = g
            .num_conditions()
            .map(|c| one_hot(&[0, 1 % c.max(1)], c, device))
            .transpose()
            .map_err(Error::tensor("make the probe's conditions"))?;
        let x = g
            .decode(&z, condition.as_ref())
            .map_err(Error::model(name, "decode the probe's latents"))?;
        if own_generator {
            digests.generator = Some(format!("{name} {}", digest(&x)?));
        }
        for &&(name, c) in &own {
            let logits = c
                .logits(&x)
                .map_err(Error::model(name, "classify the probe's samples"))?;
            digests
                .classifiers
                .insert(name.to_string(), format!("{name} {}", digest(&logits)?));
        }
        Ok(digests)
    }

    /// The record of the pair (a, b) of `t`, when one exists with the
    /// current fingerprint, was searched from the current seed (a record
    /// of a gevaldi that derived each pair's seed from the names has the
    /// same fingerprint) and checks out.
    pub(super) fn fresh_pair(
        &self,
        t: &TournamentDecl,
        a: &str,
        b: &str,
        fingerprint: &str,
        seed: u64,
    ) -> Option<PairResult> {
        let path = self.pair_record(t, &pair_name(a, b));
        match Record::read(&path).ok()? {
            Record::TournamentPair(p)
                if p.fingerprint == fingerprint
                    && p.result.a == a
                    && p.result.b == b
                    && p.result.seed == seed =>
            {
                p.result.check().ok()?;
                Some(p.result)
            }
            _ => None,
        }
    }
}

/// [`Suite::registered_outputs`]: each registered model's digest, as
/// `name digest`.
#[derive(Default)]
pub(super) struct RegisteredOutputs {
    generator: Option<String>,
    classifiers: std::collections::HashMap<String, String>,
}

impl RegisteredOutputs {
    /// The text appended to the fingerprint of the pair (a, b)
    /// ([`Suite::pair_fingerprint`]): the registered generator's digest and
    /// the registered ones of a and b; empty where all three are built in.
    pub(super) fn of_pair(&self, a: &str, b: &str) -> String {
        let digests: Vec<&str> = self
            .generator
            .iter()
            .chain([a, b].iter().filter_map(|m| self.classifiers.get(*m)))
            .map(String::as_str)
            .collect();
        if digests.is_empty() {
            return String::new();
        }
        format!("; registered outputs {}", digests.join(", "))
    }
}

/// FNV-1a (64 bits) of a tensor's values written to 4 significant digits,
/// as 16 hex digits: a change of the code shows, rounding between machines
/// mostly not.
fn digest(t: &Tensor) -> Result<String> {
    let values = t
        .flatten_all()
        .and_then(|v| v.to_dtype(candle_core::DType::F32))
        .and_then(|v| v.to_vec1::<f32>())
        .map_err(Error::tensor("read the probe's outputs"))?;
    let hash = values
        .iter()
        .flat_map(|v| format!("{v:.3e};").into_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    Ok(format!("{hash:016x}"))
}

/// A model's table as text, every key but its line: the architecture, the
/// weights file's size and digest ([`FileDigest`]), `preprocess`,
/// `truncation`, `optional`, and a registered model's own keys (sorted by
/// name; a string naming a file beside the config with that file's size
/// and digest too: a registration reads `file = …` with
/// `get_path`). A record written under another table is stale.
fn model_fingerprint(d: &ModelDecl) -> String {
    // Every field, so that a new one is not forgotten here.
    let ModelDecl {
        name,
        builtin,
        table,
        preprocess,
        truncation,
        transform_input,
        optional,
        line: _,
    } = d;
    let arch = builtin
        .as_ref()
        .map_or("registered".to_string(), |(a, _)| a.name().to_string());
    let weights = table
        .weights
        .as_deref()
        .map_or("none".into(), |w| FileDigest::of(w).to_string());
    let mut keys: Vec<String> = table
        .keys()
        .filter_map(|k| Some((k, table.get(k)?)))
        .map(|(k, v)| {
            let mut files = Vec::new();
            files_of(k, v, &table.dir, &mut files);
            let files: String = files.iter().map(|(_, d)| format!(" [file {d}]")).collect();
            format!("{k} = {v:?}{files}")
        })
        .collect();
    keys.sort();
    format!(
        "{name} = {arch} {weights} preprocess {preprocess:?} truncation {truncation:?} \
         transform_input {transform_input:?} optional {optional} keys {{{}}}",
        keys.join(", ")
    )
}

/// A pair's samples decoded again from their latents and conditions,
/// `batch` at a time (the batch the memory check allowed).
pub(super) fn decode(
    result: &PairResult,
    generator: &dyn Generator,
    batch: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let classes = generator.num_conditions().unwrap_or(0);
    let dim = result.z.first().map_or(0, Vec::len);
    let mut xs = Vec::new();
    for (z, conditions) in result
        .z
        .chunks(batch.max(1))
        .zip(result.conditions.chunks(batch.max(1)))
    {
        let flat: Vec<f32> = z.iter().flatten().copied().collect();
        let z = Tensor::from_vec(flat, (z.len(), dim), device)
            .map_err(Error::tensor("rebuild a pair's latents"))?;
        let c = one_hot(conditions, classes, device)
            .map_err(Error::tensor("rebuild a pair's conditions"))?;
        xs.push(
            generator
                .decode(&z, Some(&c))
                .map_err(Error::tensor("decode a pair's samples"))?,
        );
    }
    Tensor::cat(&xs, 0).map_err(Error::tensor("decode a pair's samples"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Registry;

    /// A classifier the test never builds.
    struct Unbuilt;

    impl crate::Classifier for Unbuilt {
        fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            Ok(x.clone())
        }
        fn class_names(&self) -> &[String] {
            &[]
        }
    }

    /// Regression: the fingerprint held only a model's name, arch, weights
    /// and preprocessing, so a pair's record was read back after a
    /// registered model's own key (`file = …`) or the generator's
    /// `truncation` changed. Every key counts now, and the files that
    /// string keys name; the table's place in the file does not.
    /// The fingerprint of the pair (x, y) of tournament `t` of the config
    /// `text`, written as `dir/gevaldi.toml`, whose classifiers x, y and z
    /// are registered (and never built).
    fn fingerprint_of_xy(dir: &std::path::Path, text: &str) -> String {
        let path = dir.join("gevaldi.toml");
        std::fs::write(&path, text).unwrap();
        let mut r = Registry::new();
        for name in ["x", "y", "z"] {
            r.classifier(name, |_| -> Result<Unbuilt> {
                unreachable!("the fingerprint loads no model")
            });
        }
        let suite = Suite::load(&path, r).unwrap();
        let t = suite.config.tournament("t").unwrap();
        let settings = suite.pair_settings(t).unwrap();
        suite.pair_fingerprint(t, "x", "y", &settings)
    }

    #[test]
    fn the_pair_fingerprint_holds_every_key_of_the_models_tables() {
        let dir = std::env::temp_dir().join(format!("gevaldi-fingerprint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in [("g.safetensors", "g"), ("a.bin", "a"), ("b.bin", "bb")] {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        let fingerprint = |truncation: &str, file: &str, before: &str| {
            let text = format!(
                "{before}[generator.g]\narch = \"biggan-deep-128\"\nweights = \"g.safetensors\"\n\
                 truncation = {truncation}\n\n\
                 [classifier.x]\nfile = \"{file}\"\nwidth = 3\n\n\
                 [classifier.y]\n\n[classifier.z]\n\n\
                 [[tournament]]\nname = \"t\"\nmodels = [\"x\", \"y\", \"z\"]\ngenerator = \"g\"\n"
            );
            fingerprint_of_xy(&dir, &text)
        };
        let base = fingerprint("0.5", "a.bin", "");
        assert_eq!(base, fingerprint("0.5", "a.bin", "# a comment\n\n"));
        // Records of another gevaldi or another engine are run again.
        let version = format!(
            "gevaldi {} (source {}); ",
            env!("CARGO_PKG_VERSION"),
            env!("GEVALDI_SOURCE_DIGEST")
        );
        assert_eq!(env!("GEVALDI_SOURCE_DIGEST").len(), 16);
        assert!(base.starts_with(&version), "{base}");
        let engine = format!("engine {}; ", crate::engine::Engine::current().name());
        assert!(base.contains(&engine), "{base}");
        assert_ne!(base, fingerprint("0.4", "a.bin", ""), "truncation");
        assert_ne!(
            base,
            fingerprint("0.5", "b.bin", ""),
            "a registered model's key"
        );
        std::fs::write(dir.join("a.bin"), "a longer file").unwrap();
        assert_ne!(
            base,
            fingerprint("0.5", "a.bin", ""),
            "the file a key names"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: the fingerprint held each weights file's path and
    /// modification time, so a fresh checkout of the same weights (each CI
    /// runner's: git gives its files the checkout's time) made the pair
    /// records gathered from the other runners stale, and the verdict
    /// searched every pair again (a 3-model tournament, 40 samples × 400
    /// steps: 8.0 s against 0.37 s after `touch models/*`). The bytes
    /// count, and the size: not where the file is or when it was written.
    #[test]
    fn the_pair_fingerprint_holds_the_weights_bytes_not_their_time_or_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        let fingerprint = |weights: &str| {
            let text = format!(
                "[generator.g]\narch = \"biggan-deep-128\"\nweights = \"{weights}\"\n\n\
                 [classifier.x]\n\n[classifier.y]\n\n[classifier.z]\n\n\
                 [[tournament]]\nname = \"t\"\nmodels = [\"x\", \"y\", \"z\"]\ngenerator = \"g\"\n"
            );
            fingerprint_of_xy(dir, &text)
        };
        // 3 MiB and a tail: the digest reads it in several parts.
        let mut bytes: Vec<u8> = (0..3 * (1 << 20) + 5)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let g = dir.join("g.safetensors");
        let write = |bytes: &[u8], at: u64| {
            std::fs::write(&g, bytes).unwrap();
            let file = std::fs::File::options().write(true).open(&g).unwrap();
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
            file.set_modified(time).unwrap();
        };
        write(&bytes, 1_000_000);
        let base = fingerprint("g.safetensors");
        // The same bytes written again, at another time (a fresh checkout).
        write(&bytes, 2_000_000);
        assert_eq!(
            base,
            fingerprint("g.safetensors"),
            "a new modification time"
        );
        // The same bytes in another place.
        std::fs::write(dir.join("elsewhere/g.safetensors"), &bytes).unwrap();
        assert_eq!(base, fingerprint("elsewhere/g.safetensors"), "another path");
        // One byte changed, the size kept, in the last part and in the first.
        for at in [bytes.len() - 2, 3] {
            bytes[at] ^= 1;
            write(&bytes, 3_000_000 + at as u64);
            assert_ne!(base, fingerprint("g.safetensors"), "byte {at} changed");
            bytes[at] ^= 1;
        }
        write(&bytes, 4_000_000);
        assert_eq!(base, fingerprint("g.safetensors"), "the bytes restored");
    }
}
