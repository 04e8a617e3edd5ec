//! Guarded writes on a [`Leadership`]: `put`, `delete` and `txn`, committed only while still
//! leader (the one implementation is `primitive::guarded`). The election's own key changes only
//! through [`Leadership::proclaim`].

use std::sync::Arc;

use crate::election::leadership::Leadership;
use crate::primitive::guarded::{guarded_writes, Fenced, Guard};

impl Guard for Leadership {
    fn fenced(&self) -> Arc<dyn Fenced> {
        self.guard().hold.clone()
    }
}

guarded_writes!(
    Leadership,
    "leadership",
    "let guard = consul_lock::Election::new(\"service/leader\").campaign(b\"me\".to_vec()).await?;"
);
