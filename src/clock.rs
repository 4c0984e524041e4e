//! Injectable time.
//!
//! Every component that expires or cools down asks a [`Clock`] for the time
//! instead of calling [`SystemTime::now`] itself, so tests move time with a
//! [`ManualClock`] and never sleep.
//!
//! ```
//! use raceless::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let shared = clock.clone(); // clones share one time
//! let before = clock.now();
//! shared.advance(Duration::from_secs(90));
//! assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(90));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
///
/// A component may read its clock while it holds one of its own short
/// internal locks (the arc engine stamps a new arc in the same step that
/// claims its pair, under that pair's shard lock, so that a start of a
/// taken pair reads no clock at all). An implementation must therefore be
/// cheap and must not call back into the component; [`SystemClock`] and
/// [`ManualClock`] are both.
///
/// ```
/// use raceless::clock::{Clock, SystemClock};
/// let now = SystemClock.now();
/// assert!(now > std::time::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock: [`SystemTime::now`]. The default everywhere.
///
/// ```
/// use raceless::clock::{Clock, SystemClock};
/// let a = SystemClock.now();
/// let b = SystemClock.now();
/// assert!(b >= a || a.duration_since(b).is_ok());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share one time, so a test
/// keeps a clone and advances the clock a component was built with.
///
/// It starts at a fixed instant (2024-01-01T00:00:00Z), so runs are
/// reproducible. Reads and advances are single atomic operations, so the
/// clock may be shared by any number of threads.
///
/// ```
/// use raceless::clock::{Clock, ManualClock};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), ManualClock::start());
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), ManualClock::start() + Duration::from_millis(1500));
/// clock.set(UNIX_EPOCH);
/// assert_eq!(clock.now(), UNIX_EPOCH);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    /// Nanoseconds since the Unix epoch. `Relaxed` is enough everywhere: the
    /// clock publishes no other data, each access is one atomic operation,
    /// and tests order advances against the code under test by other means
    /// (joins, barriers).
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// The instant a new `ManualClock` shows: 2024-01-01T00:00:00Z.
    pub fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_067_200)
    }

    /// A clock standing at [`ManualClock::start`].
    pub fn new() -> Self {
        Self::at(Self::start())
    }

    /// A clock standing at `time` (times before the Unix epoch are clamped
    /// to it).
    pub fn at(time: SystemTime) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(to_nanos(time))),
        }
    }

    /// Moves the clock forward by `by` (saturating far in the future).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `time` (it may move backwards, as wall clocks do).
    pub fn set(&self, time: SystemTime) {
        self.nanos.store(to_nanos(time), Ordering::Relaxed);
    }
}

fn to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The clock a component holds: shared, dynamically chosen.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The default clock of every component.
pub(crate) fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
