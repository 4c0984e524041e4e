//! Sharded-mutex baselines (feature `parking_lot`): what a user writes by
//! hand instead of raceless — a `parking_lot::Mutex` per key in a
//! `DashMap` — for `arcs`, `breaker` and `stream`.
//!
//! Each type implements its component's trait with the same semantics as
//! the one-lock baseline and runs the same per-entry code (the rules of a
//! breaker name, the arc slot and its sweep, the session slot's steps,
//! from the sibling modules); only the locking differs: an entry's
//! operations take the map's shard lock (shared to find the entry,
//! exclusive to insert or remove it) and then the entry's own mutex. The
//! maps use the lock-free types' hasher (foldhash) and their shard count,
//! so the comparison is about per-key locking against lock-free protocols,
//! not about map tuning.
//!
//! Lock order: a shard lock, then an entry's mutex, never the other way
//! round (no map call is made while an entry's mutex is held), and no
//! user code (hooks, listeners, destructors of streams) runs under either.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::arcs::{run_claim_hook, sweep, Slot, SweepEntry};
use super::breaker::{Name, Rules};
use super::stream::{clear_locked, finish_locked, start_locked};
use crate::arcs::{
    pair_key, ArcEngineBuilder, ArcError, ArcEvent, ArcKind, ArcPhase, ArcRegistry, ArcSnapshot,
    Claim, ClaimTarget, Claimed, EndReason, EventSink, ProcessHook, ProcessReport, Start,
    StartHook,
};
use crate::breaker::{
    Breaker, BreakerBuilder, BreakerError, CallOutcome, CallTicket, CircuitBreaker, Rejected, State,
};
use crate::clock::SharedClock;
use crate::listener::ListenerId;
use crate::stream::registry::IdSource;
use crate::stream::{Busy, Pending, Saves, Session, StreamId, StreamOptions, StreamSlots};
use crate::sync::MapHasher;

/// Shards of every map here: DashMap's default (4 × the available
/// parallelism) but at least 64, as the lock-free types' maps.
fn shard_amount() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    (parallelism * 4).next_power_of_two().max(64)
}

fn map<K: Eq + Hash, V>() -> DashMap<K, V, MapHasher> {
    DashMap::with_hasher_and_shard_amount(MapHasher::default(), shard_amount())
}

// ---------------------------------------------------------------- breaker

/// One name: its state and the `reset_all` generation it last saw.
struct BreakerEntry {
    generation: u64,
    name: Name,
}

/// The `breaker` component as a user writes it by hand:
/// `DashMap<name, parking_lot::Mutex<per-name state>>`, the rules of
/// [`MutexBreaker`](super::MutexBreaker) applied to one name under its
/// mutex.
///
/// `reset_all` cannot lock every name at once, so it bumps a generation
/// counter (its linearization point) and each name applies the reset
/// lazily, under its own mutex, when it next sees a newer generation: an
/// operation on a name reads the generation with the name's mutex held,
/// so it takes effect entirely before or entirely after any `reset_all`
/// (`SeqCst` on the counter: every reader that comes later in real time
/// sees the bump, so no observer finds one name reset and another, reset
/// by the same call, not yet).
///
/// ```
/// use raceless::baseline::ShardedBreaker;
/// use raceless::breaker::Breaker;
///
/// let breaker = ShardedBreaker::new(2)?;
/// breaker.record_failure("db");
/// breaker.record_failure("db");
/// assert!(breaker.is_open("db"));
/// breaker.reset_all();
/// assert!(!breaker.is_open("db"));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
pub struct ShardedBreaker {
    rules: Rules,
    names: DashMap<Box<str>, Mutex<BreakerEntry>, MapHasher>,
    generation: AtomicU64,
    next_id: AtomicU64,
}

impl fmt::Debug for ShardedBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedBreaker")
            .field("failure_threshold", &self.rules.threshold())
            .finish_non_exhaustive()
    }
}

