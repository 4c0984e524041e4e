//! Mutex baseline of the `breaker` component (to be built: see its issue).
