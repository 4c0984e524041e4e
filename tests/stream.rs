//! Tests of the `stream` component, written once and run on the lock-free
//! `StreamRegistry`, the `std::sync::Mutex` baseline and the `parking_lot`
//! baseline; and the checks that catch the seed's racy cleanup.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use proptest::prelude::*;
use raceless::baseline::{MutexStreams, ParkingLotMutex};
use raceless::clock::{Clock, ManualClock};
use raceless::stream::{
    Busy, Pending, Saved, Session, SessionSnapshot, SessionStore, StoreError, StreamOptions,
    StreamRegistry, StreamSlots,
};
use raceless_harness::model::SequentialSpec;
use raceless_harness::stream::{
    cleanup_vs_start, concurrent_starts, stale_sessions, Driver, Model, Op, RacyStreams, StartRace,
};
use raceless_harness::threads::{hunt, iterations, run_concurrently};

fn fresh<T: StreamSlots<u64>>() -> T {
    T::with_options(StreamOptions::new())
}

fn stale_cleared_live_kept<T: StreamSlots<u64>>() {
    let clock = ManualClock::new();
    let slots = T::with_options(StreamOptions::new().clock(clock.clone()));
    let session = Session::new("s");
    assert!(!slots.clear_stale(&session), "empty slot: nothing to clear");

    let pending = Pending {
        message: "hello".into(),
        attachments: vec!["a.png".into()],
    };
    let id = slots.start(&session, pending, 1).unwrap();
    let active = session.active().unwrap();
    assert_eq!(active.id, id);
    assert_eq!(active.pending_message.as_deref(), Some("hello"));
    assert_eq!(active.attachments, vec!["a.png".to_string()]);
    assert_eq!(active.started_at, clock.now());
    assert!(!slots.clear_stale(&session), "live: kept");
    assert_eq!(session.active_id(), Some(id));
    assert_eq!(session.version(), 1);

    // The worker dies without cleaning this session: the slot goes stale.
    assert!(!slots.finish(&Session::new("elsewhere"), id));
    assert!(!slots.is_live(id));
    assert_eq!(session.active_id(), Some(id));
    assert!(slots.clear_stale(&session), "stale: cleared");
    assert_eq!(
        session.active(),
        None,
        "stream and pending fields go together"
    );
    assert_eq!(session.version(), 2);
    assert!(!slots.clear_stale(&session));

    // A session restored from a previous process names a stream no
    // registry of this process holds: stale.
    for restored in stale_sessions(3) {
        let version = restored.version();
        assert!(restored.active().is_some());
        assert!(slots.clear_stale(&restored));
        assert_eq!((restored.active(), restored.version()), (None, version + 1));
    }
    // ...and a start replaces it directly.
    let restored = stale_sessions(1).pop().unwrap();
    let new = slots.start(&restored, Pending::new("after"), 2).unwrap();
    assert_eq!(restored.active_id(), Some(new));
}

fn busy_and_finish<T: StreamSlots<u64>>() {
    let slots: T = fresh();
    let session = Session::new("s");
    let id = slots.start(&session, Pending::new("first"), 1).unwrap();
    assert!(slots.is_live(id) && slots.len() == 1);

    // The seed's 409: the stream and its pending fields are untouched.
    let busy = slots
        .start(&session, Pending::new("second"), 2)
        .unwrap_err();
    assert_eq!(busy, Busy { active: id });
    assert_eq!(slots.len(), 1);
    assert_eq!(
        session.active().unwrap().pending_message.as_deref(),
        Some("first")
    );
    assert_eq!(session.version(), 1);

    // Another session's stream is independent.
    let other = Session::new("other");
    let other_id = slots.start(&other, Pending::new("x"), 3).unwrap();
    assert_ne!(other_id, id);
    assert_eq!(slots.len(), 2);

    assert!(
        !slots.finish(&session, other_id),
        "the slot holds another id"
    );
    assert_eq!(session.active_id(), Some(id));
    assert!(other.active_id() == Some(other_id) && !slots.is_live(other_id));

    assert!(slots.finish(&session, id));
    assert!(session.active().is_none() && !slots.is_live(id));
    assert!(!slots.finish(&session, id), "finishing twice is a no-op");
    assert_eq!(slots.len(), 0);
    assert!(slots.is_empty());
    let again = slots.start(&session, Pending::new("again"), 4).unwrap();
    assert_eq!(session.active_id(), Some(again));
}

