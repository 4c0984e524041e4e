//! A per-name circuit breaker whose counting cannot race (seed:
//! cleveragents #7088).
//!
//! The seed kept `failures: dict[str, int]` and `disabled: set[str]` and
//! updated them with a read-then-write (`count = failures.get(name, 0) + 1;
//! failures[name] = count`), so concurrent failures lost increments and a
//! name that should have opened never did. Its fix put one lock around both;
//! that fix is [`baseline::MutexBreaker`](crate::baseline::MutexBreaker).
//!
//! [`CircuitBreaker`] keeps each name's state in **one atomic word**
//! (consecutive failures, a trial bit and a generation), so:
//!
//! - no increment is lost (every failure is one compare-and-swap);
//! - the count reaching the threshold *is* the name opening — one CAS — so no
//!   observer sees the count at or past the threshold on a closed name, and
//!   the opening is reported (event, [`times_opened`](CircuitBreaker::times_opened))
//!   exactly once;
//! - [`reset_all`](CircuitBreaker::reset_all) is one `fetch_add` on a global
//!   generation: O(1) and linearizable (no observer sees one name reset and
//!   another, reset by the same call, still open);
//! - [`is_open`](CircuitBreaker::is_open) on a resolved [`BreakerHandle`] is
//!   a single `Acquire` load on a healthy name and never writes.
//!
//! Beyond the seed, opt-in through the [builder](CircuitBreaker::builder): a
//! cool-down after which exactly one caller wins a half-open trial permit
//! ([`try_acquire`](CircuitBreaker::try_acquire)), per-name state-change
//! events ([`on_event`](CircuitBreaker::on_event)), and success/failure
//! totals in the [`metrics`](CircuitBreaker::metrics) snapshot.
//! [`ParallelStrategyExecutor`] is the seed's executor: strategies on up to
//! `max_workers` threads, open names skipped, outcomes recorded.
//!
//! The protocol, its linearization points and orderings are documented in
//! the `state` module source and in `docs/breaker.md`.
//!
//! ```
//! use raceless::breaker::{Breaker, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new(3)?;
//! for _ in 0..3 {
//!     breaker.record_failure("search");
//! }
//! assert!(breaker.is_open("search"));
//! breaker.record_success("search");
//! assert!(!breaker.is_open("search"));
//! assert_eq!(breaker.failures("search"), 0);
//! # Ok::<(), raceless::breaker::BreakerError>(())
//! ```
//!
//! # Names
//!
//! Every string is a valid name, the empty string included (the seed's dict
//! accepted it too); names are compared byte for byte. A name is remembered
//! from its first write ([`record_failure`](CircuitBreaker::record_failure),
//! [`record_success`](CircuitBreaker::record_success),
//! [`try_acquire`](CircuitBreaker::try_acquire),
//! [`handle`](CircuitBreaker::handle)); reads of an unknown name answer
//! "closed, zero failures" without remembering it. Names are never
//! forgotten (`reset` zeroes a name, it does not remove it), so handles stay
//! valid for the breaker's lifetime.
//!
//! # Name lookup
//!
//! The names live in a sharded map (`DashMap`), the source of truth. A
//! DashMap read takes its shard's read lock — a read-modify-write on a line
//! every reader of that shard writes — so with a few hot names on many
//! threads that line, not the state word, would bound throughput. Lookups
//! therefore go through two caches first. The first is **per thread**
//! (`name_cache`: 64 two-way sets of `(breaker id, name) → slot`, filled
//! from the snapshot below): a hit is a thread-local access, a hash and a
//! string comparison, with no atomic read-modify-write at all, so a lookup
//! by name costs less than an uncontended mutex. Breaker ids are never
//! reused, so a dropped breaker's entries are never hit (they only hold
//! their slots until overwritten or the thread exits: at most 128 per
//! thread). The second is a read-mostly **snapshot** of the map (an
//! `ArcSwap<HashMap>`, read with arc-swap's thread-local fast path, which
//! writes no shared line). A name missing from the snapshot is looked up in
//! the map; once the map has answered more such misses than
//! `16 + snapshot size / 2` (a `Relaxed` counter: only a heuristic), the
//! thread whose count reached the limit rebuilds the snapshot from the map
//! (`Arc` clones under the shard read locks, no user code) and stores it:
//! O(n) work per about n/2 misses, so O(1) amortized per new name. Unknown
//! names are never counted, so reads of names that do not exist cannot
//! cause rebuilds.
//!
//! Correct because names are never removed and a name's slot is never
//! replaced: the slot found in any snapshot or cache is *the* slot of that
//! name, so
//! every operation still linearizes at its atomic operation on the slot's
//! word. A snapshot is published by arc-swap's store and read through its
//! load (release/acquire), and it was built from slots read under the shard
//! locks, so a reader sees each slot fully constructed.

