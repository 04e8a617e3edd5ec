//! Guarded writes on a [`SemaphorePermit`]: `put`, `delete` and `txn`, committed only while the
//! slot is held (our contender key still ours; the one implementation is `primitive::guarded`).
//! Everything under the semaphore's prefix is the semaphore's own and cannot be written.

use std::sync::Arc;

use crate::primitive::guarded::{guarded_writes, Fence, Fenced, Guard};
use crate::semaphore::permit::{Permit, SemaphorePermit};

impl Fenced for Permit {
    fn fence(&self) -> Fence<'_> {
        Fence {
            session: &self.session,
            held: vec![self.contender.as_str()],
            reserved: vec![self.layout.prefix.clone()],
            name: &self.layout.prefix,
        }
    }

    fn fence_held(&self) -> bool {
        self.is_held()
    }

    fn write_rejected(&self) {
        self.mark_lost("a guarded write found our contender key deleted or held by another session");
    }
}

impl Guard for SemaphorePermit {
    fn fenced(&self) -> Arc<dyn Fenced> {
        self.permit.clone()
    }
}

guarded_writes!(SemaphorePermit, "slot", "let guard = consul_lock::Semaphore::new(\"jobs/encoder\", 3).hold().await?;");
