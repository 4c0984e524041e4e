//! `--redis URL`: a `redis` implementation beside the in-process ones, so a
//! user sees what crossing the process boundary costs.
//!
//! Three workloads get a `redis` cell per thread count (here: concurrent
//! tokio tasks sharing one `RedisBackend`, i.e. one multiplexed
//! connection), running the same operation mix as the in-process rows:
//!
//! - `arcs/cycle-1000-pairs`: start, progress, progress, end over 1,000
//!   pairs (`RedisArcs`);
//! - `breaker/mixed-16-names`: 90% `is_open`, 9% `record_failure`, 1%
//!   `record_success` on 16 names (`RedisBreaker`);
//! - `stream/cycles-1000-sessions`: 7 of 8 ops `clear_stale`, 1 in 8 a
//!   start (or the finish of the live stream) over 1,000 sessions
//!   (`RedisStreamSlots`).
//!
//! Keys go to the namespace `raceless-compare-<pid>` of the given server
//! (a few thousand small keys, left in place; use a scratch server or
//! database). Needs the harness's `redis` feature:
//! `cargo run --release --example compare --features raceless-harness/redis -- --redis redis://127.0.0.1:6379/`.

use super::cli::Options;
use super::results::Results;

/// The workloads that get a `redis` row, by component and name.
pub const WORKLOADS: [(&str, &str); 3] = [
    ("arcs", "cycle-1000-pairs"),
    ("breaker", "mixed-16-names"),
    ("stream", "cycles-1000-sessions"),
];

/// The implementation name of the rows.
pub const IMPL: &str = "redis";

/// Measures the `redis` cells of [`WORKLOADS`] (those whose component ran)
/// against the server at `url` and adds them to `results`.
#[cfg(not(feature = "redis"))]
pub fn add_rows(_results: &mut Results, _url: &str, _options: &Options) -> Result<(), String> {
    Err("--redis needs the harness built with its `redis` feature: \
         cargo run --release --example compare --features raceless-harness/redis -- --redis URL"
        .to_string())
}

/// Measures the `redis` cells of [`WORKLOADS`] (those whose component ran)
/// against the server at `url` and adds them to `results`.
#[cfg(feature = "redis")]
pub fn add_rows(results: &mut Results, url: &str, options: &Options) -> Result<(), String> {
    imp::add_rows(results, url, options)
}

#[cfg(feature = "redis")]
mod imp {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use raceless::arcs::{ArcError, ArcKind, ArcPhase, EndReason};
    use raceless::backend::{BackendError, BackendErrorKind};
    use raceless::redis::{RedisBackend, SlotError};
    use raceless::stream::Pending;

    use super::super::cli::Options;
    use super::super::results::{Cell, Results};
    use super::{IMPL, WORKLOADS};

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Kind;

    impl ArcKind for Kind {
        fn expected_duration(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    /// One task's operation `i` of workload `name`; a backend error (a
    /// `NotFound` or `Busy` is an answer, not an error).
    async fn op(
        backend: &Backends,
        name: &str,
        task: usize,
        tasks: usize,
        i: u64,
    ) -> Result<(), BackendError> {
        match name {
            "cycle-1000-pairs" => {
                let round = i / 4;
                let pair = (round as usize * tasks + task) % 1000;
                let (a, b) = (format!("{}", 2 * pair), format!("{}", 2 * pair + 1));
                let arcs = &backend.arcs;
                let r = match i % 4 {
                    0 => arcs.start(&a, &b, Kind).await.map(|_| ()),
                    1 => arcs
                        .progress(&b, &a, ArcPhase::Escalation)
                        .await
                        .map(|_| ()),
                    2 => arcs.progress(&a, &b, ArcPhase::Climax).await.map(|_| ()),
                    _ => arcs.end(&a, &b, EndReason::Manual).await.map(|_| ()),
                };
                match r {
                    Err(ArcError::Backend(e)) => Err(e),
                    _ => Ok(()),
                }
            }
            "mixed-16-names" => {
                let k = (task * 997 + i as usize) % 100;
                let name = &backend.names[(task * 7 + i as usize) % 16];
                let breaker = &backend.breaker;
                match k {
                    0..=89 => breaker.is_open(name).await.map(|_| ()),
                    90..=98 => breaker.record_failure(name).await,
                    _ => breaker.record_success(name).await,
                }
            }
            _ => {
                let n = backend.sessions.len();
                let start = task * n / tasks.max(1);
                let slots = &backend.slots;
                // One op in 8 (as `i % 8 == 0`) starts or finishes.
                if i & 7 == 0 {
                    let s = &backend.sessions[(start + n / 2 + (i / 8) as usize) % n];
                    match slots.start(s, Pending::default()).await {
                        Ok(_) => Ok(()),
                        Err(SlotError::Busy { active }) => {
                            slots.finish(s, &active).await.map(|_| ())
                        }
                        Err(SlotError::Backend(e)) => Err(e),
                        Err(e) => Err(BackendError::new(
                            BackendErrorKind::Protocol,
                            "stream.start",
                            false,
                            e.to_string(),
                        )),
                    }
                } else {
                    let s = &backend.sessions[(start + i as usize) % n];
                    slots.clear_stale(s).await.map(|_| ())
                }
            }
        }
    }

    struct Backends {
        arcs: raceless::redis::RedisArcs<Kind>,
        breaker: raceless::redis::RedisBreaker,
        slots: raceless::redis::RedisStreamSlots,
        names: Vec<String>,
        sessions: Vec<String>,
    }

    /// `tasks` tasks run `run` until `duration` has passed; ops/s, or the
    /// first backend error (which ends the phase).
    async fn phase<F, Fut>(tasks: usize, duration: Duration, run: F) -> Result<f64, String>
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BackendError>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (run, stop, total) = (run.clone(), stop.clone(), total.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    // Relaxed: a stop flag, and a count read after the join.
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = run(t, i).await {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e.to_string());
                        }
                        i += 1;
                    }
                    total.fetch_add(i, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for h in handles {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(e.to_string()),
            }
        }
        result.map(|()| total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    }

