//! A session and its active-stream slot.

use super::{ActiveStream, StreamId};
use crate::sync::{AtomicBool, AtomicU64, EpochCell, Loaded, Ordering, Owned, Pin};

/// One immutable value of a session's slot: the active stream with its
/// pending fields (or none) and the version of this value.
///
/// A published value is never mutated (only its live flag turns `false`
/// when its stream is unregistered); a start installs a new one with a
/// compare-and-swap against the cell's word it read (pointer and mark), an
/// emptying marks the value in place ([`View`]), so the word's identity
/// says "nothing changed since I looked". The comparer loaded that value
/// under an epoch pin, which it holds until the compare-and-swap: the value
/// cannot be freed, so its address cannot be reused, and there is no ABA.
#[derive(Debug)]
pub(crate) struct SlotState {
    /// One more than the version the slot showed when this value replaced
    /// it. Written only while the value is unpublished: a start builds its
    /// value before it pins and sets the version before each
    /// compare-and-swap attempt, from the value that attempt compares
    /// against ([`View::next_version`]); once the value is published it
    /// never changes. `Relaxed` both ways: the store happens before the
    /// publishing compare-and-swap (program order; the CAS is `SeqCst`, a
    /// release), and a reader reaches the value only through a `SeqCst`
    /// load of the slot (an acquire) that reads that CAS, so it reads the
    /// final version. A value that is never published (a start that lost)
    /// is read by nobody.
    pub(crate) version: AtomicU64,
    /// The stream and its pending fields.
    pub(crate) active: Option<ActiveStream>,
    /// For a value that a `StreamRegistry` published with its stream: the
    /// stream's *live flag*, `true` exactly while the stream is registered
    /// (the registry entry holds this value and stores `false` when it
    /// unregisters the stream, see `registry.rs`), so a cleanup reads one
    /// flag in the value it loaded instead of looking the id up. `None` for
    /// an empty slot, a restored one, or one written by the mutex baseline:
    /// the registry looks the id up.
    pub(crate) live: Option<AtomicBool>,
}

/// What a slot shows: the value its cell holds and whether the cell marks
/// that value *emptied* (`EpochCell::mark`). An emptied value shows no
/// stream at one version more than its own: `finish` and `clear_stale`
/// empty a slot by marking its value (one compare-and-swap of the cell's
/// word, no allocation) instead of installing a new empty value. A marked
/// value is only ever replaced by a new value, so a (value, mark) pair
/// never comes back while a pin keeps the value allocated.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) value: &'a SlotState,
    pub(crate) emptied: bool,
}

impl<'a> View<'a> {
    /// The view of a loaded value.
    #[inline]
    pub(crate) fn of(loaded: &'a Loaded<'_, SlotState>) -> Self {
        Self {
            value: loaded,
            emptied: loaded.marked(),
        }
    }

    /// The view of a value just installed (installs never mark).
    #[inline]
    pub(crate) fn installed(value: &'a SlotState) -> Self {
        Self {
            value,
            emptied: false,
        }
    }

    /// The version of what the slot shows (saturating: a restored snapshot
    /// at `u64::MAX` stays there rather than panic).
    #[inline]
    pub(crate) fn version(self) -> u64 {
        // Relaxed: see `SlotState::version`.
        let version = self.value.version.load(Ordering::Relaxed);
        if self.emptied {
            version.saturating_add(1)
        } else {
            version
        }
    }

    /// The version of a value that replaces this one.
    #[inline]
    pub(crate) fn next_version(self) -> u64 {
        self.version().saturating_add(1)
    }

    /// The stream the slot shows, if any.
    #[inline]
    pub(crate) fn active(self) -> Option<&'a ActiveStream> {
        if self.emptied {
            None
        } else {
            self.value.active.as_ref()
        }
    }

    #[inline]
    pub(crate) fn active_id(self) -> Option<StreamId> {
        self.active().map(|a| a.id)
    }

    #[inline]
    pub(crate) fn holds(self, id: StreamId) -> bool {
        self.active_id() == Some(id)
    }

    /// The next value: `active`, one version up, no live flag.
    #[inline]
    pub(crate) fn next(self, active: Option<ActiveStream>) -> Owned<SlotState> {
        Owned::new(SlotState {
            version: AtomicU64::new(self.next_version()),
            active,
            live: None,
        })
    }
}

impl SlotState {
    /// A value to publish `active` with its live flag set (`true`), built
    /// before the start knows what it replaces: its version is set before
    /// each compare-and-swap attempt (see [`SlotState::version`]).
    #[inline]
    pub(crate) fn unpublished_live(active: ActiveStream) -> Owned<SlotState> {
        Owned::new(SlotState {
            version: AtomicU64::new(0),
            active: Some(active),
            live: Some(AtomicBool::new(true)),
        })
    }
}

/// A saved state of a session: its active stream with the pending fields,
/// and the version of that state (every change of the slot adds one).
///
/// With the `serde` feature it is `Serialize` and `Deserialize`:
///
/// ```
/// use raceless::stream::{Pending, Session, SessionSnapshot, StreamRegistry};
///
/// let registry = StreamRegistry::new();
/// let session = Session::new("s");
/// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
/// assert_eq!(session.snapshot().version, 1);
/// # #[cfg(feature = "serde")] {
/// let json = serde_json::to_string(&session.snapshot()).unwrap();
/// let back: SessionSnapshot = serde_json::from_str(&json).unwrap();
/// assert_eq!((back.version, back.active.unwrap().id), (1, id));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionSnapshot {
    /// The session's id.
    pub session_id: String,
    /// The version of this state: 0 for a new session, one more per change.
    pub version: u64,
    /// The active stream and its pending fields, if any.
    pub active: Option<ActiveStream>,
}

