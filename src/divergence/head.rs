//! The search's head: from the models' logits to the divergence per
//! sample, as one op of the search's graph with a backward of its own.
//!
//! With candle's graph, the log-softmaxes, the clamp at the floor and the
//! divergence are some 20 ops, and candle's backward makes a zero tensor
//! and a sum for each of their edges besides each op's own backward: about
//! 150 tensors a step for two models, each a launch on a GPU, all on
//! `[B, K]` tensors a few kilobytes large. Outside the graph the forward
//! is the same ops, untracked, and the backward is the closed form below,
//! some 20 ops.
//!
//! With lp_m = log_softmax(l_m), f_m = max(lp_m, floor), p_m = exp(f_m)
//! and G_m = ∂D/∂f_m per class:
//!
//! | divergence | G_1 | G_2 |
//! | --- | --- | --- |
//! | `kl` | p_1 ⊙ (f_1 − f_2) (+ p_1) | −p_1 |
//! | `reverse-kl` | −p_2 | p_2 ⊙ (f_2 − f_1) (+ p_2) |
//! | `jeffreys` | p_1 ⊙ (f_1 − f_2) − p_2 (+ p_1) | −p_2 ⊙ (f_1 − f_2) − p_1 (+ p_2) |
//! | `tv` | ½ sign(p_1 − p_2) ⊙ p_1 | −½ sign(p_1 − p_2) ⊙ p_2 |
//! | `js` | w_m p_m ⊙ (f_m − log p̄) (every m: the terms through p̄ cancel) | |
//!
//! Then, with the clamp's mask c_m = [lp_m ≥ floor] (its gradient, as
//! PyTorch's `clamp` has it: 1 at the floor itself) and the softmax's
//! Jacobian, ∂D/∂l_m = c_m ⊙ G_m − s_m Σ_k (c_m ⊙ G_m)_k, s_m =
//! exp(lp_m) (= p_m: where lp_m is below the floor both are 0, e^−10⁴
//! being 0 in f32 and f64), scaled per sample by the output's gradient.
//! A term p_m of G_m (in brackets) gives p_m − p_m Σ_k p_mk = 0 there, so
//! it is left out (with it, the sum's rounding, about 1e-7 of p_m).
//! `tv`'s sign is 0 where p_1 = p_2 (candle's `abs` takes +1 there); the
//! two differ only on classes where both models give the same
//! probability, where either is a subgradient.
//!
//! For two models' f32 logits the forward and the backward are one kernel
//! each (`head_forward`, `head_backward` of the engine's CUDA kernels, one
//! thread per sample, the same formulas): on a CUDA device under `auto`,
//! and on the CPU under `auto` through their CPU twins. Elsewhere
//! (`generic`, other dtypes, three models) the closed form runs on
//! candle's ops. Every path works out the log-probabilities and the
//! divergence in f64 from the logits and rounds them to the logits' dtype
//! last: in f32 the KL of two nearly agreeing models over 1000 classes
//! read 22 to 27% off.

use candle_core::{DType, Tensor, D};

use super::{clamped, js, js_weights, Divergence, LOG_PROB_FLOOR};
use crate::engine::{
    attach, head_backward, head_forward, search_kernels_apply, Engine, HeadKind, Pullback,
};
use crate::error::{Error, Result};

/// The divergence per sample and each model's log-probabilities.
#[doc(hidden)]
pub struct Head {
    /// `[B]`, tracked where the logits are.
    pub divergence: Tensor,
    /// `[B, K]` per model; outside candle's graph (not tracked) unless it
    /// runs the divergence itself.
    pub log_probs: Vec<Tensor>,
}

impl Divergence {
    /// The divergence per sample of the models' logits `[B, K]` each, and
    /// their log-probabilities (`log_softmax` over the classes). Where a
    /// logit is tracked the divergence joins candle's graph as one op
    /// whose backward is the closed form of the [module docs](self);
    /// candle's graph runs it under `GEVALDI_ENGINE=candle` and for more
    /// than 3 models. (Hidden: the search's, public for the benches.)
    #[doc(hidden)]
    pub fn of_logits(&self, logits: &[Tensor]) -> Result<Head> {
        self.check(logits.len())?;
        self.of_logits_unchecked(logits, Engine::current())
            .map_err(Error::tensor(format!(
                "compute the `{}` divergence",
                self.name()
            )))
    }

