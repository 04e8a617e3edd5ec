//! A semaphore's coordination key `PREFIX/.lock`, as Consul's semaphore recipe (Go's
//! `api.Semaphore`, `consul lock -n`) writes it: the JSON `{"Limit": N, "Holders": {"<session>":
//! true}}`, the checks on a prefix's listing (flags, limit), and who counts as alive.
//!
//! Layout of a prefix `P` (the first two carry [`SEMAPHORE_FLAGS`]):
//! - `P/<session-id>`: one contender key per contender, held (`acquire`) by its session;
//! - `P/.lock`: the holders, changed only by check-and-set on its `ModifyIndex`. A holder whose
//!   session no longer holds any key under `P/` is dead and pruned by whoever writes next;
//! - `P/.lock/.consul-lock-queue/<session-id>`: our waiters' line (see `queue`; flags 0, and Go
//!   never reads these keys). A waiter's entry keeps its session alive in the pruning sense, which
//!   is harmless: only sessions in `Holders` are pruned.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::consul::flags::SEMAPHORE_FLAGS;
use crate::error::{Error, Result};
use crate::holder::KvEntry;

/// The coordination key's name under the prefix (Go's `DefaultSemaphoreKey`).
pub(crate) const LOCK_KEY: &str = ".lock";

/// Largest limit accepted: the holders' JSON must stay far below Consul's value size limit.
pub(crate) const MAX_LIMIT: u32 = 4096;

/// The JSON of `P/.lock`. Field names and shape as Go's `semaphoreLock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slots {
    #[serde(rename = "Limit")]
    pub(crate) limit: i64,
    /// Session IDs of the holders (the value is always `true`; presence is what counts).
    #[serde(rename = "Holders", default, deserialize_with = "null_as_empty")]
    pub(crate) holders: BTreeMap<String, bool>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<String, bool>, D::Error> {
    Ok(Option::<BTreeMap<String, bool>>::deserialize(d)?.unwrap_or_default())
}

impl Slots {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        // A map of strings and an integer always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn holds(&self, session: &str) -> bool {
        self.holders.contains_key(session)
    }
}

/// The key names of a semaphore on `prefix`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) prefix: String,
    /// `prefix/`, what is listed.
    pub(crate) dir: String,
    /// `prefix/.lock`.
    pub(crate) lock_key: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Layout { prefix: prefix.to_owned(), dir: format!("{prefix}/"), lock_key: format!("{prefix}/{LOCK_KEY}") }
    }

    /// A contender's key: `prefix/<session-id>`.
    pub(crate) fn contender(&self, session: &str) -> String {
        format!("{}{session}", self.dir)
    }

    /// The coordination entry in a listing of the prefix.
    pub(crate) fn find_lock<'a>(&self, entries: &'a [KvEntry]) -> Option<&'a KvEntry> {
        entries.iter().find(|e| e.key == self.lock_key)
    }

    /// Decode the coordination entry as stored: `None` when it is absent or empty (a fresh
    /// semaphore). A key with other flags is not a semaphore's: [`Error::Conflict`].
    pub(crate) fn decode(&self, entry: Option<&KvEntry>) -> Result<Option<Slots>> {
        let Some(e) = entry else { return Ok(None) };
        if e.flags != SEMAPHORE_FLAGS {
            return Err(Error::Conflict { key: self.lock_key.clone(), flags: e.flags });
        }
        let raw = match e.value.as_deref() {
            None | Some("") => return Ok(None),
            Some(v) => base64::engine::general_purpose::STANDARD.decode(v).map_err(|_| self.bad_json())?,
        };
        serde_json::from_slice(&raw).map(Some).map_err(|_| self.bad_json())
    }

    fn bad_json(&self) -> Error {
        Error::Conflict { key: self.lock_key.clone(), flags: SEMAPHORE_FLAGS }
    }

    /// Read a listing of the prefix for a contender with `limit`: the current holders with the dead
    /// ones pruned, and the `ModifyIndex` to check-and-set on (0: the key does not exist yet).
    pub(crate) fn view(&self, entries: &[KvEntry], limit: u32) -> Result<View> {
        let entry = self.find_lock(entries);
        let index = entry.map_or(0, |e| e.modify_index);
        let mut slots = self.decode(entry)?.unwrap_or(Slots { limit: limit.into(), holders: BTreeMap::new() });
        if slots.limit != i64::from(limit) {
            return Err(Error::LimitConflict { prefix: self.prefix.clone(), limit, stored: slots.limit });
        }
        prune(&mut slots, entries);
        Ok(View { slots, index })
    }
}

