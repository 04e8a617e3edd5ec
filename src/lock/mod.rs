//! The lock: [`EphemeralLock`](crate::EphemeralLock) ([`builder`]: its settings and public methods),
//! its acquire procedure ([`acquire`]: try the key, queue, wait, take), and the
//! [`LockGuard`](crate::LockGuard) a held lock is ([`guard`]). Bit-compatible with Go's `api.Lock`
//! and `consul lock`.

pub(crate) mod acquire;
pub(crate) mod builder;
pub(crate) mod guard;
pub(crate) mod guarded;
