//! The `breaker` component's racy variant, sequential model, concurrency
//! checks, workloads and seed-bug reproduction.
//!
//! The checks return what they counted (lost increments, threshold/open
//! anomalies, torn `reset_all`s); tests assert zero for the real
//! implementations and non-zero for [`RacyBreaker`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::yield_now;

use raceless::baseline::{MutexBreaker, ParkingLotMutex, ShardedBreaker, StdMutex};
use raceless::breaker::{Breaker, BreakerHandle, CircuitBreaker};

use crate::model::SequentialSpec;
use crate::threads::run_concurrently;
use crate::workload::{impl_name, Reproduction, Workload, WorkloadDef};

// ---------------------------------------------------------------------------
// The racy variant
// ---------------------------------------------------------------------------

/// The seed's breaker before its fix: every step is individually
/// thread-safe (each collection has its own lock, held per access), but the
/// read-modify-writes are check-then-act — read the count, yield, write
/// count + 1; check "not yet disabled", yield, disable — and `reset_all`
/// clears one name at a time. It loses increments, reports one opening
/// twice and tears `reset_all`: exactly what the checks must catch.
pub struct RacyBreaker {
    threshold: u32,
    failures: Mutex<HashMap<String, u32>>,
    disabled: Mutex<HashSet<String>>,
    times_opened: Mutex<HashMap<String, u64>>,
}

impl RacyBreaker {
    /// A racy breaker with `threshold` (must be ≥ 1; this is test code).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            failures: Mutex::default(),
            disabled: Mutex::default(),
            times_opened: Mutex::default(),
        }
    }
}

impl Breaker for RacyBreaker {
    fn record_failure(&self, name: &str) {
        // count = self._failures.get(name, 0) + 1
        let count = self.failures(name).saturating_add(1);
        yield_now(); // --- another thread reads the same count here ---
        self.failures.lock().unwrap().insert(name.into(), count);
        yield_now();
        if count >= self.threshold && !self.is_open(name) {
            yield_now();
            self.disabled.lock().unwrap().insert(name.into());
            *self
                .times_opened
                .lock()
                .unwrap()
                .entry(name.into())
                .or_insert(0) += 1;
        }
    }
    fn record_success(&self, name: &str) {
        self.failures.lock().unwrap().insert(name.into(), 0);
        yield_now();
        self.disabled.lock().unwrap().remove(name);
    }
    fn is_open(&self, name: &str) -> bool {
        self.disabled.lock().unwrap().contains(name)
    }
    fn failures(&self, name: &str) -> u32 {
        self.failures
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
    fn reset(&self, name: &str) {
        if let Some(c) = self.failures.lock().unwrap().get_mut(name) {
            *c = 0;
        }
        yield_now();
        self.disabled.lock().unwrap().remove(name);
    }
    fn reset_all(&self) {
        // One name at a time, in name order.
        let mut names: Vec<String> = self.failures.lock().unwrap().keys().cloned().collect();
        names.sort();
        for name in names {
            self.reset(&name);
            yield_now();
        }
    }
    fn times_opened(&self, name: &str) -> u64 {
        self.times_opened
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// The sequential model
// ---------------------------------------------------------------------------

/// One operation of the [`Breaker`] trait.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `record_failure(name)`
    RecordFailure(String),
    /// `record_success(name)`
    RecordSuccess(String),
    /// `is_open(name)`
    IsOpen(String),
    /// `failures(name)`
    Failures(String),
    /// `reset(name)`
    Reset(String),
    /// `reset_all()`
    ResetAll,
    /// `times_opened(name)`
    TimesOpened(String),
    /// `admit(name)`
    Admit(String),
}

/// What an [`Op`] returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// No value.
    Unit,
    /// A boolean (`is_open`, `admit`).
    Bool(bool),
    /// A count (`failures`, `times_opened`).
    Count(u64),
}

/// Applies `op` to any breaker and returns its result.
pub fn apply<B: Breaker + ?Sized>(b: &B, op: &Op) -> Ret {
    match op {
        Op::RecordFailure(n) => {
            b.record_failure(n);
            Ret::Unit
        }
        Op::RecordSuccess(n) => {
            b.record_success(n);
            Ret::Unit
        }
        Op::IsOpen(n) => Ret::Bool(b.is_open(n)),
        Op::Failures(n) => Ret::Count(b.failures(n).into()),
        Op::Reset(n) => {
            b.reset(n);
            Ret::Unit
        }
        Op::ResetAll => {
            b.reset_all();
            Ret::Unit
        }
        Op::TimesOpened(n) => Ret::Count(b.times_opened(n)),
        Op::Admit(n) => Ret::Bool(b.admit(n)),
    }
}

/// The seed's semantics, one operation at a time: a name is open exactly
/// when its consecutive failures reached the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    threshold: u32,
    failures: BTreeMap<String, u32>,
    times_opened: BTreeMap<String, u64>,
}

