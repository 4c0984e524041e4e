//! The `arcs` component's scaffolding: the seed's racy engine, a sequential
//! model, the concurrency checks (each returns the anomalies it counted),
//! the benchmark workloads and the seed-bug reproduction.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use raceless::arcs::{
    ArcEngine, ArcEngineBuilder, ArcError, ArcEvent, ArcKind, ArcPhase, ArcRegistry, ArcSnapshot,
    Claim, ClaimTarget, Claimed, EndReason, ProcessReport, Start,
};
use raceless::baseline::{MutexArcEngine, ParkingLotMutex, ShardedArcEngine};
use raceless::clock::{Clock, ManualClock};
use raceless::ListenerId;

use crate::model::SequentialSpec;
use crate::threads::run_concurrently;
use crate::workload::{impl_name, Reproduction, Workload, WorkloadDef};

/// The arc kind of tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestKind {
    /// Expected to last 10 s.
    Short,
    /// Expected to last 100 s.
    Long,
    /// Expected to last 10 s; the start hook of [`builder`] rejects it.
    Doomed,
}

impl ArcKind for TestKind {
    fn expected_duration(&self) -> Duration {
        match self {
            TestKind::Short | TestKind::Doomed => Duration::from_secs(10),
            TestKind::Long => Duration::from_secs(100),
        }
    }
}

/// The agent id of tests and benchmarks.
pub type Agent = u32;

/// A snapshot with the test types.
pub type Snap = ArcSnapshot<Agent, TestKind>;

/// A builder on `clock` whose start hook fails for [`TestKind::Doomed`]
/// (and succeeds otherwise), as [`Model`] expects.
pub fn builder(clock: &ManualClock) -> ArcEngineBuilder<Agent, TestKind> {
    ArcEngineBuilder::new().clock(clock.clone()).start_hook(
        |_: &Agent, _: &Agent, kind: &TestKind| {
            if *kind == TestKind::Doomed {
                Err("doomed arcs are rejected by the store".into())
            } else {
                Ok(())
            }
        },
    )
}

// ---------------------------------------------------------------------------
// The racy variant

type Listener<A, K> = Arc<dyn Fn(&ArcEvent<A, K>) + Send + Sync>;

/// The seed's engine before its fix. Each map operation is atomic on its
/// own (Python's GIL; here one short lock per operation), but `start`
/// checks `pair in active_arcs` and inserts in a separate step, `end`
/// checks and deletes separately, and `progress` reads the count and writes
/// it back separately. It yields inside each window so the race shows up on
/// two cores.
pub struct RacyArcEngine<A, K> {
    arcs: Mutex<HashMap<(A, A), ArcSnapshot<A, K>>>,
    /// Claimed, unpublished arcs by pair.
    claimed: Mutex<HashMap<(A, A), ArcSnapshot<A, K>>>,
    next_claim: std::sync::atomic::AtomicU64,
    listeners: Mutex<Vec<(ListenerId, Listener<A, K>)>>,
    builder: ArcEngineBuilder<A, K>,
    clock: Arc<dyn Clock>,
    /// Listener ids can only be minted by raceless: an idle engine does it.
    ids: ArcEngine<A, K>,
}

impl<A, K> RacyArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn emit(&self, event: ArcEvent<A, K>) {
        let list: Vec<_> = self.listeners.lock().unwrap().clone();
        for (_, f) in list {
            f(&event);
        }
    }

    fn key(a: &A, b: &A) -> Result<(A, A), ArcError> {
        match a.cmp(b) {
            std::cmp::Ordering::Less => Ok((a.clone(), b.clone())),
            std::cmp::Ordering::Greater => Ok((b.clone(), a.clone())),
            std::cmp::Ordering::Equal => Err(ArcError::SamePair),
        }
    }

    fn get(&self, key: &(A, A)) -> Option<ArcSnapshot<A, K>> {
        self.arcs.lock().unwrap().get(key).cloned()
    }
}

impl<A, K> ClaimTarget<A, K> for RacyArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn publish_claimed(&self, snapshot: &ArcSnapshot<A, K>, _token: u64) -> Result<(), ArcError> {
        let key = &snapshot.agents;
        if let Err(e) = self.builder.call_start_hook(&key.0, &key.1, &snapshot.kind) {
            self.claimed.lock().unwrap().remove(key);
            return Err(ArcError::Hook(e));
        }
        // Whatever claim is there now (racy: not checked to be ours).
        self.claimed.lock().unwrap().remove(key);
        self.arcs
            .lock()
            .unwrap()
            .insert(key.clone(), snapshot.clone());
        self.emit(ArcEvent::Started(snapshot.clone()));
        Ok(())
    }

    fn rollback_claimed(&self, agents: &(A, A), _token: u64) {
        self.claimed.lock().unwrap().remove(agents);
    }
}

