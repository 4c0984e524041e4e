//! A session's active-stream slot in Redis, with a version and a lease.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::Script;

use super::{ms, Arg, Op, RedisBackend, NOW_LUA};
use crate::backend::BackendError;
use crate::stream::Pending;

/// Start. ARGV: stream id, message, attachments (JSON), now, lease ms.
/// Returns `{1, version}` (installed, or the same id already there) or
/// `{0, live stream id}`.
static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{}",
        r#"
local now = now_ms(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'stream', 'live_until', 'version')
if h[1] then
  if h[1] == ARGV[1] then return {1, tostring(h[3])} end
  if tonumber(h[2]) > now then return {0, h[1]} end
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'stream', ARGV[1], 'message', ARGV[2], 'attachments', ARGV[3],
  'started', now, 'live_until', now + tonumber(ARGV[5]))
return {1, tostring(v)}
"#
    ))
});

/// The fields of an active stream, cleared together.
const CLEAR_LUA: &str = r#"
local function clear()
  redis.call('HDEL', KEYS[1], 'stream', 'message', 'attachments', 'started', 'live_until')
  return redis.call('HINCRBY', KEYS[1], 'version', 1)
end
"#;

/// Clear a stale stream. ARGV: now. Returns 1 if it cleared.
static CLEAR_STALE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{CLEAR_LUA}{}",
        r#"
local h = redis.call('HMGET', KEYS[1], 'stream', 'live_until')
if (not h[1]) or tonumber(h[2]) > now_ms(ARGV[1]) then return 0 end
clear()
return 1
"#
    ))
});

/// Finish. ARGV: stream id. Returns 1 if it emptied the slot.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLEAR_LUA}{}",
        r#"
if redis.call('HGET', KEYS[1], 'stream') ~= ARGV[1] then return 0 end
clear()
return 1
"#
    ))
});

/// Renew the lease. ARGV: stream id, now, lease ms. Returns 1 if the slot
/// still holds the stream.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{}",
        r#"
if redis.call('HGET', KEYS[1], 'stream') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'live_until', now_ms(ARGV[2]) + tonumber(ARGV[3]))
return 1
"#
    ))
});

const START_OP: Op = Op::safe("stream.start_with_id");
const START_FRESH_OP: Op = Op::unsafe_("stream.start");
const CLEAR_STALE_OP: Op = Op::safe("stream.clear_stale");
const FINISH_OP: Op = Op::safe("stream.finish");
const RENEW_OP: Op = Op::safe("stream.renew");
const SLOT_OP: Op = Op::safe("stream.slot");

/// The session already has a live stream (the seed's 409), or the backend
/// failed.
///
/// ```
/// use raceless::redis::SlotError;
/// let e = SlotError::Busy { active: "abc".into() };
/// assert!(e.to_string().contains("abc"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// The session's stream is live (its lease has not ended).
    #[error("session already has an active stream ({active})")]
    Busy {
        /// The live stream's id.
        active: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A stream installed by [`RedisStreamSlots::start`].
///
/// ```
/// use raceless::redis::StreamStarted;
/// let s = StreamStarted { id: "x".into(), version: 1 };
/// assert_eq!(s.version, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamStarted {
    /// The stream's id (the holder renews and finishes with it).
    pub id: String,
    /// The slot's version after the start (the fencing token of a save).
    pub version: u64,
}

/// A session's active stream and its pending fields, as stored.
///
/// ```
/// use raceless::redis::RedisActiveStream;
/// use std::time::UNIX_EPOCH;
/// let a = RedisActiveStream { id: "s".into(), pending_message: "hi".into(),
///     attachments: vec![], started_at: UNIX_EPOCH, live_until: UNIX_EPOCH };
/// assert_eq!(a.pending_message, "hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisActiveStream {
    /// The stream.
    pub id: String,
    /// The message that started it.
    pub pending_message: String,
    /// Its attachments.
    pub attachments: Vec<String>,
    /// When it started (by the backend's time).
    pub started_at: SystemTime,
    /// When its lease ends unless renewed.
    pub live_until: SystemTime,
}

