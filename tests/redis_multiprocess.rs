//! Several OS processes (this test binary re-run as workers) racing on the
//! same arcs pairs, breaker names and stream sessions of one real
//! `redis-server`: exactly one `Started` per pair, exact failure totals
//! with one opening per name, and histories of arcs and stream slots that
//! the linearizability checker explains with the sequential models below
//! (checked per pair / per session: linearizability is local).
#![cfg(feature = "redis")]

mod redis_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raceless::arcs::{ArcError, ArcKind, EndReason, Start};
use raceless::redis::{RedisBackend, SlotError};
use raceless::stream::Pending;
use raceless_harness::linearizability::{check_history, History, Operation};
use raceless_harness::model::SequentialSpec;
use redis_support::{namespace, run_workers, worker_index, ArcModel, ArcOp, ArcRet, Server};
use serde::{Deserialize, Serialize};

const WORKERS: usize = 4;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Kind {
    name: String,
}

impl ArcKind for Kind {
    fn expected_duration(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// A tiny seeded generator for the workers' operations.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn gen_range(&mut self, r: std::ops::Range<usize>) -> usize {
        r.start + (self.next() % (r.end - r.start) as u64) as usize
    }
    fn gen_bool(&mut self, _p: f64) -> bool {
        self.next() % 2 == 0
    }
}

/// Wall-clock nanoseconds: one clock for every process of this machine.
fn stamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---- sequential models ------------------------------------------------