impl Model {
    /// An empty model with `threshold` (≥ 1).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            failures: BTreeMap::new(),
            times_opened: BTreeMap::new(),
        }
    }
    fn count(&self, name: &str) -> u32 {
        self.failures.get(name).copied().unwrap_or(0)
    }
    fn open(&self, name: &str) -> bool {
        self.count(name) >= self.threshold
    }
}

impl SequentialSpec for Model {
    type Op = Op;
    type Ret = Ret;
    fn apply(&mut self, op: &Op) -> Ret {
        match op {
            Op::RecordFailure(n) => {
                let was_open = self.open(n);
                let c = self.failures.entry(n.clone()).or_insert(0);
                *c = c.saturating_add(1);
                if !was_open && self.open(n) {
                    *self.times_opened.entry(n.clone()).or_insert(0) += 1;
                }
                Ret::Unit
            }
            Op::RecordSuccess(n) | Op::Reset(n) => {
                self.failures.insert(n.clone(), 0);
                Ret::Unit
            }
            Op::IsOpen(n) => Ret::Bool(self.open(n)),
            Op::Failures(n) => Ret::Count(self.count(n).into()),
            Op::ResetAll => {
                self.failures.clear();
                Ret::Unit
            }
            Op::TimesOpened(n) => {
                Ret::Count(self.times_opened.get(n.as_str()).copied().unwrap_or(0))
            }
            Op::Admit(n) => Ret::Bool(!self.open(n)),
        }
    }
}

/// Rate mode, one operation at a time (no cool-down): a closed name keeps
/// its last `window` outcomes recorded by name and opens when at least
/// `minimum` are in and failures make up at least `percent` of them; an
/// open name ignores failures and closes on a success or reset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateModel {
    window: usize,
    minimum: usize,
    percent: u32,
    names: BTreeMap<String, RateName>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct RateName {
    outcomes: std::collections::VecDeque<bool>,
    open: bool,
    times_opened: u64,
}

impl RateModel {
    /// The builder settings every rate-mode check here uses.
    pub const WINDOW: u32 = 3;
    /// See [`RateModel::WINDOW`].
    pub const MINIMUM: u32 = 2;
    /// See [`RateModel::WINDOW`].
    pub const PERCENT: u32 = 50;

    /// A model with the settings above.
    pub fn new() -> Self {
        Self {
            window: Self::WINDOW as usize,
            minimum: Self::MINIMUM as usize,
            percent: Self::PERCENT,
            names: BTreeMap::new(),
        }
    }

    /// A builder of a breaker in the same mode.
    pub fn builder() -> raceless::breaker::BreakerBuilder {
        CircuitBreaker::builder()
            .sliding_window(Self::WINDOW)
            .minimum_calls(Self::MINIMUM)
            .failure_rate_threshold(Self::PERCENT as f32)
            .without_cool_down()
    }

