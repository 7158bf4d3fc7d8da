//! One ordered pair of a tournament: its MDS set and who was right on it.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::ensemble::search_conditioned;
use crate::error::{Error, Result};
use crate::model::{argmax, Classifier, Generator};
use crate::search::SearchConfig;

/// Who was right on one sample of a pair's MDS set, against its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    /// The pair's first model was right, the second wrong.
    A,
    /// The second model was right, the first wrong.
    B,
    /// Both right or both wrong.
    Tie,
}

impl Winner {
    /// The winner of a sample whose condition is `condition`.
    pub fn of(prediction_a: usize, prediction_b: usize, condition: usize) -> Self {
        match (prediction_a == condition, prediction_b == condition) {
            (true, false) => Winner::A,
            (false, true) => Winner::B,
            _ => Winner::Tie,
        }
    }

    /// The winner with the pair's two models swapped.
    pub fn swapped(self) -> Self {
        match self {
            Winner::A => Winner::B,
            Winner::B => Winner::A,
            Winner::Tie => Winner::Tie,
        }
    }
}

/// The settings every pair of a tournament shares.
#[derive(Clone, Debug, PartialEq)]
pub struct PairSettings {
    /// The search's settings; `seed` is the tournament's seed, every
    /// pair's, and `batch` the most samples searched at once.
    pub config: SearchConfig,
    /// MDS samples per ordered pair, K. (Default: `100`.)
    pub samples: usize,
}

impl Default for PairSettings {
    fn default() -> Self {
        PairSettings {
            config: SearchConfig::default(),
            samples: 100,
        }
    }
}

/// The name of the ordered pair (a, b): `<a>-vs-<b>`, as `[[pair]]`s are
/// named.
pub fn pair_name(a: &str, b: &str) -> String {
    format!("{a}-vs-{b}")
}

/// What one ordered pair found: serialisable, the record of the pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    /// The first model: the divergence's first argument (`kl` is
    /// KL(a ‖ b)).
    pub a: String,
    /// The second model.
    pub b: String,
    /// The search's seed: the tournament's, the same for every pair.
    pub seed: u64,
    /// The divergence ascended: in the record its name (`"kl"`, `"js"`,
    /// …), or `{"js": {"weights": [..]}}` for `js` with weights of its own,
    /// which is not symmetric in the two models (see
    /// [`Divergence`](crate::Divergence)'s serde).
    pub divergence: crate::Divergence,
    /// Ascent steps run (of the last chunk, after an early stop).
    pub steps_run: usize,
    /// Each sample's condition: its true label.
    pub conditions: Vec<usize>,
    /// Each sample's latent after the search.
    pub z: Vec<Vec<f32>>,
    /// Each sample's count of latent coordinates outside the generator's
    /// support ([`crate::Generator::latent_support`], BigGAN's truncation
    /// box); `None` where it states none (and in records written before
    /// it was counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_support: Option<Vec<usize>>,
    /// Each sample's divergence after the search.
    pub divergence_after: Vec<f64>,
    /// a's top class per sample.
    pub prediction_a: Vec<usize>,
    /// b's top class per sample.
    pub prediction_b: Vec<usize>,
    /// a's probability of its top class per sample.
    pub confidence_a: Vec<f32>,
    /// b's probability of its top class per sample.
    pub confidence_b: Vec<f32>,
    /// a's probability of the condition per sample.
    pub p_condition_a: Vec<f32>,
    /// b's probability of the condition per sample.
    pub p_condition_b: Vec<f32>,
    /// Who was right per sample.
    pub winners: Vec<Winner>,
    /// a's top class per sample at the search's start z0, before any step.
    pub start_prediction_a: Vec<usize>,
    /// b's top class per sample at z0.
    pub start_prediction_b: Vec<usize>,
    /// a's accuracy on the samples against their conditions.
    pub accuracy_a: f64,
    /// b's accuracy on the samples.
    pub accuracy_b: f64,
    /// Samples a won.
    pub wins_a: u64,
    /// Samples b won.
    pub wins_b: u64,
    /// Samples where both were right or both wrong.
    pub ties: u64,
    /// Ascent warnings of the search's chunks, `chunk <c>: <warning>`.
    pub warnings: Vec<String>,
}

