//! Mutex baseline of the `arcs` component: the seed's fix (one lock around
//! the whole `active_arcs` map, existence check and insert under it),
//! translated faithfully and made correct: the start hook, the process hook
//! and the listeners run after unlocking, like the lock-free engine's. A
//! start with a hook claims the pair with a pending entry under the lock,
//! runs the hook unlocked, then publishes or removes the entry under the
//! lock again — the same observable protocol as
//! [`ArcEngine`](crate::arcs::ArcEngine). The two-phase start
//! ([`ArcRegistry::claim`](crate::arcs::ArcRegistry::claim)) is the same
//! pending entry, published or removed by the [`Claim`]; expiry and ages
//! run on the clock's monotonic time.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use super::{Lock, MutexKind, StdMutex};
use crate::arcs::{
    is_expired, pair_key, run_process_hook, run_start_hook, ArcEngineBuilder, ArcError, ArcEvent,
    ArcKind, ArcPhase, ArcRegistry, ArcSnapshot, Claim, ClaimTarget, Claimed, EndReason, EventSink,
    ProcessHook, ProcessReport, Start, StartHook, MAX_EVENTS,
};
use crate::clock::SharedClock;
use crate::listener::ListenerId;

/// One map entry (one pair's arc), shared by every mutex baseline.
pub(super) struct Slot<K> {
    /// Identity of this arc (a later arc of the same pair has another).
    id: u64,
    /// Claimed by a start whose hook is still running.
    starting: bool,
    kind: K,
    started_at: SystemTime,
    /// The start by the clock's monotonic time (ages and expiry).
    started_mono: Duration,
    phase: ArcPhase,
    events: u64,
    last_progress: SystemTime,
}

impl<K: Clone> Slot<K> {
    /// A new arc `id`, pending (claimed, invisible) if `starting`.
    pub(super) fn new(id: u64, starting: bool, kind: K, clock: &SharedClock) -> Self {
        let now = clock.now();
        Slot {
            id,
            starting,
            kind,
            started_at: now,
            started_mono: clock.monotonic(),
            phase: ArcPhase::Initiation,
            events: 0,
            last_progress: now,
        }
    }

    /// Whether this is the published arc asked for (`None`: any).
    pub(super) fn is_published(&self, wanted: Option<u64>) -> bool {
        !self.starting && same_arc(wanted, self.id)
    }

    /// Whether this is the pending arc `id` (claimed, not yet published).
    pub(super) fn is_pending(&self, id: u64) -> bool {
        self.starting && self.id == id
    }

    /// Publishes a pending arc.
    pub(super) fn publish(&mut self) {
        self.starting = false;
    }

    /// `progress`: one more event, the last progress now (`now`: the
    /// clock's monotonic time), the new phase.
    pub(super) fn progress(&mut self, now: Duration, phase: ArcPhase) {
        self.events = (self.events + 1).min(MAX_EVENTS);
        // Ages on monotonic time, as the lock-free engine (which keeps them
        // to the millisecond).
        let age = now.saturating_sub(self.started_mono);
        self.last_progress = self.started_at + Duration::from_millis(age.as_millis() as u64);
        self.phase = phase;
    }

    /// What `process_all` needs of a published arc: its id, its start on
    /// monotonic time, its snapshot.
    pub(super) fn sweep_entry<A: Clone>(&self, key: &(A, A)) -> SweepEntry<A, K> {
        (self.id, self.started_mono, self.snapshot(key))
    }

    pub(super) fn snapshot<A: Clone>(&self, key: &(A, A)) -> ArcSnapshot<A, K> {
        ArcSnapshot {
            agents: key.clone(),
            kind: self.kind.clone(),
            phase: self.phase,
            events_triggered: self.events,
            started_at: self.started_at,
            last_progress: self.last_progress,
        }
    }
}

/// Whether the entry `id` is the arc asked for (`None`: any arc).
fn same_arc(wanted: Option<u64>, id: u64) -> bool {
    match wanted {
        None => true,
        Some(w) => w == id,
    }
}

/// An arc as `process_all` walks it: id, monotonic start, snapshot.
pub(super) type SweepEntry<A, K> = (u64, Duration, ArcSnapshot<A, K>);

/// `process_all` over a snapshot of the published arcs, shared by every
/// mutex baseline: expires the arcs past twice their duration (`end` of
/// that very arc), runs the process hook on the others (`progress` of
/// that very arc). No lock is held.
pub(super) fn sweep<A: Clone, K: ArcKind>(
    arcs: Vec<SweepEntry<A, K>>,
    now: Duration,
    process_hook: Option<&ProcessHook<A, K>>,
    end: impl Fn(&(A, A), u64) -> bool,
    progress: impl Fn(&(A, A), u64, ArcPhase) -> bool,
) -> ProcessReport {
    let mut report = ProcessReport::default();
    for (id, started, arc) in arcs {
        report.processed += 1;
        if is_expired(&arc.kind, started, now) {
            if end(&arc.agents, id) {
                report.expired += 1;
            }
            continue;
        }
        if let Some(hook) = process_hook {
            if let Some(phase) = run_process_hook(hook, &arc) {
                if progress(&arc.agents, id, phase) {
                    report.progressed += 1;
                    if phase == ArcPhase::Completed {
                        report.completed += 1;
                    }
                }
            }
        }
    }
    report
}