    fn outcome(&mut self, name: &str, failed: bool) {
        let (window, minimum, percent) = (self.window, self.minimum, self.percent as usize);
        let n = self.names.entry(name.into()).or_default();
        if n.open {
            if !failed {
                n.open = false;
            }
            return;
        }
        n.outcomes.push_back(failed);
        if n.outcomes.len() > window {
            n.outcomes.pop_front();
        }
        let calls = n.outcomes.len();
        let failures = n.outcomes.iter().filter(|f| **f).count();
        if calls >= minimum && failures * 100 >= percent * calls {
            n.open = true;
            n.outcomes.clear();
            n.times_opened += 1;
        }
    }
}

impl Default for RateModel {
    fn default() -> Self {
        Self::new()
    }
}

impl SequentialSpec for RateModel {
    type Op = Op;
    type Ret = Ret;
    fn apply(&mut self, op: &Op) -> Ret {
        let name = |n: &String| self.names.get(n.as_str()).cloned().unwrap_or_default();
        match op {
            Op::RecordFailure(n) => {
                self.outcome(n, true);
                Ret::Unit
            }
            Op::RecordSuccess(n) => {
                self.outcome(n, false);
                Ret::Unit
            }
            Op::Reset(n) => {
                if let Some(n) = self.names.get_mut(n.as_str()) {
                    n.open = false;
                    n.outcomes.clear();
                }
                Ret::Unit
            }
            Op::ResetAll => {
                for n in self.names.values_mut() {
                    n.open = false;
                    n.outcomes.clear();
                }
                Ret::Unit
            }
            Op::IsOpen(n) => Ret::Bool(name(n).open),
            Op::Admit(n) => Ret::Bool(!name(n).open),
            Op::Failures(n) => {
                let n = name(n);
                Ret::Count(n.outcomes.iter().filter(|f| **f).count() as u64)
            }
            Op::TimesOpened(n) => Ret::Count(name(n).times_opened),
        }
    }
}

/// A rate-mode breaker written check-then-act: it reads a name's window,
/// yields, and writes the window back with its outcome added, so two
/// concurrent outcomes can lose one. What the rate-mode checks must catch.
#[derive(Default)]
pub struct RacyRateBreaker {
    names: Mutex<HashMap<String, RateName>>,
}

impl RacyRateBreaker {
    /// An empty racy rate breaker (the [`RateModel`] settings).
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut RateModel) -> R) -> R {
        // Read: copy the name out.
        let n = self
            .names
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default();
        yield_now(); // --- another thread reads the same window here ---
        let mut model = RateModel::new();
        model.names.insert(name.into(), n);
        let r = f(&mut model);
        // Write back whatever this thread computed.
        let n = model.names.remove(name).unwrap_or_default();
        self.names.lock().unwrap().insert(name.into(), n);
        r
    }
}

impl Breaker for RacyRateBreaker {
    fn record_failure(&self, name: &str) {
        self.with(name, |m| m.outcome(name, true));
    }
    fn record_success(&self, name: &str) {
        self.with(name, |m| m.outcome(name, false));
    }
    fn is_open(&self, name: &str) -> bool {
        self.names.lock().unwrap().get(name).is_some_and(|n| n.open)
    }
    fn failures(&self, name: &str) -> u32 {
        self.names
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |n| n.outcomes.iter().filter(|f| **f).count() as u32)
    }
    fn reset(&self, name: &str) {
        self.with(name, |m| m.apply(&Op::Reset(name.into())));
    }
    fn reset_all(&self) {
        let names: Vec<String> = self.names.lock().unwrap().keys().cloned().collect();
        for n in names {
            self.reset(&n);
        }
    }
    fn times_opened(&self, name: &str) -> u64 {
        self.names
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |n| n.times_opened)
    }
}

