//! The wait line of a key: contenders queue by `CreateIndex` under
//! `<key>/.consul-lock-queue/<session>` and each watches only its predecessor, so a release wakes
//! one waiter instead of all of them (no thundering herd, FIFO turns). Locks use it for contenders
//! that found the key held (and in [`EphemeralLock::fair`](crate::EphemeralLock::fair) mode for
//! every acquire); semaphores queue under their coordination key, `PREFIX/.lock/.consul-lock-queue/`;
//! read-write locks queue every request, each place marked with its mode ([`Mark`]), and choose whom
//! to watch from [`ahead`] (a reader waits only for writers).
//!
//! The queue only orders the attempts: mutual exclusion is still the `lock` transaction on the key
//! itself (for a semaphore, the check-and-set of its coordination key). A queue entry is held by
//! the waiter's session (Behavior `delete`), so a waiter that dies leaves the queue with its
//! session; one that gives up deletes its entry at once.
//!
//! Only the queue itself is ever listed, never the key's tree: a key's children and longer sibling
//! keys (`jobs/1/…`, `jobs/10`) can hold megabytes. A waiter with nobody ahead of it that finds the key
//! held (by a holder outside the queue) waits on the key itself, like a plain waiter.

use std::time::Duration;

use tokio::time::Instant;

use crate::consul::client::Client;
use crate::consul::endpoints::Enqueued;
use crate::consul::local::LocalKey;
use crate::consul::retry;
use crate::consul::watch::Watch;
use crate::error::Result;
use crate::holder::KvEntry;
use crate::primitive::hold::delete_if_ours;

/// The prefix under which the waiters of `key` queue.
pub(crate) use crate::consul::key::queue_prefix as prefix;

/// What to do before the next lock attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nobody is ahead: try the lock.
    Mine,
    /// Wait until `key`, the predecessor's entry, is no longer the entry `created` held by `session`.
    /// The creation index matters: a contender that releases and queues again at once re-creates its
    /// entry under the same key with the same session, now *behind* us; a waiter that missed the
    /// delete must not wait for that new entry (it would wait for us in turn: both stall until their
    /// timeouts).
    Watch { key: String, index: u64, created: u64, session: String },
    /// Our entry is gone (our session was invalidated): enqueue again.
    Missing,
}

/// Decide from a listing of the queue of `lock_key` who we wait for.
pub(crate) fn decide(lock_key: &str, sid: &str, entries: &[KvEntry]) -> Turn {
    match ahead(lock_key, sid, entries) {
        None => Turn::Missing,
        Some((_, before)) => match before.last() {
            Some(p) => Turn::watch(p),
            None => Turn::Mine,
        },
    }
}

impl Turn {
    /// Wait for `e` (a live place in line) to go.
    pub(crate) fn watch(e: &KvEntry) -> Turn {
        Turn::Watch {
            key: e.key.clone(),
            index: e.modify_index.max(1),
            created: e.create_index,
            session: e.holder_session().unwrap_or_default().to_owned(),
        }
    }
}

/// Our own place in the queue of `lock_key` and the live places ahead of it, oldest first; `None`
/// when our place is not in `entries` (our session was invalidated). A place whose session is
/// gone (Consul clears it) is nobody's.
pub(crate) fn ahead<'a>(lock_key: &str, sid: &str, entries: &'a [KvEntry]) -> Option<(&'a KvEntry, Vec<&'a KvEntry>)> {
    let prefix = prefix(lock_key);
    let mine = format!("{prefix}{sid}");
    let me = entries.iter().find(|e| e.key == mine && e.holder_session() == Some(sid))?;
    let mut before: Vec<&KvEntry> = entries
        .iter()
        .filter(|e| e.key.starts_with(&prefix) && e.key != mine && e.create_index < me.create_index)
        .filter(|e| e.holder_session().is_some())
        .collect();
    before.sort_by_key(|e| e.create_index);
    Some((me, before))
}

