//! The `bus` component's scaffolding: a test event, the racy variant (the
//! seed's unsynchronized subscriber list and audit deque), the sequential
//! model, the concurrency checks shared by tests and the reproduction, and
//! the benchmark workloads.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use raceless::baseline::{MutexBus, ParkingLotMutex, StdMutex};
use raceless::bus::{Bus, EmitReport, Event, EventBus, OwnedBus, SubscriptionId, TryRecvError};
use raceless::CallbackError;

use crate::model::SequentialSpec;
use crate::threads::{run_concurrently, stagger};
use crate::workload::{impl_name, MakeWorkload, Reproduction, Workload, WorkloadDef};

// ---------------------------------------------------------------------------
// The test event

/// The event every bus test and workload uses: a small kind, a payload and
/// a checksum of both, so a torn event would be noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TestEvent {
    /// The kind subscriptions are keyed by.
    pub kind: u8,
    /// Any value; the checks use it as a per-thread sequence number.
    pub payload: u64,
    check: u64,
}

impl TestEvent {
    /// An event of `kind` carrying `payload`.
    pub fn new(kind: u8, payload: u64) -> Self {
        Self {
            kind,
            payload,
            check: Self::checksum(kind, payload),
        }
    }

    fn checksum(kind: u8, payload: u64) -> u64 {
        payload.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(kind)
    }

    /// Whether the checksum matches (the event is not torn).
    pub fn is_whole(&self) -> bool {
        self.check == Self::checksum(self.kind, self.payload)
    }
}

impl Event for TestEvent {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
    fn kind_label(&self) -> String {
        format!("kind-{}", self.kind)
    }
}

/// The message of every deliberate panic in bus tests; see
/// [`quiet_expected_panics`].
pub const EXPECTED_PANIC: &str = "expected panic (bus test)";

/// Installs (once) a panic hook that stays silent for [`EXPECTED_PANIC`]
/// and defers to the previous hook for every other panic, so tests of
/// panic isolation do not flood the output.
pub fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
            if msg != Some(EXPECTED_PANIC) {
                previous(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// The racy variant

type Handler<E> = Arc<dyn Fn(&E) -> Result<(), CallbackError> + Send + Sync>;
type List<E> = Arc<Vec<(SubscriptionId, Handler<E>)>>;

/// The seed's bus without its lock, in safe Rust: every read-modify-write
/// of a subscriber list is a load and a later store (two separate critical
/// sections, a `yield_now` between them), and the audit log checks its
/// length before it evicts. Concurrent subscribes lose each other (missed
/// deliveries), an unsubscribe can be undone by a concurrent subscribe
/// (calls after unsubscribe), two unsubscribes of one id can both succeed,
/// and the log can exceed its capacity.
pub struct RacyBus<E: Event> {
    kinds: Mutex<HashMap<E::Kind, List<E>>>,
    next_id: AtomicU64,
    audit: Mutex<VecDeque<E>>,
    capacity: usize,
}

impl<E: Event> RacyBus<E> {
    /// A racy bus keeping up to (nominally) `audit_capacity` events.
    pub fn new(audit_capacity: usize) -> Self {
        Self {
            kinds: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            audit: Mutex::new(VecDeque::new()),
            capacity: audit_capacity,
        }
    }

    fn load(&self, kind: &E::Kind) -> List<E> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.get(kind).cloned().unwrap_or_default()
    }

    fn store(&self, kind: E::Kind, list: Vec<(SubscriptionId, Handler<E>)>) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.insert(kind, Arc::new(list));
    }

    fn find(&self, id: SubscriptionId) -> Option<E::Kind> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .iter()
            .find(|(_, list)| list.iter().any(|(i, _)| *i == id))
            .map(|(k, _)| k.clone())
    }
}