use std::fmt;
use std::time::Duration;

use crate::clock::{self, Clock, SharedClock};
use crate::listener::Listeners;
use crate::sync::{
    Arc, ArcSwap, AtomicU64, AtomicUsize, CachePadded, Entry, MapHasher, Ordering, ShardedMap,
};
use crate::ListenerId;

mod executor;
mod handle;
mod name_cache;
mod state;

pub use executor::{Outcome, ParallelStrategyExecutor};
pub use handle::{BreakerHandle, Permit};
pub use state::State;

use state::{NeedsClock, Shared, Slot, Transition};

/// The operations every breaker implementation offers: the seed's API, plus
/// what tests, benchmarks and the executor need. Implemented by
/// [`CircuitBreaker`], [`MutexBreaker`](crate::baseline::MutexBreaker) and
/// the harness's deliberately racy variant.
///
/// ```
/// use raceless::breaker::{Breaker, CircuitBreaker};
/// use raceless::baseline::MutexBreaker;
///
/// fn trip(b: &dyn Breaker) -> bool {
///     b.record_failure("x");
///     b.is_open("x")
/// }
/// assert!(trip(&CircuitBreaker::new(1)?));
/// assert!(trip(&MutexBreaker::<raceless::baseline::StdMutex>::new(1)?));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
pub trait Breaker: Send + Sync {
    /// Counts a failure of `name`; the `threshold`-th consecutive one opens it.
    fn record_failure(&self, name: &str);
    /// Records a success: zero failures, `name` closed.
    fn record_success(&self, name: &str);
    /// Whether `name` is open (rejecting calls).
    fn is_open(&self, name: &str) -> bool;
    /// Consecutive failures of `name` (0 for an unknown name).
    fn failures(&self, name: &str) -> u32;
    /// Closes `name` and zeroes its count.
    fn reset(&self, name: &str);
    /// Closes every name at once.
    fn reset_all(&self);
    /// How many times `name` went from closed (or half-open) to open.
    fn times_opened(&self, name: &str) -> u64;
    /// Whether a call on `name` may run now. The seed's rule (the default)
    /// is "not open"; a breaker with a cool-down also admits the single
    /// half-open trial caller. The caller reports the call's outcome with
    /// [`record_success`](Breaker::record_success) or
    /// [`record_failure`](Breaker::record_failure).
    fn admit(&self, name: &str) -> bool {
        !self.is_open(name)
    }
}

/// Errors of the breaker component.
///
/// ```
/// use raceless::breaker::{BreakerError, CircuitBreaker};
/// assert_eq!(CircuitBreaker::new(0).unwrap_err(), BreakerError::ZeroThreshold);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError {
    /// A failure threshold of 0 would open every name before any failure.
    #[error("the failure threshold must be at least 1")]
    ZeroThreshold,
    /// An executor needs at least one worker.
    #[error("max_workers must be at least 1")]
    ZeroWorkers,
}

/// A state change, delivered to the listeners registered with
/// [`CircuitBreaker::on_event`] after it is visible, with no lock held, on
/// the thread that made it. Each change is reported exactly once; changes
/// made by different threads may be delivered in any order.
///
/// ```
/// use raceless::breaker::{BreakerEvent, CircuitBreaker, State};
/// use std::sync::{Arc, Mutex};
///
/// let breaker = CircuitBreaker::new(1)?;
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = seen.clone();
/// breaker.on_event(move |e: &BreakerEvent| sink.lock().unwrap().push(e.clone()));
/// breaker.record_failure("db");
/// assert_eq!(
///     seen.lock().unwrap()[0],
///     BreakerEvent::StateChanged { name: "db".into(), from: State::Closed, to: State::Open }
/// );
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// `name` went from `from` to `to`.
    StateChanged {
        /// The name.
        name: std::sync::Arc<str>,
        /// The state before.
        from: State,
        /// The state after.
        to: State,
    },
    /// [`reset_all`](CircuitBreaker::reset_all) closed every name at once
    /// (one event, not one per name: the reset is O(1)).
    AllReset {
        /// How many `reset_all` calls this breaker has seen, this one included.
        resets: u64,
    },
}

