//! An HTTP gateway that guards a flaky upstream with [`BreakerLayer`].
//!
//! ```sh
//! cargo run --features tower --example gateway -- --addr 127.0.0.1:8080 \
//!     --threshold 3 --cool-down-ms 5000
//! curl -X POST localhost:8080/upstream/mode -H 'content-type: application/json' -d '{"fail":true}'
//! curl -i localhost:8080/api          # 500 three times, then 503 + Retry-After
//! curl localhost:8080/metrics         # {"state":"open",...}
//! curl -X POST localhost:8080/upstream/mode -H 'content-type: application/json' -d '{"fail":false}'
//! curl -i localhost:8080/api          # after the cool-down: a trial, 200, closed
//! ```
//!
//! It starts two axum servers on 127.0.0.1: the **upstream** (on a free
//! port) and the **gateway** (on `--addr`; it prints `listening on ADDR`
//! once it accepts connections).
//!
//! Upstream: `GET /data?delay_ms=N` waits `N` ms, then answers `200 upstream
//! ok`, or `500 upstream down` while it is set to fail (or for its first
//! `--upstream-fail-first` requests).
//!
//! Gateway:
//! - `GET /api?delay_ms=N` forwards to the upstream with reqwest through a
//!   tower service guarded by `BreakerLayer` (name `upstream`). A 5xx
//!   answer counts as a failure (a classifier), as does a transport error
//!   (then the gateway answers `502`). While the name is open the gateway
//!   answers `503` with `Retry-After` (whole seconds, rounded up) and a JSON
//!   body `{"error":"circuit open","retry_after_ms":N}` without calling the
//!   upstream. After the cool-down one trial request goes through; its
//!   success closes the name.
//! - `POST /upstream/mode` with `{"fail": true|false}` sets the upstream's
//!   behaviour.
//! - `GET /metrics`: the breaker's `metrics()` for the name, as JSON.
//!
//! A client that disconnects mid-request makes hyper drop the handler's
//! future, which drops the layer's response future and so its permit:
//! released, not counted as a failure.
//!
//! Options: `--addr` (default `127.0.0.1:8080`), `--threshold`
//! (consecutive failures that open the name, default 3), `--cool-down-ms`
//! (default 5000), `--upstream-fail-first N` (default 0).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raceless::breaker::{BreakerLayer, CallError, CircuitBreaker, NameMetrics};
use serde::Deserialize;
use tower::{service_fn, Layer, ServiceExt};

/// The breaker name the gateway guards the upstream with.
const NAME: &str = "upstream";

const USAGE: &str = "usage: gateway [--addr 127.0.0.1:PORT] [--threshold N] \
                     [--cool-down-ms MS] [--upstream-fail-first N]";

struct Options {
    addr: String,
    threshold: u32,
    cool_down: Duration,
    fail_first: u64,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        addr: "127.0.0.1:8080".into(),
        threshold: 3,
        cool_down: Duration::from_millis(5000),
        fail_first: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|e| format!("{flag}: {v:?} is not a number ({e})"))
        };
        match flag.as_str() {
            "--addr" => opts.addr = value,
            "--threshold" => {
                opts.threshold = u32::try_from(number(&value)?)
                    .map_err(|_| format!("--threshold: {value} is too large"))?
            }
            "--cool-down-ms" => opts.cool_down = Duration::from_millis(number(&value)?),
            "--upstream-fail-first" => opts.fail_first = number(&value)?,
            _ => return Err(format!("unknown option {flag} (try --help)")),
        }
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// The upstream's failure switch, shared with the gateway's mode endpoint.
#[derive(Default)]
struct Upstream {
    fail: AtomicBool,
    fail_first: AtomicU64,
}

#[derive(Deserialize)]
struct Delay {
    #[serde(default)]
    delay_ms: u64,
}

async fn upstream_data(
    State(up): State<Arc<Upstream>>,
    Query(q): Query<Delay>,
) -> (StatusCode, &'static str) {
    // Decided when the request arrives, answered after the delay.
    let forced = up
        .fail_first
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let fail = forced || up.fail.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(q.delay_ms.min(60_000))).await;
    if fail {
        (StatusCode::INTERNAL_SERVER_ERROR, "upstream down")
    } else {
        (StatusCode::OK, "upstream ok")
    }
}

