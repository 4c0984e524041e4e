//! The `gateway` example end to end: the real binary on 127.0.0.1, driven
//! with a real HTTP client. Needs the `tower` feature:
//!
//! ```sh
//! cargo test --features tower --test gateway
//! ```
//!
//! The test first runs `cargo build --features tower --example gateway`
//! (a no-op when the example is up to date). Each test starts its own
//! gateway on a free port, reads `listening on ADDR` from its stdout, and
//! kills it by PID when done. Every wait is a loop bounded in count and
//! time; cool-downs run on real time (this tests the example, not the
//! breaker's timing, which the unit tests drive with a `ManualClock`).
#![cfg(feature = "tower")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The example binary, next to this test's `deps/` directory, built (or
/// brought up to date) once per test run.
fn example_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps/<test>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--features", "tower", "--example", "gateway"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the gateway example failed");
        let bin = profile_dir
            .join("examples")
            .join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "no gateway example at {}", bin.display());
        bin
    })
    .clone()
}

/// A running gateway, killed (by its PID) when dropped.
struct Gateway {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    fn start(threshold: u32, cool_down_ms: u64) -> Self {
        let mut child = Command::new(example_binary())
            .args(["--addr", "127.0.0.1:0"])
            .args(["--threshold", &threshold.to_string()])
            .args(["--cool-down-ms", &cool_down_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway example");
        // Its first line, read on a thread so a silent child cannot hang us.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway did not report its address within 30 s");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Gateway {
            child,
            base: format!("http://{addr}"),
            http,
        }
    }

    async fn set_upstream_failing(&self, fail: bool) {
        let r = self
            .http
            .post(format!("{}/upstream/mode", self.base))
            .json(&serde_json::json!({ "fail": fail }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    async fn api(&self) -> reqwest::Response {
        self.http
            .get(format!("{}/api", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> Value {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Retry-After` in seconds and the body's `retry_after_ms` of a 503.
async fn rejection(r: reqwest::Response) -> (u64, u64) {
    assert_eq!(r.status(), 503);
    let secs: u64 = r
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "circuit open");
    (secs, body["retry_after_ms"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_open_it_retry_after_shrinks_and_a_trial_closes_it() {
    const COOL_DOWN_MS: u64 = 400;
    let gw = Gateway::start(3, COOL_DOWN_MS);
    assert_eq!(gw.api().await.status(), 200);

    gw.set_upstream_failing(true).await;
    for _ in 0..3 {
        assert_eq!(gw.api().await.status(), 500); // the upstream's own answer
    }
    let m = gw.metrics().await;
    assert_eq!(m["state"], "open", "{m}");
    assert_eq!(m["times_opened"], 1, "{m}");

    // Rejected without calling the upstream; the wait shrinks.
    let (secs_1, ms_1) = rejection(gw.api().await).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (secs_2, ms_2) = rejection(gw.api().await).await;
    assert!(ms_1 <= COOL_DOWN_MS && ms_2 < ms_1, "{ms_1} then {ms_2}");
    // Whole seconds, rounded up.
    assert_eq!((secs_1, secs_2), (1, 1));
    let m = gw.metrics().await;
    assert_eq!(m["rejected_calls"], 2, "{m}");
    assert_eq!(m["total_failures"], 3, "{m}");

    // The upstream recovers; after the cool-down a trial goes through and
    // closes the name. Until then every request is a rejection.
    gw.set_upstream_failing(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rejected = 0;
    loop {
        let r = gw.api().await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        rejected += 1;
        assert!(Instant::now() < deadline, "no trial after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = gw.metrics().await;
    assert_eq!(m["state"], "closed", "{m}");
    assert_eq!(m["consecutive_failures"], 0, "{m}");
    assert_eq!(m["rejected_calls"], 2 + rejected, "{m}");
    assert_eq!(m["total_successes"], 2, "{m}");
    assert_eq!(gw.api().await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_are_not_failures() {
    // One counted failure would open it.
    let gw = Gateway::start(1, 60_000);
    // The upstream answers 500 — after 800 ms, by which time each client
    // below has given up.
    gw.set_upstream_failing(true).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = impatient
            .get(format!("{}/api?delay_ms=800", gw.base))
            .send()
            .await;
        assert!(r.unwrap_err().is_timeout());
    }
    // Past the moment the upstream would have answered: nothing counted.
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        let m = gw.metrics().await;
        assert_eq!(m["state"], "closed", "{m}");
        assert_eq!(m["total_failures"], 0, "{m}");
        assert_eq!(m["total_successes"], 0, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same request by a client that waits is a failure, and opens it:
    // what the disconnected ones would have counted had they not been
    // released.
    let r = gw
        .http
        .get(format!("{}/api?delay_ms=800", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let m = gw.metrics().await;
    assert_eq!(m["state"], "open", "{m}");
    assert_eq!(m["total_failures"], 1, "{m}");
}
