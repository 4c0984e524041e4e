//! A per-name circuit breaker whose counting cannot race (seed:
//! cleveragents #7088).
//!
//! The seed kept `failures: dict[str, int]` and `disabled: set[str]` and
//! updated them with a read-then-write (`count = failures.get(name, 0) + 1;
//! failures[name] = count`), so concurrent failures lost increments and a
//! name that should have opened never did. Its fix put one lock around both;
//! that fix is `baseline::MutexBreaker` (feature `baselines`).
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
//! Beyond the seed, for services that wrap calls (0.2):
//!
//! - [`call`](CircuitBreaker::call), [`call_async`](CircuitBreaker::call_async)
//!   and their `_with` forms (an error classifier) admit a call or reject it
//!   with [`Rejected::retry_after`], run it, and record its outcome;
//!   [`acquire`](CircuitBreaker::acquire) hands out an explicit [`Permit`].
//! - **Outcome epochs**: an outcome counts only in the state its call was
//!   admitted in, so a late success cannot close a name that opened after
//!   the call started (see [`Permit`]).
//! - **Cancellation**: a dropped `call_async` future or permit records
//!   nothing and frees a half-open trial place at once.
//! - A cool-down (default 60 s, on the clock's monotonic time) after which
//!   [`half_open_calls`](BreakerBuilder::half_open_calls) trial calls
//!   decide; [`without_cool_down`](BreakerBuilder::without_cool_down) keeps
//!   the seed's "open until a success or reset".
//! - **Rate mode**: [`sliding_window`](BreakerBuilder::sliding_window),
//!   [`failure_rate_threshold`](BreakerBuilder::failure_rate_threshold),
//!   [`minimum_calls`](BreakerBuilder::minimum_calls), with resilience4j's
//!   meanings; recording an outcome stays lock-free.
//! - [`remove`](CircuitBreaker::remove) for names built from request data,
//!   per-name events ([`on_event`](CircuitBreaker::on_event)) and a
//!   [`metrics`](CircuitBreaker::metrics) snapshot with rejected calls.
//!
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
//! "closed, zero failures" without remembering it. `reset` zeroes a name;
//! [`remove`](CircuitBreaker::remove) forgets it (its handles and permits
//! are detached: they keep working on the removed state).
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
//! Correct because a name's slot is never replaced while the name exists:
//! the slot found in any snapshot or cache is *the* slot of that name unless
//! it is marked removed (then the lookup counts as a miss), so every
//! operation still linearizes at its atomic operation on the slot's word. A snapshot is published by arc-swap's store and read through its
//! load (release/acquire), and it was built from slots read under the shard
//! locks, so a reader sees each slot fully constructed.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

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
#[cfg(feature = "tower")]
mod tower;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::tower::{BreakerLayer, BreakerService, Classify, ErrorsAreFailures, ResponseFuture};
pub use executor::{Outcome, ParallelStrategyExecutor};
pub use handle::{BreakerHandle, Permit};
pub use state::State;

pub(crate) use state::RateConfig;
use state::{End, Shared, Slot, Transition};
#[cfg(feature = "baselines")]
pub(crate) use state::{Ticket, SATURATED};

