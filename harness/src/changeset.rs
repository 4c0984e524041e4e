//! The `changeset` component's racy variant, sequential model, workloads and
//! seed-bug reproduction.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crossbeam_utils::CachePadded;

use raceless::baseline::{MutexChangesets, ParkingLotMutex, StdMutex};
use raceless::changeset::{ChangesetError, ChangesetId, ChangesetLog, ChangesetStore, Recorder};

use crate::model::SequentialSpec;
use crate::threads::run_concurrently;
use crate::workload::{impl_name, Reproduction, Workload, WorkloadDef};

// ---------------------------------------------------------------------------
// The racy variant.

/// The seed's own "fix", kept racy on purpose: `record_change` reads the
/// latest open id under the list lock, yields, then appends to the store in
/// a separate step — so an entry can land in a changeset sealed (or no
/// longer the latest) in between. Tests show that the checks catch it.
pub struct RacyChangesets<C> {
    open: Mutex<Vec<ChangesetId>>,
    store: Mutex<HashMap<ChangesetId, (Vec<C>, bool)>>,
    next_id: AtomicU64,
}

impl<C> Default for RacyChangesets<C> {
    fn default() -> Self {
        Self {
            open: Mutex::new(Vec::new()),
            store: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl<C> RacyChangesets<C> {
    /// An empty racy log.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C: Clone + Send + Sync> ChangesetStore<C> for RacyChangesets<C> {
    fn start_changeset(&self) -> ChangesetId {
        let id = ChangesetId::from_raw(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.store.lock().unwrap().insert(id, (Vec::new(), false));
        self.open.lock().unwrap().push(id);
        id
    }

    fn record_change(&self, entry: C) -> Result<ChangesetId, ChangesetError> {
        // Check ...
        let id = *self
            .open
            .lock()
            .unwrap()
            .last()
            .ok_or(ChangesetError::NoActiveChangeset)?;
        std::thread::yield_now();
        // ... then act, on a possibly stale id (the store does not know seals).
        if let Some((entries, _)) = self.store.lock().unwrap().get_mut(&id) {
            entries.push(entry);
        }
        Ok(id)
    }

    fn seal(&self, id: ChangesetId) -> Result<(), ChangesetError> {
        let mut store = self.store.lock().unwrap();
        let (_, sealed) = store
            .get_mut(&id)
            .ok_or(ChangesetError::UnknownChangeset(id))?;
        *sealed = true;
        drop(store);
        self.open.lock().unwrap().retain(|&o| o != id);
        Ok(())
    }

    fn changes(&self, id: ChangesetId) -> Option<Vec<C>> {
        self.store.lock().unwrap().get(&id).map(|(e, _)| e.clone())
    }

    fn active(&self) -> Vec<ChangesetId> {
        self.open.lock().unwrap().iter().rev().copied().collect()
    }

    fn len(&self) -> usize {
        self.store.lock().unwrap().len()
    }

    fn take(&self, id: ChangesetId) -> Result<Vec<C>, ChangesetError> {
        let mut store = self.store.lock().unwrap();
        match store.get(&id) {
            None => Err(ChangesetError::UnknownChangeset(id)),
            Some((_, false)) => Err(ChangesetError::StillOpen(id)),
            Some(_) => Ok(store.remove(&id).map(|(e, _)| e).unwrap_or_default()),
        }
    }
}

// ---------------------------------------------------------------------------
// The sequential model.

/// One operation on a changeset log of `u32` entries; ids are raw values
/// (a log hands out 1, 2, 3, … when used from one thread).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `start_changeset()`.
    Start,
    /// `record_change(entry)`.
    Record(u32),
    /// `seal(id)`.
    Seal(u64),
    /// `changes(id)`.
    Changes(u64),
    /// `active()`.
    Active,
    /// `take(id)`.
    Take(u64),
}

/// What an [`Op`] returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// From `start_changeset`.
    Id(ChangesetId),
    /// From `record_change`.
    Recorded(Result<ChangesetId, ChangesetError>),
    /// From `seal`.
    Sealed(Result<(), ChangesetError>),
    /// From `changes`.
    Changes(Option<Vec<u32>>),
    /// From `active`.
    Active(Vec<ChangesetId>),
    /// From `take`.
    Taken(Result<Vec<u32>, ChangesetError>),
}

/// The sequential specification of a changeset log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    /// Open ids, oldest first.
    pub open: Vec<u64>,
    /// Every known changeset: entries and whether it is sealed.
    pub sets: BTreeMap<u64, (Vec<u32>, bool)>,
    /// The next id handed out.
    pub next: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            sets: BTreeMap::new(),
            next: 1,
        }
    }
}