impl ShardedBreaker {
    /// A breaker opening a name after `failure_threshold` consecutive
    /// failures, with the builder's other defaults (like
    /// [`CircuitBreaker::new`]); 0 is [`BreakerError::ZeroThreshold`].
    ///
    /// ```
    /// assert!(raceless::baseline::ShardedBreaker::new(0).is_err());
    /// ```
    pub fn new(failure_threshold: u32) -> Result<Self, BreakerError> {
        Self::from_builder(CircuitBreaker::builder().failure_threshold(failure_threshold))
    }

    /// A breaker with the settings of `builder` (its `track_totals` is
    /// ignored: the baseline keeps no totals).
    ///
    /// ```
    /// use raceless::baseline::ShardedBreaker;
    /// use raceless::breaker::{Breaker, CircuitBreaker};
    ///
    /// let b = ShardedBreaker::from_builder(CircuitBreaker::builder().sliding_window(10))?;
    /// b.record_failure("x");
    /// assert_eq!(b.failures("x"), 1);
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn from_builder(builder: BreakerBuilder) -> Result<Self, BreakerError> {
        Ok(Self {
            rules: Rules::new(builder)?,
            names: map(),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        })
    }

    /// Runs `f` on `name` with its mutex held and any `reset_all` it has
    /// not seen applied; creates the name if `create`, else returns `None`
    /// for an unknown one. `f` gets the generation it runs in.
    fn with<R>(&self, name: &str, create: bool, f: impl FnOnce(u64, &mut Name) -> R) -> Option<R> {
        let entry = match self.names.get(name) {
            Some(entry) => entry,
            None if create => self
                .names
                .entry(name.into())
                .or_insert_with(|| {
                    // Relaxed: ids only need to be distinct.
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    Mutex::new(BreakerEntry {
                        generation: self.generation.load(Ordering::SeqCst),
                        name: Name::new(id),
                    })
                })
                .downgrade(),
            None => return None,
        };
        let mut e = entry.lock();
        let generation = self.generation.load(Ordering::SeqCst);
        if e.generation != generation {
            e.name.reset_for_all();
            e.generation = generation;
        }
        Some(f(generation, &mut e.name))
    }
}

impl Breaker for ShardedBreaker {
    fn record_failure(&self, name: &str) {
        self.with(name, true, |_, n| self.rules.record_failure(n));
    }

    fn record_success(&self, name: &str) {
        self.with(name, true, |_, n| self.rules.record_success(n));
    }

    fn is_open(&self, name: &str) -> bool {
        self.state(name) != State::Closed
    }

    fn failures(&self, name: &str) -> u32 {
        self.with(name, false, |_, n| self.rules.failures(n))
            .unwrap_or(0)
    }

    fn reset(&self, name: &str) {
        self.with(name, false, |_, n| Rules::close(n));
    }

    fn reset_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn times_opened(&self, name: &str) -> u64 {
        self.with(name, false, |_, n| n.times_opened()).unwrap_or(0)
    }

    fn admit(&self, name: &str) -> bool {
        self.admit_call(name).is_ok()
    }

    fn admit_call(&self, name: &str) -> Result<CallTicket, Rejected> {
        self.with(name, true, |generation, n| {
            self.rules.admit_call(generation, n)
        })
        .unwrap_or(Err(Rejected { retry_after: None }))
    }

    fn end_call(&self, name: &str, ticket: CallTicket, outcome: CallOutcome) {
        self.with(name, false, |generation, n| {
            self.rules.end_call(generation, n, ticket, outcome)
        });
    }

    fn state(&self, name: &str) -> State {
        self.with(name, false, |_, n| Rules::state_of(n))
            .unwrap_or(State::Closed)
    }

    fn retry_after(&self, name: &str) -> Option<Duration> {
        if !self.rules.has_cool_down() {
            return None;
        }
        let now = self.rules.now();
        self.with(name, false, |_, n| self.rules.retry_after(n, now))
            .flatten()
    }

    fn remove(&self, name: &str) -> bool {
        self.names.remove(name).is_some()
    }
}

// ------------------------------------------------------------------- arcs

