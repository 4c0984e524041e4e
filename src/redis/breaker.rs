//! The circuit breaker in Redis: a hash per name, a global generation.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;

use super::{ms, Arg, Op, RedisBackend, NOW_LUA};
use crate::backend::BackendError;
use crate::breaker::BreakerError;

/// Reads the name's hash as of the current generation: `local f, open,
/// opened, trial, trial_until, fresh` (fresh: the hash is of an older
/// generation, or absent — a closed name with no failures).
const LOAD_LUA: &str = r#"
local g = redis.call('GET', KEYS[1]) or '0'
local h = redis.call('HMGET', KEYS[2], 'gen', 'failures', 'open', 'opened', 'trial', 'trial_until')
local fresh = h[1] ~= g
local f, open, opened, trial, trial_until = 0, 0, 0, false, 0
if not fresh then
  f = tonumber(h[2]) or 0
  open = tonumber(h[3]) or 0
  opened = tonumber(h[4]) or 0
  trial = h[5]
  trial_until = tonumber(h[6]) or 0
end
"#;

/// One failure. ARGV: threshold, now. Returns `{failures, opened_now}`.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{LOAD_LUA}{}",
        r#"
f = f + 1
local opened_now = 0
if open == 0 and f >= tonumber(ARGV[1]) then open = 1; opened_now = 1 end
if fresh then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[2], 'gen', g, 'failures', f, 'open', open)
if opened_now == 1 then redis.call('HSET', KEYS[2], 'opened', now_ms(ARGV[2])) end
return {f, opened_now}
"#
    ))
});

/// The name's state. ARGV: now, cool-down ms (-1: none). Returns
/// `{failures, state}`, state 0 closed, 1 open, 2 half-open (cool-down over).
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{LOAD_LUA}{}",
        r#"
local state = open
local cd = tonumber(ARGV[2])
if open == 1 and cd >= 0 and now_ms(ARGV[1]) >= opened + cd then state = 2 end
return {f, state}
"#
    ))
});

/// Admission. ARGV: now, cool-down ms (-1: none), token, lease ms. Returns
/// 1 (closed: admitted), 2 (the half-open trial, held by the token until the
/// lease ends), 0 (rejected).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{LOAD_LUA}{}",
        r#"
if open == 0 then return 1 end
local cd = tonumber(ARGV[2])
if cd < 0 then return 0 end
local now = now_ms(ARGV[1])
if now < opened + cd then return 0 end
if trial and trial ~= ARGV[3] and now < trial_until then return 0 end
redis.call('HSET', KEYS[2], 'trial', ARGV[3], 'trial_until', now + tonumber(ARGV[4]))
return 2
"#
    ))
});

/// A trial's outcome. ARGV: token, 'ok' | 'fail', now. Acts only if the
/// token still holds the trial (of the current generation). Returns 1 if it
/// did.
static TRIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_LUA}{LOAD_LUA}{}",
        r#"
if open ~= 1 or trial ~= ARGV[1] then return 0 end
if ARGV[2] == 'ok' then
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[2], 'failures', f + 1, 'opened', now_ms(ARGV[3]))
  redis.call('HDEL', KEYS[2], 'trial', 'trial_until')
end
return 1
"#
    ))
});

const FAIL_OP: Op = Op::unsafe_("breaker.record_failure");
const SUCCESS_OP: Op = Op::safe("breaker.record_success");
const READ_OP: Op = Op::safe("breaker.read");
const RESET_OP: Op = Op::safe("breaker.reset");
const RESET_ALL_OP: Op = Op::safe("breaker.reset_all");
const ACQUIRE_OP: Op = Op::safe("breaker.try_acquire");
const TRIAL_OP: Op = Op::safe("breaker.trial_outcome");

/// What one [`RedisBreaker::record_failure_counted`] did.
///
/// ```
/// use raceless::redis::Recorded;
/// let r = Recorded { failures: 3, opened: true };
/// assert!(r.opened);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recorded {
    /// The name's consecutive failures, this one included.
    pub failures: u32,
    /// This failure opened the name: of all the failures that reach the
    /// threshold, exactly one (across every process) reports it.
    pub opened: bool,
}

/// Admission from [`RedisBreaker::try_acquire`]: an ordinary call (the
/// name is closed) or the half-open trial, held under a lease.
///
/// A trial permit needs no release on drop: if its holder never reports
/// (crashed, cancelled, paused), the lease ends and the next caller wins a
/// new trial. Report its outcome with [`RedisBreaker::trial_success`] or
/// [`RedisBreaker::trial_failure`]; an outcome reported after the lease was
/// taken over by another trial is ignored.
///
/// ```no_run
/// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
/// if let Some(permit) = breaker.try_acquire("upstream").await? {
///     // ... call the upstream ...
///     breaker.trial_success(&permit).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialPermit {
    name: String,
    token: Option<String>,
}

