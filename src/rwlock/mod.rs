//! The read-write lock: any number of readers or one writer, fair and herd-free.
//! [`builder`] is the public [`RwLock`](crate::RwLock), [`acquire`] the procedure of a read or
//! write request, [`guard`] the [`ReadGuard`](crate::ReadGuard) and
//! [`WriteGuard`](crate::WriteGuard) (release, downgrade), [`guarded`] their guarded writes,
//! [`layout`] the keys and the rules read from them.
//!
//! # Keys
//! For a lock on `KEY`:
//! - `KEY/.consul-lock-rw/.consul-lock-queue/<session>`: one place in line per request, held by its session
//!   (Behavior `delete`: a dead contender's place goes with its session), its `Flags`
//!   [`RWLOCK_READ_FLAGS`](crate::RWLOCK_READ_FLAGS) for a reader and
//!   [`RWLOCK_FLAGS`](crate::RWLOCK_FLAGS) for a writer, its value the holder info. The line is
//!   ordered by `CreateIndex` (the lock's own queue, [`queue`](crate::primitive::queue)). A holder
//!   keeps its place until it releases.
//! - `KEY` itself, with [`RWLOCK_FLAGS`](crate::RWLOCK_FLAGS): held (`lock`) by the writer's session
//!   while a writer holds (value: its holder info; the `ModifyIndex` of that `lock` is the fencing
//!   token), and a marker without a session otherwise (value `{"consul-lock":"rwlock"}`). The
//!   marker is what keeps a plain lock (ours, Go's, `consul lock`) off the key while readers hold:
//!   they refuse a key with these flags, and we refuse theirs ([`Error::Conflict`](crate::Error::Conflict)).
//!
//! # Protocol
//! 1. A request takes its place: one transaction `lock`s the place and lists the line.
//! 2. From a listing that holds its own place: a **reader** waits while a writer is ahead of it,
//!    watching the nearest one; a **writer** waits while anyone is ahead of it — watching its
//!    predecessor when that is a writer, and its *own* place when that is a reader.
//! 3. Its turn come, a reader reads `KEY`: the marker means it holds (no writer can be ahead: the
//!    line says so, and a writer behind locks `KEY` only once we are gone); an absent `KEY` is
//!    turned into the marker by one transaction (`check-not-exists`, `lock`, `unlock`), which
//!    Consul refuses while a dead writer's lock-delay runs. A writer locks `KEY` with a
//!    `check-index` (or `check-not-exists`) guard: two writers can never both hold it.
//! 4. A writer releases with one transaction (`check-session`, `unlock` of `KEY` back to the
//!    marker, `delete` of its place), which wakes exactly the readers watching it (those queued
//!    behind it up to the next writer) or the next writer. A reader releases with one transaction
//!    (`check-session`, `delete` of its place, a listing of the line); only when that shows it was
//!    the last reader before a waiting writer does it touch that writer's place (a `cas` rewriting
//!    it as it is), which ends that writer's wait alone (whoever waits on that writer re-arms).
//! 5. A downgrade is one transaction (`check-session`, `unlock` of `KEY` to the marker, our place
//!    re-`lock`ed with the reader's flags): the same `CreateIndex`, so the same place in line.
//!
//! Why exclusion holds: places get increasing `CreateIndex`es, and a place that is gone never comes
//! back with its old index, so the places ahead of a place can only go, never come. Every decision
//! is made from a listing that contains the decider's own place, so it sees every place created
//! before it. A writer holds only when no place is ahead of it; a reader only when no writer's
//! place is ahead of it — so a reader and a writer never both hold. Two writers are also excluded
//! by Consul's `lock` of `KEY`. A holder whose session dies loses its place with it (and a writer
//! its `KEY`): the requests behind it go on once Consul invalidates the session (TTL…2×TTL). A
//! reader's death wakes nobody, so a writer waiting on its own place reads the line again every 5 s.
//!
//! No upgrade: two readers upgrading at once would each wait for the other to leave.

pub(crate) mod acquire;
pub(crate) mod builder;
pub(crate) mod guard;
pub(crate) mod guarded;
pub(crate) mod layout;
