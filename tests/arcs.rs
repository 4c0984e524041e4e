//! Tests of the `arcs` component, written once over [`ArcRegistry`] and run
//! on the lock-free engine and on both mutex baselines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use raceless::arcs::{
    ArcEngine, ArcEngineBuilder, ArcError, ArcEvent, ArcPhase, ArcRegistry, Claim, Claimed,
    EndReason, Start,
};
use raceless::clock::Clock;
use raceless::clock::ManualClock;
use raceless_harness::arcs::{
    apply, builder, double_ends, duplicate_claims, duplicate_starts, lost_progress, Agent, Model,
    Op, RacyArcEngine, TestKind,
};
use raceless_harness::model::SequentialSpec;
use raceless_harness::threads::{hunt, iterations, run_concurrently};

/// Counts events by kind: (started, progressed, ended).
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    progressed: AtomicUsize,
    ended: AtomicUsize,
    reasons: Mutex<Vec<EndReason>>,
}

fn count_events<R: ArcRegistry<Agent, TestKind>>(r: &R) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    r.on_event(move |e| match e {
        ArcEvent::Started(_) => {
            c.started.fetch_add(1, Ordering::SeqCst);
        }
        ArcEvent::Progressed(_) => {
            c.progressed.fetch_add(1, Ordering::SeqCst);
        }
        ArcEvent::Ended(_, reason) => {
            c.ended.fetch_add(1, Ordering::SeqCst);
            c.reasons.lock().unwrap().push(*reason);
        }
        _ => {}
    });
    counts
}

/// The seed's own regression test, ported: 8 threads behind a barrier
/// start the same pair (half as `(b, a)`) with a start hook that sleeps
/// 20 ms (the seed's database insert; it widens the window, nothing is
/// timed).
fn seed_regression<R: ArcRegistry<Agent, TestKind>>() {
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let calls = hook_calls.clone();
    let r = R::from_builder(ArcEngineBuilder::new().start_hook(
        move |_: &Agent, _: &Agent, _: &TestKind| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        },
    ));
    let counts = count_events(&r);
    let results = run_concurrently(8, |t| {
        let (a, b) = if t % 2 == 0 { (10, 20) } else { (20, 10) };
        r.start(a, b, TestKind::Long).unwrap()
    });
    let started: Vec<_> = results.iter().filter(|s| s.is_started()).collect();
    let already = results.iter().filter(|s| !s.is_started()).count();
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1, "hook calls");
    assert_eq!(r.len(), 1, "active arcs");
    assert_eq!(started.len(), 1, "Started results");
    assert_eq!(already, 7, "AlreadyActive results");
    assert_eq!(counts.started.load(Ordering::SeqCst), 1, "Started events");
    let winner = started[0].clone().into_inner();
    for s in &results {
        let arc = s.clone().into_inner();
        assert_eq!(
            (arc.agents, arc.started_at),
            (winner.agents, winner.started_at)
        );
    }
    assert_eq!(r.status(&20, &10), Some(winner));
}

fn no_duplicate_starts<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let n = duplicate_starts(|| R::from_builder(builder(&clock)), 4, iterations(300));
    assert_eq!(n, 0);
    let n = duplicate_starts(
        || R::from_builder(ArcEngineBuilder::new()),
        4,
        iterations(300),
    );
    assert_eq!(n, 0);
}

fn exactly_one_end<R: ArcRegistry<Agent, TestKind>>() {
    let n = double_ends(
        || R::from_builder(ArcEngineBuilder::new()),
        4,
        iterations(300),
    );
    assert_eq!(n, 0);
}

/// `end` racing the expiry of `process_all`: exactly one wins, one `Ended`.
fn end_vs_expiry<R: ArcRegistry<Agent, TestKind>>() {
    for _ in 0..iterations(300) {
        let clock = ManualClock::new();
        let r = R::from_builder(builder(&clock));
        let counts = count_events(&r);
        r.start(1, 2, TestKind::Short).unwrap();
        clock.advance(Duration::from_secs(21)); // past 2 × 10 s
        let wins = run_concurrently(2, |t| {
            if t == 0 {
                usize::from(r.end(&2, &1, EndReason::Manual).is_ok())
            } else {
                r.process_all().expired
            }
        });
        assert_eq!(wins.iter().sum::<usize>(), 1, "{wins:?}");
        assert_eq!(counts.ended.load(Ordering::SeqCst), 1);
        assert!(r.is_empty());
        assert!(r.status(&1, &2).is_none());
    }
}

