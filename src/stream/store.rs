//! A small file store for session snapshots that keeps the highest version.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Session, SessionSnapshot};

/// An error of the [`SessionStore`].
///
/// ```
/// use raceless::stream::{SessionStore, StoreError};
/// let dir = std::env::temp_dir();
/// let store = SessionStore::open(&dir).unwrap();
/// assert!(matches!(store.load("../etc"), Err(StoreError::InvalidSessionId(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The session id cannot name a file: it must be 1–128 ASCII letters,
    /// digits, `-` or `_`.
    #[error("invalid session id {0:?}: use 1-128 ASCII letters, digits, '-' or '_'")]
    InvalidSessionId(String),
    /// Reading or writing a file failed.
    #[error("session store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored file is not a valid snapshot, or a snapshot failed to encode.
    #[error("session store JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What [`SessionStore::save`] did.
///
/// ```
/// use raceless::stream::Saved;
/// assert_ne!(Saved::Written, Saved::Superseded { stored: 3 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Saved {
    /// The snapshot is now the stored state.
    Written,
    /// A snapshot of the same or a newer version is already stored; this
    /// one was dropped.
    Superseded {
        /// The version that stays stored.
        stored: u64,
    },
}

/// The highest version stored per session, `None` until read from disk.
type VersionCell = Arc<Mutex<Option<u64>>>;

/// Session snapshots as one JSON file per session (`<dir>/<id>.json`),
/// keeping the highest version: a late save of an older state never
/// overwrites a newer one.
///
/// Ordering of concurrent saves: each session has a lock in the store;
/// under it a save compares its version with the highest one stored
/// (read from the file the first time) and, only if it is newer, writes a
/// temporary file, syncs it and renames it over `<id>.json` (atomic on
/// POSIX: a reader sees the old or the new file, never a torn one). The
/// lock orders compare-and-rename steps of one process; it is not a lock
/// between processes (one server process owns its sessions directory).
/// File I/O is blocking work, so a mutex is the right tool here: it is not
/// on the registry's lock-free path, and it is only taken by save hooks,
/// which run outside every guard of the registry.
///
/// ```
/// use raceless::stream::{Pending, Saved, Session, SessionStore, StreamOptions, StreamRegistry};
/// use std::sync::Arc;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SessionStore::open(dir.path()).unwrap());
/// let hook_store = store.clone();
/// let registry = StreamRegistry::with_options(StreamOptions::new().save_hook(move |snap| {
///     hook_store.save(snap)?;
///     Ok(())
/// }));
/// let session = store.session("chat-1").unwrap(); // new: nothing saved yet
/// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
/// assert_eq!(store.load("chat-1").unwrap(), Some(session.snapshot()));
///
/// // A late save of an older state is dropped.
/// let mut old = session.snapshot();
/// old.version = 0;
/// old.active = None;
/// assert_eq!(store.save(&old).unwrap(), Saved::Superseded { stored: 1 });
/// assert_eq!(store.load("chat-1").unwrap().unwrap().active.unwrap().id, id);
/// ```
#[derive(Debug)]
pub struct SessionStore {
    dir: PathBuf,
    versions: Mutex<HashMap<String, VersionCell>>,
}

impl SessionStore {
    /// A store in `dir`, created if missing.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let _store = raceless::stream::SessionStore::open(dir.path().join("sessions")).unwrap();
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            versions: Mutex::new(HashMap::new()),
        })
    }

    /// The file of session `id`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// assert!(store.path("s1").unwrap().ends_with("s1.json"));
    /// assert!(store.path("a/b").is_err());
    /// ```
    pub fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(StoreError::InvalidSessionId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// The stored snapshot of session `id`, if any.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// assert_eq!(store.load("nobody").unwrap(), None);
    /// ```
    pub fn load(&self, id: &str) -> Result<Option<SessionSnapshot>, StoreError> {
        let path = self.path(id)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Session `id` as stored ([`Session::restore`]), or a new one if none
    /// is. Its stream, saved by a previous process, is stale.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// assert_eq!(store.session("s").unwrap().version(), 0);
    /// ```
    pub fn session(&self, id: &str) -> Result<Session, StoreError> {
        Ok(match self.load(id)? {
            Some(snapshot) => Session::restore(snapshot),
            None => Session::new(id),
        })
    }

    /// Saves `snapshot` unless the same or a newer version of its session
    /// is stored already (then [`Saved::Superseded`], nothing written).
    ///
    /// ```
    /// use raceless::stream::{Saved, Session, SessionStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SessionStore::open(dir.path()).unwrap();
    /// let snap = Session::new("s").snapshot();
    /// assert_eq!(store.save(&snap).unwrap(), Saved::Written);
    /// assert_eq!(store.save(&snap).unwrap(), Saved::Superseded { stored: 0 });
    /// ```
    pub fn save(&self, snapshot: &SessionSnapshot) -> Result<Saved, StoreError> {
        let path = self.path(&snapshot.session_id)?;
        let cell = self
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(snapshot.session_id.clone())
            .or_default()
            .clone();
        // The per-session lock: compare, write, rename as one step.
        let mut stored = cell.lock().unwrap_or_else(PoisonError::into_inner);
        if stored.is_none() {
            *stored = self.load(&snapshot.session_id)?.map(|s| s.version);
        }
        if let Some(version) = *stored {
            if version >= snapshot.version {
                tracing::debug!(
                    session = %snapshot.session_id,
                    version = snapshot.version,
                    stored = version,
                    "late save dropped: a newer state is stored"
                );
                return Ok(Saved::Superseded { stored: version });
            }
        }
        let json = serde_json::to_vec_pretty(snapshot)?;
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", snapshot.session_id, snapshot.version));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        *stored = Some(snapshot.version);
        Ok(Saved::Written)
    }
}