impl<A, K> ArcRegistry<A, K> for RacyArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn from_builder(builder: ArcEngineBuilder<A, K>) -> Self {
        Self {
            arcs: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashMap::new()),
            next_claim: std::sync::atomic::AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
            clock: builder.shared_clock(),
            builder,
            ids: ArcEngine::new(),
        }
    }

    fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError> {
        let key = Self::key(&a, &b)?;
        // Check…
        if let Some(existing) = self.get(&key) {
            return Ok(Start::AlreadyActive(existing));
        }
        std::thread::yield_now();
        // …then act: the database insert, then the (overwriting) insert.
        self.builder
            .call_start_hook(&key.0, &key.1, &kind)
            .map_err(ArcError::Hook)?;
        let now = self.clock.now();
        let arc = ArcSnapshot {
            agents: key.clone(),
            kind,
            phase: ArcPhase::Initiation,
            events_triggered: 0,
            started_at: now,
            last_progress: now,
        };
        self.arcs.lock().unwrap().insert(key, arc.clone());
        self.emit(ArcEvent::Started(arc.clone()));
        Ok(Start::Started(arc))
    }

    fn claim(self: &Arc<Self>, a: A, b: A, kind: K) -> Result<Claimed<A, K>, ArcError> {
        let key = Self::key(&a, &b)?;
        // Check…
        if let Some(existing) = self.get(&key) {
            return Ok(Claimed::AlreadyActive(existing));
        }
        if let Some(existing) = self.claimed.lock().unwrap().get(&key) {
            return Ok(Claimed::AlreadyActive(existing.clone()));
        }
        std::thread::yield_now();
        // …then act: the (overwriting) claim.
        let now = self.clock.now();
        let arc = ArcSnapshot {
            agents: key.clone(),
            kind,
            phase: ArcPhase::Initiation,
            events_triggered: 0,
            started_at: now,
            last_progress: now,
        };
        let token = self
            .next_claim
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.claimed.lock().unwrap().insert(key, arc.clone());
        Ok(Claimed::Claim(Claim::new(
            Arc::clone(self) as Arc<dyn ClaimTarget<A, K>>,
            arc,
            token,
        )))
    }

    fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = Self::key(a, b)?;
        let mut arc = self.get(&key).ok_or(ArcError::NotFound)?;
        std::thread::yield_now();
        arc.events_triggered += 1;
        arc.phase = phase;
        arc.last_progress = self.clock.now();
        if phase == ArcPhase::Completed {
            self.arcs.lock().unwrap().remove(&key);
        } else {
            self.arcs.lock().unwrap().insert(key, arc.clone());
        }
        self.emit(ArcEvent::Progressed(arc.clone()));
        if phase == ArcPhase::Completed {
            self.emit(ArcEvent::Ended(arc.clone(), EndReason::Completed));
        }
        Ok(arc)
    }

    fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = Self::key(a, b)?;
        let arc = self.get(&key).ok_or(ArcError::NotFound)?;
        std::thread::yield_now();
        // The seed's `del active_arcs[key]`; its KeyError is swallowed here.
        self.arcs.lock().unwrap().remove(&key);
        self.emit(ArcEvent::Ended(arc.clone(), reason));
        Ok(arc)
    }

    fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>> {
        self.get(&Self::key(a, b).ok()?)
    }

    fn active(&self) -> Vec<ArcSnapshot<A, K>> {
        self.arcs.lock().unwrap().values().cloned().collect()
    }

    fn len(&self) -> usize {
        self.arcs.lock().unwrap().len()
    }

    fn pending(&self) -> usize {
        self.claimed.lock().unwrap().len()
    }

    fn on_event<F>(&self, listener: F) -> ListenerId
    where
        F: Fn(&ArcEvent<A, K>) + Send + Sync + 'static,
    {
        let id = self.ids.on_event(|_| {});
        self.listeners
            .lock()
            .unwrap()
            .push((id, Arc::new(listener)));
        id
    }

    fn remove_listener(&self, id: ListenerId) -> bool {
        let mut list = self.listeners.lock().unwrap();
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        list.len() != before
    }

    fn process_all(&self) -> ProcessReport {
        let now = self.clock.now();
        let mut report = ProcessReport::default();
        for arc in self.active() {
            report.processed += 1;
            let limit = arc.kind.expected_duration() * 2;
            if now.duration_since(arc.started_at).is_ok_and(|e| e > limit) {
                let (a, b) = &arc.agents;
                if self.end(a, b, EndReason::Expired).is_ok() {
                    report.expired += 1;
                }
            } else if let Some(phase) = self.builder.call_process_hook(&arc) {
                let (a, b) = &arc.agents;
                if self.progress(a, b, phase).is_ok() {
                    report.progressed += 1;
                    report.completed += usize::from(phase == ArcPhase::Completed);
                }
            }
        }
        report
    }
}

