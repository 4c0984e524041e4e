//! Linearizability of every component, checked on recorded concurrent
//! histories (`raceless_harness::linearizability`).
//!
//! For each component: a few threads run random operations (from a small set
//! of keys, so they collide) against one shared instance; each history is
//! checked against the component's sequential model
//! (`raceless_harness::<component>::Model`). The lock-free type and both
//! mutex baselines must pass every history; the racy (check-then-act)
//! variant must be caught. The glue is written once (the macro below); each
//! component only says how to build its types, draw an operation and apply
//! one to the real type.

#[allow(unused_imports)] // the generators use some, the macro the others
use raceless_harness::linearizability::{
    assert_caught, assert_linearizable, Config, Rng, SmallRng,
};

/// One test per correct implementation (must be linearizable) and one for
/// the racy variant (must be caught), for each component. An
/// implementation may name its own model (`=> make, model: expr`) where it
/// documents a weaker guarantee than the component's default model.
#[allow(unused_macros)] // until a component is listed
macro_rules! linearizability_tests {
    ($(
        $component:ident {
            model: $init:expr,
            op: $gen:expr,
            apply: $apply:path,
            linearizable: { $($impl_name:ident => $make:expr $(, model: $own:expr)?;)+ },
            racy: $racy:expr $(,)?
        }
    )*) => {$(
        mod $component {
            use super::*;

            $(
                #[test]
                fn $impl_name() {
                    assert_linearizable(
                        concat!(stringify!($component), "::", stringify!($impl_name)),
                        $make,
                        first!($($own,)? $init),
                        $apply,
                        $gen,
                        &Config::default(),
                    );
                }
            )+

            #[test]
            // Under Miri (2–6 histories, no preemption) a race may not show
            // up; Miri's job here is UB on the real types.
            #[cfg_attr(miri, ignore = "racy hunts need native scheduling")]
            fn racy_variant_is_caught() {
                assert_caught(
                    concat!(stringify!($component), "::racy"),
                    $racy,
                    $init,
                    $apply,
                    $gen,
                    &Config::catching(),
                );
            }
        }
    )*};
}

/// The first of its arguments.
#[allow(unused_macros)] // until a component is listed
macro_rules! first {
    ($first:expr $(, $rest:expr)*) => {
        $first
    };
}

// ---------------------------------------------------------------------------
// breaker

mod breaker_glue {
    use super::*;
    use raceless_harness::breaker::Op;

    /// The threshold of every breaker here: low, so names open and close.
    pub(crate) const THRESHOLD: u32 = 2;

    const NAMES: [&str; 2] = ["a", "b"];

    /// Mostly failures on two names, with reads, successes and resets.
    ///
    /// No `TimesOpened`: it is a statistic, counted right after the step
    /// that opened the name (`Relaxed`, unordered with the state word), so
    /// a reader can see the name open before its count moves. It is exact
    /// once the openings returned, which `tests/breaker.rs` checks.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let name = NAMES[rng.gen_range(0..NAMES.len())].to_string();
        match rng.gen_range(0..20) {
            0..=7 => Op::RecordFailure(name),
            8..=9 => Op::RecordSuccess(name),
            10..=12 => Op::Failures(name),
            13..=15 => Op::IsOpen(name),
            16 => Op::Admit(name),
            17 => Op::Reset(name),
            _ => Op::ResetAll,
        }
    }
}

linearizability_tests! {
    breaker {
        model: raceless_harness::breaker::Model::new(breaker_glue::THRESHOLD),
        op: breaker_glue::op,
        apply: raceless_harness::breaker::apply,
        linearizable: {
            lock_free => || raceless::CircuitBreaker::new(breaker_glue::THRESHOLD).unwrap();
            std_mutex => || {
                raceless::baseline::MutexBreaker::<raceless::baseline::StdMutex>::new(
                    breaker_glue::THRESHOLD,
                )
                .unwrap()
            };
            parking_lot => || {
                raceless::baseline::MutexBreaker::<raceless::baseline::ParkingLotMutex>::new(
                    breaker_glue::THRESHOLD,
                )
                .unwrap()
            };
            sharded_mutex => || {
                raceless::baseline::ShardedBreaker::new(breaker_glue::THRESHOLD).unwrap()
            };
        },
        racy: || raceless_harness::breaker::RacyBreaker::new(breaker_glue::THRESHOLD),
    }
}

