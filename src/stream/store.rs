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
    /// The [`super::StoreWriter`] was shut down: it accepts no more saves.
    #[error("session store writer is shut down")]
    Closed,
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

/// Temporary files are `.<id>.<version>.tmp`.
const TMP_PREFIX: &str = ".";
const TMP_SUFFIX: &str = ".tmp";

/// The highest version stored per session, `None` until read from disk.
type VersionCell = Arc<Mutex<Option<u64>>>;

/// Session snapshots as one JSON file per session (`<dir>/<id>.json`),
/// keeping the highest version: a late save of an older state never
/// overwrites a newer one.
///
/// Ordering of concurrent saves: each session has a lock in the store;
/// under it a save compares its version with the highest one stored
/// (read from the file) and, only if it is newer, writes a temporary file,
/// syncs it, renames it over `<id>.json` (atomic on POSIX: a reader sees
/// the old or the new file, never a torn one) and syncs the directory so
/// the rename is durable. The per-session lock lives only while a save of
/// the session is in progress (memory does not grow with the number of
/// sessions ever saved); `open` prunes temporary files a crashed process
/// left behind. The
/// lock orders compare-and-rename steps of one process; it is not a lock
/// between processes (one server process owns its sessions directory).
/// File I/O is blocking work, so a mutex is the right tool here: it is not
/// on the registry's lock-free path. Every method is **blocking**; from
/// async code, save through a [`super::StoreWriter`] instead.
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
        // Temporary files of a process that died between writing and
        // renaming hold versions older than (or equal to) nothing we keep:
        // prune them.
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(dir.join(name.as_ref()));
            }
        }
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
    /// **Blocking**: the file I/O and two `fsync`s (the file, then the
    /// directory after the rename) run on the caller's thread, and a save
    /// waits for a concurrent save of the same session. Do not call it on an
    /// async executor's thread: use a [`super::StoreWriter`], whose `save`
    /// only enqueues the snapshot for a background thread.
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
        let saved = self.write(snapshot)?;
        if saved == Saved::Written {
            self.sync_dir()?;
        }
        Ok(saved)
    }

    /// The number of sessions whose highest stored version the store keeps
    /// in memory right now: only those with a save in progress (the entry
    /// is dropped when the last concurrent save of its session returns; the
    /// next save reads the version back from the file).
    ///
    /// ```
    /// use raceless::stream::{Session, SessionStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SessionStore::open(dir.path()).unwrap();
    /// store.save(&Session::new("s").snapshot()).unwrap();
    /// assert_eq!(store.cached_versions(), 0);
    /// ```
    pub fn cached_versions(&self) -> usize {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The store's directory.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// assert_eq!(store.dir(), dir.path());
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `fsync`s the directory, so renames made before are durable.
    pub(crate) fn sync_dir(&self) -> Result<(), StoreError> {
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The versioned write without the directory sync: compare with the
    /// highest stored version under the session's lock, write a temporary
    /// file, `fsync` it, rename it over `<id>.json`. The caller syncs the
    /// directory after (once per batch in the background writer).
    pub(crate) fn write(&self, snapshot: &SessionSnapshot) -> Result<Saved, StoreError> {
        let path = self.path(&snapshot.session_id)?;
        let cell = self
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(snapshot.session_id.clone())
            .or_default()
            .clone();
        let result = self.write_locked(&cell, snapshot, &path);
        self.release(&snapshot.session_id, cell);
        result
    }

    fn write_locked(
        &self,
        cell: &VersionCell,
        snapshot: &SessionSnapshot,
        path: &Path,
    ) -> Result<Saved, StoreError> {
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
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}.{}{TMP_SUFFIX}",
            snapshot.session_id, snapshot.version
        ));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        *stored = Some(snapshot.version);
        Ok(Saved::Written)
    }

    /// Drops the session's version cell if no other save holds it (the map
    /// and `cell` are its only owners; a new owner can only clone it under
    /// the map's lock, which we hold). The file holds that version, so the
    /// next save reads it back: memory stays bounded by the saves in
    /// flight.
    fn release(&self, id: &str, cell: VersionCell) {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&cell) == 2 {
            versions.remove(id);
        }
    }
}