/// One name in a [`CircuitBreaker::metrics`] snapshot.
///
/// ```
/// use raceless::breaker::{CircuitBreaker, State};
///
/// let breaker = CircuitBreaker::builder().failure_threshold(2).track_totals(true).build()?;
/// breaker.record_failure("db");
/// let m = &breaker.metrics()[0];
/// assert_eq!((&*m.name, m.state, m.consecutive_failures), ("db", State::Closed, 1));
/// assert_eq!(m.total_failures, Some(1));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameMetrics {
    /// The name.
    pub name: std::sync::Arc<str>,
    /// Its state.
    pub state: State,
    /// Its consecutive failures.
    pub consecutive_failures: u32,
    /// How many times it opened (from closed or half-open).
    pub times_opened: u64,
    /// Successes recorded since it was first seen (`None` unless the breaker
    /// was built with [`track_totals(true)`](BreakerBuilder::track_totals)).
    pub total_successes: Option<u64>,
    /// Failures recorded since it was first seen (same condition).
    pub total_failures: Option<u64>,
}

/// Builds a [`CircuitBreaker`]; see [`CircuitBreaker::builder`].
///
/// ```
/// use raceless::breaker::CircuitBreaker;
/// use raceless::clock::ManualClock;
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::builder()
///     .failure_threshold(5)
///     .cool_down(Duration::from_secs(30))
///     .clock(ManualClock::new())
///     .build()?;
/// assert_eq!(breaker.failure_threshold(), 5);
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[must_use]
pub struct BreakerBuilder {
    threshold: u32,
    cool_down: Option<Duration>,
    clock: Option<SharedClock>,
    track_totals: bool,
}

impl BreakerBuilder {
    /// Consecutive failures that open a name (default 3, the seed's). Must
    /// be at least 1.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.threshold = n;
        self
    }

    /// Enables half-open trials: once a name has been open for `d`,
    /// [`try_acquire`](CircuitBreaker::try_acquire) grants one trial permit.
    /// Default: none (the seed's behaviour: an open name stays open until a
    /// success or reset). `Duration::ZERO` makes the trial available at
    /// once; durations beyond ~584 years are clamped.
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = Some(d);
        self
    }

    /// The clock cool-downs are measured with (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(std::sync::Arc::new(clock));
        self
    }

    /// Counts total successes and failures per name for
    /// [`metrics`](CircuitBreaker::metrics) (default off: it costs one more
    /// atomic add per recorded outcome).
    pub fn track_totals(mut self, on: bool) -> Self {
        self.track_totals = on;
        self
    }

    /// The breaker, or [`BreakerError::ZeroThreshold`].
    pub fn build(self) -> Result<CircuitBreaker, BreakerError> {
        if self.threshold == 0 {
            return Err(BreakerError::ZeroThreshold);
        }
        Ok(CircuitBreaker {
            id: name_cache::next_breaker_id(),
            shared: Arc::new(Shared {
                threshold: self.threshold,
                cool_down: self.cool_down.map(state::duration_nanos),
                clock: self.clock.unwrap_or_else(clock::system_clock),
                track_totals: self.track_totals,
                generation: CachePadded::new(AtomicU64::new(0)),
                listeners: Listeners::new(),
            }),
            names: ShardedMap::new(),
            hot: ArcSwap::from_value(HotNames::default()),
            misses: CachePadded::new(AtomicUsize::new(0)),
        })
    }
}

type SlotRef = Arc<CachePadded<Slot>>;

/// A lock-free per-name circuit breaker.
///
/// Names live in a sharded map (`DashMap`, foldhash); each name's state is
/// one atomic word (see the [module docs](self)). Every operation takes
/// `&self`; share it with an `Arc`.
///
/// ```
/// use raceless::breaker::CircuitBreaker;
/// use std::sync::Arc;
///
/// let breaker = Arc::new(CircuitBreaker::new(100)?);
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| for _ in 0..25 { breaker.record_failure("flaky") });
///     }
/// });
/// assert_eq!(breaker.failures("flaky"), 100); // no lost increments
/// assert!(breaker.is_open("flaky"));
/// assert_eq!(breaker.times_opened("flaky"), 1); // opened exactly once
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
pub struct CircuitBreaker {
    shared: Arc<Shared>,
    /// This breaker's key in the per-thread name caches (unique, never
    /// reused).
    id: u64,
    names: ShardedMap<std::sync::Arc<str>, SlotRef>,
    /// A read-mostly snapshot of `names` (see "Name lookup" above).
    hot: ArcSwap<HotNames>,
    /// Lookups the map answered since the snapshot was last rebuilt.
    /// `Relaxed`: only decides when to rebuild.
    misses: CachePadded<AtomicUsize>,
}

