//! Arcs in Redis: one hash per pair, a deadline index, a token per arc.

use std::marker::PhantomData;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ms, Arg, Op, RedisBackend, NOW_LUA};
use crate::arcs::{ArcError, ArcKind, ArcPhase, ArcSnapshot, EndReason, Start};
use crate::backend::BackendError;

/// An arc's token: drawn at random by [`RedisArcs::start`], or chosen by
/// the caller ([`RedisArcs::start_with_token`]) so that a start whose
/// outcome is unknown can be repeated safely (the repeat finds its own arc
/// and returns [`Start::Started`] again).
///
/// ```
/// use raceless::redis::ArcToken;
/// let (a, b) = (ArcToken::new(), ArcToken::new());
/// assert_ne!(a, b);
/// assert_eq!(a.as_str().len(), 32);
/// assert_eq!(ArcToken::from("t1").as_str(), "t1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArcToken(String);

impl ArcToken {
    /// A fresh random token (128 bits).
    ///
    /// ```
    /// let _ = raceless::redis::ArcToken::new();
    /// ```
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(super::fresh_token())
    }

    /// The token's text.
    ///
    /// ```
    /// assert_eq!(raceless::redis::ArcToken::from("x").as_str(), "x");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ArcToken {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Display for ArcToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one [`RedisArcs::sweep`] did.
///
/// ```
/// use raceless::redis::SweepReport;
/// let r: SweepReport<()> = SweepReport::default();
/// assert_eq!((r.examined, r.expired.len()), (0, 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport<K> {
    /// Index entries past their deadline that this sweep looked at.
    pub examined: usize,
    /// The arcs this sweep expired (each expired by exactly one sweep, and
    /// never one that an `end` ended).
    pub expired: Vec<ArcSnapshot<String, K>>,
}

impl<K> Default for SweepReport<K> {
    fn default() -> Self {
        Self {
            examined: 0,
            expired: Vec::new(),
        }
    }
}

/// The deadline index's member of an arc: `<len(token)>:<token>|<pair>`.
const MEMBER_LUA: &str = r#"
local function member(tok, sfx) return string.len(tok) .. ':' .. tok .. '|' .. sfx end
"#;

/// Start: create the pair's arc unless one exists. Returns
/// `{won, kind, phase, events, started, last}`; `won` is 1 for a new arc or
/// for a repeat with the same token.
static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{MEMBER_LUA}{}",
        r#"
local cur = redis.call('HMGET', KEYS[1], 'token', 'kind', 'phase', 'events', 'started', 'last')
if cur[1] then
  local won = 0
  if cur[1] == ARGV[1] then won = 1 end
  return {won, cur[2], cur[3], cur[4], cur[5], cur[6]}
end
local now = now_ms(ARGV[3])
local deadline = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'kind', ARGV[2], 'phase', 'initiation',
  'events', 0, 'started', now, 'last', now, 'deadline', deadline)
redis.call('ZADD', KEYS[2], deadline, member(ARGV[1], ARGV[5]))
return {1, ARGV[2], 'initiation', 0, now, now}
"#
    ))
});

/// End or expire: compare-and-delete. ARGV: token ('' = any), pair suffix,
/// now, mode ('end' | 'expire'). Expire also needs the deadline passed,
/// and drops its index entry when its arc is gone. Returns
/// `{token, kind, phase, events, started, last}` or nil.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{MEMBER_LUA}{}",
        r#"
local cur = redis.call('HMGET', KEYS[1], 'token', 'kind', 'phase', 'events', 'started', 'last', 'deadline')
if (not cur[1]) or (ARGV[1] ~= '' and cur[1] ~= ARGV[1]) then
  if ARGV[4] == 'expire' then redis.call('ZREM', KEYS[2], member(ARGV[1], ARGV[2])) end
  return false
end
if ARGV[4] == 'expire' and tonumber(cur[7]) > now_ms(ARGV[3]) then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], member(cur[1], ARGV[2]))
return {cur[1], cur[2], cur[3], cur[4], cur[5], cur[6]}
"#
    ))
});

/// Progress: bump the events, set phase and last progress; `completed`
/// ends the arc. ARGV: phase, now, pair suffix. Returns
/// `{ended, kind, phase, events, started, last}` or nil.
static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{MEMBER_LUA}{}",
        r#"