/// A session's slot: its version and active stream, read in one step.
///
/// ```
/// use raceless::redis::RedisSlot;
/// let s = RedisSlot { version: 0, active: None };
/// assert!(s.active.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSlot {
    /// 0 for a session never changed, one more per change (start, clear,
    /// finish). A save carrying it is the newest if its version is the
    /// highest: the version is the fencing token of saves.
    pub version: u64,
    /// The active stream, if any.
    pub active: Option<RedisActiveStream>,
}

/// The active-stream slots of a namespace's sessions, shared by every
/// replica: the semantics of the in-process
/// [`StreamRegistry`](crate::stream::StreamRegistry), with liveness a lease
/// the owning replica renews instead of membership in one process's
/// registry.
///
/// * [`start`](Self::start): if the session's stream is live (its lease not
///   over), [`SlotError::Busy`]; otherwise a stale stream is cleared and the
///   new one installed, in one script. Of concurrent starts on one session,
///   from any processes, exactly one wins.
/// * [`clear_stale`](Self::clear_stale): clears the slot only if its stream's
///   lease is over, judged and cleared in one script: it never clears a
///   live stream and never clobbers a newer one.
/// * [`finish`](Self::finish): empties the slot only if it still holds
///   that stream.
/// * [`renew`](Self::renew): extends the lease while the slot holds the
///   stream. A holder that stops renewing (crashed, paused) loses the slot
///   at the end of the lease; see `docs/distributed.md` for the paused
///   holder that outlives its lease (use the version as a fencing token).
///
/// Every operation is safe to retry except [`start`](Self::start), whose
/// fresh id the caller never learns if the outcome is unknown:
/// [`start_with_id`](Self::start_with_id) by its id (a repeat finds its own
/// stream installed and succeeds), the others by id or because they are
/// conditional on the slot's state.
///
/// ```no_run
/// # async fn demo(backend: raceless::redis::RedisBackend) -> Result<(), raceless::redis::SlotError> {
/// use raceless::stream::Pending;
/// let slots = backend.stream_slots();
/// let started = slots.start("chat-1", Pending::new("hi")).await?;
/// assert!(matches!(slots.start("chat-1", Pending::new("again")).await,
///     Err(raceless::redis::SlotError::Busy { .. })));
/// assert!(slots.finish("chat-1", &started.id).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStreamSlots {
    backend: RedisBackend,
    lease: Duration,
}

