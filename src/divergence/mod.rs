//! Divergences between the predictive distributions of M classifiers,
//! computed per sample from log-probabilities.
//!
//! Every divergence takes M tensors of log-probabilities `[B, K]` (one per
//! model, e.g. `log_softmax` of the logits) and returns one value per sample,
//! `[B]`. With p_m = exp(log p_m) and sums over the K classes:
//!
//! | name | formula | models |
//! | --- | --- | --- |
//! | `kl` | KL(p_1 ‖ p_2) = Σ_k p_1k (log p_1k − log p_2k) | 2, ordered |
//! | `reverse-kl` | KL(p_2 ‖ p_1) | 2, ordered |
//! | `jeffreys` | KL(p_1 ‖ p_2) + KL(p_2 ‖ p_1) = Σ_k (p_1k − p_2k)(log p_1k − log p_2k) | 2 |
//! | `js` | Σ_m w_m KL(p_m ‖ p̄), p̄ = Σ_m w_m p_m (= H(p̄) − Σ_m w_m H(p_m)) | M ≥ 2 |
//! | `tv` | ½ Σ_k \|p_1k − p_2k\| | 2 |
//!
//! The weights w of `js` are uniform unless given; given weights are
//! normalised to sum to 1. Then 0 ≤ JS ≤ H(w), which is ln M for uniform
//! weights: 0 when all models agree, ln M when their supports are disjoint.
//!
//! # Numerical stability
//!
//! Everything is computed in log space: the mixture of `js` is
//! log p̄_k = logsumexp_m(log w_m + log p_mk), never the log of a sum of
//! probabilities. A probability that underflows to 0 contributes
//! 0 · (finite) = 0, so the results and their gradients stay finite.
//! Log-probabilities are first clamped below at [`LOG_PROB_FLOOR`] (−10⁴),
//! so a log-probability of −∞ (a class given probability exactly 0) counts as
//! e^−10⁴ rather than producing ∞ or NaN: KL(p ‖ q) for a q that rules out a
//! class p allows is then about 10⁴ · p_k nats, large and finite. The floor
//! caps KL and reverse KL at 10⁴ nats and Jeffreys at 2 · 10⁴, far beyond
//! what finite logits of a trained model give (it was −100, which capped KL
//! at 100 nats: logits [0, −300] against [−300, 0], KL 300, read 100, and
//! the search's gradient stopped there).

mod head;

use std::fmt;
use std::str::FromStr;

use candle_core::{Tensor, D};

use crate::config::DivergenceKind;
use crate::error::{Error, Result};

/// Log-probabilities below this are clamped to it before any divergence is
/// computed (see the [module docs](self)); a `max_divergence` at or above
/// the ceiling it sets is refused when the config is read.
pub const LOG_PROB_FLOOR: f64 = crate::config::LOG_PROB_FLOOR;

/// A divergence between the predictive distributions of the models of one
/// search. See the [module docs](self) for the formulas.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Divergence {
    /// KL(p_1 ‖ p_2): directed, so the order of the two models matters.
    Kl,
    /// KL(p_2 ‖ p_1).
    ReverseKl,
    /// Symmetric KL: KL(p_1 ‖ p_2) + KL(p_2 ‖ p_1).
    Jeffreys,
    /// Generalised Jensen-Shannon divergence of M ≥ 2 models.
    Js {
        /// Positive weights, one per model; uniform when `None`.
        weights: Option<Vec<f64>>,
    },
    /// Total variation distance: ½ Σ_k |p_1k − p_2k|.
    Tv,
}

impl From<DivergenceKind> for Divergence {
    /// The divergence a config names (`js` with uniform weights).
    fn from(kind: DivergenceKind) -> Self {
        match kind {
            DivergenceKind::Kl => Divergence::Kl,
            DivergenceKind::ReverseKl => Divergence::ReverseKl,
            DivergenceKind::Jeffreys => Divergence::Jeffreys,
            DivergenceKind::Js => Divergence::js(),
            DivergenceKind::Tv => Divergence::Tv,
        }
    }
}

impl Divergence {
    /// The Jensen-Shannon divergence with uniform weights.
    pub fn js() -> Self {
        Divergence::Js { weights: None }
    }