impl SequentialSpec for Model {
    type Op = Op;
    type Ret = Ret;

    fn apply(&mut self, op: &Op) -> Ret {
        let id = ChangesetId::from_raw;
        match *op {
            Op::Start => {
                let n = self.next;
                self.next += 1;
                self.open.push(n);
                self.sets.insert(n, (Vec::new(), false));
                Ret::Id(id(n))
            }
            Op::Record(e) => Ret::Recorded(match self.open.last() {
                None => Err(ChangesetError::NoActiveChangeset),
                Some(&n) => {
                    self.sets.entry(n).or_default().0.push(e);
                    Ok(id(n))
                }
            }),
            Op::Seal(n) => Ret::Sealed(match self.sets.get_mut(&n) {
                None => Err(ChangesetError::UnknownChangeset(id(n))),
                Some(set) => {
                    set.1 = true;
                    self.open.retain(|&o| o != n);
                    Ok(())
                }
            }),
            Op::Changes(n) => Ret::Changes(self.sets.get(&n).map(|s| s.0.clone())),
            Op::Active => Ret::Active(self.open.iter().rev().map(|&n| id(n)).collect()),
            Op::Take(n) => Ret::Taken(match self.sets.get(&n) {
                None => Err(ChangesetError::UnknownChangeset(id(n))),
                Some((_, false)) => Err(ChangesetError::StillOpen(id(n))),
                Some(_) => Ok(self.sets.remove(&n).map(|s| s.0).unwrap_or_default()),
            }),
        }
    }
}

/// Applies `op` to a real implementation, returning what the model would.
pub fn apply<S: ChangesetStore<u32> + ?Sized>(log: &S, op: &Op) -> Ret {
    let id = ChangesetId::from_raw;
    match *op {
        Op::Start => Ret::Id(log.start_changeset()),
        Op::Record(e) => Ret::Recorded(log.record_change(e)),
        Op::Seal(n) => Ret::Sealed(log.seal(id(n))),
        Op::Changes(n) => Ret::Changes(log.changes(id(n))),
        Op::Active => Ret::Active(log.active()),
        Op::Take(n) => Ret::Taken(log.take(id(n))),
    }
}

// ---------------------------------------------------------------------------
// Concurrency checks, shared by the tests and the reproduction.

/// What went wrong in a seal-vs-record round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SealAnomalies {
    /// Entries whose `record_change` returned `Ok(id)` but are missing from
    /// `changes(id)` (or present more than once).
    pub lost: u64,
    /// Entries that appeared in a changeset after its `seal` returned.
    pub added_after_seal: u64,
}

impl SealAnomalies {
    /// Both counts together.
    pub fn total(self) -> u64 {
        self.lost + self.added_after_seal
    }
}

