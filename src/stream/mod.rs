//! Live streams and a session's active-stream slot (seed: hermes-webui #1533).
//!
//! A chat server keeps its running streams in a registry ([`StreamRegistry`],
//! the seed's `STREAMS`) and, on each [`Session`], the stream it is showing
//! with its pending fields (`pending_message`, `attachments`, `started_at`).
//! The seed's cleanup (`_clear_stale_stream_state`) checked that the
//! session's stream was no longer registered and *then* wrote `None` into the
//! session: a `chat_start` in between installed a new stream, and the
//! cleanup clobbered it.
//!
//! Here a session's active stream, its pending fields and a version live in
//! **one immutable value behind one atomic pointer** (the *slot*), whose
//! word also carries an *emptied* mark. Every change is a compare-and-swap
//! of that word against the word it judged (pointer identity and mark): a
//! start installs a new value; a finish or a cleanup marks the value it
//! judged emptied (no allocation), which shows no stream at one version
//! more:
//!
//! - [`StreamRegistry::start`]: if the slot's stream is live, [`Busy`] (the
//!   seed's 409). Otherwise the new stream is **registered first**, then
//!   published with a CAS against the observed (empty or stale) value; on a
//!   failed CAS it re-reads, and if a live stream won, it unregisters its own
//!   and returns [`Busy`]. Linearization point: the successful CAS (or, for
//!   `Busy`, the liveness read of the winner).
//! - [`StreamRegistry::clear_stale`]: reads the slot, finds its stream not
//!   registered, and clears by marking *that very value* emptied (a CAS). If anything
//!   changed the slot in between, the CAS fails and nothing is cleared.
//!   Linearization point: the successful CAS (or the read that decided
//!   `false`).
//! - [`StreamRegistry::finish`]: empties the slot (marks its value) if it
//!   still holds the id, then unregisters the stream. Linearization point: the CAS
//!   (or the read that saw another stream).
//!
//! Why no interleaving clobbers: a stream id is fresh (never reused, not even
//! across processes: ids carry a random per-registry epoch) and is
//! registered *before* any slot can hold it, so "in a slot but not
//! registered" only ever means "finished or from a previous process" — a
//! state it can never leave. A cleanup that saw it there may therefore clear
//! it at any later moment, and its CAS succeeds only if the slot still
//! holds that exact value, unmarked, so it can never remove a newer stream or
//! its pending fields. `docs/stream.md` has the full argument.
//!
//! Liveness ("is the slot's stream registered?") is read from a *live
//! flag* inside the slot value that published the stream, which the
//! registry entry also holds, instead of a map lookup: it is `true` from
//! before the registration and turns `false` inside the shard's
//! write-locked critical section that removes the entry, so flag and map
//! agree at every observable instant and the unregistration linearizes at
//! that store (a slot without a flag — restored, or written by the
//! baseline — and a stream of another registry are looked up in the map).
//!
//! The slot is an epoch-reclaimed atomic pointer
//! ([`sdd::AtomicShared`](https://docs.rs/sdd), through its safe API): an
//! operation pins its thread, loads the value and compares-and-swaps
//! against it while still pinned, so the value cannot be freed and its
//! address reused in between (no ABA). A write is one compare-exchange of
//! the cell's word (the mark lives in the pointer's tag bits) and never
//! visits other threads' state; a replaced value is freed once no pinned
//! thread can see it. No save hook or other user code runs while a
//! thread is pinned.
//!
//! Memory orderings: slot loads and compare-and-swaps are `SeqCst`
//! (publication needs only a release CAS and an acquire load: a
//! registration made before the publishing CAS is visible to whoever loads
//! the published value; `SeqCst` puts all slot operations in one total
//! order, in which the linearization points are read, and compiles to the
//! same instructions on x86-64 and AArch64); the registry is a sharded map
//! (a lock per shard). Our own atomics: the id counter, `Relaxed` (ids only
//! need to be unique, which any read-modify-write guarantees), and the live
//! flag, `Release` store / `Acquire` load (its order with the map comes from
//! the shard lock; it publishes no data).
//!
//! Saving: every slot value carries a version, one more than the value it
//! replaced. [`Session::snapshot`] gives it as a [`SessionSnapshot`]
//! (serde, feature `serde`);
//! an optional save hook ([`StreamOptions::save_hook`]) receives the
//! snapshot of every change a registry makes, outside every guard. Hooks of
//! concurrent changes may run in any order: `SessionStore` (feature
//! `file-store`, like everything that touches files here) keeps the
//! highest version per session, so a late save never overwrites a newer
//! state. Its `save` is blocking file I/O; async code saves through a
//! `StoreWriter`, whose `save` only enqueues for a background thread that
//! keeps the newest version per session.
//!
//! Async handlers hold their stream through a [`StreamGuard`]
//! ([`StreamRegistry::start_guard`]): dropping it — a cancelled SSE handler,
//! at any `.await` — finishes the stream and frees the session.
//!
//! Memory: the registry keeps one entry per live stream (removed by
//! `finish` or a guard's drop), no session; the store keeps a session's
//! version only while a save of it is in progress, the writer at most one
//! queued snapshot per session. `docs/stream.md` lists each operation's
//! progress guarantee.
//!
//! ```
//! use raceless::stream::{Pending, Session, StreamRegistry};
//!
//! let registry = StreamRegistry::new();
//! let session = Session::new("s1");
//! let id = registry.start(&session, Pending::new("hi"), "worker").unwrap();
//! // A second start while the first stream runs: the seed's 409.
//! assert_eq!(registry.start(&session, Pending::new("again"), "w2").unwrap_err().active, id);
//! assert!(!registry.clear_stale(&session)); // live: kept
//! assert!(registry.finish(&session, id));
//! assert!(session.active().is_none());
//! ```