impl TrialPermit {
    /// Whether this is the half-open trial (rather than a call admitted by
    /// a closed name).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// let permit = breaker.try_acquire("fresh-name").await?.unwrap();
    /// assert!(!permit.is_trial());
    /// # Ok(()) }
    /// ```
    pub fn is_trial(&self) -> bool {
        self.token.is_some()
    }

    /// The name it admits a call to.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// assert_eq!(breaker.try_acquire("n").await?.unwrap().name(), "n");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A per-name circuit breaker shared by every process of a namespace: the
/// seed's semantics (`failure_threshold` consecutive failures open a name,
/// a success resets and closes it, `reset`/`reset_all` close), with no lost
/// failure count across processes, the opening reported exactly once, and
/// `reset_all` in O(1).
///
/// | operation | how | retry after an unknown outcome |
/// |---|---|---|
/// | [`record_failure`](Self::record_failure) | `FAIL` script | **not idempotent**: a repeat may count the failure twice |
/// | [`record_success`](Self::record_success), [`reset`](Self::reset) | `DEL` | safe |
/// | [`reset_all`](Self::reset_all) | `INCR` of the generation | safe in effect (every name is closed either way) |
/// | [`is_open`](Self::is_open), [`failures`](Self::failures) | `READ` script | safe (reads) |
/// | [`try_acquire`](Self::try_acquire) | `ACQUIRE` script | safe: a lost trial's lease ends by itself |
/// | [`trial_success`](Self::trial_success), [`trial_failure`](Self::trial_failure) | `TRIAL` script | safe: by token, acts once |
///
/// ```no_run
/// # async fn demo(backend: raceless::redis::RedisBackend) -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = backend.breaker(2)?;
/// breaker.record_failure("search").await?;
/// assert!(breaker.record_failure_counted("search").await?.opened);
/// assert!(breaker.is_open("search").await?);
/// breaker.reset_all().await?;
/// assert!(!breaker.is_open("search").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBreaker {
    backend: RedisBackend,
    threshold: u32,
    cool_down: Option<Duration>,
    trial_lease: Duration,
    generation: String,
    prefix: String,
}

impl std::fmt::Debug for RedisBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBreaker")
            .field("prefix", &self.prefix)
            .field("threshold", &self.threshold)
            .field("cool_down", &self.cool_down)
            .field("trial_lease", &self.trial_lease)
            .finish_non_exhaustive()
    }
}

impl RedisBreaker {
    pub(crate) fn new(backend: RedisBackend, threshold: u32) -> Result<Self, BreakerError> {
        if threshold == 0 {
            return Err(BreakerError::ZeroThreshold);
        }
        let prefix = format!("{{{}:breaker}}", backend.namespace());
        Ok(Self {
            generation: format!("{prefix}:gen"),
            prefix,
            backend,
            threshold,
            cool_down: None,
            trial_lease: Duration::from_secs(30),
        })
    }

