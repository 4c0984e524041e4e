//! The `changeset` component (to be built: see its issue).
