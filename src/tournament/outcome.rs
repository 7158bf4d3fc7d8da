//! A tournament's outcome, assembled from its pairs' results.

use serde::{Deserialize, Serialize};

use crate::divergence::Divergence;
use crate::error::{Error, Result};
use crate::ranking::{
    bradley_terry, power_ranking, score_levels, spearman_of_scores, BradleyTerry, PowerRanking,
    WinMatrix,
};

use super::pair::{pair_name, PairResult};

/// Everything a tournament found: serialisable, the tournament's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TournamentOutcome {
    /// The models, in the tournament's order (the indices of everything
    /// below).
    pub models: Vec<String>,
    /// Every ordered pair's result, in [`ordered_pairs`] order.
    pub pairs: Vec<PairResult>,
    /// `wins[i][j]`: samples on which model i was right and j wrong, over
    /// the MDS sets of (i, j) and (j, i); under a divergence symmetric in
    /// the two models (`js`, `jeffreys`, `tv`), whose two orders are one
    /// search, over the set of the order whose first model comes first.
    pub wins: WinMatrix,
    /// MAD's power-iteration ranking.
    pub power: PowerRanking,
    /// The Bradley–Terry fit.
    pub bradley_terry: BradleyTerry,
    /// Each model's accuracy over the MDS sets of all its pairs (both
    /// orders, or one under a symmetric divergence, as `wins`), against
    /// their conditions.
    pub mds_accuracy: Vec<f64>,
    /// Each model's accuracy over the same samples at the searches' start
    /// z0 (cVAE samples of the conditions, before any ascent step): what
    /// the models do on ordinary generated data, equal across devices to
    /// rounding.
    pub start_accuracy: Vec<f64>,
    /// Each model's accuracy on test data, when given.
    pub test_accuracy: Option<Vec<f64>>,
    /// Spearman's correlation of the power scores with the test accuracy,
    /// scores equal within rounding counting as tied
    /// ([`spearman_of_scores`]); `None` without test accuracies or when
    /// undefined (all scores equal within rounding, or all accuracies
    /// equal).
    pub srcc_power: Option<f64>,
    /// Spearman's correlation of the Bradley–Terry θ with the test
    /// accuracy, likewise.
    pub srcc_bradley_terry: Option<f64>,
}

/// The ordered pairs of N models: (i, j) for every i ≠ j, by i, then j.
pub fn ordered_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .collect()
}

/// The pairs a tournament of N models searches under `divergence`: every
/// ordered pair ([`ordered_pairs`]); under a divergence symmetric in its
/// two models (`js`, `jeffreys`, `tv`), where (j, i) is the search of
/// (i, j) with the models swapped, those with i < j, each standing for
/// both orders ([`PairResult::mirrored`]).
pub fn searched_pairs(n: usize, divergence: &Divergence) -> Vec<(usize, usize)> {
    let symmetric = divergence.symmetric();
    ordered_pairs(n)
        .into_iter()
        .filter(|&(i, j)| !symmetric || i < j)
        .collect()
}

/// Every ordered pair's result in [`ordered_pairs`] order, from the results
/// of the [`searched_pairs`] (in their order): an order that was not
/// searched is its other order's result `mirror`ed.
pub(crate) fn every_order<T>(
    n: usize,
    divergence: &Divergence,
    searched: Vec<T>,
    mirror: impl Fn(&T) -> T,
) -> Vec<T> {
    let mut slots: Vec<Option<T>> = (0..n * n).map(|_| None).collect();
    for ((i, j), r) in searched_pairs(n, divergence).into_iter().zip(searched) {
        slots[i * n + j] = Some(r);
    }
    for (i, j) in ordered_pairs(n) {
        if slots[i * n + j].is_none() {
            slots[i * n + j] = slots[j * n + i].as_ref().map(&mirror);
        }
    }
    ordered_pairs(n)
        .into_iter()
        .filter_map(|(i, j)| slots[i * n + j].take())
        .collect()
}