local cur = redis.call('HMGET', KEYS[1], 'token', 'kind', 'events', 'started')
if not cur[1] then return false end
local now = now_ms(ARGV[2])
local events = tonumber(cur[3]) + 1
if ARGV[1] == 'completed' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], member(cur[1], ARGV[3]))
  return {1, cur[2], 'completed', events, cur[4], now}
end
redis.call('HSET', KEYS[1], 'phase', ARGV[1], 'events', events, 'last', now)
return {0, cur[2], ARGV[1], events, cur[4], now}
"#
    ))
});

/// The index entries past their deadline. ARGV: now, limit.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{MEMBER_LUA}{}",
        r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
"#
    ))
});

const START_OP: Op = Op::safe("arcs.start_with_token");
const START_RANDOM_OP: Op = Op::unsafe_("arcs.start");
const END_OP: Op = Op::safe("arcs.end");
const END_TOKEN_OP: Op = Op::safe("arcs.end_token");
const PROGRESS_OP: Op = Op::unsafe_("arcs.progress");
const STATUS_OP: Op = Op::safe("arcs.status");
const SWEEP_OP: Op = Op::safe("arcs.sweep");
const LEN_OP: Op = Op::safe("arcs.len");

/// One Lua reply describing an arc: `(flag or token, kind, phase, events,
/// started ms, last ms)`.
type ArcReply<F> = (F, String, String, u64, i64, i64);

/// At most one active arc per unordered agent pair, across every process
/// that shares the Redis namespace. Agents are strings; the kind `K` is
/// stored as JSON.
///
/// | operation | script | retry after an unknown outcome |
/// |---|---|---|
/// | [`start`](Self::start) | `START` | not idempotent: a repeat may find its own arc and say `AlreadyActive`; use [`start_with_token`](Self::start_with_token) |
/// | [`start_with_token`](Self::start_with_token) | `START` | safe: the same token finds its own arc, `Started` |
/// | [`end`](Self::end) | `END` | safe (a repeat after a success is `NotFound`); it ends whatever arc the pair has |
/// | [`end_token`](Self::end_token) | `END` | safe: ends only the arc with that token |
/// | [`progress`](Self::progress) | `PROGRESS` | not idempotent: a repeat counts one more event |
/// | [`status`](Self::status), [`len`](Self::len) | `HMGET`, `ZCARD` | safe (reads) |
/// | [`sweep`](Self::sweep) | `DUE` + `END` per arc | safe: each arc is expired by one sweep only |
///
/// ```no_run
/// # async fn demo(backend: raceless::redis::RedisBackend) -> Result<(), raceless::arcs::ArcError> {
/// use raceless::arcs::{ArcKind, EndReason, Start};
/// use std::time::Duration;
///
/// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Rivalry;
/// impl ArcKind for Rivalry {
///     fn expected_duration(&self) -> Duration { Duration::from_secs(7 * 86_400) }
/// }
///
/// let arcs = backend.arcs::<Rivalry>();
/// assert!(matches!(arcs.start("ada", "bob", Rivalry).await?, Start::Started(_)));
/// assert!(matches!(arcs.start("bob", "ada", Rivalry).await?, Start::AlreadyActive(_)));
/// arcs.end("ada", "bob", EndReason::Manual).await?;
/// # Ok(()) }
/// ```
pub struct RedisArcs<K> {
    backend: RedisBackend,
    deadlines: String,
    prefix: String,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for RedisArcs<K> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            deadlines: self.deadlines.clone(),
            prefix: self.prefix.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for RedisArcs<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArcs")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The pair, sorted, or `SamePair`.
fn sorted<'a>(a: &'a str, b: &'a str) -> Result<(&'a str, &'a str), ArcError> {
    match a.cmp(b) {
        std::cmp::Ordering::Less => Ok((a, b)),
        std::cmp::Ordering::Greater => Ok((b, a)),
        std::cmp::Ordering::Equal => Err(ArcError::SamePair),
    }
}

/// The pair's key suffix: `<len(a)>:<a>|<b>` (unambiguous for any agents).
fn suffix(a: &str, b: &str) -> String {
    format!("{}:{a}|{b}", a.len())
}

