//! Guarded writes: KV operations committed in one Consul transaction together with a
//! `check-session` on every key a guard holds, so they land only while the lock is still ours —
//! for state kept in Consul, the fence. The one piece of code behind `put`, `delete` and `txn` on
//! every guard ([`guarded_writes!`] gives a guard those public methods).
//!
//! Why `check-session` alone, without the key's index: a held key's session is this guard's alone —
//! an own session holds nothing else, and a shared [`Session`](crate::Session) lets one holder per
//! key in this process at a time (the in-process claim, kept until the guard is released). So the
//! check passes exactly while this acquisition holds the key. An index check would add nothing but
//! a false "lost" after any plain write of the key ([`Leadership::proclaim`](crate::Leadership::proclaim),
//! an operator's `consul kv put`).

use std::sync::Arc;

use tokio::time::Instant;

use crate::consul::endpoints::{self, Guarded};
use crate::consul::key::MAX_TXN_BODY_BYTES;
use crate::consul::ops::{KvOp, MAX_TXN_OPS};
use crate::consul::retry;
use crate::error::{Error, Result};
use crate::session::lifecycle::SessionCore;

/// What a guarded write checks and must not touch.
pub(crate) struct Fence<'a> {
    pub(crate) session: &'a SessionCore,
    /// The keys the guard holds: each is checked (`check-session`) and none may be written.
    pub(crate) held: Vec<&'a str>,
    /// The primitive's own keys (a queue, a coordination key): each and everything under it is
    /// refused.
    pub(crate) reserved: Vec<String>,
    /// What the guard holds, for [`Error::LockLost`]: the lock's key, the semaphore's prefix.
    pub(crate) name: &'a str,
}

/// A held thing that guarded writes can fence on: a lock's hold, a semaphore slot, a multi-lock.
pub(crate) trait Fenced: Send + Sync {
    fn fence(&self) -> Fence<'_>;
    /// Held now, as far as this process knows (no request).
    fn fence_held(&self) -> bool;
    /// Consul rejected a guarded write: the keys are not ours any more. Report the loss.
    fn write_rejected(&self);
}

/// A public guard: where its [`Fenced`] state is.
pub(crate) trait Guard {
    fn fenced(&self) -> Arc<dyn Fenced>;
}

/// Commit `ops` only while `held` still holds its keys, in one transaction (retried for one
/// request timeout). A rejected write marks the guard lost and is [`Error::LockLost`]; nothing of
/// it was written.
pub(crate) async fn write(held: &dyn Fenced, ops: Vec<KvOp>) -> Result<()> {
    let fence = held.fence();
    let body = body(&fence, &ops)?;
    let lost = || Error::LockLost { key: fence.name.to_owned() };
    if !held.fence_held() {
        return Err(lost());
    }
    let client = &fence.session.client;
    let deadline = Instant::now() + client.request_timeout();
    match retry::until(deadline, || client.txn_guarded(body.clone())).await? {
        Guarded::Written => Ok(()),
        Guarded::NotOurs => {
            tracing::warn!(held = %fence.name, "a guarded write was rejected: the lock is no longer ours");
            held.write_rejected();
            Err(lost())
        }
    }
}

/// Validate `ops` against the fence and build the transaction, before any request.
fn body(fence: &Fence<'_>, ops: &[KvOp]) -> Result<Vec<u8>> {
    let room = MAX_TXN_OPS.saturating_sub(fence.held.len());
    if ops.is_empty() || ops.len() > room {
        return Err(Error::InvalidConfig(format!(
            "a guarded write takes 1 ..= {room} operations ({MAX_TXN_OPS} per Consul transaction, less one check per \
             held key), not {}",
            ops.len()
        )));
    }
    for op in ops {
        op.validate()?;
        refuse_own_keys(fence, op.key())?;
    }
    let body = endpoints::guarded_txn_body(&fence.held, &fence.session.id, ops);
    if body.len() > MAX_TXN_BODY_BYTES {
        return Err(Error::InvalidConfig(format!(
            "the guarded write needs {} bytes (values base64-encoded), over Consul's {MAX_TXN_BODY_BYTES}-byte \
             transaction limit",
            body.len()
        )));
    }
    Ok(body)
}

/// A guarded write must not touch the keys that make the lock: writing a held key would clear its
/// flags (Go's `consul lock` then refuses it) and deleting it would release the lock unseen.
fn refuse_own_keys(fence: &Fence<'_>, key: &str) -> Result<()> {
    if is_own_key(&fence.held, &fence.reserved, key) {
        return Err(Error::InvalidConfig(format!(
            "{key:?} is one of the keys this guard holds or queues on; a guarded write may not change it \
             (release the guard instead, or proclaim a leader's value)"
        )));
    }
    Ok(())
}

/// `key` is held, or is (or is under) a reserved key.
fn is_own_key(held: &[&str], reserved: &[String], key: &str) -> bool {
    let under = |r: &String| key == r || key.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('/'));
    held.contains(&key) || reserved.iter().any(under)
}