/// Calls admitted while a name is closed end late with a success while
/// another thread's failure opens the name (threshold 1, no cool-down).
/// A success that lands after the opening must be ignored, so the name must
/// end open in every round: returns the rounds that ended closed (a stale
/// success closed the name). The seed's check-then-act (`record_success` by
/// name, which the trait's default `end_call` is) fails this.
pub fn stale_closes<B: Breaker>(make: impl Fn() -> B + Sync, threads: usize, rounds: usize) -> u64 {
    use raceless::breaker::CallOutcome;
    let mut stale = 0;
    for _ in 0..rounds {
        let b = make();
        let tickets: Vec<_> = (0..threads).map(|_| b.admit_call("x")).collect();
        if tickets.iter().any(|t| t.is_err()) {
            continue;
        }
        let tickets = Mutex::new(tickets.into_iter().map(Result::unwrap).collect::<Vec<_>>());
        let b = &b;
        crate::threads::run_concurrently(threads, |t| {
            if t == 0 {
                b.record_failure("x");
            } else {
                let ticket = tickets.lock().unwrap().pop().unwrap();
                b.end_call("x", ticket, CallOutcome::Success);
            }
        });
        if !b.is_open("x") {
            stale += 1;
        }
    }
    stale
}

// ---------------------------------------------------------------------------
// Concurrency checks (each returns its anomaly count)
// ---------------------------------------------------------------------------

/// `threads` threads each record `per_thread` failures — all on one hot name
/// (`hot`) or each on its own name — and nothing else happens. Returns the
/// failures lost (expected minus counted, over all names).
pub fn lost_increments<B: Breaker>(b: &B, threads: usize, per_thread: u32, hot: bool) -> u64 {
    let name = |t: usize| {
        if hot {
            "hot".to_string()
        } else {
            format!("private-{t}")
        }
    };
    run_concurrently(threads, |t| {
        let name = name(t);
        for _ in 0..per_thread {
            b.record_failure(&name);
        }
    });
    let expected = u64::from(per_thread) * threads as u64;
    let counted: u64 = if hot {
        b.failures("hot").into()
    } else {
        (0..threads).map(|t| u64::from(b.failures(&name(t)))).sum()
    };
    expected.abs_diff(counted)
}

/// Threshold/open atomicity. Per round, on a fresh breaker (`make(threshold)`),
/// `threads - 1` writers record failures on one name past the threshold
/// while an observer reads `failures` then `is_open` over and over. Counts
/// (a) observations of a count at or past the threshold on a closed name —
/// with failures only growing, the later `is_open` must be true — and
/// (b) openings reported other than exactly once (`times_opened != 1`).
pub fn threshold_anomalies<B: Breaker>(
    make: impl Fn(u32) -> B + Sync,
    threads: usize,
    rounds: usize,
) -> u64 {
    let writers = threads.max(2) - 1;
    let threshold = 2 * writers as u32;
    let per_writer = 4u32;
    let mut anomalies = 0;
    for _ in 0..rounds {
        let b = make(threshold);
        let seen = run_concurrently(writers + 1, |t| {
            if t < writers {
                for _ in 0..per_writer {
                    b.record_failure("hot");
                }
                return 0;
            }
            let mut bad = 0;
            for _ in 0..(writers * per_writer as usize * 4) {
                let f = b.failures("hot");
                if f >= threshold && !b.is_open("hot") {
                    bad += 1;
                }
                yield_now();
            }
            bad
        });
        anomalies += seen.iter().sum::<u64>();
        anomalies += b.times_opened("hot").abs_diff(1);
    }
    anomalies
}

