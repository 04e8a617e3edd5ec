//! The semaphore: at most N holders of a prefix, Consul's semaphore recipe (bit-compatible with
//! Go's `api.Semaphore` and `consul lock -n N`). [`builder`] is the public
//! [`Semaphore`](crate::Semaphore), [`admit`] the procedure that takes a slot, [`permit`] a held slot,
//! [`slots`] the rules of the coordination key `PREFIX/.lock`.

pub(crate) mod admit;
pub(crate) mod builder;
pub(crate) mod guarded;
pub(crate) mod permit;
pub(crate) mod slots;