fn expiry_boundary<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(builder(&clock));
    let counts = count_events(&r);
    r.start(1, 2, TestKind::Short).unwrap();
    r.start(3, 4, TestKind::Long).unwrap();
    clock.advance(Duration::from_secs(20)); // exactly 2 × 10 s: not past it
    let report = r.process_all();
    assert_eq!((report.processed, report.expired), (2, 0));
    clock.advance(Duration::from_nanos(1));
    let report = r.process_all();
    assert_eq!((report.processed, report.expired), (2, 1));
    assert_eq!(*counts.reasons.lock().unwrap(), vec![EndReason::Expired]);
    assert_eq!(r.len(), 1);
    assert!(r.status(&3, &4).is_some());
    // A clock moved backwards expires nothing.
    clock.set(ManualClock::start() - Duration::from_secs(1000));
    assert_eq!(r.process_all().expired, 0);
}

fn progress_counting<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(ArcEngineBuilder::new());
    let counts = count_events(&r);
    let per_thread = iterations(2_000);
    assert_eq!(lost_progress(&r, 4, per_thread), 0);
    assert_eq!(counts.progressed.load(Ordering::SeqCst), 4 * per_thread);
    let arc = r.progress(&1, &2, ArcPhase::Completed).unwrap();
    assert_eq!(arc.events_triggered, 4 * per_thread as u64 + 1);
    assert_eq!(arc.phase, ArcPhase::Completed);
    assert!(r.is_empty());
    assert_eq!(*counts.reasons.lock().unwrap(), vec![EndReason::Completed]);
    assert!(matches!(
        r.progress(&1, &2, ArcPhase::Climax),
        Err(ArcError::NotFound)
    ));
}

fn progress_sets_time_and_phase<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(builder(&clock));
    let t0 = r.start(5, 6, TestKind::Long).unwrap().into_inner();
    clock.advance(Duration::from_secs(7));
    let arc = r.progress(&6, &5, ArcPhase::Climax).unwrap();
    assert_eq!(arc.started_at, t0.started_at);
    assert_eq!(arc.last_progress, t0.started_at + Duration::from_secs(7));
    assert_eq!((arc.phase, arc.events_triggered), (ArcPhase::Climax, 1));
    // A repeated start never overwrites the arc.
    clock.advance(Duration::from_secs(1));
    let again = r.start(5, 6, TestKind::Short).unwrap();
    assert!(matches!(again, Start::AlreadyActive(ref a) if *a == arc));
}

/// Repeated starts of one pair (on the lock-free engine they move its arc
/// into the hot-pair cache, and later ones read it from there) report the
/// arc as it is now: each progress, and after an end and a restart, the
/// new arc.
fn repeated_starts_report_the_current_arc<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(builder(&clock));
    let mut previous = None;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        let arc = r.start(1, 2, TestKind::Long).unwrap();
        let mut arc = match arc {
            Start::Started(arc) => arc,
            Start::AlreadyActive(arc) => panic!("the pair was free, yet taken by {arc:?}"),
        };
        assert_ne!(Some(arc.started_at), previous);
        for events in 1..=3 {
            let again = r.start(2, 1, TestKind::Short).unwrap();
            assert!(matches!(again, Start::AlreadyActive(ref a) if *a == arc));
            clock.advance(Duration::from_secs(1));
            arc = r.progress(&2, &1, ArcPhase::Climax).unwrap();
            assert_eq!(arc.events_triggered, events);
        }
        let again = r.start(1, 2, TestKind::Short).unwrap();
        assert!(matches!(again, Start::AlreadyActive(ref a) if *a == arc));
        assert_eq!(r.end(&1, &2, EndReason::Manual).unwrap(), arc);
        assert!(r.status(&1, &2).is_none());
        previous = Some(arc.started_at);
    }
}

fn failing_hook_frees_pair<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(builder(&clock));
    let counts = count_events(&r);
    match r.start(1, 2, TestKind::Doomed) {
        Err(ArcError::Hook(e)) => assert!(e.to_string().contains("doomed")),
        other => panic!("expected a hook error, got {other:?}"),
    }
    assert!(r.is_empty());
    assert!(r.status(&1, &2).is_none());
    assert!(r.active().is_empty());
    assert_eq!(counts.started.load(Ordering::SeqCst), 0);
    assert!(r.start(2, 1, TestKind::Short).unwrap().is_started());
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
}

/// A panicking hook (start or process) is isolated like a failing one.
fn panicking_hooks<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(
        ArcEngineBuilder::new()
            .start_hook(|_: &Agent, _: &Agent, kind: &TestKind| {
                if *kind == TestKind::Doomed {
                    panic!("store crashed");
                }
                Ok(())
            })
            .process_hook(|_| panic!("model crashed")),
    );
    assert!(matches!(
        r.start(1, 2, TestKind::Doomed),
        Err(ArcError::Hook(_))
    ));
    assert!(r.is_empty());
    assert!(r.start(1, 2, TestKind::Long).unwrap().is_started());
    let report = r.process_all();
    assert_eq!((report.processed, report.progressed), (1, 0));
    assert_eq!(r.status(&1, &2).unwrap().events_triggered, 0);
}

