//! The ranking arithmetic of tournaments against hand-computed cases and
//! reference values computed independently with numpy/scipy
//! (`tests/data/ranking_reference.py`: MAD's own `power_iteration` and
//! numpy's eigenvectors; scipy's BFGS on the Bradley–Terry likelihood and
//! finite-difference Hessians; `scipy.stats.spearmanr`).

use gevaldi::ranking::{
    average_ranks, bradley_terry, mad_matrix, power_ranking, score_levels, spearman,
    spearman_of_scores, strongly_connected, WinMatrix, BT_PSEUDO_WINS,
};

fn wins(rows: [[u64; 3]; 3]) -> WinMatrix {
    WinMatrix::new(rows.iter().map(|r| r.to_vec()).collect()).unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} != {w} (|diff| {:.2e} > {tol:.0e})",
            (g - w).abs()
        );
    }
}

/// Consistent ratios: 0 beats 1 4:2, 1 beats 2 6:3, 0 beats 2 8:2. MAD's
/// matrix B = [[1, 2, 4], [1/2, 1, 2], [1/4, 1/2, 1]] has rank one, B =
/// v wᵀ with v = (4, 2, 1), so B v = 3 v: the ranking is 0 > 1 > 2 with
/// scores (4, 2, 1)/√21 and eigenvalue N = 3. The Bradley–Terry MLE fits
/// every pair's share exactly when the shares are consistent (its score
/// equations hold pair by pair): π ∝ (4, 2, 1), θ = (ln 2, 0, −ln 2) after
/// centring.
#[test]
fn a_consistent_three_model_matrix_ranks_as_computed_by_hand() {
    let w = wins([[0, 4, 8], [2, 0, 6], [2, 3, 0]]);
    let (b, corrected) = mad_matrix(&w);
    assert_eq!(corrected, 0);
    assert_eq!(b[0], [1.0, 2.0, 4.0]);
    assert_eq!(b[2], [0.25, 0.5, 1.0]);
    let p = power_ranking(&w);
    let s = 21f64.sqrt();
    assert_close(
        &p.scores,
        &[4.0 / s, 2.0 / s, 1.0 / s],
        1e-13,
        "power scores",
    );
    assert!((p.eigenvalue - 3.0).abs() < 1e-12, "{}", p.eigenvalue);
    assert_eq!(p.order, [0, 1, 2]);

    let bt = bradley_terry(&w).unwrap();
    let ln2 = 2f64.ln();
    assert_close(&bt.theta, &[ln2, 0.0, -ln2], 1e-12, "bt theta");
    assert_eq!(bt.pseudo_wins, 0.0);
    assert_eq!(bt.order, [0, 1, 2]);
    // scipy: inverse finite-difference Hessian, carried to sum-to-zero.
    assert_close(
        &bt.se,
        &[0.389681736, 0.367675398, 0.352241504],
        1e-6,
        "bt se",
    );
}

