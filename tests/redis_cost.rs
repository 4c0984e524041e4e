//! The cost of each `raceless::redis` operation over loopback, for
//! docs/distributed.md: ops/s of one operation kind at 1 and 8 concurrent
//! tasks sharing one backend (one multiplexed connection). Ignored in the
//! test run (it measures, it asserts nothing); run it with
//! `cargo test --release --features redis --test redis_cost -- --ignored --nocapture`.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raceless::arcs::{ArcKind, EndReason};
use raceless::redis::RedisBackend;
use raceless::stream::Pending;
use redis_support::{namespace, Server};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Kind;

impl ArcKind for Kind {
    fn expected_duration(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

const RUN: Duration = Duration::from_millis(700);

async fn measure<F, Fut>(label: &str, tasks: usize, op: F)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while start.elapsed() < RUN {
                    op(t, i).await;
                    i += 1;
                }
                // Relaxed: read after the join.
                done.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed) as f64;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {label} | {tasks} | {:.0} | {:.1} |",
        n / secs,
        secs * 1e6 * tasks as f64 / n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/distributed.md"]
async fn cost_per_operation() {
    let Some(server) = Server::start() else {
        return;
    };
    let backend = RedisBackend::connect(&server.url(), &namespace("cost"))
        .await
        .unwrap();
    println!("| operation | tasks | ops/s | µs per op per task |\n|---|---|---|---|");
    for tasks in [1, 8] {
        let b = backend.clone();
        measure("PING (round trip floor)", tasks, move |_, _| {
            let b = b.clone();
            async move { b.ping().await.unwrap() }
        })
        .await;
        let arcs = backend.arcs::<Kind>();
        measure("arcs start + end (2 scripts)", tasks, move |t, i| {
            let arcs = arcs.clone();
            async move {
                let (a, b) = (format!("a{t}-{}", i % 1000), "b".to_string());
                arcs.start(&a, &b, Kind).await.unwrap();
                arcs.end(&a, &b, EndReason::Manual).await.unwrap();
            }
        })
        .await;
        let arcs = backend.arcs::<Kind>();
        measure("arcs status (HMGET)", tasks, move |t, _| {
            let arcs = arcs.clone();
            async move {
                arcs.status(&format!("s{t}"), "x").await.unwrap();
            }
        })
        .await;
        let breaker = backend.breaker(u32::MAX).unwrap();
        measure("breaker record_failure (script)", tasks, move |t, _| {
            let breaker = breaker.clone();
            async move { breaker.record_failure(&format!("n{t}")).await.unwrap() }
        })
        .await;
        let breaker = backend.breaker(u32::MAX).unwrap();
        measure("breaker is_open (script)", tasks, move |t, _| {
            let breaker = breaker.clone();
            async move {
                breaker.is_open(&format!("n{t}")).await.unwrap();
            }
        })
        .await;
        let slots = backend.stream_slots();
        measure("stream start + finish (2 scripts)", tasks, move |t, _| {
            let slots = slots.clone();
            async move {
                let s = format!("sess{t}");
                let started = slots.start(&s, Pending::new("m")).await.unwrap();
                slots.finish(&s, &started.id).await.unwrap();
            }
        })
        .await;
    }
}