/// While the winner's hook runs, another start gets `AlreadyActive` with
/// the pending arc, and the arc is invisible to status/progress/end until
/// published; if the hook then fails, the pair is free again.
fn start_during_hook<R: ArcRegistry<Agent, TestKind>>(hook_fails: bool) {
    let in_hook = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (h_in, h_release) = (in_hook.clone(), release.clone());
    let r = R::from_builder(
        ArcEngineBuilder::new()
            .clock(ManualClock::new())
            .start_hook(move |_: &Agent, _: &Agent, kind: &TestKind| {
                if *kind == TestKind::Short {
                    return Ok(()); // later starts do not block
                }
                h_in.wait();
                h_release.wait();
                if hook_fails {
                    Err("store rejected it".into())
                } else {
                    Ok(())
                }
            }),
    );
    let counts = count_events(&r);
    std::thread::scope(|s| {
        let winner = s.spawn(|| r.start(1, 2, TestKind::Long));
        in_hook.wait();
        let other = r.start(2, 1, TestKind::Short).unwrap();
        match &other {
            Start::AlreadyActive(arc) => {
                assert_eq!(arc.kind, TestKind::Long);
                assert_eq!(arc.phase, ArcPhase::Initiation);
            }
            Start::Started(_) => panic!("a second start won during the hook"),
        }
        assert!(r.status(&1, &2).is_none());
        assert!(r.active().is_empty());
        assert_eq!(r.len(), 0);
        assert!(matches!(
            r.progress(&1, &2, ArcPhase::Climax),
            Err(ArcError::NotFound)
        ));
        assert!(matches!(
            r.end(&1, &2, EndReason::Manual),
            Err(ArcError::NotFound)
        ));
        assert_eq!(r.process_all().processed, 0);
        release.wait();
        let result = winner.join().unwrap();
        if hook_fails {
            assert!(matches!(result, Err(ArcError::Hook(_))));
            assert!(r.is_empty());
            assert!(r.start(1, 2, TestKind::Short).unwrap().is_started());
        } else {
            let arc = result.unwrap();
            assert!(arc.is_started());
            assert_eq!(arc.into_inner(), other.into_inner());
            assert_eq!(r.len(), 1);
        }
    });
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
}

/// A listener may call back into the engine (no guard is held).
fn reentrant_listener<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let r = Arc::new(R::from_builder(ArcEngineBuilder::new()));
    let weak = Arc::downgrade(&r);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    r.on_event(move |e| {
        let Some(r) = weak.upgrade() else { return };
        match e {
            ArcEvent::Started(arc) => {
                let (a, b) = arc.agents;
                // Re-enter: read, progress, start another pair, register.
                assert!(r.status(&a, &b).is_some());
                r.progress(&a, &b, ArcPhase::Escalation).unwrap();
                if a == 1 {
                    r.start(3, 4, TestKind::Long).unwrap();
                }
                r.on_event(|_| {});
                l.lock().unwrap().push(("started", a, b));
            }
            ArcEvent::Progressed(arc) => {
                let _ = r.active();
                let _ = r.len();
                if arc.agents == (3, 4) {
                    r.end(&3, &4, EndReason::Manual).unwrap();
                }
                l.lock()
                    .unwrap()
                    .push(("progressed", arc.agents.0, arc.agents.1));
            }
            ArcEvent::Ended(arc, _) => {
                let _ = r.process_all();
                l.lock()
                    .unwrap()
                    .push(("ended", arc.agents.0, arc.agents.1));
            }
            _ => {}
        }
    });
    r.start(1, 2, TestKind::Long).unwrap();
    let log = log.lock().unwrap().clone();
    for entry in [
        ("started", 1, 2),
        ("progressed", 1, 2),
        ("started", 3, 4),
        ("progressed", 3, 4),
        ("ended", 3, 4),
    ] {
        assert_eq!(
            log.iter().filter(|e| **e == entry).count(),
            1,
            "{entry:?} in {log:?}"
        );
    }
    assert_eq!(r.status(&1, &2).unwrap().events_triggered, 1);
    assert!(r.status(&3, &4).is_none());
}

