//! A `std::sync::Mutex` that shrugs off poisoning.
//!
//! A poisoned mutex only means another thread panicked while holding it; the data behind ours
//! (plain values) is still consistent, so a lock library keeps going rather than panic.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