impl TournamentOutcome {
    /// Assembles the outcome of the tournament of `models` from the results
    /// of all its ordered pairs (in any order; each exactly once), with each
    /// model's `test_accuracy` when known.
    ///
    /// An error when there are fewer than 3 models, a name repeats, a pair
    /// is missing, repeated or names an unknown model, a pair's record is
    /// inconsistent ([`PairResult::check`]), or the test accuracies are not
    /// one finite number per model.
    pub fn from_pairs(
        models: &[String],
        pairs: Vec<PairResult>,
        test_accuracy: Option<Vec<f64>>,
    ) -> Result<Self> {
        let n = models.len();
        if n < 3 {
            return Err(Error::setting(
                "tournament.models",
                format!("{n} models"),
                "at least 3",
            ));
        }
        let index = |name: &str| models.iter().position(|m| m == name);
        if let Some(i) = (0..n).find(|&i| index(&models[i]) != Some(i)) {
            return Err(Error::setting(
                "tournament.models",
                format!("`{}` twice", models[i]),
                "distinct names",
            ));
        }
        let mut slots: Vec<Option<PairResult>> = vec![None; n * n];
        for p in pairs {
            p.check()?;
            let (i, j) = match (index(&p.a), index(&p.b)) {
                (Some(i), Some(j)) if i != j => (i, j),
                _ => {
                    return Err(Error::setting(
                        "tournament.pairs",
                        format!("a result for `{}`", p.name()),
                        format!("a pair of two of {}", models.join(", ")),
                    ))
                }
            };
            if slots[i * n + j].is_some() {
                return Err(Error::setting(
                    "tournament.pairs",
                    format!("two results for `{}`", p.name()),
                    "each ordered pair once",
                ));
            }
            slots[i * n + j] = Some(p);
        }
        let mut ordered = Vec::with_capacity(n * (n - 1));
        for (i, j) in ordered_pairs(n) {
            match slots[i * n + j].take() {
                Some(p) => ordered.push(p),
                None => {
                    return Err(Error::setting(
                        "tournament.pairs",
                        format!("no result for `{}`", pair_name(&models[i], &models[j])),
                        "a result for every ordered pair",
                    ))
                }
            }
        }
        if let Some(acc) = &test_accuracy {
            if acc.len() != n || acc.iter().any(|a| !a.is_finite()) {
                return Err(Error::setting(
                    "tournament.test_accuracy",
                    format!("{acc:?}"),
                    format!("one finite accuracy for each of the {n} models"),
                ));
            }
        }
        let mut wins = WinMatrix::zeros(n);
        let mut right = vec![0u64; n];
        let mut right_at_start = vec![0u64; n];
        let mut seen = vec![0u64; n];
        for p in &ordered {
            let (i, j) = (index(&p.a).unwrap_or(0), index(&p.b).unwrap_or(0));
            // Under a divergence symmetric in the two models, (j, i) is the
            // search of (i, j) again (the same start, the same objective):
            // its samples count once, from the pair whose first model
            // comes first.
            if p.divergence.symmetric() && i > j {
                continue;
            }
            wins.add(i, j, p.wins_a);
            wins.add(j, i, p.wins_b);
            let k = p.conditions.len() as u64;
            let correct = |pred: &[usize]| {
                pred.iter()
                    .zip(&p.conditions)
                    .filter(|(a, c)| a == c)
                    .count() as u64
            };
            right[i] += correct(&p.prediction_a);
            right[j] += correct(&p.prediction_b);
            right_at_start[i] += correct(&p.start_prediction_a);
            right_at_start[j] += correct(&p.start_prediction_b);
            seen[i] += k;
            seen[j] += k;
        }
        let power = power_ranking(&wins);
        let bt = bradley_terry(&wins)?;
        let (srcc_power, srcc_bradley_terry) = match &test_accuracy {
            Some(acc) => (
                spearman_of_scores(&power.scores, acc)?,
                spearman_of_scores(&bt.theta, acc)?,
            ),
            None => (None, None),
        };
        Ok(TournamentOutcome {
            models: models.to_vec(),
            pairs: ordered,
            wins,
            power,
            bradley_terry: bt,
            mds_accuracy: share(&right, &seen),
            start_accuracy: share(&right_at_start, &seen),
            test_accuracy,
            srcc_power,
            srcc_bradley_terry,
        })
    }

    /// The pairs searched, whose samples count: every ordered pair, or
    /// under a divergence symmetric in its two models one order of each
    /// (the other is its mirror), as [`searched_pairs`] runs them and the
    /// harness's summary counts them.
    pub fn searches(&self) -> usize {
        self.pairs
            .iter()
            .filter(|p| !p.divergence.symmetric() || self.index(&p.a) < self.index(&p.b))
            .count()
    }

    /// The index of a model.
    pub fn index(&self, model: &str) -> Option<usize> {
        self.models.iter().position(|m| m == model)
    }

    /// A model's place, 1 for the best, in the given ranking's order
    /// (where models whose scores are equal within rounding keep the
    /// tournament's order: see [`TournamentOutcome::pessimistic_rank`]).
    pub fn rank(&self, model: &str, method: RankingMethod) -> Option<usize> {
        let i = self.index(model)?;
        self.order(method)
            .iter()
            .position(|&o| o == i)
            .map(|p| p + 1)
    }

    /// A model's place counting ties against it: 1 + the number of other
    /// models whose score is equal within rounding
    /// ([`score_levels`]) or better. 1 only when its score is above every
    /// other's; the three models of a symmetric cycle are all 3rd.
    pub fn pessimistic_rank(&self, model: &str, method: RankingMethod) -> Option<usize> {
        let i = self.index(model)?;
        let levels = self.levels(method);
        Some(levels.iter().filter(|&&l| l <= levels[i]).count())
    }

    /// The places model `i` holds in the `method` ranking: from 1 + the
    /// number of models scoring above it to its
    /// [`pessimistic_rank`](Self::pessimistic_rank), which also counts the
    /// models it ties with; one place where it ties with none.
    pub fn places(&self, i: usize, method: RankingMethod) -> Places {
        let levels = self.levels(method);
        Places {
            first: 1 + levels.iter().filter(|&&l| l < levels[i]).count(),
            last: levels.iter().filter(|&&l| l <= levels[i]).count(),
        }
    }