/// The start hook of a claimed arc, shared by every mutex baseline: runs
/// it (no lock held); on failure `rollback`s the claim and returns the
/// hook's error.
pub(super) fn run_claim_hook<A, K>(
    hook: Option<&StartHook<A, K>>,
    snapshot: &ArcSnapshot<A, K>,
    rollback: impl FnOnce(),
) -> Result<(), ArcError> {
    if let Some(hook) = hook {
        let key = &snapshot.agents;
        if let Err(e) = run_start_hook(hook, &key.0, &key.1, &snapshot.kind) {
            rollback();
            tracing::warn!(error = %e, "arc start hook failed; start rolled back");
            return Err(ArcError::Hook(e));
        }
    }
    Ok(())
}

struct Inner<A, K> {
    arcs: HashMap<(A, A), Slot<K>>,
    /// Published arcs (entries not `starting`).
    active: usize,
    next_id: u64,
}

/// The `arcs` baseline: every arc behind one `M::Mutex` (default
/// `std::sync::Mutex`), implementing [`ArcRegistry`] like
/// [`ArcEngine`](crate::arcs::ArcEngine).
///
/// ```
/// use raceless::arcs::{ArcKind, ArcRegistry, EndReason};
/// use raceless::baseline::MutexArcEngine;
/// # use std::time::Duration;
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = <MutexArcEngine<u32, K>>::new();
/// assert!(engine.start(1, 2, K).unwrap().is_started());
/// assert!(!engine.start(2, 1, K).unwrap().is_started());
/// assert!(engine.end(&1, &2, EndReason::Manual).is_ok());
/// assert!(engine.end(&1, &2, EndReason::Manual).is_err());
/// ```
pub struct MutexArcEngine<A, K, M: MutexKind = StdMutex>
where
    A: Send,
    K: Send,
{
    inner: M::Mutex<Inner<A, K>>,
    clock: SharedClock,
    start_hook: Option<StartHook<A, K>>,
    process_hook: Option<ProcessHook<A, K>>,
    events: EventSink<A, K>,
    _kind: PhantomData<M>,
}

impl<A: Send, K: Send, M: MutexKind> fmt::Debug for MutexArcEngine<A, K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexArcEngine")
            .field("mutex", &M::NAME)
            .finish_non_exhaustive()
    }
}

impl<A, K, M> MutexArcEngine<A, K, M>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
    M: MutexKind,
{
    /// A baseline with the system clock and no hooks.
    ///
    /// ```
    /// # use raceless::arcs::{ArcKind, ArcRegistry};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = <raceless::baseline::MutexArcEngine<u8, K>>::new();
    /// assert!(engine.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::from_builder(ArcEngineBuilder::new())
    }

    fn lookup(&self, a: &A, b: &A) -> Result<(A, A), ArcError> {
        pair_key(a, b)
    }

    /// Progresses the arc `id` of `key` (not a later arc of the pair).
    fn progress_id(
        &self,
        key: &(A, A),
        id: Option<u64>,
        phase: ArcPhase,
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        let now = self.clock.monotonic();
        let snapshot = self.inner.with(|inner| {
            let slot = inner
                .arcs
                .get_mut(key)
                .filter(|s| s.is_published(id))
                .ok_or(ArcError::NotFound)?;
            slot.progress(now, phase);
            let snapshot = slot.snapshot(key);
            if phase == ArcPhase::Completed {
                inner.arcs.remove(key);
                inner.active -= 1;
            }
            Ok(snapshot)
        })?;
        self.events.emit(|| ArcEvent::Progressed(snapshot.clone()));
        if phase == ArcPhase::Completed {
            self.events
                .emit(|| ArcEvent::Ended(snapshot.clone(), EndReason::Completed));
        }
        Ok(snapshot)
    }

    /// Ends the arc `id` of `key` (any arc of the pair if `None`).
    /// Claims the pair under the lock: a new entry, pending (invisible
    /// until published) if `pending`; `Err` with the existing entry's
    /// snapshot if the pair is taken.
    #[allow(clippy::type_complexity)]
    fn claim_slot(
        &self,
        a: &A,
        b: &A,
        kind: K,
        pending: bool,
    ) -> Result<Result<(ArcSnapshot<A, K>, u64), ArcSnapshot<A, K>>, ArcError> {
        let key = pair_key(a, b)?;
        Ok(self.inner.with(|inner| {
            if let Some(existing) = inner.arcs.get(&key) {
                return Err(existing.snapshot(&key));
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let slot = Slot::new(id, pending, kind, &self.clock);
            let snapshot = slot.snapshot(&key);
            inner.arcs.insert(key, slot);
            if !pending {
                inner.active += 1;
            }
            Ok((snapshot, id))
        }))
    }

    fn end_id(
        &self,
        key: &(A, A),
        id: Option<u64>,
        reason: EndReason,
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        let snapshot = self.inner.with(|inner| {
            match inner.arcs.get(key) {
                Some(s) if s.is_published(id) => {}
                _ => return Err(ArcError::NotFound),
            }
            inner.active -= 1;
            let slot = inner.arcs.remove(key).ok_or(ArcError::NotFound)?;
            Ok(slot.snapshot(key))
        })?;
        self.events
            .emit(|| ArcEvent::Ended(snapshot.clone(), reason));
        Ok(snapshot)
    }
}

