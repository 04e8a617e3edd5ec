//! Consul sessions: the layer between the Consul layer and the primitives.
//!
//! [`lifecycle`] owns a session's settings and validation, its creation, renewal, local lease
//! deadline, loss and destruction (`SessionCore`, shared by everything that needs the session);
//! [`shared`] is the public [`Session`](crate::Session), one session renewed once for many
//! primitives. Imports only from the Consul layer and the crate's leaves.

pub(crate) mod lifecycle;
pub(crate) mod shared;