    /// Each model's score by `method`: MAD's power scores or the
    /// Bradley–Terry θ.
    pub fn scores(&self, method: RankingMethod) -> &[f64] {
        match method {
            RankingMethod::Mad => &self.power.scores,
            RankingMethod::BradleyTerry => &self.bradley_terry.theta,
        }
    }

    /// Each model's level by `method` ([`score_levels`]): 0 for the best;
    /// models whose scores are equal within rounding share a level.
    pub fn levels(&self, method: RankingMethod) -> Vec<usize> {
        score_levels(self.scores(method))
    }

    /// The model indices, best first, by `method`.
    pub fn order(&self, method: RankingMethod) -> &[usize] {
        match method {
            RankingMethod::Mad => &self.power.order,
            RankingMethod::BradleyTerry => &self.bradley_terry.order,
        }
    }

    /// The SRCC of the `method` ranking with the test accuracy, when
    /// defined.
    pub fn srcc(&self, method: RankingMethod) -> Option<f64> {
        match method {
            RankingMethod::Mad => self.srcc_power,
            RankingMethod::BradleyTerry => self.srcc_bradley_terry,
        }
    }

    /// The model names, best first, by `method`.
    pub fn ranking(&self, method: RankingMethod) -> Vec<&str> {
        self.order(method)
            .iter()
            .map(|&i| self.models[i].as_str())
            .collect()
    }

    /// The model indices by `method`, best first, in groups of equal score
    /// within rounding (the ranking's own [`score_levels`]), each group in
    /// the tournament's order.
    pub fn tied_groups(&self, method: RankingMethod) -> Vec<Vec<usize>> {
        let levels = self.levels(method);
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &i in self.order(method) {
            match groups.last_mut() {
                Some(g) if levels[g[0]] == levels[i] => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        groups
    }

    /// The models' names by `method`, best first, in tiers of models whose
    /// scores are equal within rounding ([`Self::tied_groups`]).
    pub fn ranking_tiers(&self, method: RankingMethod) -> Vec<Vec<String>> {
        self.tied_groups(method)
            .iter()
            .map(|g| g.iter().map(|&i| self.models[i].clone()).collect())
            .collect()
    }

    /// The ranking by `method` as the summaries show it
    /// ([`ranking_line`]): `cnn_b > cnn_a = bag_0`.
    pub fn ranking_line(&self, method: RankingMethod) -> String {
        ranking_line(&self.ranking_tiers(method))
    }

    /// a's share of the samples decided between a and b (both orders);
    /// `None` for unknown models or when no sample was decided.
    pub fn win_rate(&self, a: &str, b: &str) -> Option<f64> {
        self.wins.win_rate(self.index(a)?, self.index(b)?)
    }

    /// The result of the ordered pair (a, b).
    pub fn pair(&self, a: &str, b: &str) -> Option<&PairResult> {
        self.pairs.iter().find(|p| p.a == a && p.b == b)
    }
}

/// Tiers of models, best first, as the summaries show them: `>` between
/// tiers, `=` between the models of one (whose scores are equal within
/// rounding; the config's order does not break a tie).
pub fn ranking_line(tiers: &[Vec<String>]) -> String {
    tiers
        .iter()
        .map(|tier| tier.join(" = "))
        .collect::<Vec<_>>()
        .join(" > ")
}

fn share(right: &[u64], seen: &[u64]) -> Vec<f64> {
    right
        .iter()
        .zip(seen)
        .map(|(&r, &s)| r as f64 / s.max(1) as f64)
        .collect()
}

/// The places a model holds in a ranking, 1 for the best: one place, or
/// the places of the models it ties with (`2–3`), none of which the
/// config's order decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Places {
    /// 1 + the number of models scoring above it.
    pub first: usize,
    /// `first` + the number of models it ties with.
    pub last: usize,
}

impl std::fmt::Display for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}–{}", self.first, self.last)
        }
    }
}

/// Which global ranking a threshold reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankingMethod {
    /// MAD's power iteration. (The default.)
    #[default]
    Mad,
    /// Bradley–Terry maximum likelihood.
    BradleyTerry,
}

impl RankingMethod {
    /// `mad` or `bradley-terry`, as a config names it.
    pub fn name(&self) -> &'static str {
        match self {
            RankingMethod::Mad => "mad",
            RankingMethod::BradleyTerry => "bradley-terry",
        }
    }
}

impl From<crate::config::RankingKind> for RankingMethod {
    fn from(kind: crate::config::RankingKind) -> Self {
        match kind {
            crate::config::RankingKind::Mad => RankingMethod::Mad,
            crate::config::RankingKind::BradleyTerry => RankingMethod::BradleyTerry,
        }
    }
}

impl std::str::FromStr for RankingMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mad" => Ok(RankingMethod::Mad),
            "bradley-terry" => Ok(RankingMethod::BradleyTerry),
            _ => Err(Error::setting(
                "ranking",
                format!("{s:?}"),
                "mad or bradley-terry",
            )),
        }
    }
}
