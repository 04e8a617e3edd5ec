//! A blocking mirror of the async API, for programs without a tokio runtime.
//!
//! Like `reqwest::blocking`, each [`Client`] drives a small runtime on a background thread
//! (`consul-lock-blocking`); every method sends its work there and waits. All behaviour lives in
//! the async code once. When the last client, session, lock and guard are gone, the thread finishes
//! pending background releases (for at most 5 s) before it exits, so a guard dropped at the end of
//! `main` still frees its key.
//!
//! The names match the async API one to one: [`Client`] / [`ClientBuilder`], [`Session`],
//! [`EphemeralLock`], [`LockGuard`], [`MultiLock`], [`MultiLockGuard`], [`Semaphore`],
//! [`SemaphorePermit`], [`Election`], [`Leadership`], [`LeaderWatch`]. The differences, each
//! because a thread cannot await:
//! - `lost()` blocks until the lock (or session) is known lost; `lost_timeout(d)` gives up after
//!   `d` and says whether it was lost;
//! - [`EphemeralLock::run`] takes a closure and cannot interrupt it when the lock is lost (a
//!   thread cannot be cancelled safely): the loss is reported when it returns;
//! - there is no cancel safety to speak of: a call returns when its work is done.
//!
//! # Panics
//! Every blocking method panics with a clear message when called from async code (inside a tokio
//! runtime's task or `block_on`), like `reqwest::blocking`: blocking there would stall the
//! runtime's thread. Call the async API there, or wrap the call in `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use consul_lock::blocking::EphemeralLock;
//!
//! fn main() -> consul_lock::Result<()> {
//!     let guard = EphemeralLock::new("my/key").hold()?;
//!     println!("holding with token {}", guard.fencing_token());
//!     guard.release()
//! }
//! ```

mod client;
mod election;
mod guarded;
mod handle;
mod lock;
mod multilock;
mod runtime;
mod semaphore;
mod session;

pub use client::{Client, ClientBuilder};
pub use election::{Election, LeaderWatch, Leadership};
pub use lock::{EphemeralLock, LockGuard};
pub use multilock::{MultiLock, MultiLockGuard};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use session::Session;
