//! The `breaker` component (to be built: see its issue).
