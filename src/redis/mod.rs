//! Arcs, breaker and stream slots shared by several processes through one
//! Redis (or Valkey) primary — feature `redis`.
//!
//! A service running as several replicas needs "one active arc per pair",
//! "no lost failure counts" and "no cleanup clobbers a newer stream" to hold
//! across processes. [`RedisBackend`] keeps that state in Redis:
//!
//! * [`RedisArcs`] — at most one active arc per unordered pair, with a
//!   token per arc, expiry by a deadline index any replica may sweep.
//! * [`RedisBreaker`] — per-name consecutive-failure breaker, `reset_all`
//!   in O(1) through a generation, optional cool-down with a half-open trial
//!   permit held under a lease.
//! * [`RedisStreamSlots`] — a session's active-stream slot with a version
//!   (the fencing token for saves) and a liveness lease the owning replica
//!   renews.
//!
//! # Protocol
//!
//! Every operation that reads and then writes is **one Lua script**
//! (`redis::Script`: `EVALSHA`, reloaded on
//! `NOSCRIPT`). Redis runs a script atomically on its single thread, so the
//! check and the act are one step: the script's execution is the
//! operation's linearization point. No `WATCH`/`MULTI`. Keys of one entity
//! share a hash tag (`{ns:arcs}`, `{ns:breaker}`, `{ns:stream:<session>}`)
//! so every script's keys are in one cluster slot.
//!
//! **Time.** Scripts take the time as an argument: by default `-1`, which
//! makes the script read the server's `TIME` (one clock for every replica,
//! so leases and deadlines do not depend on the replicas' clock skew); with
//! [`RedisOptions::clock`] the injected clock's wall time, in milliseconds
//! since the Unix epoch (deterministic tests; the replicas' clocks must then
//! agree). Monotonic time cannot be shared between processes, so the
//! backend never uses `Clock::monotonic`.
//!
//! **Bounded waits.** Every operation is bounded by
//! [`RedisOptions::response_timeout`] (3 s by default) as a whole,
//! reconnection included: a stopped or unreachable server gives a
//! [`BackendError`], never a hang. A timeout discards the connection (a
//! stalled connection would delay every later request behind it); the next
//! operation opens a new one. redis-rs's connection manager reconnects by
//! itself after a dropped connection (a restarted server).
//!
//! `docs/distributed.md` has the key layout, each script, what holds (one
//! primary) and what does not (replication and failover lose acknowledged
//! writes; a paused holder can outlive its lease).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use raceless::redis::RedisBackend;
//!
//! let backend = RedisBackend::connect("redis://127.0.0.1:6379/", "myapp").await?;
//! let breaker = backend.breaker(3)?;
//! breaker.record_failure("vector-search").await?;
//! assert_eq!(breaker.failures("vector-search").await?, 1);
//! # Ok(()) }
//! ```

mod arcs;
mod breaker;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::RedisError;
use arc_swap::ArcSwap;

use crate::backend::{BackendError, BackendErrorKind};
use crate::breaker::BreakerError;
use crate::clock::{Clock, SharedClock};

pub use arcs::{ArcToken, RedisArcs, SweepReport};
pub use breaker::{Recorded, RedisBreaker, TrialPermit};
pub use stream::{RedisActiveStream, RedisSlot, RedisStreamSlots, SlotError, StreamStarted};

/// Options of a [`RedisBackend`].
///
/// ```
/// use raceless::redis::RedisOptions;
/// use std::time::Duration;
/// let options = RedisOptions::new().response_timeout(Duration::from_millis(500));
/// assert_eq!(options.get_response_timeout(), Duration::from_millis(500));
/// assert_eq!(RedisOptions::new().get_response_timeout(), Duration::from_secs(3));
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    response_timeout: Duration,
    clock: Option<SharedClock>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("response_timeout", &self.response_timeout)
            .field("clock", &self.clock.as_ref().map(|_| "injected"))
            .finish()
    }
}

impl RedisOptions {
    /// A 3 s response timeout; time from the server's `TIME`.
    ///
    /// ```
    /// let _ = raceless::redis::RedisOptions::new();
    /// ```
    pub fn new() -> Self {
        Self {
            response_timeout: Duration::from_secs(3),
            clock: None,
        }
    }

    /// The longest any operation waits, reconnection included (a zero
    /// duration is raised to 1 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let o = raceless::redis::RedisOptions::new().response_timeout(Duration::from_secs(1));
    /// assert_eq!(o.get_response_timeout(), Duration::from_secs(1));
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The configured response timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(raceless::redis::RedisOptions::new().get_response_timeout(), Duration::from_secs(3));
    /// ```
    pub fn get_response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Take every script's time from `clock`'s wall time instead of the
    /// server's `TIME` (tests; replicas whose clocks agree).
    ///
    /// ```
    /// use raceless::clock::ManualClock;
    /// let _ = raceless::redis::RedisOptions::new().clock(ManualClock::new());
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
}