fn panicking_listener<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(ArcEngineBuilder::new());
    r.on_event(|_| panic!("listener bug"));
    let counts = count_events(&r);
    r.on_event(|_| panic!("another listener bug"));
    assert!(r.start(1, 2, TestKind::Long).unwrap().is_started());
    r.progress(&1, &2, ArcPhase::Climax).unwrap();
    r.end(&1, &2, EndReason::Manual).unwrap();
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
    assert_eq!(counts.progressed.load(Ordering::SeqCst), 1);
    assert_eq!(counts.ended.load(Ordering::SeqCst), 1);
    assert!(r.is_empty());
    assert!(r.start(1, 2, TestKind::Long).unwrap().is_started());
}

fn listener_removal<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(ArcEngineBuilder::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let id = r.on_event(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    r.start(1, 2, TestKind::Long).unwrap();
    assert!(r.remove_listener(id));
    assert!(!r.remove_listener(id));
    r.end(&1, &2, EndReason::Manual).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn same_pair_is_an_error<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(ArcEngineBuilder::new());
    let counts = count_events(&r);
    assert!(matches!(
        r.start(7, 7, TestKind::Long),
        Err(ArcError::SamePair)
    ));
    assert!(matches!(
        r.progress(&7, &7, ArcPhase::Climax),
        Err(ArcError::SamePair)
    ));
    assert!(matches!(
        r.end(&7, &7, EndReason::Manual),
        Err(ArcError::SamePair)
    ));
    assert!(r.status(&7, &7).is_none());
    assert!(r.is_empty());
    assert_eq!(counts.started.load(Ordering::SeqCst), 0);
}

/// The process hook progresses and completes arcs; expired arcs are not
/// offered to it.
fn process_hook<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(
        ArcEngineBuilder::new()
            .clock(clock.clone())
            .process_hook(|arc| match arc.phase {
                ArcPhase::Initiation => Some(ArcPhase::Escalation),
                ArcPhase::Escalation => Some(ArcPhase::Completed),
                _ => None,
            }),
    );
    let counts = count_events(&r);
    r.start(1, 2, TestKind::Long).unwrap();
    r.start(3, 4, TestKind::Short).unwrap();
    let report = r.process_all();
    assert_eq!(
        (
            report.processed,
            report.progressed,
            report.completed,
            report.expired
        ),
        (2, 2, 0, 0)
    );
    clock.advance(Duration::from_secs(30)); // (3, 4) expires; (1, 2) does not
    let report = r.process_all();
    assert_eq!(
        (
            report.processed,
            report.progressed,
            report.completed,
            report.expired
        ),
        (2, 1, 1, 1)
    );
    assert!(r.is_empty());
    let mut reasons = counts.reasons.lock().unwrap().clone();
    reasons.sort();
    assert_eq!(reasons, vec![EndReason::Expired, EndReason::Completed]);
}

