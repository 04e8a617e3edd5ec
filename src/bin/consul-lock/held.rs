//! What `run` holds while the command runs: a lock (`run KEY`), a semaphore slot
//! (`run --limit N PREFIX`) or a set of keys (`run KEY --also KEY2`), behind one interface for the
//! command runner.

use consul_lock::{LockGuard, MultiLockGuard, SemaphorePermit};

/// A held lock, semaphore slot or set of keys.
#[derive(Debug)]
pub(crate) enum Held {
    Lock(LockGuard),
    Slot(SemaphorePermit),
    /// Several keys (`--also`), and their names one per line (keys have no control characters).
    Set(MultiLockGuard, String),
}

impl Held {
    /// The key the command is told about: the lock's key, or our contender key `PREFIX/<session>`.
    pub(crate) fn key(&self) -> &str {
        match self {
            Held::Lock(g) => g.key(),
            Held::Slot(p) => p.key(),
            Held::Set(_, keys) => keys,
        }
    }

    pub(crate) fn session_id(&self) -> &str {
        match self {
            Held::Lock(g) => g.session_id(),
            Held::Slot(p) => p.session_id(),
            Held::Set(g, _) => g.session_id(),
        }
    }

    /// The fencing token (a lock) or the admission token (a slot).
    pub(crate) fn token(&self) -> u64 {
        match self {
            Held::Lock(g) => g.fencing_token(),
            Held::Slot(p) => p.token(),
            Held::Set(g, _) => g.fencing_token(),
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        match self {
            Held::Lock(g) => g.is_held(),
            Held::Slot(p) => p.is_held(),
            Held::Set(g, _) => g.is_held(),
        }
    }

    pub(crate) async fn lost(&self) {
        match self {
            Held::Lock(g) => g.lost().await,
            Held::Slot(p) => p.lost().await,
            Held::Set(g, _) => g.lost().await,
        }
    }

    pub(crate) async fn release(self) -> consul_lock::Result<()> {
        match self {
            Held::Lock(g) => g.release().await,
            Held::Slot(p) => p.release().await,
            Held::Set(g, _) => g.release().await,
        }
    }
}
