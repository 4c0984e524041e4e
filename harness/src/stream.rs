//! Scaffolding of the `stream` component: the seed's racy cleanup, the
//! sequential model, the shared concurrency checks, the workloads and the
//! seed-bug reproduction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use raceless::baseline::{MutexStreams, ParkingLotMutex, ShardedStreams};
use raceless::stream::{
    Busy, Pending, Session, StreamId, StreamOptions, StreamRegistry, StreamSlots,
};

use crate::model::SequentialSpec;
use crate::threads::run_concurrently;
use crate::workload::{impl_name, MakeWorkload, Reproduction, Workload, WorkloadDef};

/// The seed's bug (hermes-webui #1533): `clear_stale` checks that the
/// session's stream is not live, then writes "no stream" without checking
/// that the slot still holds the stream it judged — a stream started in
/// between is clobbered. It yields in that window so the race shows up on
/// two cores. Everything else is the lock-free [`StreamRegistry`].
#[derive(Debug)]
pub struct RacyStreams<S> {
    inner: StreamRegistry<S>,
}

impl<S: Send + Sync + 'static> StreamSlots<S> for RacyStreams<S> {
    fn with_options(options: StreamOptions) -> Self {
        Self {
            inner: StreamRegistry::with_options(options),
        }
    }
    fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy> {
        self.inner.start(session, pending, stream)
    }
    fn clear_stale(&self, session: &Session) -> bool {
        let Some(id) = session.active_id() else {
            return false;
        };
        if self.inner.is_live(id) {
            return false;
        }
        std::thread::yield_now(); // the check-then-act window
        session.force_clear(); // `session.active_stream_id = None`
        true
    }
    fn finish(&self, session: &Session, id: StreamId) -> bool {
        self.inner.finish(session, id)
    }
    fn is_live(&self, id: StreamId) -> bool {
        self.inner.is_live(id)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// `n` sessions as restored after a restart: each names a stream of the
/// previous process (a registry that is gone), so each slot is stale.
pub fn stale_sessions(n: usize) -> Vec<Session> {
    let previous: StreamRegistry<()> = StreamRegistry::new();
    (0..n)
        .map(|i| {
            let session = Session::new(format!("s{i}"));
            // A fresh session is never busy; ignoring the result is safe.
            let _ = previous.start(&session, Pending::new("before the restart"), ());
            Session::restore(session.snapshot())
        })
        .collect()
}

/// The seed's scenario, many rounds: thread 0 starts a stream on one
/// session, checks that the slot holds it with its pending message, then
/// lets it die without cleaning up (it is unregistered through another
/// session, so the slot goes stale); threads `1..threads` call
/// `clear_stale` on the session in a loop (every session GET does).
/// Returns the clobbers seen: a started stream missing from its slot, or a
/// start refused although the previous stream was gone.
pub fn cleanup_vs_start<T: StreamSlots<u64>>(slots: &T, threads: usize, rounds: usize) -> u64 {
    let session = Session::new("hot");
    let elsewhere = Session::new("elsewhere");
    let done = AtomicBool::new(false);
    run_concurrently(threads.max(2), |t| {
        if t != 0 {
            // `Relaxed`: the flag only ends the loop; no data rides on it.
            while !done.load(Ordering::Relaxed) {
                slots.clear_stale(&session);
            }
            return 0;
        }
        let mut clobbers = 0;
        for round in 0..rounds {
            let message = format!("round {round}");
            match slots.start(&session, Pending::new(message.clone()), round as u64) {
                Ok(id) => {
                    std::thread::yield_now(); // let a cleanup in
                    match session.active() {
                        Some(a) if a.id == id && a.pending_message.as_ref() == Some(&message) => {}
                        _ => clobbers += 1,
                    }
                    // The worker dies; its session is not cleaned up.
                    slots.finish(&elsewhere, id);
                }
                Err(_) => clobbers += 1,
            }
        }
        done.store(true, Ordering::Relaxed);
        clobbers
    })
    .into_iter()
    .sum()
}

/// What [`concurrent_starts`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartRace {
    /// Sessions on which more than one start won (extra winners).
    pub extra_winners: u64,
    /// Sessions on which no start won (all were refused).
    pub no_winner: u64,
    /// Losers that were refused with another id than the slot's winner.
    pub wrong_busy: u64,
    /// Registered streams beyond one per session (losers that leaked).
    pub leaked: u64,
    /// Sessions whose slot does not hold the winner.
    pub lost_winner: u64,
}