/// The live places in the queue of `lock_key`, oldest first.
pub(crate) fn places<'a>(lock_key: &str, entries: &'a [KvEntry]) -> Vec<&'a KvEntry> {
    let prefix = prefix(lock_key);
    let mut all: Vec<&KvEntry> =
        entries.iter().filter(|e| e.key.starts_with(&prefix) && e.holder_session().is_some()).collect();
    all.sort_by_key(|e| e.create_index);
    all
}

/// Wait until the entry `key` is no longer `same` (`Ok(Some(entry now))`), starting by blocking on
/// `index`; `Ok(None)` when the deadline passed first.
pub(crate) async fn wait_while(
    client: &Client,
    key: &str,
    index: u64,
    same: impl Fn(Option<&KvEntry>) -> bool,
    deadline: Option<Instant>,
) -> Result<Option<Option<KvEntry>>> {
    let mut watch = Watch::key(client, key).after(index);
    loop {
        let Some(entry) = watch.next(deadline).await? else { return Ok(None) };
        if !same(entry.as_ref()) {
            return Ok(Some(entry));
        }
    }
}

/// How often a waiter behind a predecessor of its own process reads the predecessor's entry anyway:
/// the signal covers every way this process lets an entry go, not an entry the agent deletes (a
/// session invalidated there, an operator's delete).
const LOCAL_RECHECK: Duration = Duration::from_secs(5);

/// How a wait for a predecessor of this process ended.
enum Local {
    /// Its entry is gone.
    Gone,
    /// It let the entry go, but the entry is still there (its delete is under way): watch it.
    StillThere,
    OutOfTime,
}

/// Wait until this process lets `key` go (`signal`), reading the entry then, and every
/// [`LOCAL_RECHECK`] (a little less or more, so that many waiters do not read at once).
async fn wait_local(
    client: &Client,
    key: &str,
    mut signal: tokio::sync::watch::Receiver<bool>,
    same: &impl Fn(Option<&KvEntry>) -> bool,
    deadline: Option<Instant>,
) -> Result<Local> {
    let spread =
        u64::from(std::process::id()) ^ key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let recheck = LOCAL_RECHECK + Duration::from_millis(spread % 1000);
    loop {
        let far = Instant::now() + recheck;
        let wake = deadline.map_or(far, |d| d.min(far));
        let let_go = tokio::select! {
            r = signal.changed() => {
                if r.is_ok() && *signal.borrow() {
                    return Ok(Local::Gone); // deleted by a committed write of ours: no read needed
                }
                true
            }
            _ = tokio::time::sleep_until(wake) => false,
        };
        if !let_go && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Local::OutOfTime);
        }
        let Some(entry) = Watch::key(client, key).next(deadline).await? else { return Ok(Local::OutOfTime) };
        if !same(entry.as_ref()) {
            return Ok(Local::Gone);
        }
        if let_go {
            return Ok(Local::StillThere);
        }
    }
}

/// Whether anyone but `sid` waits in the queue of `lock_key`, from a listing that holds it.
pub(crate) fn others_waiting(lock_key: &str, sid: &str, entries: &[KvEntry]) -> bool {
    let prefix = prefix(lock_key);
    entries.iter().any(|e| e.key.starts_with(&prefix) && e.holder_session().is_some_and(|s| s != sid))
}

/// How a wait for our turn ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Nobody was ahead of us: try the lock (unless we know it is held).
    First,
    /// The entry we waited for is gone (its holder released, or that waiter left): our turn.
    PredecessorGone,
    /// Our own entry is gone (our session was invalidated): enqueue again.
    EntryGone,
}

/// What a place in line carries besides its session: `Flags` and a value (a read-write lock's mode
/// and holder info). A lock's and a semaphore's places carry none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark<'a> {
    pub(crate) flags: u64,
    pub(crate) value: &'a [u8],
}