fn starts_race<T: StreamSlots<u64>>() {
    let slots: T = fresh();
    let race = concurrent_starts(&slots, 4, iterations(2_000));
    assert_eq!(race, StartRace::default());
    assert_eq!(
        slots.len(),
        iterations(2_000),
        "losers left nothing registered"
    );
}

fn cleanup_never_clobbers<T: StreamSlots<u64>>() {
    let slots: T = fresh();
    assert_eq!(cleanup_vs_start(&slots, 2, iterations(5_000)), 0);
}

/// The seed's regression test, ported: the session names an old stream
/// that is gone; a cleanup runs while a new stream is started and saved.
/// The cleanup may only clear the old stream: the new id and its pending
/// fields survive, in the session and in the saved file. Each round
/// releases both threads together; the loom model covers the exact
/// interleaving (the cleanup judged the old id stale before the start).
/// Returns the rounds in which the new stream was clobbered.
fn seed_regression<T: StreamSlots<u64>>(rounds: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    let hook_store = store.clone();
    let slots = T::with_options(StreamOptions::new().save_hook(move |snap| {
        hook_store.save(snap)?;
        Ok(())
    }));
    let mut clobbered = 0;
    for (round, session) in stale_sessions(rounds).into_iter().enumerate() {
        let old = session.active_id().unwrap();
        let barrier = Barrier::new(2);
        let message = format!("new message {round}");
        let (cleared, started) = std::thread::scope(|s| {
            let cleanup = s.spawn(|| {
                barrier.wait();
                slots.clear_stale(&session)
            });
            barrier.wait();
            let pending = Pending {
                message: message.clone(),
                attachments: vec!["file.txt".into()],
            };
            let started = slots.start(&session, pending, round as u64).unwrap();
            (cleanup.join().unwrap(), started)
        });
        assert_ne!(started, old);
        let active = session.active();
        let survived = active.as_ref().is_some_and(|a| {
            a.id == started
                && a.pending_message.as_ref() == Some(&message)
                && a.attachments == ["file.txt"]
        });
        if !survived {
            clobbered += 1;
            continue;
        }
        // A cleanup that returned true ran before the start (it cleared the
        // old stream); the start's version is then the newer one.
        let stored = store.load(session.id()).unwrap().unwrap();
        assert_eq!(stored, session.snapshot(), "the newest state is saved");
        assert_eq!(stored.version, if cleared { 3 } else { 2 }, "round {round}");
    }
    clobbered
}

fn saves_never_go_backwards<T: StreamSlots<u64>>() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    let seen: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let (hook_store, hook_seen) = (store.clone(), seen.clone());
    let slots = T::with_options(StreamOptions::new().save_hook(move |snap| {
        hook_seen
            .lock()
            .unwrap()
            .entry(snap.session_id.clone())
            .or_default()
            .push(snap.version);
        hook_store.save(snap)?;
        Ok(())
    }));
    let sessions: Vec<Session> = (0..3).map(|i| Session::new(format!("s{i}"))).collect();
    let elsewhere = Session::new("elsewhere");
    let rounds = iterations(300);
    run_concurrently(4, |t| {
        for i in 0..rounds {
            let session = &sessions[(i + t) % sessions.len()];
            match (i + t) % 4 {
                0 | 1 => match slots.start(session, Pending::new(format!("{t}/{i}")), i as u64) {
                    Ok(id) if i % 3 == 0 => {
                        slots.finish(&elsewhere, id); // leave it stale
                    }
                    Ok(_) => {}
                    Err(Busy { active }) => {
                        slots.finish(session, active);
                    }
                },
                _ => {
                    slots.clear_stale(session);
                }
            }
        }
    });
    let seen = seen.lock().unwrap();
    for session in &sessions {
        let stored = store.load(session.id()).unwrap().unwrap();
        assert_eq!(
            stored,
            session.snapshot(),
            "the final state is what is saved"
        );
        // Every change was saved once, with its own version: 1, 2, ... n.
        let mut versions = seen[session.id()].clone();
        versions.sort_unstable();
        let expected: Vec<u64> = (1..=session.version()).collect();
        assert_eq!(versions, expected);
    }
}