/// A symmetric cycle (0 beats 1, 1 beats 2, 2 beats 0, a = 2 times each):
/// θ = 0 by symmetry, p = 1/2 on every pair, so the information is
/// (a/4)(3E − J) and its pseudo-inverse (4/3a)(E − J/3): Var θ_i = 8/(9a),
/// SE = 2/3 for a = 2; the SE of a difference is √(2·4/9 + 2·2/9) = √(4/3).
#[test]
fn a_symmetric_cycle_has_hand_computed_standard_errors() {
    let w = wins([[0, 2, 0], [0, 0, 2], [2, 0, 0]]);
    assert!(strongly_connected(&w));
    let bt = bradley_terry(&w).unwrap();
    assert_close(&bt.theta, &[0.0; 3], 1e-12, "theta");
    assert_close(&bt.se, &[2.0 / 3.0; 3], 1e-12, "se");
    assert!((bt.se_of_difference(0, 1) - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
    let p = power_ranking(&w);
    // Every pair has a zero count: B[i][j] = 2.5/0.5 = 5 around the cycle,
    // 1/5 against it; the cycle's symmetry gives equal scores.
    assert_eq!(p.corrected_pairs, 3);
    assert_close(&p.scores, &[1.0 / 3f64.sqrt(); 3], 1e-13, "power scores");
    assert_eq!(p.order, [0, 1, 2]);
}

/// The symmetric cycle's power scores are equal in exact arithmetic but
/// come out of the iteration with last-bit noise between them. The SRCC
/// sees the tie the order sees: undefined, whichever way the accuracies
/// run (the noise made it ±0.866 or 0).
#[test]
fn the_symmetric_cycles_scores_tie_for_the_srcc_too() {
    let w = wins([[0, 2, 0], [0, 0, 2], [2, 0, 0]]);
    let p = power_ranking(&w);
    assert_eq!(score_levels(&p.scores), [0, 0, 0], "{:?}", p.scores);
    let bt = bradley_terry(&w).unwrap();
    for acc in [
        [0.7, 0.8, 0.9],
        [0.7, 0.9, 0.8],
        [0.8, 0.7, 0.9],
        [0.8, 0.9, 0.7],
        [0.9, 0.7, 0.8],
        [0.9, 0.8, 0.7],
    ] {
        assert_eq!(
            spearman_of_scores(&p.scores, &acc).unwrap(),
            None,
            "{acc:?}"
        );
        assert_eq!(
            spearman_of_scores(&bt.theta, &acc).unwrap(),
            None,
            "{acc:?}"
        );
    }
    // Scores that differ (by more than rounding) still rank, ties as in
    // `spearman`, and a NaN is still refused.
    let r = spearman_of_scores(&[0.3, 0.1, 0.3 + 1e-15, 0.2], &[4.0, 1.0, 3.0, 2.0]);
    assert_eq!(
        r.unwrap(),
        spearman(&[2.0, 0.0, 2.0, 1.0], &[4.0, 1.0, 3.0, 2.0]).unwrap()
    );
    assert!(spearman_of_scores(&[f64::NAN, 1.0], &[1.0, 2.0]).is_err());
}

/// Inconsistent ratios (6:4, 8:2, 5:3): reference values from
/// tests/data/ranking_reference.py (MAD's power_iteration, 100 steps from a
/// seeded random start, equal to numpy's eigenvector to 1e-12).
#[test]
fn an_inconsistent_matrix_matches_mad_and_scipy() {
    let w = wins([[0, 6, 8], [4, 0, 5], [2, 3, 0]]);
    let p = power_ranking(&w);
    assert_close(
        &p.scores,
        &[0.842035579752068, 0.479953529207335, 0.24621269714014],
        1e-12,
        "power scores",
    );
    assert!((p.eigenvalue - 3.024595068623495).abs() < 1e-12);
    assert_eq!(p.order, [0, 1, 2]);
    let bt = bradley_terry(&w).unwrap();
    assert_close(
        &bt.theta,
        &[0.58012833246, 0.047458548043, -0.627586880502],
        1e-7,
        "bt theta",
    );
    assert_close(
        &bt.se,
        &[0.330271133, 0.329529272, 0.35333489],
        1e-6,
        "bt se",
    );
    // At the MLE each model's expected wins equal its wins.
    for i in 0..3 {
        let expected: f64 = (0..3)
            .filter(|&j| j != i)
            .map(|j| {
                let games = (w.get(i, j) + w.get(j, i)) as f64;
                games / (1.0 + (bt.theta[j] - bt.theta[i]).exp())
            })
            .sum();
        assert!(
            (expected - w.total_wins(i) as f64).abs() < 1e-9,
            "{i}: {expected}"
        );
    }
}

/// Model 2 never wins: MAD's B would be infinite against it (0 in the
/// denominator of B[j][2] = A[j][2]/A[2][j]), gevaldi adds 0.5 to both counts
/// of those pairs; the Bradley–Terry MLE would send θ_2 to −∞, gevaldi adds
/// 0.5 wins to every ordered pair. Reference: the same rules in numpy and
/// scipy.
#[test]
fn a_model_that_always_loses_gets_finite_scores() {
    let w = wins([[0, 5, 7], [3, 0, 6], [0, 0, 0]]);
    assert!(!strongly_connected(&w));
    let p = power_ranking(&w);
    assert_eq!(p.corrected_pairs, 2);
    assert_close(
        &p.scores,
        &[0.826618282567383, 0.560647475769446, 0.048750618854522],
        1e-12,
        "power scores",
    );
    assert_eq!(p.order, [0, 1, 2]);
    let bt = bradley_terry(&w).unwrap();
    assert_eq!(bt.pseudo_wins, BT_PSEUDO_WINS);
    assert_close(
        &bt.theta,
        &[1.092333013816, 0.670486736004, -1.76281974982],
        1e-7,
        "bt theta",
    );
    assert_close(
        &bt.se,
        &[0.482232483, 0.465177493, 0.691468537],
        1e-6,
        "bt se",
    );
    assert_eq!(bt.order, [0, 1, 2]);
}

/// Model 0 never loses: the mirror image, the same guarantees.
#[test]
fn a_model_that_never_loses_gets_finite_scores_and_ranks_first() {
    let w = wins([[0, 9, 9], [0, 0, 4], [0, 2, 0]]);
    let p = power_ranking(&w);
    let bt = bradley_terry(&w).unwrap();
    assert_eq!(p.order[0], 0);
    assert_eq!(bt.order, [0, 1, 2]);
    assert_eq!(bt.pseudo_wins, BT_PSEUDO_WINS);
    for v in p.scores.iter().chain(&bt.theta).chain(&bt.se) {
        assert!(v.is_finite(), "{p:?} {bt:?}");
    }
}

/// All ties: no sample decided any pair. Every model scores the same; the
/// rankings fall back to index order; nothing is NaN.
#[test]
fn all_ties_give_equal_finite_scores() {
    let w = WinMatrix::zeros(3);
    let p = power_ranking(&w);
    assert_eq!(p.corrected_pairs, 3);
    assert_close(&p.scores, &[1.0 / 3f64.sqrt(); 3], 1e-15, "power scores");
    assert!((p.eigenvalue - 3.0).abs() < 1e-12);
    assert_eq!(p.order, [0, 1, 2]);
    let bt = bradley_terry(&w).unwrap();
    assert_eq!(bt.theta, [0.0; 3]);
    assert_eq!(bt.order, [0, 1, 2]);
    // One virtual game per pair at p = 1/2: information (1/4)(3E − J),
    // Var θ_i = (4/3)(2/3) = 8/9.
    assert_close(&bt.se, &[(8.0f64 / 9.0).sqrt(); 3], 1e-12, "se");
    assert_eq!(spearman(&p.scores, &[0.9, 0.8, 0.7]).unwrap(), None);
}

/// Two models: θ_0 − θ_1 = ln(w01 / w10), and Var(θ_0 − θ_1) = 1/w01 +
/// 1/w10 (the logit of a binomial share); sum-to-zero halves both.
#[test]
fn two_models_reduce_to_a_binomial_log_odds() {
    let w = WinMatrix::new(vec![vec![0, 6], vec![2, 0]]).unwrap();
    let bt = bradley_terry(&w).unwrap();
    let d = 3f64.ln();
    assert_close(&bt.theta, &[d / 2.0, -d / 2.0], 1e-12, "theta");
    let var: f64 = 1.0 / 6.0 + 1.0 / 2.0;
    assert!((bt.se_of_difference(0, 1) - var.sqrt()).abs() < 1e-12);
    assert_close(&bt.se, &[var.sqrt() / 2.0; 2], 1e-12, "se");
    assert!(bradley_terry(&WinMatrix::zeros(1)).is_err());
}

#[test]
fn spearman_with_ties_matches_scipy() {
    let x = [0.98, 0.979, 0.915, 0.9105, 0.9075, 0.917, 0.912];
    let y = [3.0, 3.0, 1.0, 2.0, 0.5, 1.0, 2.5];
    let r = spearman(&x, &y).unwrap().unwrap();
    assert!((r - 0.6910233190806426).abs() < 1e-14, "{r}");
    let r = spearman(&[1.0, 2.0, 2.0, 3.0, 4.0], &[2.0, 2.0, 1.0, 4.0, 4.0])
        .unwrap()
        .unwrap();
    assert!((r - 0.7299963950884315).abs() < 1e-14, "{r}");
    assert_eq!(average_ranks(&[5.0, 1.0, 5.0, 3.0]), [3.5, 1.0, 3.5, 2.0]);
    // A perfect reversal.
    assert_eq!(
        spearman(&[1.0, 2.0, 3.0], &[9.0, 8.0, 7.0]).unwrap(),
        Some(-1.0)
    );
}

#[test]
fn spearman_refuses_nan_and_ragged_input() {
    assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
    assert_eq!(spearman(&[1.0], &[1.0]).unwrap(), None);
}

/// Five models, a strongly connected matrix (`W1`) and one where model 3
/// never wins (`W2`, with pairs of no games and one-sided pairs), against
/// `bench/ranking_reference.py`: Bradley–Terry by Hunter's MM iteration
/// (not Newton) with the standard errors of the Fisher information's
/// pseudo-inverse, MAD's scores as numpy's principal eigenvector of B.
/// Agreed when written to 1e-10.
#[test]
fn five_models_match_mm_and_numpy_eig() {
    type Case = ([[u64; 5]; 5], [f64; 5], [f64; 5], [f64; 5], f64, f64);
    let cases: [Case; 2] = [
        (
            [
                [0, 7, 3, 9, 4],
                [5, 0, 6, 2, 8],
                [6, 4, 0, 5, 1],
                [1, 7, 3, 0, 6],
                [2, 3, 8, 4, 0],
            ],
            [
                0.40596193381020856,
                0.014738750800958692,
                -0.1780658396413977,
                -0.12298774177832211,
                -0.11964710319144745,
            ],
            [
                0.27283389377366773,
                0.2490191947419106,
                0.26997647175218326,
                0.2657950367796353,
                0.26966237877735344,
            ],
            [
                0.6672972767283127,
                0.3439886303417823,
                0.31992066018828497,
                0.32364019716176795,
                0.4788464896314331,
            ],
            7.761602847254631,
            0.0,
        ),
        (
            [
                [0, 4, 0, 2, 5],
                [3, 0, 6, 0, 1],
                [0, 0, 0, 3, 2],
                [0, 0, 0, 0, 0],
                [1, 2, 4, 7, 0],
            ],
            [
                1.07831249325627,
                0.7401221517347909,
                -0.46881294434548104,
                -1.728550218080746,
                0.37892851743516615,
            ],
            [
                0.4531864096627107,
                0.42370728887834314,
                0.4359201705641452,
                0.6310778403287284,
                0.37173370939337136,
            ],
            [
                0.5910489213243335,
                0.5757452053945313,
                0.24211847528836472,
                0.11100598900888105,
                0.4982318189304537,
            ],
            7.862321615876419,
            BT_PSEUDO_WINS,
        ),
    ];
    for (rows, theta, se, scores, eigenvalue, pseudo) in cases {
        let w = WinMatrix::new(rows.iter().map(|r| r.to_vec()).collect()).unwrap();
        let bt = bradley_terry(&w).unwrap();
        assert_eq!(bt.pseudo_wins, pseudo);
        assert_close(&bt.theta, &theta, 1e-10, "bt theta");
        assert_close(&bt.se, &se, 1e-10, "bt se");
        let p = power_ranking(&w);
        assert_close(&p.scores, &scores, 1e-10, "power scores");
        assert!(
            (p.eigenvalue - eigenvalue).abs() < 1e-10,
            "{}",
            p.eigenvalue
        );
    }
}

/// `spearman` with ties on both sides, its negation, and n = 2, against
/// `scipy.stats.spearmanr` (`bench/ranking_reference.py`).
#[test]
fn spearman_with_ties_on_both_sides_matches_scipy() {
    let x = [0.91, 0.88, 0.88, 0.75, 0.91, 0.60, 0.88, 0.70];
    let y = [3.0, 1.0, 2.0, 2.0, 5.0, -1.0, 2.0, 0.0];
    let neg: Vec<f64> = y.iter().map(|v| -v).collect();
    let got = spearman(&x, &y).unwrap().unwrap();
    assert!((got - 0.8930994246322642).abs() < 1e-14, "{got}");
    let got = spearman(&x, &neg).unwrap().unwrap();
    assert!((got + 0.8930994246322642).abs() < 1e-14, "{got}");
    let got = spearman(&[1.0, 2.0], &[5.0, 3.0]).unwrap().unwrap();
    assert!((got + 1.0).abs() < 1e-14, "{got}");
    // Scores for the SRCC: the same, distinct scores being their own levels.
    let got = spearman_of_scores(&x, &y).unwrap().unwrap();
    assert!((got - 0.8930994246322642).abs() < 1e-14, "{got}");
}
