//! Guarded writes on a [`WriteGuard`] and a [`ReadGuard`]: `put`, `delete` and `txn`, committed
//! only while the lock is held (the one implementation is `primitive::guarded`). A writer's fence is
//! `check-session` on the key; a reader's on its place in line (held by its session exactly while
//! it reads). The lock's key and its line are the lock's own and cannot be written.

use std::sync::Arc;

use crate::primitive::guarded::{guarded_writes, Fence, Fenced, Guard};
use crate::primitive::hold::Hold;
use crate::rwlock::guard::{ReadGuard, WriteGuard};
use crate::rwlock::layout;

/// A read-write lock's hold as a guarded write sees it: the held key (the lock's key for a writer,
/// the place for a reader) checked, the lock's key and its line refused.
struct RwFence {
    hold: Arc<Hold>,
    key: String,
    line: String,
}

impl RwFence {
    fn shared(hold: &Arc<Hold>, key: &str) -> Arc<dyn Fenced> {
        Arc::new(RwFence { hold: hold.clone(), key: key.to_owned(), line: layout::line(key) })
    }
}

impl Fenced for RwFence {
    fn fence(&self) -> Fence<'_> {
        Fence {
            session: &self.hold.session,
            held: vec![self.hold.key.as_str()],
            reserved: vec![self.key.clone(), self.line.clone(), format!("{}/.consul-lock-queue", self.key)],
            name: &self.key,
        }
    }

    fn fence_held(&self) -> bool {
        self.hold.is_held()
    }

    fn write_rejected(&self) {
        Fenced::write_rejected(&*self.hold);
    }
}

impl Guard for WriteGuard {
    fn fenced(&self) -> Arc<dyn Fenced> {
        RwFence::shared(&self.hold, &self.hold.key)
    }
}

impl Guard for ReadGuard {
    fn fenced(&self) -> Arc<dyn Fenced> {
        RwFence::shared(&self.hold, &self.key)
    }
}

guarded_writes!(WriteGuard, "write lock", "let guard = consul_lock::RwLock::new(\"datasets/users\").write().await?;");
guarded_writes!(ReadGuard, "read lock", "let guard = consul_lock::RwLock::new(\"datasets/users\").read().await?;");