/// Our place in the queue of one key. Dropping it while armed deletes the entry in the background
/// (a waiter that gives up must not hold up the ones behind it).
pub(crate) struct Place {
    client: Client,
    lock_key: String,
    sid: String,
    /// Listing from the enqueue transaction, used once instead of a fresh read.
    fresh: Option<Vec<KvEntry>>,
    armed: bool,
    /// Our entry, marked as kept alive by this process while the place (or the hold it becomes)
    /// lives.
    kept: Option<LocalKey>,
}

impl Place {
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    pub(crate) fn entry_key(&self) -> String {
        format!("{}{}", prefix(&self.lock_key), self.sid)
    }

    /// Take our place: one transaction that locks our entry and lists the queue.
    /// `Ok(None)`: Consul says our session is invalid.
    pub(crate) async fn enqueue(
        client: &Client,
        lock_key: &str,
        sid: &str,
        deadline: Instant,
    ) -> Result<Option<Place>> {
        Self::enqueue_marked(client, lock_key, sid, None, deadline).await
    }

    /// [`enqueue`](Self::enqueue) with a place that carries `mark`.
    pub(crate) async fn enqueue_marked(
        client: &Client,
        lock_key: &str,
        sid: &str,
        mark: Option<Mark<'_>>,
        deadline: Instant,
    ) -> Result<Option<Place>> {
        let (queue, mine) = (prefix(lock_key), format!("{}{sid}", prefix(lock_key)));
        let mark = mark.map(|m| (m.flags, m.value));
        // Marked before it exists: a waiter of this client that lists the queue right after our
        // write must find the mark, or it would watch our entry with a blocking query.
        let kept = client.keep_local(&mine);
        match retry::until(deadline, || client.txn_enqueue(&mine, sid, &queue, mark)).await? {
            Enqueued::InvalidSession => Ok(None),
            Enqueued::Listed(entries) => Ok(Some(Place {
                client: client.clone(),
                lock_key: lock_key.to_owned(),
                sid: sid.to_owned(),
                fresh: Some(entries),
                armed: true,
                kept: Some(kept),
            })),
        }
    }

    /// Take a place in the queue of each of `lock_keys` at once: one transaction that locks our
    /// entries (all with the same `CreateIndex`, so a multi-key lock is one arrival in every queue)
    /// and lists the queues. `Ok(None)`: Consul says our session is invalid.
    pub(crate) async fn enqueue_all(
        client: &Client,
        lock_keys: &[String],
        sid: &str,
        deadline: Instant,
    ) -> Result<Option<Vec<Place>>> {
        let queues: Vec<String> = lock_keys.iter().map(|k| prefix(k)).collect();
        let mine: Vec<String> = queues.iter().map(|q| format!("{q}{sid}")).collect();
        let kept: Vec<LocalKey> = mine.iter().map(|m| client.keep_local(m)).collect();
        match retry::until(deadline, || client.txn_enqueue_all(&mine, sid, &queues)).await? {
            Enqueued::InvalidSession => Ok(None),
            Enqueued::Listed(entries) => Ok(Some(
                lock_keys
                    .iter()
                    .zip(kept)
                    .map(|(k, kept)| Place {
                        client: client.clone(),
                        lock_key: k.clone(),
                        sid: sid.to_owned(),
                        fresh: Some(entries.clone()),
                        armed: true,
                        kept: Some(kept),
                    })
                    .collect(),
            )),
        }
    }