    /// The name, as [`FromStr`] takes it: `kl`, `reverse-kl`, `jeffreys`,
    /// `js` or `tv`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Its name in a config.
    pub fn kind(&self) -> DivergenceKind {
        match self {
            Divergence::Kl => DivergenceKind::Kl,
            Divergence::ReverseKl => DivergenceKind::ReverseKl,
            Divergence::Jeffreys => DivergenceKind::Jeffreys,
            Divergence::Js { .. } => DivergenceKind::Js,
            Divergence::Tv => DivergenceKind::Tv,
        }
    }

    /// Whether swapping the two models of a pair leaves it unchanged:
    /// `jeffreys`, `tv` and `js` with uniform weights (not `kl`,
    /// `reverse-kl`, or `js` with weights of their own).
    pub(crate) fn symmetric(&self) -> bool {
        matches!(
            self,
            Divergence::Jeffreys | Divergence::Tv | Divergence::Js { weights: None }
        )
    }

    /// Checks that the divergence is defined for `models` models (and, for
    /// `js`, that its weights fit them).
    pub fn check(&self, models: usize) -> Result<()> {
        let arity = self.kind().arity();
        if !arity.accepts(models) {
            return Err(Error::DivergenceArity {
                divergence: self.kind(),
                expected: arity.describe().to_string(),
                got: models,
            });
        }
        match self {
            Divergence::Js { weights } => {
                if let Some(w) = weights {
                    if w.len() != models {
                        return Err(Error::setting(
                            "js.weights",
                            format!("{w:?}"),
                            format!("one weight per model ({models})"),
                        ));
                    }
                    if w.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                        return Err(Error::setting(
                            "js.weights",
                            format!("{w:?}"),
                            "finite weights > 0",
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The divergence per sample, `[B]`, of M log-probability tensors
    /// `[B, K]`. Differentiable with respect to its inputs.
    pub fn compute(&self, log_probs: &[Tensor]) -> Result<Tensor> {
        self.check(log_probs.len())?;
        self.compute_unchecked(log_probs)
            .map_err(Error::tensor(format!(
                "compute the `{}` divergence",
                self.name()
            )))
    }

    fn compute_unchecked(&self, log_probs: &[Tensor]) -> candle_core::Result<Tensor> {
        self.of_clamped(&clamped(log_probs)?)
    }

    /// The divergence of log-probabilities already clamped at the floor.
    fn of_clamped(&self, lp: &[Tensor]) -> candle_core::Result<Tensor> {
        match self {
            Divergence::Kl => kl(&lp[0], &lp[1]),
            Divergence::ReverseKl => kl(&lp[1], &lp[0]),
            Divergence::Jeffreys => {
                let diff_p = (lp[0].exp()? - lp[1].exp()?)?;
                let diff_lp = (&lp[0] - &lp[1])?;
                (diff_p * diff_lp)?.sum(D::Minus1)
            }
            Divergence::Tv => {
                let diff_p = (lp[0].exp()? - lp[1].exp()?)?;
                diff_p.abs()?.sum(D::Minus1)?.affine(0.5, 0.0)
            }
            Divergence::Js { weights } => Ok(js(lp, &js_weights(weights.as_deref(), lp.len()))?.0),
        }
    }
}

/// Log-probabilities clamped below at [`LOG_PROB_FLOOR`].
fn clamped(log_probs: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
    log_probs
        .iter()
        .map(|t| t.maximum(LOG_PROB_FLOOR))
        .collect()
}

/// The weights of `js` for `m` models: `given` normalised to sum to 1,
/// else uniform.
fn js_weights(given: Option<&[f64]>, m: usize) -> Vec<f64> {
    match given {
        Some(w) => {
            let total: f64 = w.iter().sum();
            w.iter().map(|w| w / total).collect()
        }
        None => vec![1.0 / m as f64; m],
    }
}

/// JS per row of clamped log-probabilities with weights `w`, and the log
/// of the mixture, log p̄.
fn js(lp: &[Tensor], w: &[f64]) -> candle_core::Result<(Tensor, Tensor)> {
    // log p̄ = m + log Σ_m w_m exp(log p_m − m), m the largest
    // log p_mk per class: the weights multiply after the exp
    // (not ln w added before it), so models that agree give
    // exp(0) = 1 each, Σ w = 1 and log p̄ = log p exactly, and a
    // JS of exactly 0 (it was rounding noise of either sign,
    // ±7e-8, whose ratio made a lift).
    let max = Tensor::stack(lp, 0)?.max_keepdim(0)?.squeeze(0)?;
    let mut mix: Option<Tensor> = None;
    for (lp, w) in lp.iter().zip(w) {
        let term = (lp - &max)?.exp()?.affine(*w, 0.0)?;
        mix = Some(match mix {
            None => term,
            Some(m) => (m + term)?,
        });
    }
    let log_mix = (mix.expect("js has at least 2 models").log()? + max)?;
    let mut total: Option<Tensor> = None;
    for (lp, w) in lp.iter().zip(w) {
        let term = kl(lp, &log_mix)?.affine(*w, 0.0)?;
        total = Some(match total {
            None => term,
            Some(t) => (t + term)?,
        });
    }
    Ok((total.expect("js has at least 2 models"), log_mix))
}

/// KL(p ‖ q) per row, from clamped log-probabilities.
fn kl(lp: &Tensor, lq: &Tensor) -> candle_core::Result<Tensor> {
    (lp.exp()? * (lp - lq)?)?.sum(D::Minus1)
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Divergence {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DivergenceKind::from_name(s)
            .map(Divergence::from)
            .ok_or_else(|| {
                Error::setting(
                    "divergence",
                    format!("{s:?}"),
                    format!("one of {}", DivergenceKind::NAMES.join(", ")),
                )
            })
    }
}

/// Written as its name, `"kl"`, `"js"`, …, as records always held it;
/// `js` with weights of its own (which only the library's API gives) as
/// `{"js": {"weights": [..]}}`, so that a record tells it from uniform
/// `js` (the one is symmetric in two models, the other not).
impl serde::Serialize for Divergence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Divergence::Js {
                weights: Some(weights),
            } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    self.name(),
                    &JsWeights {
                        weights: Some(weights.clone()),
                    },
                )?;
                map.end()
            }
            _ => s.serialize_str(self.name()),
        }
    }
}

/// The weights of a `js` written as a map.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsWeights {
    weights: Option<Vec<f64>>,
}