// ---------------------------------------------------------------------------
// The sequential model

/// One operation of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `start(a, b, kind)`.
    Start(Agent, Agent, TestKind),
    /// `progress(a, b, phase)`.
    Progress(Agent, Agent, ArcPhase),
    /// `end(a, b, Manual)`.
    End(Agent, Agent),
    /// `status(a, b)`.
    Status(Agent, Agent),
    /// `active()` (sorted by pair).
    Active,
    /// `len()`.
    Len,
    /// Advance the clock by this many seconds.
    Advance(u64),
    /// `process_all()`.
    ProcessAll,
}

/// An error, without the hook's payload (so results compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// [`ArcError::SamePair`].
    SamePair,
    /// [`ArcError::NotFound`].
    NotFound,
    /// [`ArcError::Hook`].
    Hook,
}

impl From<ArcError> for Error {
    fn from(e: ArcError) -> Self {
        match e {
            ArcError::SamePair => Error::SamePair,
            ArcError::NotFound => Error::NotFound,
            _ => Error::Hook,
        }
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// From `start`: `(started, arc)` or an error.
    Start(Result<(bool, Snap), Error>),
    /// From `progress` / `end`.
    Arc(Result<Snap, Error>),
    /// From `status`.
    Status(Option<Snap>),
    /// From `active`, sorted by pair.
    Active(Vec<Snap>),
    /// From `len`.
    Len(usize),
    /// From `process_all`.
    Report(ProcessReport),
    /// From `Advance`.
    Unit,
}

/// The sequential specification of an arc registry built with
/// [`builder`] on a [`ManualClock`] (no process hook).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    arcs: BTreeMap<(Agent, Agent), Snap>,
    now: SystemTime,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            arcs: BTreeMap::new(),
            now: ManualClock::start(),
        }
    }
}

fn sorted(a: Agent, b: Agent) -> Result<(Agent, Agent), Error> {
    match a.cmp(&b) {
        std::cmp::Ordering::Less => Ok((a, b)),
        std::cmp::Ordering::Greater => Ok((b, a)),
        std::cmp::Ordering::Equal => Err(Error::SamePair),
    }
}

impl SequentialSpec for Model {
    type Op = Op;
    type Ret = Ret;

    fn apply(&mut self, op: &Op) -> Ret {
        match *op {
            Op::Start(a, b, kind) => Ret::Start(sorted(a, b).and_then(|key| {
                if let Some(arc) = self.arcs.get(&key) {
                    return Ok((false, arc.clone()));
                }
                if kind == TestKind::Doomed {
                    return Err(Error::Hook);
                }
                let arc = ArcSnapshot {
                    agents: key,
                    kind,
                    phase: ArcPhase::Initiation,
                    events_triggered: 0,
                    started_at: self.now,
                    last_progress: self.now,
                };
                self.arcs.insert(key, arc.clone());
                Ok((true, arc))
            })),
            Op::Progress(a, b, phase) => Ret::Arc(sorted(a, b).and_then(|key| {
                let arc = self.arcs.get_mut(&key).ok_or(Error::NotFound)?;
                arc.events_triggered += 1;
                arc.phase = phase;
                arc.last_progress = self.now;
                let arc = arc.clone();
                if phase == ArcPhase::Completed {
                    self.arcs.remove(&key);
                }
                Ok(arc)
            })),
            Op::End(a, b) => {
                Ret::Arc(sorted(a, b).and_then(|key| self.arcs.remove(&key).ok_or(Error::NotFound)))
            }
            Op::Status(a, b) => Ret::Status(
                sorted(a, b)
                    .ok()
                    .and_then(|key| self.arcs.get(&key).cloned()),
            ),
            Op::Active => Ret::Active(self.arcs.values().cloned().collect()),
            Op::Len => Ret::Len(self.arcs.len()),
            Op::Advance(secs) => {
                self.now += Duration::from_secs(secs);
                Ret::Unit
            }
            Op::ProcessAll => {
                let now = self.now;
                let before = self.arcs.len();
                self.arcs.retain(|_, arc| {
                    let limit = arc.kind.expected_duration() * 2;
                    !now.duration_since(arc.started_at).is_ok_and(|e| e > limit)
                });
                Ret::Report(ProcessReport {
                    processed: before,
                    progressed: 0,
                    completed: 0,
                    expired: before - self.arcs.len(),
                })
            }
        }
    }
}

