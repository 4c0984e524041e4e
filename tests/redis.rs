//! The `redis` feature against a real `redis-server` (one per test, on a
//! free 127.0.0.1 port): each component's semantics, and concurrent tasks of
//! one process racing on the same pairs, names and sessions. Time comes from
//! a `ManualClock` passed to every script (no sleeps).
#![cfg(feature = "redis")]

mod redis_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use raceless::arcs::{ArcError, ArcKind, ArcPhase, EndReason, Start};
use raceless::clock::ManualClock;
use raceless::redis::{ArcToken, RedisBackend, RedisOptions, SlotError};
use raceless::stream::Pending;
use redis_support::{namespace, Server};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Kind {
    name: String,
    secs: u64,
}

impl ArcKind for Kind {
    fn expected_duration(&self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

fn rivalry() -> Kind {
    Kind {
        name: "rivalry".into(),
        secs: 10,
    }
}

async fn backend(server: &Server, test: &str, clock: &ManualClock) -> RedisBackend {
    RedisBackend::connect_with(
        &server.url(),
        &namespace(test),
        RedisOptions::new().clock(clock.clone()),
    )
    .await
    .expect("connect")
}

macro_rules! server_or_skip {
    () => {
        match Server::start() {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn arcs_start_end_status() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let arcs = backend(&server, "arcs_basic", &clock).await.arcs::<Kind>();

    let first = arcs.start("bob", "ada", rivalry()).await.unwrap();
    let Start::Started(arc) = first else {
        panic!("first start must win")
    };
    assert_eq!(arc.agents, ("ada".to_string(), "bob".to_string()));
    assert_eq!(arc.started_at, ManualClock::start());
    assert_eq!((arc.phase, arc.events_triggered), (ArcPhase::Initiation, 0));

    clock.advance(Duration::from_secs(1));
    // (b, a) is the same pair; the stored arc is untouched.
    let again = arcs.start("ada", "bob", rivalry()).await.unwrap();
    assert_eq!(again, Start::AlreadyActive(arc.clone()));
    assert!(matches!(
        arcs.start("ada", "ada", rivalry()).await,
        Err(ArcError::SamePair)
    ));

    let p = arcs.progress("ada", "bob", ArcPhase::Climax).await.unwrap();
    assert_eq!((p.phase, p.events_triggered), (ArcPhase::Climax, 1));
    assert_eq!(
        p.last_progress,
        ManualClock::start() + Duration::from_secs(1)
    );
    assert_eq!(arcs.status("bob", "ada").await.unwrap(), Some(p.clone()));
    assert_eq!(arcs.len().await.unwrap(), 1);

    let ended = arcs.end("bob", "ada", EndReason::Manual).await.unwrap();
    assert_eq!(ended, p);
    assert!(matches!(
        arcs.end("bob", "ada", EndReason::Manual).await,
        Err(ArcError::NotFound)
    ));
    assert_eq!(arcs.status("ada", "bob").await.unwrap(), None);
    assert_eq!(arcs.len().await.unwrap(), 0);

    // Completed ends the arc.
    arcs.start("ada", "bob", rivalry()).await.unwrap();
    let done = arcs
        .progress("ada", "bob", ArcPhase::Completed)
        .await
        .unwrap();
    assert_eq!(done.phase, ArcPhase::Completed);
    assert_eq!(arcs.status("ada", "bob").await.unwrap(), None);
    assert!(matches!(
        arcs.progress("ada", "bob", ArcPhase::Climax).await,
        Err(ArcError::NotFound)
    ));
}

#[tokio::test]
async fn arcs_tokens_make_start_and_end_repeatable() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let arcs = backend(&server, "arcs_tokens", &clock).await.arcs::<Kind>();
    let token = ArcToken::new();
    let a = arcs
        .start_with_token("x", "y", rivalry(), &token)
        .await
        .unwrap();
    let b = arcs
        .start_with_token("x", "y", rivalry(), &token)
        .await
        .unwrap();
    assert!(
        a.is_started() && b.is_started(),
        "a repeat with the same token is the same start"
    );
    assert!(!arcs
        .start_with_token("x", "y", rivalry(), &ArcToken::new())
        .await
        .unwrap()
        .is_started());
    assert!(matches!(
        arcs.end_token("x", "y", &ArcToken::new()).await,
        Err(ArcError::NotFound)
    ));
    arcs.end_token("x", "y", &token).await.unwrap();
    assert!(matches!(
        arcs.end_token("x", "y", &token).await,
        Err(ArcError::NotFound)
    ));
}

#[tokio::test]
async fn arcs_sweep_expires_once_and_never_an_ended_or_newer_arc() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let arcs = backend(&server, "arcs_sweep", &clock).await.arcs::<Kind>();
    arcs.start("a", "b", rivalry()).await.unwrap();
    arcs.start(
        "c",
        "d",
        Kind {
            name: "long".into(),
            secs: 100,
        },
    )
    .await
    .unwrap();
    assert_eq!(arcs.sweep(100).await.unwrap().expired.len(), 0);
    clock.advance(Duration::from_secs(20));
    let report = arcs.sweep(100).await.unwrap();
    assert_eq!(report.expired.len(), 1);
    assert_eq!(report.expired[0].agents, ("a".into(), "b".into()));
    assert_eq!(arcs.sweep(100).await.unwrap().expired.len(), 0);
    assert_eq!(arcs.len().await.unwrap(), 1);

    // An arc ended and restarted after the sweep judged it: the restarted
    // arc has a new token and deadline, so it is not expired.
    arcs.start("a", "b", rivalry()).await.unwrap();
    clock.advance(Duration::from_secs(20));
    arcs.end("a", "b", EndReason::Manual).await.unwrap();
    arcs.start("a", "b", rivalry()).await.unwrap();
    let report = arcs.sweep(100).await.unwrap();
    assert_eq!(report.expired.len(), 0, "{report:?}");
    assert!(arcs.status("a", "b").await.unwrap().is_some());

    // Sweeps and ends racing on expired arcs: exactly one winner per arc.
    for i in 0..20 {
        arcs.start(&format!("p{i}"), "q", rivalry()).await.unwrap();
    }
    clock.advance(Duration::from_secs(21));
    let (s1, s2, ends) = tokio::join!(
        arcs.sweep(1000),
        arcs.sweep(1000),
        futures_join_all((0..20).map(|i| {
            let arcs = arcs.clone();
            async move {
                arcs.end(&format!("p{i}"), "q", EndReason::Manual)
                    .await
                    .is_ok()
            }
        }))
    );
    let won =
        s1.unwrap().expired.len() + s2.unwrap().expired.len() + ends.iter().filter(|e| **e).count();
    // 20 racing arcs, plus ("a","b") now past its deadline (("c","d") has
    // 200 s).
    assert_eq!(won, 21);
    assert_eq!(arcs.len().await.unwrap(), 1);
}

/// Runs each future as its own task and collects the outputs in order.
async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Starts of the same pairs from many tasks: exactly one `Started` per pair,
/// and every `AlreadyActive` carries the winner's arc.
async fn concurrent_starts<F, Fut>(tasks: usize, pairs: usize, start: F) -> HashMap<usize, usize>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let results = futures_join_all((0..tasks).map(|t| {
        let start = start.clone();
        async move {
            let mut won = Vec::new();
            for k in 0..pairs {
                let pair = (k + t) % pairs;
                if start(pair).await {
                    won.push(pair);
                }
            }
            won
        }
    }))
    .await;
    let mut starts = HashMap::new();
    for pair in results.into_iter().flatten() {
        *starts.entry(pair).or_insert(0) += 1;
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcs_concurrent_starts_one_winner_per_pair() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let arcs = backend(&server, "arcs_conc", &clock).await.arcs::<Kind>();
    let a2 = arcs.clone();
    let starts = concurrent_starts(8, 40, move |p| {
        let arcs = a2.clone();
        async move {
            arcs.start(&format!("agent{p}"), "hub", rivalry())
                .await
                .unwrap()
                .is_started()
        }
    })
    .await;
    assert_eq!(starts.len(), 40);
    assert!(starts.values().all(|n| *n == 1), "{starts:?}");
    assert_eq!(arcs.len().await.unwrap(), 40);
}

/// The check-then-act start the scripts replace (HEXISTS, then HSET, as two
/// commands), with the two starters' checks forced before either acts:
/// both win. The one-winner check above catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racy_check_then_act_start_is_caught() {
    use redis::AsyncCommands;
    let server = server_or_skip!();
    let client = redis::Client::open(server.url()).unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let starts = concurrent_starts(2, 1, move |p| {
        let client = client.clone();
        let barrier = barrier.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let key = format!("racy:{p}");
            let exists: bool = c.exists(&key).await.unwrap();
            barrier.wait().await;
            if exists {
                return false;
            }
            let _: () = c.hset(&key, "token", "mine").await.unwrap();
            true
        }
    })
    .await;
    assert_eq!(starts[&0], 2, "the racy variant double-starts");
}