/// The operations every breaker implementation offers: the seed's API, plus
/// what tests, benchmarks and the executor need. Implemented by
/// [`CircuitBreaker`], `baseline::MutexBreaker` (feature `baselines`) and
/// the harness's deliberately racy variant.
///
/// ```
/// use raceless::breaker::{Breaker, CircuitBreaker};
/// #[cfg(feature = "baselines")]
/// use raceless::baseline::{MutexBreaker, StdMutex};
///
/// fn trip(b: &dyn Breaker) -> bool {
///     b.record_failure("x");
///     b.is_open("x")
/// }
/// assert!(trip(&CircuitBreaker::new(1)?));
/// #[cfg(feature = "baselines")]
/// assert!(trip(&MutexBreaker::<StdMutex>::new(1)?));
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

    /// Admits one call on `name` (or rejects it), remembering the state it
    /// was admitted in. The default is the seed's rule: a call runs unless
    /// the name is open, and its outcome is recorded by name whatever
    /// happened since (the check-then-act that epochs remove).
    fn admit_call(&self, name: &str) -> Result<CallTicket, Rejected> {
        if self.is_open(name) {
            Err(Rejected { retry_after: None })
        } else {
            Ok(CallTicket::default())
        }
    }

    /// Reports the end of a call admitted by
    /// [`admit_call`](Breaker::admit_call). The default records a success
    /// or failure by name and ignores a release.
    fn end_call(&self, name: &str, ticket: CallTicket, outcome: CallOutcome) {
        let _ = ticket;
        match outcome {
            CallOutcome::Success => self.record_success(name),
            CallOutcome::Failure => self.record_failure(name),
            CallOutcome::Released => {}
        }
    }

    /// The state of `name` (default: open or closed from
    /// [`is_open`](Breaker::is_open)).
    fn state(&self, name: &str) -> State {
        if self.is_open(name) {
            State::Open
        } else {
            State::Closed
        }
    }

    /// How long until a call on `name` may run (default: never known).
    fn retry_after(&self, name: &str) -> Option<Duration> {
        let _ = name;
        None
    }

    /// Forgets `name`; `false` if unknown (default: not supported).
    fn remove(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// Runs `f` as one call on `name`: admitted or rejected, then its
    /// outcome reported ([`CircuitBreaker::call_with`] is this for the
    /// lock-free breaker). A panic in `f` releases the call.
    fn call_with<T, E>(
        &self,
        name: &str,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CallError<E>>
    where
        Self: Sized,
    {
        let ticket = self.admit_call(name).map_err(CallError::Rejected)?;
        let mut guard = TicketGuard {
            breaker: self,
            name,
            ticket: Some(ticket),
        };
        let result = f();
        guard.end(CallOutcome::of(&result, is_failure));
        result.map_err(CallError::Failed)
    }

    /// The async [`call_with`](Breaker::call_with): dropping the future
    /// before `f` completes releases the call.
    fn call_async_with<T, E>(
        &self,
        name: &str,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, CallError<E>>>
    where
        Self: Sized,
    {
        async move {
            let ticket = self.admit_call(name).map_err(CallError::Rejected)?;
            let mut guard = TicketGuard {
                breaker: self,
                name,
                ticket: Some(ticket),
            };
            let result = f.await;
            guard.end(CallOutcome::of(&result, is_failure));
            result.map_err(CallError::Failed)
        }
    }
}

/// The state a call was admitted in, from [`Breaker::admit_call`]; handed
/// back to [`Breaker::end_call`]. Opaque: only the breaker that issued it
/// reads it.
///
/// ```
/// use raceless::breaker::{Breaker, CallOutcome, CircuitBreaker};
/// let breaker = CircuitBreaker::new(1)?;
/// let ticket = Breaker::admit_call(&breaker, "db").unwrap();
/// Breaker::end_call(&breaker, "db", ticket, CallOutcome::Failure);
/// assert!(breaker.is_open("db"));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTicket {
    pub(crate) ticket: state::Ticket,
    /// The slot (lock-free) or name incarnation (baseline) it belongs to.
    pub(crate) slot: u64,
}

/// How a call admitted by [`Breaker::admit_call`] ended.
///
/// ```
/// use raceless::breaker::CallOutcome;
/// assert_ne!(CallOutcome::Success, CallOutcome::Released);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The call succeeded.
    Success,
    /// The call failed.
    Failure,
    /// The call was cancelled or panicked: nothing is recorded.
    Released,
}

impl CallOutcome {
    /// The outcome of a call that returned `result`: `Ok` is a success, an
    /// error a failure if `is_failure` says so and a success otherwise (the
    /// upstream answered).
    #[inline]
    pub(crate) fn of<T, E>(result: &Result<T, E>, is_failure: impl FnOnce(&E) -> bool) -> Self {
        match result {
            Err(e) if is_failure(e) => CallOutcome::Failure,
            _ => CallOutcome::Success,
        }
    }
}