fn matches_model<T: StreamSlots<u64>>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut real = Driver::<T>::new(3);
    for op in ops {
        // Stream numbers refer to started streams only.
        let op = match op {
            Op::Finish { session, stream } if model.started > 0 => Op::Finish {
                session,
                stream: stream % model.started,
            },
            Op::IsLive { stream } if model.started > 0 => Op::IsLive {
                stream: stream % model.started,
            },
            Op::Finish { .. } | Op::IsLive { .. } => Op::Len,
            op => op,
        };
        let expected = model.apply(&op);
        prop_assert_eq!(real.apply(&op), expected, "{:?}", op);
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..3usize, "[a-c]{0,3}").prop_map(|(session, message)| Op::Start { session, message }),
        3 => (0..3usize).prop_map(|session| Op::ClearStale { session }),
        2 => (0..3usize, 0..16usize).prop_map(|(session, stream)| Op::Finish { session, stream }),
        1 => (0..16usize).prop_map(|stream| Op::IsLive { stream }),
        1 => Just(Op::Len),
        2 => (0..3usize).prop_map(|session| Op::Active { session }),
    ];
    prop::collection::vec(op, 0..60)
}

macro_rules! suite {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        mod $name {
            use super::*;
            type T = $ty;

            #[test]
            fn stale_cleared_live_kept() { super::stale_cleared_live_kept::<T>() }
            #[test]
            fn busy_409_and_finish() { super::busy_and_finish::<T>() }
            #[test]
            fn concurrent_starts_one_winner() { super::starts_race::<T>() }
            #[test]
            fn cleanup_loop_never_clobbers_a_start() { super::cleanup_never_clobbers::<T>() }
            #[test]
            fn seed_regression_new_stream_survives_cleanup() {
                assert_eq!(super::seed_regression::<T>(iterations(200)), 0);
            }
            #[test]
            fn saves_never_go_backwards() { super::saves_never_go_backwards::<T>() }

            proptest! {
                #[test]
                fn matches_the_sequential_model(ops in ops()) {
                    super::matches_model::<T>(ops)?;
                }
            }
        }
    )*};
}

suite! {
    lock_free: StreamRegistry<u64>,
    std_mutex: MutexStreams<u64>,
    parking_lot: MutexStreams<u64, ParkingLotMutex>,
}

/// The check can fail: the seed's cleanup (check, then write `None`)
/// clobbers streams started in its window. Each hunt is retried so that an
/// unlucky schedule on a busy machine cannot make it flaky.
#[test]
fn racy_cleanup_is_caught_by_the_cleanup_loop() {
    let n = hunt(10, || {
        cleanup_vs_start(&fresh::<RacyStreams<u64>>(), 2, iterations(2_000))
    });
    assert!(
        n > 0,
        "the racy cleanup was never caught clobbering a start"
    );
}

#[test]
fn racy_cleanup_is_caught_by_the_seed_regression() {
    let n = hunt(10, || {
        seed_regression::<RacyStreams<u64>>(iterations(200)) as u64
    });
    assert!(n > 0, "the seed regression never caught the racy cleanup");
}

/// The racy variant is only wrong under concurrency: sequentially it
/// matches the model, so the concurrent checks above are what catch it.
#[test]
fn racy_variant_is_sequentially_correct() {
    busy_and_finish::<RacyStreams<u64>>();
    stale_cleared_live_kept::<RacyStreams<u64>>();
}