/// Drop holders whose session holds no key in `entries` (a listing of the prefix).
pub(crate) fn prune(slots: &mut Slots, entries: &[KvEntry]) {
    let alive: HashSet<&str> = entries.iter().filter_map(KvEntry::holder_session).collect();
    slots.holders.retain(|s, _| alive.contains(s.as_str()));
}

/// The coordination key as a contender sees it.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// Live holders only.
    pub(crate) slots: Slots,
    /// The `ModifyIndex` to check-and-set on.
    pub(crate) index: u64,
}

impl View {
    pub(crate) fn has_room(&self) -> bool {
        (self.slots.holders.len() as i64) < self.slots.limit
    }

    /// The value to write to take a slot for `session`.
    pub(crate) fn with(&self, session: &str) -> Slots {
        let mut s = self.slots.clone();
        s.holders.insert(session.to_owned(), true);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, session: Option<&str>, flags: u64, value: Option<&[u8]>, index: u64) -> KvEntry {
        let v = value.map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        let json =
            serde_json::json!({"Key": key, "Session": session, "Flags": flags, "Value": v, "ModifyIndex": index});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn json_is_gos_shape() {
        let s = Slots { limit: 2, holders: [("b".to_owned(), true), ("a".to_owned(), true)].into() };
        assert_eq!(String::from_utf8(s.to_json()).unwrap(), r#"{"Limit":2,"Holders":{"a":true,"b":true}}"#);
        let back: Slots = serde_json::from_str(r#"{"Limit":3,"Holders":null}"#).unwrap();
        assert_eq!(back, Slots { limit: 3, holders: BTreeMap::new() });
    }

    #[test]
    fn view_prunes_checks_limit_and_flags() {
        let l = Layout::new("jobs/enc");
        assert_eq!((l.lock_key.as_str(), l.contender("s1")), ("jobs/enc/.lock", "jobs/enc/s1".to_owned()));
        let lock = br#"{"Limit":2,"Holders":{"s1":true,"dead":true}}"#;
        let entries = vec![
            entry("jobs/enc/.lock", None, SEMAPHORE_FLAGS, Some(lock), 9),
            entry("jobs/enc/s1", Some("s1"), SEMAPHORE_FLAGS, None, 5),
            entry("jobs/enc/s2", Some("s2"), SEMAPHORE_FLAGS, None, 7),
        ];
        let v = l.view(&entries, 2).unwrap();
        assert_eq!(v.index, 9);
        assert_eq!(v.slots.holders.keys().collect::<Vec<_>>(), ["s1"]);
        assert!(v.has_room());
        assert!(!View { slots: v.with("s2"), index: 9 }.has_room());
        match l.view(&entries, 3).unwrap_err() {
            Error::LimitConflict { limit: 3, stored: 2, .. } => {}
            e => panic!("{e}"),
        }
        let foreign = vec![entry("jobs/enc/.lock", Some("x"), 0x2ddccbc058a50c18, Some(b"{}"), 4)];
        assert!(matches!(l.view(&foreign, 2).unwrap_err(), Error::Conflict { .. }));
        let fresh = l.view(&[], 2).unwrap();
        assert_eq!((fresh.index, fresh.slots.limit, fresh.slots.holders.len()), (0, 2, 0));
        let empty = vec![entry("jobs/enc/.lock", None, SEMAPHORE_FLAGS, None, 3)];
        assert_eq!(l.view(&empty, 2).unwrap().index, 3);
        let garbage = vec![entry("jobs/enc/.lock", None, SEMAPHORE_FLAGS, Some(b"nope"), 3)];
        assert!(matches!(l.view(&garbage, 2).unwrap_err(), Error::Conflict { .. }));
    }
}
