//! Mutex baseline of the `breaker` component: the seed's own fix.
//!
//! cleveragents #7088 fixed its race with one `threading.Lock` around the
//! `failures` dict and the `disabled` set; this is that fix, translated
//! faithfully — every operation, reads included, takes the one lock — and
//! extended with the 0.2 rules (cool-down, trials, rate mode, epochs), so
//! that it doubles as their plain-code reference.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::{Lock, MutexKind, StdMutex};
use crate::breaker::{
    Breaker, BreakerBuilder, BreakerError, CallOutcome, CallTicket, CircuitBreaker, Rejected, State,
};
use crate::breaker::{Config, Ticket, SATURATED};
use crate::sync::MapHasher;

/// One name, as the rules describe it (no packing).
#[derive(Debug, Default)]
pub(super) struct Name {
    state: Phase,
    /// Consecutive failures (consecutive mode).
    count: u32,
    /// The window's outcomes, oldest first, `true` = failed (rate mode).
    window: VecDeque<bool>,
    epoch: u64,
    /// Monotonic µs the open or half-open phase began.
    since: u64,
    admitted: u32,
    succeeded: u32,
    failed: u32,
    times_opened: u64,
    rejected: u64,
    /// This incarnation of the name (a removed and re-created name is new).
    id: u64,
}

impl Name {
    /// A fresh name, incarnation `id`.
    pub(super) fn new(id: u64) -> Self {
        Name {
            id,
            ..Name::default()
        }
    }

    pub(super) fn times_opened(&self) -> u64 {
        self.times_opened
    }

    /// What a `reset_all` does to one name.
    pub(super) fn reset_for_all(&mut self) {
        self.state = Phase::Closed;
        self.count = 0;
        self.window.clear();
        self.epoch = 0;
        self.admitted = 0;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// The whole state the lock guards.
#[derive(Default)]
struct Names {
    names: HashMap<Box<str>, Name, MapHasher>,
    generation: u64,
    next_id: u64,
}

/// The breaker's rules applied to one [`Name`], the caller holding
/// whatever lock guards it: every mutex baseline (one lock around all
/// names here, a lock per name in [`ShardedBreaker`](super::ShardedBreaker))
/// runs these, so the rules are written once. `generation` is the
/// breaker's `reset_all` count as the caller sees it under its lock.
pub(super) struct Rules {
    config: Config,
}

impl Rules {
    pub(super) fn new(builder: BreakerBuilder) -> Result<Self, BreakerError> {
        Ok(Rules {
            config: builder.validate()?,
        })
    }

    pub(super) fn threshold(&self) -> u32 {
        self.config.threshold
    }

    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.config.clock.monotonic().as_micros()).unwrap_or(u64::MAX)
    }

