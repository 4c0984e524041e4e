//! Resolved handles and permits: the hot path, with no hashing and no map.

use std::fmt;

use crate::sync::{Arc, CachePadded};

use super::state::{Admission, Shared, Slot};
use super::{report, with_clock, NameMetrics, State};

type SlotRef = Arc<CachePadded<Slot>>;

/// A resolved handle to one name of a [`CircuitBreaker`](super::CircuitBreaker),
/// from [`CircuitBreaker::handle`](super::CircuitBreaker::handle).
///
/// Its operations are those of the breaker for that name, without hashing
/// the name or touching the map: [`is_open`](Self::is_open) on a closed name
/// is one `Acquire` load, and recording an outcome is one CAS on the name's
/// word. Clones share the name.
///
/// ```
/// use raceless::breaker::CircuitBreaker;
///
/// let breaker = CircuitBreaker::new(3)?;
/// let search = breaker.handle("search");
/// std::thread::scope(|s| {
///     for _ in 0..3 {
///         let search = search.clone();
///         s.spawn(move || search.record_failure());
///     }
/// });
/// assert!(search.is_open());
/// assert_eq!(search.name(), "search");
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Clone)]
pub struct BreakerHandle {
    slot: SlotRef,
    shared: Arc<Shared>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", &self.name())
            .field("state", &self.state())
            .field("failures", &self.failures())
            .finish()
    }
}

impl BreakerHandle {
    pub(super) fn new(slot: SlotRef, shared: Arc<Shared>) -> Self {
        Self { slot, shared }
    }

    /// The name this handle resolves.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// assert_eq!(CircuitBreaker::new(1)?.handle("").name(), "");
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// [`CircuitBreaker::record_failure`](super::CircuitBreaker::record_failure) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// h.record_failure();
    /// assert!(h.is_open());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn record_failure(&self) {
        record_failure(&self.slot, &self.shared);
    }

    /// [`CircuitBreaker::record_success`](super::CircuitBreaker::record_success) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// h.record_failure();
    /// h.record_success();
    /// assert!(!h.is_open());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn record_success(&self) {
        record_success(&self.slot, &self.shared);
    }

    /// [`CircuitBreaker::is_open`](super::CircuitBreaker::is_open) for this
    /// name: one `Acquire` load when closed, never a write.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// assert!(!CircuitBreaker::new(1)?.handle("db").is_open());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn is_open(&self) -> bool {
        self.slot.is_open(&self.shared)
    }

    /// [`CircuitBreaker::failures`](super::CircuitBreaker::failures) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(5)?.handle("db");
    /// h.record_failure();
    /// assert_eq!(h.failures(), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn failures(&self) -> u32 {
        self.slot.failures(&self.shared)
    }

    /// [`CircuitBreaker::state`](super::CircuitBreaker::state) for this name.
    ///
    /// ```
    /// use raceless::breaker::{CircuitBreaker, State};
    /// assert_eq!(CircuitBreaker::new(1)?.handle("db").state(), State::Closed);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn state(&self) -> State {
        self.slot.state(&self.shared)
    }

    /// [`CircuitBreaker::times_opened`](super::CircuitBreaker::times_opened) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// h.record_failure();
    /// assert_eq!(h.times_opened(), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn times_opened(&self) -> u64 {
        self.slot.times_opened()
    }

    /// [`CircuitBreaker::reset`](super::CircuitBreaker::reset) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// h.record_failure();
    /// h.reset();
    /// assert_eq!(h.failures(), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn reset(&self) {
        report(&self.shared, &self.slot, self.slot.close(&self.shared));
    }

    /// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// let permit = h.try_acquire().expect("closed: admitted");
    /// permit.failure();
    /// assert!(h.try_acquire().is_none()); // open, no cool-down configured
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn try_acquire(&self) -> Option<Permit> {
        acquire(&self.slot, &self.shared)
    }
}