// ---------------------------------------------------------------------------
// breaker, rate mode (sliding window; no cool-down)

linearizability_tests! {
    breaker_rate {
        model: raceless_harness::breaker::RateModel::new(),
        op: breaker_glue::op,
        apply: raceless_harness::breaker::apply,
        linearizable: {
            lock_free => || {
                raceless_harness::breaker::RateModel::builder()
                    .build()
                    .unwrap()
            };
            std_mutex => || {
                raceless::baseline::MutexBreaker::<raceless::baseline::StdMutex>::from_builder(
                    raceless_harness::breaker::RateModel::builder(),
                )
                .unwrap()
            };
            sharded_mutex => || {
                raceless::baseline::ShardedBreaker::from_builder(
                    raceless_harness::breaker::RateModel::builder(),
                )
                .unwrap()
            };
        },
        racy: raceless_harness::breaker::RacyRateBreaker::new,
    }
}

// ---------------------------------------------------------------------------
// arcs

mod arcs_glue {
    use super::*;
    use raceless::arcs::{ArcEngineBuilder, ArcPhase, ArcRegistry};
    use raceless::clock::ManualClock;
    use raceless_harness::arcs::{Agent, Op, Ret, TestKind};

    /// A registry (no start hook: see below) and the clock it reads.
    pub(crate) type Sut<R> = (R, ManualClock);

    /// A fresh registry on a fresh manual clock.
    ///
    /// No start hook: with one, a start is two-phase by design (concurrent
    /// starters see the pending arc as `AlreadyActive` while `status` does
    /// not see it yet, and a failing hook frees the pair again), which the
    /// one-step model does not describe; `tests/arcs.rs` covers that
    /// protocol. The clock does not move (no `Advance`): a start reads the
    /// clock before its linearization point, so a concurrent advance is not
    /// a step of the model either.
    pub(crate) fn make<R: ArcRegistry<Agent, TestKind>>() -> Sut<R> {
        let clock = ManualClock::new();
        (
            R::from_builder(ArcEngineBuilder::new().clock(clock.clone())),
            clock,
        )
    }

    pub(crate) fn apply<R: ArcRegistry<Agent, TestKind>>(sut: &Sut<R>, op: &Op) -> Ret {
        raceless_harness::arcs::apply(&sut.0, &sut.1, op)
    }

    /// Starts, progress, ends and status reads on the three pairs of agents
    /// 1–3 (either order). `active()`, `len()` and `process_all()` are
    /// left out: they are specified as per-arc consistent snapshots and
    /// statistics, not as atomic reads of the whole registry.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let a: Agent = rng.gen_range(1..=3);
        let b: Agent = if rng.gen_ratio(1, 30) {
            a // the `SamePair` error
        } else {
            (a + rng.gen_range(0..2)) % 3 + 1
        };
        match rng.gen_range(0..10) {
            0..=3 => Op::Start(
                a,
                b,
                if rng.gen_bool(0.5) {
                    TestKind::Short
                } else {
                    TestKind::Long
                },
            ),
            4..=5 => Op::Progress(
                a,
                b,
                [
                    ArcPhase::Escalation,
                    ArcPhase::Climax,
                    ArcPhase::Resolution,
                    ArcPhase::Completed,
                ][rng.gen_range(0..4)],
            ),
            6..=7 => Op::End(a, b),
            _ => Op::Status(a, b),
        }
    }
}