/// Readers of "all" never fail and see whole arcs under concurrent churn.
fn active_under_churn<R: ArcRegistry<Agent, TestKind>>() {
    let r = R::from_builder(ArcEngineBuilder::new());
    let rounds = iterations(2_000);
    run_concurrently(3, |t| {
        for i in 0..rounds {
            let pair = (i % 16) as Agent;
            match t {
                0 => {
                    let _ = r.start(2 * pair, 2 * pair + 1, TestKind::Long);
                    let _ = r.progress(&(2 * pair), &(2 * pair + 1), ArcPhase::Climax);
                }
                1 => {
                    let _ = r.end(&(2 * pair), &(2 * pair + 1), EndReason::Manual);
                }
                _ => {
                    for arc in r.active() {
                        assert_eq!(arc.agents.0 + 1, arc.agents.1);
                        // Every progress sets Climax: a whole state has
                        // both or neither.
                        assert_eq!(arc.phase == ArcPhase::Climax, arc.events_triggered >= 1);
                        assert!(arc.last_progress >= arc.started_at);
                    }
                    assert!(r.len() <= 16);
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Two-phase start (claim / publish), monotonic expiry, memory.

fn claimed<R: ArcRegistry<Agent, TestKind> + 'static>(
    r: &Arc<R>,
    a: Agent,
    b: Agent,
    kind: TestKind,
) -> Claim<Agent, TestKind> {
    match r.claim(a, b, kind) {
        Ok(Claimed::Claim(claim)) => claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// While claimed, the pair is taken (start and claim get `AlreadyActive`
/// with the claimed arc) but invisible; `publish` makes it active and
/// fires `Started` once.
fn claim_then_publish<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let r = Arc::new(R::from_builder(
        ArcEngineBuilder::new().clock(ManualClock::new()),
    ));
    let counts = count_events(&*r);
    let claim = claimed(&r, 2, 1, TestKind::Long);
    assert_eq!(claim.snapshot().agents, (1, 2));
    match r.start(1, 2, TestKind::Short).unwrap() {
        Start::AlreadyActive(arc) => assert_eq!(&arc, claim.snapshot()),
        Start::Started(_) => panic!("started a claimed pair"),
    }
    match r.claim(1, 2, TestKind::Short).unwrap() {
        Claimed::AlreadyActive(arc) => assert_eq!(&arc, claim.snapshot()),
        Claimed::Claim(_) => panic!("claimed a claimed pair"),
    }
    assert!(r.status(&1, &2).is_none());
    assert!(r.active().is_empty());
    assert_eq!((r.len(), r.pending()), (0, 1));
    assert!(matches!(
        r.progress(&1, &2, ArcPhase::Climax),
        Err(ArcError::NotFound)
    ));
    assert!(matches!(
        r.end(&1, &2, EndReason::Manual),
        Err(ArcError::NotFound)
    ));
    assert_eq!(r.process_all().processed, 0);
    assert_eq!(counts.started.load(Ordering::SeqCst), 0);
    let expected = claim.snapshot().clone();
    let arc = claim.publish().unwrap();
    assert_eq!(arc, expected);
    assert_eq!(r.status(&1, &2), Some(arc));
    assert_eq!((r.len(), r.pending()), (1, 0));
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
    assert!(matches!(
        r.claim(1, 2, TestKind::Short),
        Ok(Claimed::AlreadyActive(_))
    ));
    assert!(matches!(
        r.claim(3, 3, TestKind::Short),
        Err(ArcError::SamePair)
    ));
}

/// Dropping or aborting a claim gives the pair back, with no event.
fn dropped_claim_frees_pair<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let r = Arc::new(R::from_builder(ArcEngineBuilder::new()));
    let counts = count_events(&*r);
    drop(claimed(&r, 1, 2, TestKind::Long));
    assert_eq!((r.len(), r.pending()), (0, 0));
    claimed(&r, 1, 2, TestKind::Long).abort();
    assert_eq!((r.len(), r.pending()), (0, 0));
    assert!(r.start(1, 2, TestKind::Short).unwrap().is_started());
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
    assert_eq!(counts.ended.load(Ordering::SeqCst), 0);
}

/// A registry's synchronous start hook runs in `publish`; if it fails, the
/// claim is rolled back and `publish` returns the hook's error.
fn publish_runs_the_start_hook<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let clock = ManualClock::new();
    let r = Arc::new(R::from_builder(builder(&clock)));
    let counts = count_events(&*r);
    let doomed = claimed(&r, 1, 2, TestKind::Doomed);
    assert!(matches!(doomed.publish(), Err(ArcError::Hook(_))));
    assert_eq!((r.len(), r.pending()), (0, 0));
    assert!(claimed(&r, 1, 2, TestKind::Short).publish().is_ok());
    assert_eq!(counts.started.load(Ordering::SeqCst), 1);
}

/// Claims and starts of one pair at once: exactly one winner.
fn no_duplicate_claims<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let n = duplicate_claims(
        || R::from_builder(ArcEngineBuilder::new()),
        4,
        iterations(200),
    );
    assert_eq!(n, 0);
}

/// Expiry runs on monotonic time: stepping the wall clock (as NTP or an
/// operator does) neither expires an arc nor revives its age.
fn wall_clock_step_does_not_expire<R: ArcRegistry<Agent, TestKind>>() {
    let clock = ManualClock::new();
    let r = R::from_builder(ArcEngineBuilder::new().clock(clock.clone()));
    let start = clock.now();
    r.start(1, 2, TestKind::Short).unwrap(); // expires after 20 s
                                             // A step forward by a day: not expired.
    clock.set(start + Duration::from_secs(86_400));
    assert_eq!(r.process_all().expired, 0);
    assert_eq!(r.len(), 1);
    // 15 s of real (monotonic) time: still not expired.
    clock.advance(Duration::from_secs(15));
    assert_eq!(r.process_all().expired, 0);
    // A step back by a day: the arc still ages on.
    clock.set(start - Duration::from_secs(86_400));
    clock.advance(Duration::from_secs(6)); // 21 s since the start
    let report = r.process_all();
    assert_eq!((report.processed, report.expired), (1, 1));
    assert!(r.is_empty());
    // The snapshot's times stay the wall clock's at the start, plus age.
    r.start(3, 4, TestKind::Long).unwrap();
    let started = r.status(&3, &4).unwrap().started_at;
    clock.set(started + Duration::from_secs(1_000));
    clock.advance(Duration::from_secs(2));
    let arc = r.progress(&3, &4, ArcPhase::Climax).unwrap();
    assert_eq!(arc.last_progress, started + Duration::from_secs(2));
}

/// 10^6 distinct pairs go through every path that creates an entry —
/// start/end, claim/publish/end, claim/drop, a failing start hook,
/// completion, expiry — and the registry keeps nothing afterwards.
fn churn_returns_to_empty<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let clock = ManualClock::new();
    let r = Arc::new(R::from_builder(builder(&clock)));
    let total: u32 = if cfg!(miri) { 600 } else { 1_000_000 };
    let per_thread = total / 2;
    run_concurrently(2, |t| {
        for i in 0..per_thread {
            let a = 2 * (t as u32 * per_thread + i);
            let b = a + 1;
            match i % 6 {
                0 => {
                    r.start(a, b, TestKind::Short).unwrap();
                    r.end(&a, &b, EndReason::Manual).unwrap();
                }
                1 => {
                    claimed(&r, a, b, TestKind::Short).publish().unwrap();
                    r.end(&b, &a, EndReason::Manual).unwrap();
                }
                2 => drop(claimed(&r, a, b, TestKind::Long)),
                3 => assert!(r.start(a, b, TestKind::Doomed).is_err()),
                4 => {
                    r.start(a, b, TestKind::Long).unwrap();
                    r.progress(&a, &b, ArcPhase::Completed).unwrap();
                }
                _ => {
                    r.start(a, b, TestKind::Short).unwrap();
                }
            }
        }
    });
    assert_eq!(r.pending(), 0);
    assert!(r.len() > 0);
    clock.advance(Duration::from_secs(21));
    r.process_all();
    assert_eq!((r.len(), r.pending()), (0, 0));
    assert!(r.active().is_empty());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A request handler's life with a claim: claim, await the database insert
/// (two `.await`s), publish, await the response. It parks forever at
/// checkpoint `stop` (after telling `reached`), so the caller can cancel
/// it exactly there.
async fn handler<R: ArcRegistry<Agent, TestKind> + 'static>(
    r: Arc<R>,
    stop: u32,
    reached: tokio::sync::mpsc::UnboundedSender<u32>,
) {
    let checkpoint = |k: u32| {
        let reached = reached.clone();
        async move {
            tokio::task::yield_now().await; // may move to another worker
            if k == stop {
                reached.send(k).unwrap();
                std::future::pending::<()>().await;
            }
        }
    };
    checkpoint(0).await;
    let claim = claimed(&r, 1, 2, TestKind::Long);
    checkpoint(1).await; // the insert, first half
    checkpoint(2).await; // the insert, second half
    claim.publish().unwrap();
    checkpoint(3).await; // writing the response
}

/// Cancelled at every `.await` of a claim's life, three ways (`select!`,
/// `timeout`, `JoinHandle::abort`), on a multi-thread runtime: before the
/// publication the pair is free again and nothing fired; after it, the arc
/// is active with one `Started`.
fn cancelled_at_every_await<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let rt = runtime();
    for stop in 0..4 {
        for how in 0..3 {
            let r = Arc::new(R::from_builder(ArcEngineBuilder::new()));
            let counts = count_events(&*r);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            rt.block_on(async {
                let fut = handler(r.clone(), stop, tx);
                match how {
                    0 => tokio::select! {
                        () = fut => panic!("the handler parks at {stop}"),
                        got = rx.recv() => assert_eq!(got, Some(stop)),
                    },
                    1 => {
                        // The future never finishes: the timeout's length
                        // only decides when we stop waiting.
                        let out = tokio::time::timeout(Duration::from_millis(20), fut).await;
                        assert!(out.is_err());
                        assert_eq!(rx.recv().await, Some(stop));
                    }
                    _ => {
                        let task = tokio::spawn(fut);
                        assert_eq!(rx.recv().await, Some(stop));
                        task.abort();
                        assert!(task.await.unwrap_err().is_cancelled());
                    }
                }
            });
            let published = stop == 3;
            assert_eq!(r.len(), usize::from(published), "stop {stop}, how {how}");
            assert_eq!(r.pending(), 0, "stop {stop}, how {how}");
            assert_eq!(
                counts.started.load(Ordering::SeqCst),
                usize::from(published)
            );
            assert_eq!(
                r.claim(2, 1, TestKind::Short).unwrap().is_claim(),
                !published
            );
        }
    }
}

/// A claim moved into a task that panics is rolled back.
fn panicking_task_releases_claim<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let rt = runtime();
    let r = Arc::new(R::from_builder(ArcEngineBuilder::new()));
    let claim = claimed(&r, 1, 2, TestKind::Long);
    let out = rt.block_on(rt.spawn(async move {
        tokio::task::yield_now().await;
        let _held = claim;
        panic!("the handler failed");
    }));
    assert!(out.unwrap_err().is_panic());
    assert_eq!((r.len(), r.pending()), (0, 0));
    assert!(r.claim(1, 2, TestKind::Long).unwrap().is_claim());
}