mod guard;
pub(crate) mod registry;
pub(crate) mod session;
#[cfg(feature = "file-store")]
mod store;
#[cfg(feature = "file-store")]
mod writer;

use std::time::SystemTime;

use crate::clock::{Clock, SharedClock};
use crate::listener::Listeners;
use crate::CallbackError;

pub use guard::StreamGuard;
pub use registry::StreamRegistry;
pub use session::{Session, SessionSnapshot};
#[cfg(feature = "file-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "file-store")))]
pub use store::{Saved, SessionStore, StoreError};
#[cfg(feature = "file-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "file-store")))]
pub use writer::{Flushed, StoreWriter};

/// The id of a stream: unique across registries and processes (a random
/// per-registry epoch plus a counter), so a session restored from an older
/// process can never name a stream of this one.
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
/// let registry = StreamRegistry::new();
/// let (a, b) = (Session::new("a"), Session::new("b"));
/// let x = registry.start(&a, Pending::new("x"), ()).unwrap();
/// let y = registry.start(&b, Pending::new("y"), ()).unwrap();
/// assert_ne!(x, y);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StreamId {
    epoch: u64,
    seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

/// What a new stream starts with: the user's message and its attachments
/// (they become the session's pending fields).
///
/// ```
/// use raceless::stream::Pending;
/// let p = Pending { message: "hello".into(), attachments: vec!["a.png".into()] };
/// assert_eq!(Pending::new("hello").message, p.message);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// The user message that started the stream.
    pub message: String,
    /// Attachment names sent with it.
    pub attachments: Vec<String>,
}

impl Pending {
    /// A pending message without attachments.
    ///
    /// ```
    /// use raceless::stream::Pending;
    /// assert!(Pending::new("hi").attachments.is_empty());
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            attachments: Vec::new(),
        }
    }
}

/// A session's active stream with its pending fields, as one value: they
/// are installed and cleared together.
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
/// let registry = StreamRegistry::new();
/// let session = Session::new("s");
/// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
/// let active = session.active().unwrap();
/// assert_eq!((active.id, active.pending_message.as_deref()), (id, Some("hi")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ActiveStream {
    /// The stream.
    pub id: StreamId,
    /// The message that started it (the seed's `pending_user_message`).
    pub pending_message: Option<String>,
    /// Its attachments (the seed's `pending_attachments`).
    pub attachments: Vec<String>,
    /// When it started, by the registry's clock (`pending_started_at`).
    pub started_at: SystemTime,
}