/// The snapshot of known names that lookups try first.
type HotNames = std::collections::HashMap<std::sync::Arc<str>, SlotRef, MapHasher>;

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("failure_threshold", &self.shared.threshold)
            .field("cool_down", &self.cool_down())
            .field("names", &self.names.len())
            .finish()
    }
}

impl CircuitBreaker {
    /// A breaker that opens a name after `failure_threshold` consecutive
    /// failures (no cool-down, system clock); 0 is
    /// [`BreakerError::ZeroThreshold`].
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// assert!(CircuitBreaker::new(3).is_ok());
    /// assert!(CircuitBreaker::new(0).is_err());
    /// ```
    pub fn new(failure_threshold: u32) -> Result<Self, BreakerError> {
        Self::builder().failure_threshold(failure_threshold).build()
    }

    /// A builder: threshold (default 3), cool-down, clock, totals.
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::builder().build()?;
    /// assert_eq!(breaker.failure_threshold(), 3);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder {
            threshold: 3,
            cool_down: None,
            clock: None,
            track_totals: false,
        }
    }

    /// The failure threshold.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// assert_eq!(CircuitBreaker::new(7)?.failure_threshold(), 7);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn failure_threshold(&self) -> u32 {
        self.shared.threshold
    }

    /// The cool-down, if half-open trials are enabled.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// assert_eq!(CircuitBreaker::new(1)?.cool_down(), None);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn cool_down(&self) -> Option<Duration> {
        self.shared.cool_down.map(Duration::from_nanos)
    }

    /// The slot of `name`, created (closed, zero) if absent. Insertion goes
    /// through the entry API, so two racing first writers share one slot.
    fn slot(&self, name: &str) -> SlotRef {
        if let Some(slot) = self.names.get(name) {
            return slot;
        }
        let key: std::sync::Arc<str> = name.into();
        let generation = self.shared.generation.load(Ordering::Acquire);
        self.names.entry(key.clone(), |e| match e {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let slot = Arc::new(Slot::new(key, generation));
                e.insert(slot.clone());
                slot
            }
        })
    }

    /// Runs `f` on the slot of `name` (created if absent). A known name is
    /// served under the shard's read lock without cloning its `Arc` (no
    /// reference-count traffic on hot names); `f` only touches atomics.
    #[inline]
    fn on_slot<R>(&self, name: &str, f: impl Fn(&Slot) -> R) -> R {
        match self.lookup(name, &f) {
            Some(r) => r,
            None => f(&self.slot(name)),
        }
    }

    /// [`report`] for an operation by name: the slot's name for the event
    /// is looked up again only when a listener will receive it (rare: a
    /// state change with listeners), after every guard of the operation
    /// was released.
    #[inline]
    fn report(&self, name: &str, t: Option<Transition>) {
        if let Some(t) = t {
            self.shared.emit(|| {
                let name = self
                    .lookup(name, |slot| slot.name.clone())
                    .unwrap_or_else(|| name.into());
                state_changed(name, t)
            });
        }
    }

    /// Runs a read on a known name, `default` for an unknown one.
    #[inline]
    fn read<R>(&self, name: &str, default: R, f: impl FnOnce(&Slot) -> R + Copy) -> R {
        self.lookup(name, f).unwrap_or(default)
    }

    /// Runs `f` on the slot of a known name: from the snapshot if it has
    /// the name, else from the map (counting a miss); `None` if unknown.
    #[inline]
    fn lookup<R>(&self, name: &str, f: impl FnOnce(&Slot) -> R + Copy) -> Option<R> {
        let set = name_cache::set_of(name);
        if let Some(r) = name_cache::with(self.id, set, name, f) {
            return Some(r);
        }
        let hot = self.hot.load();
        if let Some((key, slot)) = hot.get_key_value(name) {
            name_cache::insert(self.id, set, key, slot);
            return Some(f(slot));
        }
        let hot_len = hot.len();
        drop(hot);
        let r = self.names.read(name, |slot| f(slot))?;
        self.count_miss(hot_len);
        Some(r)
    }

    /// Counts a lookup the snapshot missed and the map answered; rebuilds
    /// the snapshot once enough have accumulated (see "Name lookup").
    #[cold]
    fn count_miss(&self, hot_len: usize) {
        let misses = self.misses.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = 16 + hot_len / 2;
        // One thread wins the reset and rebuilds; the others go on.
        if misses >= limit
            && self
                .misses
                .compare_exchange(misses, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut hot =
                HotNames::with_capacity_and_hasher(self.names.len(), MapHasher::default());
            self.names.for_each(|name, slot| {
                hot.insert(name.clone(), slot.clone());
            });
            self.hot.store(Arc::new(hot));
        }
    }

    /// Counts a failure of `name`. The `threshold`-th consecutive failure
    /// opens it (one CAS: count and state change together); a failure on a
    /// half-open name re-opens it and restarts the cool-down.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(2)?;
    /// breaker.record_failure("db");
    /// assert!(!breaker.is_open("db"));
    /// breaker.record_failure("db");
    /// assert!(breaker.is_open("db"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn record_failure(&self, name: &str) {
        let t = with_clock(&self.shared, |now| {
            self.on_slot(name, |slot| slot.record_failure(&self.shared, now))
        });
        self.report(name, t);
    }

    /// Records a success of `name`: its count drops to zero and it closes
    /// (from open or half-open). A success on a closed name with no
    /// failures writes nothing.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("db");
    /// breaker.record_success("db");
    /// assert!(!breaker.is_open("db"));
    /// assert_eq!(breaker.failures("db"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn record_success(&self, name: &str) {
        let t = self.on_slot(name, |slot| slot.record_success(&self.shared));
        self.report(name, t);
    }

    /// Whether `name` is open or half-open (rejecting ordinary calls). An
    /// unknown name is closed.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// assert!(!breaker.is_open("never-seen"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn is_open(&self, name: &str) -> bool {
        self.read(name, false, |slot| slot.is_open(&self.shared))
    }

    /// The consecutive failures of `name` (0 for an unknown name). Keeps
    /// counting while the name is open; saturates at `u32::MAX`.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(2)?;
    /// for _ in 0..5 { breaker.record_failure("db"); }
    /// assert_eq!(breaker.failures("db"), 5);
    /// assert_eq!(breaker.failures("other"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn failures(&self, name: &str) -> u32 {
        self.read(name, 0, |slot| slot.failures(&self.shared))
    }

    /// The state of `name` ([`State::Closed`] for an unknown name).
    ///
    /// ```
    /// use raceless::breaker::{CircuitBreaker, State};
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("db");
    /// assert_eq!(breaker.state("db"), State::Open);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn state(&self, name: &str) -> State {
        self.read(name, State::Closed, |slot| slot.state(&self.shared))
    }

    /// How many times `name` opened (from closed, or from half-open when a
    /// trial failed).
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("db");
    /// breaker.record_failure("db"); // already open: not a new opening
    /// assert_eq!(breaker.times_opened("db"), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn times_opened(&self, name: &str) -> u64 {
        self.read(name, 0, |slot| slot.times_opened())
    }

    /// Closes `name` and zeroes its count (like a success, but not counted
    /// as one). No-op for an unknown name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("db");
    /// breaker.reset("db");
    /// assert!(!breaker.is_open("db"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn reset(&self, name: &str) {
        let t = self.read(name, None, |slot| slot.close(&self.shared));
        self.report(name, t);
    }

    /// Closes every name and zeroes every count, in O(1): one `fetch_add` on
    /// the global generation, its linearization point. Every word written
    /// before it now reads as fresh, so no observer can see one name reset
    /// and another, reset by the same call, still open. Names, totals and
    /// `times_opened` are kept.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("a");
    /// breaker.record_failure("b");
    /// breaker.reset_all();
    /// assert!(!breaker.is_open("a") && !breaker.is_open("b"));
    /// assert_eq!(breaker.failures("a"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn reset_all(&self) {
        let resets = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if resets % state::SWEEP_EVERY == 0 {
            self.sweep();
        }
        tracing::debug!(resets, "breaker reset_all");
        self.shared.emit(|| BreakerEvent::AllReset { resets });
    }

    /// Rebases every stale word to the current generation, so that no word
    /// lags 2³⁰ generations behind and wraps back to life. Touches atomics
    /// only while a shard is read-locked.
    fn sweep(&self) {
        self.names.for_each(|_, slot| slot.rebase(&self.shared));
    }

    /// Asks to make a call on `name`.
    ///
    /// - Closed: `Some` ordinary permit (nothing is written).
    /// - Open, with a cool-down that has elapsed since it opened: exactly
    ///   one caller gets `Some` **trial** permit (the name turns
    ///   [`State::HalfOpen`]); everyone else gets `None` until the trial's
    ///   outcome is reported.
    /// - Otherwise `None`.
    ///
    /// Report the call's outcome with [`Permit::success`] or
    /// [`Permit::failure`]; see [`Permit`] for what dropping one does.
    ///
    /// ```
    /// use raceless::breaker::{CircuitBreaker, State};
    /// use raceless::clock::ManualClock;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let breaker = CircuitBreaker::builder()
    ///     .failure_threshold(1)
    ///     .cool_down(Duration::from_secs(10))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// breaker.record_failure("db");
    /// assert!(breaker.try_acquire("db").is_none()); // cooling down
    /// clock.advance(Duration::from_secs(10));
    /// let trial = breaker.try_acquire("db").expect("the trial");
    /// assert!(breaker.try_acquire("db").is_none()); // only one trial
    /// trial.success();
    /// assert_eq!(breaker.state("db"), State::Closed);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn try_acquire(&self, name: &str) -> Option<Permit> {
        handle::acquire(&self.slot(name), &self.shared)
    }

    /// A resolved handle to `name` (created if absent): its operations skip
    /// hashing and the map entirely. Cheap to clone.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(2)?;
    /// let db = breaker.handle("db");
    /// db.record_failure();
    /// db.record_failure();
    /// assert!(db.is_open());
    /// assert!(breaker.is_open("db")); // the same state
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn handle(&self, name: &str) -> BreakerHandle {
        BreakerHandle::new(self.slot(name), self.shared.clone())
    }

    /// Registers a listener for [`BreakerEvent`]s. It runs on the thread that
    /// made the change, after the change is visible, with no lock held (it
    /// may call back into the breaker); a panic in it is caught and logged.
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let breaker = CircuitBreaker::new(1)?;
    /// let n = Arc::new(AtomicUsize::new(0));
    /// let m = n.clone();
    /// let id = breaker.on_event(move |_| { m.fetch_add(1, Ordering::Relaxed); });
    /// breaker.record_failure("db");
    /// assert!(breaker.remove_listener(id));
    /// breaker.record_success("db");
    /// assert_eq!(n.load(Ordering::Relaxed), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn on_event(&self, listener: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> ListenerId {
        self.shared.listeners.add(listener)
    }

    /// Removes a listener; `false` if it was not registered.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// let id = breaker.on_event(|_| {});
    /// assert!(breaker.remove_listener(id));
    /// assert!(!breaker.remove_listener(id));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.shared.listeners.remove(id)
    }

    /// A snapshot of every known name, sorted by name. Each entry is
    /// consistent in itself (one load of the name's word); the snapshot as a
    /// whole is taken name by name, never under a lock that user code could
    /// wait on.
    ///
    /// ```
    /// use raceless::breaker::{CircuitBreaker, State};
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("b");
    /// breaker.record_success("a");
    /// let m = breaker.metrics();
    /// assert_eq!(m.iter().map(|m| &*m.name).collect::<Vec<_>>(), ["a", "b"]);
    /// assert_eq!(m[1].state, State::Open);
    /// assert_eq!(m[1].times_opened, 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn metrics(&self) -> Vec<NameMetrics> {
        let mut out: Vec<NameMetrics> = self
            .names
            .snapshot()
            .into_iter()
            .map(|(_, slot)| handle::metrics(&slot, &self.shared))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Breaker for CircuitBreaker {
    fn record_failure(&self, name: &str) {
        CircuitBreaker::record_failure(self, name)
    }
    fn record_success(&self, name: &str) {
        CircuitBreaker::record_success(self, name)
    }
    fn is_open(&self, name: &str) -> bool {
        CircuitBreaker::is_open(self, name)
    }
    fn failures(&self, name: &str) -> u32 {
        CircuitBreaker::failures(self, name)
    }
    fn reset(&self, name: &str) {
        CircuitBreaker::reset(self, name)
    }
    fn reset_all(&self) {
        CircuitBreaker::reset_all(self)
    }
    fn times_opened(&self, name: &str) -> u64 {
        CircuitBreaker::times_opened(self, name)
    }
    /// Closed names are admitted; an open one admits the single half-open
    /// trial caller once its cool-down has elapsed (like
    /// [`CircuitBreaker::try_acquire`], without a permit object: the caller
    /// must report the outcome).
    fn admit(&self, name: &str) -> bool {
        let admitted = with_clock(&self.shared, |now| {
            self.on_slot(name, |slot| {
                Ok(slot.acquire(&self.shared, now)?.map(|(_, t)| t))
            })
        });
        match admitted {
            Some(t) => {
                self.report(name, t);
                true
            }
            None => false,
        }
    }
}

