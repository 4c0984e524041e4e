//! The seed's server shape (hermes-webui's chat streams) on axum, wired to
//! raceless the way a real service would be:
//!
//! - `POST /sessions/{id}/messages` with `{"message": "...", "attachments": []}`
//!   starts a stream on the session through [`StreamRegistry::start_guard`]
//!   and answers `200 text/event-stream`: `--tokens` `event: token` messages
//!   `--token-delay-ms` apart, then one `event: done`. While the session has
//!   a live stream it answers `409 {"active": "<stream id>"}`. The response
//!   body owns the [`StreamGuard`]: a client that disconnects mid-stream
//!   drops the body, and the guard finishes the stream and frees the session.
//! - `GET /sessions/{id}` runs the stale-stream cleanup
//!   ([`StreamRegistry::clear_stale`], the seed's `_clear_stale_stream_state`)
//!   and answers `{"id", "active_stream": null | {"id", "pending_message"},
//!   "version"}`; `404` for a session never seen (in memory or on disk).
//! - `GET /events`: an SSE feed of the bus (`stream_started`,
//!   `stream_finished`).
//! - Every change of a session is saved through the background
//!   [`StoreWriter`] (no handler waits on the disk). On SIGINT/SIGTERM the
//!   server stops, the runtime drops every connection (each live stream's
//!   guard finishes it), and the writer flushes before the process exits.
//!
//! ```text
//! cargo run --release --example chat_server -- --addr 127.0.0.1:8080 \
//!     [--tokens N] [--token-delay-ms D] [--data-dir DIR]
//! ```
//!
//! prints `listening on ADDR` once it accepts connections (`--addr
//! 127.0.0.1:0` picks a free port and prints it).
//!
//! Memory: the server keeps every session it has seen in memory (an
//! example's simplification; the registry itself keeps only live streams,
//! and the store only unwritten snapshots).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dashmap::DashMap;
use futures_util::stream::{self, Stream};
use raceless::bus::{Event, EventBus, RecvError};
use raceless::stream::{
    Busy, Pending, Session, SessionStore, StoreWriter, StreamGuard, StreamOptions, StreamRegistry,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The command line.
#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    tokens: usize,
    token_delay: Duration,
    data_dir: PathBuf,
}

const USAGE: &str =
    "usage: chat_server --addr HOST:PORT [--tokens N] [--token-delay-ms D] [--data-dir DIR]";

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut addr, mut tokens, mut delay, mut dir) = (None, 5, 100, None);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
                "--tokens" => tokens = value()?.parse().map_err(|e| format!("--tokens: {e}"))?,
                "--token-delay-ms" => {
                    delay = value()?
                        .parse()
                        .map_err(|e| format!("--token-delay-ms: {e}"))?
                }
                "--data-dir" => dir = Some(PathBuf::from(value()?)),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Self {
            addr: addr.ok_or("--addr is required")?,
            tokens,
            token_delay: Duration::from_millis(delay),
            data_dir: dir.unwrap_or_else(|| PathBuf::from("chat_server_sessions")),
        })
    }
}

/// What the bus carries (one kind, `"stream"`, so one subscription sees
/// both).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ChatEvent {
    StreamStarted {
        session: String,
        stream: String,
    },
    StreamFinished {
        session: String,
        stream: String,
        /// `done` (all tokens sent) or `cancelled` (the client went away
        /// or the server stopped).
        reason: &'static str,
    },
}

const STREAM_EVENTS: &str = "stream";

impl Event for ChatEvent {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        STREAM_EVENTS
    }
}

impl ChatEvent {
    fn name(&self) -> &'static str {
        match self {
            ChatEvent::StreamStarted { .. } => "stream_started",
            ChatEvent::StreamFinished { .. } => "stream_finished",
        }
    }
}

/// The server's shared state.
struct App {
    registry: Arc<StreamRegistry<()>>,
    sessions: DashMap<String, Arc<Session>>,
    writer: StoreWriter,
    bus: Arc<EventBus<ChatEvent>>,
    tokens: usize,
    token_delay: Duration,
}

type Shared = Arc<App>;

/// A 4xx answer with a JSON body `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl App {
    /// The session `id`: in memory, else restored from disk (a blocking
    /// read, off the executor), else (if `create`) a new one. `Ok(None)`:
    /// never seen. An id that cannot name a file is a 400.
    async fn session(&self, id: &str, create: bool) -> Result<Option<Arc<Session>>, Response> {
        if let Some(session) = self.sessions.get(id) {
            return Ok(Some(session.clone()));
        }
        let store = self.writer.store().clone();
        store
            .path(id)
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        let owned = id.to_owned();
        let loaded = tokio::task::spawn_blocking(move || store.load(&owned))
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let session = match loaded {
            Some(snapshot) => Session::restore(snapshot),
            None if create => Session::new(id),
            None => return Ok(None),
        };
        // Two first requests race: the map keeps one session.
        Ok(Some(
            self.sessions
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(session))
                .clone(),
        ))
    }
}

/// The body of `POST /sessions/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message: String,
    #[serde(default)]
    attachments: Vec<String>,
}

