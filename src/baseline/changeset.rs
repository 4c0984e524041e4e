//! Mutex baseline of the `changeset` component: the seed's fix (one lock
//! around the open-changeset list), extended to the whole store so that it
//! is correct — the seed read the latest id under the lock and recorded
//! outside it, which still lets an entry land in a sealed changeset.
//! A [`Recorder`](crate::changeset::Recorder) on it records through
//! `record_change` (the trait's default `record_leased`): the lock's order
//! is the commit order, so a recorder's entries keep its order; `take` and
//! `len` free and count whole changesets under the lock.

use std::collections::HashMap;
use std::fmt;

use super::{Lock, MutexKind, StdMutex};
use crate::changeset::{ChangesetError, ChangesetId, ChangesetStore};

struct Set<C> {
    entries: Vec<C>,
    sealed: bool,
}

struct State<C> {
    /// Open changesets, oldest first (the seed's `_active_changeset_ids`).
    open: Vec<ChangesetId>,
    /// The seed's `_changeset_store`.
    sets: HashMap<ChangesetId, Set<C>, foldhash::fast::RandomState>,
    next_id: u64,
}

/// A changeset log with its whole state behind one mutex `M` (the seed's
/// `threading.Lock`, held for the whole operation).
///
/// ```
/// use raceless::baseline::MutexChangesets;
/// use raceless::changeset::ChangesetStore;
///
/// let log = MutexChangesets::<&str>::new();
/// let a = log.start_changeset();
/// assert_eq!(log.record_change("x"), Ok(a));
/// log.seal(a).unwrap();
/// assert_eq!(log.changes(a), Some(vec!["x"]));
/// ```
pub struct MutexChangesets<C, M: MutexKind = StdMutex>
where
    C: Send,
{
    state: M::Mutex<State<C>>,
}

impl<C: Clone + Send + Sync + 'static, M: MutexKind> MutexChangesets<C, M> {
    /// An empty log.
    ///
    /// ```
    /// use raceless::baseline::MutexChangesets;
    /// use raceless::changeset::ChangesetStore;
    /// assert!(MutexChangesets::<u8>::new().active().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            state: M::Mutex::new(State {
                open: Vec::new(),
                sets: HashMap::default(),
                next_id: 1,
            }),
        }
    }
}

impl<C: Clone + Send + Sync + 'static, M: MutexKind> Default for MutexChangesets<C, M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Send, M: MutexKind> fmt::Debug for MutexChangesets<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.state.with(|s| s.open.clone());
        f.debug_struct("MutexChangesets")
            .field("mutex", &M::NAME)
            .field("open", &open)
            .finish()
    }
}

impl<C: Clone + Send + Sync + 'static, M: MutexKind> ChangesetStore<C> for MutexChangesets<C, M> {
    fn start_changeset(&self) -> ChangesetId {
        self.state.with(|s| {
            let id = ChangesetId::from_raw(s.next_id);
            s.next_id += 1;
            s.sets.insert(
                id,
                Set {
                    entries: Vec::new(),
                    sealed: false,
                },
            );
            s.open.push(id);
            id
        })
    }

    fn record_change(&self, entry: C) -> Result<ChangesetId, ChangesetError> {
        self.state.with(|s| {
            let id = *s.open.last().ok_or(ChangesetError::NoActiveChangeset)?;
            match s.sets.get_mut(&id) {
                Some(set) => {
                    set.entries.push(entry);
                    Ok(id)
                }
                None => Err(ChangesetError::NoActiveChangeset),
            }
        })
    }

    fn seal(&self, id: ChangesetId) -> Result<(), ChangesetError> {
        self.state.with(|s| {
            let set = s
                .sets
                .get_mut(&id)
                .ok_or(ChangesetError::UnknownChangeset(id))?;
            if !set.sealed {
                set.sealed = true;
                s.open.retain(|&o| o != id);
            }
            Ok(())
        })
    }

    fn changes(&self, id: ChangesetId) -> Option<Vec<C>> {
        self.state
            .with(|s| s.sets.get(&id).map(|set| set.entries.clone()))
    }

    fn active(&self) -> Vec<ChangesetId> {
        self.state.with(|s| s.open.iter().rev().copied().collect())
    }

    fn len(&self) -> usize {
        self.state.with(|s| s.sets.len())
    }

    fn take(&self, id: ChangesetId) -> Result<Vec<C>, ChangesetError> {
        self.state.with(|s| match s.sets.get(&id) {
            None => Err(ChangesetError::UnknownChangeset(id)),
            Some(set) if !set.sealed => Err(ChangesetError::StillOpen(id)),
            Some(_) => s
                .sets
                .remove(&id)
                .map(|set| set.entries)
                .ok_or(ChangesetError::UnknownChangeset(id)),
        })
    }
}
