//! The tournament runner: every pair searched (every ordered pair; one
//! order of each under a symmetric divergence), in parallel where the
//! cores allow.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};
use crate::search::SearchConfig;

use super::outcome::{every_order, ordered_pairs, searched_pairs, TournamentOutcome};
use super::pair::{pair_name, run_pair, PairOutcome, PairSettings};

/// A tournament among N ≥ 3 classifiers over a class-conditional generator.
///
/// ```no_run
/// # fn main() -> gevaldi::Result<()> {
/// # use candle_core::Device;
/// # use gevaldi::zoo::{MnistMlp, MnistMlpConfig, MnistVae, MnistVaeConfig};
/// use gevaldi::tournament::Tournament;
/// use gevaldi::SearchConfig;
/// # let dev = Device::Cpu;
/// # let m = |s| MnistMlp::random(&MnistMlpConfig::default(), s, &dev);
/// # let (a, b, c) = (m(1)?, m(2)?, m(3)?);
/// # let cvae = MnistVae::random(&MnistVaeConfig::conditional(), 4, &dev)?;
/// let outcome = Tournament::new("cvae", &cvae)
///     .model("a", &a)
///     .model("b", &b)
///     .model("c", &c)
///     .config(SearchConfig::default().steps(50))
///     .samples(100)
///     .run(&dev)?;
/// println!("{:?}", outcome.ranking(Default::default()));
/// # Ok(()) }
/// ```
pub struct Tournament<'a> {
    generator_name: String,
    generator: &'a (dyn Generator + Sync),
    models: Vec<(String, &'a (dyn Classifier + Sync))>,
    settings: PairSettings,
    threads: Option<usize>,
    test_accuracy: Option<Vec<f64>>,
}

impl<'a> Tournament<'a> {
    /// A tournament over `generator` (class-conditional), with no models
    /// yet.
    pub fn new(name: impl Into<String>, generator: &'a (dyn Generator + Sync)) -> Self {
        Tournament {
            generator_name: name.into(),
            generator,
            models: Vec::new(),
            settings: PairSettings::default(),
            threads: None,
            test_accuracy: None,
        }
    }

    /// Adds a model.
    pub fn model(mut self, name: impl Into<String>, model: &'a (dyn Classifier + Sync)) -> Self {
        self.models.push((name.into(), model));
        self
    }

    /// The search's settings; its `seed` is the tournament's. (Default:
    /// [`SearchConfig::default`].)
    pub fn config(mut self, config: SearchConfig) -> Self {
        self.settings.config = config;
        self
    }

    /// MDS samples per ordered pair. (Default: `100`.)
    pub fn samples(mut self, samples: usize) -> Self {
        self.settings.samples = samples;
        self
    }

    /// Pairs run at once. (Default: the available cores on the CPU, 1 on
    /// a GPU, never more than the pairs.) The results do not depend on it.
    /// On a CUDA device pairs always run one at a time, whatever is asked:
    /// threads sharing candle 0.11's CUDA device run on CUDA streams that
    /// nothing orders, and hung this project's tests on an H200 (README,
    /// "On a GPU").
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Each model's accuracy on test data, in the order models were added,
    /// for the SRCC. (Default: none.)
    pub fn test_accuracy(mut self, accuracy: Vec<f64>) -> Self {
        self.test_accuracy = Some(accuracy);
        self
    }

    /// The models' names, in order.
    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The settings every pair shares.
    pub fn settings(&self) -> &PairSettings {
        &self.settings
    }

