//! Mutex baseline of the `bus` component (to be built: see its issue).
