//! Leader election on one key, built on the lock: [`builder`] is the public
//! [`Election`](crate::Election) (campaign, leader, observe), [`leadership`] a won election (term,
//! proclaim, resign), [`leader_watch`] following the leader as anyone can.

pub(crate) mod builder;
pub(crate) mod guarded;
pub(crate) mod leader_watch;
pub(crate) mod leadership;
