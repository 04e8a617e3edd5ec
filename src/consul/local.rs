//! What a `Client` knows of its own keys without asking the agent: which keys it keeps alive now
//! (a waiter's queue entry, from its enqueue until its release), each with a signal that fires when
//! the key's owner in this process lets it go.
//!
//! A waiter whose predecessor in a queue is a key of the same client waits for that signal instead
//! of holding a blocking query (a connection) open: the same-key waiters of one process then cost
//! the agent one watch, the head's, however many they are. The signal is only a hint to look: the
//! key itself is read before anything is decided.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::mutex::lock;

/// The keys one client keeps alive now.
#[derive(Default)]
pub(crate) struct LocalKeys {
    live: Arc<Mutex<Live>>,
}

type Live = HashMap<String, watch::Receiver<bool>>;

/// A key this process keeps alive; dropping it lets the key go (and wakes those waiting for it).
/// Waiters read the key then, unless it was let go by [`LocalKey::deleted`].
pub(crate) struct LocalKey {
    /// Dropping it closes the channel: the key is let go. Sending `true` first says more: the key
    /// is deleted (by a write of ours that Consul committed).
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
    key: String,
    live: Arc<Mutex<Live>>,
}

impl LocalKey {
    /// Let the key go, saying it is deleted: a write of ours that deleted it was committed, so
    /// those waiting for it need not read it.
    pub(crate) fn deleted(self) {
        self.tx.send_replace(true);
    }
}

impl Drop for LocalKey {
    fn drop(&mut self) {
        let mut live = lock(&self.live);
        if live.get(&self.key).is_some_and(|rx| self.rx.same_channel(rx)) {
            live.remove(&self.key);
        }
    }
}

impl LocalKeys {
    /// Mark `key` as kept alive by the returned value.
    pub(crate) fn keep(&self, key: &str) -> LocalKey {
        let (tx, rx) = watch::channel(false);
        lock(&self.live).insert(key.to_owned(), rx.clone());
        LocalKey { tx, rx, key: key.to_owned(), live: self.live.clone() }
    }

    /// A signal for `key`, if this process keeps it alive now: its `changed()` fails once the key
    /// is let go.
    pub(crate) fn watch(&self, key: &str) -> Option<watch::Receiver<bool>> {
        let mut live = lock(&self.live);
        let rx = live.get(key)?.clone();
        if rx.has_changed().is_err() {
            live.remove(key);
            return None;
        }
        Some(rx)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.live).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_key_is_let_go() {
        let keys = LocalKeys::default();
        let kept = keys.keep("q/a");
        let mut rx = keys.watch("q/a").expect("kept");
        assert!(keys.watch("q/b").is_none());
        let waiter = tokio::spawn(async move { rx.changed().await.is_err() });
        tokio::task::yield_now().await;
        drop(kept);
        assert!(waiter.await.unwrap(), "the signal fails once the key is let go");
        let kept = keys.keep("q/a");
        let mut rx = keys.watch("q/a").expect("kept again");
        kept.deleted();
        assert!(rx.changed().await.is_ok() && *rx.borrow(), "a deleted key says so");
        assert!(keys.watch("q/a").is_none(), "a key let go is no longer watched");
    }

    #[test]
    fn forgetting_keeps_a_newer_mark_of_the_same_key() {
        let keys = LocalKeys::default();
        let old = keys.keep("q/a");
        let new = keys.keep("q/a");
        drop(old);
        assert!(keys.watch("q/a").is_some(), "the newer mark still keeps the key");
        drop(new);
        assert_eq!(keys.len(), 0);
    }
}