/// A chat session's active-stream slot: the stream it shows and that
/// stream's pending fields, changed together in one atomic step.
///
/// A session is changed through a registry ([`super::StreamRegistry`] or the
/// baseline); it can be read directly, restored from a snapshot, and
/// cleared unconditionally ([`Session::force_clear`]).
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
/// let registry = StreamRegistry::new();
/// let session = Session::new("chat-1");
/// assert_eq!((session.id(), session.version()), ("chat-1", 0));
/// registry.start(&session, Pending::new("hi"), ()).unwrap();
/// assert_eq!(session.version(), 1);
/// ```
pub struct Session {
    id: String,
    pub(crate) slot: EpochCell<SlotState>,
}

impl Session {
    /// A new session with an empty slot at version 0.
    ///
    /// ```
    /// let session = raceless::stream::Session::new("s");
    /// assert!(session.active().is_none());
    /// ```
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            slot: EpochCell::new(SlotState {
                version: AtomicU64::new(0),
                active: None,
                live: None,
            }),
        }
    }

    /// A session restored from a snapshot (e.g. saved by a previous
    /// process). Its stream, if any, is live only if the registry it is used
    /// with holds it; a stream of a previous process never is, so it is
    /// stale and the next cleanup or start replaces it. Versions continue
    /// from the snapshot's.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let before = StreamRegistry::new();
    /// let old = Session::new("s");
    /// before.start(&old, Pending::new("hi"), ()).unwrap();
    ///
    /// let after: StreamRegistry<()> = StreamRegistry::new(); // a new process
    /// let session = Session::restore(old.snapshot());
    /// assert!(after.clear_stale(&session));
    /// assert_eq!(session.version(), 2);
    /// ```
    pub fn restore(snapshot: SessionSnapshot) -> Self {
        Self {
            id: snapshot.session_id,
            slot: EpochCell::new(SlotState {
                version: AtomicU64::new(snapshot.version),
                active: snapshot.active,
                live: None,
            }),
        }
    }

    /// The session's id.
    ///
    /// ```
    /// assert_eq!(raceless::stream::Session::new("s").id(), "s");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The active stream with its pending fields (one consistent value).
    ///
    /// ```
    /// assert!(raceless::stream::Session::new("s").active().is_none());
    /// ```
    pub fn active(&self) -> Option<ActiveStream> {
        View::of(&self.slot.load(&Pin::new())).active().cloned()
    }

    /// The active stream's id, without copying the pending fields.
    ///
    /// ```
    /// assert!(raceless::stream::Session::new("s").active_id().is_none());
    /// ```
    pub fn active_id(&self) -> Option<StreamId> {
        // An emptied slot shows no stream: one load of the cell's word, no
        // pin, no access to the value.
        if self.slot.marked() {
            return None;
        }
        View::of(&self.slot.load(&Pin::new())).active_id()
    }

    /// The version of the slot's current value.
    ///
    /// ```
    /// assert_eq!(raceless::stream::Session::new("s").version(), 0);
    /// ```
    pub fn version(&self) -> u64 {
        View::of(&self.slot.load(&Pin::new())).version()
    }

    /// A consistent snapshot of the slot (stream, pending fields, version).
    ///
    /// ```
    /// let snap = raceless::stream::Session::new("s").snapshot();
    /// assert_eq!((snap.session_id.as_str(), snap.version, snap.active), ("s", 0, None));
    /// ```
    pub fn snapshot(&self) -> SessionSnapshot {
        self.snapshot_of(View::of(&self.slot.load(&Pin::new())))
    }

    pub(crate) fn snapshot_of(&self, slot: View<'_>) -> SessionSnapshot {
        SessionSnapshot {
            session_id: self.id.clone(),
            version: slot.version(),
            active: slot.active().cloned(),
        }
    }

    /// Empties the slot **unconditionally**, whatever stream it holds, and
    /// returns what it held (an administrative reset; calls no save hook).
    ///
    /// Not a cleanup: deciding "stale" first and then calling this is
    /// exactly the seed's bug (a stream started in between is clobbered).
    /// Use a registry's `clear_stale` for that.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let session = Session::new("s");
    /// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    /// assert_eq!(session.force_clear().unwrap().id, id);
    /// assert!(session.active().is_none() && registry.is_live(id));
    /// ```
    pub fn force_clear(&self) -> Option<ActiveStream> {
        let pin = Pin::new();
        let mut current = self.slot.load(&pin);
        loop {
            let view = View::of(&current);
            let previous = view.active().cloned();
            let next = view.next(None);
            match self.slot.compare_exchange(current, next, &pin) {
                Ok(_) => return previous,
                Err((_, now)) => current = now,
            }
        }
    }

    /// Marks the slot's value *emptied* if the slot still holds `current`
    /// unmarked (see [`View`]): `true` if it did.
    #[inline]
    pub(crate) fn empty<'g>(&self, current: &Loaded<'g, SlotState>, pin: &'g Pin) -> bool {
        self.slot.mark(current, pin)
    }

    /// Installs `next` if the slot still holds `current` (pointer identity
    /// and mark):
    /// `Ok` with the installed value, or `Err` with `next` handed back and
    /// the value the slot holds now.
    #[inline]
    pub(crate) fn install<'g>(
        &self,
        current: Loaded<'g, SlotState>,
        next: Owned<SlotState>,
        pin: &'g Pin,
    ) -> Result<Loaded<'g, SlotState>, (Owned<SlotState>, Loaded<'g, SlotState>)> {
        self.slot.compare_exchange(current, next, pin)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pin = Pin::new();
        let loaded = self.slot.load(&pin);
        let slot = View::of(&loaded);
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("version", &slot.version())
            .field("active", &slot.active_id())
            .finish()
    }
}
