//! Mutex baseline of the `stream` component: the seed's fix (hermes-webui
//! #1533), translated faithfully.
//!
//! The seed keeps `STREAMS` behind `STREAMS_LOCK` and a lock per session
//! (`_get_session_agent_lock(session_id)`, a dict of locks behind its own
//! lock). Its fixed cleanup checks liveness under `STREAMS_LOCK`, then takes
//! the session's lock, **re-reads** `active_stream_id` and clears only if it
//! is unchanged. Here `start` and `finish` take the session's lock too (so
//! the baseline is correct, not the upstream start that races), and the
//! session's fields are the [`Session`]'s slot, read and written plainly
//! under that lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Lock, MutexKind, StdMutex};
use crate::clock::SharedClock;
use crate::stream::registry::IdSource;
use crate::stream::session::SlotState;
use crate::stream::session::View;
use crate::stream::{
    ActiveStream, Busy, Pending, Saves, Session, SessionSnapshot, StreamId, StreamOptions,
    StreamSlots,
};
use crate::sync::{Loaded, MapHasher, Pin};

/// One lock per session id (the seed's `_get_session_agent_lock`).
type SessionLocks<M> = HashMap<String, Arc<<M as MutexKind>::Mutex<()>>, MapHasher>;

/// The `stream` component behind mutexes: a registry lock around the live
/// streams and a lock per session (the seed's fix).
///
/// ```
/// use raceless::baseline::MutexStreams;
/// use raceless::stream::{Pending, Session, StreamOptions, StreamSlots};
///
/// let streams: MutexStreams<()> = MutexStreams::with_options(StreamOptions::new());
/// let session = Session::new("s");
/// let id = streams.start(&session, Pending::new("hi"), ()).unwrap();
/// assert!(!streams.clear_stale(&session));
/// assert!(streams.finish(&session, id));
/// ```
pub struct MutexStreams<S: Send, M: MutexKind = StdMutex> {
    /// `STREAMS` and `STREAMS_LOCK`.
    streams: M::Mutex<HashMap<StreamId, S, MapHasher>>,
    /// `_get_session_agent_lock`: one lock per session id.
    session_locks: M::Mutex<SessionLocks<M>>,
    ids: IdSource,
    clock: SharedClock,
    saves: Saves,
}

impl<S: Send + Sync + 'static, M: MutexKind> MutexStreams<S, M> {
    fn session_lock(&self, session: &Session) -> Arc<M::Mutex<()>> {
        self.session_locks.with(|locks| {
            if let Some(lock) = locks.get(session.id()) {
                return lock.clone();
            }
            locks
                .entry(session.id().to_owned())
                .or_insert_with(|| Arc::new(<M::Mutex<()> as Lock<()>>::new(())))
                .clone()
        })
    }
}

/// `start`'s step under the session's lock, shared by every mutex
/// baseline: if the slot's stream is live (`is_live`), `Busy` (the stream
/// is handed back, to be dropped after unlocking: a destructor is user
/// code); otherwise `register` the stream under a fresh id and install it.
/// Like the other `*_locked` steps, it returns the new slot's snapshot,
/// to be saved after unlocking.
pub(super) fn start_locked<'a, S>(
    session: &'a Session,
    pending: Pending,
    started_at: std::time::SystemTime,
    stream: S,
    is_live: impl Fn(StreamId) -> bool,
    register: impl FnOnce(S) -> StreamId,
) -> Result<(StreamId, impl FnOnce() -> SessionSnapshot + 'a), (Busy, S)> {
    let (current, emptied) = session.slot.load_owned();
    let current = View {
        value: &current,
        emptied,
    };
    if let Some(active) = current.active_id() {
        if is_live(active) {
            return Err((Busy { active }, stream));
        }
    }
    let id = register(stream);
    let next = current.next(Some(ActiveStream {
        id,
        pending_message: Some(pending.message),
        attachments: pending.attachments,
        started_at,
    }));
    drop(session.slot.swap(next.clone()));
    Ok((id, move || session.snapshot_of(View::installed(&next))))
}