/// Applies `op` to a real registry built with [`builder`] on `clock`, and
/// returns what it returned in the model's terms.
pub fn apply<R: ArcRegistry<Agent, TestKind>>(r: &R, clock: &ManualClock, op: &Op) -> Ret {
    match *op {
        Op::Start(a, b, kind) => Ret::Start(
            r.start(a, b, kind)
                .map(|s| (s.is_started(), s.into_inner()))
                .map_err(Error::from),
        ),
        Op::Progress(a, b, phase) => Ret::Arc(r.progress(&a, &b, phase).map_err(Error::from)),
        Op::End(a, b) => Ret::Arc(r.end(&a, &b, EndReason::Manual).map_err(Error::from)),
        Op::Status(a, b) => Ret::Status(r.status(&a, &b)),
        Op::Active => {
            let mut all = r.active();
            all.sort_by_key(|arc| arc.agents);
            Ret::Active(all)
        }
        Op::Len => Ret::Len(r.len()),
        Op::Advance(secs) => {
            clock.advance(Duration::from_secs(secs));
            Ret::Unit
        }
        Op::ProcessAll => Ret::Report(r.process_all()),
    }
}

// ---------------------------------------------------------------------------
// Concurrency checks: each returns the anomalies it counted.

/// Counts `Started` results and `Started` events per start.
fn counting_started<R: ArcRegistry<Agent, TestKind>>(r: &R) -> Arc<AtomicU64> {
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    r.on_event(move |e| {
        if matches!(e, ArcEvent::Started(_)) {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    events
}

/// `threads` threads start one pair at once (half as `(b, a)`), `rounds`
/// times on fresh registries. Returns the duplicate starts: `Started`
/// results beyond one, plus `Started` events beyond one, plus
/// `AlreadyActive` answers that do not carry the winner's arc.
pub fn duplicate_starts<R: ArcRegistry<Agent, TestKind>>(
    make: impl Fn() -> R,
    threads: usize,
    rounds: usize,
) -> u64 {
    let mut anomalies = 0;
    for _ in 0..rounds {
        let r = make();
        let events = counting_started(&r);
        let results = run_concurrently(threads, |t| {
            let (a, b) = if t % 2 == 0 { (1, 2) } else { (2, 1) };
            r.start(a, b, TestKind::Long)
        });
        let winners: Vec<_> = results
            .iter()
            .filter_map(|s| match s {
                Ok(Start::Started(arc)) => Some(arc.clone()),
                _ => None,
            })
            .collect();
        anomalies += (winners.len() as u64).abs_diff(1);
        anomalies += events.load(Ordering::Relaxed).abs_diff(1);
        if let Some(winner) = winners.first() {
            anomalies += results
                .iter()
                .filter(|s| matches!(s, Ok(Start::AlreadyActive(arc)) if arc.started_at != winner.started_at || arc.agents != winner.agents))
                .count() as u64;
        }
    }
    anomalies
}

/// `threads` threads take one pair at once, `rounds` times on fresh
/// registries: even threads through [`ArcRegistry::claim`] (publishing
/// their claim at once), odd ones through `start`, half as `(b, a)`.
/// Returns the duplicates: winners (claims plus `Started` results) beyond
/// one, plus `Started` events beyond one.
pub fn duplicate_claims<R: ArcRegistry<Agent, TestKind> + 'static>(
    make: impl Fn() -> R,
    threads: usize,
    rounds: usize,
) -> u64 {
    let mut anomalies = 0;
    for _ in 0..rounds {
        let r = Arc::new(make());
        let events = counting_started(&*r);
        let winners: u64 = run_concurrently(threads, |t| {
            let (a, b) = if t % 4 < 2 { (1, 2) } else { (2, 1) };
            if t % 2 == 0 {
                match r.claim(a, b, TestKind::Long) {
                    Ok(Claimed::Claim(claim)) => u64::from(claim.publish().is_ok()),
                    _ => 0,
                }
            } else {
                u64::from(matches!(
                    r.start(a, b, TestKind::Long),
                    Ok(Start::Started(_))
                ))
            }
        })
        .into_iter()
        .sum();
        anomalies += winners.abs_diff(1);
        anomalies += events.load(Ordering::Relaxed).abs_diff(1);
    }
    anomalies
}

/// `threads` threads end one active arc at once, `rounds` times. Returns
/// the successful ends beyond one plus the `Ended` events beyond one.
pub fn double_ends<R: ArcRegistry<Agent, TestKind>>(
    make: impl Fn() -> R,
    threads: usize,
    rounds: usize,
) -> u64 {
    let mut anomalies = 0;
    for _ in 0..rounds {
        let r = make();
        let ended = Arc::new(AtomicU64::new(0));
        let seen = ended.clone();
        r.on_event(move |e| {
            if matches!(e, ArcEvent::Ended(..)) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        });
        let _ = r.start(1, 2, TestKind::Long);
        let wins = run_concurrently(threads, |t| {
            let (a, b) = if t % 2 == 0 { (1, 2) } else { (2, 1) };
            r.end(&a, &b, EndReason::Manual).is_ok()
        })
        .into_iter()
        .filter(|won| *won)
        .count() as u64;
        anomalies += wins.abs_diff(1) + ended.load(Ordering::Relaxed).abs_diff(1);
    }
    anomalies
}

/// `threads` threads each progress one arc `per_thread` times. Returns the
/// lost events (expected count minus the arc's final count, either way).
pub fn lost_progress<R: ArcRegistry<Agent, TestKind>>(
    r: &R,
    threads: usize,
    per_thread: usize,
) -> u64 {
    let _ = r.start(1, 2, TestKind::Long);
    let ok: usize = run_concurrently(threads, |t| {
        (0..per_thread)
            .filter(|i| {
                let phase = if (t + i) % 2 == 0 {
                    ArcPhase::Escalation
                } else {
                    ArcPhase::Climax
                };
                r.progress(&1, &2, phase).is_ok()
            })
            .count()
    })
    .into_iter()
    .sum();
    let counted = r.status(&1, &2).map_or(0, |arc| arc.events_triggered);
    (ok as u64).abs_diff(counted) + ((threads * per_thread) as u64).abs_diff(ok as u64)
}

// ---------------------------------------------------------------------------
// Workloads and the reproduction

/// The number of pairs of the cycle workload.
pub const PAIRS: u32 = 1_000;

struct Cycle<R>(R);

impl<R: ArcRegistry<Agent, TestKind>> Workload for Cycle<R> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let r = &self.0;
        for i in 0..ops {
            let round = i / 4;
            let pair = ((round as usize * threads + thread) % PAIRS as usize) as u32;
            let (a, b) = (2 * pair, 2 * pair + 1);
            match i % 4 {
                0 => drop(black_box(r.start(a, b, TestKind::Long))),
                1 => drop(black_box(r.progress(&b, &a, ArcPhase::Escalation))),
                2 => drop(black_box(r.progress(&a, &b, ArcPhase::Climax))),
                _ => drop(black_box(r.end(&a, &b, EndReason::Manual))),
            }
        }
    }
}

