//! Faults against a real `redis-server`: the server paused with SIGSTOP
//! (every call returns an error within the response timeout, then succeeds
//! after SIGCONT), killed and restarted (the backend reconnects by itself;
//! without persistence the data is gone), and a TCP proxy on 127.0.0.1 that
//! stalls mid-reply (an outcome-unknown error, after which the retry by
//! token is safe; the history with the never-returned call is checked for
//! linearizability with it pending).
#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use raceless::arcs::{ArcError, ArcKind, Start};
use raceless::backend::BackendErrorKind;
use raceless::redis::{ArcToken, RedisBackend, RedisOptions};
use raceless::BackendError;
use raceless_harness::linearizability::{check_history, History, Operation, PendingOperation};
use redis_support::{namespace, ArcModel, ArcOp, ArcRet, Proxy, Server};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_millis(400);
/// An error must come within the timeout plus this much scheduling slack.
const SLACK: Duration = Duration::from_millis(1500);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Kind {
    name: String,
}

impl ArcKind for Kind {
    fn expected_duration(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

fn kind(name: &str) -> Kind {
    Kind { name: name.into() }
}

async fn backend(url: &str, test: &str) -> RedisBackend {
    RedisBackend::connect_with(
        url,
        &namespace(test),
        RedisOptions::new().response_timeout(TIMEOUT),
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

fn backend_error(e: ArcError) -> BackendError {
    match e {
        ArcError::Backend(b) => b,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// Retries `f` until it succeeds: at most 100 tries, 100 ms apart.
async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    mut f: impl FnMut() -> F,
) -> T {
    let mut last = None;
    for _ in 0..100 {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("did not recover: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_gives_bounded_errors_then_recovers() {
    let server = server_or_skip!();
    let backend = backend(&server.url(), "pause").await;
    let arcs = backend.arcs::<Kind>();
    let breaker = backend.breaker(3).unwrap();
    arcs.start("a", "b", kind("before")).await.unwrap();

    server.pause();
    let token = ArcToken::new();
    let t = Instant::now();
    let e = backend_error(
        arcs.start_with_token("c", "d", kind("paused"), &token)
            .await
            .unwrap_err(),
    );
    assert!(t.elapsed() < TIMEOUT + SLACK, "bounded: {:?}", t.elapsed());
    assert!(e.outcome_unknown(), "{e}");
    assert!(e.is_retry_safe(), "a start by token may be repeated");
    for _ in 0..3 {
        let t = Instant::now();
        let e = breaker.record_failure("n").await.unwrap_err();
        assert!(t.elapsed() < TIMEOUT + SLACK, "bounded: {:?}", t.elapsed());
        assert!(!e.is_retry_safe(), "a failure count is not idempotent");
        let t = Instant::now();
        backend.ping().await.unwrap_err();
        assert!(t.elapsed() < TIMEOUT + SLACK, "bounded: {:?}", t.elapsed());
    }
    server.resume();

    eventually(|| backend.ping()).await;
    // The retry by token is safe whether or not the paused call took effect
    // after SIGCONT (its request was in the server's socket buffer).
    let again = arcs
        .start_with_token("c", "d", kind("paused"), &token)
        .await
        .unwrap();
    assert!(again.is_started());
    assert!(matches!(
        arcs.start("c", "d", kind("other")).await.unwrap(),
        Start::AlreadyActive(s) if s.kind.name == "paused"
    ));
    // The failures sent while paused may have been counted late: 0 to 3.
    assert!(breaker.failures("n").await.unwrap() <= 3);
    assert!(
        arcs.status("a", "b").await.unwrap().is_some(),
        "data kept across a pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_server_reconnects_and_has_lost_its_data() {
    let mut server = server_or_skip!();
    let backend = backend(&server.url(), "restart").await;
    let arcs = backend.arcs::<Kind>();
    arcs.start("a", "b", kind("before")).await.unwrap();

    server.kill();
    for _ in 0..3 {
        let t = Instant::now();
        let e = backend_error(arcs.status("a", "b").await.unwrap_err());
        assert!(t.elapsed() < TIMEOUT + SLACK, "bounded: {:?}", t.elapsed());
        assert!(e.is_retry_safe(), "{e}");
    }
    server.restart();

    // The backend reconnects by itself; the restarted server (no
    // persistence) has none of the old data.
    let status = eventually(|| arcs.status("a", "b")).await;
    assert_eq!(
        status, None,
        "a restart without persistence loses every arc"
    );
    assert!(arcs
        .start("a", "b", kind("after"))
        .await
        .unwrap()
        .is_started());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_stalled_in_the_network_is_outcome_unknown_and_retry_is_safe() {
    let server = server_or_skip!();
    let proxy = Proxy::start(server.port());
    let backend = backend(&proxy.url(), "stall").await;
    let observer = self::backend(&server.url(), "stall").await.arcs::<Kind>();
    let arcs = backend.arcs::<Kind>();
    arcs.start("warm", "up", kind("w")).await.unwrap();

    let clock = Instant::now();
    let at = |i: Instant| i.duration_since(clock).as_nanos() as u64;
    let mut ops: Vec<Operation<ArcModel>> = Vec::new();
    let mut pending: Vec<PendingOperation<ArcModel>> = Vec::new();

    proxy.set_stall(true);
    let token = ArcToken::new();
    let invoke = at(Instant::now());
    let e = backend_error(
        arcs.start_with_token("x", "y", kind("stalled"), &token)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind(), BackendErrorKind::Timeout, "{e}");
    assert!(e.outcome_unknown() && e.is_retry_safe());
    // The request reached the server: the arc exists although the caller
    // got an error.
    pending.push(PendingOperation {
        thread: 0,
        op: ArcOp::Start("stalled".into()),
        invoke,
    });
    let i = at(Instant::now());
    let seen = observer
        .status("x", "y")
        .await
        .unwrap()
        .map(|s| s.kind.name);
    ops.push(Operation {
        thread: 1,
        op: ArcOp::Status,
        ret: ArcRet::Status(seen.clone()),
        invoke: i,
        returned: at(Instant::now()),
    });
    assert_eq!(seen.as_deref(), Some("stalled"));
    let i = at(Instant::now());
    let other = observer.start("x", "y", kind("rival")).await.unwrap();
    ops.push(Operation {
        thread: 1,
        op: ArcOp::Start("rival".into()),
        ret: ArcRet::AlreadyActive(other.into_inner().kind.name),
        invoke: i,
        returned: at(Instant::now()),
    });
    proxy.set_stall(false);

    // The retry with the same token finds its own arc: Started, once.
    let again = eventually(|| arcs.start_with_token("x", "y", kind("stalled"), &token)).await;
    assert!(again.is_started());
    assert_eq!(arcs.len().await.unwrap(), 2);

    let history = History::with_pending(ops, pending);
    check_history(ArcModel::default(), &history).unwrap_or_else(|e| panic!("{e}"));
    // Without the pending start, the observer's reads are inexplicable:
    // the check can fail.
    let without = History::new(history.operations().to_vec());
    assert!(check_history(ArcModel::default(), &without).is_err());
}