/// `clear_stale`'s step under the session's lock: empties the slot if it
/// still holds `stream_id` (judged stale before locking).
pub(super) fn clear_locked(
    session: &Session,
    stream_id: StreamId,
) -> Option<impl FnOnce() -> SessionSnapshot + '_> {
    let pin = Pin::new();
    let current = session.slot.load(&pin);
    if View::of(&current).active_id() != Some(stream_id) {
        return None;
    }
    Some(empty_locked(session, &current, &pin))
}

/// `finish`'s step under the session's lock: empties the slot if it holds
/// `id`.
pub(super) fn finish_locked(
    session: &Session,
    id: StreamId,
) -> Option<impl FnOnce() -> SessionSnapshot + '_> {
    let pin = Pin::new();
    let current = session.slot.load(&pin);
    if !View::of(&current).holds(id) {
        return None;
    }
    Some(empty_locked(session, &current, &pin))
}

/// Empties the slot by marking its value `current` *emptied*, as the
/// lock-free registry does (no allocation: the baselines pay no more for
/// the shared [`Session`] slot than the type under test). The session's
/// lock excludes every other writer of the slot, so the mark succeeds.
/// Returns the emptied slot's snapshot, to be taken after unlocking.
fn empty_locked<'s>(
    session: &'s Session,
    current: &Loaded<'_, SlotState>,
    pin: &Pin,
) -> impl FnOnce() -> SessionSnapshot + 's {
    let marked = session.empty(current, pin);
    debug_assert!(marked, "the session's lock excludes other writers");
    let (value, emptied) = session.slot.load_owned();
    move || {
        session.snapshot_of(View {
            value: &value,
            emptied,
        })
    }
}

impl<S: Send + Sync + 'static, M: MutexKind> StreamSlots<S> for MutexStreams<S, M> {
    fn with_options(options: StreamOptions) -> Self {
        let (clock, saves) = options.into_parts();
        Self {
            streams: Lock::new(HashMap::default()),
            session_locks: Lock::new(HashMap::default()),
            ids: IdSource::new(),
            clock,
            saves,
        }
    }

    fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy> {
        let started_at = self.clock.now();
        let installed = self.session_lock(session).with(|()| {
            start_locked(
                session,
                pending,
                started_at,
                stream,
                |id| self.is_live(id),
                |stream| {
                    let id = self.ids.next();
                    self.streams.with(|streams| streams.insert(id, stream));
                    id
                },
            )
        });
        let (id, snapshot) = installed.map_err(|(busy, _stream)| busy)?;
        self.saves.save(snapshot);
        Ok(id)
    }

    fn clear_stale(&self, session: &Session) -> bool {
        let Some(stream_id) = session.active_id() else {
            return false;
        };
        if self.is_live(stream_id) {
            return false;
        }
        // Re-read under the session's lock: a start may have replaced it.
        let cleared = self
            .session_lock(session)
            .with(|()| clear_locked(session, stream_id));
        match cleared {
            Some(snapshot) => {
                self.saves.save(snapshot);
                true
            }
            None => false,
        }
    }

    fn finish(&self, session: &Session, id: StreamId) -> bool {
        let emptied = self
            .session_lock(session)
            .with(|()| finish_locked(session, id));
        // Dropped after unlocking: a stream's destructor is user code.
        let stream = self.streams.with(|streams| streams.remove(&id));
        drop(stream);
        match emptied {
            Some(snapshot) => {
                self.saves.save(snapshot);
                true
            }
            None => false,
        }
    }

    fn is_live(&self, id: StreamId) -> bool {
        self.streams.with(|streams| streams.contains_key(&id))
    }

    fn len(&self) -> usize {
        self.streams.with(|streams| streams.len())
    }
}

impl<S: Send, M: MutexKind> std::fmt::Debug for MutexStreams<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexStreams")
            .field("mutex", &M::NAME)
            .finish_non_exhaustive()
    }
}