    fn of_logits_unchecked(&self, logits: &[Tensor], engine: Engine) -> candle_core::Result<Head> {
        let tracked = logits.iter().any(crate::engine::tracked);
        if let Some(kind) = self.kernel_kind(logits, engine) {
            return self.of_kernels(logits, kind, tracked);
        }
        // The forward in f64 from the logits, rounded to their dtype last,
        // as the head kernels do: in f32, ln Σ exp over a thousand
        // near-equal classes rounds by up to 2e-6, an error every
        // log-probability carries and the divergence of two nearly
        // agreeing models takes whole (a KL of 4e-6 nats read 22 to 27%
        // off).
        let dtype = logits[0].dtype();
        let wide = |l: &Tensor| -> candle_core::Result<Tensor> {
            if dtype.is_float() && dtype != DType::F64 {
                l.to_dtype(DType::F64)
            } else {
                Ok(l.clone())
            }
        };
        let narrow = |t: Tensor| t.to_dtype(dtype);
        if engine == Engine::Candle || !tracked || logits.len() > 3 {
            // Tracked, candle's graph differentiates the casts too.
            let log_probs = logits
                .iter()
                .map(|l| candle_nn::ops::log_softmax(&wide(l)?, D::Minus1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let divergence = narrow(self.compute_unchecked(&log_probs)?)?;
            return Ok(Head {
                divergence,
                log_probs: log_probs
                    .into_iter()
                    .map(narrow)
                    .collect::<candle_core::Result<_>>()?,
            });
        }
        let log_probs = logits
            .iter()
            .map(|l| candle_nn::ops::log_softmax(&wide(&l.detach())?, D::Minus1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let f = clamped(&log_probs)?;
        // The backward takes the output's gradient in the logits' dtype
        // and gives theirs, working in f64 between.
        let (divergence, back): (Tensor, Pullback) = match self {
            Divergence::Js { weights } => {
                let w = js_weights(weights.as_deref(), f.len());
                let (divergence, log_mix) = js(&f, &w)?;
                let lp = log_probs.clone();
                let back = move |u: &Tensor| {
                    let g = f
                        .iter()
                        .zip(&w)
                        .map(|(f, w)| {
                            let p = f.exp()?;
                            (&p * (f - &log_mix)?)?.affine(*w, 0.0)
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    through_softmax(&lp, &g, &u.to_dtype(DType::F64)?)?
                        .into_iter()
                        .map(|g| g.to_dtype(dtype))
                        .collect()
                };
                (divergence, Box::new(back))
            }
            _ => {
                let divergence = self.of_clamped(&f)?;
                let (d, lp) = (self.clone(), log_probs.clone());
                let back = move |u: &Tensor| {
                    let g = d.pair_grads(&f[0], &f[1])?;
                    through_softmax(&lp, &g, &u.to_dtype(DType::F64)?)?
                        .into_iter()
                        .map(|g| g.to_dtype(dtype))
                        .collect()
                };
                (divergence, Box::new(back))
            }
        };
        let divergence = narrow(divergence)?;
        let log_probs = log_probs
            .into_iter()
            .map(narrow)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let inputs: Vec<&Tensor> = logits.iter().collect();
        Ok(Head {
            divergence: attach(&inputs, divergence, back)?,
            log_probs,
        })
    }

    /// The kind of gevaldi's head kernels (`head_forward` of the engine's
    /// CUDA kernels) for this divergence of `logits`, where they run: two
    /// models' f32 logits, on a CUDA device under `auto` (or with
    /// `GEVALDI_CUDA_OPS_ON_CPU`, as the engine's CUDA ops do), and on the
    /// CPU under `auto` too, through their CPU twins (a loop per sample).
    fn kernel_kind(&self, logits: &[Tensor], engine: Engine) -> Option<HeadKind> {
        let [l1, l2] = logits else { return None };
        if l2.dtype() != DType::F32 || !search_kernels_apply(l1, engine) {
            return None;
        }
        Some(match self {
            Divergence::Kl => HeadKind::Kl,
            Divergence::ReverseKl => HeadKind::ReverseKl,
            Divergence::Jeffreys => HeadKind::Jeffreys,
            Divergence::Tv => HeadKind::Tv,
            Divergence::Js { .. } => HeadKind::Js,
        })
    }

    /// [`Self::of_logits`] on the head kernels: one launch forward and one
    /// backward. The log-probabilities and the divergence are views of
    /// the forward's one output, which the backward reads.
    fn of_kernels(
        &self,
        logits: &[Tensor],
        kind: HeadKind,
        tracked: bool,
    ) -> candle_core::Result<Head> {
        let (l1, l2) = (&logits[0], &logits[1]);
        let (b, k) = l1.dims2()?;
        let w = match self {
            Divergence::Js { weights } => js_weights(weights.as_deref(), 2),
            _ => vec![0.5; 2],
        };
        let w = Tensor::new(&[w[0] as f32, w[1] as f32], l1.device())?;
        let packed = head_forward(&l1.detach(), &l2.detach(), &w, kind)?;
        let divergence = packed.narrow(0, 0, b)?;
        let log_probs = vec![
            packed.narrow(0, b, b * k)?.reshape((b, k))?,
            packed.narrow(0, b + b * k, b * k)?.reshape((b, k))?,
        ];
        if !tracked {
            return Ok(Head {
                divergence,
                log_probs,
            });
        }
        let back = move |u: &Tensor| {
            let dl = head_backward(&packed, u, &w, kind)?;
            Ok(vec![dl.get(0)?, dl.get(1)?])
        };
        Ok(Head {
            divergence: attach(&[l1, l2], divergence, Box::new(back))?,
            log_probs,
        })
    }

    /// G_1 and G_2 of a divergence of two models, from their clamped
    /// log-probabilities (the table of the [module docs](self)).
    fn pair_grads(&self, f1: &Tensor, f2: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        Ok(match self {
            Divergence::Kl => {
                let p1 = f1.exp()?;
                vec![(&p1 * (f1 - f2)?)?, p1.neg()?]
            }
            Divergence::ReverseKl => {
                let p2 = f2.exp()?;
                vec![p2.neg()?, (&p2 * (f2 - f1)?)?]
            }
            Divergence::Jeffreys => {
                let (p1, p2) = (f1.exp()?, f2.exp()?);
                let dl = (f1 - f2)?;
                vec![((&p1 * &dl)? - &p2)?, ((&p2 * &dl)? + &p1)?.neg()?]
            }
            Divergence::Tv => {
                let (p1, p2) = (f1.exp()?, f2.exp()?);
                let sign = (&p1 - &p2)?.sign()?;
                vec![
                    (&sign * &p1)?.affine(0.5, 0.0)?,
                    (&sign * &p2)?.affine(-0.5, 0.0)?,
                ]
            }
            Divergence::Js { .. } => unreachable!("js has a backward of its own"),
        })
    }
}

/// ∂D/∂l_m from G_m = ∂D/∂f_m: through the clamp (c_m) and the softmax,
/// scaled per sample by `u` `[B]`.
fn through_softmax(
    log_probs: &[Tensor],
    g: &[Tensor],
    u: &Tensor,
) -> candle_core::Result<Vec<Tensor>> {
    let u = u.unsqueeze(1)?;
    log_probs
        .iter()
        .zip(g)
        .map(|(lp, g)| {
            let kept = lp.ge(LOG_PROB_FLOOR)?.to_dtype(g.dtype())?;
            let g = (g * kept)?.broadcast_mul(&u)?;
            let s = lp.exp()?;
            &g - s.broadcast_mul(&g.sum_keepdim(D::Minus1)?)?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::super::Divergence;
    use crate::engine::Engine;

    /// Logits `[b, k]` of spread `scale`, seeded.
    fn logits(b: usize, k: usize, seed: u64, scale: f64) -> Tensor {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f64> = (0..b * k)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, (b, k), &Device::Cpu).unwrap()
    }

    /// The divergence, the log-probabilities and each model's logits'
    /// gradient (of Σ_b u_b D_b) on `engine`.
    fn run(
        d: &Divergence,
        models: &[Tensor],
        engine: Engine,
    ) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let vars: Vec<Var> = models
            .iter()
            .map(|l| Var::from_tensor(l).unwrap())
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let head = d.of_logits_unchecked(&tensors, engine).unwrap();
        let b = models[0].dim(0).unwrap();
        let u = Tensor::arange(1.0, b as f64 + 1.0, &Device::Cpu)
            .unwrap()
            .to_dtype(models[0].dtype())
            .unwrap();
        let grads = (&head.divergence * &u)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let flat = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        (
            flat(&head.divergence),
            head.log_probs.iter().map(flat).collect(),
            vars.iter()
                .map(|v| flat(grads.get(v.as_tensor()).expect("a logit's gradient")))
                .collect(),
        )
    }

    /// Every divergence, `js` uniform and weighted.
    fn every_divergence() -> [Divergence; 6] {
        [
            Divergence::Kl,
            Divergence::ReverseKl,
            Divergence::Jeffreys,
            Divergence::Tv,
            Divergence::js(),
            Divergence::Js {
                weights: Some(vec![1.0, 3.0]),
            },
        ]
    }

    fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} against candle's graph's {y}"
            );
        }
    }

    /// The closed-form backward is candle's graph's gradient, for every
    /// divergence, with given JS weights and three models, and with
    /// log-probabilities below the floor (spread 3·10⁴: the clamped
    /// classes get no gradient, the others theirs); the forward is the
    /// same. Checked to fail with the clamp's mask dropped (the `kl` case
    /// with a clamped q: error ~1) and with `jeffreys`' −p_2 dropped.
    #[test]
    fn its_backward_is_candles_graphs() {
        let cases = every_divergence();
        for scale in [3.0, 3e4] {
            for d in &cases {
                let models = [logits(5, 7, 1, scale), logits(5, 7, 2, scale)];
                let (dv, lp, g) = run(d, &models, Engine::Auto);
                let (rdv, rlp, rg) = run(d, &models, Engine::Candle);
                let what = format!("{d} at spread {scale}");
                assert_close(&format!("{what}: divergence"), &dv, &rdv, 1e-12);
                for m in 0..2 {
                    assert_close(&format!("{what}: log p_{m}"), &lp[m], &rlp[m], 1e-12);
                    assert_close(&format!("{what}: ∂/∂l_{m}"), &g[m], &rg[m], 1e-9);
                }
            }
        }
        let three = [
            logits(4, 6, 3, 4.0),
            logits(4, 6, 4, 4.0),
            logits(4, 6, 5, 4.0),
        ];
        let js = Divergence::Js {
            weights: Some(vec![0.5, 0.2, 0.3]),
        };
        let (dv, _, g) = run(&js, &three, Engine::Auto);
        let (rdv, _, rg) = run(&js, &three, Engine::Candle);
        assert_close("js of three: divergence", &dv, &rdv, 1e-12);
        for m in 0..3 {
            assert_close(&format!("js of three: ∂/∂l_{m}"), &g[m], &rg[m], 1e-9);
        }
    }

    /// In f32, two models: the head kernels' CPU twins (`auto` on the
    /// CPU) and the closed form on candle's ops (`generic`) give candle's
    /// graph's divergence and gradients, for every divergence, weighted
    /// JS and clamped classes, to f32 rounding (the CUDA kernels
    /// themselves are held to naive loops by `tests/cuda_kernels.rs`).
    /// Checked to fail with the twin's `jeffreys` −p_2 dropped and with
    /// its clamp mask dropped.
    #[test]
    fn the_kernels_and_the_closed_form_in_f32_are_candles_graphs() {
        let cases = every_divergence();
        for scale in [3.0, 3e4] {
            for d in &cases {
                let models = [logits(6, 9, 3, scale), logits(6, 9, 4, scale)]
                    .map(|l| l.to_dtype(DType::F32).unwrap());
                let (rdv, rlp, rg) = run(d, &models, Engine::Candle);
                for engine in [Engine::Auto, Engine::Generic] {
                    let (dv, lp, g) = run(d, &models, engine);
                    let what = format!("{d} at spread {scale} on {}", engine.name());
                    // Divergences of 10⁴ nats at the wide spread: relative.
                    assert_close(&format!("{what}: divergence"), &dv, &rdv, 2e-5);
                    for m in 0..2 {
                        assert_close(&format!("{what}: log p_{m}"), &lp[m], &rlp[m], 2e-6);
                        let scale = rg[m].iter().fold(1f64, |a, v| a.max(v.abs()));
                        let rel: Vec<f64> = g[m].iter().map(|v| v / scale).collect();
                        let rrel: Vec<f64> = rg[m].iter().map(|v| v / scale).collect();
                        assert_close(&format!("{what}: ∂/∂l_{m}"), &rel, &rrel, 2e-5);
                    }
                }
            }
        }
    }

    /// Two models that nearly agree over 1000 classes (logits within
    /// ±0.15, 0.005 apart at most: KL about 4e-6 nats, as two random-weight
    /// SqueezeNets 1.1 fed one image at two sizes gave): on every path (the
    /// head kernels under `auto`, the closed form under `generic`, candle's
    /// graph under `candle`; f32 logits) every divergence is within 3e-8
    /// of f64's (relative to 1 + its size), its gradient within 5e-4 of
    /// f64's largest (the kernels' backward works in f32 from f32
    /// log-probabilities: 9e-5 measured; the others' in f64), and each
    /// model's probabilities sum to 1 within 1e-7.
    /// With ln Σ exp summed in f32 every log-probability carried its
    /// rounding, up to 2e-6, and the KL of such models read 27% high, their
    /// baseline's 35% low (the kernels until 2026-12-05; `generic` and
    /// `candle`, on candle's f32 `log_softmax`, after them the same day).
    #[test]
    fn nearly_agreeing_models_keep_their_divergence_over_a_thousand_classes() {
        let a = logits(4, 1000, 7, 0.15);
        let b = (&a + logits(4, 1000, 8, 0.005)).unwrap();
        let f32s = [&a, &b].map(|l| l.to_dtype(DType::F32).unwrap());
        // The f32 logits, exactly, in f64.
        let f64s = f32s.clone().map(|l| l.to_dtype(DType::F64).unwrap());
        for (d, engine) in every_divergence()
            .iter()
            .flat_map(|d| [Engine::Auto, Engine::Generic, Engine::Candle].map(|e| (d, e)))
        {
            let (dv, lp, grad) = run(d, &f32s, engine);
            let (rdv, _, rgrad) = run(d, &f64s, Engine::Candle);
            let what = format!("{d} of nearly agreeing models, {engine:?}");
            assert_close(&what, &dv, &rdv, 3e-8);
            for (g, r) in grad.iter().zip(&rgrad) {
                let scale = r.iter().fold(0f64, |m, v| m.max(v.abs()));
                let worst = g
                    .iter()
                    .zip(r)
                    .map(|(g, r)| (g - r).abs())
                    .fold(0f64, crate::test_support::nan_max);
                assert!(
                    worst <= 5e-4 * scale, // false for NaN
                    "{what}: gradient off by {worst} of {scale}"
                );
            }
            for (m, lp) in lp.iter().enumerate() {
                for (r, row) in lp.chunks(1000).enumerate() {
                    let total: f64 = row.iter().map(|v| v.exp()).sum();
                    assert!(
                        (total - 1.0).abs() <= 1e-7,
                        "{d}: model {m}'s probabilities of sample {r} sum to {total}"
                    );
                }
            }
        }
    }

    /// Three nearly agreeing models' JS (candle's ops on every path) is
    /// within 3e-8 of f64's, as two models' is.
    #[test]
    fn three_nearly_agreeing_models_keep_their_js() {
        let a = logits(4, 1000, 7, 0.15);
        let models = [
            a.clone(),
            (&a + logits(4, 1000, 8, 0.005)).unwrap(),
            (&a + logits(4, 1000, 9, 0.005)).unwrap(),
        ];
        let f32s = models.map(|l| l.to_dtype(DType::F32).unwrap());
        let f64s = f32s.clone().map(|l| l.to_dtype(DType::F64).unwrap());
        for engine in [Engine::Auto, Engine::Generic, Engine::Candle] {
            let (dv, _, _) = run(&Divergence::js(), &f32s, engine);
            let (rdv, _, _) = run(&Divergence::js(), &f64s, Engine::Candle);
            assert_close(&format!("js of 3, {engine:?}"), &dv, &rdv, 3e-8);
        }
    }

    /// Some classes clamped: the test above covers them only if the
    /// spread puts log-probabilities below the floor.
    #[test]
    fn the_wide_spread_reaches_the_floor() {
        let lp = candle_nn::ops::log_softmax(&logits(5, 7, 2, 3e4), 1).unwrap();
        let below = lp
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .filter(|v| **v < super::LOG_PROB_FLOOR)
            .count();
        assert!(below > 5, "{below} log-probabilities below the floor");
    }

    /// Untracked logits give the divergence with no op attached, and
    /// tracked ones one op in candle's graph.
    #[test]
    fn the_head_is_one_op_of_the_graph() {
        let models = [logits(3, 4, 1, 2.0), logits(3, 4, 2, 2.0)];
        let plain = Divergence::Kl
            .of_logits_unchecked(&models, Engine::Auto)
            .unwrap();
        assert!(!plain.divergence.track_op());
        let vars: Vec<Tensor> = models
            .iter()
            .map(|l| Var::from_tensor(l).unwrap().as_tensor().clone())
            .collect();
        let head = Divergence::Kl
            .of_logits_unchecked(&vars, Engine::Auto)
            .unwrap();
        assert!(head.divergence.track_op());
        assert!(head.log_probs.iter().all(|lp| !lp.track_op()));
        let graph = Divergence::Kl
            .of_logits_unchecked(&vars, Engine::Candle)
            .unwrap();
        assert!(graph.log_probs.iter().all(|lp| lp.track_op()));
    }
}