impl PairResult {
    /// `<a>-vs-<b>`.
    pub fn name(&self) -> String {
        pair_name(&self.a, &self.b)
    }

    /// The result of the order (b, a) under a divergence symmetric in its
    /// two models (`js`, `jeffreys`, `tv`), where that order is this
    /// search with the models swapped: every per-model figure swapped, the
    /// conditions, latents, divergences and warnings the same.
    pub fn mirrored(&self) -> PairResult {
        let r = self.clone();
        PairResult {
            a: r.b,
            b: r.a,
            prediction_a: r.prediction_b,
            prediction_b: r.prediction_a,
            confidence_a: r.confidence_b,
            confidence_b: r.confidence_a,
            p_condition_a: r.p_condition_b,
            p_condition_b: r.p_condition_a,
            winners: r.winners.iter().map(|w| w.swapped()).collect(),
            start_prediction_a: r.start_prediction_b,
            start_prediction_b: r.start_prediction_a,
            accuracy_a: r.accuracy_b,
            accuracy_b: r.accuracy_a,
            wins_a: r.wins_b,
            wins_b: r.wins_a,
            ..r
        }
    }

    /// Samples on which the two models predict different classes.
    pub fn disagreements(&self) -> usize {
        self.prediction_a
            .iter()
            .zip(&self.prediction_b)
            .filter(|(a, b)| a != b)
            .count()
    }

    /// Checks that the per-sample lists agree in length and the counts and
    /// accuracies with the winners and predictions (a record read back from
    /// disk might not): an error naming the first that does not.
    pub fn check(&self) -> Result<()> {
        let k = self.conditions.len();
        let bad = |what: &str, value: String| {
            Err(Error::setting(
                format!("tournament pair `{}`: {what}", self.name()),
                value,
                format!("the pair's {k} samples to agree"),
            ))
        };
        let lengths = [
            ("z", self.z.len()),
            ("divergence_after", self.divergence_after.len()),
            ("prediction_a", self.prediction_a.len()),
            ("prediction_b", self.prediction_b.len()),
            ("confidence_a", self.confidence_a.len()),
            ("confidence_b", self.confidence_b.len()),
            ("p_condition_a", self.p_condition_a.len()),
            ("p_condition_b", self.p_condition_b.len()),
            ("winners", self.winners.len()),
            ("start_prediction_a", self.start_prediction_a.len()),
            ("start_prediction_b", self.start_prediction_b.len()),
            (
                "outside_support",
                self.outside_support.as_ref().map_or(k, Vec::len),
            ),
        ];
        if let Some((what, n)) = lengths.iter().find(|(_, n)| *n != k) {
            return bad(what, format!("{n} entries"));
        }
        for i in 0..k {
            let w = Winner::of(
                self.prediction_a[i],
                self.prediction_b[i],
                self.conditions[i],
            );
            if w != self.winners[i] {
                return bad(&format!("winners[{i}]"), format!("{:?}", self.winners[i]));
            }
        }
        let count = |w: Winner| self.winners.iter().filter(|&&x| x == w).count() as u64;
        let counts = [
            ("wins_a", self.wins_a, count(Winner::A)),
            ("wins_b", self.wins_b, count(Winner::B)),
            ("ties", self.ties, count(Winner::Tie)),
        ];
        if let Some((what, got, _)) = counts.iter().find(|(_, got, want)| got != want) {
            return bad(what, got.to_string());
        }
        let accuracy = |p: &[usize]| {
            p.iter()
                .zip(&self.conditions)
                .filter(|(p, c)| p == c)
                .count() as f64
                / k as f64
        };
        if accuracy(&self.prediction_a) != self.accuracy_a {
            return bad("accuracy_a", self.accuracy_a.to_string());
        }
        if accuracy(&self.prediction_b) != self.accuracy_b {
            return bad("accuracy_b", self.accuracy_b.to_string());
        }
        Ok(())
    }
}