impl std::fmt::Debug for RedisStreamSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamSlots")
            .field("namespace", &self.backend.namespace())
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl RedisStreamSlots {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self {
            backend,
            lease: Duration::from_secs(30),
        }
    }

    /// The lease a start or renewal grants (30 s by default): how long a
    /// stream stays live without a renewal.
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// let slots = backend.stream_slots().with_lease(std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    fn key(&self, session: &str) -> String {
        format!("{{{}:stream:{session}}}:slot", self.backend.namespace())
    }

    /// Starts a stream with a fresh id on `session` (see the type's docs).
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::redis::SlotError> {
    /// let started = slots.start("s", raceless::stream::Pending::new("hi")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(&self, session: &str, pending: Pending) -> Result<StreamStarted, SlotError> {
        self.start_inner(START_FRESH_OP, session, &super::fresh_token(), pending)
            .await
    }

    /// [`start`](Self::start) with the caller's stream id: a repeat with the
    /// same id after an unknown outcome finds its stream installed and
    /// succeeds (idempotent by id). Ids must be unique.
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::redis::SlotError> {
    /// use raceless::stream::Pending;
    /// let a = slots.start_with_id("s", "stream-1", Pending::new("hi")).await?;
    /// let b = slots.start_with_id("s", "stream-1", Pending::new("hi")).await?;
    /// assert_eq!(a, b);
    /// # Ok(()) }
    /// ```
    pub async fn start_with_id(
        &self,
        session: &str,
        id: &str,
        pending: Pending,
    ) -> Result<StreamStarted, SlotError> {
        self.start_inner(START_OP, session, id, pending).await
    }

    async fn start_inner(
        &self,
        op: Op,
        session: &str,
        id: &str,
        pending: Pending,
    ) -> Result<StreamStarted, SlotError> {
        let attachments =
            serde_json::to_string(&pending.attachments).map_err(|e| op.protocol(e.to_string()))?;
        let (won, value): (i64, String) = self
            .backend
            .script(
                op,
                &START,
                &[&self.key(session)],
                vec![
                    Arg::from(id),
                    pending.message.into(),
                    attachments.into(),
                    self.backend.now_arg().into(),
                    ms(self.lease).into(),
                ],
            )
            .await?;
        if won == 1 {
            let version = value
                .parse()
                .map_err(|_| op.protocol(format!("bad version {value:?}")))?;
            Ok(StreamStarted {
                id: id.to_owned(),
                version,
            })
        } else {
            Err(SlotError::Busy { active: value })
        }
    }

    /// Clears `session`'s stream if its lease is over; returns whether it
    /// cleared.
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::BackendError> {
    /// let cleared = slots.clear_stale("s").await?;
    /// # Ok(()) }
    /// ```
    pub async fn clear_stale(&self, session: &str) -> Result<bool, BackendError> {
        let cleared: i64 = self
            .backend
            .script(
                CLEAR_STALE_OP,
                &CLEAR_STALE,
                &[&self.key(session)],
                vec![self.backend.now_arg().into()],
            )
            .await?;
        Ok(cleared == 1)
    }

    /// Empties `session`'s slot if it still holds stream `id`; returns
    /// whether it did.
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::BackendError> {
    /// assert!(!slots.finish("s", "not-the-stream").await?);
    /// # Ok(()) }
    /// ```
    pub async fn finish(&self, session: &str, id: &str) -> Result<bool, BackendError> {
        let done: i64 = self
            .backend
            .script(FINISH_OP, &FINISH, &[&self.key(session)], vec![id.into()])
            .await?;
        Ok(done == 1)
    }

    /// Extends stream `id`'s lease by the configured lease from now;
    /// `false` if the slot no longer holds it (it was cleared as stale or
    /// finished: the holder should stop).
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::BackendError> {
    /// let still_mine = slots.renew("s", "stream-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn renew(&self, session: &str, id: &str) -> Result<bool, BackendError> {
        let renewed: i64 = self
            .backend
            .script(
                RENEW_OP,
                &RENEW,
                &[&self.key(session)],
                vec![
                    Arg::from(id),
                    self.backend.now_arg().into(),
                    ms(self.lease).into(),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// `session`'s slot (one `HGETALL`: a consistent snapshot).
    ///
    /// ```no_run
    /// # async fn demo(slots: raceless::redis::RedisStreamSlots) -> Result<(), raceless::BackendError> {
    /// let slot = slots.slot("never-seen").await?;
    /// assert_eq!((slot.version, slot.active), (0, None));
    /// # Ok(()) }
    /// ```
    pub async fn slot(&self, session: &str) -> Result<RedisSlot, BackendError> {
        let key = self.key(session);
        let mut h: HashMap<String, String> = self
            .backend
            .run(SLOT_OP, |mut c| async move {
                ::redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await?;
        let num = |s: Option<String>| -> Result<i64, BackendError> {
            let s = s.unwrap_or_else(|| "0".into());
            s.parse()
                .map_err(|_| SLOT_OP.protocol(format!("bad number {s:?}")))
        };
        let version = u64::try_from(num(h.remove("version"))?).unwrap_or(0);
        let active = match h.remove("stream") {
            None => None,
            Some(id) => Some(RedisActiveStream {
                id,
                pending_message: h.remove("message").unwrap_or_default(),
                attachments: serde_json::from_str(
                    h.remove("attachments").as_deref().unwrap_or("[]"),
                )
                .map_err(|e| SLOT_OP.protocol(e.to_string()))?,
                started_at: time(num(h.remove("started"))?),
                live_until: time(num(h.remove("live_until"))?),
            }),
        };
        Ok(RedisSlot { version, active })
    }
}