/// Runs `op` without the time; if it needs the time, reads the clock (user
/// code: never under a lock) and runs it again with it.
#[inline]
fn with_clock<R>(shared: &Shared, op: impl Fn(Option<u64>) -> Result<R, NeedsClock>) -> R {
    let mut now = None;
    loop {
        match op(now) {
            Ok(r) => return r,
            Err(NeedsClock) => now = Some(shared.now_nanos()),
        }
    }
}

/// Tells the listeners of `shared` about the change `t` of `slot`, if
/// there was one. The event is built only here, and only if someone
/// listens: operations return the small `Option<Transition>` through their
/// closures, never an event (moving an `Option` of an event with an `Arc`
/// through the nested closures of a lookup cost more than the lookup
/// itself, in store-forwarding stalls).
#[inline]
fn report(shared: &Shared, slot: &Slot, t: Option<Transition>) {
    if let Some(t) = t {
        shared.emit(|| state_changed(slot.name.clone(), t));
    }
}

fn state_changed(name: std::sync::Arc<str>, t: Transition) -> BreakerEvent {
    BreakerEvent::StateChanged {
        name,
        from: t.from,
        to: t.to,
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    /// Names written through the map are picked up by the snapshot after
    /// enough misses, and lookups through either give the same slot.
    #[test]
    fn the_name_snapshot_catches_up_and_agrees_with_the_map() {
        let breaker = CircuitBreaker::new(1_000).unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("name-{i}")).collect();
        for name in &names {
            breaker.record_failure(name);
        }
        assert!(breaker.hot.load().len() < names.len());
        // Every known name answered by the map counts a miss; 16 + len/2
        // misses rebuild the snapshot, so a few rounds pick all names up.
        for _ in 0..3 {
            for name in &names {
                breaker.record_failure(name);
            }
        }
        assert_eq!(breaker.hot.load().len(), names.len());
        for name in &names {
            assert_eq!(breaker.failures(name), 4);
            let hot = breaker.hot.load();
            let snapshot_slot = hot.get(name.as_str()).unwrap();
            assert!(Arc::ptr_eq(snapshot_slot, &breaker.slot(name)));
        }
        // Reads of unknown names never count as misses.
        let misses = breaker.misses.load(Ordering::Relaxed);
        for _ in 0..1_000 {
            assert!(!breaker.is_open("never-seen"));
        }
        assert_eq!(breaker.misses.load(Ordering::Relaxed), misses);
    }

    /// The per-thread cache keys by breaker: breakers sharing names (and a
    /// new breaker after an old one is dropped) never see each other's slots.
    #[test]
    fn the_thread_cache_never_mixes_breakers() {
        let warm = |b: &CircuitBreaker| {
            for _ in 0..64 {
                b.is_open("x");
                b.record_success("y");
            }
        };
        let a = CircuitBreaker::new(2).unwrap();
        let b = CircuitBreaker::new(2).unwrap();
        a.record_failure("x");
        b.record_success("x");
        warm(&a);
        warm(&b);
        a.record_failure("x");
        assert!(a.is_open("x") && !b.is_open("x"));
        assert_eq!((a.failures("x"), b.failures("x")), (2, 0));
        drop(a);
        let c = CircuitBreaker::new(2).unwrap();
        warm(&c);
        assert!(!c.is_open("x"));
        assert_eq!(c.failures("x"), 0);
    }
}