    fn cool_down(&self) -> Option<u64> {
        self.config
            .cool_down
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// The name's state as the rules define it.
    pub(super) fn state_of(n: &Name) -> State {
        match n.state {
            Phase::Closed => State::Closed,
            Phase::Open => State::Open,
            Phase::HalfOpen => State::HalfOpen,
        }
    }

    fn open(&self, n: &mut Name, new_epoch: bool) {
        // The clock is read only on an opening (the Clock contract allows it
        // under a lock), so the common paths pay no clock read.
        n.state = Phase::Open;
        n.since = self.now();
        n.times_opened += 1;
        n.window.clear();
        if new_epoch {
            n.epoch += 1;
        }
        if self.config.rate.is_none() {
            n.count = n.count.max(self.config.threshold);
        }
    }

    fn reopen(&self, n: &mut Name) {
        n.count = self.config.threshold;
        self.open(n, true);
    }

    /// `reset(name)`, and a success outside the closed phase.
    pub(super) fn close(n: &mut Name) {
        let pristine = n.state == Phase::Closed && n.count == 0 && n.window.is_empty();
        if !pristine {
            n.state = Phase::Closed;
            n.count = 0;
            n.window.clear();
            n.epoch += 1;
        }
    }

    /// A closed-phase outcome (the window in rate mode, the count in
    /// consecutive mode).
    fn closed_outcome(&self, n: &mut Name, failed: bool) {
        match self.config.rate {
            Some(rate) => {
                n.window.push_back(failed);
                if n.window.len() > rate.window as usize {
                    n.window.pop_front();
                }
                let failures = n.window.iter().filter(|f| **f).count() as u64;
                if rate.trips(n.window.len() as u64, failures) {
                    self.open(n, false);
                }
            }
            None if failed => {
                n.count = n.count.saturating_add(1).min(SATURATED);
                if n.count >= self.config.threshold {
                    self.open(n, false);
                }
            }
            None => n.count = 0,
        }
    }

    /// `record_failure(name)`.
    pub(super) fn record_failure(&self, n: &mut Name) {
        match (n.state, self.config.rate) {
            (Phase::HalfOpen, _) => self.reopen(n),
            (Phase::Open, Some(_)) => {}
            (Phase::Open, None) => n.count = n.count.saturating_add(1).min(SATURATED),
            (Phase::Closed, _) => self.closed_outcome(n, true),
        }
    }

    /// `record_success(name)`.
    pub(super) fn record_success(&self, n: &mut Name) {
        if self.config.rate.is_some() && n.state == Phase::Closed {
            self.closed_outcome(n, false);
        } else {
            Self::close(n);
        }
    }

    /// `failures(name)`.
    pub(super) fn failures(&self, n: &Name) -> u32 {
        match (n.state, self.config.rate) {
            (Phase::HalfOpen, None) => self.config.threshold,
            (Phase::HalfOpen, Some(_)) => n.failed,
            (Phase::Open, Some(_)) => 0,
            (_, None) => n.count,
            (_, Some(_)) => n.window.iter().filter(|f| **f).count() as u32,
        }
    }

    /// `admit_call(name)`.
    pub(super) fn admit_call(&self, generation: u64, n: &mut Name) -> Result<CallTicket, Rejected> {
        let cool_down = self.cool_down();
        let k = self.config.half_open_calls;
        let ticket = |n: &Name, trial| CallTicket {
            ticket: Ticket::new(generation, n.epoch, trial),
            slot: n.id,
        };
        if n.state == Phase::Closed {
            return Ok(ticket(n, false));
        }
        let Some(cool_down) = cool_down else {
            n.rejected += 1;
            return Err(Rejected { retry_after: None });
        };
        if n.state == Phase::HalfOpen && n.admitted < k {
            n.admitted += 1;
            return Ok(ticket(n, true));
        }
        let now = self.now();
        let elapsed = now.saturating_sub(n.since);
        if elapsed >= cool_down {
            // Open: the cool-down is over; half-open with every trial out
            // for a cool-down: the round is presumed lost.
            n.state = Phase::HalfOpen;
            n.epoch += 1;
            n.since = now;
            n.admitted = 1;
            n.succeeded = 0;
            n.failed = 0;
            return Ok(ticket(n, true));
        }
        n.rejected += 1;
        Err(Rejected {
            retry_after: Some(Duration::from_micros(cool_down - elapsed)),
        })
    }

    /// `end_call(name, ticket, outcome)`.
    pub(super) fn end_call(
        &self,
        generation: u64,
        n: &mut Name,
        ticket: CallTicket,
        outcome: CallOutcome,
    ) {
        let k = self.config.half_open_calls;
        let t = ticket.ticket;
        if n.id != ticket.slot || !t.admitted_in(generation, n.epoch) {
            return; // admitted in a state that is gone
        }
        match (t.trial(), n.state, outcome) {
            (_, _, CallOutcome::Released) if !t.trial() => {}
            (true, Phase::HalfOpen, CallOutcome::Released) => {
                n.admitted = n.admitted.saturating_sub(1)
            }
            (true, Phase::HalfOpen, CallOutcome::Failure) if self.config.rate.is_none() => {
                self.reopen(n)
            }
            (true, Phase::HalfOpen, outcome) => {
                if outcome == CallOutcome::Failure {
                    n.failed += 1;
                } else {
                    n.succeeded += 1;
                }
                if n.succeeded + n.failed < k {
                    return;
                }
                match self.config.rate {
                    Some(rate) if rate.trial_trips(u64::from(k), u64::from(n.failed)) => {
                        self.reopen(n)
                    }
                    _ => Self::close(n),
                }
            }
            (false, Phase::Closed, outcome) => {
                self.closed_outcome(n, outcome == CallOutcome::Failure)
            }
            _ => {} // not in the phase it was admitted in
        }
    }

    /// `retry_after(name)`, `now` read before the caller's lock.
    pub(super) fn retry_after(&self, n: &Name, now: u64) -> Option<Duration> {
        let cool_down = self.cool_down()?;
        match n.state {
            Phase::Closed => None,
            Phase::HalfOpen if n.admitted < self.config.half_open_calls => None,
            _ => Some(Duration::from_micros(
                cool_down.saturating_sub(now.saturating_sub(n.since)),
            )),
        }
    }

    /// Whether a `retry_after` can be anything but `None` (a cool-down is
    /// configured), so callers can skip the clock read.
    pub(super) fn has_cool_down(&self) -> bool {
        self.config.cool_down.is_some()
    }
}

/// The seed's breaker (one lock around all names) behind a mutex of kind
/// `M` ([`StdMutex`] by default, `ParkingLotMutex` with the `parking_lot`
/// feature), extended with every rule of the lock-free
/// [`CircuitBreaker`]: cool-down and half-open trials, rate mode, outcome
/// epochs, cancellation. It is the yardstick the lock-free breaker is
/// measured against and the plain-code reference of its rules: each
/// operation is the rule as written, under one lock.
///
/// It uses the same hasher as the lock-free map (foldhash), so benchmarks
/// compare synchronization, not hash functions.
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
    rules: Rules,
    state: M::Mutex<Names>,
    kind: PhantomData<M>,
}