/// Many tasks claim, await, and publish or drop distinct and shared pairs
/// at once; afterwards every pair holds at most one arc and the counts add
/// up.
fn concurrent_tasks<R: ArcRegistry<Agent, TestKind> + 'static>() {
    let rt = runtime();
    let r = Arc::new(R::from_builder(ArcEngineBuilder::new()));
    let counts = count_events(&*r);
    let published = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (r, published) = (r.clone(), published.clone());
                tokio::spawn(async move {
                    let (a, b) = (i % 8, 8 + i % 5);
                    if let Ok(Claimed::Claim(claim)) = r.claim(a, b, TestKind::Long) {
                        tokio::task::yield_now().await;
                        if i % 3 != 0 && claim.publish().is_ok() {
                            published.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let published = published.load(Ordering::SeqCst);
    assert_eq!(r.len(), published);
    assert_eq!(r.pending(), 0);
    assert_eq!(counts.started.load(Ordering::SeqCst), published);
}

#[test]
fn claims_are_send_and_static() {
    fn check<T: Send + 'static>(_: &T) {}
    let r = Arc::new(ArcEngine::<Agent, TestKind>::new());
    let claim = r.claim(1, 2, TestKind::Long).unwrap();
    check(&claim);
    let baseline = Arc::new(raceless::baseline::MutexArcEngine::<Agent, TestKind>::new());
    check(&baseline.claim(1, 2, TestKind::Long).unwrap());
}

macro_rules! suite {
    ($($module:ident => $ty:ty;)*) => {$(
        mod $module {
            use super::*;
            type R = $ty;
            #[test] fn seed_regression() { super::seed_regression::<R>() }
            #[test] fn no_duplicate_starts() { super::no_duplicate_starts::<R>() }
            #[test] fn exactly_one_end() { super::exactly_one_end::<R>() }
            #[test] fn end_vs_expiry() { super::end_vs_expiry::<R>() }
            #[test] fn expiry_boundary() { super::expiry_boundary::<R>() }
            #[test] fn progress_counting() { super::progress_counting::<R>() }
            #[test] fn progress_sets_time_and_phase() { super::progress_sets_time_and_phase::<R>() }
            #[test] fn repeated_starts_report_the_current_arc() { super::repeated_starts_report_the_current_arc::<R>() }
            #[test] fn failing_hook_frees_pair() { super::failing_hook_frees_pair::<R>() }
            #[test] fn start_during_successful_hook() { super::start_during_hook::<R>(false) }
            #[test] fn start_during_failing_hook() { super::start_during_hook::<R>(true) }
            #[test] fn panicking_hooks() { super::panicking_hooks::<R>() }
            #[test] fn reentrant_listener() { super::reentrant_listener::<R>() }
            #[test] fn panicking_listener() { super::panicking_listener::<R>() }
            #[test] fn listener_removal() { super::listener_removal::<R>() }
            #[test] fn same_pair_is_an_error() { super::same_pair_is_an_error::<R>() }
            #[test] fn process_hook() { super::process_hook::<R>() }
            #[test] fn active_under_churn() { super::active_under_churn::<R>() }
            #[test] fn claim_then_publish() { super::claim_then_publish::<R>() }
            #[test] fn dropped_claim_frees_pair() { super::dropped_claim_frees_pair::<R>() }
            #[test] fn publish_runs_the_start_hook() { super::publish_runs_the_start_hook::<R>() }
            #[test] fn no_duplicate_claims() { super::no_duplicate_claims::<R>() }
            #[test] fn wall_clock_step_does_not_expire() { super::wall_clock_step_does_not_expire::<R>() }
            #[test] fn churn_returns_to_empty() { super::churn_returns_to_empty::<R>() }
            #[test] #[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
            fn cancelled_at_every_await() { super::cancelled_at_every_await::<R>() }
            #[test] #[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
            fn panicking_task_releases_claim() { super::panicking_task_releases_claim::<R>() }
            #[test] #[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
            fn concurrent_tasks() { super::concurrent_tasks::<R>() }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(128))]
                #[test]
                fn matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
                    let clock = ManualClock::new();
                    let r = R::from_builder(builder(&clock));
                    let mut model = Model::default();
                    for op in &ops {
                        let expected = model.apply(op);
                        let got = apply(&r, &clock, op);
                        prop_assert_eq!(got, expected, "op {:?}", op);
                    }
                }
            }
        }
    )*};
}