/// The inverse of [`suffix`].
fn parse_suffix(s: &str) -> Option<(String, String)> {
    let (len, rest) = s.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let a = rest.get(..len)?;
    let b = rest.get(len..)?.strip_prefix('|')?;
    Some((a.to_owned(), b.to_owned()))
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn phase(s: &str) -> Option<ArcPhase> {
    Some(match s {
        "initiation" => ArcPhase::Initiation,
        "escalation" => ArcPhase::Escalation,
        "climax" => ArcPhase::Climax,
        "resolution" => ArcPhase::Resolution,
        "completed" => ArcPhase::Completed,
        _ => return None,
    })
}

/// The longest expiry a deadline can hold exactly (Lua numbers are doubles):
/// 100 years.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

impl<K> RedisArcs<K> {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        let prefix = format!("{{{}:arcs}}", backend.namespace());
        Self {
            deadlines: format!("{prefix}:deadlines"),
            prefix,
            backend,
            _kind: PhantomData,
        }
    }

    fn key(&self, a: &str, b: &str) -> String {
        format!("{}:arc:{}", self.prefix, suffix(a, b))
    }

    /// How many arcs are active (one `ZCARD` of the deadline index).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::BackendError> {
    /// println!("{} active arcs", arcs.len().await?);
    /// # Ok(()) }
    /// ```
    pub async fn len(&self) -> Result<usize, BackendError> {
        self.count().await
    }

    /// Whether no arc is active.
    ///
    /// ```no_run
    /// # async fn demo(arcs: raceless::redis::RedisArcs<()>) -> Result<(), raceless::BackendError> {
    /// if arcs.is_empty().await? { println!("quiet"); }
    /// # Ok(()) }
    /// ```
    pub async fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.count().await? == 0)
    }

    async fn count(&self) -> Result<usize, BackendError> {
        let key = self.deadlines.clone();
        self.backend
            .run(LEN_OP, |mut c| async move {
                ::redis::cmd("ZCARD")
                    .arg(key)
                    .query_async::<usize>(&mut c)
                    .await
            })
            .await
    }
}