impl From<CallOutcome> for End {
    #[inline]
    fn from(outcome: CallOutcome) -> Self {
        match outcome {
            CallOutcome::Success => End::Success,
            CallOutcome::Failure => End::Failure,
            CallOutcome::Released => End::Released,
        }
    }
}

/// Ends a trait-level call as released unless it was ended explicitly.
struct TicketGuard<'a, B: Breaker + ?Sized> {
    breaker: &'a B,
    name: &'a str,
    ticket: Option<CallTicket>,
}

impl<B: Breaker + ?Sized> TicketGuard<'_, B> {
    fn end(&mut self, outcome: CallOutcome) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.end_call(self.name, ticket, outcome);
        }
    }
}

impl<B: Breaker + ?Sized> Drop for TicketGuard<'_, B> {
    fn drop(&mut self) {
        self.end(CallOutcome::Released);
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
    /// `sliding_window` must be between 1 and 10 000 calls.
    #[error("the sliding window must hold 1 to 10000 calls, not {0}")]
    InvalidWindow(u32),
    /// `failure_rate_threshold` must be a percentage in (0, 100].
    #[error("the failure rate threshold must be a percentage in (0, 100]")]
    InvalidRate,
    /// `half_open_calls` must be between 1 and 1 000.
    #[error("half_open_calls must be 1 to 1000, not {0}")]
    InvalidHalfOpenCalls(u32),
}

/// The error of [`CircuitBreaker::call`] and its siblings: the breaker
/// rejected the call, or the call ran and failed.
///
/// ```
/// use raceless::breaker::{CallError, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(1)?;
/// let r = breaker.call("db", || Err::<(), _>("timeout"));
/// assert!(matches!(r, Err(CallError::Failed("timeout"))));
/// let r = breaker.call("db", || Ok::<_, &str>(1)); // open now
/// let Err(CallError::Rejected(rejected)) = r else { panic!() };
/// assert!(rejected.retry_after.is_some());
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The name is open (or its half-open trials are all out): the call did
    /// not run.
    Rejected(Rejected),
    /// The call ran and returned this error.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Failed(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Failed(e) => Some(e),
        }
    }
}

impl<E> CallError<E> {
    /// The call's own error, if it ran.
    ///
    /// ```
    /// use raceless::breaker::CallError;
    /// assert_eq!(CallError::Failed(3).into_failed(), Some(3));
    /// ```
    pub fn into_failed(self) -> Option<E> {
        match self {
            CallError::Failed(e) => Some(e),
            CallError::Rejected(_) => None,
        }
    }
}