#[test]
fn store_keeps_the_highest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    let registry: StreamRegistry<()> = StreamRegistry::new();
    let session = Session::new("chat");
    let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    let newer = session.snapshot();
    registry.finish(&session, id);
    let newest = session.snapshot();

    assert_eq!(store.save(&newer).unwrap(), Saved::Written);
    assert_eq!(store.save(&newest).unwrap(), Saved::Written);
    assert_eq!(
        store.save(&newer).unwrap(),
        Saved::Superseded { stored: 2 },
        "a late save of an older state is dropped"
    );
    assert_eq!(store.load("chat").unwrap(), Some(newest.clone()));

    // A second store on the same directory (a restarted process) reads the
    // stored version before saving.
    let reopened = SessionStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.save(&newer).unwrap(),
        Saved::Superseded { stored: 2 }
    );
    // No temporary file is left behind.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["chat.json".to_string()]);
}

#[test]
fn store_orders_concurrent_saves_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    let n = iterations(400) as u64;
    let snapshot = |version: u64| SessionSnapshot {
        session_id: "hot".into(),
        version,
        active: None,
    };
    // Four threads save interleaved versions, each in reverse order, so
    // late saves of old versions keep arriving after newer ones.
    run_concurrently(4, |t| {
        for v in (0..n).rev().filter(|v| v % 4 == t as u64) {
            store.save(&snapshot(v)).unwrap();
        }
    });
    assert_eq!(store.load("hot").unwrap().unwrap().version, n - 1);
}

#[test]
fn store_restores_sessions_whose_stream_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    {
        // The previous process.
        let hook_store = store.clone();
        let before: StreamRegistry<()> =
            StreamRegistry::with_options(StreamOptions::new().save_hook(move |snap| {
                hook_store.save(snap)?;
                Ok(())
            }));
        before
            .start(&Session::new("chat"), Pending::new("hi"), ())
            .unwrap();
    }
    let after: StreamRegistry<()> = StreamRegistry::new();
    let session = store.session("chat").unwrap();
    assert_eq!(session.version(), 1);
    let old = session.active_id().unwrap();
    assert!(!after.is_live(old));
    let new = after.start(&session, Pending::new("again"), ()).unwrap();
    assert_eq!((session.active_id(), session.version()), (Some(new), 2));
}

