//! The KV operations a guarded write carries ([`KvOp`]), and their rules: checked before any
//! request, encoded by `endpoints` in the one guarded transaction.

use crate::consul::key::{self, MAX_VALUE_BYTES};
use crate::error::{Error, Result};

/// Most operations Consul runs in one `/v1/txn` request (Consul 1.8's limit; later versions keep it
/// as the default). A guarded write spends one of them per key the guard holds, to check it.
pub const MAX_TXN_OPS: usize = 64;

/// One KV operation of a guarded write ([`LockGuard::txn`](crate::LockGuard::txn) and the same
/// method on every guard): committed together with the check that the guard still holds, so it
/// lands only while the lock is ours.
///
/// ```
/// use consul_lock::KvOp;
/// let ops = vec![KvOp::put("app/config", b"v2".to_vec()), KvOp::delete("app/config.draft")];
/// assert_eq!(ops[0].key(), "app/config");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvOp {
    /// Set `key` to `value` (created if absent; `Flags` 0).
    Put {
        /// The key (the rules of a lock key apply).
        key: String,
        /// The value, at most [`MAX_VALUE_BYTES`].
        value: Vec<u8>,
    },
    /// Delete `key` (nothing happens when it does not exist).
    Delete {
        /// The key (the rules of a lock key apply).
        key: String,
    },
}

impl KvOp {
    /// Set `key` to `value`.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        KvOp::Put { key: key.into(), value: value.into() }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        KvOp::Delete { key: key.into() }
    }

    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } => key,
        }
    }

    /// The key's rules and the value's size, before any request.
    pub(crate) fn validate(&self) -> Result<()> {
        key::validate(self.key())?;
        if let KvOp::Put { key, value } = self {
            if value.len() > MAX_VALUE_BYTES {
                return Err(Error::InvalidConfig(format!(
                    "the value for {key:?} is {} bytes; Consul stores at most {MAX_VALUE_BYTES} bytes in a key",
                    value.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys_and_values() {
        assert!(KvOp::put("a/b", b"x".to_vec()).validate().is_ok());
        assert!(KvOp::delete("a/b").validate().is_ok());
        for bad in [KvOp::delete(""), KvOp::delete("/a"), KvOp::put("a/../b", vec![]), KvOp::delete("a\nb")] {
            assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))), "{bad:?}");
        }
        let big = KvOp::put("k", vec![0; MAX_VALUE_BYTES + 1]);
        assert!(matches!(big.validate(), Err(Error::InvalidConfig(_))));
    }
}
