//! Tournaments: N classifiers ranked by who is right where they disagree,
//! after MAD competition (Wang et al., ICLR 2020), with the inputs
//! generated instead of selected and labelled by a class-conditional
//! generator's condition (as in the paper's appendix F).
//!
//! For each ordered pair (A, B) of N ≥ 3 models, [`run_pair`] searches K
//! maximally different samples between A and B (the search's divergence,
//! `kl` = KL(A ‖ B) by default) with conditions spread evenly over the
//! classes; on that MDS set each model's top class is checked against the
//! condition, and each sample is won by the model that is right where the
//! other is wrong ([`Winner`]). Summed over both orders, the wins make the
//! win matrix (under a divergence symmetric in the two models the two
//! orders are one search: it runs once, for the order in which the first
//! model comes first ([`searched_pairs`]), the other order is its mirror
//! ([`PairResult::mirrored`]), and its samples count once), from which [`crate::ranking`] computes MAD's power-iteration
//! ranking and the Bradley–Terry fit; with test accuracies, their Spearman
//! correlation (SRCC) with them ([`TournamentOutcome`]).
//!
//! Pairs are independent: each starts from the tournament's seed (the
//! same conditions and latents for every pair), so [`Tournament::run`] runs them
//! on several threads with the same result as one, and a harness can run
//! each pair as its own test and assemble the outcome from their results
//! ([`TournamentOutcome::from_pairs`]). [`TournamentThresholds`] says what
//! an outcome must show to pass.

mod outcome;
mod pair;
mod runner;
mod thresholds;

pub(crate) use outcome::every_order;
pub use outcome::{
    ordered_pairs, ranking_line, searched_pairs, Places, RankingMethod, TournamentOutcome,
};
#[cfg(test)]
pub(crate) use pair::pair_won_under;
pub use pair::{pair_name, run_pair, PairOutcome, PairResult, PairSettings, Winner};
pub use runner::{default_threads, Tournament};
pub use thresholds::{MinWinRate, TournamentThresholds};