#[test]
fn store_rejects_ids_that_are_not_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    for bad in ["", "../x", "a/b", "a.json", &"x".repeat(129)] {
        let snap = Session::new(bad).snapshot();
        assert!(matches!(
            store.save(&snap),
            Err(StoreError::InvalidSessionId(_))
        ));
        assert!(store.load(bad).is_err());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn failing_and_panicking_save_hooks_are_isolated() {
    let registry: StreamRegistry<()> =
        StreamRegistry::with_options(StreamOptions::new().save_hook(|_| Err("disk full".into())));
    registry.add_save_hook(|_| panic!("hook panicked"));
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    registry.add_save_hook(move |_| {
        *counter.lock().unwrap() += 1;
        Ok(())
    });
    let session = Session::new("s");
    let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    assert!(registry.finish(&session, id));
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[test]
fn a_save_hook_may_call_back_into_the_registry() {
    let registry: Arc<StreamRegistry<()>> = Arc::new(StreamRegistry::new());
    let weak = Arc::downgrade(&registry);
    let lens = Arc::new(Mutex::new(Vec::new()));
    let seen = lens.clone();
    registry.add_save_hook(move |_| {
        if let Some(r) = weak.upgrade() {
            seen.lock().unwrap().push(r.len());
        }
        Ok(())
    });
    let session = Session::new("s");
    let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    registry.finish(&session, id);
    assert_eq!(*lens.lock().unwrap(), vec![1, 0]);
}

// ---------------------------------------------------------------------------
// StreamGuard: a cancelled handler frees its session.
// ---------------------------------------------------------------------------

mod guard {
    use super::*;
    use raceless::stream::StreamGuard;
    use tokio::sync::mpsc;

    /// How a handler holds its stream: through a guard (0.2), or the
    /// seed's way (start, and `finish` as the handler's last statement —
    /// which a cancelled handler never reaches).
    #[derive(Clone, Copy, Debug)]
    enum Holding {
        Guard,
        SeedFinishAtEnd,
    }

    const AWAITS: usize = 4;

    /// An SSE handler: starts a stream, then awaits `AWAITS` times (one per
    /// token it sends), reporting each await before it; finishes; awaits
    /// once more after finishing. The test cancels it at await `cut`.
    async fn handler(
        registry: Arc<StreamRegistry<u64>>,
        session: Arc<Session>,
        holding: Holding,
        report: mpsc::UnboundedSender<usize>,
        mut gate: mpsc::UnboundedReceiver<()>,
    ) {
        let mut step = 0;
        let mut next = async |step: &mut usize| {
            report.send(*step).unwrap();
            *step += 1;
            gate.recv().await;
        };
        next(&mut step).await; // before the start
        match holding {
            Holding::Guard => {
                let mut guard: StreamGuard<u64> = registry
                    .start_guard(&session, Pending::new("hi"), 1)
                    .expect("the session is free");
                for _ in 0..AWAITS {
                    next(&mut step).await;
                }
                assert!(guard.finish());
                next(&mut step).await; // after the finish
                assert!(!guard.finish(), "finish is idempotent");
            }
            Holding::SeedFinishAtEnd => {
                let id = registry.start(&session, Pending::new("hi"), 1).unwrap();
                for _ in 0..AWAITS {
                    next(&mut step).await;
                }
                assert!(registry.finish(&session, id));
                next(&mut step).await;
            }
        }
    }

    /// Cancels the handler at each of its awaits in turn (deterministically:
    /// the handler reports reaching the await, the test aborts the task
    /// there) on a multi-thread runtime; after each cancellation the session
    /// must be free (a new start succeeds) and the registry empty. Returns
    /// the cut points after which the session stayed busy.
    async fn cancel_at_every_await(holding: Holding) -> Vec<usize> {
        let mut busy = Vec::new();
        for cut in 0..AWAITS + 2 {
            let registry = Arc::new(StreamRegistry::new());
            let session = Arc::new(Session::new(format!("s{cut}")));
            let (report, mut reached) = mpsc::unbounded_channel();
            let (open, gate) = mpsc::unbounded_channel();
            let task = tokio::spawn(handler(
                registry.clone(),
                session.clone(),
                holding,
                report,
                gate,
            ));
            for step in 0..=cut {
                assert_eq!(reached.recv().await, Some(step));
                if step < cut {
                    open.send(()).unwrap();
                }
            }
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            let freed = registry.is_empty()
                && session.active().is_none()
                && registry.clear_stale(&session) == false;
            if !freed {
                busy.push(cut);
                continue;
            }
            let again = registry.start_guard(&session, Pending::new("again"), 2);
            assert!(again.is_ok(), "cut {cut}: the session is still busy");
        }
        busy
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_handler_frees_its_session_at_every_await() {
        assert_eq!(
            cancel_at_every_await(Holding::Guard).await,
            Vec::<usize>::new()
        );
    }

    /// The check can fail: the seed's handler (finish as its last step)
    /// leaves the session busy when cancelled at any await after the start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seed_handler_is_caught_leaving_the_session_busy() {
        let busy = cancel_at_every_await(Holding::SeedFinishAtEnd).await;
        assert_eq!(busy, (1..=AWAITS).collect::<Vec<_>>());
    }

    #[test]
    fn guard_is_send_and_static() {
        fn check<T: Send + Sync + 'static>(_: &T) {}
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let guard = registry
            .start_guard(&session, Pending::new("hi"), 0u64)
            .unwrap();
        check(&guard);
        let id = guard.id();
        std::thread::spawn(move || drop(guard)).join().unwrap();
        assert!(!registry.is_live(id) && session.active().is_none());
    }

    #[test]
    fn explicit_finish_is_idempotent_and_the_drop_then_does_nothing() {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let mut guard = registry
            .start_guard(&session, Pending::new("a"), 0u64)
            .unwrap();
        assert!(guard.finish());
        assert!(!guard.finish());
        // A new stream on the session: the old guard's drop must not touch it.
        let newer = registry
            .start_guard(&session, Pending::new("b"), 1)
            .unwrap();
        drop(guard);
        assert_eq!(session.active_id(), Some(newer.id()));
        assert_eq!(session.version(), 3);
        let id = newer.detach();
        assert!(
            registry.is_live(id),
            "a detached guard leaves the stream live"
        );
        assert!(registry.finish(&session, id));
    }

    /// A guard whose stream a cleanup or a new start already replaced
    /// (after its stream was unregistered elsewhere) never clears the newer
    /// stream when dropped.
    #[test]
    fn a_late_guard_drop_never_clears_a_newer_stream() {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let guard = registry
            .start_guard(&session, Pending::new("a"), 0u64)
            .unwrap();
        registry.finish(&Session::new("elsewhere"), guard.id()); // worker died
        let newer = registry.start(&session, Pending::new("b"), 1).unwrap();
        drop(guard);
        assert_eq!(session.active_id(), Some(newer));
        assert!(registry.is_live(newer));
    }

    /// Many handlers on a multi-thread runtime, some cancelled at random
    /// points while cleanups run: at the end every session is free and the
    /// registry is empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_handlers_cancelled_while_cleanups_run() {
        let registry: Arc<StreamRegistry<u64>> = Arc::new(StreamRegistry::new());
        let sessions: Arc<Vec<Arc<Session>>> = Arc::new(
            (0..16)
                .map(|i| Arc::new(Session::new(format!("s{i}"))))
                .collect(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cleaner = {
            let (registry, sessions, stop) = (registry.clone(), sessions.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for s in sessions.iter() {
                        registry.clear_stale(s);
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let rounds = iterations(200);
        let mut tasks = Vec::new();
        for round in 0..rounds {
            let (registry, session) = (registry.clone(), sessions[round % 16].clone());
            let task = tokio::spawn(async move {
                let mut started = 0;
                for i in 0..8u64 {
                    if let Ok(_guard) = registry.start_guard(&session, Pending::new("x"), i) {
                        started += 1;
                        tokio::task::yield_now().await;
                        tokio::task::yield_now().await;
                    }
                    tokio::task::yield_now().await;
                }
                started
            });
            if round % 3 == 0 {
                tokio::task::yield_now().await;
                task.abort();
            }
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        cleaner.await.unwrap();
        assert!(registry.is_empty());
        for s in sessions.iter() {
            assert_eq!(s.active(), None, "{} stayed busy", s.id());
        }
    }

    /// Churn: 10^6 distinct streams on distinct sessions, each started
    /// through a guard and dropped (half explicitly finished), with a save
    /// hook: the registry's live count returns to its baseline (0) and no
    /// session outlives its handler.
    #[test]
    fn churn_returns_to_the_baseline() {
        let saves = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = saves.clone();
        let registry: Arc<StreamRegistry<u64>> = Arc::new(StreamRegistry::with_options(
            StreamOptions::new().save_hook(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }),
        ));
        let n = 1_000_000;
        let per_thread = n / 4;
        let weak_sessions = run_concurrently(4, |t| {
            let mut probe = None;
            for i in 0..per_thread {
                let session = Arc::new(Session::new(format!("c{t}-{i}")));
                let mut guard = registry
                    .start_guard(&session, Pending::new("m"), i as u64)
                    .unwrap();
                if i % 2 == 0 {
                    guard.finish();
                }
                drop(guard);
                if i == per_thread - 1 {
                    probe = Some(Arc::downgrade(&session));
                }
            }
            probe.unwrap()
        });
        assert_eq!(registry.len(), 0, "live entries back to the baseline");
        assert_eq!(
            saves.load(std::sync::atomic::Ordering::Relaxed),
            2 * n as u64
        );
        for weak in weak_sessions {
            assert!(weak.upgrade().is_none(), "the guard released its session");
        }
    }
}
