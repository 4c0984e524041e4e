//! [`StreamGuard`]: a started stream that finishes itself when dropped.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Busy, Pending, Session, StreamId, StreamRegistry, StreamSlots};

/// A live stream owned by its handler: dropping the guard finishes the
/// stream ([`StreamRegistry::finish`] on its session), so a handler that
/// is cancelled — an SSE client that disconnects, a task that is aborted, a
/// `select!` that drops the other branch — frees its session instead of
/// leaving it busy forever.
///
/// Made by [`StreamRegistry::start_guard`]. The guard owns an `Arc` of the
/// registry and of the session, so it is `Send + Sync + 'static` (for
/// `S: Send + Sync + 'static`): it can be moved into a spawned task or into
/// the body stream of a response.
///
/// # Drop rule
///
/// Dropping the guard is exactly one [`StreamGuard::finish`] if none was
/// made before: it empties the session's slot if the slot still holds this
/// stream, then unregisters it. That is synchronous and never waits on
/// another thread (one compare-and-swap on the slot, one sharded-map
/// removal), so dropping the guard at any `.await` of its owner — i.e.
/// cancelling the future at any point — leaves the registry and the session
/// consistent: either the stream is live and in its slot, or it is
/// unregistered and its slot is empty (or holds a newer stream). The
/// registry's save hooks run inside the drop, on the dropping thread (they
/// must not block: use a `StoreWriter`, whose `save` only enqueues).
/// A panicking hook is caught, so a drop never panics because of it.
///
/// [`StreamGuard::detach`] hands the duty to finish over to the caller.
///
/// The guard works with any [`StreamSlots`] implementation (`R`, by default
/// the lock-free [`StreamRegistry`]; [`StreamGuard::start`] makes one for
/// the baseline too), so tests of cancellation run on every implementation.
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
/// use std::sync::Arc;
///
/// let registry = Arc::new(StreamRegistry::new());
/// let session = Arc::new(Session::new("chat-1"));
/// let guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
/// let id = guard.id();
/// // A second message while the stream runs: the seed's 409.
/// assert_eq!(registry.start_guard(&session, Pending::new("b"), ()).unwrap_err().active, id);
/// // The handler is cancelled: its guard is dropped and frees the session.
/// drop(guard);
/// assert!(session.active().is_none() && !registry.is_live(id));
/// ```
#[must_use = "dropping the guard finishes the stream at once"]
pub struct StreamGuard<S: Send + Sync + 'static, R: StreamSlots<S> = StreamRegistry<S>> {
    registry: Arc<R>,
    session: Arc<Session>,
    id: StreamId,
    /// `true` once this guard has finished (or detached) its stream: the
    /// drop then does nothing. Only the owner of the guard touches it.
    done: bool,
    /// The guard holds no `S` (the registry does).
    _stream: PhantomData<fn() -> S>,
}

impl<S: Send + Sync + 'static> StreamRegistry<S> {
    /// [`StreamRegistry::start`], returning a [`StreamGuard`] that finishes
    /// the stream when it is dropped (or explicitly, with
    /// [`StreamGuard::finish`]).
    ///
    /// The registry and the session are taken as `&Arc` so the guard can
    /// own clones of them and be `'static` (move it into a task or a
    /// response body). Same protocol, linearization points and progress as
    /// [`StreamRegistry::start`]: lock-free on the slot, plus one insert
    /// into the sharded registry map (a shard write lock held for the
    /// insert only, with no user code).
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    ///
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let mut guard = registry.start_guard(&session, Pending::new("hi"), "worker").unwrap();
    /// std::thread::spawn(move || {
    ///     // ... stream the answer ...
    ///     assert!(guard.finish()); // explicit; the drop then does nothing
    /// })
    /// .join()
    /// .unwrap();
    /// assert!(registry.is_empty() && session.active().is_none());
    /// ```
    pub fn start_guard(
        self: &Arc<Self>,
        session: &Arc<Session>,
        pending: Pending,
        stream: S,
    ) -> Result<StreamGuard<S>, Busy> {
        StreamGuard::start(self, session, pending, stream)
    }
}