linearizability_tests! {
    arcs {
        model: raceless_harness::arcs::Model::default(),
        op: arcs_glue::op,
        apply: arcs_glue::apply,
        linearizable: {
            lock_free => arcs_glue::make::<raceless::arcs::ArcEngine<_, _>>;
            std_mutex => arcs_glue::make::<raceless::baseline::MutexArcEngine<_, _>>;
            parking_lot => arcs_glue::make::<
                raceless::baseline::MutexArcEngine<_, _, raceless::baseline::ParkingLotMutex>,
            >;
            sharded_mutex => arcs_glue::make::<raceless::baseline::ShardedArcEngine<_, _>>;
        },
        racy: arcs_glue::make::<raceless_harness::arcs::RacyArcEngine<_, _>>,
    }
}

// ---------------------------------------------------------------------------
// changeset

mod changeset_glue {
    use super::*;
    use raceless_harness::changeset::{Model, Op, Ret};
    use raceless_harness::model::SequentialSpec;
    use std::collections::BTreeSet;

    /// The harness model, with two allowances of the lock-free log's
    /// documented protocol:
    ///
    /// - ids are fresh but not necessarily in linearization order: a start
    ///   draws its id from a counter, then installs the new root by
    ///   compare-and-swap, so of two overlapping starts the one with the
    ///   smaller id may take effect (become "latest") second. The harness
    ///   model numbers starts in linearization order; here any id never
    ///   handed out before is accepted and becomes the newest open changeset.
    ///   (Ids of non-overlapping starts still increase; the contract tests
    ///   check that.)
    /// - with `per_thread_order`, `changes`/`take` are compared as multisets:
    ///   the default (striped) log keeps record order per recording thread
    ///   only; in the baselines, order is checked too.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(crate) struct Spec {
        model: Model,
        issued: BTreeSet<u64>,
        per_thread_order: bool,
    }

    impl Spec {
        pub(crate) fn record_order() -> Self {
            Self {
                model: Model::default(),
                issued: BTreeSet::new(),
                per_thread_order: false,
            }
        }
        pub(crate) fn per_thread_order() -> Self {
            Self {
                per_thread_order: true,
                ..Self::record_order()
            }
        }
    }

    fn sorted(v: &[u32]) -> Vec<u32> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    impl SequentialSpec for Spec {
        type Op = Op;
        type Ret = Ret;

        fn apply(&mut self, op: &Op) -> Ret {
            let ret = self.model.apply(op);
            if let Ret::Id(id) = ret {
                self.issued.insert(id.raw());
            }
            ret
        }

        fn step(&mut self, op: &Op, ret: &Ret) -> bool {
            match (op, ret) {
                (Op::Start, Ret::Id(id)) => {
                    let n = id.raw();
                    if !self.issued.insert(n) {
                        return false;
                    }
                    self.model.open.push(n);
                    self.model.sets.insert(n, (Vec::new(), false));
                    self.model.next = self.model.next.max(n + 1);
                    true
                }
                (Op::Changes(_), Ret::Changes(Some(got))) if self.per_thread_order => {
                    matches!(self.model.apply(op), Ret::Changes(Some(want)) if sorted(&want) == sorted(got))
                }
                (Op::Take(_), Ret::Taken(Ok(got))) if self.per_thread_order => {
                    matches!(self.model.apply(op), Ret::Taken(Ok(want)) if sorted(&want) == sorted(got))
                }
                _ => self.model.apply(op) == *ret,
            }
        }
    }

    /// The first ids a log hands out (ids start at 1).
    const IDS: u64 = 4;

    /// Starts, records (most often), seals and reads of the first few ids.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let n = rng.gen_range(1..=IDS);
        match rng.gen_range(0..16) {
            0..=2 => Op::Start,
            3..=8 => Op::Record(rng.gen_range(0..1000)),
            9..=10 => Op::Seal(n),
            11..=12 => Op::Changes(n),
            13 => Op::Active,
            _ => Op::Take(n),
        }
    }
}