    /// The ordered pairs (i, j), i ≠ j, by i, then j.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        ordered_pairs(self.models.len())
    }

    /// The pairs searched: every ordered pair, or, under a divergence
    /// symmetric in its two models, one order of each ([`searched_pairs`]).
    pub fn searched_pairs(&self) -> Vec<(usize, usize)> {
        searched_pairs(self.models.len(), &self.settings.config.divergence)
    }

    /// Runs the ordered pair (models i, j) alone: the unit of a per-pair
    /// test. Its result is the same as within [`Tournament::run`] (under a
    /// divergence symmetric in its two models, with j before i, the search
    /// of (j, i), [`PairOutcome::mirrored`]).
    pub fn run_pair(
        &self,
        i: usize,
        j: usize,
        device: &Device,
        progress: &dyn Fn(u64, u64),
    ) -> Result<PairOutcome> {
        let (a, b) = match (self.models.get(i), self.models.get(j)) {
            (Some(a), Some(b)) if i != j => (a, b),
            _ => {
                return Err(Error::setting(
                    "tournament.pairs",
                    format!("({i}, {j})"),
                    format!("two different models of {}", self.models.len()),
                ))
            }
        };
        if j < i && self.settings.config.divergence.symmetric() {
            return Ok(self.run_pair(j, i, device, progress)?.mirrored());
        }
        run_pair(
            (&a.0, a.1),
            (&b.0, b.1),
            (&self.generator_name, self.generator),
            &self.settings,
            device,
            progress,
        )
    }

    fn check(&self) -> Result<()> {
        let names = self.model_names();
        if names.len() < 3 {
            return Err(Error::setting(
                "tournament.models",
                format!("{} models", names.len()),
                "at least 3",
            ));
        }
        if let Some(n) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            return Err(Error::setting(
                "tournament.models",
                format!("`{n}` twice"),
                "distinct names",
            ));
        }
        self.settings.config.validate()
    }

    /// Runs every pair searched ([`Tournament::searched_pairs`]; see
    /// [`Tournament::threads`]) and returns the outcomes of every ordered
    /// pair in [`Tournament::pairs`] order; the first error stops the pairs
    /// not yet started.
    pub fn run_pairs(
        &self,
        device: &Device,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Vec<PairOutcome>> {
        self.check()?;
        let pairs = self.searched_pairs();
        let threads = pair_threads(self.threads, device, pairs.len());
        let per_pair = (self
            .settings
            .samples
            .div_ceil(self.settings.config.batch.max(1))
            * self.settings.config.steps) as u64;
        let total = per_pair * pairs.len() as u64;
        let done = AtomicU64::new(0);
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(None::<(usize, Error)>);
        let slots: Vec<Mutex<Option<PairOutcome>>> =
            pairs.iter().map(|_| Mutex::new(None)).collect();
        let worker = || loop {
            let p = next.fetch_add(1, Ordering::SeqCst);
            if p >= pairs.len() || lock(&failed).is_some() {
                break;
            }
            let (i, j) = pairs[p];
            let last = AtomicU64::new(0);
            let report = |step: u64, _: u64| {
                let before = last.swap(step, Ordering::SeqCst);
                let now = done.fetch_add(step.saturating_sub(before), Ordering::SeqCst);
                progress(now + step.saturating_sub(before), total);
            };
            match self.run_pair(i, j, device, &report) {
                Ok(outcome) => *lock(&slots[p]) = Some(outcome),
                Err(e) => {
                    let mut f = lock(&failed);
                    // Keep the error of the earliest pair, whatever ran first.
                    if f.as_ref().is_none_or(|(q, _)| p < *q) {
                        *f = Some((p, e));
                    }
                }
            }
        };
        if threads == 1 {
            worker();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(worker);
                }
            });
        }
        if let Some((_, e)) = lock(&failed).take() {
            return Err(e);
        }
        let searched = slots
            .into_iter()
            .zip(&pairs)
            .map(|(slot, &(i, j))| {
                lock(&slot).take().ok_or_else(|| {
                    Error::setting(
                        "tournament.pairs",
                        format!(
                            "`{}` without a result",
                            pair_name(&self.models[i].0, &self.models[j].0)
                        ),
                        "every pair to have run",
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(every_order(
            self.models.len(),
            &self.settings.config.divergence,
            searched,
            PairOutcome::mirrored,
        ))
    }

    /// Runs the tournament: every pair ([`Tournament::run_pairs`]), then
    /// the win matrix, both rankings and the SRCC.
    pub fn run(&self, device: &Device) -> Result<TournamentOutcome> {
        self.run_with_progress(device, &|_, _| {})
    }

    /// [`Tournament::run`], calling `progress(done, total)` as ascent steps
    /// finish, counted over all pairs.
    pub fn run_with_progress(
        &self,
        device: &Device,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<TournamentOutcome> {
        let pairs = self.run_pairs(device, progress)?;
        TournamentOutcome::from_pairs(
            &self.model_names(),
            pairs.into_iter().map(|p| p.result).collect(),
            self.test_accuracy.clone(),
        )
    }
}

/// The available cores on the CPU; 1 on a GPU, whose kernels already fill
/// it (and whose candle device is shared by every thread).
pub fn default_threads(device: &Device) -> usize {
    if device.is_cpu() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

/// Pairs run at once: `asked` (else [`default_threads`]), at most `pairs`;
/// one on a CUDA device, whatever was asked (see [`Tournament::threads`]).
fn pair_threads(asked: Option<usize>, device: &Device, pairs: usize) -> usize {
    if device.is_cuda() {
        return 1;
    }
    asked
        .unwrap_or_else(|| default_threads(device))
        .clamp(1, pairs.max(1))
}

/// Locks a mutex, ignoring poisoning (a panicking pair panics the scope
/// anyway).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads sharing candle's CUDA device hung this project's tests on
    /// an H200; `Tournament::threads(4)` ran four pairs on one there.
    #[test]
    fn pairs_share_a_cuda_device_one_at_a_time() {
        assert_eq!(pair_threads(Some(4), &Device::Cpu, 6), 4);
        assert_eq!(pair_threads(Some(9), &Device::Cpu, 6), 6);
        assert_eq!(pair_threads(None, &Device::Cpu, 1), 1);
        // A CUDA device cannot be opened here; where one can, it runs
        // one pair at a time.
        if let Ok(cuda) = Device::new_cuda(0) {
            assert_eq!(pair_threads(Some(4), &cuda, 6), 1);
        }
    }
}
