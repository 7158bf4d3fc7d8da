//! Global rankings from pairwise results: the win matrix of a tournament
//! ([`crate::tournament`]), MAD competition's power-iteration ranking,
//! Bradley–Terry maximum likelihood with standard errors, and Spearman's
//! rank correlation with ties.
//!
//! Pure arithmetic on counts, in f64: no tensors.
//!
//! `wins[i][j]` counts the samples on which model i was right and model j
//! wrong, over the MDS sets searched for the pairs (i, j) and (j, i).
//!
//! ## MAD's power iteration
//!
//! MAD competition (Wang et al., ICLR 2020) aggregates the pairwise results
//! as its code does, in VITA-Group/MAD `global_ranking.py`
//! (`temp_rank_imgnet` and `power_iteration`, commit 34fed5b; the released
//! c53184b keeps `power_iteration`):
//!
//! ```text
//! B[i][i] = 1,   B[i][j] = A[i][j] / A[j][i],   B[j][i] = 1 / B[i][j]   (i < j)
//! b <- B b / ‖B b‖₂   (100 times, from a random start)
//! ```
//!
//! and ranks the models by the entries of b, largest first. B is a positive
//! reciprocal matrix, so its principal eigenvector is positive and unique
//! (Perron–Frobenius) and power iteration reaches it from any positive
//! start; gevaldi starts from the uniform vector (no randomness) and
//! iterates until b moves by less than 1e-14 (at most 10,000 times), so the
//! scores are MAD's converged ones. Where MAD divides by zero (a pair with
//! a count of 0: its B is infinite, or 0/0 = NaN), gevaldi adds 0.5 to both
//! counts of that pair first (the Haldane–Anscombe correction): one-sided
//! wins give a large finite ratio, no comparisons at all give 1.
//!
//! ## Bradley–Terry
//!
//! P(i beats j) = σ(θ_i − θ_j), θ fitted by maximum likelihood under
//! Σ θ_i = 0 (Newton's method with a backtracking line search on the concave
//! log-likelihood). The MLE exists exactly when the directed graph "i beat j
//! at least once" is strongly connected (Zermelo; Hunter 2004). When it is
//! not (a model never wins, a model never loses, a group of models never
//! beats the rest, or all samples are ties) the θ of such models would run
//! to ±∞; gevaldi then adds 0.5 wins to every ordered pair (one virtual
//! drawn game per pair), which makes every estimate finite, and says so in
//! [`BradleyTerry::pseudo_wins`]. The standard errors are the square roots
//! of the diagonal of the covariance, the Moore–Penrose pseudo-inverse of
//! the Fisher information (observed and expected information coincide for
//! this logistic model), which is the covariance of the sum-to-zero
//! estimates.
//!
//! ## Spearman
//!
//! [`spearman()`]: Pearson's correlation of the average ranks (ties share
//! the mean of the ranks they span), as `scipy.stats.spearmanr` computes it.
//! MAD's `SRCC()` passes spearmanr the two rankings as lists of model
//! indices, in rank order, which correlates positions with indices; gevaldi
//! correlates per-model scores with per-model accuracies instead.
//!
//! ## Equal within rounding
//!
//! Scores that are equal in exact arithmetic (the models of a symmetric
//! cycle, or of a tournament where no sample decided anything) come out of
//! the iterations a few ulps apart. [`score_levels`] is the one definition
//! of equal within rounding ([`SCORE_TOLERANCE`]) that the orders
//! ([`order_by_score`]), the SRCC ([`spearman_of_scores`]) and the rank
//! thresholds of a tournament all read, so that the noise decides none of
//! them.

mod bradley_terry;
mod power;
mod spearman;
mod win_matrix;

pub use bradley_terry::{bradley_terry, strongly_connected, BradleyTerry, BT_PSEUDO_WINS};
pub use power::{mad_matrix, power_ranking, PowerRanking, MAD_ZERO_CORRECTION};
pub use spearman::{average_ranks, spearman, spearman_of_scores};
pub use win_matrix::{order_by_score, score_levels, WinMatrix, SCORE_TOLERANCE};