impl<K> RedisArcs<K>
where
    K: ArcKind + Serialize + DeserializeOwned,
{
    /// A snapshot from a reply's `(kind, phase, events, started, last)`.
    fn snapshot(
        &self,
        op: Op,
        (a, b): (&str, &str),
        (kind, phase_s, events, started, last): (&str, &str, u64, i64, i64),
    ) -> Result<ArcSnapshot<String, K>, BackendError> {
        let kind: K = serde_json::from_str(kind)
            .map_err(|e| op.protocol(format!("stored kind {kind:?} does not decode: {e}")))?;
        let phase = phase(phase_s).ok_or_else(|| op.protocol(format!("bad phase {phase_s:?}")))?;
        Ok(ArcSnapshot {
            agents: (a.to_owned(), b.to_owned()),
            kind,
            phase,
            events_triggered: events,
            started_at: time(started),
            last_progress: time(last),
        })
    }

    /// Starts the pair's arc with a fresh random token: exactly one of any
    /// number of concurrent starts of one pair, from any processes, returns
    /// [`Start::Started`]; the others get [`Start::AlreadyActive`] with the
    /// stored arc, untouched. `a == b` is [`ArcError::SamePair`].
    ///
    /// After an outcome-unknown [`ArcError::Backend`], a plain repeat may
    /// find the arc this call created and report `AlreadyActive`: use
    /// [`start_with_token`](Self::start_with_token) to repeat safely.
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// let arc = arcs.start("ada", "bob", K).await?.into_inner();
    /// assert_eq!(arc.agents, ("ada".to_string(), "bob".to_string()));
    /// # Ok(()) }
    /// ```
    pub async fn start(
        &self,
        a: &str,
        b: &str,
        kind: K,
    ) -> Result<Start<ArcSnapshot<String, K>>, ArcError> {
        self.start_inner(START_RANDOM_OP, a, b, kind, &ArcToken::new())
            .await
    }

    /// [`start`](Self::start) with the caller's token: a repeat with the
    /// same token after an unknown outcome returns [`Start::Started`] with
    /// the arc the first call created (idempotent by token).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// use raceless::redis::ArcToken;
    /// let token = ArcToken::new();
    /// let first = arcs.start_with_token("a", "b", K, &token).await;
    /// let again = arcs.start_with_token("a", "b", K, &token).await?;
    /// assert!(again.is_started());
    /// # Ok(()) }
    /// ```
    pub async fn start_with_token(
        &self,
        a: &str,
        b: &str,
        kind: K,
        token: &ArcToken,
    ) -> Result<Start<ArcSnapshot<String, K>>, ArcError> {
        self.start_inner(START_OP, a, b, kind, token).await
    }

    async fn start_inner(
        &self,
        op: Op,
        a: &str,
        b: &str,
        kind: K,
        token: &ArcToken,
    ) -> Result<Start<ArcSnapshot<String, K>>, ArcError> {
        let pair = sorted(a, b)?;
        let kind_json = serde_json::to_string(&kind).map_err(|e| {
            ArcError::Backend(op.protocol(format!("the kind does not encode: {e}")))
        })?;
        let ttl = ms(kind.expected_duration().saturating_mul(2).min(MAX_TTL));
        let (won, kind_s, phase_s, events, started, last): ArcReply<i64> = self
            .backend
            .script(
                op,
                &START,
                &[&self.key(pair.0, pair.1), &self.deadlines],
                vec![
                    Arg::from(token.as_str()),
                    kind_json.into(),
                    self.backend.now_arg().into(),
                    ttl.into(),
                    suffix(pair.0, pair.1).into(),
                ],
            )
            .await
            .map_err(ArcError::Backend)?;
        let snap = self
            .snapshot(op, pair, (&kind_s, &phase_s, events, started, last))
            .map_err(ArcError::Backend)?;
        Ok(if won == 1 {
            Start::Started(snap)
        } else {
            Start::AlreadyActive(snap)
        })
    }

    /// Ends the pair's arc, whatever its token: exactly one of any number of
    /// concurrent ends (and sweeps) wins and gets the final snapshot; the
    /// others get [`ArcError::NotFound`]. `reason` is not stored (the
    /// caller reports it).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) {
    /// use raceless::arcs::{ArcError, EndReason};
    /// assert!(matches!(arcs.end("x", "y", EndReason::Manual).await, Err(ArcError::NotFound)));
    /// # }
    /// ```
    pub async fn end(
        &self,
        a: &str,
        b: &str,
        reason: EndReason,
    ) -> Result<ArcSnapshot<String, K>, ArcError> {
        let pair = sorted(a, b)?;
        tracing::trace!(a = pair.0, b = pair.1, ?reason, "redis arcs: end");
        self.end_inner(END_OP, pair, "", "end").await
    }

    /// Ends the pair's arc only if it is the one with `token` (an end that
    /// may be repeated, or that must not end a newer arc of the pair).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// use raceless::redis::ArcToken;
    /// let t = ArcToken::new();
    /// arcs.start_with_token("a", "b", K, &t).await?;
    /// arcs.end_token("a", "b", &t).await?;
    /// # Ok(()) }
    /// ```
    pub async fn end_token(
        &self,
        a: &str,
        b: &str,
        token: &ArcToken,
    ) -> Result<ArcSnapshot<String, K>, ArcError> {
        let pair = sorted(a, b)?;
        self.end_inner(END_TOKEN_OP, pair, token.as_str(), "end")
            .await
    }

    async fn end_inner(
        &self,
        op: Op,
        pair: (&str, &str),
        token: &str,
        mode: &str,
    ) -> Result<ArcSnapshot<String, K>, ArcError> {
        let reply: Option<ArcReply<String>> = self
            .backend
            .script(
                op,
                &END,
                &[&self.key(pair.0, pair.1), &self.deadlines],
                vec![
                    Arg::from(token),
                    suffix(pair.0, pair.1).into(),
                    self.backend.now_arg().into(),
                    mode.into(),
                ],
            )
            .await
            .map_err(ArcError::Backend)?;
        let (_token, kind_s, phase_s, events, started, last) = reply.ok_or(ArcError::NotFound)?;
        self.snapshot(op, pair, (&kind_s, &phase_s, events, started, last))
            .map_err(ArcError::Backend)
    }

    /// Moves the arc to `phase`, counting one event; [`ArcPhase::Completed`]
    /// ends it. [`ArcError::NotFound`] if the pair has no arc. Not
    /// idempotent (a repeat counts another event).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// use raceless::arcs::ArcPhase;
    /// let arc = arcs.progress("a", "b", ArcPhase::Escalation).await?;
    /// # Ok(()) }
    /// ```
    pub async fn progress(
        &self,
        a: &str,
        b: &str,
        phase: ArcPhase,
    ) -> Result<ArcSnapshot<String, K>, ArcError> {
        let pair = sorted(a, b)?;
        let reply: Option<ArcReply<i64>> = self
            .backend
            .script(
                PROGRESS_OP,
                &PROGRESS,
                &[&self.key(pair.0, pair.1), &self.deadlines],
                vec![
                    Arg::from(phase.as_str()),
                    self.backend.now_arg().into(),
                    suffix(pair.0, pair.1).into(),
                ],
            )
            .await
            .map_err(ArcError::Backend)?;
        let (_ended, kind_s, phase_s, events, started, last) = reply.ok_or(ArcError::NotFound)?;
        self.snapshot(
            PROGRESS_OP,
            pair,
            (&kind_s, &phase_s, events, started, last),
        )
        .map_err(ArcError::Backend)
    }

    /// The pair's active arc, if any (one `HMGET`: a consistent snapshot).
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// assert!(arcs.status("nobody", "else").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn status(
        &self,
        a: &str,
        b: &str,
    ) -> Result<Option<ArcSnapshot<String, K>>, ArcError> {
        let pair = sorted(a, b)?;
        let key = self.key(pair.0, pair.1);
        let fields: Vec<Option<String>> = self
            .backend
            .run(STATUS_OP, |mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["kind", "phase", "events", "started", "last"])
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(ArcError::Backend)?;
        let [Some(kind_s), Some(phase_s), Some(events), Some(started), Some(last)] =
            <[Option<String>; 5]>::try_from(fields).unwrap_or_default()
        else {
            return Ok(None);
        };
        let num = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| STATUS_OP.protocol(format!("bad number {s:?}")))
        };
        let parsed = (|| {
            let events = u64::try_from(num(&events)?).unwrap_or(0);
            self.snapshot(
                STATUS_OP,
                pair,
                (&kind_s, &phase_s, events, num(&started)?, num(&last)?),
            )
        })();
        parsed.map(Some).map_err(ArcError::Backend)
    }

    /// The periodic sweep, which any replica may run at any time: expires
    /// up to `limit` arcs past twice their kind's expected duration (by the
    /// backend's time). Each arc is expired by a compare-and-delete on its
    /// token and deadline, so of concurrent sweeps and ends exactly one
    /// wins it.
    ///
    /// ```no_run
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct K;
    /// # impl raceless::arcs::ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// # async fn demo(arcs: raceless::redis::RedisArcs<K>) -> Result<(), raceless::arcs::ArcError> {
    /// let report = arcs.sweep(1000).await?;
    /// println!("expired {}", report.expired.len());
    /// # Ok(()) }
    /// ```
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport<K>, ArcError> {
        let due: Vec<String> = self
            .backend
            .script(
                SWEEP_OP,
                &DUE,
                &[&self.deadlines],
                vec![
                    self.backend.now_arg().into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            )
            .await
            .map_err(ArcError::Backend)?;
        let mut report = SweepReport {
            examined: due.len(),
            expired: Vec::new(),
        };
        for member in due {
            let Some((token, sfx)) = parse_suffix(&member) else {
                continue;
            };
            let Some((a, b)) = parse_suffix(&sfx) else {
                continue;
            };
            match self.end_inner(SWEEP_OP, (&a, &b), &token, "expire").await {
                Ok(snap) => report.expired.push(snap),
                Err(ArcError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_round_trips() {
        for (a, b) in [("a", "b"), ("a|b", "c"), ("", "x"), ("1:2", "3|4")] {
            assert_eq!(parse_suffix(&suffix(a, b)), Some((a.into(), b.into())));
        }
    }
}