// ---------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Gateway {
    breaker: Arc<CircuitBreaker>,
    upstream: Arc<Upstream>,
    /// `GET /data?delay_ms=N` on the upstream through the breaker.
    forward: tower::util::BoxCloneSyncService<u64, (StatusCode, String), CallError<reqwest::Error>>,
}

async fn api(State(gw): State<Gateway>, Query(q): Query<Delay>) -> Response {
    match gw.forward.oneshot(q.delay_ms).await {
        Ok((status, body)) => (status, body).into_response(),
        Err(CallError::Rejected(rejected)) => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": "circuit open",
                    "retry_after_ms": rejected.retry_after.map(|d| d.as_millis() as u64),
                })),
            )
                .into_response();
            if let Some(wait) = rejected.retry_after {
                // Whole seconds, rounded up: never invite a retry too early.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Err(CallError::Failed(e)) => {
            tracing::warn!(error = %e, "upstream unreachable");
            (
                StatusCode::BAD_GATEWAY,
                format!("upstream unreachable: {e}"),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct Mode {
    fail: bool,
}

async fn set_mode(State(gw): State<Gateway>, Json(mode): Json<Mode>) -> StatusCode {
    gw.upstream.fail.store(mode.fail, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn metrics(State(gw): State<Gateway>) -> Json<serde_json::Value> {
    let m = gw.breaker.metrics();
    let json = match m.iter().find(|m| &*m.name == NAME) {
        Some(m) => metrics_json(m),
        None => serde_json::json!({ "name": NAME, "state": "closed", "consecutive_failures": 0,
            "times_opened": 0, "rejected_calls": 0, "total_successes": 0, "total_failures": 0 }),
    };
    Json(json)
}

fn metrics_json(m: &NameMetrics) -> serde_json::Value {
    let state = match m.state {
        raceless::breaker::State::Closed => "closed",
        raceless::breaker::State::Open => "open",
        raceless::breaker::State::HalfOpen => "half-open",
        _ => "unknown",
    };
    serde_json::json!({
        "name": &*m.name,
        "state": state,
        "consecutive_failures": m.consecutive_failures,
        "times_opened": m.times_opened,
        "rejected_calls": m.rejected_calls,
        "total_successes": m.total_successes,
        "total_failures": m.total_failures,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(opts).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(opts: Options) -> Result<(), Box<dyn std::error::Error>> {
    // The upstream, on a free port of 127.0.0.1.
    let upstream = Arc::new(Upstream {
        fail: AtomicBool::new(false),
        fail_first: AtomicU64::new(opts.fail_first),
    });
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    let upstream_app = Router::new()
        .route("/data", get(upstream_data))
        .with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(upstream_listener, upstream_app).await });

    // The breaker and the guarded upstream client.
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .failure_threshold(opts.threshold)
            .cool_down(opts.cool_down)
            .track_totals(true)
            .build()?,
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    let base = format!("http://{upstream_addr}/data");
    let call_upstream = service_fn(move |delay_ms: u64| {
        let request = client.get(format!("{base}?delay_ms={delay_ms}"));
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
    });
    let forward = BreakerLayer::new(breaker.clone(), NAME)
        // A 5xx answer is the upstream failing; a 4xx is the client's problem.
        .with_classifier(|r: Result<&(StatusCode, String), &reqwest::Error>| {
            r.map_or(true, |(status, _)| status.is_server_error())
        })
        .layer(call_upstream);

    let gateway = Gateway {
        breaker,
        upstream,
        forward: tower::util::BoxCloneSyncService::new(forward),
    };
    let app = Router::new()
        .route("/api", get(api))
        .route("/upstream/mode", post(set_mode))
        .route("/metrics", get(metrics))
        .with_state(gateway);

    let listener = tokio::net::TcpListener::bind(&opts.addr).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address");
    }
    // Bound: connections are accepted from here on.
    println!("listening on {addr}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}