/// `threads` threads each start a stream on every one of `rounds` sessions
/// (stale ones, as after a restart), in the same order, so starts on one
/// session overlap; counts what must be zero.
pub fn concurrent_starts<T: StreamSlots<u64>>(
    slots: &T,
    threads: usize,
    rounds: usize,
) -> StartRace {
    let sessions = stale_sessions(rounds);
    let before = slots.len();
    let results: Vec<Vec<Result<StreamId, Busy>>> = run_concurrently(threads, |t| {
        sessions
            .iter()
            .map(|s| slots.start(s, Pending::new(format!("from {t}")), t as u64))
            .collect()
    });
    let mut race = StartRace::default();
    for (i, session) in sessions.iter().enumerate() {
        let wins: Vec<StreamId> = results.iter().filter_map(|r| r[i].ok()).collect();
        match wins.len() {
            0 => race.no_winner += 1,
            1 => {}
            n => race.extra_winners += n as u64 - 1,
        }
        if let Some(&winner) = wins.first() {
            if session.active_id() != Some(winner) {
                race.lost_winner += 1;
            }
            race.wrong_busy += results
                .iter()
                .filter(|r| matches!(r[i], Err(b) if b.active != winner))
                .count() as u64;
        }
    }
    race.leaked = (slots.len() - before).saturating_sub(rounds) as u64;
    race
}

/// The sequential specification: sessions' slots and the set of live
/// streams. Streams are numbered in start order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Model {
    /// Session index → (stream number, pending message).
    pub slots: BTreeMap<usize, (usize, String)>,
    /// Live stream numbers.
    pub live: BTreeSet<usize>,
    /// How many streams were started.
    pub started: usize,
}

/// One operation on the model and on a real implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `start(session, Pending::new(message), _)`.
    Start {
        /// Session index.
        session: usize,
        /// The pending message.
        message: String,
    },
    /// `clear_stale(session)`.
    ClearStale {
        /// Session index.
        session: usize,
    },
    /// `finish(session, stream)`.
    Finish {
        /// Session index.
        session: usize,
        /// Stream number (must be `< started`).
        stream: usize,
    },
    /// `is_live(stream)`.
    IsLive {
        /// Stream number (must be `< started`).
        stream: usize,
    },
    /// `len()`.
    Len,
    /// `session.active()`: the stream number and pending message.
    Active {
        /// Session index.
        session: usize,
    },
}

/// What an [`Op`] returned, with streams as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `start` won with this stream.
    Started(usize),
    /// `start` was refused: this stream is live.
    Busy(usize),
    /// A boolean answer.
    Bool(bool),
    /// `len()`.
    Len(usize),
    /// `active()`.
    Active(Option<(usize, String)>),
}

impl SequentialSpec for Model {
    type Op = Op;
    type Ret = Ret;

    fn apply(&mut self, op: &Op) -> Ret {
        match op {
            Op::Start { session, message } => {
                if let Some((stream, _)) = self.slots.get(session) {
                    if self.live.contains(stream) {
                        return Ret::Busy(*stream);
                    }
                }
                let stream = self.started;
                self.started += 1;
                self.live.insert(stream);
                self.slots.insert(*session, (stream, message.clone()));
                Ret::Started(stream)
            }
            Op::ClearStale { session } => match self.slots.get(session) {
                Some((stream, _)) if !self.live.contains(stream) => {
                    self.slots.remove(session);
                    Ret::Bool(true)
                }
                _ => Ret::Bool(false),
            },
            Op::Finish { session, stream } => {
                self.live.remove(stream);
                if self.slots.get(session).map(|(s, _)| s) == Some(stream) {
                    self.slots.remove(session);
                    Ret::Bool(true)
                } else {
                    Ret::Bool(false)
                }
            }
            Op::IsLive { stream } => Ret::Bool(self.live.contains(stream)),
            Op::Len => Ret::Len(self.live.len()),
            Op::Active { session } => Ret::Active(self.slots.get(session).cloned()),
        }
    }
}

/// Drives a real implementation with model operations: streams are
/// numbered in start order (`ids[n]` is stream `n`).
#[derive(Debug)]
pub struct Driver<T> {
    /// The implementation under test.
    pub slots: T,
    /// The sessions, by index.
    pub sessions: Vec<Session>,
    /// Stream ids in start order.
    pub ids: Vec<StreamId>,
    numbers: HashMap<StreamId, usize>,
}