/// `reset_all` linearizability. Per round, `names` names are opened
/// (threshold 1); one thread calls `reset_all` while the others scan the
/// names in order. Nothing re-opens a name, so once a scan has seen a name
/// closed (reset), every later name in the same scan must be closed too.
/// Returns the scans that saw a reset name before a not-yet-reset one.
pub fn torn_reset_alls<B: Breaker>(
    make: impl Fn(u32) -> B + Sync,
    threads: usize,
    rounds: usize,
) -> u64 {
    let names: Vec<String> = (0..8).map(|i| format!("name-{i}")).collect();
    let mut torn = 0;
    for _ in 0..rounds {
        let b = make(1);
        for n in &names {
            b.record_failure(n);
        }
        let seen = run_concurrently(threads.max(2), |t| {
            if t == 0 {
                yield_now();
                b.reset_all();
                return 0;
            }
            let mut bad = 0;
            for _ in 0..16 {
                let mut reset_seen = false;
                for n in &names {
                    let open = b.is_open(n);
                    if reset_seen && open {
                        bad += 1;
                        break;
                    }
                    reset_seen |= !open;
                }
                yield_now();
            }
            bad
        });
        torn += seen.iter().sum::<u64>();
    }
    torn
}

/// Successes and failures racing on one name must leave a consistent name:
/// open exactly when its count reached the threshold. Returns the rounds
/// that ended inconsistent.
pub fn inconsistent_after_mixed<B: Breaker>(
    make: impl Fn(u32) -> B + Sync,
    threads: usize,
    rounds: usize,
) -> u64 {
    let threshold = 3;
    let mut bad = 0;
    for _ in 0..rounds {
        let b = make(threshold);
        run_concurrently(threads, |t| {
            for i in 0..32 {
                if (i + t) % 4 == 0 {
                    b.record_success("hot");
                } else {
                    b.record_failure("hot");
                }
            }
        });
        if b.is_open("hot") != (b.failures("hot") >= threshold) {
            bad += 1;
        }
    }
    bad
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

const NAMES: usize = 16;

/// The per-op plan of the mixed workload: `(name index, op)` with op 0 =
/// `is_open` (90%), 1 = `record_failure` (9%), 2 = `record_success` (1%),
/// precomputed so no random numbers are drawn while timing.
fn mixed_plan() -> Vec<(u8, u8)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7088);
    (0..4096)
        .map(|_| {
            let name = rng.gen_range(0..NAMES) as u8;
            let op = match rng.gen_range(0..100) {
                0..=89 => 0,
                90..=98 => 1,
                _ => 2,
            };
            (name, op)
        })
        .collect()
}

/// Mixed traffic on 16 names through the trait.
struct Mixed<B> {
    breaker: B,
    names: Vec<String>,
    plan: Vec<(u8, u8)>,
}

impl<B: Breaker> Mixed<B> {
    fn new(breaker: B) -> Self {
        Self {
            breaker,
            names: (0..NAMES).map(|i| format!("strategy-{i:02}")).collect(),
            plan: mixed_plan(),
        }
    }
}

impl<B: Breaker> Workload for Mixed<B> {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        let offset = thread * 997;
        for i in 0..ops as usize {
            let (name, op) = self.plan[(offset + i) % self.plan.len()];
            let name = &self.names[name as usize];
            match op {
                0 => {
                    black_box(self.breaker.is_open(name));
                }
                1 => self.breaker.record_failure(name),
                _ => self.breaker.record_success(name),
            }
        }
    }
}

/// Every op a failure on one hot name, by name.
struct HotName<B>(B);

impl<B: Breaker> Workload for HotName<B> {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        for _ in 0..ops {
            self.0.record_failure(black_box("hot-strategy"));
        }
    }
}

/// Every op a failure on one hot name through a resolved handle.
struct HandlePath(BreakerHandle);

impl Workload for HandlePath {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        for _ in 0..ops {
            self.0.record_failure();
        }
    }
}

/// The reference row: a bare `fetch_add` on one shared `AtomicU64`.
struct BareFetchAdd(AtomicU64);