/// A call the breaker did not run.
///
/// ```
/// use raceless::breaker::Rejected;
/// use std::time::Duration;
/// let r = Rejected { retry_after: Some(Duration::from_secs(3)) };
/// assert_eq!(r.to_string(), "circuit open: retry after 3s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open{}", match .retry_after { Some(d) => format!(": retry after {d:?}"), None => String::new() })]
pub struct Rejected {
    /// How long until a trial call may run (a server's `Retry-After`);
    /// `None` when the name stays open until a success or reset (no
    /// cool-down configured).
    pub retry_after: Option<Duration>,
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
/// let BreakerEvent::StateChanged { name, from, to, open_until, .. } = seen.lock().unwrap()[0].clone()
/// else { panic!() };
/// assert_eq!((&*name, from, to), ("db", State::Closed, State::Open));
/// assert!(open_until.is_some()); // the default cool-down
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// `name` went from `from` to `to`.
    #[non_exhaustive]
    StateChanged {
        /// The name.
        name: std::sync::Arc<str>,
        /// The state before.
        from: State,
        /// The state after.
        to: State,
        /// When `to` is [`State::Open`] and a cool-down is configured: the
        /// wall-clock instant from which a trial call may run (for a
        /// server's `Retry-After`, or a dashboard).
        open_until: Option<SystemTime>,
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
    /// Calls rejected since it was first seen (open, or every half-open
    /// trial out).
    pub rejected_calls: u64,
    /// Successes recorded since it was first seen (`None` unless the breaker
    /// was built with [`track_totals(true)`](BreakerBuilder::track_totals)).
    pub total_successes: Option<u64>,
    /// Failures recorded since it was first seen (same condition).
    pub total_failures: Option<u64>,
}

/// Builds a [`CircuitBreaker`]; see [`CircuitBreaker::builder`].
///
/// The defaults are a real breaker's: 3 consecutive failures open a name,
/// which stays open for a 60 s cool-down, after which one trial call
/// decides (success closes, failure re-opens). The seed's behaviour — open
/// until a success or a reset — is [`without_cool_down`](Self::without_cool_down).
///
/// With [`sliding_window`](Self::sliding_window) the breaker counts a
/// failure **rate** instead (resilience4j's count-based window): a name
/// opens once at least [`minimum_calls`](Self::minimum_calls) of its last
/// `n` outcomes are in and the share of failures among them reaches
/// [`failure_rate_threshold`](Self::failure_rate_threshold).
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
///
/// let rate = CircuitBreaker::builder()
///     .sliding_window(100)
///     .failure_rate_threshold(50.0)
///     .minimum_calls(20)
///     .half_open_calls(5)
///     .build()?;
/// assert_eq!(rate.cool_down(), Some(Duration::from_secs(60)));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[must_use]
#[derive(Clone)]
pub struct BreakerBuilder {
    threshold: u32,
    cool_down: Option<Duration>,
    clock: Option<SharedClock>,
    track_totals: bool,
    window: Option<u32>,
    rate: f32,
    minimum_calls: Option<u32>,
    half_open_calls: u32,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("failure_threshold", &self.threshold)
            .field("cool_down", &self.cool_down)
            .field("sliding_window", &self.window)
            .field("failure_rate_threshold", &self.rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("half_open_calls", &self.half_open_calls)
            .finish_non_exhaustive()
    }
}

/// The builder's default cool-down (resilience4j's `waitDurationInOpenState`).
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(60);

impl BreakerBuilder {
    /// Consecutive failures that open a name (default 3, the seed's). Must
    /// be at least 1. Not used in rate mode.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.threshold = n;
        self
    }