async fn post_message(State(app): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: MessageBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let session = match app.session(&id, true).await {
        Ok(Some(session)) => session,
        Ok(None) => unreachable!("created"),
        Err(response) => return response,
    };
    let pending = Pending {
        message: body.message,
        attachments: body.attachments,
    };
    match app.registry.start_guard(&session, pending, ()) {
        Ok(guard) => {
            app.bus.emit(ChatEvent::StreamStarted {
                session: id,
                stream: guard.id().to_string(),
            });
            Sse::new(token_stream(app.clone(), guard))
                .keep_alive(KeepAlive::default())
                .into_response()
        }
        Err(Busy { active }) => (
            StatusCode::CONFLICT,
            Json(json!({ "active": active.to_string() })),
        )
            .into_response(),
    }
}

/// A live stream, owned by the response body. Dropped when the body ends
/// or the client goes away: the guard finishes the stream (frees the
/// session) and the bus hears why.
struct Live {
    guard: StreamGuard<()>,
    bus: Arc<EventBus<ChatEvent>>,
    sent: usize,
}

impl Live {
    fn finished(&mut self, reason: &'static str) -> bool {
        if self.guard.is_finished() {
            return false;
        }
        self.guard.finish();
        self.bus.emit(ChatEvent::StreamFinished {
            session: self.guard.session().id().to_owned(),
            stream: self.guard.id().to_string(),
            reason,
        });
        true
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finished("cancelled");
    }
}

/// `tokens` `token` events `token_delay` apart, then `done` (sent after
/// the stream is finished, so a client that reads `done` can post again at
/// once).
fn token_stream(
    app: Shared,
    guard: StreamGuard<()>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let live = Live {
        guard,
        bus: app.bus.clone(),
        sent: 0,
    };
    let (tokens, delay) = (app.tokens, app.token_delay);
    stream::unfold(Some(live), move |live| async move {
        let mut live = live?;
        if live.sent < tokens {
            if live.sent > 0 {
                tokio::time::sleep(delay).await;
            }
            live.sent += 1;
            let event = SseEvent::default()
                .event("token")
                .data(format!("token {}", live.sent));
            Some((Ok(event), Some(live)))
        } else {
            live.finished("done");
            let data = json!({ "stream": live.guard.id().to_string(), "tokens": tokens });
            let event = SseEvent::default().event("done").data(data.to_string());
            Some((Ok(event), None))
        }
    })
}

async fn get_session(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let session = match app.session(&id, false).await {
        Ok(Some(session)) => session,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("unknown session {id:?}")),
        Err(response) => return response,
    };
    app.registry.clear_stale(&session);
    let snapshot = session.snapshot();
    let active = snapshot
        .active
        .map(|a| json!({ "id": a.id.to_string(), "pending_message": a.pending_message }));
    Json(json!({ "id": snapshot.session_id, "active_stream": active, "version": snapshot.version }))
        .into_response()
}

async fn events(State(app): State<Shared>) -> Response {
    // A channel consumer of the bus: emit never waits for this client; if
    // it falls 256 events behind it gets a `lagged` event and the newest.
    let receiver = match app.bus.subscribe_channel(STREAM_EVENTS, 256) {
        Ok(receiver) => receiver,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let feed = stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        let event = match receiver.recv().await {
            Ok(event) => SseEvent::default()
                .event(event.name())
                .data(serde_json::to_string(&event).unwrap_or_default()),
            Err(RecvError::Lagged(missed)) => {
                SseEvent::default().event("lagged").data(missed.to_string())
            }
            Err(_) => return None, // the bus is gone
        };
        Some((Ok::<_, Infallible>(event), Some(receiver)))
    });
    Sse::new(feed)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// -----------------------------------------------------------------------------

fn router(app: Shared) -> Router {
    Router::new()
        .route("/sessions/{id}/messages", post(post_message))
        .route("/sessions/{id}", get(get_session))
        .route("/events", get(events))
        .with_state(app)
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("chat_server: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let store = match SessionStore::open(&args.data_dir) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("chat_server: {}: {e}", args.data_dir.display());
            std::process::exit(1);
        }
    };
    let writer = StoreWriter::spawn(store).expect("spawn the store writer");
    let hook = writer.clone();
    let registry = Arc::new(StreamRegistry::with_options(
        // Enqueues only: never blocks the handler (or the guard's drop).
        StreamOptions::new().save_hook(move |snap| Ok(hook.save(snap)?)),
    ));
    let app = Arc::new(App {
        registry,
        sessions: DashMap::new(),
        writer: writer.clone(),
        bus: Arc::new(EventBus::new(0)),
        tokens: args.tokens,
        token_delay: args.token_delay,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        std::io::stdout().flush()?;
        tokio::select! {
            served = axum::serve(listener, router(app)) => served,
            _ = stop_signal() => {
                tracing::info!("stopping");
                Ok(())
            }
        }
    });
    // Dropping the runtime drops every connection's task: the body of each
    // live stream goes, and its guard finishes the stream (its save is
    // queued). Then the writer writes everything out.
    runtime.shutdown_timeout(Duration::from_secs(5));
    writer.shutdown();
    if let Err(e) = served {
        eprintln!("chat_server: {e}");
        std::process::exit(1);
    }
}