suite! {
    lock_free => ArcEngine<Agent, TestKind>;
    std_mutex => raceless::baseline::MutexArcEngine<Agent, TestKind>;
    parking_lot => raceless::baseline::MutexArcEngine<Agent, TestKind, raceless::baseline::ParkingLotMutex>;
    sharded_mutex => raceless::baseline::ShardedArcEngine<Agent, TestKind>;
}

fn agent() -> impl Strategy<Value = Agent> {
    0..4u32
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(TestKind::Short),
        Just(TestKind::Long),
        Just(TestKind::Doomed)
    ];
    let phase = prop_oneof![
        Just(ArcPhase::Initiation),
        Just(ArcPhase::Escalation),
        Just(ArcPhase::Climax),
        Just(ArcPhase::Resolution),
        Just(ArcPhase::Completed),
    ];
    prop_oneof![
        4 => (agent(), agent(), kind).prop_map(|(a, b, k)| Op::Start(a, b, k)),
        3 => (agent(), agent(), phase).prop_map(|(a, b, p)| Op::Progress(a, b, p)),
        2 => (agent(), agent()).prop_map(|(a, b)| Op::End(a, b)),
        1 => (agent(), agent()).prop_map(|(a, b)| Op::Status(a, b)),
        1 => Just(Op::Active),
        1 => Just(Op::Len),
        2 => (0..15u64).prop_map(Op::Advance),
        1 => Just(Op::ProcessAll),
    ]
}

