//! Guarded writes on a [`LockGuard`]: `put`, `delete` and `txn`, committed only while the lock is
//! held (the one implementation is `primitive::guarded`).

use std::sync::Arc;

use crate::lock::guard::LockGuard;
use crate::primitive::guarded::{guarded_writes, Fenced, Guard};

impl Guard for LockGuard {
    fn fenced(&self) -> Arc<dyn Fenced> {
        self.hold.clone()
    }
}

guarded_writes!(LockGuard, "lock", "let guard = consul_lock::EphemeralLock::new(\"deploy/web\").hold().await?;");