    /// How long a name stays open before a half-open trial may run
    /// (default [`DEFAULT_COOL_DOWN`], 60 s). Measured on the clock's
    /// monotonic time, so a wall-clock step neither shortens nor extends
    /// it. `Duration::ZERO` makes the trial available at once; durations
    /// beyond ~584 000 years are clamped.
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = Some(d);
        self
    }

    /// The seed's behaviour: an open name stays open until a success is
    /// recorded by name or it is reset; no half-open trials.
    pub fn without_cool_down(mut self) -> Self {
        self.cool_down = None;
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

    /// Rate mode: judge each name by its last `calls` outcomes (1 to
    /// 10 000; resilience4j's count-based `slidingWindowSize`).
    pub fn sliding_window(mut self, calls: u32) -> Self {
        self.window = Some(calls);
        self
    }

    /// Rate mode: open when failures make up at least `percent` of the
    /// window (default 50, in (0, 100]).
    pub fn failure_rate_threshold(mut self, percent: f32) -> Self {
        self.rate = percent;
        self
    }

    /// Rate mode: the failure rate is judged only once the window holds at
    /// least `n` outcomes (default: the window size; values above it act
    /// as the window size, 0 as 1).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = Some(n);
        self
    }

    /// Trial calls admitted while half-open (default 1, at most 1 000). In
    /// consecutive mode all must succeed to close the name and the first
    /// failure re-opens it; in rate mode their failure rate decides once
    /// all have reported.
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.half_open_calls = n;
        self
    }

    /// The breaker, or the first invalid setting as a [`BreakerError`].
    pub fn build(self) -> Result<CircuitBreaker, BreakerError> {
        let config = self.validate()?;
        Ok(CircuitBreaker {
            id: name_cache::next_breaker_id(),
            shared: Arc::new(Shared {
                threshold: config.threshold,
                cool_down: config.cool_down.map(state::micros),
                rate: config.rate,
                half_open_calls: config.half_open_calls,
                clock: config.clock,
                track_totals: config.track_totals,
                generation: CachePadded::new(AtomicU64::new(0)),
                listeners: Listeners::new(),
            }),
            names: ShardedMap::new(),
            hot: ArcSwap::from_value(HotNames::default()),
            misses: CachePadded::new(AtomicUsize::new(0)),
        })
    }

    /// Checks every setting: the validated configuration both the
    /// lock-free breaker and the mutex baseline are built from.
    pub(crate) fn validate(self) -> Result<Config, BreakerError> {
        if self.threshold == 0 {
            return Err(BreakerError::ZeroThreshold);
        }
        if !(1..=state::MAX_HALF_OPEN_CALLS).contains(&self.half_open_calls) {
            return Err(BreakerError::InvalidHalfOpenCalls(self.half_open_calls));
        }
        let rate = match self.window {
            None => None,
            Some(n) if !(1..=state::MAX_WINDOW).contains(&n) => {
                return Err(BreakerError::InvalidWindow(n))
            }
            Some(n) => {
                if !(self.rate > 0.0 && self.rate <= 100.0) {
                    return Err(BreakerError::InvalidRate);
                }
                Some(RateConfig::new(
                    n,
                    self.minimum_calls.unwrap_or(n).clamp(1, n),
                    (f64::from(self.rate) * 100.0).round() as u64,
                ))
            }
        };
        Ok(Config {
            threshold: self.threshold,
            cool_down: self.cool_down,
            rate,
            half_open_calls: self.half_open_calls,
            clock: self.clock.unwrap_or_else(clock::system_clock),
            track_totals: self.track_totals,
        })
    }
}

/// A validated [`BreakerBuilder`].
pub(crate) struct Config {
    pub(crate) threshold: u32,
    pub(crate) cool_down: Option<Duration>,
    pub(crate) rate: Option<RateConfig>,
    pub(crate) half_open_calls: u32,
    pub(crate) clock: SharedClock,
    pub(crate) track_totals: bool,
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
    /// failures, with the builder's other defaults (a 60 s cool-down, then
    /// one trial call; system clock); 0 is [`BreakerError::ZeroThreshold`].
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// assert!(CircuitBreaker::new(3).is_ok());
    /// assert!(CircuitBreaker::new(0).is_err());
    /// ```
    pub fn new(failure_threshold: u32) -> Result<Self, BreakerError> {
        Self::builder().failure_threshold(failure_threshold).build()
    }

    /// A builder; see [`BreakerBuilder`] for the settings and defaults.
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
            cool_down: Some(DEFAULT_COOL_DOWN),
            clock: None,
            track_totals: false,
            window: None,
            rate: 50.0,
            minimum_calls: None,
            half_open_calls: 1,
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
    /// use std::time::Duration;
    /// assert_eq!(CircuitBreaker::new(1)?.cool_down(), Some(Duration::from_secs(60)));
    /// let seed = CircuitBreaker::builder().without_cool_down().build()?;
    /// assert_eq!(seed.cool_down(), None);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn cool_down(&self) -> Option<Duration> {
        self.shared.cool_down.map(Duration::from_micros)
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
                let slot = Arc::new(Slot::new(key, generation, &self.shared));
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
                state_changed(&self.shared, name, t)
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
        // A removed slot may linger in a cache: it counts as a miss.
        let live = |slot: &Slot| (!slot.is_removed()).then(|| f(slot));
        if let Some(Some(r)) = name_cache::with(self.id, set, name, live) {
            return Some(r);
        }
        let hot = self.hot.load();
        if let Some((key, slot)) = hot.get_key_value(name) {
            if !slot.is_removed() {
                name_cache::insert(self.id, set, key, slot);
                return Some(f(slot));
            }
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
        let t = self.on_slot(name, |slot| slot.record_failure(&self.shared));
        self.report(name, t);
    }