linearizability_tests! {
    changeset {
        model: changeset_glue::Spec::record_order(),
        op: changeset_glue::op,
        apply: raceless_harness::changeset::apply,
        linearizable: {
            lock_free => raceless::ChangesetLog::<u32>::new,
                model: changeset_glue::Spec::per_thread_order();
            // One stripe still hands each thread a lease of slots, so
            // concurrent recorders' entries are grouped by lease, not
            // interleaved in commit order (documented in docs/changeset.md).
            lock_free_one_stripe => || raceless::ChangesetLog::<u32>::with_stripes(1),
                model: changeset_glue::Spec::per_thread_order();
            std_mutex => raceless::baseline::MutexChangesets::<u32, raceless::baseline::StdMutex>::new;
            parking_lot => {
                raceless::baseline::MutexChangesets::<u32, raceless::baseline::ParkingLotMutex>::new
            };
        },
        racy: raceless_harness::changeset::RacyChangesets::<u32>::new,
    }
}

// ---------------------------------------------------------------------------
// bus

mod bus_glue {
    use super::*;
    use raceless::bus::{Bus, SubscriptionId};
    use raceless_harness::bus::{
        quiet_expected_panics, Behavior, Model, Op, Ret, TestEvent, EXPECTED_PANIC,
    };
    use raceless_harness::model::SequentialSpec;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// The audit capacity: small, so the log wraps within a history.
    pub(crate) const CAPACITY: usize = 4;

    /// A bus and the glue that names subscriptions across threads.
    ///
    /// A subscription is named by a *token* drawn from a counter just
    /// before `subscribe` (ops name tokens, as the harness model's ops name
    /// ordinals); its handler reports the token into the emitting thread's
    /// call list. The token → id map is written after `subscribe` returns,
    /// so an `Unsubscribe` of a token whose `subscribe` has not returned has
    /// no id to pass: it unsubscribes a never-issued id and says so
    /// ([`Out::UnknownToken`]), and the model checks it as that call.
    pub(crate) struct Sut<B> {
        bus: B,
        tokens: AtomicUsize,
        ids: Mutex<HashMap<usize, SubscriptionId>>,
    }

    thread_local! {
        static CALLS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn make<B: Bus<TestEvent>>(new: fn(usize) -> B) -> Sut<B> {
        quiet_expected_panics();
        Sut {
            bus: new(CAPACITY),
            tokens: AtomicUsize::new(0),
            ids: Mutex::default(),
        }
    }

    /// What a glued operation returned.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(crate) enum Out {
        /// The bus's answer.
        Ret(Ret),
        /// `Unsubscribe` of a token with no id yet: what `unsubscribe` of a
        /// never-issued id returned.
        UnknownToken(bool),
    }

    pub(crate) fn apply<B: Bus<TestEvent>>(sut: &Sut<B>, op: &Op) -> Out {
        if let Op::Unsubscribe(token) = *op {
            let id = sut.ids.lock().unwrap().get(&token).copied();
            return match id {
                Some(id) => Out::Ret(Ret::Unsubscribed(sut.bus.unsubscribe(id))),
                None => Out::UnknownToken(
                    sut.bus
                        .unsubscribe(SubscriptionId::from_raw(u64::MAX - token as u64)),
                ),
            };
        }
        Out::Ret(match *op {
            Op::Subscribe { kind, behavior } => {
                // Relaxed: the counter only has to hand out distinct tokens.
                let token = sut.tokens.fetch_add(1, Ordering::Relaxed);
                let id = sut.bus.subscribe(kind, move |_: &TestEvent| {
                    CALLS.with(|c| c.borrow_mut().push(token));
                    match behavior {
                        Behavior::Succeed => Ok(()),
                        Behavior::Fail => Err("model handler failure".into()),
                        Behavior::Panic => panic!("{}", EXPECTED_PANIC),
                    }
                });
                sut.ids.lock().unwrap().insert(token, id);
                Ret::Subscribed(token)
            }
            Op::Unsubscribe(_) => unreachable!("handled above"),
            Op::Emit(event) => {
                CALLS.with(|c| c.borrow_mut().clear());
                let report = sut.bus.emit(event);
                Ret::Emitted(report, CALLS.with(|c| c.take()))
            }
            Op::AuditLog => Ret::Log(sut.bus.audit_log()),
            Op::SubscriberCount(kind) => Ret::Count(sut.bus.subscriber_count(&kind)),
        })
    }

