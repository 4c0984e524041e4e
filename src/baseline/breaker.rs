//! Mutex baseline of the `breaker` component: the seed's own fix.
//!
//! cleveragents #7088 fixed its race with one `threading.Lock` around the
//! `failures` dict and the `disabled` set; this is that fix, translated
//! faithfully: every operation — reads included — takes the one lock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use super::{Lock, MutexKind, StdMutex};
use crate::breaker::{Breaker, BreakerError};
use crate::sync::MapHasher;

/// The seed's state: the two collections the lock guards.
#[derive(Default)]
struct State {
    failures: HashMap<Box<str>, u32, MapHasher>,
    disabled: HashSet<Box<str>, MapHasher>,
    times_opened: HashMap<Box<str>, u64, MapHasher>,
}

/// The seed's breaker (`failures` dict + `disabled` set) behind one mutex
/// of kind `M` ([`StdMutex`] by default, `ParkingLotMutex` with the
/// `parking_lot` feature). Correct, and the yardstick
/// [`CircuitBreaker`](crate::breaker::CircuitBreaker) is measured against.
///
/// It uses the same hasher as the lock-free map (foldhash), so benchmarks
/// compare synchronization, not hash functions. It has no cool-down, events
/// or handles: it is the seed, not the extensions.
///
/// ```
/// use raceless::baseline::MutexBreaker;
/// use raceless::breaker::Breaker;
///
/// let breaker: MutexBreaker = MutexBreaker::new(2)?;
/// breaker.record_failure("db");
/// breaker.record_failure("db");
/// assert!(breaker.is_open("db"));
/// breaker.record_success("db");
/// assert!(!breaker.is_open("db"));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
pub struct MutexBreaker<M: MutexKind = StdMutex> {
    threshold: u32,
    state: M::Mutex<State>,
    kind: PhantomData<M>,
}

impl<M: MutexKind> fmt::Debug for MutexBreaker<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexBreaker")
            .field("mutex", &M::NAME)
            .field("failure_threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl<M: MutexKind> MutexBreaker<M> {
    /// A breaker opening a name after `failure_threshold` consecutive
    /// failures; 0 is [`BreakerError::ZeroThreshold`].
    ///
    /// ```
    /// use raceless::baseline::{MutexBreaker, StdMutex};
    /// assert!(MutexBreaker::<StdMutex>::new(0).is_err());
    /// ```
    pub fn new(failure_threshold: u32) -> Result<Self, BreakerError> {
        if failure_threshold == 0 {
            return Err(BreakerError::ZeroThreshold);
        }
        Ok(Self {
            threshold: failure_threshold,
            state: Lock::new(State::default()),
            kind: PhantomData,
        })
    }
}

impl<M: MutexKind> Breaker for MutexBreaker<M> {
    fn record_failure(&self, name: &str) {
        self.state.with(|s| {
            let count = match s.failures.get_mut(name) {
                Some(c) => {
                    *c = c.saturating_add(1);
                    *c
                }
                None => {
                    s.failures.insert(name.into(), 1);
                    1
                }
            };
            if count >= self.threshold && !s.disabled.contains(name) {
                s.disabled.insert(name.into());
                *s.times_opened.entry(name.into()).or_insert(0) += 1;
            }
        })
    }

    fn record_success(&self, name: &str) {
        self.state.with(|s| {
            match s.failures.get_mut(name) {
                Some(c) => *c = 0,
                None => {
                    s.failures.insert(name.into(), 0);
                }
            }
            s.disabled.remove(name);
        })
    }

    fn is_open(&self, name: &str) -> bool {
        self.state.with(|s| s.disabled.contains(name))
    }

    fn failures(&self, name: &str) -> u32 {
        self.state
            .with(|s| s.failures.get(name).copied().unwrap_or(0))
    }

    fn reset(&self, name: &str) {
        self.state.with(|s| {
            if let Some(c) = s.failures.get_mut(name) {
                *c = 0;
            }
            s.disabled.remove(name);
        })
    }

    fn reset_all(&self) {
        self.state.with(|s| {
            s.failures.clear();
            s.disabled.clear();
        })
    }

    fn times_opened(&self, name: &str) -> u64 {
        self.state
            .with(|s| s.times_opened.get(name).copied().unwrap_or(0))
    }
}