impl<A, K, M> Default for MutexArcEngine<A, K, M>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
    M: MutexKind,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<A, K, M> ClaimTarget<A, K> for MutexArcEngine<A, K, M>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
    M: MutexKind,
{
    fn publish_claimed(&self, snapshot: &ArcSnapshot<A, K>, id: u64) -> Result<(), ArcError> {
        let key = &snapshot.agents;
        run_claim_hook(self.start_hook.as_ref(), snapshot, || {
            self.rollback_claimed(key, id)
        })?;
        self.inner.with(|inner| {
            // Nothing else touches a pending entry, so it is still ours.
            if let Some(slot) = inner.arcs.get_mut(key).filter(|s| s.is_pending(id)) {
                slot.publish();
                inner.active += 1;
            }
        });
        self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        Ok(())
    }

    fn rollback_claimed(&self, key: &(A, A), id: u64) {
        // The entry is dropped after the lock is released.
        let _removed = self.inner.with(|inner| {
            if inner.arcs.get(key).is_some_and(|s| s.is_pending(id)) {
                inner.arcs.remove(key)
            } else {
                None
            }
        });
    }
}

impl<A, K, M> ArcRegistry<A, K> for MutexArcEngine<A, K, M>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
    M: MutexKind,
{
    fn from_builder(builder: ArcEngineBuilder<A, K>) -> Self {
        Self {
            inner: M::Mutex::new(Inner {
                arcs: HashMap::new(),
                active: 0,
                next_id: 0,
            }),
            clock: builder.clock,
            start_hook: builder.start_hook,
            process_hook: builder.process_hook,
            events: EventSink::new(),
            _kind: PhantomData,
        }
    }

    fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError> {
        let pending = self.start_hook.is_some();
        let (snapshot, id) = match self.claim_slot(&a, &b, kind, pending)? {
            Ok(ours) => ours,
            Err(existing) => return Ok(Start::AlreadyActive(existing)),
        };
        if pending {
            // `claim` + `publish`, as the lock-free engine.
            self.publish_claimed(&snapshot, id)?;
        } else {
            self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        }
        Ok(Start::Started(snapshot))
    }

    fn claim(self: &std::sync::Arc<Self>, a: A, b: A, kind: K) -> Result<Claimed<A, K>, ArcError> {
        Ok(match self.claim_slot(&a, &b, kind, true)? {
            Ok((snapshot, id)) => Claimed::Claim(Claim::new(
                std::sync::Arc::clone(self) as std::sync::Arc<dyn ClaimTarget<A, K>>,
                snapshot,
                id,
            )),
            Err(existing) => Claimed::AlreadyActive(existing),
        })
    }

    fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = self.lookup(a, b)?;
        self.progress_id(&key, None, phase)
    }

    fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = self.lookup(a, b)?;
        self.end_id(&key, None, reason)
    }

    fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>> {
        let key = self.lookup(a, b).ok()?;
        self.inner.with(|inner| {
            inner
                .arcs
                .get(&key)
                .filter(|s| !s.starting)
                .map(|s| s.snapshot(&key))
        })
    }

    fn active(&self) -> Vec<ArcSnapshot<A, K>> {
        self.inner.with(|inner| {
            inner
                .arcs
                .iter()
                .filter(|(_, s)| !s.starting)
                .map(|(k, s)| s.snapshot(k))
                .collect()
        })
    }

    fn len(&self) -> usize {
        self.inner.with(|inner| inner.active)
    }

    fn pending(&self) -> usize {
        self.inner.with(|inner| inner.arcs.len() - inner.active)
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
        let arcs: Vec<SweepEntry<A, K>> = self.inner.with(|inner| {
            inner
                .arcs
                .iter()
                .filter(|(_, s)| !s.starting)
                .map(|(k, s)| s.sweep_entry(k))
                .collect()
        });
        sweep(
            arcs,
            now,
            self.process_hook.as_ref(),
            |key, id| self.end_id(key, Some(id), EndReason::Expired).is_ok(),
            |key, id, phase| self.progress_id(key, Some(id), phase).is_ok(),
        )
    }
}