    /// The harness model over tokens instead of ordinals: a subscribe may
    /// return any token not handed out before (tokens are drawn before the
    /// subscription takes effect, so concurrent subscribes take effect in
    /// either order); the model's ordinal for it is recorded and used to
    /// translate `Unsubscribe` and the handlers an `Emit` called. Handlers
    /// are compared as a set: the contract does not order them.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(crate) struct Spec {
        model: Model,
        ordinal: BTreeMap<usize, usize>,
    }

    impl Spec {
        pub(crate) fn new() -> Self {
            Self {
                model: Model::new(CAPACITY),
                ordinal: BTreeMap::new(),
            }
        }

        fn to_model(&self, op: &Op) -> Op {
            match *op {
                // A token not subscribed yet is an id never handed out.
                Op::Unsubscribe(token) => {
                    Op::Unsubscribe(self.ordinal.get(&token).copied().unwrap_or(usize::MAX))
                }
                ref other => other.clone(),
            }
        }

        fn token_of(&self, ordinal: usize) -> usize {
            self.ordinal
                .iter()
                .find(|(_, &o)| o == ordinal)
                .map_or(usize::MAX, |(&t, _)| t)
        }
    }

    impl SequentialSpec for Spec {
        type Op = Op;
        type Ret = Out;

        /// For reports: the model's result, tokens numbered as ordinals.
        fn apply(&mut self, op: &Op) -> Out {
            let op = self.to_model(op);
            Out::Ret(self.model.apply(&op))
        }

        fn step(&mut self, op: &Op, out: &Out) -> bool {
            let ret = match out {
                Out::Ret(ret) => ret,
                Out::UnknownToken(removed) => {
                    let never_issued = Op::Unsubscribe(usize::MAX);
                    return self.model.apply(&never_issued) == Ret::Unsubscribed(*removed);
                }
            };
            let model_op = self.to_model(op);
            match (self.model.apply(&model_op), ret) {
                (Ret::Subscribed(ordinal), Ret::Subscribed(token)) => {
                    self.ordinal.insert(*token, ordinal).is_none()
                }
                (Ret::Emitted(want, called), Ret::Emitted(got, got_called)) => {
                    let mut want_tokens: Vec<usize> =
                        called.iter().map(|&o| self.token_of(o)).collect();
                    let mut got_called = got_called.clone();
                    want_tokens.sort_unstable();
                    got_called.sort_unstable();
                    want == *got && want_tokens == got_called
                }
                (want, got) => want == *got,
            }
        }
    }

    const KINDS: u8 = 2;

    /// Subscribes and unsubscribes of the first few tokens, emits and
    /// subscriber counts, on two kinds. No audit-log reads: an emit logs
    /// its event and loads the subscriber list in two steps, each atomic,
    /// and the contract only ties delivery to `subscribe`/`unsubscribe`
    /// having *returned* before the emit started — so emit is linearizable
    /// against the subscriptions (this test) and against the log
    /// ([`audit_op`]) separately, not as one step on both.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let kind = rng.gen_range(0..KINDS);
        match rng.gen_range(0..16) {
            0..=4 => Op::Subscribe {
                kind,
                behavior: match rng.gen_range(0..8) {
                    0 => Behavior::Fail,
                    1 => Behavior::Panic,
                    _ => Behavior::Succeed,
                },
            },
            5..=7 => Op::Unsubscribe(rng.gen_range(0..8)),
            8..=13 => Op::Emit(TestEvent::new(kind, rng.gen_range(0..1000))),
            _ => Op::SubscriberCount(kind),
        }
    }

    /// Emits (nobody subscribed) and audit-log reads: the bounded log alone.
    pub(crate) fn audit_op(rng: &mut SmallRng) -> Op {
        if rng.gen_bool(0.6) {
            Op::Emit(TestEvent::new(0, rng.gen_range(0..1000)))
        } else {
            Op::AuditLog
        }
    }
}

