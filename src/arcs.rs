//! The `arcs` component (to be built: see its issue).
