//! The `stream` component (to be built: see its issue).