linearizability_tests! {
    bus {
        model: bus_glue::Spec::new(),
        op: bus_glue::op,
        apply: bus_glue::apply,
        linearizable: {
            lock_free => || bus_glue::make(raceless::bus::EventBus::new);
            std_mutex => || bus_glue::make(raceless::baseline::MutexBus::<_, raceless::baseline::StdMutex>::new);
            parking_lot => || {
                bus_glue::make(raceless::baseline::MutexBus::<_, raceless::baseline::ParkingLotMutex>::new)
            };
        },
        racy: || bus_glue::make(raceless_harness::bus::RacyBus::new),
    }
}

// The audit log alone. Not the lock-free bus: its log is documented as
// consistent per record, not across records (an emit takes its stamp and
// its stripe position, then publishes its record; a reader in between skips
// it and a later reader shows the event before ones the first reader already
// saw), and it orders the events of different threads by stamp, not by one
// sequence, which this check does find. The contract asks for bounded,
// newest, none twice, none torn, each thread's in order: `tests/bus.rs`
// checks those on every implementation.
linearizability_tests! {
    bus_audit_log {
        model: bus_glue::Spec::new(),
        op: bus_glue::audit_op,
        apply: bus_glue::apply,
        linearizable: {
            std_mutex => || bus_glue::make(raceless::baseline::MutexBus::<_, raceless::baseline::StdMutex>::new);
            parking_lot => || {
                bus_glue::make(raceless::baseline::MutexBus::<_, raceless::baseline::ParkingLotMutex>::new)
            };
        },
        racy: || bus_glue::make(raceless_harness::bus::RacyBus::new),
    }
}

// ---------------------------------------------------------------------------
// stream

mod stream_glue {
    use super::*;
    use raceless::stream::{Pending, Session, StreamId, StreamOptions, StreamSlots};
    use raceless_harness::model::SequentialSpec;
    use raceless_harness::stream::{Model, Op, Ret};
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    const SESSIONS: usize = 2;

    /// Streams are numbered by their id's per-registry sequence number
    /// (the `seq` in its `Display`, `{epoch:016x}-{seq}`), so any thread
    /// can name a stream it has seen. `Finish`/`IsLive` of a number no
    /// thread has seen yet cannot be issued: that op is skipped and
    /// returns [`Out::Unnamed`], which the model accepts as a no-op.
    pub(crate) struct Sut<T> {
        slots: T,
        sessions: Vec<Session>,
        ids: Mutex<HashMap<usize, StreamId>>,
    }