impl<T: StreamSlots<u64>> Driver<T> {
    /// A fresh implementation with `sessions` empty sessions.
    pub fn new(sessions: usize) -> Self {
        Self {
            slots: T::with_options(StreamOptions::new()),
            sessions: (0..sessions)
                .map(|i| Session::new(format!("s{i}")))
                .collect(),
            ids: Vec::new(),
            numbers: HashMap::new(),
        }
    }

    fn number(&self, id: StreamId) -> usize {
        // An id the driver never saw would be a bug: map it past the end.
        self.numbers.get(&id).copied().unwrap_or(usize::MAX)
    }

    /// Applies `op` and returns its result in model terms.
    pub fn apply(&mut self, op: &Op) -> Ret {
        match op {
            Op::Start { session, message } => {
                let r = self.slots.start(
                    &self.sessions[*session],
                    Pending::new(message.clone()),
                    self.ids.len() as u64,
                );
                match r {
                    Ok(id) => {
                        self.numbers.insert(id, self.ids.len());
                        self.ids.push(id);
                        Ret::Started(self.ids.len() - 1)
                    }
                    Err(busy) => Ret::Busy(self.number(busy.active)),
                }
            }
            Op::ClearStale { session } => {
                Ret::Bool(self.slots.clear_stale(&self.sessions[*session]))
            }
            Op::Finish { session, stream } => Ret::Bool(
                self.slots
                    .finish(&self.sessions[*session], self.ids[*stream]),
            ),
            Op::IsLive { stream } => Ret::Bool(self.slots.is_live(self.ids[*stream])),
            Op::Len => Ret::Len(self.slots.len()),
            Op::Active { session } => Ret::Active(
                self.sessions[*session]
                    .active()
                    .map(|a| (self.number(a.id), a.pending_message.unwrap_or_default())),
            ),
        }
    }
}

/// Start/finish cycles with a cleanup sweep over many sessions: 1 op in
/// `every` is a write (`start`; if the session is busy, `finish` its
/// stream), the others are the cleanup the seed runs on every session GET.
/// The sessions start stale (restored after a restart).
struct Cycles<T> {
    slots: T,
    sessions: Vec<Session>,
    every: u64,
}

/// Sessions of the workloads.
const SESSIONS: usize = 1_000;

/// One write in 8 ops: `cycles-1000-sessions` and `hot-session`.
const WRITE_HEAVY: u64 = 8;
/// One write in 64 ops: `read-heavy-1000-sessions`.
const READ_HEAVY: u64 = 64;

/// The operation schedule of [`Cycles`] and [`SlotFloor`] over `n`
/// sessions: one op in `every` is `write(session, op)`, the others
/// `read(session)`. Two cursors, each sweeping the sessions from this
/// thread's share: writes cycle every session between "live stream" and
/// "empty", and the reads (GETs) see a mix of live, empty and stale slots.
#[allow(clippy::too_many_arguments)]
fn sweep(
    thread: usize,
    threads: usize,
    n: usize,
    ops: u64,
    every: u64,
    mut write: impl FnMut(usize, u64),
    mut read: impl FnMut(usize),
) {
    let mut read_at = thread * n / threads.max(1);
    let mut write_at = (read_at + n / 2) % n;
    for i in 0..ops {
        if i % every == 0 {
            write(write_at, i);
            write_at = if write_at + 1 == n { 0 } else { write_at + 1 };
        } else {
            read(read_at);
            read_at = if read_at + 1 == n { 0 } else { read_at + 1 };
        }
    }
}

impl<T: StreamSlots<u64>> Workload for Cycles<T> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let sessions = &self.sessions;
        sweep(
            thread,
            threads,
            sessions.len(),
            ops,
            self.every,
            |at, i| {
                let session = &sessions[at];
                // `Pending::default()` allocates nothing: only the
                // component's own work is measured.
                if let Err(Busy { active }) = self.slots.start(session, Pending::default(), i) {
                    self.slots.finish(session, active);
                }
            },
            |at| {
                self.slots.clear_stale(&sessions[at]);
            },
        );
    }
}

/// Reference row: the least a slot of the shape the issue prescribes (one
/// atomic pointer per session, so the fields change together and a
/// cleanup's compare-and-swap compares the very value it judged) costs on
/// this schedule, on the cell the lock-free slot uses — one bare
/// `sdd::AtomicShared` per session: a cleanup is one pinned load, a start
/// one allocation and one compare-and-swap, a finish one compare-and-swap
/// back to empty. No registry, liveness check, version, pending fields or
/// save.
struct SlotFloor {
    slots: Vec<sdd::AtomicShared<u64>>,
    every: u64,
}

