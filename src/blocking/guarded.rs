//! The blocking guards' guarded writes: `put`, `delete` and `txn`, each the async guard's
//! (`primitive::guarded`) run on the runtime thread.

/// `put`, `delete` and `txn` for a blocking guard with fields `inner` (an async guard that
/// implements `Guard`) and `rt`; `$async_guard` is the async type, for the docs.
macro_rules! blocking_guarded_writes {
    ($guard:ty, $async_guard:literal) => {
        impl $guard {
            #[doc = concat!("Set `key` to `value` only while still held (see [`crate::", $async_guard, "::put`]).")]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = concat!("As [`crate::", $async_guard, "::txn`].")]
            pub fn put(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> crate::Result<()> {
                self.txn(vec![crate::KvOp::put(key, value)])
            }

            #[doc = concat!("Delete `key` only while still held (see [`crate::", $async_guard, "::delete`]).")]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = concat!("As [`crate::", $async_guard, "::txn`].")]
            pub fn delete(&self, key: impl Into<String>) -> crate::Result<()> {
                self.txn(vec![crate::KvOp::delete(key)])
            }

            #[doc = concat!("Apply `ops` only while still held, all or none (see [`crate::", $async_guard, "::txn`]).")]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = concat!("As [`crate::", $async_guard, "::txn`].")]
            pub fn txn(&self, ops: Vec<crate::KvOp>) -> crate::Result<()> {
                let held = crate::primitive::guarded::Guard::fenced(&self.inner);
                self.rt.block_on(async move { crate::primitive::guarded::write(&*held, ops).await })?
            }
        }
    };
}
pub(super) use blocking_guarded_writes;
