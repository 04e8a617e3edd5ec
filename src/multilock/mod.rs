//! The multi-key lock: [`MultiLock`](crate::MultiLock) ([`builder`]), its acquire procedure
//! ([`acquire`]), the held set and its [`MultiLockGuard`](crate::MultiLockGuard) ([`guard`]), and
//! its guarded writes ([`guarded`]).
//!
//! # Taking every key or none
//! One transaction holds two operations per key — the guard that the key is as last read (absent,
//! or free with a lock's flags) and `lock` with Go's lock `Flags` — so Consul takes every key or
//! none: the set is never held in part, and sets that overlap cannot deadlock. The fencing token is
//! that transaction's index, which every key carries (checked on every answer). At most
//! [`MAX_MULTI_LOCK_KEYS`](crate::MAX_MULTI_LOCK_KEYS) (32) keys: 64 operations, Consul 1.8's limit.
//!
//! # Queueing across keys, without deadlock
//! An acquire tries first. Once it finds a key held it joins the queue of *every* key at once:
//! one transaction creates its entries `<key>/.consul-lock-queue/<session>` (the lock's own queue,
//! shared with [`EphemeralLock`](crate::EphemeralLock) waiters), so all of them carry one
//! `CreateIndex` — one arrival. It tries again only when it is first in every queue (it waits on
//! its predecessor in one queue, then the next: a place, once first, stays first, since later
//! arrivals have later indexes), and then waits only for keys held by holders outside the queues.
//! Waiting is for arrivals with smaller indexes only, a total order, so the waits never form a
//! cycle: the earliest arrival is first in all its queues and can go. Nobody who arrived later can
//! take a key before it (they are behind it in that key's queue); a newcomer that has not queued
//! (nobody seemed to wait) can overtake once, and its release, which lists the queues, makes its
//! next acquire queue behind. The entries are kept while the set is held and deleted with the keys,
//! so a release wakes exactly the waiters behind it.
//!
//! # Release
//! One transaction deletes every key only if it still carries the token (`delete-cas`), with the
//! queue entries (and lists the queues when it has room); on a shared session that makes a cycle
//! two writes, whatever the number of keys. With an own session and a zero lock-delay, destroying
//! the session alone deletes everything.

pub(crate) mod acquire;
pub(crate) mod builder;
pub(crate) mod guard;
pub(crate) mod guarded;