    /// Records a success of `name`: its count drops to zero and it closes
    /// (from open or half-open). A success on a closed name with no
    /// failures writes nothing. (This is the seed's name-level success; a
    /// call's outcome reported through [`call`](Self::call) or a
    /// [`Permit`] counts only in the state the call was admitted in.)
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
    /// lags 2⁸ generations behind and wraps back to life. Touches atomics
    /// only while a shard is read-locked.
    fn sweep(&self) {
        self.names.for_each(|_, slot| slot.rebase(&self.shared));
    }

    /// Asks to make a call on `name` (created if absent).
    ///
    /// - Closed: `Some` ordinary permit (nothing is written).
    /// - Open, with a cool-down that has elapsed since it opened: the name
    ///   turns [`State::HalfOpen`] and up to `half_open_calls` callers
    ///   (default 1) get `Some` **trial** permit; everyone else gets `None`
    ///   until the trials decide.
    /// - Otherwise `None` (see [`acquire`](Self::acquire) for how long to
    ///   wait).
    ///
    /// Report the call's outcome with [`Permit::success`] or
    /// [`Permit::failure`]; see [`Permit`] for when an outcome counts and
    /// what dropping a permit does.
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
        self.acquire(name).ok()
    }

    /// [`try_acquire`](Self::try_acquire), saying how long to wait when
    /// the call is rejected ([`Rejected::retry_after`]).
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// use raceless::clock::ManualClock;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let breaker = CircuitBreaker::builder()
    ///     .failure_threshold(1)
    ///     .cool_down(Duration::from_secs(10))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// breaker.acquire("db").unwrap().failure();
    /// clock.advance(Duration::from_secs(4));
    /// let rejected = breaker.acquire("db").unwrap_err();
    /// assert_eq!(rejected.retry_after, Some(Duration::from_secs(6)));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn acquire(&self, name: &str) -> Result<Permit, Rejected> {
        handle::acquire(&self.slot(name), &self.shared)
    }

    /// Runs `f` if `name` admits a call, and records its outcome: `Ok` is
    /// a success, `Err` a failure. Rejected calls do not run
    /// ([`CallError::Rejected`], with how long to wait). The outcome counts
    /// only in the state the call was admitted in (see [`Permit`]); a panic
    /// in `f` records nothing and frees a trial place.
    ///
    /// ```
    /// use raceless::breaker::{CallError, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new(2)?;
    /// assert_eq!(breaker.call("db", || Ok::<_, String>(42)), Ok(42));
    /// for _ in 0..2 {
    ///     let _ = breaker.call("db", || Err::<(), _>("timeout"));
    /// }
    /// assert!(matches!(breaker.call("db", || Ok::<_, &str>(1)), Err(CallError::Rejected(_))));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn call<T, E>(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        self.call_with(name, |_| true, f)
    }

    /// [`call`](Self::call), with `is_failure` deciding which errors count
    /// as failures (failsafe's `call_with`, resilience4j's
    /// `recordExceptions`): an error it returns `false` for counts as a
    /// success — the upstream answered — and is still returned as
    /// [`CallError::Failed`].
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::new(1)?;
    /// let server_error = |status: &u16| *status >= 500;
    /// let _ = breaker.call_with("api", server_error, || Err::<(), u16>(404));
    /// assert!(!breaker.is_open("api")); // a 404 is the client's problem
    /// let _ = breaker.call_with("api", server_error, || Err::<(), u16>(503));
    /// assert!(breaker.is_open("api"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn call_with<T, E>(
        &self,
        name: &str,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        // A name in this thread's cache: the whole call runs on the cached
        // slot (borrowed, no reference count touched), user code included —
        // no internal lock is held there, only the cache's thread-local
        // borrow, which a nested call on this thread only reads.
        let set = name_cache::set_of(name);
        let mut job = Some((is_failure, f));
        let hit = name_cache::with(self.id, set, name, |slot| {
            if slot.is_removed() {
                return None;
            }
            let (is_failure, f) = job.take()?;
            Some(handle::call_on(slot, &self.shared, is_failure, f))
        });
        if let Some(Some(result)) = hit {
            return result;
        }
        let Some((is_failure, f)) = job else {
            unreachable!("the job runs only on a hit, and a hit returns above")
        };
        // Otherwise two lookups (admit, then record) instead of one owned
        // permit; the slot id in the ticket keeps a removed and re-created
        // name from taking the outcome.
        let (admitted, t) = self.on_slot(name, |slot| {
            let (admitted, t) = slot.acquire(&self.shared);
            (admitted.map(|ticket| (ticket, slot.id())), t)
        });
        self.report(name, t);
        let (ticket, id) = admitted.map_err(|r| {
            CallError::Rejected(Rejected {
                retry_after: r.retry_after,
            })
        })?;
        let guard = CallGuard {
            breaker: self,
            name,
            ticket,
            id,
            armed: true,
        };
        let result = f();
        guard.finish(CallOutcome::of(&result, is_failure).into());
        result.map_err(CallError::Failed)
    }

    /// Awaits `f` if `name` admits a call, and records its outcome like
    /// [`call`](Self::call).
    ///
    /// **Cancellation.** If the returned future is dropped before `f`
    /// completes (a client went away, a `select!` or timeout gave up), its
    /// permit is released: nothing is recorded, and a half-open trial it
    /// held is offered to the next caller at once. The future is `Send`
    /// when `f` and its output are.
    ///
    /// ```
    /// use raceless::breaker::{CallError, CircuitBreaker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let breaker = CircuitBreaker::new(1)?;
    /// let body = breaker.call_async("upstream", async { Ok::<_, std::io::Error>("hello") }).await;
    /// assert_eq!(body.unwrap(), "hello");
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// # }).unwrap();
    /// ```
    pub async fn call_async<T, E>(
        &self,
        name: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError<E>> {
        self.call_async_with(name, |_| true, f).await
    }

    /// [`call_async`](Self::call_async) with an error classifier, like
    /// [`call_with`](Self::call_with).
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let breaker = CircuitBreaker::new(1)?;
    /// let r = breaker.call_async_with("api", |s: &u16| *s >= 500, async { Err::<(), u16>(404) }).await;
    /// assert!(r.is_err() && !breaker.is_open("api"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// # }).unwrap();
    /// ```
    pub async fn call_async_with<T, E>(
        &self,
        name: &str,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError<E>> {
        let permit = self.acquire(name).map_err(CallError::Rejected)?;
        // Dropped at this await, the future drops the permit: released.
        let result = f.await;
        permit.finish(is_failure, result)
    }

    /// How long until a call on `name` may run: `None` unless the name is
    /// open (or half-open with every trial out) and a cool-down is
    /// configured. For a server's `Retry-After` header.
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    /// use raceless::clock::ManualClock;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let breaker = CircuitBreaker::builder()
    ///     .failure_threshold(1)
    ///     .cool_down(Duration::from_secs(30))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// assert_eq!(breaker.retry_after("db"), None);
    /// breaker.record_failure("db");
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(breaker.retry_after("db"), Some(Duration::from_secs(20)));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn retry_after(&self, name: &str) -> Option<Duration> {
        self.read(name, None, |slot| slot.retry_after(&self.shared))
    }

    /// Forgets `name`: its state, counts and metrics are dropped, and the
    /// next operation on it starts a fresh, closed name. `false` if it was
    /// not known. Names built from request data (a host, a tenant) stay
    /// bounded by removing the ones no longer used.
    ///
    /// **Handles and permits of a removed name** are detached: they keep
    /// working on the removed state, which the breaker no longer reports,
    /// and their outcomes never reach the fresh name. Its memory is freed
    /// when the last of them is dropped and the lookup caches have moved on
    /// (the shared snapshot is rebuilt after a few lookups miss it; each
    /// thread's cache holds at most 128 names).
    ///
    /// ```
    /// use raceless::breaker::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_failure("tenant-42");
    /// assert!(breaker.remove("tenant-42"));
    /// assert!(!breaker.is_open("tenant-42"));
    /// assert!(breaker.metrics().is_empty());
    /// assert!(!breaker.remove("tenant-42"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn remove(&self, name: &str) -> bool {
        // Marked under the shard write lock, in the same step that unlinks
        // it: a map reader sees the slot unmarked and linked, or not at all.
        let removed = self
            .names
            .remove_if(name, |_, slot| {
                slot.mark_removed();
                true
            })
            .is_some();
        if removed {
            tracing::debug!(name, "breaker name removed");
            self.count_miss(self.hot.load().len());
        }
        removed
    }

    /// How many names the breaker holds.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.record_success("a");
    /// assert_eq!(breaker.len(), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the breaker holds no names.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// assert!(CircuitBreaker::new(1)?.is_empty());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let (admitted, t) = self.on_slot(name, |slot| slot.acquire(&self.shared));
        self.report(name, t);
        admitted.is_ok()
    }
    fn admit_call(&self, name: &str) -> Result<CallTicket, Rejected> {
        let (admitted, t) = self.on_slot(name, |slot| {
            let (admitted, t) = slot.acquire(&self.shared);
            (
                admitted.map(|ticket| CallTicket {
                    ticket,
                    slot: slot.id(),
                }),
                t,
            )
        });
        self.report(name, t);
        admitted.map_err(|r| Rejected {
            retry_after: r.retry_after,
        })
    }
    fn end_call(&self, name: &str, ticket: CallTicket, outcome: CallOutcome) {
        let end = End::from(outcome);
        let t = self
            .lookup(name, |slot| {
                (slot.id() == ticket.slot)
                    .then(|| slot.end(&self.shared, ticket.ticket, end, false))
            })
            .flatten()
            .flatten();
        self.report(name, t);
    }
    fn retry_after(&self, name: &str) -> Option<Duration> {
        CircuitBreaker::retry_after(self, name)
    }
    fn remove(&self, name: &str) -> bool {
        CircuitBreaker::remove(self, name)
    }
    fn state(&self, name: &str) -> State {
        CircuitBreaker::state(self, name)
    }
}

/// Records a by-name call's end when dropped: `finish` with the outcome,
/// or released if the call panicked.
struct CallGuard<'a> {
    breaker: &'a CircuitBreaker,
    name: &'a str,
    ticket: state::Ticket,
    id: u64,
    armed: bool,
}

impl CallGuard<'_> {
    #[inline]
    fn finish(mut self, end: End) {
        self.armed = false;
        self.end(end);
    }

    #[inline]
    fn end(&self, end: End) {
        let t = self
            .breaker
            .lookup(self.name, |slot| {
                (slot.id() == self.id)
                    .then(|| slot.end(&self.breaker.shared, self.ticket, end, false))
            })
            .flatten()
            .flatten();
        self.breaker.report(self.name, t);
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.end(End::Released);
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
        shared.emit(|| state_changed(shared, slot.name.clone(), t));
    }
}

fn state_changed(shared: &Shared, name: std::sync::Arc<str>, t: Transition) -> BreakerEvent {
    let open_until = match (t.to, shared.cool_down) {
        (State::Open, Some(cool_down)) => {
            Some(shared.clock.now() + Duration::from_micros(cool_down))
        }
        _ => None,
    };
    BreakerEvent::StateChanged {
        name,
        from: t.from,
        to: t.to,
        open_until,
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
