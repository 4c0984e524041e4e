//! Mutex baselines: each component's state behind one lock, the seeds' own
//! fixes translated faithfully (feature `baselines`).
//!
//! Every baseline implements the same trait as its lock-free counterpart, so
//! tests and benchmarks run on both. A baseline is generic over the mutex
//! that guards it ([`MutexKind`]): [`StdMutex`] (the default, and the seeds'
//! `threading.Lock`) and, with the `parking_lot` feature, `ParkingLotMutex`.
//!
//! No user callback runs while a baseline holds its lock either: baselines
//! collect what must be reported and call out after unlocking, so they are
//! a fair, correct comparison rather than a strawman.
//!
//! ```
//! use raceless::baseline::{Lock, MutexKind, StdMutex};
//!
//! let counter = <StdMutex as MutexKind>::Mutex::new(0_u64);
//! counter.with(|n| *n += 1);
//! assert_eq!(counter.with(|n| *n), 1);
//! ```

/// A mutual-exclusion lock around a value, used through a closure so that a
/// guard can never escape.
pub trait Lock<T>: Send + Sync {
    /// A lock holding `value`.
    fn new(value: T) -> Self;
    /// Runs `f` with the lock held. A poisoned lock is recovered: baselines
    /// never run user code under their lock, so no invariant can be broken.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

/// A family of mutexes a baseline can be built on.
pub trait MutexKind: Send + Sync + 'static {
    /// A short name for reports and benchmark ids.
    const NAME: &'static str;
    /// The mutex type of this family.
    type Mutex<T: Send>: Lock<T>;
}

/// `std::sync::Mutex`: the default mutex of every baseline.
///
/// ```
/// use raceless::baseline::{MutexKind, StdMutex};
/// assert_eq!(StdMutex::NAME, "std-mutex");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StdMutex;

impl MutexKind for StdMutex {
    const NAME: &'static str = "std-mutex";
    type Mutex<T: Send> = std::sync::Mutex<T>;
}

impl<T: Send> Lock<T> for std::sync::Mutex<T> {
    fn new(value: T) -> Self {
        std::sync::Mutex::new(value)
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// `parking_lot::Mutex` (feature `parking_lot`): the fast-mutex flavour of
/// every baseline.
///
/// ```
/// # #[cfg(feature = "parking_lot")] {
/// use raceless::baseline::{MutexKind, ParkingLotMutex};
/// assert_eq!(ParkingLotMutex::NAME, "parking-lot");
/// # }
/// ```
#[cfg(feature = "parking_lot")]
#[cfg_attr(docsrs, doc(cfg(feature = "parking_lot")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ParkingLotMutex;

#[cfg(feature = "parking_lot")]
impl MutexKind for ParkingLotMutex {
    const NAME: &'static str = "parking-lot";
    type Mutex<T: Send> = parking_lot::Mutex<T>;
}

#[cfg(feature = "parking_lot")]
impl<T: Send> Lock<T> for parking_lot::Mutex<T> {
    fn new(value: T) -> Self {
        parking_lot::Mutex::new(value)
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

// One module per component baseline; each `pub use`s its type here.
// breaker
mod breaker;
pub use breaker::MutexBreaker;

// arcs
mod arcs;
pub use arcs::MutexArcEngine;
// bus
mod bus;
pub use bus::MutexBus;
// changeset
mod changeset;
pub use changeset::MutexChangesets;
// stream
mod stream;
pub use stream::MutexStreams;
// sharded-mutex baselines (a `parking_lot::Mutex` per key in a `DashMap`)
#[cfg(feature = "parking_lot")]
mod sharded;
#[cfg(feature = "parking_lot")]
pub use sharded::{ShardedArcEngine, ShardedBreaker, ShardedStreams};