#[inline]
fn record_failure(slot: &Slot, shared: &Shared) {
    let t = with_clock(shared, |now| slot.record_failure(shared, now));
    report(shared, slot, t);
}

#[inline]
fn record_success(slot: &Slot, shared: &Shared) {
    report(shared, slot, slot.record_success(shared));
}

pub(super) fn acquire(slot: &SlotRef, shared: &Arc<Shared>) -> Option<Permit> {
    let (admission, transition) = with_clock(shared, |now| slot.acquire(shared, now))?;
    report(shared, slot, transition);
    Some(Permit {
        slot: slot.clone(),
        shared: shared.clone(),
        admission,
        resolved: false,
    })
}

pub(super) fn metrics(slot: &Slot, shared: &Shared) -> NameMetrics {
    let word = slot.load(shared);
    let (successes, failures) = slot.totals();
    let totals = shared.track_totals;
    NameMetrics {
        name: slot.name.clone(),
        state: word.state(shared.threshold),
        consecutive_failures: word.count(),
        times_opened: slot.times_opened(),
        total_successes: totals.then_some(successes),
        total_failures: totals.then_some(failures),
    }
}

/// Permission to make one call on a name, from
/// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire).
/// Report the call's outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); they record exactly like
/// [`record_success`](super::CircuitBreaker::record_success) /
/// [`record_failure`](super::CircuitBreaker::record_failure) (so a trial's
/// success closes the name and its failure re-opens it and restarts the
/// cool-down).
///
/// **Dropped without an outcome** (a forgotten permit, or a panic in the
/// call): a *trial* permit counts as a failure — the probe is presumed lost,
/// the name re-opens and its cool-down restarts — so an abandoned trial can
/// never wedge a name half-open. An ordinary (closed-state) permit records
/// nothing: no call outcome was observed.
///
/// ```
/// use raceless::breaker::{CircuitBreaker, State};
/// use raceless::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder()
///     .failure_threshold(1)
///     .cool_down(Duration::from_secs(5))
///     .clock(clock.clone())
///     .build()?;
/// breaker.record_failure("db");
/// clock.advance(Duration::from_secs(5));
/// let trial = breaker.try_acquire("db").unwrap();
/// assert!(trial.is_trial());
/// drop(trial); // abandoned: counts as a failed trial
/// assert_eq!(breaker.state("db"), State::Open);
/// clock.advance(Duration::from_secs(5));
/// assert!(breaker.try_acquire("db").is_some()); // a new trial after a new cool-down
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit {
    slot: SlotRef,
    shared: Arc<Shared>,
    admission: Admission,
    resolved: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("name", &self.name())
            .field("trial", &self.is_trial())
            .finish()
    }
}

impl Permit {
    /// The name the permit is for.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let p = CircuitBreaker::new(1)?.try_acquire("db").unwrap();
    /// assert_eq!(p.name(), "db");
    /// p.success();
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// Whether this is the half-open trial permit (rather than an ordinary
    /// call on a closed name).
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let p = CircuitBreaker::new(1)?.try_acquire("db").unwrap();
    /// assert!(!p.is_trial());
    /// p.success();
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn is_trial(&self) -> bool {
        self.admission == Admission::Trial
    }

    /// The call succeeded: records a success (closes a half-open name).
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(2)?;
    /// breaker.record_failure("db");
    /// breaker.try_acquire("db").unwrap().success();
    /// assert_eq!(breaker.failures("db"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn success(mut self) {
        self.resolved = true;
        record_success(&self.slot, &self.shared);
    }

    /// The call failed: records a failure (re-opens a half-open name).
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.try_acquire("db").unwrap().failure();
    /// assert!(breaker.is_open("db"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn failure(mut self) {
        self.resolved = true;
        record_failure(&self.slot, &self.shared);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.resolved && self.admission == Admission::Trial {
            tracing::debug!(name = %self.slot.name, "trial permit dropped unresolved: failure");
            record_failure(&self.slot, &self.shared);
        }
    }
}
