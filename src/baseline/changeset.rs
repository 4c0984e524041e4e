//! Mutex baseline of the `changeset` component (to be built: see its issue).