/// The cycle with a two-phase start: claim and publish (no await in
/// between: the cost of the claim itself), progress twice, end.
struct ClaimCycle<R>(Arc<R>);

impl<R: ArcRegistry<Agent, TestKind> + 'static> Workload for ClaimCycle<R> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let r = &self.0;
        for i in 0..ops {
            let round = i / 4;
            let pair = ((round as usize * threads + thread) % PAIRS as usize) as u32;
            let (a, b) = (2 * pair, 2 * pair + 1);
            match i % 4 {
                0 => {
                    if let Ok(Claimed::Claim(claim)) = r.claim(a, b, TestKind::Long) {
                        drop(black_box(claim.publish()));
                    }
                }
                1 => drop(black_box(r.progress(&b, &a, ArcPhase::Escalation))),
                2 => drop(black_box(r.progress(&a, &b, ArcPhase::Climax))),
                _ => drop(black_box(r.end(&a, &b, EndReason::Manual))),
            }
        }
    }
}

fn make_claim_cycle<R: ArcRegistry<Agent, TestKind> + 'static>() -> Box<dyn Workload> {
    Box::new(ClaimCycle(Arc::new(R::from_builder(
        ArcEngineBuilder::new(),
    ))))
}

/// Benchmark-only workloads of the 0.2 API (not in the comparison run):
/// the start/progress/end cycle with `claim` + `publish` as its start.
pub fn async_workloads() -> Vec<WorkloadDef> {
    vec![WorkloadDef {
        component: "arcs",
        name: "claim-cycle-1000-pairs",
        description: "cycle-1000-pairs with claim + publish (no await between) as the start",
        impls: vec![
            (
                impl_name::LOCK_FREE,
                make_claim_cycle::<ArcEngine<Agent, TestKind>>,
            ),
            (
                impl_name::STD_MUTEX,
                make_claim_cycle::<MutexArcEngine<Agent, TestKind>>,
            ),
            (
                impl_name::PARKING_LOT,
                make_claim_cycle::<MutexArcEngine<Agent, TestKind, ParkingLotMutex>>,
            ),
            (
                impl_name::SHARDED_MUTEX,
                make_claim_cycle::<ShardedArcEngine<Agent, TestKind>>,
            ),
        ],
    }]
}