/// Thread 0 repeatedly starts a changeset and seals the previous one,
/// snapshotting each sealed changeset right after `seal` returns; the other
/// `threads - 1` threads record `per_thread` tagged entries each. Afterwards
/// every changeset's final contents are compared with its snapshot (nothing
/// added after the seal) and with the `Ok(id)` results (nothing lost or
/// duplicated).
pub fn seal_race<S: ChangesetStore<u64>>(
    log: &S,
    threads: usize,
    per_thread: usize,
) -> SealAnomalies {
    assert!(threads >= 2);
    let first = log.start_changeset();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let recorders = threads - 1;
    let results = run_concurrently(threads, |t| {
        if t == 0 {
            // The sealer: rotate until every recorder is done. It yields
            // between the start and the seal on even rotations (records in
            // flight meet a newer changeset) and after the snapshot on odd
            // ones (records in flight meet a seal), so both windows are hit
            // even when all threads share one core.
            let mut snapshots = Vec::new();
            let mut current = first;
            let mut even = true;
            while done.load(Ordering::Acquire) < recorders {
                let next = log.start_changeset();
                if even {
                    std::thread::yield_now();
                }
                let _ = log.seal(current);
                snapshots.push((current, log.changes(current).unwrap_or_default()));
                if !even {
                    std::thread::yield_now();
                }
                current = next;
                even = !even;
            }
            (snapshots, Vec::new())
        } else {
            let mut recorded = Vec::with_capacity(per_thread);
            for i in 0..per_thread {
                let entry = ((t as u64) << 32) | i as u64;
                if let Ok(id) = log.record_change(entry) {
                    recorded.push((id, entry));
                }
            }
            done.fetch_add(1, Ordering::Release);
            (Vec::new(), recorded)
        }
    });
    let mut anomalies = SealAnomalies::default();
    let mut final_contents: HashMap<ChangesetId, Vec<u64>> = HashMap::new();
    let mut contents = |id: ChangesetId| {
        final_contents
            .entry(id)
            .or_insert_with(|| log.changes(id).unwrap_or_default())
            .clone()
    };
    for (snapshots, _) in &results {
        for (id, snapshot) in snapshots {
            let now = contents(*id);
            anomalies.added_after_seal += now.len().saturating_sub(snapshot.len()) as u64;
        }
    }
    let mut expected: HashMap<ChangesetId, HashMap<u64, usize>> = HashMap::new();
    for (_, recorded) in &results {
        for &(id, entry) in recorded {
            *expected.entry(id).or_default().entry(entry).or_default() += 1;
        }
    }
    for (id, want) in expected {
        let mut have: HashMap<u64, usize> = HashMap::new();
        for e in contents(id) {
            *have.entry(e).or_default() += 1;
        }
        for (entry, n) in want {
            if have.get(&entry) != Some(&n) {
                anomalies.lost += 1;
            }
        }
    }
    anomalies
}

// ---------------------------------------------------------------------------
// Workloads.

/// Entries recorded by the workloads: a small `Copy` value, as a change
/// entry handle would be.
pub type Entry = u64;

/// Most threads a [`Rotating`] workload keeps separate counts for (more
/// share them modulo this, which only shifts their turns).
const COUNTED_THREADS: usize = 64;

struct Rotating<S> {
    log: S,
    /// A rotation (start a new changeset, seal and take the previous one)
    /// every `every` operations of a thread, on average: the threads take
    /// turns (see [`Rotating::until_turn`]).
    every: u64,
    /// One operation in `read_every` is a read (`changes` of a small sealed
    /// changeset, or `active`) instead of a record; 0: records only.
    read_every: u64,
    current: AtomicU64,
    reference: ChangesetId,
    /// Each thread's operations in earlier batches (a thread touches only
    /// its own line), so that its turns count *its* operations even when
    /// the runner's batches are shorter than the period.
    done: Box<[CachePadded<AtomicU64>]>,
}

