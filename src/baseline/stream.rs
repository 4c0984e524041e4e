//! Mutex baseline of the `stream` component (to be built: see its issue).
