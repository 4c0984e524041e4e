//! The seed's `ParallelStrategyExecutor`: named strategies on a bounded
//! number of threads, guarded by a shared breaker.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
// The work cursor and job cells are plain `std` types: they hand out jobs on
// real (scoped) threads and are not part of any protocol loom checks.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Breaker, BreakerError, CircuitBreaker};

/// What happened to one strategy in [`ParallelStrategyExecutor::execute`].
///
/// ```
/// use raceless::breaker::Outcome;
/// let o: Outcome<u32, String> = Outcome::Succeeded(7);
/// assert!(o.is_success());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome<T, E> {
    /// It ran and returned `Ok`; a success was recorded.
    Succeeded(T),
    /// It ran and returned `Err`; a failure was recorded.
    Failed(E),
    /// It panicked (caught, logged); a failure was recorded.
    Panicked(String),
    /// Its name was open, so it did not run; nothing was recorded.
    Skipped,
}

impl<T, E> Outcome<T, E> {
    /// Whether the strategy ran and succeeded.
    ///
    /// ```
    /// use raceless::breaker::Outcome;
    /// assert!(!Outcome::<(), ()>::Skipped.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded(_))
    }
}

/// Runs named strategies on up to `max_workers` scoped threads, skipping the
/// names its breaker holds open and recording every outcome in it (the
/// seed's `ParallelStrategyExecutor`, minus its race).
///
/// Generic over the [`Breaker`] it shares (default [`CircuitBreaker`]): the
/// breaker is exact under concurrency, so any number of threads may call
/// [`execute`](Self::execute) at once and every outcome is counted. A name
/// is checked ([`Breaker::admit`]) when a worker picks its strategy up, so a
/// half-open name runs its single trial.
///
/// ```
/// use raceless::breaker::{CircuitBreaker, Outcome, ParallelStrategyExecutor};
/// use std::sync::Arc;
///
/// let breaker = Arc::new(CircuitBreaker::new(1)?);
/// let executor = ParallelStrategyExecutor::new(breaker.clone(), 4)?;
/// let results = executor.execute(vec![
///     ("keyword", Box::new(|| Ok(1)) as Box<dyn FnOnce() -> Result<i32, String> + Send>),
///     ("vector", Box::new(|| Err("timeout".to_string()))),
/// ]);
/// assert_eq!(results[0], ("keyword", Outcome::Succeeded(1)));
/// assert_eq!(results[1].1, Outcome::Failed("timeout".into()));
/// assert!(breaker.is_open("vector"));
///
/// // The next run skips the open strategy.
/// let results = executor.execute(vec![("vector", || Ok::<i32, String>(2))]);
/// assert_eq!(results[0].1, Outcome::Skipped);
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
pub struct ParallelStrategyExecutor<B: Breaker = CircuitBreaker> {
    breaker: std::sync::Arc<B>,
    max_workers: usize,
}

impl<B: Breaker> fmt::Debug for ParallelStrategyExecutor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelStrategyExecutor")
            .field("max_workers", &self.max_workers)
            .finish_non_exhaustive()
    }
}

impl<B: Breaker> ParallelStrategyExecutor<B> {
    /// An executor sharing `breaker`, running at most `max_workers`
    /// strategies at once (the seed used 4); 0 is
    /// [`BreakerError::ZeroWorkers`].
    ///
    /// ```
    /// use raceless::breaker::{BreakerError, CircuitBreaker, ParallelStrategyExecutor};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(3)?);
    /// assert!(ParallelStrategyExecutor::new(breaker.clone(), 4).is_ok());
    /// assert_eq!(
    ///     ParallelStrategyExecutor::new(breaker, 0).unwrap_err(),
    ///     BreakerError::ZeroWorkers
    /// );
    /// # Ok::<(), BreakerError>(())
    /// ```
    pub fn new(breaker: std::sync::Arc<B>, max_workers: usize) -> Result<Self, BreakerError> {
        if max_workers == 0 {
            return Err(BreakerError::ZeroWorkers);
        }
        Ok(Self {
            breaker,
            max_workers,
        })
    }