impl<E: Event> Bus<E> for RacyBus<E> {
    fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        let id = SubscriptionId::from_raw(self.next_id.fetch_add(1, Ordering::Relaxed));
        let current = self.load(&kind);
        std::thread::yield_now(); // the check-then-act window
        let mut new: Vec<_> = current.iter().cloned().collect();
        new.push((id, Arc::new(handler)));
        self.store(kind, new);
        id
    }

    fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(kind) = self.find(id) else {
            return false;
        };
        let current = self.load(&kind);
        std::thread::yield_now(); // the check-then-act window
        let new: Vec<_> = current.iter().filter(|(i, _)| *i != id).cloned().collect();
        let found = new.len() != current.len();
        self.store(kind, new);
        found
    }

    fn emit(&self, event: E) -> EmitReport {
        if self.capacity > 0 {
            let full = self.audit.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.capacity;
            std::thread::yield_now(); // the check-then-act window
            if full {
                self.audit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
            }
            let mut log = self.audit.lock().unwrap_or_else(|e| e.into_inner());
            log.push_back(event.clone());
        }
        let mut report = EmitReport::default();
        for (_, handler) in self.load(&event.kind()).iter() {
            match catch_unwind(AssertUnwindSafe(|| handler(&event))) {
                Ok(Ok(())) => report.delivered += 1,
                _ => report.failed += 1,
            }
        }
        report
    }

    fn audit_log(&self) -> Vec<E> {
        let log = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    fn subscriber_count(&self, kind: &E::Kind) -> usize {
        self.load(kind).len()
    }
}

// ---------------------------------------------------------------------------
// The sequential model

/// What a model handler does when called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behavior {
    /// Returns `Ok(())`.
    Succeed,
    /// Returns an error.
    Fail,
    /// Panics with [`EXPECTED_PANIC`].
    Panic,
}

/// One operation on a bus.
#[derive(Debug, Clone)]
pub enum Op {
    /// Subscribe a handler of the given behaviour to `kind`.
    Subscribe {
        /// The kind.
        kind: u8,
        /// What the handler does.
        behavior: Behavior,
    },
    /// Unsubscribe the `n`-th subscription handed out (an `n` past the end
    /// names an id the bus never handed out).
    Unsubscribe(usize),
    /// Emit the event.
    Emit(TestEvent),
    /// Read the audit log.
    AuditLog,
    /// Count the subscribers of a kind.
    SubscriberCount(u8),
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// The ordinal of the new subscription.
    Subscribed(usize),
    /// What `unsubscribe` returned.
    Unsubscribed(bool),
    /// The report and the ordinals of the handlers called, in call order.
    Emitted(EmitReport, Vec<usize>),
    /// The audit log.
    Log(Vec<TestEvent>),
    /// A subscriber count.
    Count(usize),
}

/// The bus, one operation at a time: subscriptions in order, and the
/// newest `capacity` events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    capacity: usize,
    handed_out: usize,
    subscriptions: BTreeMap<usize, (u8, Behavior)>,
    log: VecDeque<TestEvent>,
}

impl Model {
    /// An empty bus with an audit log of `capacity`.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            handed_out: 0,
            subscriptions: BTreeMap::new(),
            log: VecDeque::new(),
        }
    }
}

impl SequentialSpec for Model {
    type Op = Op;
    type Ret = Ret;

    fn apply(&mut self, op: &Op) -> Ret {
        match *op {
            Op::Subscribe { kind, behavior } => {
                let n = self.handed_out;
                self.handed_out += 1;
                self.subscriptions.insert(n, (kind, behavior));
                Ret::Subscribed(n)
            }
            Op::Unsubscribe(n) => Ret::Unsubscribed(self.subscriptions.remove(&n).is_some()),
            Op::Emit(event) => {
                if self.capacity > 0 {
                    if self.log.len() == self.capacity {
                        self.log.pop_front();
                    }
                    self.log.push_back(event);
                }
                let mut report = EmitReport::default();
                let mut called = Vec::new();
                for (&n, &(kind, behavior)) in &self.subscriptions {
                    if kind == event.kind {
                        called.push(n);
                        match behavior {
                            Behavior::Succeed => report.delivered += 1,
                            Behavior::Fail | Behavior::Panic => report.failed += 1,
                        }
                    }
                }
                Ret::Emitted(report, called)
            }
            Op::AuditLog => Ret::Log(self.log.iter().copied().collect()),
            Op::SubscriberCount(kind) => Ret::Count(
                self.subscriptions
                    .values()
                    .filter(|(k, _)| *k == kind)
                    .count(),
            ),
        }
    }
}