impl<S: Send + Sync + 'static, R: StreamSlots<S>> StreamGuard<S, R> {
    /// [`StreamSlots::start`] on any implementation, returning its guard
    /// ([`StreamRegistry::start_guard`] is this for the lock-free registry).
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamGuard, StreamOptions, StreamSlots};
    /// use std::sync::Arc;
    ///
    /// # #[cfg(feature = "baselines")] {
    /// use raceless::baseline::MutexStreams; // feature `baselines`
    /// let streams: Arc<MutexStreams<()>> = Arc::new(MutexStreams::with_options(StreamOptions::new()));
    /// let session = Arc::new(Session::new("s"));
    /// let guard = StreamGuard::start(&streams, &session, Pending::new("hi"), ()).unwrap();
    /// drop(guard);
    /// assert!(streams.is_empty() && session.active().is_none());
    /// # }
    /// ```
    pub fn start(
        registry: &Arc<R>,
        session: &Arc<Session>,
        pending: Pending,
        stream: S,
    ) -> Result<Self, Busy> {
        let id = StreamSlots::start(&**registry, session, pending, stream)?;
        Ok(StreamGuard {
            registry: Arc::clone(registry),
            session: Arc::clone(session),
            id,
            done: false,
            _stream: PhantomData,
        })
    }

    /// The stream's id.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
    /// assert_eq!(session.active_id(), Some(guard.id()));
    /// ```
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The session the stream was started on.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
    /// assert_eq!(guard.session().id(), "s");
    /// ```
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The registry the stream is registered in.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let guard = registry.start_guard(&session, Pending::new("hi"), 7).unwrap();
    /// assert_eq!(guard.registry().get(guard.id()), Some(7));
    /// ```
    pub fn registry(&self) -> &Arc<R> {
        &self.registry
    }

    /// Whether this guard has finished its stream (by [`finish`](Self::finish)).
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let mut guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
    /// assert!(!guard.is_finished());
    /// guard.finish();
    /// assert!(guard.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.done
    }

    /// Finishes the stream now ([`StreamRegistry::finish`]): empties the
    /// session's slot if it still holds this stream, and unregisters it.
    /// Idempotent: the first call does it and returns whether it emptied
    /// the slot; later calls (and the drop) do nothing and return `false`.
    /// Lock-free on the slot, one sharded-map removal; runs the save hooks.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let mut guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
    /// assert!(guard.finish());
    /// assert!(!guard.finish());
    /// assert_eq!(session.version(), 2); // one start, one finish
    /// ```
    pub fn finish(&mut self) -> bool {
        if std::mem::replace(&mut self.done, true) {
            return false;
        }
        StreamSlots::finish(&*self.registry, &self.session, self.id)
    }

    /// Gives up the guard without finishing: the stream stays live and
    /// the caller must call [`StreamRegistry::finish`] with the returned id
    /// itself (or leave the stream to be judged stale after it is
    /// unregistered). Returns the id.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::Arc;
    /// let registry = Arc::new(StreamRegistry::new());
    /// let session = Arc::new(Session::new("s"));
    /// let guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
    /// let id = guard.detach();
    /// assert!(registry.is_live(id));
    /// assert!(registry.finish(&session, id));
    /// ```
    pub fn detach(mut self) -> StreamId {
        self.done = true;
        self.id
    }
}

impl<S: Send + Sync + 'static, R: StreamSlots<S>> Drop for StreamGuard<S, R> {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(
                session = self.session.id(),
                stream = %self.id,
                "stream guard dropped: finishing its stream"
            );
            self.finish();
        }
    }
}

impl<S: Send + Sync + 'static, R: StreamSlots<S>> std::fmt::Debug for StreamGuard<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGuard")
            .field("session", &self.session.id())
            .field("id", &self.id)
            .field("finished", &self.done)
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<StreamGuard<()>>();
    check::<StreamGuard<String>>();
    #[cfg(feature = "baselines")]
    check::<StreamGuard<(), crate::baseline::MutexStreams<()>>>();
}
