//! The Consul layer: everything that knows Consul's HTTP API and nothing about locks.
//!
//! [`client`] is where Consul is and the one function every request goes through; [`budget`] how
//! many connections a client may open and which request gets one first; [`http1`] the client's
//! own HTTP/1.1 connections to an `http://` agent (a hard cap); [`local`] which keys the client
//! keeps alive now (so that its waiters wait for each other in-process); [`endpoints`]
//! the few endpoints the primitives use, each answer classified; [`watch`] the one blocking-query
//! loop; [`retry`] which failures are retried and how long to back off; [`flags`] and [`key`] the
//! rules for keys (which primitive a key belongs to, what a valid key is); [`ops`] the KV operations
//! a guarded write carries; [`rwlock_txn`] the read-write lock's transactions. Nothing here imports
//! from the layers above (sessions, primitives).

pub(crate) mod budget;
pub(crate) mod client;
pub(crate) mod endpoints;
pub(crate) mod flags;
pub(crate) mod http1;
pub(crate) mod key;
pub(crate) mod local;
pub(crate) mod ops;
pub(crate) mod retry;
pub(crate) mod rwlock_txn;
pub(crate) mod watch;