/// A pair's result and its decoded samples `[K, …]`, for pictures.
#[derive(Clone, Debug)]
pub struct PairOutcome {
    /// The serialisable result.
    pub result: PairResult,
    /// The decoded MDS samples, in the result's order.
    pub x: Tensor,
}

impl PairOutcome {
    /// The outcome of the order (b, a) under a divergence symmetric in its
    /// two models ([`PairResult::mirrored`]; the same samples).
    pub fn mirrored(&self) -> PairOutcome {
        PairOutcome {
            result: self.result.mirrored(),
            x: self.x.clone(),
        }
    }
}

/// Runs the ordered pair (a, b): K = `settings.samples` MDS samples searched
/// between a and b with `settings.config.divergence` by the search
/// [`crate::ensemble::MdsDataset`] runs (conditions spread evenly over the
/// generator's classes, shuffled with the tournament's seed; `config.batch`
/// at a time, chunk c seeded with the seed + c); then each model's top
/// class on the samples against their conditions.
///
/// Every pair starts from the same conditions and latents, the
/// tournament's (common random numbers, as MAD selects every pair's images
/// from one pool): a pair's result depends on its two models and the
/// settings, never on the models' names or the other pairs, so a model
/// and its copy meet every other model on the same samples and tie.
///
/// `progress(done, total)` counts ascent steps over the chunks.
pub fn run_pair(
    a: (&str, &dyn Classifier),
    b: (&str, &dyn Classifier),
    generator: (&str, &dyn Generator),
    settings: &PairSettings,
    device: &Device,
    progress: &dyn Fn(u64, u64),
) -> Result<PairOutcome> {
    let (gen_name, generator) = generator;
    if generator.num_conditions().is_none() {
        return Err(Error::setting(
            "tournament.generator",
            format!("`{gen_name}`, unconditional"),
            "a class-conditional generator (the MDS samples' conditions are their labels)",
        ));
    }
    // A model with other classes than the generator's conditions is
    // refused by `search_conditioned` (Error::ConditionClasses).
    let k = settings.samples;
    if k == 0 {
        return Err(Error::setting("tournament.samples", 0, "at least 1"));
    }
    let config = &settings.config;
    config.validate()?;
    let seed = config.seed;
    let mut out = PairResult {
        a: a.0.to_string(),
        b: b.0.to_string(),
        seed,
        divergence: config.divergence.clone(),
        steps_run: 0,
        conditions: Vec::new(),
        z: Vec::with_capacity(k),
        outside_support: generator.latent_support().map(|_| Vec::with_capacity(k)),
        divergence_after: Vec::with_capacity(k),
        prediction_a: Vec::with_capacity(k),
        prediction_b: Vec::with_capacity(k),
        confidence_a: Vec::with_capacity(k),
        confidence_b: Vec::with_capacity(k),
        p_condition_a: Vec::with_capacity(k),
        p_condition_b: Vec::with_capacity(k),
        winners: Vec::with_capacity(k),
        start_prediction_a: Vec::with_capacity(k),
        start_prediction_b: Vec::with_capacity(k),
        accuracy_a: 0.0,
        accuracy_b: 0.0,
        wins_a: 0,
        wins_b: 0,
        ties: 0,
        warnings: Vec::new(),
    };
    let mut xs = Vec::new();
    let conditions = search_conditioned(
        (gen_name, generator),
        &[a, b],
        k,
        config,
        device,
        progress,
        |c, chunk, outcome| {
            out.steps_run = outcome.steps_run;
            out.warnings
                .extend(outcome.warnings().iter().map(|w| format!("chunk {c}: {w}")));
            for (s, &condition) in outcome.samples.into_iter().zip(chunk) {
                let after = s.probs_after();
                let (pa, pb) = (&after[0], &after[1]);
                let (ta, tb) = (argmax(pa), argmax(pb));
                out.prediction_a.push(ta);
                out.prediction_b.push(tb);
                out.confidence_a.push(pa[ta]);
                out.confidence_b.push(pb[tb]);
                out.p_condition_a.push(pa[condition]);
                out.p_condition_b.push(pb[condition]);
                out.winners.push(Winner::of(ta, tb, condition));
                out.start_prediction_a.push(argmax(&s.log_probs_before[0]));
                out.start_prediction_b.push(argmax(&s.log_probs_before[1]));
                out.divergence_after.push(s.divergence_after);
                if let Some(counts) = &mut out.outside_support {
                    counts.push(s.outside_support.unwrap_or(0));
                }
                out.z.push(s.z);
            }
            xs.push(outcome.x);
        },
    )?;
    out.conditions = conditions.clone();
    let right = |p: &[usize]| p.iter().zip(&conditions).filter(|(p, c)| p == c).count();
    out.accuracy_a = right(&out.prediction_a) as f64 / k as f64;
    out.accuracy_b = right(&out.prediction_b) as f64 / k as f64;
    let count = |w: Winner| out.winners.iter().filter(|&&x| x == w).count() as u64;
    (out.wins_a, out.wins_b, out.ties) = (count(Winner::A), count(Winner::B), count(Winner::Tie));
    let x = Tensor::cat(&xs, 0).map_err(Error::tensor("join the pair's samples"))?;
    Ok(PairOutcome { result: out, x })
}

