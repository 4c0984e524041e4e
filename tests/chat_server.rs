//! The `chat_server` example, as a real process on 127.0.0.1 driven by a
//! real HTTP client (reqwest): many sessions at once, cleanups while
//! streams are live, 409s naming the live stream, clients that disconnect
//! mid-stream, finished streams leaving empty slots, the bus feed, and the
//! saved files holding each session's newest version (also across a
//! restart). The server binary is built with `cargo build --example
//! chat_server` into this test's own target directory, started with
//! `--addr 127.0.0.1:0` (it prints the port it got) and stopped by PID
//! (SIGTERM, then SIGKILL if it does not exit). Every loop is bounded in
//! count and time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::timeout;

/// A generous bound for every wait (the machine may be busy).
const PATIENCE: Duration = Duration::from_secs(30);

/// Builds the example once per test binary and returns its path.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // target/<profile>/deps/chat_server-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "chat_server", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().unwrap() == "release" {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example chat_server failed");
        let binary = profile_dir
            .join("examples")
            .join(format!("chat_server{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.exists(), "{} missing", binary.display());
        binary
    })
}

/// A running `chat_server`: stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    data_dir: PathBuf,
}

impl Server {
    fn start(tokens: usize, delay_ms: u64, data_dir: &Path) -> Server {
        let mut child = Command::new(server_binary())
            .args(["--addr", "127.0.0.1:0", "--tokens"])
            .arg(tokens.to_string())
            .arg("--token-delay-ms")
            .arg(delay_ms.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chat_server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("chat_server did not print `listening on`");
            }
        };
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Server {
            child,
            base: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM by PID and wait (bounded) for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
            .expect("chat_server did not stop on SIGTERM")
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// An open SSE response, read incrementally.
struct Sse {
    response: reqwest::Response,
    text: String,
}

impl Sse {
    /// Reads until `pred(text)` holds or the body ends; false on the end.
    async fn read_until(&mut self, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while !pred(&self.text) {
            assert!(
                Instant::now() < deadline,
                "SSE read timed out: {}",
                self.text
            );
            let chunk = timeout(PATIENCE, self.response.chunk())
                .await
                .expect("SSE chunk timed out")
                .expect("SSE read failed");
            match chunk {
                Some(bytes) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                None => return pred(&self.text),
            }
        }
        true
    }

    async fn read_to_end(&mut self) -> &str {
        self.read_until(|_| false).await;
        &self.text
    }

    fn count(&self, event: &str) -> usize {
        self.text.matches(&format!("event: {event}\n")).count()
    }
}

async fn post(
    client: &reqwest::Client,
    server: &Server,
    session: &str,
    message: &str,
) -> reqwest::Response {
    client
        .post(server.url(&format!("/sessions/{session}/messages")))
        .json(&json!({ "message": message, "attachments": [] }))
        .send()
        .await
        .unwrap()
}

/// Starts a stream and reads its first token.
async fn open_stream(
    client: &reqwest::Client,
    server: &Server,
    session: &str,
    message: &str,
) -> Sse {
    let response = post(client, server, session, message).await;
    assert_eq!(response.status(), StatusCode::OK, "POST {session}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut sse = Sse {
        response,
        text: String::new(),
    };
    assert!(sse.read_until(|t| t.contains("event: token\n")).await);
    sse
}

async fn get_session(
    client: &reqwest::Client,
    server: &Server,
    session: &str,
) -> (StatusCode, Value) {
    let response = client
        .get(server.url(&format!("/sessions/{session}")))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn active_id(state: &Value) -> Option<String> {
    state["active_stream"]["id"].as_str().map(str::to_owned)
}

/// The saved file of `session`, if any.
fn saved(server_dir: &Path, session: &str) -> Option<Value> {
    let bytes = std::fs::read(server_dir.join(format!("{session}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Waits (bounded) until the saved file of every session holds the version
/// and the active stream the server reports.
async fn files_converge(client: &reqwest::Client, server: &Server, sessions: &[String]) {
    for session in sessions {
        let (status, state) = get_session(client, server, session).await;
        assert_eq!(status, StatusCode::OK);
        let version = state["version"].as_u64().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(file) = saved(&server.data_dir, session) {
                if file["version"].as_u64() == Some(version) {
                    let file_active = file["active"]["id"].clone();
                    assert_eq!(file_active.is_null(), active_id(&state).is_none());
                    break;
                }
                assert!(
                    file["version"].as_u64().unwrap() < version,
                    "a file is ahead of its session"
                );
            }
            assert!(
                Instant::now() < deadline,
                "{session}: file never reached v{version}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Many sessions at once, while their streams are live (long streams, so
/// none can end during the checks): the GET (which runs the cleanup) never
/// clears a live stream, and a second POST is a 409 naming it. Then the
/// clients leave, the sessions are freed, and every file ends up holding
/// its session's newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_live_sessions_409s_and_cleanups() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(100_000, 20, dir.path());
    let client = client();
    let sessions: Vec<String> = (0..24).map(|i| format!("chat-{i}")).collect();
    let messages: Vec<String> = (0..sessions.len()).map(|i| format!("hello {i}")).collect();
    let opened = sessions
        .iter()
        .zip(&messages)
        .map(|(session, message)| open_stream(&client, &server, session, message));
    let streams = futures_util::future::join_all(opened).await;

    let checks = sessions.iter().zip(&messages).map(|(session, message)| {
        let (client, server) = (&client, &server);
        async move {
            let (status, state) = get_session(client, server, session).await;
            assert_eq!(status, StatusCode::OK);
            let live = active_id(&state).expect("a live stream was cleared");
            assert_eq!(state["active_stream"]["pending_message"], json!(message));
            assert_eq!(state["version"], json!(1));
            let busy = post(client, server, session, "again").await;
            assert_eq!(busy.status(), StatusCode::CONFLICT);
            let body: Value = busy.json().await.unwrap();
            assert_eq!(body["active"], json!(live));
            for _ in 0..3 {
                let (_, again) = get_session(client, server, session).await;
                assert_eq!(active_id(&again).as_deref(), Some(live.as_str()));
            }
        }
    });
    futures_util::future::join_all(checks).await;
    files_converge(&client, &server, &sessions).await;

    drop(streams);
    let deadline = Instant::now() + PATIENCE;
    for session in &sessions {
        loop {
            let (_, state) = get_session(&client, &server, session).await;
            if state["active_stream"].is_null() {
                assert_eq!(state["version"], json!(2));
                break;
            }
            assert!(Instant::now() < deadline, "{session} never freed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    files_converge(&client, &server, &sessions).await;
    assert!(server.stop().success());
    for session in &sessions {
        let file = saved(dir.path(), session).unwrap();
        assert_eq!(
            (file["version"].as_u64(), file["active"].is_null()),
            (Some(2), true)
        );
    }
}

/// Many sessions at once, streams read to their end: N tokens then one
/// done each; finished streams leave empty slots that take a new stream at
/// once; every file ends up holding its session's newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_streams_run_to_the_end_and_leave_empty_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(8, 5, dir.path());
    let client = client();
    let sessions: Vec<String> = (0..24).map(|i| format!("chat-{i}")).collect();
    for round in 1..=2u64 {
        let runs = sessions.iter().map(|session| {
            let (client, server) = (&client, &server);
            async move {
                let mut sse = open_stream(client, server, session, "hi").await;
                sse.read_to_end().await;
                assert_eq!(
                    (sse.count("token"), sse.count("done")),
                    (8, 1),
                    "{}",
                    sse.text
                );
            }
        });
        futures_util::future::join_all(runs).await;
        for session in &sessions {
            let (_, state) = get_session(&client, &server, session).await;
            assert!(state["active_stream"].is_null(), "{state}");
            assert_eq!(state["version"], json!(2 * round));
        }
    }
    files_converge(&client, &server, &sessions).await;
    assert!(server.stop().success());
    for session in &sessions {
        let file = saved(dir.path(), session).unwrap();
        assert_eq!(
            (file["version"].as_u64(), file["active"].is_null()),
            (Some(4), true)
        );
    }
}

/// Clients that disconnect mid-stream free their sessions within a second
/// (the response body owns the stream's guard), the bus reports the
/// cancellations, and the sessions take new streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnecting_clients_free_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(10_000, 20, dir.path());
    let client = client();
    let mut events = Sse {
        response: client.get(server.url("/events")).send().await.unwrap(),
        text: String::new(),
    };
    assert_eq!(events.response.status(), StatusCode::OK);

    let sessions: Vec<String> = (0..8).map(|i| format!("gone-{i}")).collect();
    for round in 0..3 {
        let opened = sessions
            .iter()
            .map(|s| open_stream(&client, &server, s, "bye"));
        let streams = futures_util::future::join_all(opened).await;
        for session in &sessions {
            let (_, state) = get_session(&client, &server, session).await;
            assert!(active_id(&state).is_some(), "round {round}: {state}");
        }
        drop(streams); // every client disconnects
        let gone = Instant::now();
        for session in &sessions {
            loop {
                let (_, state) = get_session(&client, &server, session).await;
                if state["active_stream"].is_null() {
                    break;
                }
                assert!(
                    gone.elapsed() < Duration::from_secs(1),
                    "round {round}: {session} still busy a second after its client left"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let want = 3 * sessions.len();
    assert!(
        events
            .read_until(|t| t.matches("\"reason\":\"cancelled\"").count() >= want)
            .await
    );
    assert_eq!(events.count("stream_started"), want);
    files_converge(&client, &server, &sessions).await;
    drop(events);
    assert!(server.stop().success());
}

/// Bad requests get clear 4xx answers with a JSON error, and the server
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(2, 1, dir.path());
    let client = client();
    let url = server.url("/sessions/ok/messages");
    for body in [
        "{not json",
        "[]",
        r#"{"attachments": []}"#,
        r#"{"message": 5}"#,
        "",
    ] {
        let response = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains("invalid JSON"),
            "{error}"
        );
    }
    let response = post(&client, &server, "not.a.file.name", "x").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _) = get_session(&client, &server, "never-seen").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A rejected POST created nothing.
    let (status, _) = get_session(&client, &server, "ok").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = client.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let mut sse = open_stream(&client, &server, "ok", "fine").await;
    sse.read_to_end().await;
    assert_eq!((sse.count("token"), sse.count("done")), (2, 1));
    let (status, state) = get_session(&client, &server, "ok").await;
    assert_eq!(
        (status, state["version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    assert!(server.stop().success());
}

/// A server stopped while streams are live: its guards finish the streams
/// as the runtime shuts down and the writer flushes, so the files hold the
/// finished state; a new server on the same directory knows the sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_live_streams_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(10_000, 20, dir.path());
    let client = client();
    let sessions: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let opened = sessions
        .iter()
        .map(|s| open_stream(&client, &server, s, "live"));
    let streams = futures_util::future::join_all(opened).await;
    assert!(server.stop().success());
    drop(streams);
    for session in &sessions {
        let file = saved(dir.path(), session).unwrap();
        assert_eq!(
            (file["version"].as_u64(), file["active"].is_null()),
            (Some(2), true)
        );
    }
    let server = Server::start(1, 1, dir.path());
    for session in &sessions {
        let (status, state) = get_session(&client, &server, session).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (state["version"].as_u64(), state["active_stream"].is_null()),
            (Some(2), true)
        );
    }
    let mut sse = open_stream(&client, &server, "r0", "back").await;
    sse.read_to_end().await;
    files_converge(&client, &server, &sessions).await;
    assert_eq!(saved(dir.path(), "r0").unwrap()["version"], json!(4));
    assert!(server.stop().success());
}