struct HotPair<R>(R);

impl<R: ArcRegistry<Agent, TestKind>> Workload for HotPair<R> {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        let r = &self.0;
        for i in 0..ops {
            if thread == 0 && i % 64 == 63 {
                drop(black_box(r.end(&0, &1, EndReason::Manual)));
            } else {
                let (a, b) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
                drop(black_box(r.start(a, b, TestKind::Long)));
            }
        }
    }
}

fn make<W: Workload + 'static, R: ArcRegistry<Agent, TestKind> + 'static>(
    wrap: fn(R) -> W,
) -> Box<dyn Workload> {
    Box::new(wrap(R::from_builder(ArcEngineBuilder::new())))
}

/// The workloads of this component: start/progress/end cycles over
/// [`PAIRS`] pairs, and many threads starting one hot pair.
pub fn workloads() -> Vec<WorkloadDef> {
    vec![
        WorkloadDef {
            component: "arcs",
            name: "cycle-1000-pairs",
            description: "start, progress, progress, end on 1,000 pairs, threads interleaved",
            impls: vec![
                (impl_name::LOCK_FREE, || make(Cycle::<ArcEngine<Agent, TestKind>>)),
                (impl_name::STD_MUTEX, || make(Cycle::<MutexArcEngine<Agent, TestKind>>)),
                (impl_name::PARKING_LOT, || {
                    make(Cycle::<MutexArcEngine<Agent, TestKind, ParkingLotMutex>>)
                }),
                (impl_name::SHARDED_MUTEX, || {
                    make(Cycle::<ShardedArcEngine<Agent, TestKind>>)
                }),
            ],
        },
        WorkloadDef {
            component: "arcs",
            name: "hot-pair-start",
            description: "every thread starts the same pair (mostly AlreadyActive); one thread ends it every 64 ops",
            impls: vec![
                (impl_name::LOCK_FREE, || make(HotPair::<ArcEngine<Agent, TestKind>>)),
                (impl_name::STD_MUTEX, || make(HotPair::<MutexArcEngine<Agent, TestKind>>)),
                (impl_name::PARKING_LOT, || {
                    make(HotPair::<MutexArcEngine<Agent, TestKind, ParkingLotMutex>>)
                }),
                (impl_name::SHARDED_MUTEX, || {
                    make(HotPair::<ShardedArcEngine<Agent, TestKind>>)
                }),
            ],
        },
    ]
}

/// The seed bug: concurrent starts of one pair on the racy engine (duplicate
/// `Started` results and callbacks) vs the lock-free engine.
pub fn reproduction() -> Reproduction {
    Reproduction {
        component: "arcs",
        what_is_lost: "duplicate starts and Started callbacks",
        racy: |threads, rounds| {
            duplicate_starts(
                || RacyArcEngine::from_builder(ArcEngineBuilder::new()),
                threads,
                rounds,
            )
        },
        lock_free: |threads, rounds| duplicate_starts(ArcEngine::new, threads, rounds),
    }
}