    /// The queue now (the enqueue's own listing the first time); `None` when the deadline passed.
    pub(crate) async fn listing(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<KvEntry>>> {
        if let Some(e) = self.fresh.take() {
            return Ok(Some(e));
        }
        let mut watch = Watch::prefix(&self.client, &prefix(&self.lock_key));
        watch.next(deadline).await
    }

    /// Wait until it is our turn to try the lock; `Ok(None)` when the deadline passed.
    pub(crate) async fn wait_turn(&mut self, deadline: Option<Instant>) -> Result<Option<Waited>> {
        let Some(entries) = self.listing(deadline).await? else { return Ok(None) };
        self.wait_behind(&entries, deadline).await
    }

    /// [`wait_turn`](Self::wait_turn) from a listing that holds the queue (the enqueue's own the
    /// first time, when it has not been used yet; then `entries`, a newer read of a tree the queue
    /// lives in).
    pub(crate) async fn wait_after(
        &mut self,
        entries: &[KvEntry],
        deadline: Option<Instant>,
    ) -> Result<Option<Waited>> {
        match self.fresh.take() {
            Some(fresh) => self.wait_behind(&fresh, deadline).await,
            None => self.wait_behind(entries, deadline).await,
        }
    }

    /// From `entries` (a listing that holds the queue), wait for our predecessor to go.
    async fn wait_behind(&self, entries: &[KvEntry], deadline: Option<Instant>) -> Result<Option<Waited>> {
        let (wkey, index, created, wsession) = match decide(&self.lock_key, &self.sid, entries) {
            Turn::Mine => return Ok(Some(Waited::First)),
            Turn::Missing => return Ok(Some(Waited::EntryGone)),
            Turn::Watch { key, index, created, session } => (key, index, created, session),
        };
        let same = |e: Option<&KvEntry>| {
            e.is_some_and(|e| e.create_index == created && e.holder_session() == Some(wsession.as_str()))
        };
        if let Some(signal) = self.client.watch_local(&wkey) {
            // Our predecessor is a waiter (or holder) of this process: no blocking query until it
            // lets its entry go.
            match wait_local(&self.client, &wkey, signal, &same, deadline).await? {
                Local::Gone => return Ok(Some(Waited::PredecessorGone)),
                Local::OutOfTime => return Ok(None),
                Local::StillThere => {}
            }
        }
        Ok(wait_while(&self.client, &wkey, index, same, deadline).await?.map(|_| Waited::PredecessorGone))
    }

    /// Acquired: the entry now lives as long as the hold and is deleted by its release.
    pub(crate) fn disarm(mut self) -> String {
        self.armed = false;
        self.entry_key()
    }

    /// [`disarm`](Self::disarm), keeping the entry's in-process mark for the hold, which lets it
    /// go once its release has deleted the entry.
    pub(crate) fn disarm_kept(mut self) -> (String, Option<LocalKey>) {
        let kept = self.kept.take();
        (self.disarm(), kept)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, entry, sid) = (self.client.clone(), self.entry_key(), self.sid.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = delete_if_ours(&client, &entry, &sid, None).await {
                    tracing::debug!(%entry, error = %e, "could not delete our queue entry; it goes with our session");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, create: u64, modify: u64, session: &str) -> KvEntry {
        KvEntry {
            key: key.into(),
            create_index: create,
            modify_index: modify,
            session: Some(session.into()),
            lock_index: 0,
            flags: 0,
            value: None,
        }
    }

    #[test]
    fn waits_for_the_predecessor_only() {
        let q = prefix("k");
        assert_eq!(q, "k/.consul-lock-queue/");
        assert_eq!(prefix("dir/"), "dir/.consul-lock-queue/");
        let entries = vec![
            e("k", 9, 12, "h"),
            e(&format!("{q}a"), 5, 5, "a"),
            e(&format!("{q}b"), 7, 7, "b"),
            e(&format!("{q}c"), 8, 8, "c"),
            e("k2", 1, 1, "x"),
        ];
        assert_eq!(
            decide("k", "c", &entries),
            Turn::Watch { key: format!("{q}b"), index: 7, created: 7, session: "b".into() }
        );
        assert_eq!(
            decide("k", "b", &entries),
            Turn::Watch { key: format!("{q}a"), index: 5, created: 5, session: "a".into() }
        );
        // First in the queue: try the lock (a holder outside the queue is waited for on the key).
        assert_eq!(decide("k", "a", &entries), Turn::Mine);
        assert_eq!(decide("k", "z", &entries), Turn::Missing);
        // An entry whose session is gone (Consul clears it) is nobody's place.
        let stale = vec![KvEntry { session: None, ..e(&format!("{q}a"), 5, 5, "") }, e(&format!("{q}b"), 7, 7, "b")];
        assert_eq!(decide("k", "b", &stale), Turn::Mine);
    }
}