/// One operation's name and whether repeating it is safe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub(crate) name: &'static str,
    pub(crate) retry_safe: bool,
}

impl Op {
    pub(crate) const fn safe(name: &'static str) -> Self {
        Self {
            name,
            retry_safe: true,
        }
    }
    pub(crate) const fn unsafe_(name: &'static str) -> Self {
        Self {
            name,
            retry_safe: false,
        }
    }

    pub(crate) fn error(self, kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
        BackendError::new(kind, self.name, self.retry_safe, message)
    }

    pub(crate) fn protocol(self, message: impl Into<String>) -> BackendError {
        self.error(BackendErrorKind::Protocol, message)
    }

    fn redis_error(self, e: &RedisError) -> BackendError {
        let kind = if e.is_timeout() {
            BackendErrorKind::Timeout
        } else if e.is_connection_refusal() {
            BackendErrorKind::Unavailable
        } else if e.is_io_error() || e.is_connection_dropped() {
            BackendErrorKind::ConnectionLost
        } else if matches!(e.kind(), ::redis::ErrorKind::TypeError) {
            BackendErrorKind::Protocol
        } else {
            BackendErrorKind::Server
        };
        self.error(kind, e.to_string())
    }
}

/// The current connection, tagged with a generation so that a timed-out
/// operation discards only the connection it used.
struct Current {
    generation: u64,
    manager: Option<ConnectionManager>,
}

struct Inner {
    client: ::redis::Client,
    namespace: String,
    options: RedisOptions,
    current: ArcSwap<Current>,
    /// Serializes opening a new connection (one opener at a time; the others
    /// wait for it, within their own timeout).
    connecting: tokio::sync::Mutex<()>,
}

/// A connection to one Redis (or Valkey) primary, shared by the arcs,
/// breakers and stream slots made from it. Cheap to clone; clones share the
/// connection. Needs a tokio runtime (with the time driver).
///
/// Every key it writes starts with its namespace, so several applications
/// (or tests) can share one server.
///
/// ```no_run
/// # async fn demo() -> Result<(), raceless::BackendError> {
/// use raceless::redis::{RedisBackend, RedisOptions};
/// use std::time::Duration;
/// let backend = RedisBackend::connect_with(
///     "redis://127.0.0.1:6379/",
///     "chat",
///     RedisOptions::new().response_timeout(Duration::from_secs(1)),
/// )
/// .await?;
/// backend.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.inner.namespace)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

const CONNECT: Op = Op::safe("connect");
const PING: Op = Op::safe("ping");

