//! Resolved handles and permits: the hot path, with no hashing and no map.

use std::fmt;

use crate::sync::{Arc, CachePadded};

use super::state::{End, Shared, Slot, Ticket};
use super::{report, NameMetrics, Rejected, State};

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
        report(
            &self.shared,
            &self.slot,
            self.slot.record_failure(&self.shared),
        );
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
        report(
            &self.shared,
            &self.slot,
            self.slot.record_success(&self.shared),
        );
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

    /// [`CircuitBreaker::retry_after`](super::CircuitBreaker::retry_after) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// assert_eq!(h.retry_after(), None);
    /// h.record_failure();
    /// assert!(h.retry_after().is_some());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.slot.retry_after(&self.shared)
    }

    /// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// let permit = h.try_acquire().expect("closed: admitted");
    /// permit.failure();
    /// assert!(h.try_acquire().is_none()); // open: cooling down
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn try_acquire(&self) -> Option<Permit> {
        acquire(&self.slot, &self.shared).ok()
    }

    /// [`CircuitBreaker::acquire`](super::CircuitBreaker::acquire) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// h.acquire().unwrap().failure();
    /// assert!(h.acquire().unwrap_err().retry_after.is_some());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn acquire(&self) -> Result<Permit, Rejected> {
        acquire(&self.slot, &self.shared)
    }

    /// [`CircuitBreaker::call`](super::CircuitBreaker::call) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// assert_eq!(h.call(|| Ok::<_, ()>(7)).unwrap(), 7);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, super::CallError<E>> {
        self.call_with(|_| true, f)
    }

    /// [`CircuitBreaker::call_with`](super::CircuitBreaker::call_with) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// let r = h.call_with(|e: &&str| *e != "not found", || Err::<(), _>("not found"));
    /// assert!(r.is_err());
    /// assert!(!h.is_open()); // "not found" is not a failure of the upstream
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn call_with<T, E>(
        &self,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, super::CallError<E>> {
        call_on(&self.slot, &self.shared, is_failure, f)
    }

    /// [`CircuitBreaker::call_async`](super::CircuitBreaker::call_async) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// let r = block_on(h.call_async(async { Ok::<_, ()>(7) }));
    /// assert_eq!(r.unwrap(), 7);
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub async fn call_async<T, E>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, super::CallError<E>> {
        self.call_async_with(|_| true, f).await
    }

    /// [`CircuitBreaker::call_async_with`](super::CircuitBreaker::call_async_with) for this name.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let h = CircuitBreaker::new(1)?.handle("db");
    /// let call = h.call_async_with(|e: &u16| *e >= 500, async { Err::<(), u16>(404) });
    /// # let r = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(call);
    /// assert!(r.is_err() && !h.is_open());
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub async fn call_async_with<T, E>(
        &self,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, super::CallError<E>> {
        let permit = self.acquire().map_err(super::CallError::Rejected)?;
        // If this future is dropped at the await below, the permit is
        // dropped with it: released, nothing recorded.
        let result = f.await;
        permit.finish(is_failure, result)
    }
}

/// One synchronous call on `slot`: admitted (or rejected), run, recorded.
/// It borrows the slot for the call instead of owning a permit, so a call
/// on a healthy name touches no reference count and writes no shared line:
/// the word and generation loads that admit it, the user's `f`, and the one
/// load that shows its success changes nothing. A panic in `f` releases the
/// call (a trial's place is freed).
#[inline]
pub(super) fn call_on<T, E>(
    slot: &Slot,
    shared: &Shared,
    is_failure: impl FnOnce(&E) -> bool,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, super::CallError<E>> {
    let ticket = match slot.admit_closed(shared) {
        Some(ticket) => ticket,
        None => {
            let (admitted, t) = slot.acquire(shared);
            report(shared, slot, t);
            admitted.map_err(|r| {
                super::CallError::Rejected(Rejected {
                    retry_after: r.retry_after,
                })
            })?
        }
    };
    let mut guard = SlotCall {
        slot,
        shared,
        ticket,
        armed: true,
    };
    let result = f();
    guard.end(super::CallOutcome::of(&result, is_failure).into());
    result.map_err(super::CallError::Failed)
}

/// Ends a borrowed call; released if dropped before `end` (a panic).
struct SlotCall<'a> {
    slot: &'a Slot,
    shared: &'a Shared,
    ticket: Ticket,
    armed: bool,
}

impl SlotCall<'_> {
    #[inline]
    fn end(&mut self, end: End) {
        self.armed = false;
        let t = self.slot.end(self.shared, self.ticket, end, false);
        report(self.shared, self.slot, t);
    }
}

impl Drop for SlotCall<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.end(End::Released);
        }
    }
}