impl<S: ChangesetStore<Entry>> Rotating<S> {
    fn new(log: S, every: u64, read_every: u64) -> Self {
        let reference = log.start_changeset();
        for i in 0..16 {
            let _ = log.record_change(i);
        }
        let _ = log.seal(reference);
        let current = log.start_changeset();
        Self {
            log,
            every,
            read_every,
            current: AtomicU64::new(current.raw()),
            reference,
            done: (0..COUNTED_THREADS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Advances thread `thread`'s count by its batch of `ops` and returns
    /// how many of the batch's operations come before its next turn to
    /// rotate, and the period of its turns.
    ///
    /// Thread `t` of `n` rotates at its operations `t·every + every − 1`
    /// modulo `n·every`: one rotation per `every` operations of a thread
    /// on average, the same rate as one thread rotating every `every` of
    /// its own, but the threads share the `take`s. (A single rotating
    /// thread moves every thread's records in its `take`s, so it falls
    /// behind the others, the changesets it takes grow with its lag, and
    /// from about 4 threads on the rotation no longer bounds their size.)
    fn until_turn(&self, thread: usize, threads: usize, ops: u64) -> (u64, u64) {
        let count = &self.done[thread % COUNTED_THREADS];
        // Relaxed: only this thread reads or writes its count.
        let done = count.load(Ordering::Relaxed);
        count.store(done + ops, Ordering::Relaxed);
        let threads = threads.max(1) as u64;
        let period = self.every * threads;
        let phase = (thread as u64 % threads) * self.every + self.every - 1;
        ((phase + period - done % period) % period, period)
    }

    /// Starts a new changeset and seals and takes the one it replaces
    /// (concurrent rotations each take the one they swapped out).
    fn rotate(&self) {
        let new = self.log.start_changeset();
        let old = ChangesetId::from_raw(self.current.swap(new.raw(), Ordering::Relaxed));
        let _ = self.log.seal(old);
        let _ = self.log.take(old);
    }
}

impl<S: ChangesetStore<Entry>> Workload for Rotating<S> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let tag = (thread as u64) << 40;
        let (mut until, period) = self.until_turn(thread, threads, ops);
        for i in 0..ops {
            if until == 0 {
                self.rotate();
                until = period;
            } else if self.read_every != 0 && i % self.read_every != 0 {
                if i % 4 == 1 {
                    std::hint::black_box(self.log.active());
                } else {
                    std::hint::black_box(self.log.changes(self.reference));
                }
            } else {
                let _ = std::hint::black_box(self.log.record_change(tag | i));
            }
            until -= 1;
        }
    }
}

/// `record` through a [`Recorder`] per thread (its own stripe and lease).
struct RecorderRecord<S>(Rotating<S>);

impl<S: ChangesetStore<Entry>> Workload for RecorderRecord<S> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let rot = &self.0;
        let mut recorder = Recorder::new(&rot.log);
        let tag = (thread as u64) << 40;
        let (mut until, period) = rot.until_turn(thread, threads, ops);
        for i in 0..ops {
            if until == 0 {
                rot.rotate();
                until = period;
            } else {
                let _ = std::hint::black_box(recorder.record(tag | i));
            }
            until -= 1;
        }
    }
}

/// The `record` workloads' rotation interval: the threads take turns
/// rotating, once per this many operations of a thread (only to bound
/// memory).
const RECORD_ROTATION: u64 = 65_536;

fn make_recorder<S: ChangesetStore<Entry> + Default + 'static>() -> Box<dyn Workload> {
    Box::new(RecorderRecord(Rotating::new(
        S::default(),
        RECORD_ROTATION,
        0,
    )))
}

/// Benchmark-only workloads of the 0.2 API (not in the comparison run):
/// `record` through one `Recorder` per thread.
pub fn async_workloads() -> Vec<WorkloadDef> {
    vec![WorkloadDef {
        component: "changeset",
        name: "record-recorder",
        description: "the record workload, each thread recording through its own Recorder",
        impls: vec![
            (impl_name::LOCK_FREE, make_recorder::<ChangesetLog<Entry>>),
            (
                impl_name::STD_MUTEX,
                make_recorder::<MutexChangesets<Entry, StdMutex>>,
            ),
            (
                impl_name::PARKING_LOT,
                make_recorder::<MutexChangesets<Entry, ParkingLotMutex>>,
            ),
        ],
    }]
}

