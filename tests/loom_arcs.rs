//! loom models of the `arcs` races: two starts of one pair, start vs end,
//! end vs restart, `len` during a restart, end vs expiry, a failing start
//! hook vs another start, two progresses of one arc, progress vs end, and
//! the hot-pair cache: a lock-free taken-pair check vs an end and restart,
//! a cell moving into the cache vs an end and restart. Run with
//! `RUSTFLAGS="--cfg raceless_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_arcs`.
#![cfg(raceless_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loom::sync::Arc;
use raceless::arcs::{ArcEngine, ArcError, ArcEvent, ArcKind, ArcPhase, Claimed, EndReason, Start};
use raceless::clock::ManualClock;

#[derive(Debug, Clone, PartialEq)]
struct Kind;

impl ArcKind for Kind {
    fn expected_duration(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Counts of (Started, Ended) events.
#[derive(Default)]
struct Events {
    started: AtomicUsize,
    ended: AtomicUsize,
}

fn engine_with_hook(
    hook_calls: &std::sync::Arc<AtomicUsize>,
) -> (ArcEngine<u8, Kind>, std::sync::Arc<Events>) {
    let calls = hook_calls.clone();
    let engine = ArcEngine::builder()
        .clock(ManualClock::new())
        .start_hook(move |_: &u8, _: &u8, _: &Kind| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .build();
    let events = std::sync::Arc::new(Events::default());
    let e = events.clone();
    engine.on_event(move |ev| match ev {
        ArcEvent::Started(_) => {
            e.started.fetch_add(1, Ordering::SeqCst);
        }
        ArcEvent::Ended(..) => {
            e.ended.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    });
    (engine, events)
}

/// Two concurrent starts of one pair (as `(a, b)` and `(b, a)`): exactly one
/// `Started`, the hook runs once, one `Started` event, and the loser's
/// arc is the winner's.
#[test]
fn two_starts() {
    loom::model(|| {
        let hook_calls = std::sync::Arc::new(AtomicUsize::new(0));
        let (engine, events) = engine_with_hook(&hook_calls);
        let engine = Arc::new(engine);
        let other = spawn_on(&engine, |e| e.start(2, 1, Kind).unwrap());
        let mine = engine.start(1, 2, Kind).unwrap();
        let theirs = other.join().unwrap();
        assert_eq!(
            usize::from(mine.is_started()) + usize::from(theirs.is_started()),
            1
        );
        assert_eq!(mine.into_inner().started_at, theirs.into_inner().started_at);
        assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
        assert_eq!(events.started.load(Ordering::SeqCst), 1);
        assert_eq!(engine.len(), 1);
        assert!(engine.status(&1, &2).is_some());
    });
}

/// A start (with its placeholder and hook) racing an end of the same pair:
/// the end finds nothing until the arc is published, and the bookkeeping
/// agrees with whichever order won.
#[test]
fn start_vs_end() {
    loom::model(|| {
        let hook_calls = std::sync::Arc::new(AtomicUsize::new(0));
        let (engine, events) = engine_with_hook(&hook_calls);
        let engine = Arc::new(engine);
        let ender = spawn_end(&engine);
        assert!(engine.start(1, 2, Kind).unwrap().is_started());
        let ended = ender.join().unwrap();
        assert_eq!(events.ended.load(Ordering::SeqCst), usize::from(ended));
        assert_eq!(engine.len(), usize::from(!ended));
        assert_eq!(engine.status(&1, &2).is_some(), !ended);
        assert_eq!(events.started.load(Ordering::SeqCst), 1);
    });
}

/// A hook-less engine on a manual clock in which the pair (1, 2) has an
/// active arc; the clock and that arc's start time.
fn engine_on_a_clock() -> (Arc<ArcEngine<u8, Kind>>, ManualClock, std::time::SystemTime) {
    let clock = ManualClock::new();
    let engine = ArcEngine::<u8, Kind>::builder()
        .clock(clock.clone())
        .build();
    let started = engine.start(1, 2, Kind).unwrap().into_inner().started_at;
    (Arc::new(engine), clock, started)
}

/// A loom thread running `f` on its own handle to `engine`.
fn spawn_on<E, R>(
    engine: &Arc<E>,
    f: impl FnOnce(&E) -> R + Send + 'static,
) -> loom::thread::JoinHandle<R>
where
    E: Send + Sync + 'static,
    R: Send + 'static,
{
    let engine = engine.clone();
    loom::thread::spawn(move || f(&engine))
}

/// A thread ending the pair (1, 2); joins to whether its `end` won.
fn spawn_end(engine: &Arc<ArcEngine<u8, Kind>>) -> loom::thread::JoinHandle<bool> {
    spawn_on(engine, |e| e.end(&1, &2, EndReason::Manual).is_ok())
}

/// An end racing a restart of the same pair: the ended arc's slot is either
/// removed by its ender or replaced by the new start, never both, and the
/// ender's cleanup never removes the new arc.
#[test]
fn end_vs_restart() {
    loom::model(|| {
        let (engine, _, _) = engine_on_a_clock();
        let ender = spawn_end(&engine);
        let restarted = engine.start(2, 1, Kind).unwrap().is_started();
        assert!(ender.join().unwrap());
        assert_eq!(engine.len(), usize::from(restarted));
        assert_eq!(engine.status(&1, &2).is_some(), restarted);
        if restarted {
            // The new arc is live: it progresses and ends normally.
            assert_eq!(
                engine
                    .progress(&1, &2, ArcPhase::Climax)
                    .unwrap()
                    .events_triggered,
                1
            );
            assert!(engine.end(&1, &2, EndReason::Manual).is_ok());
        }
        assert!(matches!(
            engine.end(&1, &2, EndReason::Manual),
            Err(ArcError::NotFound)
        ));
    });
}

/// An engine whose pair (1, 2) has an arc that a second start found taken,
/// which moved its cell into the hot-pair cache: later starts of the pair
/// check it without the shard lock (under loom the threads share one
/// cache, so every thread's start does). The clock is then advanced, so a
/// new arc of the pair is told apart from the first by its start time.
fn engine_with_a_hot_arc() -> (Arc<ArcEngine<u8, Kind>>, std::time::SystemTime) {
    let (engine, clock, first) = engine_on_a_clock();
    assert!(!engine.start(2, 1, Kind).unwrap().is_started());
    clock.advance(Duration::from_secs(1));
    (engine, first)
}

/// `end_vs_restart` on a hot pair: the restart's lock-free check either
/// sees the old arc live (and then it was still live: the restart is
/// `AlreadyActive` with it, and the pair is free after the end) or misses
/// and starts a new arc that the end cannot touch.
#[test]
fn hot_end_vs_restart() {
    loom::model(|| {
        let (engine, first) = engine_with_a_hot_arc();
        let ender = spawn_end(&engine);
        let restart = engine.start(2, 1, Kind).unwrap();
        assert!(ender.join().unwrap());
        let restarted = restart.is_started();
        if !restarted {
            assert_eq!(restart.into_inner().started_at, first);
        }
        assert_eq!(engine.status(&1, &2).is_some(), restarted);
        assert_eq!(engine.start(1, 2, Kind).unwrap().is_started(), !restarted);
    });
}

/// A start that finds the pair taken and moves its cell into the cache,
/// racing an end and a restart of the pair: the cell may reach the cache
/// after its arc ended, but no start ever reports an ended arc: the
/// ender's own restart is `Started`, or `AlreadyActive` with a newer arc,
/// never with the one it ended.
#[test]
fn promotion_vs_end_and_restart() {
    loom::model(|| {
        let (engine, clock, first) = engine_on_a_clock();
        clock.advance(Duration::from_secs(1));
        let ender = spawn_on(&engine, move |e| {
            assert!(e.end(&1, &2, EndReason::Manual).is_ok());
            let restart = e.start(1, 2, Kind).unwrap();
            restart.is_started() || {
                assert_ne!(restart.into_inner().started_at, first);
                false
            }
        });
        let promoted = engine.start(2, 1, Kind).unwrap().is_started();
        let restarted = ender.join().unwrap();
        // After the end, exactly one of the two starts won the pair.
        assert_eq!(usize::from(restarted) + usize::from(promoted), 1);
        assert!(engine.status(&1, &2).is_some());
        assert!(!engine.start(2, 1, Kind).unwrap().is_started());
    });
}

/// `len` read while a pair's arc ends and the pair restarts: the pair
/// counts at most once at every moment (its count moves under the shard
/// lock that the restart must take), so `len` never exceeds 1.
#[test]
fn len_counts_a_pair_at_most_once() {
    loom::model(|| {
        let (engine, _, _) = engine_on_a_clock();
        let ender = spawn_end(&engine);
        let restarter = spawn_on(&engine, |e| e.start(2, 1, Kind).unwrap().is_started());
        assert!(engine.len() <= 1);
        assert!(ender.join().unwrap());
        let restarted = restarter.join().unwrap();
        assert_eq!(engine.len(), usize::from(restarted));
    });
}

/// `end` racing `process_all`'s expiry: exactly one wins, one `Ended`.
#[test]
fn end_vs_expiry() {
    loom::model(|| {
        let clock = ManualClock::new();
        let engine = ArcEngine::<u8, Kind>::builder()
            .clock(clock.clone())
            .build();
        let ended = std::sync::Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        engine.on_event(move |ev| {
            if let ArcEvent::Ended(..) = ev {
                e.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert!(matches!(engine.start(1, 2, Kind), Ok(Start::Started(_))));
        clock.advance(Duration::from_secs(21));
        let engine = Arc::new(engine);
        let sweeper = spawn_on(&engine, |e| e.process_all().expired);
        let by_end = usize::from(engine.end(&2, &1, EndReason::Manual).is_ok());
        let by_expiry = sweeper.join().unwrap();
        assert_eq!(by_end + by_expiry, 1);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert!(engine.is_empty());
    });
}

/// The sweep's expiry racing an end and a restart of the same pair: the
/// sweep judged the old arc expired from its snapshot, and acts only on
/// that very arc (its token), never on the new arc the restart installed,
/// which is not expired.
#[test]
fn expiry_vs_end_and_restart() {
    loom::model(|| {
        let (engine, clock, _) = engine_on_a_clock();
        clock.advance(Duration::from_secs(21));
        let sweeper = spawn_on(&engine, |e| e.process_all().expired);
        let ended = engine.end(&1, &2, EndReason::Manual).is_ok();
        assert!(engine.start(2, 1, Kind).unwrap().is_started());
        let expired = sweeper.join().unwrap();
        assert_eq!(usize::from(ended) + expired, 1, "the old arc ends once");
        assert_eq!(engine.len(), 1, "the new arc survives the sweep");
        assert!(engine.status(&1, &2).is_some());
    });
}

/// A start whose hook fails racing a start whose hook succeeds: whichever
/// claims the pair first decides; a failed hook always frees the pair, and
/// a start told of the doomed pending arc finds the pair free afterwards.
#[test]
fn failing_hook_vs_start() {
    #[derive(Debug, Clone, PartialEq)]
    struct Doomable(bool);
    impl ArcKind for Doomable {
        fn expected_duration(&self) -> Duration {
            Duration::from_secs(10)
        }
    }
    loom::model(|| {
        let engine = Arc::new(
            ArcEngine::<u8, Doomable>::builder()
                .clock(ManualClock::new())
                .start_hook(|_: &u8, _: &u8, kind: &Doomable| {
                    if kind.0 {
                        Err("rejected".into())
                    } else {
                        Ok(())
                    }
                })
                .build(),
        );
        let doomed = spawn_on(&engine, |e| e.start(1, 2, Doomable(true)));
        let good = engine.start(2, 1, Doomable(false)).unwrap();
        match doomed.join().unwrap() {
            // It claimed the pair first (and then rolled back)…
            Err(ArcError::Hook(_)) => {}
            // …or the good start had already claimed it.
            Ok(Start::AlreadyActive(arc)) => {
                assert_eq!(arc.kind, Doomable(false));
                assert!(good.is_started());
            }
            other => panic!("unexpected {other:?}"),
        }
        match good {
            Start::Started(_) => assert_eq!(engine.len(), 1),
            Start::AlreadyActive(arc) => {
                assert_eq!(arc.kind, Doomable(true));
                assert!(engine.is_empty());
                assert!(engine.start(1, 2, Doomable(false)).unwrap().is_started());
            }
        }
        assert!(engine.status(&1, &2).is_some());
    });
}

/// Two concurrent progresses of one arc (under the shard *read* lock, so
/// they can overlap): both count, neither event is lost, and the two
/// returned snapshots are the two successive states.
#[test]
fn two_progresses_lose_no_event() {
    loom::model(|| {
        let (engine, _, _) = engine_on_a_clock();
        let other = spawn_on(&engine, |e| {
            e.progress(&2, &1, ArcPhase::Escalation).unwrap()
        });
        let mine = engine.progress(&1, &2, ArcPhase::Climax).unwrap();
        let theirs = other.join().unwrap();
        let mut counts = [mine.events_triggered, theirs.events_triggered];
        counts.sort_unstable();
        assert_eq!(counts, [1, 2]);
        let last = if mine.events_triggered == 2 {
            mine
        } else {
            theirs
        };
        assert_eq!(engine.status(&1, &2).unwrap(), last);
    });
}

/// A progress racing an end: the end always wins its arc, and its final
/// state holds the progress exactly when the progress succeeded (it
/// happened before the end); a progress after the end finds nothing.
#[test]
fn progress_vs_end() {
    loom::model(|| {
        let (engine, _, _) = engine_on_a_clock();
        let progress = spawn_on(&engine, |e| e.progress(&1, &2, ArcPhase::Climax));
        let ended = engine.end(&1, &2, EndReason::Manual).unwrap();
        match progress.join().unwrap() {
            Ok(arc) => {
                assert_eq!(arc.events_triggered, 1);
                assert_eq!((ended.events_triggered, ended.phase), (1, ArcPhase::Climax));
            }
            Err(e) => {
                assert!(matches!(e, ArcError::NotFound));
                assert_eq!(
                    (ended.events_triggered, ended.phase),
                    (0, ArcPhase::Initiation)
                );
            }
        }
        assert!(engine.is_empty());
    });
}

// ---------------------------------------------------------------------------
// Two-phase start: a `Claim` holds a `std::sync::Arc` of the engine (the
// receiver of `claim`); loom sees the engine's own atomics and shard locks.

/// An engine in a `std::sync::Arc` (what `claim` takes), with event counts.
fn claim_engine() -> (std::sync::Arc<ArcEngine<u8, Kind>>, std::sync::Arc<Events>) {
    let hook_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let (engine, events) = engine_with_hook(&hook_calls);
    (std::sync::Arc::new(engine), events)
}

/// Claims `(a, b)` and publishes at once; whether this call won.
fn claim_and_publish(engine: &std::sync::Arc<ArcEngine<u8, Kind>>, a: u8, b: u8) -> bool {
    match engine.claim(a, b, Kind).unwrap() {
        Claimed::Claim(claim) => {
            claim.publish().unwrap();
            true
        }
        Claimed::AlreadyActive(_) => false,
    }
}

/// claim/publish vs a second claim of the pair (as `(b, a)`): exactly one
/// wins, `Started` fires once, nothing is left pending.
#[test]
fn claim_publish_vs_claim() {
    loom::model(|| {
        let (engine, events) = claim_engine();
        let other = {
            let engine = engine.clone();
            loom::thread::spawn(move || claim_and_publish(&engine, 2, 1))
        };
        let mine = claim_and_publish(&engine, 1, 2);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "exactly one claim wins");
        assert_eq!(events.started.load(Ordering::SeqCst), 1);
        assert_eq!((engine.len(), engine.pending()), (1, 0));
    });
}

/// A dropped claim vs a second claim: the second either meets the claim
/// (`AlreadyActive`) or the free pair (and wins); never two arcs, and the
/// dropped one fires nothing.
#[test]
fn claim_drop_vs_claim() {
    loom::model(|| {
        let (engine, events) = claim_engine();
        let other = {
            let engine = engine.clone();
            loom::thread::spawn(move || claim_and_publish(&engine, 2, 1))
        };
        match engine.claim(1, 2, Kind).unwrap() {
            Claimed::Claim(claim) => drop(claim),
            Claimed::AlreadyActive(_) => {}
        }
        let theirs = other.join().unwrap();
        assert_eq!(events.started.load(Ordering::SeqCst), usize::from(theirs));
        assert_eq!(engine.len(), usize::from(theirs));
        assert_eq!(engine.pending(), 0);
    });
}

/// claim/publish vs end of the pair: the end finds nothing until the
/// publication (a claimed arc cannot be ended), and wins at most once.
#[test]
fn claim_publish_vs_end() {
    loom::model(|| {
        let (engine, events) = claim_engine();
        let ender = {
            let engine = engine.clone();
            loom::thread::spawn(move || engine.end(&1, &2, EndReason::Manual).is_ok())
        };
        assert!(claim_and_publish(&engine, 1, 2));
        let ended = ender.join().unwrap();
        assert_eq!(events.started.load(Ordering::SeqCst), 1);
        assert_eq!(events.ended.load(Ordering::SeqCst), usize::from(ended));
        assert_eq!(engine.len(), usize::from(!ended));
        assert_eq!(engine.pending(), 0);
        assert_eq!(engine.status(&1, &2).is_some(), !ended);
    });
}