pub(super) fn acquire(slot: &SlotRef, shared: &Arc<Shared>) -> Result<Permit, Rejected> {
    let (outcome, transition) = slot.acquire(shared);
    report(shared, slot, transition);
    match outcome {
        Ok(ticket) => Ok(Permit {
            slot: slot.clone(),
            shared: shared.clone(),
            ticket,
            resolved: false,
        }),
        Err(refusal) => Err(Rejected {
            retry_after: refusal.retry_after,
        }),
    }
}

pub(super) fn metrics(slot: &Slot, shared: &Shared) -> NameMetrics {
    let word = slot.load(shared);
    let (successes, failures) = slot.totals();
    let totals = shared.track_totals;
    NameMetrics {
        name: slot.name.clone(),
        state: shared.state_of(word),
        consecutive_failures: slot.failures(shared),
        times_opened: slot.times_opened(),
        rejected_calls: slot.rejected(),
        total_successes: totals.then_some(successes),
        total_failures: totals.then_some(failures),
    }
}

/// Permission to make one call on a name, from
/// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire) or
/// [`CircuitBreaker::acquire`](super::CircuitBreaker::acquire). Report the
/// call's outcome with [`success`](Self::success) or
/// [`failure`](Self::failure).
///
/// A permit remembers the state its call was admitted in (the name's epoch
/// and the breaker's generation): **its outcome counts only if the name is
/// still in that state**. A call admitted while the name was closed that
/// finishes after the name opened neither closes it nor counts; a trial
/// permit's outcome counts only while its trial round runs. So a late
/// outcome never overwrites newer state. (The name-level
/// [`record_success`](super::CircuitBreaker::record_success) /
/// [`record_failure`](super::CircuitBreaker::record_failure) keep the
/// seed's meaning and always apply.)
///
/// **Drop rule.** Dropped without an outcome (a cancelled future, a panic
/// in the call, a forgotten permit), a permit is *released*: nothing is
/// recorded, and a half-open trial place it held is offered again at once.
/// A client that went away is not an upstream failure. A permit that is
/// never dropped ([`std::mem::forget`]) cannot wedge the name either: a
/// trial round still undecided a cool-down after it began is presumed lost
/// and the next caller starts a new one.
///
/// A permit is `Send + 'static`: it owns a reference to its name's state,
/// so it can be held across `.await` points and moved between tasks.
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
/// assert!(breaker.try_acquire("db").is_none()); // one trial at a time
/// drop(trial); // released: the trial is offered again at once
/// let trial = breaker.try_acquire("db").unwrap();
/// trial.success();
/// assert_eq!(breaker.state("db"), State::Closed);
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit {
    slot: SlotRef,
    shared: Arc<Shared>,
    ticket: Ticket,
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

    /// Whether this is a half-open trial permit (rather than an ordinary
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
        self.ticket.trial()
    }

    /// The call succeeded. On a closed name it zeroes the consecutive
    /// failures (consecutive mode) or enters the window (rate mode); a
    /// trial's success counts towards closing the name. Ignored if the name
    /// left the state the call was admitted in.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(2)?;
    /// breaker.record_failure("db");
    /// breaker.try_acquire("db").unwrap().success();
    /// assert_eq!(breaker.failures("db"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn success(self) {
        self.end(End::Success);
    }

    /// The call failed. On a closed name it counts (and may open it); a
    /// failed trial re-opens the name (consecutive mode) or counts towards
    /// the trial round's failure rate (rate mode). Ignored if the name left
    /// the state the call was admitted in.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.try_acquire("db").unwrap().failure();
    /// assert!(breaker.is_open("db"));
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn failure(self) {
        self.end(End::Failure);
    }

    /// Gives the permit back without an outcome (what dropping it does):
    /// nothing is recorded; a trial place is offered again.
    ///
    /// ```
    /// # use raceless::breaker::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(1)?;
    /// breaker.try_acquire("db").unwrap().release();
    /// assert_eq!(breaker.failures("db"), 0);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn release(self) {
        self.end(End::Released);
    }

    fn end(mut self, end: End) {
        self.resolved = true;
        let t = self.slot.end(&self.shared, self.ticket, end, false);
        report(&self.shared, &self.slot, t);
    }

    /// Records `result` (an error that `is_failure` rejects counts as a
    /// success: the upstream answered) and hands it back.
    pub(super) fn finish<T, E>(
        self,
        is_failure: impl FnOnce(&E) -> bool,
        result: Result<T, E>,
    ) -> Result<T, super::CallError<E>> {
        self.end(super::CallOutcome::of(&result, is_failure).into());
        result.map_err(super::CallError::Failed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.resolved {
            tracing::trace!(name = %self.slot.name, trial = self.ticket.trial(), "permit released unresolved");
            let t = self
                .slot
                .end(&self.shared, self.ticket, End::Released, false);
            report(&self.shared, &self.slot, t);
        }
    }
}
