//! Distributed locks on [HashiCorp Consul](https://developer.hashicorp.com/consul): one process
//! in a fleet runs the migration, claims the job, rotates the key.
//!
//! # Which type to use
//! - [`EphemeralLock`]: one lock, one Consul session of its own. The common case.
//!   [`hold`](EphemeralLock::hold) returns a [`LockGuard`] that releases on drop;
//!   [`acquire`](EphemeralLock::acquire) returns a `bool`; [`run`](EphemeralLock::run) runs a
//!   future under the lock and stops it if the lock is lost.
//! - [`Session`]: many locks through one session, renewed once for all of them — for a process that
//!   takes many locks (job claiming, sharded work). Cheaper per lock; losing the session loses all.
//! - [`Semaphore`]: at most N holders of a prefix at once ([`SemaphorePermit`]), Consul's semaphore
//!   recipe, sharing slots with Go's `api.Semaphore` and `consul lock -n N`.
//! - [`RwLock`]: many readers or one writer on one key — [`read`](RwLock::read) returns a
//!   [`ReadGuard`] held alongside other readers, [`write`](RwLock::write) a [`WriteGuard`] held
//!   alone (with a fencing token); requests are served in arrival order, a writer's release wakes
//!   exactly the readers behind it, a reader's release nobody until the last one leaves, and a
//!   writer can [`downgrade`](WriteGuard::downgrade) in place. Its key layout and protocol are in
//!   the README ("Read-write lock"); a plain lock on its key is refused both ways. Through a shared
//!   [`Session`] a read cycle is 2 writes.
//! - [`Election`]: leader election on one key — [`campaign`](Election::campaign) waits until
//!   elected and returns a [`Leadership`] (fencing [`term`](Leadership::term),
//!   [`proclaim`](Leadership::proclaim), [`resign`](Leadership::resign)); anyone can read the
//!   [`leader`](Election::leader) or [`observe`](Election::observe) every change. A campaign is a
//!   lock acquire carrying the value, so it interoperates with [`EphemeralLock`] on the same key.
//!   [`Session::election`] campaigns through a shared session kept across campaigns: resigning is
//!   one write, and a handoff costs 4 requests.
//! - [`MultiLock`]: several keys at once — [`hold`](MultiLock::hold) takes every key in one Consul
//!   transaction or none (up to [`MAX_MULTI_LOCK_KEYS`], 32), never holds part of the set while it
//!   waits, so sets that overlap cannot deadlock; one fencing token for the set; waiters queue in
//!   every key's queue at once and go in arrival order. Each key is an ordinary lock key:
//!   [`EphemeralLock`] or `consul lock` on a member key excludes against the set.
//!   [`Session::multi_lock`] makes a cycle two writes whatever the number of keys.
//! - Guarded writes on every guard (`put`, `delete`, [`txn`](LockGuard::txn) of [`KvOp`]s): state
//!   kept in Consul, written only while the lock is still ours.
//! - [`blocking`]: the same API with plain methods, for programs without a tokio runtime.
//!
//! # The safety model, in plain words
//! A lock is a Consul KV key taken with `?acquire=<session>` semantics by a session with a TTL. The
//! holder renews the session every TTL/2. **A held lock can be lost**: if renewals fail for a TTL
//! (network partition, a paused process), the holder must assume the lock gone, and Consul may give
//! it to someone else after at most about 2×TTL (longer across a leader failover) plus the
//! lock-delay. So:
//! - check [`LockGuard::is_held`] or await [`LockGuard::lost`] in long critical sections;
//! - pass [`LockGuard::fencing_token`] to what you protect, and have it reject writes carrying a token
//!   lower than one it has already seen — that is what makes a lost-but-still-running holder safe.
//! - for state kept in Consul itself, write it through the guard: [`LockGuard::put`],
//!   [`delete`](LockGuard::delete) and [`txn`](LockGuard::txn) (and the same on every guard) commit
//!   in one transaction with a check that the lock is still ours, so a holder that lost its lock
//!   can never overwrite its successor's state — the write is [`Error::LockLost`] and nothing lands.
//!
//! Locks are not re-entrant. Keys must be non-empty, must not start with `/`, and must not contain
//! `.`/`..`/empty segments or control characters; values are at most about 383 KiB (they travel
//! base64-encoded in a transaction limited to 512 KiB).
//!
//! # Example
//! ```no_run
//! use consul_lock::{Client, EphemeralLock, Error};
//! use std::time::Duration;
//!
//! # async fn demo() -> consul_lock::Result<()> {
//! let client = Client::from_env()?; // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, …
//! let guard = EphemeralLock::new("migrations/users")
//!     .client(client.clone())
//!     .acquire_timeout(Duration::from_secs(10))
//!     .hold()
//!     .await?;
//! // … run the migration, passing guard.fencing_token() to the database …
//! guard.release().await?;
//!
//! // Skip work someone else is doing:
//! let mut lock = EphemeralLock::new("jobs/42").client(client).acquire_timeout(Duration::ZERO);
//! if lock.acquire(false).await? {
//!     lock.release().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//! - `cli` (default): the `consul-lock` command-line tool (clap, tracing-subscriber, libc). Library
//!   users can drop it with `default-features = false`.
//! - `metrics`: lock-level metrics through the [`metrics`](https://docs.rs/metrics) facade (acquire
//!   waits, hold times, held/waiting gauges, losses by reason, requests); the README lists them.
//! - `test-util`: `testing::ConsulDev`, a throwaway `consul agent -dev`
//!   for your own tests (module `testing`, present only with the feature).
//!
//! # How the crate is built
//! The source tree is the architecture: a folder per layer and per primitive, imports running one
//! way, downwards. `consul/` speaks Consul's HTTP API (client, its connection budget and own
//! HTTP/1.1 connections, endpoints, the one blocking-query loop, retry, key and flag rules);
//! `session/` owns sessions and their renewal, and the public [`Session`]; `primitive/` is what
//! every primitive is built of (the one settings type every builder uses, the shared acquire
//! procedure, the wait queue, a held key, guarded writes); `lock/`, `semaphore/`, `rwlock/`,
//! `election/` and `multilock/` are the primitives; `blocking/` mirrors them all. The README's
//! "Layout" lists every file.
//!
//! # Consul version
//! Written against Consul 1.8.7's HTTP API (Debian bullseye's package) and compatible with later
//! versions; differences are noted in the README.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