    /// The shared breaker.
    ///
    /// ```
    /// # use raceless::breaker::{CircuitBreaker, ParallelStrategyExecutor};
    /// # use std::sync::Arc;
    /// let executor = ParallelStrategyExecutor::new(Arc::new(CircuitBreaker::new(3)?), 2)?;
    /// assert_eq!(executor.breaker().failure_threshold(), 3);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn breaker(&self) -> &B {
        &self.breaker
    }

    /// The most strategies run at once.
    ///
    /// ```
    /// # use raceless::breaker::{CircuitBreaker, ParallelStrategyExecutor};
    /// # use std::sync::Arc;
    /// let executor = ParallelStrategyExecutor::new(Arc::new(CircuitBreaker::new(3)?), 2)?;
    /// assert_eq!(executor.max_workers(), 2);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// Runs every `(name, strategy)` whose name the breaker admits, on
    /// `min(max_workers, strategies)` scoped threads (workers take the next
    /// strategy as they free up), records each outcome, and returns them in
    /// input order. A panicking strategy is caught: a failure, not a crash.
    ///
    /// ```
    /// use raceless::breaker::{CircuitBreaker, Outcome, ParallelStrategyExecutor};
    /// use std::sync::Arc;
    ///
    /// let executor = ParallelStrategyExecutor::new(Arc::new(CircuitBreaker::new(3)?), 2)?;
    /// let results = executor.execute((0..4).map(|i| {
    ///     (format!("s{i}"), move || if i == 2 { panic!("boom") } else { Ok::<_, ()>(i) })
    /// }).collect());
    /// assert!(matches!(results[2].1, Outcome::Panicked(_)));
    /// assert_eq!(executor.breaker().failures("s2"), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn execute<N, F, T, E>(&self, strategies: Vec<(N, F)>) -> Vec<(N, Outcome<T, E>)>
    where
        N: AsRef<str> + Send + Sync,
        F: FnOnce() -> Result<T, E> + Send,
        T: Send,
        E: Send,
    {
        let count = strategies.len();
        let (names, jobs): (Vec<N>, Vec<Mutex<Option<F>>>) = strategies
            .into_iter()
            .map(|(name, f)| (name, Mutex::new(Some(f))))
            .unzip();
        let next = AtomicUsize::new(0);
        let worker = || {
            let mut done = Vec::new();
            loop {
                // Each index is handed out once, so each job cell is locked
                // once, by one worker: the mutex only moves the FnOnce out.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return done;
                }
                let job = jobs[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(job) = job {
                    done.push((i, self.run_one(names[i].as_ref(), job)));
                }
            }
        };
        let workers = self.max_workers.min(count);
        let mut results: Vec<(usize, Outcome<T, E>)> = if workers <= 1 {
            worker()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers).map(|_| s.spawn(worker)).collect();
                handles
                    .into_iter()
                    // Workers catch strategy panics, so a join error would
                    // be a bug in this function: re-raise it.
                    .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        results.sort_by_key(|(i, _)| *i);
        names
            .into_iter()
            .zip(results)
            .map(|(name, (_, outcome))| (name, outcome))
            .collect()
    }

    fn run_one<T, E>(&self, name: &str, job: impl FnOnce() -> Result<T, E>) -> Outcome<T, E> {
        if !self.breaker.admit(name) {
            return Outcome::Skipped;
        }
        match catch_unwind(AssertUnwindSafe(job)) {
            Ok(Ok(value)) => {
                self.breaker.record_success(name);
                Outcome::Succeeded(value)
            }
            Ok(Err(error)) => {
                self.breaker.record_failure(name);
                Outcome::Failed(error)
            }
            Err(panic) => {
                self.breaker.record_failure(name);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_string());
                tracing::warn!(strategy = name, %message, "strategy panicked; recorded as a failure");
                Outcome::Panicked(message)
            }
        }
    }
}
