//! What every primitive (lock, semaphore, election) is built of, on top of sessions: the
//! [`settings`] every builder takes, the [`procedure`] that every acquire shares (deadline, caller
//! channel, in-process claim, a live session), the wait [`queue`] of a key, a [`hold`] — one held
//! key, its fencing token, loss and release — the [`holding`] steps of a builder that holds, and
//! [`guarded`] writes, committed only while a guard still holds its keys. The primitives' own
//! folders keep only their own protocol.

pub(crate) mod guarded;
pub(crate) mod hold;
pub(crate) mod holding;
pub(crate) mod procedure;
pub(crate) mod queue;
pub(crate) mod settings;