/// The session already has a live stream (the seed's HTTP 409 "session
/// already has an active stream").
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
/// let registry = StreamRegistry::new();
/// let session = Session::new("s");
/// let id = registry.start(&session, Pending::new("a"), ()).unwrap();
/// let busy = registry.start(&session, Pending::new("b"), ()).unwrap_err();
/// assert_eq!(busy.active, id);
/// assert!(busy.to_string().contains("active stream"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("session already has an active stream ({active})")]
pub struct Busy {
    /// The live stream that holds the session.
    pub active: StreamId,
}

/// The error a save hook may return (logged, never propagated): the
/// crate's one callback error, [`CallbackError`].
///
/// ```
/// #[allow(deprecated)]
/// let e: raceless::stream::HookError = "disk full".into();
/// assert_eq!(e.to_string(), "disk full");
/// ```
#[deprecated(
    since = "0.2.0",
    note = "use `raceless::CallbackError` (one error type for every callback)"
)]
pub type HookError = CallbackError;

/// A save hook: receives the snapshot of every slot change.
pub(crate) type SaveHook =
    std::sync::Arc<dyn Fn(&SessionSnapshot) -> Result<(), CallbackError> + Send + Sync>;

/// Options of a [`StreamRegistry`] or a `baseline::MutexStreams`: the clock
/// that stamps `started_at` and an optional save hook.
///
/// ```
/// use raceless::clock::ManualClock;
/// use raceless::stream::{Pending, Session, StreamOptions, StreamRegistry};
/// use std::sync::{Arc, Mutex};
///
/// let saved = Arc::new(Mutex::new(Vec::new()));
/// let log = saved.clone();
/// let registry: StreamRegistry<()> = StreamRegistry::with_options(
///     StreamOptions::new()
///         .clock(ManualClock::new())
///         .save_hook(move |snap| {
///             log.lock().unwrap().push(snap.version);
///             Ok(())
///         }),
/// );
/// let session = Session::new("s");
/// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
/// assert_eq!(session.active().unwrap().started_at, ManualClock::start());
/// registry.finish(&session, id);
/// assert_eq!(*saved.lock().unwrap(), vec![1, 2]);
/// ```
#[derive(Clone)]
pub struct StreamOptions {
    clock: SharedClock,
    save_hook: Option<SaveHook>,
}

impl StreamOptions {
    /// The system clock and no save hook.
    ///
    /// ```
    /// let _ = raceless::stream::StreamOptions::new();
    /// ```
    pub fn new() -> Self {
        Self {
            clock: crate::clock::system_clock(),
            save_hook: None,
        }
    }