impl Workload for SlotFloor {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let slots = &self.slots;
        sweep(
            thread,
            threads,
            slots.len(),
            ops,
            self.every,
            |at, i| {
                let pin = sdd::Guard::new();
                let current = slots[at].load(SeqCst, &pin);
                let next = match current.as_ref() {
                    None => Some(sdd::Shared::new(i)),
                    Some(_) => None,
                };
                let swapped = slots[at].compare_exchange(
                    current,
                    (next, sdd::Tag::None),
                    SeqCst,
                    SeqCst,
                    &pin,
                );
                std::hint::black_box(swapped.is_ok());
            },
            |at| {
                let pin = sdd::Guard::new();
                std::hint::black_box(slots[at].load(SeqCst, &pin).is_null());
            },
        );
    }
}

fn make<T: StreamSlots<u64> + 'static, const SESSIONS_N: usize, const EVERY: u64>(
) -> Box<dyn Workload> {
    Box::new(Cycles {
        slots: T::with_options(StreamOptions::new()),
        sessions: stale_sessions(SESSIONS_N),
        every: EVERY,
    })
}

fn floor<const EVERY: u64>() -> Box<dyn Workload> {
    Box::new(SlotFloor {
        slots: (0..SESSIONS).map(|_| sdd::AtomicShared::null()).collect(),
        every: EVERY,
    })
}

/// The workloads of this component: start/finish cycles with a cleanup
/// sweep over 1,000 sessions (7 reads per write, and 63), and over one hot
/// session.
pub fn workloads() -> Vec<WorkloadDef> {
    let with_floor = |mut rows: Vec<(&'static str, MakeWorkload)>, floor: MakeWorkload| {
        rows.push(("slot-floor", floor));
        rows
    };
    vec![
        WorkloadDef {
            component: "stream",
            name: "cycles-1000-sessions",
            description: "1,000 sessions: 7 of 8 ops are the cleanup run on every session GET, 1 in 8 starts a stream (or finishes the live one); floor: a bare epoch cell (sdd::AtomicShared) per session",
            impls: with_floor(rows::<SESSIONS, WRITE_HEAVY>(), floor::<WRITE_HEAVY>),
        },
        WorkloadDef {
            component: "stream",
            name: "read-heavy-1000-sessions",
            description: "1,000 sessions: 63 of 64 ops are the cleanup run on every session GET, 1 in 64 starts a stream (or finishes the live one); floor: a bare epoch cell per session",
            impls: with_floor(rows::<SESSIONS, READ_HEAVY>(), floor::<READ_HEAVY>),
        },
        WorkloadDef {
            component: "stream",
            name: "hot-session",
            description: "one session shared by every thread: 7 of 8 ops are cleanups, 1 in 8 starts a stream (or finishes the live one)",
            impls: rows::<1, WRITE_HEAVY>(),
        },
    ]
}

/// The lock-free registry and the three baselines on `SESSIONS_N`
/// sessions, one start or finish in `EVERY` operations.
fn rows<const SESSIONS_N: usize, const EVERY: u64>() -> Vec<(&'static str, MakeWorkload)> {
    vec![
        (
            impl_name::LOCK_FREE,
            make::<StreamRegistry<u64>, SESSIONS_N, EVERY>,
        ),
        (
            impl_name::STD_MUTEX,
            make::<MutexStreams<u64>, SESSIONS_N, EVERY>,
        ),
        (
            impl_name::PARKING_LOT,
            make::<MutexStreams<u64, ParkingLotMutex>, SESSIONS_N, EVERY>,
        ),
        (
            impl_name::SHARDED_MUTEX,
            make::<ShardedStreams<u64>, SESSIONS_N, EVERY>,
        ),
    ]
}

/// The seed's race: cleanups looping on a session while a stream is
/// started on it again and again ([`cleanup_vs_start`]); counts clobbered
/// slots.
pub fn reproduction() -> Reproduction {
    Reproduction {
        component: "stream",
        what_is_lost: "clobbered slots (a new stream wiped by a cleanup)",
        racy: |threads, rounds| {
            cleanup_vs_start(
                &RacyStreams::<u64>::with_options(StreamOptions::new()),
                threads,
                rounds,
            )
        },
        lock_free: |threads, rounds| {
            cleanup_vs_start(&StreamRegistry::<u64>::new(), threads, rounds)
        },
    }
}