    /// Enables half-open trials: a name open for `cool_down` (by the
    /// backend's time) admits one trial caller at a time
    /// ([`try_acquire`](Self::try_acquire)). Without it a name stays open
    /// until a success or a reset (the seed's behaviour).
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// let breaker = backend.breaker(3).unwrap().with_cool_down(std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn with_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = Some(cool_down);
        self
    }

    /// How long a trial permit is held before another caller may take the
    /// trial over (30 s by default).
    ///
    /// ```no_run
    /// # async fn demo(backend: raceless::redis::RedisBackend) {
    /// let breaker = backend.breaker(3).unwrap().with_trial_lease(std::time::Duration::from_secs(5));
    /// # }
    /// ```
    pub fn with_trial_lease(mut self, lease: Duration) -> Self {
        self.trial_lease = lease;
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}:n:{name}", self.prefix)
    }

    fn cool_down_arg(&self) -> i64 {
        self.cool_down.map(ms).unwrap_or(-1)
    }

    /// Counts one failure of `name`; the `failure_threshold`-th consecutive
    /// one opens it. Not idempotent (see the type's table).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// breaker.record_failure("search").await?;
    /// # Ok(()) }
    /// ```
    pub async fn record_failure(&self, name: &str) -> Result<(), BackendError> {
        self.record_failure_counted(name).await.map(|_| ())
    }

    /// [`record_failure`](Self::record_failure), saying how many consecutive
    /// failures `name` now has and whether this one opened it.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// let r = breaker.record_failure_counted("search").await?;
    /// println!("{} failures, opened: {}", r.failures, r.opened);
    /// # Ok(()) }
    /// ```
    pub async fn record_failure_counted(&self, name: &str) -> Result<Recorded, BackendError> {
        let (failures, opened): (i64, i64) = self
            .backend
            .script(
                FAIL_OP,
                &FAIL,
                &[&self.generation, &self.key(name)],
                vec![
                    i64::from(self.threshold).into(),
                    self.backend.now_arg().into(),
                ],
            )
            .await?;
        Ok(Recorded {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            opened: opened == 1,
        })
    }

    /// A success: resets `name`'s count and closes it (deletes its hash).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// breaker.record_success("search").await?;
    /// # Ok(()) }
    /// ```
    pub async fn record_success(&self, name: &str) -> Result<(), BackendError> {
        self.del(SUCCESS_OP, name).await
    }

    /// Closes `name` (deletes its hash).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// breaker.reset("search").await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, name: &str) -> Result<(), BackendError> {
        self.del(RESET_OP, name).await
    }

    async fn del(&self, op: Op, name: &str) -> Result<(), BackendError> {
        let key = self.key(name);
        self.backend
            .run(op, |mut c| async move {
                ::redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
            })
            .await
    }

    /// Closes every name of the namespace in O(1): one `INCR` of the
    /// generation, which every script compares with the name's own. The
    /// `INCR` is the linearization point: no observer sees one name reset
    /// and another not yet.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// breaker.reset_all().await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset_all(&self) -> Result<(), BackendError> {
        let key = self.generation.clone();
        self.backend
            .run(RESET_ALL_OP, |mut c| async move {
                ::redis::cmd("INCR")
                    .arg(key)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn read(&self, name: &str) -> Result<(u32, i64), BackendError> {
        let (failures, state): (i64, i64) = self
            .backend
            .script(
                READ_OP,
                &READ,
                &[&self.generation, &self.key(name)],
                vec![self.backend.now_arg().into(), self.cool_down_arg().into()],
            )
            .await?;
        Ok((u32::try_from(failures).unwrap_or(u32::MAX), state))
    }

    /// Whether `name` is open or half-open (rejecting ordinary calls).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// assert!(!breaker.is_open("never-failed").await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_open(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.read(name).await?.1 != 0)
    }

    /// Whether `name` is half-open: open, with its cool-down over.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// assert!(!breaker.is_half_open("never-failed").await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_half_open(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.read(name).await?.1 == 2)
    }

    /// `name`'s consecutive failures (0 for an unknown name).
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// assert_eq!(breaker.failures("never-failed").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn failures(&self, name: &str) -> Result<u32, BackendError> {
        Ok(self.read(name).await?.0)
    }

    /// Admits a call to `name`: `Some` when closed (an ordinary permit), or
    /// when half-open and no other caller holds the trial's lease (the
    /// trial permit); `None` otherwise. Of concurrent callers on a
    /// half-open name, exactly one wins the trial.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// assert!(breaker.try_acquire("fresh").await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(&self, name: &str) -> Result<Option<TrialPermit>, BackendError> {
        let token = super::fresh_token();
        let admitted: i64 = self
            .backend
            .script(
                ACQUIRE_OP,
                &ACQUIRE,
                &[&self.generation, &self.key(name)],
                vec![
                    self.backend.now_arg().into(),
                    self.cool_down_arg().into(),
                    Arg::from(token.as_str()),
                    ms(self.trial_lease).into(),
                ],
            )
            .await?;
        Ok(match admitted {
            1 => Some(TrialPermit {
                name: name.to_owned(),
                token: None,
            }),
            2 => Some(TrialPermit {
                name: name.to_owned(),
                token: Some(token),
            }),
            _ => None,
        })
    }

    /// The permit's call succeeded. A trial that still holds its lease
    /// closes the name; an ordinary permit is [`record_success`](Self::record_success).
    /// Returns whether it changed the name.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// let permit = breaker.try_acquire("n").await?.unwrap();
    /// breaker.trial_success(&permit).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trial_success(&self, permit: &TrialPermit) -> Result<bool, BackendError> {
        self.trial(permit, true).await
    }

    /// The permit's call failed. A trial that still holds its lease re-opens
    /// the name and restarts its cool-down; an ordinary permit is
    /// [`record_failure`](Self::record_failure). Returns whether it changed
    /// the name.
    ///
    /// ```no_run
    /// # async fn demo(breaker: raceless::redis::RedisBreaker) -> Result<(), raceless::BackendError> {
    /// let permit = breaker.try_acquire("n").await?.unwrap();
    /// breaker.trial_failure(&permit).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trial_failure(&self, permit: &TrialPermit) -> Result<bool, BackendError> {
        self.trial(permit, false).await
    }

    async fn trial(&self, permit: &TrialPermit, ok: bool) -> Result<bool, BackendError> {
        let Some(token) = &permit.token else {
            if ok {
                self.record_success(&permit.name).await?;
            } else {
                self.record_failure(&permit.name).await?;
            }
            return Ok(true);
        };
        let acted: i64 = self
            .backend
            .script(
                TRIAL_OP,
                &TRIAL,
                &[&self.generation, &self.key(&permit.name)],
                vec![
                    Arg::from(token.as_str()),
                    Arg::from(if ok { "ok" } else { "fail" }),
                    self.backend.now_arg().into(),
                ],
            )
            .await?;
        Ok(acted == 1)
    }
}
