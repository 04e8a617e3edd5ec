//! The read-write lock's transactions, each one request and all or nothing (the protocol itself is
//! in `rwlock`): the marker that keeps the key a read-write lock's while readers hold, a writer's
//! take, release and downgrade, a reader's release that lists the line, and the touch that wakes
//! the writer waiting behind a batch of readers.

use crate::consul::budget::Lane;
use crate::consul::client::Client;
use crate::consul::endpoints::{invalid_session, txn_body, Expect, LockAttempt, Released, Txn, TxnOp};
use crate::consul::flags::{RWLOCK_FLAGS, RWLOCK_READ_FLAGS};
use crate::error::{classify, Result, Said};
use crate::holder::KvEntry;

/// The body of a writer's take: the guard of `expect`, then `lock` of `key` with the writer's value.
pub(crate) fn take_body(key: &str, value: &[u8], session: &str, expect: Expect) -> Vec<u8> {
    txn_body(&[expect.guard(key), TxnOp::kv("lock", key, Some(value), Some(session)).flags(RWLOCK_FLAGS)])
}

/// The body that creates the marker: `check-not-exists`, then `lock` and `unlock` by `session`, so
/// that the marker is refused while the key is in a dead writer's lock-delay, and left without a
/// session.
pub(crate) fn mark_body(key: &str, marker: &[u8], session: &str) -> Vec<u8> {
    txn_body(&[
        Expect::Absent.guard(key),
        TxnOp::kv("lock", key, Some(marker), Some(session)).flags(RWLOCK_FLAGS),
        TxnOp::kv("unlock", key, Some(marker), Some(session)).flags(RWLOCK_FLAGS),
    ])
}

/// Outcome of a writer's downgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Downgraded {
    /// The key is a marker again and our place is a reader's; the place's new `ModifyIndex`.
    Done { index: u64 },
    /// The key is no longer ours (or our session is gone): nothing was written.
    Lost,
}

impl Client {
    /// A writer's release: `check-session` + `unlock` of `key` back to the marker (the key stays a
    /// read-write lock's for the readers behind us) + `delete` of our place, in one write. When the
    /// key is no longer ours, our place is deleted on its own (owner-checked).
    pub(crate) async fn txn_rw_release(
        &self,
        key: &str,
        session: &str,
        marker: &[u8],
        place: &str,
    ) -> Result<Released> {
        let ops = [
            TxnOp::kv("check-session", key, None, Some(session)),
            TxnOp::kv("unlock", key, Some(marker), Some(session)).flags(RWLOCK_FLAGS),
            TxnOp::kv("delete", place, None, None),
        ];
        match self.txn::<serde::de::IgnoredAny>(txn_body(&ops)).await? {
            Txn::Committed(_) => Ok(Released::Deleted { waiting: false }),
            Txn::RolledBack(what) if classify(&what) == Said::NotOurs => {
                self.txn_release(place, session, None, None).await?;
                Ok(Released::NotOurs)
            }
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    /// A writer becomes a reader in place: `check-session` + `unlock` of `key` back to the marker,
    /// and our place re-locked with the reader's flags (its `CreateIndex`, our place in line, is
    /// kept), in one write.
    pub(crate) async fn txn_rw_downgrade(
        &self,
        key: &str,
        session: &str,
        marker: &[u8],
        place: &str,
        value: &[u8],
    ) -> Result<Downgraded> {
        let ops = [
            TxnOp::kv("check-session", key, None, Some(session)),
            TxnOp::kv("unlock", key, Some(marker), Some(session)).flags(RWLOCK_FLAGS),
            TxnOp::kv("lock", place, Some(value), Some(session)).flags(RWLOCK_READ_FLAGS),
        ];
        match self.txn::<KvEntry>(txn_body(&ops)).await {
            Ok(Txn::Committed(kvs)) => Ok(Downgraded::Done { index: kvs.last().map_or(0, |kv| kv.modify_index) }),
            Ok(Txn::RolledBack(what)) => match classify(&what) {
                Said::NotOurs | Said::InvalidSession | Said::Held => Ok(Downgraded::Lost),
                _ => Err(self.rolled_back(what)),
            },
            Err(e) => invalid_session(e).map(|_| Downgraded::Lost),
        }
    }

    /// A reader's release: `check-session` + `delete` of our place, and the line listed after it,
    /// in one write. `Ok(None)` when the place was no longer ours.
    pub(crate) async fn txn_rw_leave(&self, place: &str, session: &str, queue: &str) -> Result<Option<Vec<KvEntry>>> {
        let ops = [
            TxnOp::kv("check-session", place, None, Some(session)),
            TxnOp::kv("delete", place, None, None),
            TxnOp::kv("get-tree", queue, None, None),
        ];
        match self.txn_in::<KvEntry>(Lane::Holder, txn_body(&ops)).await? {
            Txn::Committed(entries) => Ok(Some(entries)),
            Txn::RolledBack(what) if classify(&what) == Said::NotOurs => Ok(None),
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    /// Wake the writer whose place is `e`: rewrite the place as it is (`cas` on its
    /// `ModifyIndex`; Consul keeps its session), so its blocking query returns. `false` when the
    /// place changed meanwhile (its writer is awake anyway).
    pub(crate) async fn txn_rw_touch(&self, e: &KvEntry) -> Result<bool> {
        let value = e.raw_value().unwrap_or_default();
        let ops = [TxnOp::kv("cas", &e.key, Some(&value), None).flags(e.flags).index(e.modify_index)];
        match self.txn_in::<serde::de::IgnoredAny>(Lane::Holder, txn_body(&ops)).await? {
            Txn::Committed(_) => Ok(true),
            Txn::RolledBack(what) if matches!(classify(&what), Said::Stale | Said::NotOurs) => Ok(false),
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    /// Create the marker (see [`mark_body`]); the answer classified as a lock attempt's.
    pub(crate) async fn txn_rw_mark(&self, key: &str, marker: &[u8], session: &str) -> Result<LockAttempt> {
        self.txn_lock(mark_body(key, marker, session), &[key], false).await
    }
}
