//! Guarded writes on a [`MultiLockGuard`]: `put`, `delete` and `txn`, committed only while every
//! key of the set is still ours (one `check-session` per key; the one implementation is
//! `primitive::guarded`).

use std::sync::Arc;

use crate::multilock::guard::{MultiHold, MultiLockGuard};
use crate::primitive::guarded::{guarded_writes, Fence, Fenced, Guard};

impl Fenced for MultiHold {
    fn fence(&self) -> Fence<'_> {
        let queues = self.keys.iter().map(|k| crate::consul::key::queue_prefix(k).trim_end_matches('/').to_owned());
        Fence {
            session: &self.session,
            held: self.keys.iter().map(String::as_str).collect(),
            reserved: queues.collect(),
            name: &self.name,
        }
    }

    fn fence_held(&self) -> bool {
        self.is_held()
    }

    fn write_rejected(&self) {
        self.mark_lost("a guarded write found a key deleted or held by another session");
    }
}

impl Guard for MultiLockGuard {
    fn fenced(&self) -> Arc<dyn Fenced> {
        self.hold.clone()
    }
}

guarded_writes!(MultiLockGuard, "set", "let guard = consul_lock::MultiLock::new([\"a\", \"b\"]).hold().await?;");