/// The `arcs` component as a user writes it by hand:
/// `DashMap<pair, parking_lot::Mutex<arc>>`. `start`, `end` and the last
/// `progress` insert or remove the pair's entry under its shard's write
/// lock; `progress` and `status` find it under the shard's read lock and
/// work under the arc's mutex. Same semantics as
/// [`MutexArcEngine`](super::MutexArcEngine) (the same arc slot, hooks and
/// sweep); `active()` and `process_all` walk the map shard by shard, each
/// arc consistent on its own, as the lock-free engine's.
///
/// ```
/// use raceless::arcs::{ArcKind, ArcRegistry, EndReason};
/// use raceless::baseline::ShardedArcEngine;
/// # use std::time::Duration;
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = <ShardedArcEngine<u32, K>>::new();
/// assert!(engine.start(1, 2, K).unwrap().is_started());
/// assert!(!engine.start(2, 1, K).unwrap().is_started());
/// assert!(engine.end(&1, &2, EndReason::Manual).is_ok());
/// assert!(engine.end(&1, &2, EndReason::Manual).is_err());
/// ```
pub struct ShardedArcEngine<A, K> {
    arcs: DashMap<(A, A), Mutex<Slot<K>>, MapHasher>,
    /// Published arcs (changed under the shard lock of the entry's insert,
    /// publish or removal; `Relaxed`: a statistic, as `len()` documents).
    active: AtomicUsize,
    next_id: AtomicU64,
    clock: SharedClock,
    start_hook: Option<StartHook<A, K>>,
    process_hook: Option<ProcessHook<A, K>>,
    events: EventSink<A, K>,
}

impl<A, K> fmt::Debug for ShardedArcEngine<A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedArcEngine").finish_non_exhaustive()
    }
}

type ClaimResult<A, K> = Result<(ArcSnapshot<A, K>, u64), ArcSnapshot<A, K>>;

impl<A, K> ShardedArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    /// An engine with the system clock and no hooks.
    ///
    /// ```
    /// # use raceless::arcs::{ArcKind, ArcRegistry};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = <raceless::baseline::ShardedArcEngine<u8, K>>::new();
    /// assert!(engine.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::from_builder(ArcEngineBuilder::new())
    }

    /// Claims the pair: a new entry (pending if `pending`), or `Err` with
    /// the existing entry's snapshot.
    fn claim_slot(
        &self,
        a: &A,
        b: &A,
        kind: K,
        pending: bool,
    ) -> Result<ClaimResult<A, K>, ArcError> {
        let key = pair_key(a, b)?;
        Ok(match self.arcs.entry(key) {
            Entry::Occupied(e) => Err(e.get().lock().snapshot(e.key())),
            Entry::Vacant(v) => {
                // Relaxed: ids only need to be distinct.
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let slot = Slot::new(id, pending, kind, &self.clock);
                let snapshot = slot.snapshot(v.key());
                v.insert(Mutex::new(slot));
                if !pending {
                    self.active.fetch_add(1, Ordering::Relaxed);
                }
                Ok((snapshot, id))
            }
        })
    }

    /// Removes the published arc `id` of `key` (any if `None`), applying
    /// `last` to it first; `NotFound` if it is not there.
    fn remove_published(
        &self,
        key: &(A, A),
        id: Option<u64>,
        last: impl FnOnce(&mut Slot<K>),
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        let (_, slot) = self
            .arcs
            .remove_if(key, |_, slot| slot.lock().is_published(id))
            .ok_or(ArcError::NotFound)?;
        self.active.fetch_sub(1, Ordering::Relaxed);
        let mut slot = slot.into_inner();
        last(&mut slot);
        Ok(slot.snapshot(key))
    }

    fn progress_id(
        &self,
        key: &(A, A),
        id: Option<u64>,
        phase: ArcPhase,
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        let now = self.clock.monotonic();
        let snapshot = if phase == ArcPhase::Completed {
            self.remove_published(key, id, |slot| slot.progress(now, phase))?
        } else {
            let entry = self.arcs.get(key).ok_or(ArcError::NotFound)?;
            let mut slot = entry.lock();
            if !slot.is_published(id) {
                return Err(ArcError::NotFound);
            }
            slot.progress(now, phase);
            slot.snapshot(key)
        };
        self.events.emit(|| ArcEvent::Progressed(snapshot.clone()));
        if phase == ArcPhase::Completed {
            self.events
                .emit(|| ArcEvent::Ended(snapshot.clone(), EndReason::Completed));
        }
        Ok(snapshot)
    }

    fn end_id(
        &self,
        key: &(A, A),
        id: Option<u64>,
        reason: EndReason,
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        let snapshot = self.remove_published(key, id, |_| {})?;
        self.events
            .emit(|| ArcEvent::Ended(snapshot.clone(), reason));
        Ok(snapshot)
    }
}