/// For tests: a consistent record of the ordered pair (a, b) under
/// `divergence` in which a won `wins_a` samples (a predicting 0, b 1) and
/// b none, then one tie where both predict 0 (condition 0 throughout).
#[cfg(test)]
pub(crate) fn pair_won_under(
    divergence: crate::Divergence,
    a: &str,
    b: &str,
    wins_a: usize,
) -> PairResult {
    let k = wins_a + 1;
    let prediction_b: Vec<usize> = [vec![1; wins_a], vec![0]].concat();
    let accuracy_b = 1.0 / k as f64;
    PairResult {
        a: a.into(),
        b: b.into(),
        seed: 0,
        divergence,
        steps_run: 1,
        conditions: vec![0; k],
        z: vec![vec![0.0]; k],
        outside_support: None,
        divergence_after: vec![0.0; k],
        prediction_a: vec![0; k],
        start_prediction_a: vec![0; k],
        start_prediction_b: prediction_b.clone(),
        prediction_b,
        confidence_a: vec![0.9; k],
        confidence_b: vec![0.9; k],
        p_condition_a: vec![0.9; k],
        p_condition_b: vec![0.9; k],
        winners: [vec![Winner::A; wins_a], vec![Winner::Tie]].concat(),
        accuracy_a: 1.0,
        accuracy_b,
        wins_a: wins_a as u64,
        wins_b: 0,
        ties: 1,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_are_right_against_wrong() {
        assert_eq!(Winner::of(3, 5, 3), Winner::A);
        assert_eq!(Winner::of(5, 3, 3), Winner::B);
        assert_eq!(Winner::of(3, 3, 3), Winner::Tie);
        assert_eq!(Winner::of(4, 5, 3), Winner::Tie);
    }

    fn result() -> PairResult {
        PairResult {
            a: "a".into(),
            b: "b".into(),
            seed: 0,
            divergence: crate::Divergence::Kl,
            steps_run: 1,
            conditions: vec![1, 2, 3],
            z: vec![vec![0.0]; 3],
            outside_support: None,
            divergence_after: vec![0.5; 3],
            prediction_a: vec![1, 0, 3],
            prediction_b: vec![0, 2, 3],
            confidence_a: vec![0.9; 3],
            confidence_b: vec![0.9; 3],
            p_condition_a: vec![0.9; 3],
            p_condition_b: vec![0.9; 3],
            winners: vec![Winner::A, Winner::B, Winner::Tie],
            start_prediction_a: vec![1, 2, 3],
            start_prediction_b: vec![1, 2, 3],
            accuracy_a: 2.0 / 3.0,
            accuracy_b: 2.0 / 3.0,
            wins_a: 1,
            wins_b: 1,
            ties: 1,
            warnings: Vec::new(),
        }
    }

    /// A pair's record as written today, its divergence by name: it reads
    /// back and writes the same JSON; a weighted `js` keeps its weights
    /// (uniform `js` would read back as symmetric); a name this gevaldi
    /// does not know is an error, as any unreadable record.
    #[test]
    fn a_pair_record_of_today_reads_back_and_writes_the_same_text() {
        let json = concat!(
            r#"{"a":"a","b":"b","seed":0,"divergence":"js","steps_run":1,"#,
            r#""conditions":[1,2,3],"z":[[0.0],[0.0],[0.0]],"divergence_after":[0.5,0.5,0.5],"#,
            r#""prediction_a":[1,0,3],"prediction_b":[0,2,3],"confidence_a":[0.9,0.9,0.9],"#,
            r#""confidence_b":[0.9,0.9,0.9],"p_condition_a":[0.9,0.9,0.9],"#,
            r#""p_condition_b":[0.9,0.9,0.9],"winners":["a","b","tie"],"#,
            r#""start_prediction_a":[1,2,3],"start_prediction_b":[1,2,3],"#,
            r#""accuracy_a":0.6666666666666666,"accuracy_b":0.6666666666666666,"#,
            r#""wins_a":1,"wins_b":1,"ties":1,"warnings":["chunk 0: z ran away"]}"#
        );
        let r: PairResult = serde_json::from_str(json).unwrap();
        assert_eq!(r.divergence, crate::Divergence::js());
        assert!(r.divergence.symmetric());
        assert_eq!(serde_json::to_string(&r).unwrap(), json);
        let mut expected = result();
        expected.divergence = crate::Divergence::js();
        expected.warnings = vec!["chunk 0: z ran away".into()];
        assert_eq!(r, expected);
        for name in ["kl", "reverse-kl", "jeffreys", "tv"] {
            let j = json.replace(r#""js""#, &format!("\"{name}\""));
            let r: PairResult = serde_json::from_str(&j).unwrap();
            assert_eq!(r.divergence.name(), name);
            assert_eq!(serde_json::to_string(&r).unwrap(), j);
        }
        let weighted = json.replace(r#""js""#, r#"{"js":{"weights":[1.0,3.0]}}"#);
        let r: PairResult = serde_json::from_str(&weighted).unwrap();
        assert!(!r.divergence.symmetric());
        assert_eq!(serde_json::to_string(&r).unwrap(), weighted);
        let e = serde_json::from_str::<PairResult>(&json.replace(r#""js""#, r#""hellinger""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `hellinger`"), "{e}");
    }

    #[test]
    fn a_pair_record_that_contradicts_itself_is_refused() {
        result().check().unwrap();
        let mut r = result();
        r.winners[2] = Winner::A;
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("a-vs-b`: winners[2]"), "{e}");
        let mut r = result();
        r.wins_b = 2;
        assert!(r.check().unwrap_err().to_string().contains("wins_b"));
        let mut r = result();
        r.accuracy_a = 1.0;
        assert!(r.check().unwrap_err().to_string().contains("accuracy_a"));
        let mut r = result();
        r.z.pop();
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("a-vs-b`: z` = 2 entries"), "{e}");
        let mut r = result();
        r.outside_support = Some(vec![0, 1, 0]);
        r.check().unwrap();
        r.outside_support = Some(vec![0, 1]);
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("a-vs-b`: outside_support` = 2 entries"), "{e}");
    }
}