impl RedisBackend {
    /// Connects to `url` (`redis://host:port/db`, `redis+unix:///path`) with
    /// the default [`RedisOptions`]; every key is prefixed by `namespace`.
    ///
    /// Fails with [`BackendError`] if the server cannot be reached within
    /// the response timeout.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), raceless::BackendError> {
    /// let backend = raceless::redis::RedisBackend::connect("redis://127.0.0.1/", "app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, BackendError> {
        Self::connect_with(url, namespace, RedisOptions::new()).await
    }

    /// [`connect`](Self::connect) with options.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), raceless::BackendError> {
    /// use raceless::redis::{RedisBackend, RedisOptions};
    /// let backend = RedisBackend::connect_with("redis://127.0.0.1/", "app", RedisOptions::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        url: &str,
        namespace: &str,
        options: RedisOptions,
    ) -> Result<Self, BackendError> {
        let client = ::redis::Client::open(url).map_err(|e| {
            CONNECT.error(
                BackendErrorKind::Unavailable,
                format!("bad URL {url:?}: {e}"),
            )
        })?;
        let backend = Self {
            inner: Arc::new(Inner {
                client,
                namespace: namespace.to_owned(),
                options,
                current: ArcSwap::from_pointee(Current {
                    generation: 0,
                    manager: None,
                }),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        backend
            .run(CONNECT, |mut c| async move {
                ::redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await?;
        Ok(backend)
    }

    /// The arcs of this namespace, of kind `K` (use one kind type per
    /// namespace: the kinds are stored as JSON).
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// let arcs = backend.arcs::<K>();
    /// # }
    /// ```
    pub fn arcs<K>(&self) -> RedisArcs<K> {
        RedisArcs::new(self.clone())
    }

    /// A breaker opening a name after `failure_threshold` consecutive
    /// failures (0 is [`BreakerError::ZeroThreshold`]). Every breaker of one
    /// namespace shares the names (and `reset_all`); the threshold is the
    /// caller's, passed to every script.
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// assert!(backend.breaker(0).is_err());
    /// let breaker = backend.breaker(5).unwrap();
    /// # }
    /// ```
    pub fn breaker(&self, failure_threshold: u32) -> Result<RedisBreaker, BreakerError> {
        RedisBreaker::new(self.clone(), failure_threshold)
    }

    /// The stream slots of this namespace's sessions.
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// let slots = backend.stream_slots();
    /// # }
    /// ```
    pub fn stream_slots(&self) -> RedisStreamSlots {
        RedisStreamSlots::new(self.clone())
    }

    /// One round trip (`PING`).
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) -> Result<(), raceless::BackendError> {
    /// backend.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.run(PING, |mut c| async move {
            ::redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await
    }

    /// The namespace every key starts with.
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// assert_eq!(backend.namespace(), "app");
    /// # }
    /// ```
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The time argument of a script: the injected clock's wall time in ms,
    /// or -1 (the script reads the server's `TIME`).
    pub(crate) fn now_arg(&self) -> i64 {
        match &self.inner.options.clock {
            Some(clock) => clock
                .now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            None => -1,
        }
    }

    /// A connection, opening one if the last was discarded.
    async fn connection(&self) -> Result<(u64, ConnectionManager), RedisError> {
        let current = self.inner.current.load();
        if let Some(m) = &current.manager {
            return Ok((current.generation, m.clone()));
        }
        let _opening = self.inner.connecting.lock().await;
        let current = self.inner.current.load();
        if let Some(m) = &current.manager {
            return Ok((current.generation, m.clone()));
        }
        let timeout = self.inner.options.response_timeout;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(100);
        let manager = ConnectionManager::new_with_config(self.inner.client.clone(), config).await?;
        let generation = current.generation + 1;
        self.inner.current.store(Arc::new(Current {
            generation,
            manager: Some(manager.clone()),
        }));
        tracing::debug!(namespace = %self.inner.namespace, generation, "redis: connected");
        Ok((generation, manager))
    }

    /// Drops the connection of `generation` (after a timeout on it), unless
    /// another was installed since.
    fn discard(&self, generation: u64) {
        let current = self.inner.current.load();
        if current.generation == generation && current.manager.is_some() {
            let prev = self.inner.current.compare_and_swap(
                &current,
                Arc::new(Current {
                    generation,
                    manager: None,
                }),
            );
            if Arc::ptr_eq(&prev, &current) {
                tracing::warn!(namespace = %self.inner.namespace, "redis: timeout, connection discarded");
            }
        }
    }

    /// Runs `f` on a connection, the whole of it (connecting included)
    /// bounded by the response timeout; maps every failure to
    /// [`BackendError`].
    pub(crate) async fn run<T, F, Fut>(&self, op: Op, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let timeout = self.inner.options.response_timeout;
        let used = std::sync::Mutex::new(None::<u64>);
        let attempt = async {
            let (generation, conn) = self.connection().await.map_err(|e| (false, e))?;
            *used.lock().unwrap_or_else(|p| p.into_inner()) = Some(generation);
            let r = f(conn).await;
            if let Err(e) = &r {
                if e.is_timeout() {
                    self.discard(generation);
                }
            }
            r.map_err(|e| (true, e))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            // Connecting failed: nothing was sent.
            Ok(Err((false, e))) => Err(op.error(BackendErrorKind::Unavailable, e.to_string())),
            Ok(Err((true, e))) => Err(op.redis_error(&e)),
            Err(_) => {
                let generation = *used.lock().unwrap_or_else(|p| p.into_inner());
                match generation {
                    Some(g) => {
                        self.discard(g);
                        Err(op.error(
                            BackendErrorKind::Timeout,
                            format!("no reply within {timeout:?}"),
                        ))
                    }
                    // Still connecting: nothing was sent.
                    None => Err(op.error(
                        BackendErrorKind::Unavailable,
                        format!("could not connect within {timeout:?}"),
                    )),
                }
            }
        }
    }

    /// Invokes `script` with `keys` and `args`.
    pub(crate) async fn script<T: ::redis::FromRedisValue>(
        &self,
        op: Op,
        script: &::redis::Script,
        keys: &[&str],
        args: Vec<Arg>,
    ) -> Result<T, BackendError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in &args {
            match a {
                Arg::Int(i) => inv.arg(*i),
                Arg::Str(s) => inv.arg(s.as_str()),
            };
        }
        self.run(
            op,
            |mut c| async move { inv.invoke_async::<T>(&mut c).await },
        )
        .await
    }
}

/// A script argument.
pub(crate) enum Arg {
    Int(i64),
    Str(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Str(v.to_owned())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Str(v)
    }
}

/// The Lua prelude every script with a time argument starts with: `now`
/// from `ARGV[i]`, or the server's `TIME` when it is negative.
pub(crate) const NOW_LUA: &str = r#"
local function now_ms(arg)
  local n = tonumber(arg)
  if n and n >= 0 then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Milliseconds as a script argument (saturating).
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A fresh random token (128 bits, hex): std's per-process random hasher
/// keys, the process id, the time and a counter.
pub(crate) fn fresh_token() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Relaxed: the counter only makes tokens of one process distinct.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut halves = [0u64; 2];
    for (i, h) in halves.iter_mut().enumerate() {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(n);
        hasher.write_u64(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        *h = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}