impl<A, K> Default for ShardedArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<A, K> ClaimTarget<A, K> for ShardedArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn publish_claimed(&self, snapshot: &ArcSnapshot<A, K>, id: u64) -> Result<(), ArcError> {
        let key = &snapshot.agents;
        run_claim_hook(self.start_hook.as_ref(), snapshot, || {
            self.rollback_claimed(key, id)
        })?;
        if let Some(entry) = self.arcs.get(key) {
            // Nothing else touches a pending entry, so it is still ours.
            let mut slot = entry.lock();
            if slot.is_pending(id) {
                slot.publish();
                self.active.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        Ok(())
    }

    fn rollback_claimed(&self, key: &(A, A), id: u64) {
        // The entry is dropped after the shard lock is released.
        let _removed = self
            .arcs
            .remove_if(key, |_, slot| slot.lock().is_pending(id));
    }
}

impl<A, K> ArcRegistry<A, K> for ShardedArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn from_builder(builder: ArcEngineBuilder<A, K>) -> Self {
        Self {
            arcs: map(),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            clock: builder.clock,
            start_hook: builder.start_hook,
            process_hook: builder.process_hook,
            events: EventSink::new(),
        }
    }

    fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError> {
        let pending = self.start_hook.is_some();
        let (snapshot, id) = match self.claim_slot(&a, &b, kind, pending)? {
            Ok(ours) => ours,
            Err(existing) => return Ok(Start::AlreadyActive(existing)),
        };
        if pending {
            self.publish_claimed(&snapshot, id)?;
        } else {
            self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        }
        Ok(Start::Started(snapshot))
    }

    fn claim(self: &Arc<Self>, a: A, b: A, kind: K) -> Result<Claimed<A, K>, ArcError> {
        Ok(match self.claim_slot(&a, &b, kind, true)? {
            Ok((snapshot, id)) => Claimed::Claim(Claim::new(
                Arc::clone(self) as Arc<dyn ClaimTarget<A, K>>,
                snapshot,
                id,
            )),
            Err(existing) => Claimed::AlreadyActive(existing),
        })
    }

    fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = pair_key(a, b)?;
        self.progress_id(&key, None, phase)
    }

    fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = pair_key(a, b)?;
        self.end_id(&key, None, reason)
    }

    fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>> {
        let key = pair_key(a, b).ok()?;
        let entry = self.arcs.get(&key)?;
        let slot = entry.lock();
        slot.is_published(None).then(|| slot.snapshot(&key))
    }

    fn active(&self) -> Vec<ArcSnapshot<A, K>> {
        self.arcs
            .iter()
            .filter_map(|e| {
                let slot = e.value().lock();
                slot.is_published(None).then(|| slot.snapshot(e.key()))
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn pending(&self) -> usize {
        self.arcs
            .iter()
            .filter(|e| !e.value().lock().is_published(None))
            .count()
    }

    fn on_event<F>(&self, listener: F) -> ListenerId
    where
        F: Fn(&ArcEvent<A, K>) + Send + Sync + 'static,
    {
        self.events.add(listener)
    }

    fn remove_listener(&self, id: ListenerId) -> bool {
        self.events.remove(id)
    }

    fn process_all(&self) -> ProcessReport {
        let now = self.clock.monotonic();
        let arcs: Vec<SweepEntry<A, K>> = self
            .arcs
            .iter()
            .filter_map(|e| {
                let slot = e.value().lock();
                slot.is_published(None).then(|| slot.sweep_entry(e.key()))
            })
            .collect();
        sweep(
            arcs,
            now,
            self.process_hook.as_ref(),
            |key, id| self.end_id(key, Some(id), EndReason::Expired).is_ok(),
            |key, id, phase| self.progress_id(key, Some(id), phase).is_ok(),
        )
    }
}

// ----------------------------------------------------------------- stream

/// The `stream` component as a user writes it by hand: the live streams
/// in a `DashMap<StreamId, S>` and a `parking_lot::Mutex` per session in a
/// `DashMap<session id, Mutex<()>>`, guarding the session's slot. Same
/// semantics and the same steps under the session's lock as
/// [`MutexStreams`](super::MutexStreams) (the seed's fix: the cleanup
/// checks liveness, then re-reads the slot under the session's lock).
///
/// ```
/// use raceless::baseline::ShardedStreams;
/// use raceless::stream::{Pending, Session, StreamOptions, StreamSlots};
///
/// let streams: ShardedStreams<()> = ShardedStreams::with_options(StreamOptions::new());
/// let session = Session::new("s");
/// let id = streams.start(&session, Pending::new("hi"), ()).unwrap();
/// assert!(!streams.clear_stale(&session));
/// assert!(streams.finish(&session, id));
/// ```
pub struct ShardedStreams<S> {
    streams: DashMap<StreamId, S, MapHasher>,
    sessions: DashMap<String, Mutex<()>, MapHasher>,
    ids: IdSource,
    clock: SharedClock,
    saves: Saves,
}

impl<S> fmt::Debug for ShardedStreams<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedStreams").finish_non_exhaustive()
    }
}

impl<S> ShardedStreams<S> {
    /// Runs `f` with the session's mutex held (the session's entry is
    /// created on first use).
    fn locked<R>(&self, session: &Session, f: impl FnOnce() -> R) -> R {
        let entry = match self.sessions.get(session.id()) {
            Some(entry) => entry,
            None => self
                .sessions
                .entry(session.id().to_owned())
                .or_default()
                .downgrade(),
        };
        let _guard = entry.lock();
        f()
    }
}

impl<S: Send + Sync + 'static> StreamSlots<S> for ShardedStreams<S> {
    fn with_options(options: StreamOptions) -> Self {
        let (clock, saves) = options.into_parts();
        Self {
            streams: map(),
            sessions: map(),
            ids: IdSource::new(),
            clock,
            saves,
        }
    }

    fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy> {
        let started_at = self.clock.now();
        let installed = self.locked(session, || {
            start_locked(
                session,
                pending,
                started_at,
                stream,
                |id| self.is_live(id),
                |stream| {
                    let id = self.ids.next();
                    self.streams.insert(id, stream);
                    id
                },
            )
        });
        // A refused stream is dropped here, after unlocking.
        let (id, snapshot) = installed.map_err(|(busy, _stream)| busy)?;
        self.saves.save(snapshot);
        Ok(id)
    }

    fn clear_stale(&self, session: &Session) -> bool {
        let Some(stream_id) = session.active_id() else {
            return false;
        };
        if self.is_live(stream_id) {
            return false;
        }
        match self.locked(session, || clear_locked(session, stream_id)) {
            Some(snapshot) => {
                self.saves.save(snapshot);
                true
            }
            None => false,
        }
    }

    fn finish(&self, session: &Session, id: StreamId) -> bool {
        let emptied = self.locked(session, || finish_locked(session, id));
        // Dropped after the shard lock is released: a destructor is user
        // code.
        let stream = self.streams.remove(&id);
        drop(stream);
        match emptied {
            Some(snapshot) => {
                self.saves.save(snapshot);
                true
            }
            None => false,
        }
    }

    fn is_live(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.streams.len()
    }
}