fn make<S: ChangesetStore<Entry> + 'static>(
    log: S,
    every: u64,
    read_every: u64,
) -> Box<dyn Workload> {
    Box::new(Rotating::new(log, every, read_every))
}

macro_rules! impls {
    ($every:expr, $read:expr) => {
        vec![
            (
                impl_name::LOCK_FREE,
                (|| make(ChangesetLog::<Entry>::new(), $every, $read)) as fn() -> Box<dyn Workload>,
            ),
            (impl_name::STD_MUTEX, || {
                make(MutexChangesets::<Entry, StdMutex>::new(), $every, $read)
            }),
            (impl_name::PARKING_LOT, || {
                make(
                    MutexChangesets::<Entry, ParkingLotMutex>::new(),
                    $every,
                    $read,
                )
            }),
        ]
    };
}

/// Records each thread of a floor row keeps before its chunk is full: what
/// it records into one changeset of the `record` workload (one rotation per
/// [`RECORD_ROTATION`] operations of a thread).
const FLOOR_RETAINED: usize = RECORD_ROTATION as usize;

/// A floor row's per-thread storage, kept between the runner's batches
/// (each thread takes its own out for a batch and puts it back after:
/// two uncontended lock operations per batch of thousands of records).
struct PerThread<S>(Mutex<HashMap<usize, S>>);

impl<S> PerThread<S> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    /// Runs `f` on thread `thread`'s storage (made by `make` on its first
    /// batch).
    fn with(&self, thread: usize, make: impl FnOnce() -> S, f: impl FnOnce(&mut S)) {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut storage = lock().remove(&thread).unwrap_or_else(make);
        f(&mut storage);
        lock().insert(thread, storage);
    }
}

/// One thread's storage of a floor row: a preallocated chunk of slots,
/// each published and committed as a record must be, then moved out.
trait FloorChunk: Send + 'static {
    /// A chunk of `records` slots.
    fn with_capacity(records: usize) -> Self;
    /// Publishes `entry` in the next slot and commits the slot with one
    /// compare-and-swap (what a concurrent seal must be able to race with).
    fn record(&mut self, entry: Entry);
    /// Whether every slot is used.
    fn is_full(&self) -> bool;
    /// Moves the records out to the end of `out`, as `take` moves a
    /// changeset's.
    fn move_into(self, out: &mut Vec<Entry>);
}

/// Reference row: per record one [`FloorChunk::record`] into the thread's
/// own chunk of [`FLOOR_RETAINED`] slots — no changeset, no lease, no
/// root, nothing shared on the record path. A full chunk joins the full
/// chunks of the other threads (one uncontended lock per chunk), and the
/// thread whose chunk makes them as many as there are threads moves them
/// all out into one `Vec`: what a `take` of one changeset of the `record`
/// workload moves (every thread's records since the last rotation, most of
/// them written by other threads, from other CPUs' caches, into one
/// `Vec`). A floor that moved out less at a time, or only its own
/// records, would measure a working set the design cannot have.
struct Floor<S> {
    chunks: PerThread<S>,
    /// Full chunks not yet moved out.
    full: Mutex<Vec<S>>,
}

impl<S: FloorChunk> Floor<S> {
    fn row() -> Box<dyn Workload> {
        Box::new(Self {
            chunks: PerThread::new(),
            full: Mutex::new(Vec::new()),
        })
    }

    /// Adds the thread's full `chunk` to the full ones; returns them all
    /// when they are `threads` (the thread then moves them out).
    fn join_full(&self, chunk: S, threads: usize) -> Option<Vec<S>> {
        let mut full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        full.push(chunk);
        (full.len() >= threads).then(|| std::mem::take(&mut *full))
    }
}

