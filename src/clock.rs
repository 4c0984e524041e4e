//! Injectable time.
//!
//! Every component that expires or cools down asks a [`Clock`] for the time
//! instead of calling [`SystemTime::now`] or [`Instant::now`] itself, so
//! tests move time with a [`ManualClock`] and never sleep.
//!
//! A clock gives two times:
//!
//! - [`Clock::now`], wall-clock time ([`SystemTime`]). It only appears in
//!   snapshots users read (when an arc started, when a stream started): it
//!   may jump backwards or forwards when the system clock is stepped (NTP,
//!   an operator), so nothing is *timed* with it.
//! - [`Clock::monotonic`], time elapsed since a fixed origin of the clock's
//!   own ([`Instant`] for [`SystemClock`]). It never goes backwards. Every
//!   cool-down, expiry and age in the crate runs on it.
//!
//! [`ManualClock::advance`] moves both; [`ManualClock::set`] steps only the
//! wall clock, as an NTP step does.
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
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
///
/// A component may read its clock while it holds one of its own short
/// internal locks (the arc engine stamps a new arc in the same step that
/// claims its pair, under that pair's shard lock, so that a start of a
/// taken pair reads no clock at all). An implementation must therefore be
/// cheap and must not call back into the component; [`SystemClock`] and
/// [`ManualClock`] are both.
///
/// An implementation that only overrides [`now`](Clock::now) gets the
/// process's monotonic clock from the default
/// [`monotonic`](Clock::monotonic); a test clock overrides both, so that
/// advancing it moves cool-downs and expiry too.
///
/// ```
/// use raceless::clock::{Clock, SystemClock};
/// let now = SystemClock.now();
/// assert!(now > std::time::UNIX_EPOCH);
/// let a = SystemClock.monotonic();
/// assert!(SystemClock.monotonic() >= a); // never backwards
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time (for snapshots users read).
    fn now(&self) -> SystemTime;

    /// Monotonic time: how long since this clock's fixed origin. Never
    /// decreases between two calls on the same clock. Cool-downs, expiry and
    /// ages are measured with it.
    ///
    /// The default is the process's monotonic clock ([`Instant`]), measured
    /// from the first time any clock in the process asked for it.
    fn monotonic(&self) -> Duration {
        process_monotonic()
    }
}

/// The process's monotonic clock, as a `Duration` since the first call.
fn process_monotonic() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// The operating system's clocks: [`SystemTime::now`] for the wall clock,
/// [`Instant`] for monotonic time. The default everywhere.
///
/// ```
/// use raceless::clock::{Clock, SystemClock};
/// let a = SystemClock.now();
/// let b = SystemClock.now();
/// assert!(b >= a || a.duration_since(b).is_ok());
/// let m = SystemClock.monotonic();
/// assert!(SystemClock.monotonic() >= m);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        process_monotonic()
    }
}

/// A clock that only moves when told to. Clones share one time, so a test
/// keeps a clone and advances the clock a component was built with.
///
/// Its wall clock starts at a fixed instant (2024-01-01T00:00:00Z) and its
/// monotonic clock at zero, so runs are reproducible.
/// [`advance`](Self::advance) moves both by the same amount;
/// [`set`](Self::set) steps the wall clock alone (as an NTP step does), so
/// tests can show that cool-downs and expiry ignore such steps. Reads and
/// advances are single atomic operations, so the clock may be shared by any
/// number of threads.
///
/// ```
/// use raceless::clock::{Clock, ManualClock};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), ManualClock::start());
/// assert_eq!(clock.monotonic(), Duration::ZERO);
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), ManualClock::start() + Duration::from_millis(1500));
/// assert_eq!(clock.monotonic(), Duration::from_millis(1500));
/// clock.set(UNIX_EPOCH); // a wall-clock step: monotonic time does not move
/// assert_eq!(clock.now(), UNIX_EPOCH);
/// assert_eq!(clock.monotonic(), Duration::from_millis(1500));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    /// Wall-clock nanoseconds since the Unix epoch. `Relaxed` is enough
    /// everywhere: the clock publishes no other data, each access is one
    /// atomic operation, and tests order advances against the code under
    /// test by other means (joins, barriers).
    nanos: Arc<AtomicU64>,
    /// Monotonic nanoseconds since the clock was made (same orderings).
    /// `advance` moves it after the wall clock, two separate atomic steps:
    /// a reader racing an advance may see one moved and not yet the other.
    mono: Arc<AtomicU64>,
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
            mono: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the wall clock and the monotonic clock forward by `by`
    /// (saturating far in the future).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        for time in [&self.nanos, &self.mono] {
            // fetch_update never fails with a closure that always returns Some.
            let _ = time.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
        }
    }

    /// Sets the wall clock to `time` (it may move backwards, as wall clocks
    /// do). Monotonic time does not move.
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
            .field("monotonic", &self.monotonic())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono.load(Ordering::Relaxed))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }

    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
}

/// The clock a component holds: shared, dynamically chosen.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The default clock of every component.
pub(crate) fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
