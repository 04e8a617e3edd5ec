//! What `run` holds while the command runs: a lock (`run KEY`), a semaphore slot
//! (`run --limit N PREFIX`), a set of keys (`run KEY --also KEY2`) or a read-write lock
//! (`run --shared|--exclusive KEY`), behind one interface for the command runner.

use consul_lock::{LockGuard, MultiLockGuard, ReadGuard, SemaphorePermit, WriteGuard};

/// A held lock, semaphore slot, set of keys or read-write lock.
#[derive(Debug)]
pub(crate) enum Held {
    Lock(LockGuard),
    Slot(SemaphorePermit),
    /// Several keys (`--also`), and their names one per line (keys have no control characters).
    Set(MultiLockGuard, String),
    Read(ReadGuard),
    Write(WriteGuard),
}

impl Held {
    /// The key the command is told about: the lock's key, or our contender key `PREFIX/<session>`.
    pub(crate) fn key(&self) -> &str {
        match self {
            Held::Lock(g) => g.key(),
            Held::Slot(p) => p.key(),
            Held::Set(_, keys) => keys,
            Held::Read(g) => g.key(),
            Held::Write(g) => g.key(),
        }
    }

    pub(crate) fn session_id(&self) -> &str {
        match self {
            Held::Lock(g) => g.session_id(),
            Held::Slot(p) => p.session_id(),
            Held::Set(g, _) => g.session_id(),
            Held::Read(g) => g.session_id(),
            Held::Write(g) => g.session_id(),
        }
    }

    /// The fencing token (a lock, a writer), the admission token (a slot), or a reader's arrival.
    pub(crate) fn token(&self) -> u64 {
        match self {
            Held::Lock(g) => g.fencing_token(),
            Held::Slot(p) => p.token(),
            Held::Set(g, _) => g.fencing_token(),
            Held::Read(g) => g.arrival(),
            Held::Write(g) => g.fencing_token(),
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        match self {
            Held::Lock(g) => g.is_held(),
            Held::Slot(p) => p.is_held(),
            Held::Set(g, _) => g.is_held(),
            Held::Read(g) => g.is_held(),
            Held::Write(g) => g.is_held(),
        }
    }

    pub(crate) async fn lost(&self) {
        match self {
            Held::Lock(g) => g.lost().await,
            Held::Slot(p) => p.lost().await,
            Held::Set(g, _) => g.lost().await,
            Held::Read(g) => g.lost().await,
            Held::Write(g) => g.lost().await,
        }
    }

    pub(crate) async fn release(self) -> consul_lock::Result<()> {
        match self {
            Held::Lock(g) => g.release().await,
            Held::Slot(p) => p.release().await,
            Held::Set(g, _) => g.release().await,
            Held::Read(g) => g.release().await,
            Held::Write(g) => g.release().await,
        }
    }
}