    /// The clock that stamps [`ActiveStream::started_at`].
    ///
    /// ```
    /// use raceless::{clock::ManualClock, stream::StreamOptions};
    /// let _ = StreamOptions::new().clock(ManualClock::new());
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// A hook called with the session's snapshot after every slot change
    /// (start, cleanup, finish), outside every guard. Hooks of concurrent
    /// changes may run in any order (use a store that keeps the highest
    /// version, like `SessionStore`); an error or a panic is logged with
    /// `tracing` and otherwise ignored, like the seed's `try: save()`.
    ///
    /// ```
    /// use raceless::stream::StreamOptions;
    /// let _ = StreamOptions::new().save_hook(|snap| {
    ///     println!("{} is at version {}", snap.session_id, snap.version);
    ///     Ok(())
    /// });
    /// ```
    pub fn save_hook(
        mut self,
        hook: impl Fn(&SessionSnapshot) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.save_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Splits the options into the clock and the save hooks (an RCU
    /// listener list: hooks run outside every guard, panics are isolated).
    pub(crate) fn into_parts(self) -> (SharedClock, Saves) {
        let hooks = Listeners::new();
        if let Some(hook) = self.save_hook {
            hooks.add(save_listener(hook));
        }
        (self.clock, Saves(hooks))
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("save_hook", &self.save_hook.is_some())
            .finish_non_exhaustive()
    }
}

/// Wraps a save hook as a listener: its error is logged, like the seed's
/// `try: session.save() except: pass`, and never propagated.
pub(crate) fn save_listener(hook: SaveHook) -> impl Fn(&SessionSnapshot) + Send + Sync + 'static {
    move |snapshot| {
        if let Err(error) = hook(snapshot) {
            tracing::warn!(
                session = %snapshot.session_id,
                version = snapshot.version,
                %error,
                "save hook failed"
            );
        }
    }
}

/// The save hooks of a registry.
pub(crate) struct Saves(pub(crate) Listeners<SessionSnapshot>);

impl Saves {
    /// Calls every save hook with `snapshot()` (built only if there is a
    /// hook). Must be called with no guard held; a panicking hook is
    /// isolated and logged by the listener list. (The baselines' path; the
    /// lock-free registry builds the snapshot under its pin and calls
    /// [`Saves::notify`].)
    #[cfg(feature = "baselines")]
    pub(crate) fn save(&self, snapshot: impl FnOnce() -> SessionSnapshot) {
        if !self.0.is_empty() {
            self.0.notify(&snapshot());
        }
    }

    /// `snapshot()` if there is a save hook (built where the value is at
    /// hand, e.g. under an epoch pin), for [`Saves::notify`] once the pin
    /// is gone.
    pub(crate) fn snapshot(
        &self,
        snapshot: impl FnOnce() -> SessionSnapshot,
    ) -> Option<SessionSnapshot> {
        (!self.0.is_empty()).then(snapshot)
    }

    /// Calls every save hook with `snapshot`, if there is one. Must be
    /// called with no guard or pin held.
    pub(crate) fn notify(&self, snapshot: Option<SessionSnapshot>) {
        if let Some(snapshot) = snapshot {
            self.0.notify(&snapshot);
        }
    }
}

/// The operations of the `stream` component, implemented by the lock-free
/// [`StreamRegistry`] and by `baseline::MutexStreams` (the seed's fix;
/// feature `baselines`), so
/// tests and benchmarks are written once.
///
/// A session is meant to be used with one registry: a stream of another
/// registry is not live in this one, so this one treats it as stale.
///
/// ```
/// use raceless::stream::{Pending, Session, StreamOptions, StreamRegistry, StreamSlots};
///
/// fn cycle<T: StreamSlots<u32>>() {
///     let slots = T::with_options(StreamOptions::new());
///     let session = Session::new("s");
///     let id = slots.start(&session, Pending::new("hi"), 7).unwrap();
///     assert!(slots.is_live(id) && slots.len() == 1);
///     assert!(slots.finish(&session, id));
///     assert!(slots.is_empty());
/// }
/// cycle::<StreamRegistry<u32>>();
/// #[cfg(feature = "baselines")]
/// cycle::<raceless::baseline::MutexStreams<u32>>();
/// ```
pub trait StreamSlots<S>: Send + Sync {
    /// A new, empty registry.
    fn with_options(options: StreamOptions) -> Self
    where
        Self: Sized;

    /// Starts `stream` on `session` unless the session's stream is live
    /// (then `Err(Busy)` and `stream` is dropped). A stale stream is
    /// replaced. Of concurrent starts on one session exactly one wins; a
    /// loser leaves nothing registered.
    fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy>;

    /// Empties the session's slot if its stream is no longer live; `true` if
    /// it did. Never clears a live or starting stream, never a newer one.
    fn clear_stale(&self, session: &Session) -> bool;

    /// The stream `id` ended: unregisters it and empties the session's slot
    /// if the slot still holds `id` (`true` if it did).
    fn finish(&self, session: &Session, id: StreamId) -> bool;

    /// Whether `id` is registered.
    fn is_live(&self, id: StreamId) -> bool;

    /// The number of registered streams.
    fn len(&self) -> usize;

    /// Whether no stream is registered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