impl<S: FloorChunk> Workload for Floor<S> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        let tag = (thread as u64) << 40;
        self.chunks.with(
            thread,
            || S::with_capacity(FLOOR_RETAINED),
            |chunk| {
                for i in 0..ops {
                    if chunk.is_full() {
                        let full = std::mem::replace(chunk, S::with_capacity(FLOOR_RETAINED));
                        if let Some(chunks) = self.join_full(full, threads) {
                            let mut out = Vec::with_capacity(chunks.len() * FLOOR_RETAINED);
                            for full in chunks {
                                full.move_into(&mut out);
                            }
                            drop(std::hint::black_box(out));
                        }
                    }
                    chunk.record(tag | i);
                }
            },
        );
    }
}

/// [`Floor`] on std's write-once cell. An entry must be published to
/// readers the moment `record_change` returns, and std's non-blocking
/// write-once cell for a generic value is `OnceLock` (two read-modify-writes
/// inside `Once`, behind a dyn call); a concurrent seal must then be told
/// apart from the write without waiting, which takes one compare-and-swap
/// on the slot's state. So per record: one `OnceLock::set` and one
/// compare-and-swap on a slot of the thread's own preallocated chunk.
/// ([`BoxcarChunk`] is the same on `boxcar`, which the log uses.)
struct WriteOnceChunk {
    slots: Box<[(AtomicU32, OnceLock<Entry>)]>,
    next: usize,
}

impl FloorChunk for WriteOnceChunk {
    fn with_capacity(records: usize) -> Self {
        Self {
            slots: (0..records)
                .map(|_| (AtomicU32::new(0), OnceLock::new()))
                .collect(),
            next: 0,
        }
    }

    fn record(&mut self, entry: Entry) {
        const EMPTY: u32 = 0;
        const WRITTEN: u32 = 1;
        let (state, value) = &self.slots[self.next];
        self.next += 1;
        let _ = std::hint::black_box(value.set(entry));
        let _ = std::hint::black_box(state.compare_exchange(
            EMPTY,
            WRITTEN,
            Ordering::Release,
            Ordering::Relaxed,
        ));
    }

    fn is_full(&self) -> bool {
        self.next == self.slots.len()
    }

    fn move_into(self, out: &mut Vec<Entry>) {
        out.extend(
            self.slots
                .into_vec()
                .into_iter()
                .filter_map(|(_, value)| value.into_inner()),
        );
    }
}

/// [`Floor`] on `boxcar` (the fastest safe publication of a generic value
/// we measured): per record one `boxcar::Vec::push` of the entry into the
/// thread's own vector (a `fetch_add` for the index, the value written in
/// place, a release store, a `fetch_add` of its count) and one
/// compare-and-swap of a 32-bit slot state (as the log's), in a
/// preallocated chunk of the thread's own, to `WRITTEN | index`.
struct BoxcarChunk {
    states: Box<[AtomicU32]>,
    values: boxcar::Vec<Entry>,
    next: usize,
}

impl FloorChunk for BoxcarChunk {
    fn with_capacity(records: usize) -> Self {
        Self {
            states: (0..records).map(|_| AtomicU32::new(0)).collect(),
            values: boxcar::Vec::new(),
            next: 0,
        }
    }

    fn record(&mut self, entry: Entry) {
        const EMPTY: u32 = 0;
        let at = self.values.push(entry);
        let _ = std::hint::black_box(self.states[self.next].compare_exchange(
            EMPTY,
            (at as u32) << 2 | 1,
            Ordering::Release,
            Ordering::Relaxed,
        ));
        self.next += 1;
    }

    fn is_full(&self) -> bool {
        self.next == self.states.len()
    }

    fn move_into(self, out: &mut Vec<Entry>) {
        out.extend(self.values);
    }
}