// The tree is the architecture; each folder's `mod.rs` says what it owns. Imports run one way,
// downwards:
//   blocking/, testing      — the blocking mirror; test support
//   election/               — leader election, built on the lock
//   lock/, semaphore/, multilock/,
//   rwlock/                 — the primitives: public builder, acquire procedure, guard
//   primitive/              — what the primitives share: acquire procedure, wait queue, a held key
//   session/                — Consul sessions: lifecycle and renewal; the public shared `Session`
//   consul/                 — the Consul layer: client, connection budget, HTTP/1.1 connections,
//                             endpoints, blocking-query watch, retry, key rules
//   error, holder, metrics, mutex, task — leaves
pub mod blocking;
mod consul;
mod election;
mod error;
mod holder;
mod lock;
mod metrics;
mod multilock;
mod mutex;
mod primitive;
mod rwlock;
mod semaphore;
mod session;
mod task;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use consul::client::{Client, ClientBuilder};
pub use consul::endpoints::SessionInfo;
pub use consul::flags::{LOCK_FLAGS, RWLOCK_FLAGS, RWLOCK_READ_FLAGS, SEMAPHORE_FLAGS};
pub use consul::key::{MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES};
pub use consul::ops::{KvOp, MAX_TXN_OPS};
pub use election::builder::Election;
pub use election::leader_watch::{Leader, LeaderWatch};
pub use election::leadership::Leadership;
pub use error::{Error, Result, TransportError};
pub use holder::{Holder, HolderInfo};
pub use lock::builder::EphemeralLock;
pub use lock::guard::LockGuard;
pub use multilock::builder::{MultiLock, MAX_MULTI_LOCK_KEYS};
pub use multilock::guard::MultiLockGuard;
pub use primitive::settings::DEFAULT_ACQUIRE_TIMEOUT;
pub use rwlock::builder::{RwLock, RwLockState};
pub use rwlock::guard::{ReadGuard, WriteGuard};
pub use semaphore::builder::{Semaphore, SemaphoreState};
pub use semaphore::permit::SemaphorePermit;
pub use session::lifecycle::{DEFAULT_LOCK_DELAY, DEFAULT_TTL, MAX_LOCK_DELAY, MAX_TTL, MIN_TTL};
pub use session::shared::Session;