/// The public `put`, `delete` and `txn` of a guard type that implements [`Guard`]. `$what` names
/// what it holds ("lock", "slot", …); `$acquire` is a doc-test line that binds `guard`.
macro_rules! guarded_writes {
    ($guard:ty, $what:literal, $acquire:literal) => {
        impl $guard {
            #[doc = concat!("Set `key` to `value` only while this ", $what, " is still held: one Consul transaction")]
            #[doc = "that checks our session on every held key and writes. See [`txn`](Self::txn)."]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = "As [`txn`](Self::txn)."]
            #[doc = ""]
            #[doc = "# Cancel safety"]
            #[doc = "As [`txn`](Self::txn)."]
            #[doc = ""]
            #[doc = "# Examples"]
            #[doc = "```no_run"]
            #[doc = "# async fn demo() -> consul_lock::Result<()> {"]
            #[doc = $acquire]
            #[doc = "guard.put(\"app/config\", \"v2\").await?; // lands only if we still hold"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub async fn put(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> crate::Result<()> {
                self.txn(vec![crate::KvOp::put(key, value)]).await
            }

            #[doc = concat!("Delete `key` only while this ", $what, " is still held. See [`txn`](Self::txn).")]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = "As [`txn`](Self::txn)."]
            #[doc = ""]
            #[doc = "# Cancel safety"]
            #[doc = "As [`txn`](Self::txn)."]
            #[doc = ""]
            #[doc = "# Examples"]
            #[doc = "```no_run"]
            #[doc = "# async fn demo() -> consul_lock::Result<()> {"]
            #[doc = $acquire]
            #[doc = "guard.delete(\"app/config.draft\").await?;"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub async fn delete(&self, key: impl Into<String>) -> crate::Result<()> {
                self.txn(vec![crate::KvOp::delete(key)]).await
            }

            #[doc = concat!("Apply `ops` only while this ", $what, " is still held, all or none: one Consul transaction")]
            #[doc = "(`/v1/txn`, one Raft write, the cost of a plain write) that checks our session on every"]
            #[doc = "key the guard holds (`check-session`) before the operations. For state kept in Consul this"]
            #[doc = "is the fence: a holder that lost its lock (expired, destroyed, taken over) can never"]
            #[doc = "overwrite what the next holder wrote."]
            #[doc = ""]
            #[doc = "At most [`MAX_TXN_OPS`](crate::MAX_TXN_OPS) operations less one per held key; the"]
            #[doc = "guard's own keys (the held keys, their queues) cannot be written."]
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = "[`Error::LockLost`](crate::Error::LockLost) when the lock is no longer ours (known here,"]
            #[doc = "or Consul rejected the write): nothing was written, and the guard reports lost (`lost()`"]
            #[doc = "resolves). [`Error::InvalidConfig`](crate::Error::InvalidConfig) before any request for no"]
            #[doc = "operations or too many, an invalid key, a value over"]
            #[doc = "[`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES), a transaction over"]
            #[doc = "[`MAX_TXN_BODY_BYTES`](crate::MAX_TXN_BODY_BYTES), or a key of the guard's own."]
            #[doc = "Transport and Consul errors after retrying for the client's request timeout (then the"]
            #[doc = "write may or may not have landed — and only while the lock was ours)."]
            #[doc = ""]
            #[doc = "# Cancel safety"]
            #[doc = "If the future is dropped while the request is in flight, the write may or may not land,"]
            #[doc = "and lands only if the lock is still ours."]
            #[doc = ""]
            #[doc = "# Examples"]
            #[doc = "```no_run"]
            #[doc = "use consul_lock::KvOp;"]
            #[doc = "# async fn demo() -> consul_lock::Result<()> {"]
            #[doc = $acquire]
            #[doc = "guard.txn(vec![KvOp::put(\"app/config\", \"v2\"), KvOp::delete(\"app/config.draft\")]).await?;"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub async fn txn(&self, ops: Vec<crate::KvOp>) -> crate::Result<()> {
                let held = crate::primitive::guarded::Guard::fenced(self);
                crate::primitive::guarded::write(&*held, ops).await
            }
        }
    };
}
pub(crate) use guarded_writes;

impl Fenced for crate::primitive::hold::Hold {
    fn fence(&self) -> Fence<'_> {
        let queue = crate::consul::key::queue_prefix(&self.key);
        Fence {
            session: &self.session,
            held: vec![self.key.as_str()],
            reserved: vec![queue.trim_end_matches('/').to_owned()],
            name: &self.key,
        }
    }

    fn fence_held(&self) -> bool {
        self.is_held()
    }

    fn write_rejected(&self) {
        self.mark_lost(crate::metrics::Loss::Watch, "a guarded write found the key deleted or held by another session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_are_refused() {
        let reserved = vec!["k/.consul-lock-queue".to_owned()];
        let own = |key: &str| is_own_key(&["k"], &reserved, key);
        assert!(own("k") && own("k/.consul-lock-queue") && own("k/.consul-lock-queue/abc"));
        assert!(!own("k2") && !own("k/data") && !own("k/.consul-lock-queued") && !own("j"));
    }
}