#[tokio::test]
async fn breaker_seed_semantics_and_reset_all() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let backend = backend(&server, "breaker_basic", &clock).await;
    assert!(backend.breaker(0).is_err());
    let breaker = backend.breaker(3).unwrap();
    assert!(!breaker.record_failure_counted("a").await.unwrap().opened);
    breaker.record_failure("a").await.unwrap();
    assert!(!breaker.is_open("a").await.unwrap());
    let third = breaker.record_failure_counted("a").await.unwrap();
    assert_eq!((third.failures, third.opened), (3, true));
    assert!(breaker.is_open("a").await.unwrap());
    let fourth = breaker.record_failure_counted("a").await.unwrap();
    assert_eq!((fourth.failures, fourth.opened), (4, false));
    breaker.record_success("a").await.unwrap();
    assert!(!breaker.is_open("a").await.unwrap());
    assert_eq!(breaker.failures("a").await.unwrap(), 0);

    for name in ["x", "y", "z"] {
        for _ in 0..3 {
            breaker.record_failure(name).await.unwrap();
        }
        assert!(breaker.is_open(name).await.unwrap());
    }
    breaker.reset("x").await.unwrap();
    assert!(!breaker.is_open("x").await.unwrap());
    breaker.reset_all().await.unwrap();
    for name in ["x", "y", "z"] {
        assert!(!breaker.is_open(name).await.unwrap());
        assert_eq!(breaker.failures(name).await.unwrap(), 0);
    }
    // Counting starts afresh after reset_all, and the opening is reported again.
    for i in 1..=3 {
        let r = breaker.record_failure_counted("y").await.unwrap();
        assert_eq!((r.failures, r.opened), (i, i == 3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_concurrent_failures_exact_and_one_opening() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let breaker = backend(&server, "breaker_conc", &clock)
        .await
        .breaker(100)
        .unwrap();
    let results = futures_join_all((0..8).map(|_| {
        let breaker = breaker.clone();
        async move {
            let mut opened = 0;
            for _ in 0..50 {
                if breaker.record_failure_counted("hot").await.unwrap().opened {
                    opened += 1;
                }
            }
            opened
        }
    }))
    .await;
    assert_eq!(breaker.failures("hot").await.unwrap(), 400);
    assert_eq!(
        results.iter().sum::<i32>(),
        1,
        "exactly one opening reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_half_open_trial_is_exclusive_and_a_lost_holder_cannot_wedge() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let breaker = backend(&server, "breaker_trial", &clock)
        .await
        .breaker(1)
        .unwrap()
        .with_cool_down(Duration::from_secs(10))
        .with_trial_lease(Duration::from_secs(5));
    assert!(!breaker.try_acquire("n").await.unwrap().unwrap().is_trial());
    breaker.record_failure("n").await.unwrap();
    assert!(
        breaker.try_acquire("n").await.unwrap().is_none(),
        "open, cooling down"
    );
    clock.advance(Duration::from_secs(10));
    assert!(breaker.is_half_open("n").await.unwrap());
    let permits = futures_join_all((0..8).map(|_| {
        let breaker = breaker.clone();
        async move { breaker.try_acquire("n").await.unwrap() }
    }))
    .await;
    let mut trials: Vec<_> = permits.into_iter().flatten().collect();
    assert_eq!(trials.len(), 1, "exactly one trial");
    let lost = trials.pop().unwrap();
    assert!(lost.is_trial());
    // The holder vanishes; its lease ends and another caller takes over.
    clock.advance(Duration::from_secs(5));
    let second = breaker
        .try_acquire("n")
        .await
        .unwrap()
        .expect("the lease ended");
    assert!(
        !breaker.trial_success(&lost).await.unwrap(),
        "a stale trial's outcome is ignored"
    );
    assert!(breaker.is_open("n").await.unwrap());
    assert!(breaker.trial_failure(&second).await.unwrap());
    assert!(
        breaker.try_acquire("n").await.unwrap().is_none(),
        "re-opened, cooling down"
    );
    clock.advance(Duration::from_secs(10));
    let third = breaker.try_acquire("n").await.unwrap().unwrap();
    assert!(breaker.trial_success(&third).await.unwrap());
    assert!(!breaker.is_open("n").await.unwrap());
}

#[tokio::test]
async fn stream_slot_semantics() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let slots = backend(&server, "stream_basic", &clock)
        .await
        .stream_slots()
        .with_lease(Duration::from_secs(30));
    let empty = slots.slot("s").await.unwrap();
    assert_eq!((empty.version, empty.active), (0, None));

    let mut pending = Pending::new("hello");
    pending.attachments = vec!["a.png".into()];
    let first = slots.start("s", pending).await.unwrap();
    assert_eq!(first.version, 1);
    let slot = slots.slot("s").await.unwrap();
    let active = slot.active.unwrap();
    assert_eq!(
        (active.id.as_str(), active.pending_message.as_str()),
        (first.id.as_str(), "hello")
    );
    assert_eq!(active.attachments, vec!["a.png".to_string()]);
    assert_eq!(active.started_at, ManualClock::start());

    match slots.start("s", Pending::new("again")).await {
        Err(SlotError::Busy { active }) => assert_eq!(active, first.id),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(!slots.clear_stale("s").await.unwrap(), "live: kept");
    clock.advance(Duration::from_secs(20));
    assert!(slots.renew("s", &first.id).await.unwrap());
    clock.advance(Duration::from_secs(20));
    assert!(
        !slots.clear_stale("s").await.unwrap(),
        "renewed: still live"
    );
    clock.advance(Duration::from_secs(11));
    assert!(slots.clear_stale("s").await.unwrap(), "lease over: stale");
    assert_eq!(slots.slot("s").await.unwrap().version, 2);
    assert!(
        !slots.renew("s", &first.id).await.unwrap(),
        "the holder learns it lost the slot"
    );
    assert!(!slots.finish("s", &first.id).await.unwrap());

    // A stale stream is replaced by a start in one step.
    let second = slots
        .start_with_id("s", "two", Pending::new("2"))
        .await
        .unwrap();
    assert_eq!(second.version, 3);
    assert_eq!(
        slots
            .start_with_id("s", "two", Pending::new("2"))
            .await
            .unwrap(),
        second
    );
    clock.advance(Duration::from_secs(31));
    let third = slots.start("s", Pending::new("3")).await.unwrap();
    assert_eq!(third.version, 4);
    assert!(
        !slots.finish("s", "two").await.unwrap(),
        "finish never clears another stream"
    );
    assert!(slots.finish("s", &third.id).await.unwrap());
    assert_eq!(
        slots.slot("s").await.unwrap(),
        raceless::redis::RedisSlot {
            version: 5,
            active: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_concurrent_starts_and_cleanups_never_clobber() {
    let server = server_or_skip!();
    let clock = ManualClock::new();
    let slots = backend(&server, "stream_conc", &clock)
        .await
        .stream_slots()
        .with_lease(Duration::from_secs(30));
    for round in 0..20 {
        let session = format!("s{round}");
        // A stale stream to clean up.
        slots.start(&session, Pending::new("old")).await.unwrap();
        clock.advance(Duration::from_secs(31));
        let results = futures_join_all((0..6).map(|i| {
            let slots = slots.clone();
            let session = session.clone();
            async move {
                if i % 2 == 0 {
                    slots
                        .start(&session, Pending::new(format!("new{i}")))
                        .await
                        .ok()
                        .map(|s| s.id)
                } else {
                    slots.clear_stale(&session).await.unwrap();
                    None
                }
            }
        }))
        .await;
        let winners: Vec<String> = results.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "exactly one start wins");
        let slot = slots.slot(&session).await.unwrap();
        assert_eq!(
            slot.active.map(|a| a.id),
            Some(winners[0].clone()),
            "the winner was not clobbered"
        );
    }
}

#[tokio::test]
async fn over_a_unix_socket() {
    let Some(server) = Server::start_unix() else {
        return;
    };
    let clock = ManualClock::new();
    let backend = backend(&server, "unix", &clock).await;
    let arcs = backend.arcs::<Kind>();
    assert!(arcs.start("a", "b", rivalry()).await.unwrap().is_started());
    assert!(!arcs.start("b", "a", rivalry()).await.unwrap().is_started());
    let breaker = backend.breaker(1).unwrap();
    assert!(breaker.record_failure_counted("n").await.unwrap().opened);
}