/// One session's slot: version, and the stream with whether it is live
/// (started with a long lease) or stale (started with a zero lease).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct SlotModel {
    version: u64,
    stream: Option<(String, bool)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum SlotOp {
    /// Start stream `id`, live or already stale.
    Start(String, bool),
    ClearStale,
    Finish(String),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum SlotRet {
    Started(u64),
    Busy(String),
    Done(bool),
    Read(u64, Option<String>),
}

impl SequentialSpec for SlotModel {
    type Op = SlotOp;
    type Ret = SlotRet;
    fn apply(&mut self, op: &SlotOp) -> SlotRet {
        match op {
            SlotOp::Start(id, live) => match &self.stream {
                Some((cur, true)) => SlotRet::Busy(cur.clone()),
                _ => {
                    self.version += 1;
                    self.stream = Some((id.clone(), *live));
                    SlotRet::Started(self.version)
                }
            },
            SlotOp::ClearStale => match &self.stream {
                Some((_, false)) => {
                    self.version += 1;
                    self.stream = None;
                    SlotRet::Done(true)
                }
                _ => SlotRet::Done(false),
            },
            SlotOp::Finish(id) => match &self.stream {
                Some((cur, _)) if cur == id => {
                    self.version += 1;
                    self.stream = None;
                    SlotRet::Done(true)
                }
                _ => SlotRet::Done(false),
            },
            SlotOp::Read => SlotRet::Read(self.version, self.stream.as_ref().map(|s| s.0.clone())),
        }
    }
}

/// One recorded operation of a worker, on one key.
#[derive(Debug, Serialize, Deserialize)]
struct Record<O, R> {
    key: usize,
    op: O,
    ret: R,
    invoke: u64,
    returned: u64,
}

fn histories<S>(workers: Vec<Vec<String>>) -> BTreeMap<usize, History<S>>
where
    S: SequentialSpec,
    S::Op: for<'de> Deserialize<'de>,
    S::Ret: for<'de> Deserialize<'de>,
{
    let mut by_key: BTreeMap<usize, Vec<Operation<S>>> = BTreeMap::new();
    for (thread, lines) in workers.into_iter().enumerate() {
        for line in lines {
            let r: Record<S::Op, S::Ret> = serde_json::from_str(&line).expect("record");
            by_key.entry(r.key).or_default().push(Operation {
                thread,
                op: r.op,
                ret: r.ret,
                invoke: r.invoke,
                returned: r.returned,
            });
        }
    }
    by_key
        .into_iter()
        .map(|(k, ops)| (k, History::new(ops)))
        .collect()
}

// ---- the worker --------------------------------------------------------

/// Run as a worker process by the tests below (ignored in a normal run).
#[tokio::test]
#[ignore = "a worker process of the multi-process tests"]
async fn worker() {
    let Some(w) = worker_index() else { return };
    let url = std::env::var("RACELESS_REDIS_URL").expect("url");
    let ns = std::env::var("RACELESS_REDIS_NS").expect("namespace");
    let role = std::env::var("RACELESS_REDIS_ROLE").expect("role");
    let backend = RedisBackend::connect(&url, &ns).await.expect("connect");
    match role.as_str() {
        "arcs_starts" => {
            let arcs = backend.arcs::<Kind>();
            for k in 0..50 {
                let pair = (k + w * 13) % 50;
                let kind = Kind {
                    name: format!("w{w}"),
                };
                if arcs
                    .start(&format!("a{pair}"), "hub", kind)
                    .await
                    .unwrap()
                    .is_started()
                {
                    println!("OUT {pair}");
                }
            }
        }
        "breaker" => {
            let breaker = backend.breaker(150).unwrap();
            for _ in 0..100 {
                for name in 0..5 {
                    let r = breaker
                        .record_failure_counted(&format!("n{name}"))
                        .await
                        .unwrap();
                    if r.opened {
                        println!("OUT opened n{name}");
                    }
                }
            }
        }
        "arcs_history" => {
            let arcs = backend.arcs::<Kind>();
            let mut rng = Xorshift::new(w as u64);
            for i in 0..40 {
                let key = rng.gen_range(0..3);
                let (a, b) = (format!("x{key}"), format!("y{key}"));
                let op = match rng.gen_range(0..3) {
                    0 => ArcOp::Start(format!("w{w}-{i}")),
                    1 => ArcOp::End,
                    _ => ArcOp::Status,
                };
                let invoke = stamp();
                let ret = match &op {
                    ArcOp::Start(name) => {
                        match arcs
                            .start(&a, &b, Kind { name: name.clone() })
                            .await
                            .unwrap()
                        {
                            Start::Started(s) => ArcRet::Started(s.kind.name),
                            Start::AlreadyActive(s) => ArcRet::AlreadyActive(s.kind.name),
                        }
                    }
                    ArcOp::End => match arcs.end(&a, &b, EndReason::Manual).await {
                        Ok(s) => ArcRet::Ended(s.kind.name),
                        Err(ArcError::NotFound) => ArcRet::NotFound,
                        Err(e) => panic!("{e}"),
                    },
                    ArcOp::Status => {
                        ArcRet::Status(arcs.status(&a, &b).await.unwrap().map(|s| s.kind.name))
                    }
                };
                let returned = stamp();
                let r = Record {
                    key,
                    op,
                    ret,
                    invoke,
                    returned,
                };
                println!("OUT {}", serde_json::to_string(&r).unwrap());
            }
        }
        "stream_history" => {
            let live = backend.stream_slots();
            let stale = backend.stream_slots().with_lease(Duration::ZERO);
            let mut rng = Xorshift::new(100 + w as u64);
            let mut mine: Vec<(usize, String)> = Vec::new();
            for i in 0..40 {
                let key = rng.gen_range(0..2);
                let session = format!("s{key}");
                let op = match rng.gen_range(0..5) {
                    0 | 1 => SlotOp::Start(format!("w{w}-{i}"), rng.gen_bool(0.5)),
                    2 => SlotOp::ClearStale,
                    3 => match mine.iter().rposition(|(k, _)| *k == key) {
                        Some(p) => SlotOp::Finish(mine.remove(p).1),
                        None => SlotOp::Read,
                    },
                    _ => SlotOp::Read,
                };
                let invoke = stamp();
                let ret = match &op {
                    SlotOp::Start(id, is_live) => {
                        let slots = if *is_live { &live } else { &stale };
                        match slots.start_with_id(&session, id, Pending::new("m")).await {
                            Ok(s) => {
                                mine.push((key, id.clone()));
                                SlotRet::Started(s.version)
                            }
                            Err(SlotError::Busy { active }) => SlotRet::Busy(active),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    SlotOp::ClearStale => SlotRet::Done(live.clear_stale(&session).await.unwrap()),
                    SlotOp::Finish(id) => SlotRet::Done(live.finish(&session, id).await.unwrap()),
                    SlotOp::Read => {
                        let slot = live.slot(&session).await.unwrap();
                        SlotRet::Read(slot.version, slot.active.map(|a| a.id))
                    }
                };
                let returned = stamp();
                let r = Record {
                    key,
                    op,
                    ret,
                    invoke,
                    returned,
                };
                println!("OUT {}", serde_json::to_string(&r).unwrap());
            }
        }
        "racy_counter" => {
            // The seed's read-then-write count, as two commands.
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let key = format!("{ns}:racy");
            for _ in 0..300 {
                let n: Option<u64> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(n.unwrap_or(0) + 1)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn env(server: &Server, test: &str, role: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RACELESS_REDIS_URL", server.url()),
        ("RACELESS_REDIS_NS", namespace(test)),
        ("RACELESS_REDIS_ROLE", role.to_string()),
    ]
}

macro_rules! server_or_skip {
    () => {
        match Server::start() {
            Some(s) => s,
            None => return,
        }
    };
}

#[test]
fn processes_start_each_pair_exactly_once() {
    let server = server_or_skip!();
    let out = run_workers("worker", WORKERS, &env(&server, "mp_starts", "arcs_starts"));
    let mut started: HashMap<String, usize> = HashMap::new();
    for line in out.into_iter().flatten() {
        *started.entry(line).or_default() += 1;
    }
    assert_eq!(started.len(), 50, "every pair started");
    assert!(
        started.values().all(|n| *n == 1),
        "one Started per pair: {started:?}"
    );
}

#[tokio::test]
async fn processes_lose_no_failure_and_report_each_opening_once() {
    let server = server_or_skip!();
    let out = run_workers("worker", WORKERS, &env(&server, "mp_breaker", "breaker"));
    let backend = RedisBackend::connect(&server.url(), &namespace("mp_breaker"))
        .await
        .unwrap();
    let breaker = backend.breaker(150).unwrap();
    for name in 0..5 {
        let name = format!("n{name}");
        assert_eq!(breaker.failures(&name).await.unwrap(), 400, "{name}");
        assert!(breaker.is_open(&name).await.unwrap());
    }
    let mut opened: Vec<String> = out.into_iter().flatten().collect();
    opened.sort();
    assert_eq!(
        opened,
        (0..5).map(|n| format!("opened n{n}")).collect::<Vec<_>>()
    );
}

#[test]
fn processes_arcs_histories_are_linearizable() {
    let server = server_or_skip!();
    let out = run_workers(
        "worker",
        WORKERS,
        &env(&server, "mp_arcs_lin", "arcs_history"),
    );
    let hs = histories::<ArcModel>(out);
    let mut started = 0;
    for (key, h) in &hs {
        if let Err(e) = check_history(ArcModel::default(), h) {
            panic!("pair {key}: {e}");
        }
        started += h
            .operations()
            .iter()
            .filter(|o| matches!(o.ret, ArcRet::Started(_)))
            .count();
    }
    assert!(started > 0, "the histories include starts");
}

#[test]
fn processes_stream_histories_are_linearizable_and_never_clobbered() {
    let server = server_or_skip!();
    let out = run_workers(
        "worker",
        WORKERS,
        &env(&server, "mp_stream_lin", "stream_history"),
    );
    let hs = histories::<SlotModel>(out);
    for (key, h) in &hs {
        if let Err(e) = check_history(SlotModel::default(), h) {
            panic!("session {key}: {e}");
        }
        // No clobber: every live stream its worker later finished was still
        // in the slot (a Finish of a live stream never returns false).
        for o in h.operations() {
            if let SlotOp::Finish(id) = &o.op {
                let was_live = h.operations().iter().any(|s| {
                    matches!(&s.op, SlotOp::Start(sid, true) if sid == id)
                        && matches!(s.ret, SlotRet::Started(_))
                });
                if was_live {
                    assert_eq!(o.ret, SlotRet::Done(true), "live stream {id} was clobbered");
                }
            }
        }
    }
}

/// The exact-total check above can fail: a read-then-write counter (GET,
/// then SET) run by the same processes loses increments.
#[tokio::test]
async fn processes_running_a_read_then_write_counter_lose_increments() {
    let server = server_or_skip!();
    run_workers("worker", WORKERS, &env(&server, "mp_racy", "racy_counter"));
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let n: u64 = redis::cmd("GET")
        .arg(format!("{}:racy", namespace("mp_racy")))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(n < 4 * 300, "the racy counter lost nothing ({n})");
    eprintln!(
        "read-then-write counter: {n} of {} increments kept",
        4 * 300
    );
}