impl Workload for BareFetchAdd {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        for _ in 0..ops {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The floor of `rate-window`: every call moves one shared word with a CAS
/// loop that backs off like the breaker's (`Backoff::spin` after a failed
/// CAS) — what recording an outcome costs at the least when it writes one
/// word and nothing else (the breaker's common call, a success evicting a
/// success, writes exactly that).
struct WordCasFloor(AtomicU64);

impl Workload for WordCasFloor {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let add = if upstream(thread, i).is_err() { 2 } else { 1 };
            let backoff = crossbeam_utils::Backoff::new();
            let mut cur = self.0.load(Ordering::Acquire);
            while let Err(actual) = self.0.compare_exchange_weak(
                cur,
                cur.wrapping_add(add),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                backoff.spin();
                cur = actual;
            }
        }
    }
}

fn lock_free() -> CircuitBreaker {
    CircuitBreaker::new(3).expect("3 is a valid threshold")
}
fn std_mutex() -> MutexBreaker<StdMutex> {
    MutexBreaker::new(3).expect("3 is a valid threshold")
}
fn parking_lot() -> MutexBreaker<ParkingLotMutex> {
    MutexBreaker::new(3).expect("3 is a valid threshold")
}
fn sharded_mutex() -> ShardedBreaker {
    ShardedBreaker::new(3).expect("3 is a valid threshold")
}

// The call path: what every guarded call pays, against real peers.

/// The one upstream every thread of the call-path workload calls.
const CALL_PATH_NAME: &str = "upstream";

/// The guarded call of the call-path workload: call `i` of thread `t`
/// fails 1 time in 64 (at a per-thread offset, so threads fail at
/// different moments): far below every call-path breaker's threshold
/// (`CALL_PATH_THRESHOLD` consecutive failures; recloser a 50% rate), so
/// every breaker stays closed and the workload measures the hot path a
/// healthy upstream costs.
#[inline]
fn upstream(thread: usize, i: u64) -> Result<u64, u64> {
    let i = black_box(i);
    if i.wrapping_add(thread as u64 * 17) & 63 == 0 {
        Err(i)
    } else {
        Ok(i)
    }
}

/// `CircuitBreaker::call` on the shared name.
struct LockFreeCall(CircuitBreaker);

impl Workload for LockFreeCall {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let _ = black_box(
                self.0
                    .call(black_box(CALL_PATH_NAME), || upstream(thread, i)),
            );
        }
    }
}

/// `BreakerHandle::call` on a handle resolved once (no lookup; the permit
/// clones the name's `Arc`s).
struct HandleCall(BreakerHandle);

impl Workload for HandleCall {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let _ = black_box(self.0.call(|| upstream(thread, i)));
        }
    }
}

/// The baselines' `Breaker::call_with` on the shared name.
struct TraitCall<B>(B);

impl<B: Breaker> Workload for TraitCall<B> {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let _ = black_box(self.0.call_with(
                black_box(CALL_PATH_NAME),
                |_| true,
                || upstream(thread, i),
            ));
        }
    }
}

/// `recloser::Recloser::call`: one breaker for the one upstream, as its
/// docs show (it has no names; rate-based, a spin-locked ring of outcomes
/// behind a crossbeam-epoch pointer).
struct RecloserCall(recloser::Recloser);

impl Workload for RecloserCall {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let _ = black_box(self.0.call(|| upstream(thread, i)));
        }
    }
}

/// `failsafe::CircuitBreaker::call`: one state machine for the one
/// upstream (no names; a `parking_lot::Mutex` around the state, taken to
/// admit and again to record).
struct FailsafeCall<C>(C);

impl<C: failsafe::CircuitBreaker + Send + Sync> Workload for FailsafeCall<C> {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let _ = black_box(self.0.call(|| upstream(thread, i)));
        }
    }
}

/// recloser configured like our default: judged over the last 100 calls,
/// open at a 50% failure rate, 60 s open.
fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .half_open_len(1)
        .open_wait(std::time::Duration::from_secs(60))
        .build()
}