/// The workloads of this component.
pub fn workloads() -> Vec<WorkloadDef> {
    vec![
        WorkloadDef {
            component: "changeset",
            name: "record",
            description: "every thread records into the latest changeset; the threads take turns rotating (start, seal, take), one rotation per 65536 ops of a thread, only to bound memory; floors: one OnceLock::set, or one boxcar push, + one compare-and-swap per record into the thread's own chunk of 65536 slots; when every thread has filled one, the last to fill moves them all out into one Vec, as a take moves a changeset's records",
            impls: {
                let mut rows = impls!(RECORD_ROTATION, 0);
                rows.push(("write-once-floor", Floor::<WriteOnceChunk>::row));
                rows.push(("boxcar-floor", Floor::<BoxcarChunk>::row));
                rows
            },
        },
        WorkloadDef {
            component: "changeset",
            name: "record-rotating",
            description: "every thread records; the threads take turns starting a new changeset and sealing and taking the previous one, one rotation per 256 ops of a thread",
            impls: impls!(256, 0),
        },
        WorkloadDef {
            component: "changeset",
            name: "read-heavy",
            description: "7 of 8 ops read (active() or changes() of a 16-entry sealed changeset), 1 records; the threads take turns rotating, one rotation per 4096 ops of a thread",
            impls: impls!(4096, 8),
        },
    ]
}

/// The seed-bug reproduction: [`seal_race`] on the racy variant and on the
/// lock-free log; counts entries added after a seal or lost.
pub fn reproduction() -> Reproduction {
    fn racy(threads: usize, rounds: usize) -> u64 {
        (0..rounds)
            .map(|_| seal_race(&RacyChangesets::new(), threads.max(2), 2_000).total())
            .sum()
    }
    fn lock_free(threads: usize, rounds: usize) -> u64 {
        (0..rounds)
            .map(|_| seal_race(&ChangesetLog::new(), threads.max(2), 2_000).total())
            .sum()
    }
    Reproduction {
        component: "changeset",
        what_is_lost: "entries recorded into a sealed changeset (or lost)",
        racy,
        lock_free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads take turns rotating, one rotation per `every`
    /// operations of a thread, counted across the runner's batches even
    /// when they are shorter than `every`.
    #[test]
    fn rotations_take_turns_across_batches() {
        let rot = Rotating::new(ChangesetLog::<Entry>::new(), 8, 0);
        let first = rot.current.load(Ordering::Relaxed);
        for _ in 0..10 {
            rot.run(0, 2, 3);
            rot.run(1, 2, 3);
        }
        // 30 operations per thread, period 16: thread 0 rotates at its
        // 8th and 24th, thread 1 at its 16th.
        assert_eq!(rot.current.load(Ordering::Relaxed), first + 3);
        // One thread alone rotates every 8 of its operations.
        let rot = Rotating::new(ChangesetLog::<Entry>::new(), 8, 0);
        let first = rot.current.load(Ordering::Relaxed);
        for _ in 0..10 {
            rot.run(0, 1, 3);
        }
        assert_eq!(rot.current.load(Ordering::Relaxed), first + 3);
        assert_eq!(rot.log.len(), 2, "the reference and the current one");
    }

    /// A floor row moves the threads' full chunks out together, once there
    /// is one per thread (as a `take` moves every thread's records).
    #[test]
    fn floors_move_out_one_chunk_per_thread_at_once() {
        fn pending<S>(floor: &Floor<S>) -> usize {
            floor.full.lock().unwrap().len()
        }
        let floor = Floor::<BoxcarChunk> {
            chunks: PerThread::new(),
            full: Mutex::new(Vec::new()),
        };
        let ops = FLOOR_RETAINED as u64 + 1;
        floor.run(0, 3, ops);
        floor.run(1, 3, ops);
        assert_eq!(pending(&floor), 2, "waiting for the third thread's chunk");
        floor.run(2, 3, ops);
        assert_eq!(pending(&floor), 0, "all three moved out");
        // On one thread each full chunk is moved out at once.
        floor.run(3, 1, ops);
        assert_eq!(pending(&floor), 0);
    }
}