/// Applies [`Op`]s to a real bus and reports them as the model does: keeps
/// the ids handed out (ops name them by ordinal) and records which handler
/// each emit called.
pub struct Driver<B> {
    bus: B,
    ids: Vec<SubscriptionId>,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl<B: Bus<TestEvent>> Driver<B> {
    /// Drives `bus`.
    pub fn new(bus: B) -> Self {
        quiet_expected_panics();
        Self {
            bus,
            ids: Vec::new(),
            calls: Arc::default(),
        }
    }

    /// Applies `op` to the bus.
    pub fn apply(&mut self, op: &Op) -> Ret {
        match *op {
            Op::Subscribe { kind, behavior } => {
                let n = self.ids.len();
                let calls = self.calls.clone();
                let id = self.bus.subscribe(kind, move |_: &TestEvent| {
                    calls.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                    match behavior {
                        Behavior::Succeed => Ok(()),
                        Behavior::Fail => Err("model handler failure".into()),
                        Behavior::Panic => panic!("{}", EXPECTED_PANIC),
                    }
                });
                self.ids.push(id);
                Ret::Subscribed(n)
            }
            Op::Unsubscribe(n) => {
                let id = self
                    .ids
                    .get(n)
                    .copied()
                    .unwrap_or(SubscriptionId::from_raw(u64::MAX - n as u64));
                Ret::Unsubscribed(self.bus.unsubscribe(id))
            }
            Op::Emit(event) => {
                let report = self.bus.emit(event);
                let called =
                    std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()));
                Ret::Emitted(report, called)
            }
            Op::AuditLog => Ret::Log(self.bus.audit_log()),
            Op::SubscriberCount(kind) => Ret::Count(self.bus.subscriber_count(&kind)),
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency checks: each returns what it counted, the tests assert.

/// The kind the concurrency checks churn on.
pub const HOT_KIND: u8 = 0;

fn marker(thread: usize, round: usize) -> u64 {
    ((thread as u64) << 32) | round as u64
}

/// Visibility after subscribe under churn: each of `threads` threads, for
/// `rounds` rounds, subscribes a handler to [`HOT_KIND`], then emits an
/// event only that handler is looking for, then unsubscribes — so every
/// subscribe races with the other threads' subscribes and unsubscribes of
/// the same kind. The thread [`stagger`]s between its subscribe and its emit,
/// so that the others' list updates land in between even when all threads
/// share one core (a lost subscription is only seen by a later emit).
/// Returns the emits that did not reach the handler subscribed before them
/// (missed deliveries).
pub fn missed_after_subscribe<B: Bus<TestEvent>>(bus: &B, threads: usize, rounds: usize) -> u64 {
    run_concurrently(threads, |t| {
        let mut missed = 0;
        for r in 0..rounds {
            let mine = marker(t, r);
            let hit = Arc::new(AtomicBool::new(false));
            let seen = hit.clone();
            let id = bus.subscribe(HOT_KIND, move |e: &TestEvent| {
                if e.payload == mine {
                    seen.store(true, Ordering::Relaxed);
                }
                Ok(())
            });
            stagger(t);
            bus.emit(TestEvent::new(HOT_KIND, mine));
            if !hit.load(Ordering::Relaxed) {
                missed += 1;
            }
            bus.unsubscribe(id);
        }
        missed
    })
    .into_iter()
    .sum()
}

/// Unsubscribe finality under churn: each thread subscribes a handler,
/// unsubscribes it (counting a `false` as an anomaly), [`stagger`]s,
/// then emits an event only that handler is looking for, while the others
/// do the same on the same kind. Returns the anomalies: calls of a handler by an emit that
/// started after its `unsubscribe` returned `true`, plus failed
/// unsubscribes.
pub fn calls_after_unsubscribe<B: Bus<TestEvent>>(bus: &B, threads: usize, rounds: usize) -> u64 {
    run_concurrently(threads, |t| {
        let mut anomalies = 0;
        for r in 0..rounds {
            let mine = marker(t, r);
            let calls = Arc::new(AtomicU64::new(0));
            let counted = calls.clone();
            let id = bus.subscribe(HOT_KIND, move |e: &TestEvent| {
                if e.payload == mine {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            if !bus.unsubscribe(id) {
                anomalies += 1;
            }
            stagger(t);
            bus.emit(TestEvent::new(HOT_KIND, mine));
            anomalies += calls.load(Ordering::Relaxed);
        }
        anomalies
    })
    .into_iter()
    .sum()
}

/// Concurrent unsubscribes of the same ids: `rounds` subscriptions, then
/// `threads` threads each try to unsubscribe all of them. Returns how far
/// the number of `true` results is from exactly one per id, plus handlers
/// still subscribed afterwards.
pub fn unsubscribe_races<B: Bus<TestEvent>>(bus: &B, threads: usize, rounds: usize) -> u64 {
    let ids: Vec<_> = (0..rounds)
        .map(|_| bus.subscribe(HOT_KIND, |_: &TestEvent| Ok(())))
        .collect();
    let wins: Vec<AtomicUsize> = ids.iter().map(|_| AtomicUsize::new(0)).collect();
    run_concurrently(threads, |_| {
        for (id, won) in ids.iter().zip(&wins) {
            if bus.unsubscribe(*id) {
                won.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let off: usize = wins
        .iter()
        .map(|w| w.load(Ordering::Relaxed).abs_diff(1))
        .sum();
    (off + bus.subscriber_count(&HOT_KIND)) as u64
}

/// What [`audit_anomalies`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditAnomalies {
    /// Snapshots longer than the capacity.
    pub over_capacity: u64,
    /// Events seen twice in one snapshot.
    pub duplicates: u64,
    /// Events whose checksum did not match.
    pub torn: u64,
    /// One thread's events out of their emit order in a snapshot.
    pub out_of_order: u64,
    /// In the final log: a thread's surviving events not being its newest
    /// ones, or a final length other than `min(capacity, emitted)`.
    pub not_newest: u64,
}

impl AuditAnomalies {
    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.over_capacity + self.duplicates + self.torn + self.out_of_order + self.not_newest
    }
}

fn check_snapshot(log: &[TestEvent], capacity: usize, found: &mut AuditAnomalies) {
    if log.len() > capacity {
        found.over_capacity += 1;
    }
    let mut seen = HashSet::new();
    let mut last: HashMap<u8, u64> = HashMap::new();
    for e in log {
        if !e.is_whole() {
            found.torn += 1;
        }
        if !seen.insert((e.kind, e.payload)) {
            found.duplicates += 1;
        }
        if let Some(prev) = last.insert(e.kind, e.payload) {
            if prev >= e.payload {
                found.out_of_order += 1;
            }
        }
    }
}

/// The audit log under `emitters` concurrent emitters (each emitting
/// `per_thread` events of its own kind, payloads 0, 1, 2…) and one reader
/// taking snapshots meanwhile. `bus` must have audit capacity `capacity`
/// and be used by nothing else.
pub fn audit_anomalies<B: Bus<TestEvent>>(
    bus: &B,
    capacity: usize,
    emitters: usize,
    per_thread: usize,
) -> AuditAnomalies {
    let done = AtomicUsize::new(0);
    let found = Mutex::new(AuditAnomalies::default());
    run_concurrently(emitters + 1, |t| {
        if t < emitters {
            for i in 0..per_thread {
                bus.emit(TestEvent::new(t as u8, i as u64));
            }
            done.fetch_add(1, Ordering::Release);
        } else {
            let mut mine = AuditAnomalies::default();
            while done.load(Ordering::Acquire) < emitters {
                check_snapshot(&bus.audit_log(), capacity, &mut mine);
            }
            let mut all = found.lock().unwrap_or_else(|e| e.into_inner());
            all.over_capacity += mine.over_capacity;
            all.duplicates += mine.duplicates;
            all.torn += mine.torn;
            all.out_of_order += mine.out_of_order;
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    let last = bus.audit_log();
    check_snapshot(&last, capacity, &mut found);
    if last.len() != capacity.min(emitters * per_thread) {
        found.not_newest += 1;
    }
    // Each thread's survivors must be a suffix of its emits.
    let mut per_kind: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for e in &last {
        per_kind.entry(e.kind).or_default().push(e.payload);
    }
    for payloads in per_kind.values() {
        let expected_first = per_thread as u64 - payloads.len() as u64;
        if payloads
            .iter()
            .copied()
            .ne(expected_first..per_thread as u64)
        {
            found.not_newest += 1;
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Channels, owned guards and kind reclamation (0.2)

/// What [`lag_accounting`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagReport {
    /// Events the consumer received.
    pub received: u64,
    /// The sum of the `Lagged` counts it was told.
    pub lagged: u64,
    /// Events emitted in all.
    pub emitted: u64,
    /// Emits that did not report the channel's delivery.
    pub undelivered: u64,
    /// Events of one emitter received out of its emit order, or twice.
    pub out_of_order: u64,
}

impl LagReport {
    /// Anomalies: `received + lagged != emitted`, plus undelivered emits
    /// and order violations.
    pub fn anomalies(&self) -> u64 {
        (self.received + self.lagged).abs_diff(self.emitted) + self.undelivered + self.out_of_order
    }
}

/// A slow channel consumer: `emitters` threads each emit `per_thread`
/// events of [`HOT_KIND`] into a bus with one channel of `capacity`, while
/// a consumer thread takes one event per `slowness` yields; once the
/// emitters are done it drains the queue. Nothing waits for the consumer:
/// every emit must report the delivery, and the events received plus the
/// `Lagged` counts must add up to the events emitted, exactly, with each
/// emitter's events in its emit order. `bus` must have no other subscriber.
pub fn lag_accounting<B: OwnedBus<TestEvent>>(
    bus: &B,
    emitters: usize,
    per_thread: usize,
    capacity: usize,
    slowness: usize,
) -> LagReport {
    let rx = bus
        .subscribe_channel(HOT_KIND, capacity)
        .expect("a valid capacity");
    lag_accounting_with(
        rx,
        |e| bus.emit(e).delivered,
        emitters,
        per_thread,
        slowness,
    )
}

/// The consuming end [`lag_accounting_with`] drives.
pub trait ChannelConsumer: Send {
    /// As [`raceless::bus::Receiver::try_recv`].
    fn try_recv(&mut self) -> Result<TestEvent, TryRecvError>;
}

impl ChannelConsumer for raceless::bus::Receiver<TestEvent> {
    fn try_recv(&mut self) -> Result<TestEvent, TryRecvError> {
        raceless::bus::Receiver::try_recv(self)
    }
}

/// The racy variant of a channel: a drop-oldest queue whose lag count is
/// a load and a later store (a `yield_now` between them), so concurrent
/// evictions lose counts.
pub struct RacyChannel {
    queue: Mutex<VecDeque<TestEvent>>,
    capacity: usize,
    lagged: AtomicU64,
}

impl RacyChannel {
    /// A racy channel of `capacity` events.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            lagged: AtomicU64::new(0),
        })
    }

    /// Queues `event`, evicting the oldest if full; returns 1 (delivered).
    pub fn push(&self, event: TestEvent) -> usize {
        let evicted = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let evicted = q.len() == self.capacity && q.pop_front().is_some();
            q.push_back(event);
            evicted
        };
        if evicted {
            let n = self.lagged.load(Ordering::Relaxed);
            std::thread::yield_now(); // the check-then-act window
            self.lagged.store(n + 1, Ordering::Relaxed);
        }
        1
    }
}

impl ChannelConsumer for Arc<RacyChannel> {
    fn try_recv(&mut self) -> Result<TestEvent, TryRecvError> {
        let missed = self.lagged.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Err(TryRecvError::Lagged(missed));
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.pop_front().ok_or(TryRecvError::Empty)
    }
}

/// [`lag_accounting`] on a [`RacyChannel`] (which the check must catch).
pub fn racy_lag_accounting(
    emitters: usize,
    per_thread: usize,
    capacity: usize,
    slowness: usize,
) -> LagReport {
    let channel = RacyChannel::new(capacity);
    let sender = channel.clone();
    lag_accounting_with(channel, |e| sender.push(e), emitters, per_thread, slowness)
}

/// [`lag_accounting`] over any consumer `rx` fed by `emit` (which returns
/// the deliveries it made; each must be 1).
pub fn lag_accounting_with<R: ChannelConsumer>(
    mut rx: R,
    emit: impl Fn(TestEvent) -> usize + Sync,
    emitters: usize,
    per_thread: usize,
    slowness: usize,
) -> LagReport {
    let done = AtomicUsize::new(0);
    let undelivered = AtomicU64::new(0);
    let report = Mutex::new(LagReport::default());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut r = LagReport::default();
            let mut last: HashMap<u64, u64> = HashMap::new();
            let mut take = |out: Result<TestEvent, TryRecvError>, r: &mut LagReport| match out {
                Ok(e) => {
                    r.received += 1;
                    let (thread, round) = (e.payload >> 32, e.payload & 0xFFFF_FFFF);
                    if let Some(prev) = last.insert(thread, round) {
                        if prev >= round {
                            r.out_of_order += 1;
                        }
                    }
                    true
                }
                Err(TryRecvError::Lagged(n)) => {
                    r.lagged += n;
                    true
                }
                Err(_) => false,
            };
            while done.load(Ordering::Acquire) < emitters {
                for _ in 0..slowness {
                    std::thread::yield_now();
                }
                take(rx.try_recv(), &mut r);
            }
            // The emitters returned (acquired above): drain.
            while take(rx.try_recv(), &mut r) {}
            *report.lock().unwrap_or_else(|e| e.into_inner()) = r;
        });
        run_concurrently(emitters, |t| {
            for i in 0..per_thread {
                if emit(TestEvent::new(HOT_KIND, marker(t, i))) != 1 {
                    undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.fetch_add(1, Ordering::Release);
        });
    });
    let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
    r.emitted = (emitters * per_thread) as u64;
    r.undelivered = undelivered.into_inner();
    r
}

/// An event whose kind is a `u64`: for pushing many distinct kinds
/// through a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyedEvent(pub u64);

impl Event for KeyedEvent {
    type Kind = u64;
    fn kind(&self) -> u64 {
        self.0
    }
}

/// Kind churn: `threads` threads each push `per_thread` distinct kinds
/// through `bus`: an owned handler guard and a channel receiver for the
/// kind, one emit (which must reach both), a receive, then both dropped.
/// Returns the anomalies (wrong delivery counts, missing events); the
/// caller checks that [`OwnedBus::kind_count`] is back to its baseline.
pub fn churn_distinct_kinds<B: OwnedBus<KeyedEvent>>(
    bus: &B,
    threads: usize,
    per_thread: usize,
) -> u64 {
    run_concurrently(threads, |t| {
        let mut anomalies = 0;
        for i in 0..per_thread {
            let kind = (t * per_thread + i) as u64 + 1_000_000_000;
            let guard = bus.subscribe_owned(kind, |_: &KeyedEvent| Ok(()));
            let mut rx = bus.subscribe_channel(kind, 1).expect("a valid capacity");
            if bus.emit(KeyedEvent(kind)).delivered != 2 {
                anomalies += 1;
            }
            if rx.try_recv() != Ok(KeyedEvent(kind)) {
                anomalies += 1;
            }
            drop(guard);
            drop(rx);
        }
        anomalies
    })
    .into_iter()
    .sum()
}

// ---------------------------------------------------------------------------
// Workloads and the seed-bug reproduction

/// The audit capacity of every workload.
pub const WORKLOAD_AUDIT_CAPACITY: usize = 1024;

fn noop_handler(e: &TestEvent) -> Result<(), CallbackError> {
    black_box(e.payload);
    Ok(())
}

/// Emits over `kinds` kinds with `handlers` handlers each; with `churn`,
/// every 64th operation of each thread also subscribes and unsubscribes a
/// handler of its kind.
struct EmitMix<B> {
    bus: B,
    kinds: u8,
    churn: bool,
}

impl<B: Bus<TestEvent>> EmitMix<B> {
    fn new(bus: B, kinds: u8, handlers: usize, churn: bool) -> Self {
        for kind in 0..kinds {
            for _ in 0..handlers {
                bus.subscribe(kind, noop_handler);
            }
        }
        Self { bus, kinds, churn }
    }
}

impl<B: Bus<TestEvent>> Workload for EmitMix<B> {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let kind = ((i + thread as u64) % u64::from(self.kinds)) as u8;
            if self.churn && i % 64 == 0 {
                let id = self.bus.subscribe(kind, noop_handler);
                self.bus.unsubscribe(id);
            }
            black_box(self.bus.emit(TestEvent::new(kind, i)));
        }
    }
}

/// The capacity of `emit-stalled-channel`'s channel.
const STALLED_CAPACITY: usize = 64;

/// [`EmitMix`] over one kind with 4 handlers, no audit log, plus one
/// channel receiver of [`STALLED_CAPACITY`] that nobody reads: every emit
/// finds its queue full and drops its oldest event. Next to
/// `emit-no-audit` (the same without the channel), it shows what a
/// stalled consumer costs the emitters: one clone, one queue push that
/// evicts, one lag count (no wake while the lag is unreported) — never a
/// wait.
struct StalledChannel<B: OwnedBus<TestEvent>> {
    mix: EmitMix<B>,
    _stalled: raceless::bus::Receiver<TestEvent>,
}

impl<B: OwnedBus<TestEvent>> StalledChannel<B> {
    fn new(bus: B) -> Self {
        let stalled = bus
            .subscribe_channel(0, STALLED_CAPACITY)
            .expect("a valid capacity");
        Self {
            mix: EmitMix::new(bus, 1, 4, false),
            _stalled: stalled,
        }
    }
}

impl<B: OwnedBus<TestEvent>> Workload for StalledChannel<B> {
    fn run(&self, thread: usize, threads: usize, ops: u64) {
        self.mix.run(thread, threads, ops);
    }
}

/// Reference row: the floor of any RCU bus — one bare `ArcSwap` load of a
/// handler list and the calls, nothing else (no audit log, no counters).
/// With `sequence`, also one `fetch_add` on a counter every emitter shares:
/// the floor of any log that orders all events by one sequence (the only
/// way to know which events are the newest without a clock). The counter
/// is cache-padded: unpadded it shares a line with `list`, which every
/// emit loads, and the row measured that false sharing instead of the
/// counter.
///
/// With `queue`, also a push of the event into one bounded drop-oldest
/// `ArrayQueue` that every emitter shares and nobody drains, counting each
/// eviction (the floor of `emit-stalled-channel`: what any lock-free bus
/// pays to deliver into one full channel).
struct BareArcSwap {
    list: arc_swap::ArcSwap<Vec<Handler<TestEvent>>>,
    sequence: Option<CachePadded<AtomicU64>>,
    queue: Option<SharedQueue>,
}

/// A full channel's queue and its lag count, on their own lines.
struct SharedQueue {
    queue: ArrayQueue<TestEvent>,
    lagged: CachePadded<AtomicU64>,
}

impl BareArcSwap {
    fn new(sequenced: bool) -> Self {
        Self {
            list: arc_swap::ArcSwap::from_pointee(four_handlers()),
            sequence: sequenced.then(|| CachePadded::new(AtomicU64::new(0))),
            queue: None,
        }
    }

    /// The floor of emits into one full channel of `capacity` events.
    fn with_full_channel(capacity: usize) -> Self {
        Self {
            queue: Some(SharedQueue {
                queue: ArrayQueue::new(capacity),
                lagged: CachePadded::new(AtomicU64::new(0)),
            }),
            ..Self::new(false)
        }
    }
}

impl Workload for BareArcSwap {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let event = TestEvent::new(0, i + thread as u64);
            if let Some(sequence) = &self.sequence {
                // Relaxed: only the number matters, as in the real log.
                black_box(sequence.fetch_add(1, Ordering::Relaxed));
            }
            let list = self.list.load();
            let mut report = EmitReport::default();
            for handler in list.iter() {
                match catch_unwind(AssertUnwindSafe(|| handler(&event))) {
                    Ok(Ok(())) => report.delivered += 1,
                    _ => report.failed += 1,
                }
            }
            if let Some(full) = &self.queue {
                if full.queue.force_push(event).is_some() {
                    // Relaxed: a count, as the channel's.
                    full.lagged.fetch_add(1, Ordering::Relaxed);
                }
            }
            black_box(report);
        }
    }
}

/// Reference row: a `RwLock` around the handler lists (readers share it),
/// no audit log — what a reader-writer lock buys over a mutex.
struct RwLockBus {
    kinds: RwLock<HashMap<u8, Vec<Handler<TestEvent>>>>,
}

impl Workload for RwLockBus {
    fn run(&self, thread: usize, _threads: usize, ops: u64) {
        for i in 0..ops {
            let event = TestEvent::new(0, i + thread as u64);
            let handlers = {
                let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
                kinds.get(&0).cloned().unwrap_or_default()
            };
            let mut report = EmitReport::default();
            for handler in &handlers {
                match catch_unwind(AssertUnwindSafe(|| handler(&event))) {
                    Ok(Ok(())) => report.delivered += 1,
                    _ => report.failed += 1,
                }
            }
            black_box(report);
        }
    }
}

fn four_handlers() -> Vec<Handler<TestEvent>> {
    (0..4)
        .map(|_| Arc::new(noop_handler) as Handler<TestEvent>)
        .collect()
}

/// The three implementations of one [`EmitMix`] (the arguments must be
/// constants: each row is a plain `fn()`).
macro_rules! mix {
    ($capacity:expr, $kinds:expr, $handlers:expr, $churn:expr) => {{
        let rows: Vec<(&'static str, MakeWorkload)> = vec![
            (impl_name::LOCK_FREE, || {
                Box::new(EmitMix::new(
                    EventBus::new($capacity),
                    $kinds,
                    $handlers,
                    $churn,
                ))
            }),
            (impl_name::STD_MUTEX, || {
                let bus = MutexBus::<TestEvent, StdMutex>::new($capacity);
                Box::new(EmitMix::new(bus, $kinds, $handlers, $churn))
            }),
            (impl_name::PARKING_LOT, || {
                let bus = MutexBus::<TestEvent, ParkingLotMutex>::new($capacity);
                Box::new(EmitMix::new(bus, $kinds, $handlers, $churn))
            }),
        ];
        rows
    }};
}

/// The bus workloads: emit-heavy with 4 handlers (with the audit log, with
/// subscription churn, without the log next to the bare-`ArcSwap` and
/// `RwLock` floors) and many kinds.
pub fn workloads() -> Vec<WorkloadDef> {
    let mut no_audit = mix!(0, 1, 4, false);
    no_audit.push(("rwlock", || {
        Box::new(RwLockBus {
            kinds: RwLock::new(HashMap::from([(0, four_handlers())])),
        })
    }));
    no_audit.push(("bare-arcswap", || Box::new(BareArcSwap::new(false))));
    let mut audited = mix!(WORKLOAD_AUDIT_CAPACITY, 1, 4, false);
    audited.push(("sequenced-floor", || Box::new(BareArcSwap::new(true))));
    vec![
        WorkloadDef {
            component: "bus",
            name: "emit-4-handlers",
            description: "emit one kind with 4 handlers, audit log of 1024; floor: bare ArcSwap load + one shared fetch_add + 4 calls",
            impls: audited,
        },
        WorkloadDef {
            component: "bus",
            name: "emit-with-churn",
            description: "emit one kind with 4 handlers, audit log of 1024; every 64th op also subscribes and unsubscribes",
            impls: mix!(WORKLOAD_AUDIT_CAPACITY, 1, 4, true),
        },
        WorkloadDef {
            component: "bus",
            name: "many-kinds",
            description: "emit over 64 kinds with 2 handlers each, audit log of 1024",
            impls: mix!(WORKLOAD_AUDIT_CAPACITY, 64, 2, false),
        },
        WorkloadDef {
            component: "bus",
            name: "emit-stalled-channel",
            description: "emit one kind with 4 handlers and one channel (capacity 64) nobody reads, no audit log: compare with emit-no-audit; floor: bare ArcSwap load + 4 calls + one force_push into one shared full ArrayQueue (+ its lag count)",
            impls: vec![
                (impl_name::LOCK_FREE, || {
                    Box::new(StalledChannel::new(EventBus::new(0)))
                }),
                (impl_name::STD_MUTEX, || {
                    Box::new(StalledChannel::new(MutexBus::<TestEvent, StdMutex>::new(0)))
                }),
                (impl_name::PARKING_LOT, || {
                    Box::new(StalledChannel::new(
                        MutexBus::<TestEvent, ParkingLotMutex>::new(0),
                    ))
                }),
                ("queue-floor", || {
                    Box::new(BareArcSwap::with_full_channel(STALLED_CAPACITY))
                }),
            ],
        },
        WorkloadDef {
            component: "bus",
            name: "emit-no-audit",
            description: "emit one kind with 4 handlers, no audit log; floors: RwLock, bare ArcSwap load + 4 calls",
            impls: no_audit,
        },
    ]
}

/// The seed's race: subscribes concurrent with other subscribes and
/// unsubscribes of the same kind, each followed by an emit that must reach
/// the new handler; counts missed deliveries.
pub fn reproduction() -> Reproduction {
    Reproduction {
        component: "bus",
        what_is_lost: "missed deliveries",
        racy: |threads, rounds| missed_after_subscribe(&RacyBus::new(0), threads, rounds),
        lock_free: |threads, rounds| missed_after_subscribe(&EventBus::new(0), threads, rounds),
    }
}