/// The consecutive-failure threshold of the call-path breakers. Each
/// thread's failures are 64 calls apart, but the count is shared: with 3,
/// the failures of three threads now and then line up with no success
/// between them and the breaker opens for its 60 s cool-down, turning the
/// rest of the cell into the rejection path. 20 in a row does not happen.
const CALL_PATH_THRESHOLD: u32 = 20;

fn call_path_lock_free() -> CircuitBreaker {
    CircuitBreaker::new(CALL_PATH_THRESHOLD).expect("a valid threshold")
}
fn call_path_std_mutex() -> MutexBreaker<StdMutex> {
    MutexBreaker::new(CALL_PATH_THRESHOLD).expect("a valid threshold")
}
fn call_path_parking_lot() -> MutexBreaker<ParkingLotMutex> {
    MutexBreaker::new(CALL_PATH_THRESHOLD).expect("a valid threshold")
}
fn call_path_sharded_mutex() -> ShardedBreaker {
    ShardedBreaker::new(CALL_PATH_THRESHOLD).expect("a valid threshold")
}

/// failsafe configured like our call-path breakers: `CALL_PATH_THRESHOLD`
/// consecutive failures open it, 60 s open.
fn failsafe() -> impl failsafe::CircuitBreaker + Send + Sync {
    use failsafe::{backoff, failure_policy};
    let backoff = backoff::constant(std::time::Duration::from_secs(60));
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            CALL_PATH_THRESHOLD,
            backoff,
        ))
        .build()
}

/// The rate-mode breaker of the `rate-window` workload, configured like
/// [`recloser()`]: the last 100 calls, open at a 50% failure rate, 60 s.
fn rate_builder() -> raceless::breaker::BreakerBuilder {
    CircuitBreaker::builder()
        .sliding_window(100)
        .failure_rate_threshold(50.0)
        .cool_down(std::time::Duration::from_secs(60))
}
fn rate_lock_free() -> CircuitBreaker {
    rate_builder().build().expect("a valid rate configuration")
}
fn rate_std_mutex() -> MutexBreaker<StdMutex> {
    MutexBreaker::from_builder(rate_builder()).expect("a valid rate configuration")
}
fn rate_parking_lot() -> MutexBreaker<ParkingLotMutex> {
    MutexBreaker::from_builder(rate_builder()).expect("a valid rate configuration")
}
fn rate_sharded_mutex() -> ShardedBreaker {
    ShardedBreaker::from_builder(rate_builder()).expect("a valid rate configuration")
}