/// Read from what [`Serialize`](serde::Serialize) writes; an unknown name
/// is an error naming the known ones.
impl<'de> serde::Deserialize<'de> for Divergence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Divergence;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "one of {}, or {{\"js\": {{\"weights\": [..]}}}}",
                    DivergenceKind::NAMES.join(", ")
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Divergence, E> {
                DivergenceKind::from_name(v)
                    .map(Divergence::from)
                    .ok_or_else(|| E::unknown_variant(v, DivergenceKind::NAMES))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Divergence, A::Error> {
                use serde::de::Error as _;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::invalid_length(0, &self));
                };
                if key != DivergenceKind::Js.name() {
                    return Err(A::Error::unknown_variant(&key, &["js"]));
                }
                let JsWeights { weights } = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::invalid_length(2, &self));
                }
                Ok(Divergence::Js { weights })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn log_probs(rows: &[&[f64]]) -> Tensor {
        let k = rows[0].len();
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().map(|p| p.ln())).collect();
        Tensor::from_vec(flat, (rows.len(), k), &Device::Cpu).unwrap()
    }

    fn eval(d: &Divergence, lps: &[Tensor]) -> Vec<f64> {
        d.compute(lps).unwrap().to_vec1::<f64>().unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
    }

    // Worked by hand: p = (1/2, 1/2), q = (1/4, 3/4).
    // KL(p‖q) = ½ ln 2 + ½ ln(2/3)             = ½ ln(4/3)
    // KL(q‖p) = ¼ ln(1/2) + ¾ ln(3/2)           = ¾ ln 3 − ln 2
    // JS: m = (3/8, 5/8); ½ KL(p‖m) + ½ KL(q‖m)
    //   KL(p‖m) = ½ ln(4/3) + ½ ln(4/5);  KL(q‖m) = ¼ ln(2/3) + ¾ ln(6/5)
    // TV = ½ (¼ + ¼) = ¼
    #[test]
    fn two_class_values_match_hand_calculations() {
        let p = log_probs(&[&[0.5, 0.5]]);
        let q = log_probs(&[&[0.25, 0.75]]);
        let pq = [p.clone(), q.clone()];
        let kl_pq = 0.5 * (4.0f64 / 3.0).ln();
        let kl_qp = 0.75 * 3f64.ln() - 2f64.ln();
        assert!(close(eval(&Divergence::Kl, &pq)[0], kl_pq));
        assert!(close(eval(&Divergence::ReverseKl, &pq)[0], kl_qp));
        assert!(close(eval(&Divergence::Jeffreys, &pq)[0], kl_pq + kl_qp));
        let js = 0.5 * (0.5 * (4.0f64 / 3.0).ln() + 0.5 * 0.8f64.ln())
            + 0.5 * (0.25 * (2.0f64 / 3.0).ln() + 0.75 * 1.2f64.ln());
        assert!(close(eval(&Divergence::js(), &pq)[0], js));
        assert!(close(eval(&Divergence::Tv, &pq)[0], 0.25));
    }

    // Three models, three classes, weights (1, 1, 2) normalised to
    // (¼, ¼, ½); checked against the entropy form H(p̄) − Σ w_m H(p_m).
    #[test]
    fn weighted_js_of_three_models_matches_entropy_form() {
        let rows: [[f64; 3]; 3] = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]];
        let w = [0.25, 0.25, 0.5];
        let h = |p: &[f64]| -p.iter().map(|p| p * p.ln()).sum::<f64>();
        let mix: Vec<f64> = (0..3)
            .map(|k| (0..3).map(|m| w[m] * rows[m][k]).sum())
            .collect();
        let expected = h(&mix) - (0..3).map(|m| w[m] * h(&rows[m])).sum::<f64>();
        let lps: Vec<Tensor> = rows.iter().map(|r| log_probs(&[r])).collect();
        let js = Divergence::Js {
            weights: Some(vec![1.0, 1.0, 2.0]),
        };
        assert!(close(eval(&js, &lps)[0], expected), "{expected}");
    }

    #[test]
    fn kl_is_nonnegative_and_zero_on_identical_inputs() {
        let p = log_probs(&[&[0.7, 0.2, 0.1], &[0.1, 0.1, 0.8], &[1e-30, 0.5, 0.5]]);
        let q = log_probs(&[&[0.2, 0.2, 0.6], &[0.3, 0.3, 0.4], &[0.4, 0.3, 0.3]]);
        for d in [Divergence::Kl, Divergence::ReverseKl, Divergence::Jeffreys] {
            assert!(eval(&d, &[p.clone(), q.clone()]).iter().all(|v| *v > 0.0));
            assert!(eval(&d, &[p.clone(), p.clone()]).iter().all(|v| *v == 0.0));
        }
    }

    #[test]
    fn js_is_symmetric_in_its_models() {
        let a = log_probs(&[&[0.7, 0.2, 0.1], &[0.3, 0.3, 0.4]]);
        let b = log_probs(&[&[0.2, 0.2, 0.6], &[0.9, 0.05, 0.05]]);
        let c = log_probs(&[&[0.1, 0.8, 0.1], &[0.2, 0.5, 0.3]]);
        let js = Divergence::js();
        let abc = eval(&js, &[a.clone(), b.clone(), c.clone()]);
        for perm in [[&b, &a, &c], [&c, &b, &a], [&b, &c, &a]] {
            let other = eval(&js, &perm.map(|t| t.clone()));
            for (x, y) in abc.iter().zip(&other) {
                assert!(close(*x, *y), "{x} vs {y}");
            }
        }
        let ab = eval(&js, &[a.clone(), b.clone()]);
        let ba = eval(&js, &[b, a]);
        assert_eq!(ab.len(), 2);
        for (x, y) in ab.iter().zip(&ba) {
            assert!(close(*x, *y));
        }
    }

    /// Regression: JS of models that agree was rounding noise of either
    /// sign (±7e-8 on f32 log-probabilities of 10 classes), and the
    /// search's lift the ratio of two such means. Now exactly 0, f32 and
    /// f64, 2 to 4 models, uniform weights.
    #[test]
    fn js_of_identical_models_is_exactly_zero() {
        let dev = Device::Cpu;
        let logits: Vec<f32> = (0..64 * 10)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        let logits = Tensor::from_vec(logits, (64, 10), &dev).unwrap();
        for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
            let lp = candle_nn::ops::log_softmax(&logits.to_dtype(dtype).unwrap(), 1).unwrap();
            for m in 2..=4usize {
                let v = Divergence::js()
                    .compute(&vec![lp.clone(); m])
                    .unwrap()
                    .to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                assert!(v.iter().all(|v| *v == 0.0), "{dtype:?} m={m}: {v:?}");
            }
        }
    }

    #[test]
    fn js_lies_between_zero_and_ln_m_with_both_equalities() {
        let js = Divergence::js();
        for m in 2..=4usize {
            // Equal distributions: JS = 0.
            let same = log_probs(&[&[0.1, 0.2, 0.3, 0.4]]);
            let v = eval(&js, &vec![same; m])[0];
            assert!(v.abs() < 1e-15, "m={m}: {v}");
            // Disjoint supports (model i puts all its mass on class i; the
            // other classes underflow to exactly 0): JS = ln M.
            let disjoint: Vec<Tensor> = (0..m)
                .map(|i| {
                    let row: Vec<f64> = (0..4).map(|k| if k == i { 1.0 } else { 0.0 }).collect();
                    log_probs(&[&row])
                })
                .collect();
            let v = eval(&js, &disjoint)[0];
            assert!(v.is_finite());
            assert!((v - (m as f64).ln()).abs() < 1e-12, "m={m}: {v}");
            // Anything in between.
            let mixed: Vec<Tensor> = (0..m)
                .map(|i| {
                    let mut row = vec![0.1; 4];
                    row[i] = 0.7;
                    log_probs(&[&row])
                })
                .collect();
            let v = eval(&js, &mixed)[0];
            assert!(v > 0.0 && v < (m as f64).ln());
        }
    }

    #[test]
    fn underflowed_probabilities_give_finite_values_and_gradients() {
        // Logits 1000 apart: log_softmax is finite, but exp underflows to 0,
        // and a hand-made −∞ log-probability is clamped.
        let dev = Device::Cpu;
        let logits = Var::new(&[[0f32, 1000.0, -1000.0], [5.0, 5.0, 5.0]], &dev).unwrap();
        let lp1 = candle_nn::ops::log_softmax(logits.as_tensor(), 1).unwrap();
        let lp2 = Tensor::new(
            &[
                [0f32, f32::NEG_INFINITY, f32::NEG_INFINITY],
                [-1.0, -2.0, -0.5],
            ],
            &dev,
        )
        .unwrap();
        for d in [
            Divergence::Kl,
            Divergence::ReverseKl,
            Divergence::Jeffreys,
            Divergence::js(),
            Divergence::Tv,
        ] {
            let out = d.compute(&[lp1.clone(), lp2.clone()]).unwrap();
            let values = out.to_vec1::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{d}: {values:?}");
            let grads = out.sum_all().unwrap().backward().unwrap();
            let g = grads
                .get(logits.as_tensor())
                .expect("gradient reaches the logits");
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{d}: {g:?}");
        }
        // KL where q rules out p's class: large, finite, −LOG_PROB_FLOOR.
        let kl = Divergence::Kl
            .compute(&[lp1, lp2])
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((kl[0] - 1e4).abs() < 1e-2, "{kl:?}");
    }

    /// Regression: log-probabilities were clamped at −100, which capped KL
    /// at 100 nats (and Jeffreys at 200) for finite logits: [0, −300]
    /// against [−300, 0] is KL 300, and read 100.
    #[test]
    fn confident_finite_logits_are_not_capped() {
        let dev = Device::Cpu;
        let lp = |row: [f64; 2]| {
            candle_nn::ops::log_softmax(&Tensor::new(&[row], &dev).unwrap(), 1).unwrap()
        };
        let (p, q) = (lp([0.0, -300.0]), lp([-300.0, 0.0]));
        for (d, want) in [
            (Divergence::Kl, 300.0),
            (Divergence::ReverseKl, 300.0),
            (Divergence::Jeffreys, 600.0),
        ] {
            let got = d
                .compute(&[p.clone(), q.clone()])
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            assert!((got[0] - want).abs() < 1e-9, "{d}: {got:?}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let base = [[0.3f64, -1.2, 0.5, 2.0], [1.0, 0.0, -0.5, 0.2]];
        let other = Tensor::new(&[[0.1f64, 0.4, -0.3, 0.0], [-1.0, 2.0, 0.5, 0.1]], &dev).unwrap();
        let lp_other = candle_nn::ops::log_softmax(&other, 1).unwrap();
        for d in [
            Divergence::Kl,
            Divergence::ReverseKl,
            Divergence::Jeffreys,
            Divergence::js(),
        ] {
            let f = |x: &Tensor| {
                let lp = candle_nn::ops::log_softmax(x, 1).unwrap();
                d.compute(&[lp, lp_other.clone()])
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            let x = Var::new(&base, &dev).unwrap();
            let g = f(x.as_tensor()).backward().unwrap();
            let g = g.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
            let h = 1e-6;
            for i in 0..2 {
                for j in 0..4 {
                    let mut plus = base;
                    plus[i][j] += h;
                    let mut minus = base;
                    minus[i][j] -= h;
                    let fp = f(&Tensor::new(&plus, &dev).unwrap())
                        .to_scalar::<f64>()
                        .unwrap();
                    let fm = f(&Tensor::new(&minus, &dev).unwrap())
                        .to_scalar::<f64>()
                        .unwrap();
                    let fd = (fp - fm) / (2.0 * h);
                    assert!(
                        (g[i][j] - fd).abs() < 1e-7,
                        "{d} [{i},{j}]: {} vs {fd}",
                        g[i][j]
                    );
                }
            }
        }
    }

    #[test]
    fn names_round_trip_and_arity_is_checked() {
        for name in DivergenceKind::ALL.iter().map(|d| d.name()) {
            assert_eq!(name.parse::<Divergence>().unwrap().name(), name);
        }
        let err = "kld".parse::<Divergence>().unwrap_err().to_string();
        assert!(
            err.contains("one of kl, reverse-kl, jeffreys, js, tv"),
            "{err}"
        );
        let lp = log_probs(&[&[0.5, 0.5]]);
        let err = Divergence::Kl
            .compute(&[lp.clone(), lp.clone(), lp.clone()])
            .unwrap_err();
        assert!(
            err.to_string().contains("compares exactly 2 models, but 3"),
            "{err}"
        );
        let err = Divergence::js()
            .compute(std::slice::from_ref(&lp))
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("compares 2 or more models, but 1 was given"),
            "{err}"
        );
        let bad = Divergence::Js {
            weights: Some(vec![1.0, -1.0]),
        };
        assert!(bad.compute(&[lp.clone(), lp]).is_err());
    }

    /// Records held the name alone (`"kl"`, `"js"`, …): they still read
    /// back, and a divergence without weights of its own is written so;
    /// a weighted `js` keeps its weights, and an unknown name is an error
    /// naming the known ones.
    #[test]
    fn a_divergence_serialises_as_its_name_and_weighted_js_with_its_weights() {
        for kind in DivergenceKind::ALL {
            let d = Divergence::from(*kind);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<Divergence>(&json).unwrap(), d);
        }
        let weighted = Divergence::Js {
            weights: Some(vec![1.0, 3.0]),
        };
        let json = serde_json::to_string(&weighted).unwrap();
        assert_eq!(json, r#"{"js":{"weights":[1.0,3.0]}}"#);
        let back: Divergence = serde_json::from_str(&json).unwrap();
        assert_eq!(back, weighted);
        assert!(!back.symmetric());
        assert!(serde_json::from_str::<Divergence>("\"js\"")
            .unwrap()
            .symmetric());
        let e = serde_json::from_str::<Divergence>("\"kld\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `kld`, expected one of `kl`"),
            "{e}"
        );
        for bad in [
            r#"{"kl":{"weights":[1.0]}}"#,
            r#"{"js":{"weights":[1.0],"extra":1}}"#,
            r#"{"js":{"weights":[1.0]},"tv":{}}"#,
            r#"{}"#,
            "3",
        ] {
            assert!(serde_json::from_str::<Divergence>(bad).is_err(), "{bad}");
        }
    }
}
