//! `LeaderWatch`: following an election's leader with the crate's watch primitive (one blocking
//! query at a time on the key), delivering each change of leader or value once, in order.

use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::key;
use crate::consul::watch::Watch;
use crate::error::{Error, Result};
use crate::holder::KvEntry;

/// How long requests may fail in a row before [`LeaderWatch::next`] returns the error.
const ERROR_AFTER: Duration = Duration::from_secs(1);

/// Follows who leads an election, from [`Election::observe`](crate::Election::observe).
///
/// [`next`](Self::next) returns the current state first (`Some(leader)`, or `None` when nobody
/// leads), then each change: a new leader, a new proclaimed value, or the seat falling vacant
/// (resigned, expired, the key deleted from outside). Each state is delivered once and in order;
/// states that pass between two calls are not queued (a blocking query returns the latest state),
/// and consecutive identical states coalesce.
///
/// # Agent connections
/// One blocking query at a time, at most 15 s each, so one HTTP connection to the agent while
/// `next` is awaited (and none between calls). Consul serves at most 200 per client IP by default.
///
/// # Errors and resuming
/// When the agent does not answer for about a second (retried meanwhile), `next` returns the error;
/// the next call resumes from the last state seen (after the backoff), so an observer loop can log
/// and continue. A state that changed during the outage is delivered when it resumes.
pub struct LeaderWatch {
    key: String,
    client: Option<Client>,
    watch: Option<(Watch<Option<KvEntry>>, Client)>,
    last: Option<Option<Leader>>,
}

impl std::fmt::Debug for LeaderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderWatch").field("key", &self.key).field("last", &self.last).finish()
    }
}

impl LeaderWatch {
    pub(crate) fn new(key: String, client: Option<Client>) -> Self {
        LeaderWatch { key, client, watch: None, last: None }
    }

    /// The election's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next state: the current one on the first call, then the next different one (waiting as
    /// long as it takes). `Ok(None)`: nobody leads.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an invalid key (first call, before
    /// any request); transport errors after about a second of failures, HTTP 500 answers likewise;
    /// permission and other Consul refusals at once. The next call resumes.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses no state; the next call delivers any change not yet
    /// delivered.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let mut watch = consul_lock::Election::new("service/billing/leader").observe();
    /// loop {
    ///     match watch.next().await {
    ///         Ok(Some(leader)) => println!("leader {}", String::from_utf8_lossy(&leader.value)),
    ///         Ok(None) => println!("no leader"),
    ///         Err(e) => eprintln!("watch failed ({e}); resuming"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn next(&mut self) -> Result<Option<Leader>> {
        let (watch, client) = match &mut self.watch {
            Some(w) => w,
            None => {
                key::validate(&self.key)?;
                let client = match &self.client {
                    Some(c) => c.clone(),
                    None => Client::from_env()?,
                };
                let watch = Watch::key(&client, &self.key).report_errors_after(ERROR_AFTER);
                self.watch.insert((watch, client))
            }
        };
        loop {
            let Some(entry) = watch.next(None).await? else { continue };
            let state = Leader::from_entry(entry, client)?;
            if self.last.as_ref() != Some(&state) {
                self.last = Some(state.clone());
                return Ok(state);
            }
        }
    }
}

/// Who leads an election: the session holding its key, the value it proclaimed, and its term.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The Consul session of the leader.
    pub session_id: String,
    /// The value the leader campaigned with, or proclaimed last.
    pub value: Vec<u8>,
    /// The leader's term: the key's `CreateIndex`, which is the index of the campaign's winning
    /// write (equal to the leader's [`Leadership::term`](crate::Leadership::term)) since campaigns and this crate's locks
    /// delete the key when they give it up. A key written from outside without a session and then
    /// taken keeps its older `CreateIndex`.
    pub term: u64,
}

impl Leader {
    /// The leader in a KV entry: `None` when no session holds it.
    pub(crate) fn from_entry(entry: Option<KvEntry>, client: &Client) -> Result<Option<Leader>> {
        let Some(entry) = entry else { return Ok(None) };
        let term = entry.create_index;
        let holder = entry.into_holder().map_err(|m| Error::decode(client.address(), m))?;
        Ok(holder.map(|h| Leader { session_id: h.session_id, value: h.value, term }))
    }
}
