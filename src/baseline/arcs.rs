//! Mutex baseline of the `arcs` component (to be built: see its issue).