impl<M: MutexKind> fmt::Debug for MutexBreaker<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexBreaker")
            .field("mutex", &M::NAME)
            .field("failure_threshold", &self.rules.threshold())
            .finish_non_exhaustive()
    }
}

impl<M: MutexKind> MutexBreaker<M> {
    /// A breaker opening a name after `failure_threshold` consecutive
    /// failures, with the builder's other defaults (like
    /// [`CircuitBreaker::new`]); 0 is [`BreakerError::ZeroThreshold`].
    ///
    /// ```
    /// use raceless::baseline::{MutexBreaker, StdMutex};
    /// assert!(MutexBreaker::<StdMutex>::new(0).is_err());
    /// ```
    pub fn new(failure_threshold: u32) -> Result<Self, BreakerError> {
        Self::from_builder(CircuitBreaker::builder().failure_threshold(failure_threshold))
    }

    /// A breaker with the settings of `builder` (its `track_totals` is
    /// ignored: the baseline keeps no totals).
    ///
    /// ```
    /// use raceless::baseline::{MutexBreaker, StdMutex};
    /// use raceless::breaker::{Breaker, CircuitBreaker};
    ///
    /// let b = MutexBreaker::<StdMutex>::from_builder(CircuitBreaker::builder().sliding_window(10))?;
    /// b.record_failure("x");
    /// assert_eq!(b.failures("x"), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn from_builder(builder: BreakerBuilder) -> Result<Self, BreakerError> {
        Ok(Self {
            rules: Rules::new(builder)?,
            state: Lock::new(Names::default()),
            kind: PhantomData,
        })
    }

    fn name<'a>(s: &'a mut Names, name: &str) -> &'a mut Name {
        if !s.names.contains_key(name) {
            s.next_id += 1;
            s.names.insert(name.into(), Name::new(s.next_id));
        }
        s.names.get_mut(name).expect("just inserted")
    }
}

impl<M: MutexKind> Breaker for MutexBreaker<M> {
    fn record_failure(&self, name: &str) {
        self.state
            .with(|s| self.rules.record_failure(Self::name(s, name)))
    }

    fn record_success(&self, name: &str) {
        self.state
            .with(|s| self.rules.record_success(Self::name(s, name)))
    }

    fn is_open(&self, name: &str) -> bool {
        self.state(name) != State::Closed
    }

    fn failures(&self, name: &str) -> u32 {
        self.state
            .with(|s| s.names.get(name).map_or(0, |n| self.rules.failures(n)))
    }

    fn reset(&self, name: &str) {
        self.state.with(|s| {
            if let Some(n) = s.names.get_mut(name) {
                Rules::close(n);
            }
        })
    }

    fn reset_all(&self) {
        self.state.with(|s| {
            s.generation += 1;
            s.names.values_mut().for_each(Name::reset_for_all);
        })
    }

    fn times_opened(&self, name: &str) -> u64 {
        self.state
            .with(|s| s.names.get(name).map_or(0, Name::times_opened))
    }

    fn admit(&self, name: &str) -> bool {
        self.admit_call(name).is_ok()
    }

    fn admit_call(&self, name: &str) -> Result<CallTicket, Rejected> {
        self.state.with(|s| {
            let generation = s.generation;
            self.rules.admit_call(generation, Self::name(s, name))
        })
    }

    fn end_call(&self, name: &str, ticket: CallTicket, outcome: CallOutcome) {
        self.state.with(|s| {
            let generation = s.generation;
            if let Some(n) = s.names.get_mut(name) {
                self.rules.end_call(generation, n, ticket, outcome);
            }
        })
    }

    fn state(&self, name: &str) -> State {
        self.state
            .with(|s| s.names.get(name).map_or(State::Closed, Rules::state_of))
    }

    fn retry_after(&self, name: &str) -> Option<Duration> {
        if !self.rules.has_cool_down() {
            return None;
        }
        let now = self.rules.now();
        self.state
            .with(|s| self.rules.retry_after(s.names.get(name)?, now))
    }

    fn remove(&self, name: &str) -> bool {
        self.state.with(|s| s.names.remove(name).is_some())
    }
}