// The checks above can fail: the seed's racy engine is caught by them.

fn racy_engine() -> RacyArcEngine<Agent, TestKind> {
    RacyArcEngine::from_builder(ArcEngineBuilder::new())
}

#[test]
#[cfg_attr(miri, ignore = "racy hunts need native scheduling")]
fn racy_variant_duplicate_starts_are_caught() {
    let n = hunt(10, || duplicate_starts(racy_engine, 4, iterations(300)));
    assert!(n > 0, "the racy engine's duplicate starts went unnoticed");
}

#[test]
#[cfg_attr(miri, ignore = "racy hunts need native scheduling")]
fn racy_variant_duplicate_claims_are_caught() {
    let n = hunt(10, || duplicate_claims(racy_engine, 4, iterations(300)));
    assert!(n > 0, "the racy engine's duplicate claims went unnoticed");
}

#[test]
#[cfg_attr(miri, ignore = "racy hunts need native scheduling")]
fn racy_variant_double_ends_are_caught() {
    let n = hunt(10, || double_ends(racy_engine, 4, iterations(300)));
    assert!(n > 0, "the racy engine's double ends went unnoticed");
}

#[test]
#[cfg_attr(miri, ignore = "racy hunts need native scheduling")]
fn racy_variant_lost_progress_is_caught() {
    let n = hunt(10, || lost_progress(&racy_engine(), 4, iterations(2_000)));
    assert!(n > 0, "the racy engine's lost progress went unnoticed");
}

#[test]
fn racy_variant_still_matches_the_model_sequentially() {
    // Sequentially the racy engine is right, so only the concurrent checks
    // tell it apart from the real ones.
    let clock = ManualClock::new();
    let r = RacyArcEngine::from_builder(builder(&clock));
    let mut model = Model::default();
    for op in [
        Op::Start(1, 2, TestKind::Short),
        Op::Start(2, 1, TestKind::Long),
        Op::Progress(1, 2, ArcPhase::Climax),
        Op::Start(3, 4, TestKind::Doomed),
        Op::Advance(21),
        Op::ProcessAll,
        Op::Len,
    ] {
        assert_eq!(apply(&r, &clock, &op), model.apply(&op), "{op:?}");
    }
}

#[test]
fn reproduction_counts_zero_for_lock_free() {
    let repro = raceless_harness::arcs::reproduction();
    assert_eq!((repro.lock_free)(4, iterations(50)), 0);
    // Catching the racy variant needs native scheduling: under Miri
    // (no preemption) its window may never be hit, as with the
    // linearizability suite's racy hunts.
    if !cfg!(miri) {
        assert!((repro.racy)(4, iterations(200)) > 0);
    }
}

#[test]
fn workloads_run() {
    let defs: Vec<_> = raceless_harness::arcs::workloads()
        .into_iter()
        .chain(raceless_harness::arcs::async_workloads())
        .collect();
    for def in &defs {
        // lock-free, std-mutex, parking-lot, sharded-mutex
        assert_eq!(def.impls.len(), 4);
    }
    raceless_harness::workload::run_every_row(defs, 400);
}