/// The workloads of this component.
pub fn workloads() -> Vec<WorkloadDef> {
    vec![
        WorkloadDef {
            component: "breaker",
            name: "mixed-16-names",
            description: "16 names; 90% is_open, 9% record_failure, 1% record_success",
            impls: vec![
                (impl_name::LOCK_FREE, || Box::new(Mixed::new(lock_free()))),
                (impl_name::STD_MUTEX, || Box::new(Mixed::new(std_mutex()))),
                (impl_name::PARKING_LOT, || {
                    Box::new(Mixed::new(parking_lot()))
                }),
                (impl_name::SHARDED_MUTEX, || {
                    Box::new(Mixed::new(sharded_mutex()))
                }),
            ],
        },
        WorkloadDef {
            component: "breaker",
            name: "hot-name-failures",
            description: "every thread records failures on one name",
            impls: vec![
                (impl_name::LOCK_FREE, || Box::new(HotName(lock_free()))),
                (impl_name::STD_MUTEX, || Box::new(HotName(std_mutex()))),
                (impl_name::PARKING_LOT, || Box::new(HotName(parking_lot()))),
                (impl_name::SHARDED_MUTEX, || {
                    Box::new(HotName(sharded_mutex()))
                }),
            ],
        },
        WorkloadDef {
            component: "breaker",
            name: "handle-path",
            description: "failures on one hot name via a resolved handle (baselines by name); \
                          atomic-u64 is a bare fetch_add on one shared AtomicU64",
            impls: vec![
                (impl_name::LOCK_FREE, || {
                    Box::new(HandlePath(lock_free().handle("hot-strategy")))
                }),
                (impl_name::STD_MUTEX, || Box::new(HotName(std_mutex()))),
                (impl_name::PARKING_LOT, || Box::new(HotName(parking_lot()))),
                (impl_name::SHARDED_MUTEX, || {
                    Box::new(HotName(sharded_mutex()))
                }),
                ("atomic-u64", || Box::new(BareFetchAdd(AtomicU64::new(0)))),
            ],
        },
        WorkloadDef {
            component: "breaker",
            name: "call-path",
            description: "every thread calls one upstream through the breaker (1 call in 64 \
                          fails; the consecutive-mode breakers open at 20 in a row, so every breaker stays closed): lock-free is BreakerHandle::call on the \
                          upstream's handle, used like recloser and failsafe (the crates.io \
                          breakers: one instance per upstream, no names); lock-free-by-name is \
                          CircuitBreaker::call with the name (a name lookup per call)",
            impls: vec![
                (impl_name::LOCK_FREE, || {
                    Box::new(HandleCall(call_path_lock_free().handle(CALL_PATH_NAME)))
                }),
                (impl_name::STD_MUTEX, || {
                    Box::new(TraitCall(call_path_std_mutex()))
                }),
                (impl_name::PARKING_LOT, || {
                    Box::new(TraitCall(call_path_parking_lot()))
                }),
                (impl_name::SHARDED_MUTEX, || {
                    Box::new(TraitCall(call_path_sharded_mutex()))
                }),
                (impl_name::RECLOSER, || Box::new(RecloserCall(recloser()))),
                (impl_name::FAILSAFE, || Box::new(FailsafeCall(failsafe()))),
                ("lock-free-by-name", || {
                    Box::new(LockFreeCall(call_path_lock_free()))
                }),
            ],
        },
        WorkloadDef {
            component: "breaker",
            name: "rate-window",
            description: "the call path in rate mode (the last 100 calls, 50%): every call \
                          records its outcome in the window (1 in 64 fails); lock-free and \
                          lock-free-by-name as in call-path; recloser is the same window on \
                          a spin-locked ring; word-cas-floor is one CAS loop on one shared \
                          word per call",
            impls: vec![
                (impl_name::LOCK_FREE, || {
                    Box::new(LockFreeCall(rate_lock_free()))
                }),
                (impl_name::STD_MUTEX, || {
                    Box::new(TraitCall(rate_std_mutex()))
                }),
                (impl_name::PARKING_LOT, || {
                    Box::new(TraitCall(rate_parking_lot()))
                }),
                (impl_name::SHARDED_MUTEX, || {
                    Box::new(TraitCall(rate_sharded_mutex()))
                }),
                (impl_name::RECLOSER, || Box::new(RecloserCall(recloser()))),
                ("lock-free-by-name", || {
                    Box::new(LockFreeCall(rate_lock_free()))
                }),
                ("word-cas-floor", || Box::new(WordCasFloor(AtomicU64::new(0)))),
            ],
        },
    ]
}

/// The seed's bug: `threads` threads record 1000 failures each on one hot
/// name; counts the failures lost, per round, on the racy variant and on
/// the lock-free breaker.
pub fn reproduction() -> Reproduction {
    fn run<B: Breaker>(make: fn() -> B, threads: usize, rounds: usize) -> u64 {
        (0..rounds)
            .map(|_| lost_increments(&make(), threads, 1000, true))
            .sum()
    }
    Reproduction {
        component: "breaker",
        what_is_lost: "lost failure increments",
        racy: |threads, rounds| run(|| RacyBreaker::new(u32::MAX), threads, rounds),
        lock_free: |threads, rounds| run(lock_free, threads, rounds),
    }
}