    pub(super) fn add_rows(
        results: &mut Results,
        url: &str,
        options: &Options,
    ) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let duration = options.duration.unwrap_or(if options.quick {
            Duration::from_millis(150)
        } else {
            Duration::from_millis(500)
        });
        let namespace = format!("raceless-compare-{}", std::process::id());
        let backend = runtime
            .block_on(RedisBackend::connect(url, &namespace))
            .map_err(|e| format!("--redis {url}: {e}"))?;
        let backends = Arc::new(Backends {
            arcs: backend.arcs(),
            breaker: backend.breaker(3).map_err(|e| e.to_string())?,
            slots: backend.stream_slots(),
            names: (0..16).map(|i| format!("strategy-{i:02}")).collect(),
            sessions: (0..1000).map(|i| format!("session-{i}")).collect(),
        });
        for component in &mut results.components {
            for wl in &mut component.workloads {
                if !WORKLOADS.contains(&(component.name.as_str(), wl.name.as_str())) {
                    continue;
                }
                eprintln!("redis: {}/{}", component.name, wl.name);
                wl.impls.push(IMPL.to_string());
                for &tasks in &options.threads {
                    let name: &'static str = WORKLOADS
                        .iter()
                        .find(|(_, w)| *w == wl.name)
                        .map_or("", |(_, w)| w);
                    let b = backends.clone();
                    let run = move |t: usize, i: u64| {
                        let b = b.clone();
                        async move { op(&b, name, t, tasks, i).await }
                    };
                    let samples = runtime.block_on(async {
                        phase(tasks, duration / 4, run.clone()).await?; // warm-up
                        let mut samples = Vec::new();
                        for _ in 0..options.repeats {
                            samples.push(phase(tasks, duration, run.clone()).await?);
                        }
                        Ok::<_, String>(samples)
                    });
                    wl.cells.push(match samples {
                        Ok(samples) => Cell::from_samples(IMPL, tasks, samples),
                        Err(message) => Cell {
                            error: Some(message),
                            ..Cell::from_samples(IMPL, tasks, Vec::new())
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::compare::{components, Options};

    #[test]
    fn the_option_is_parsed() {
        let options = Options::parse_from(
            &components(),
            ["compare", "--redis", "redis://127.0.0.1:1/"],
        )
        .unwrap();
        assert_eq!(options.redis.as_deref(), Some("redis://127.0.0.1:1/"));
        assert_eq!(Options::defaults(&components()).redis, None);
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn without_the_feature_it_says_how_to_enable_it() {
        use super::add_rows;
        let options = Options::defaults(&components());
        let mut results = crate::compare::runner::run(&[], &options);
        let e = add_rows(&mut results, "redis://127.0.0.1:1/", &options).unwrap_err();
        assert!(e.contains("raceless-harness/redis"), "{e}");
    }
}