    /// What a glued operation returned.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(crate) enum Out {
        /// The registry's answer, streams as numbers.
        Ret(Ret),
        /// The op named a stream no thread had seen yet: not issued.
        Unnamed,
    }

    pub(crate) fn make<T: StreamSlots<u64>>() -> Sut<T> {
        Sut {
            slots: T::with_options(StreamOptions::new()),
            sessions: (0..SESSIONS)
                .map(|i| Session::new(format!("s{i}")))
                .collect(),
            ids: Mutex::default(),
        }
    }

    impl<T> Sut<T> {
        fn number(&self, id: StreamId) -> usize {
            let shown = id.to_string();
            let seq = shown.rsplit('-').next().and_then(|s| s.parse().ok());
            let n = seq.expect("StreamId displays as {epoch:016x}-{seq}");
            self.ids.lock().unwrap().insert(n, id);
            n
        }

        fn id(&self, n: usize) -> Option<StreamId> {
            self.ids.lock().unwrap().get(&n).copied()
        }
    }

    pub(crate) fn apply<T: StreamSlots<u64>>(sut: &Sut<T>, op: &Op) -> Out {
        let ret = match op {
            Op::Start { session, message } => {
                match sut
                    .slots
                    .start(&sut.sessions[*session], Pending::new(message.clone()), 0)
                {
                    Ok(id) => Ret::Started(sut.number(id)),
                    Err(busy) => Ret::Busy(sut.number(busy.active)),
                }
            }
            Op::ClearStale { session } => Ret::Bool(sut.slots.clear_stale(&sut.sessions[*session])),
            Op::Finish { session, stream } => match sut.id(*stream) {
                Some(id) => Ret::Bool(sut.slots.finish(&sut.sessions[*session], id)),
                None => return Out::Unnamed,
            },
            Op::IsLive { stream } => match sut.id(*stream) {
                Some(id) => Ret::Bool(sut.slots.is_live(id)),
                None => return Out::Unnamed,
            },
            Op::Len => Ret::Len(sut.slots.len()),
            Op::Active { session } => Ret::Active(
                sut.sessions[*session]
                    .active()
                    .map(|a| (sut.number(a.id), a.pending_message.unwrap_or_default())),
            ),
        };
        Out::Ret(ret)
    }

    /// The harness model with fresh stream numbers: a `start` that wins may
    /// return any number not handed out before (ids are drawn before the
    /// slot's compare-and-swap, so concurrent starts on different sessions
    /// take effect in either order); everything else is the model's.
    #[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
    pub(crate) struct Spec {
        model: Model,
        issued: BTreeSet<usize>,
    }

    impl SequentialSpec for Spec {
        type Op = Op;
        type Ret = Out;

        fn apply(&mut self, op: &Op) -> Out {
            Out::Ret(self.model.apply(op))
        }

        fn step(&mut self, op: &Op, out: &Out) -> bool {
            let ret = match out {
                Out::Unnamed => return true,
                Out::Ret(ret) => ret,
            };
            match (op, ret) {
                (Op::Start { session, message }, Ret::Started(n)) => {
                    let live = |m: &Model| {
                        m.slots
                            .get(session)
                            .is_some_and(|(s, _)| m.live.contains(s))
                    };
                    if live(&self.model) || !self.issued.insert(*n) {
                        return false;
                    }
                    self.model.live.insert(*n);
                    self.model.slots.insert(*session, (*n, message.clone()));
                    true
                }
                _ => self.model.apply(op) == *ret,
            }
        }
    }

    /// Starts, cleanups, finishes and slot reads on two sessions.
    ///
    /// No `is_live`/`len`: a session's slot and the registry are two
    /// structures, each changed atomically, but not together — `finish`
    /// empties the slot, then unregisters the stream, and `start`
    /// registers its stream before it wins (or loses) the slot. An
    /// observer of both (`active()` then `is_live`) can see a stream live
    /// whose slot is already empty, which this check does find on the
    /// lock-free registry and the baselines alike. The contract's
    /// guarantees are about the slot (one winner, a cleanup never clears
    /// a live or newer stream), and those are what this checks.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let session = rng.gen_range(0..SESSIONS);
        let stream = rng.gen_range(0..6);
        match rng.gen_range(0..14) {
            0..=4 => Op::Start {
                session,
                message: format!("m{}", rng.gen_range(0..3)),
            },
            5..=7 => Op::ClearStale { session },
            8..=10 => Op::Finish { session, stream },
            _ => Op::Active { session },
        }
    }
}

linearizability_tests! {
    stream {
        model: stream_glue::Spec::default(),
        op: stream_glue::op,
        apply: stream_glue::apply,
        linearizable: {
            lock_free => stream_glue::make::<raceless::stream::StreamRegistry<u64>>;
            std_mutex => stream_glue::make::<raceless::baseline::MutexStreams<u64>>;
            parking_lot => {
                stream_glue::make::<raceless::baseline::MutexStreams<u64, raceless::baseline::ParkingLotMutex>>
            };
            sharded_mutex => stream_glue::make::<raceless::baseline::ShardedStreams<u64>>;
        },
        racy: stream_glue::make::<raceless_harness::stream::RacyStreams<u64>>,
    }
}
