//! A read-write lock's keys and the rules read from them, as pure functions: which place in line
//! is a reader's, whom a waiter watches, when a reader's departure wakes the writer behind it, what
//! state the lock's key is in, and who holds and who waits (for `status`).

use crate::consul::flags::{RWLOCK_FLAGS, RWLOCK_READ_FLAGS};
use crate::holder::KvEntry;
use crate::primitive::queue;

/// The key the line hangs under: `KEY/.consul-lock-rw` (never written itself). A line of its own,
/// apart from a plain lock's queue under `KEY/.consul-lock-queue/`: a plain lock that meets our key
/// must find it refused at once, not wait behind our places.
pub(crate) fn line(key: &str) -> String {
    if key.ends_with('/') {
        format!("{key}.consul-lock-rw")
    } else {
        format!("{key}/.consul-lock-rw")
    }
}

/// The prefix of the places in line: `KEY/.consul-lock-rw/.consul-lock-queue/`.
pub(crate) fn line_prefix(key: &str) -> String {
    queue::prefix(&line(key))
}

/// Our own place in the line of `key`, from a listing of it.
pub(crate) fn mine<'a>(key: &str, sid: &str, entries: &'a [KvEntry]) -> Option<&'a KvEntry> {
    queue::ahead(&line(key), sid, entries).map(|(me, _)| me)
}

/// The value of the lock's key while no writer holds it (the marker).
pub(crate) const MARKER: &[u8] = br#"{"consul-lock":"rwlock"}"#;

/// Shared (read) or exclusive (write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

impl Mode {
    /// The flags a place in line of this mode carries.
    pub(crate) fn flags(self) -> u64 {
        match self {
            Mode::Read => RWLOCK_READ_FLAGS,
            Mode::Write => RWLOCK_FLAGS,
        }
    }

    /// The mode of a place: a reader's flags, or else a writer (a plain lock's waiter counts as one).
    pub(crate) fn of(e: &KvEntry) -> Mode {
        if e.flags == RWLOCK_READ_FLAGS {
            Mode::Read
        } else {
            Mode::Write
        }
    }
}

/// A place in line to wait on: until it is no longer this entry (same creation, session and mode;
/// for our own place, same modification too, so that a touch ends the wait). A touch of another's
/// place only re-arms the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watched {
    pub(crate) key: String,
    pub(crate) created: u64,
    pub(crate) modified: u64,
    pub(crate) session: String,
    pub(crate) flags: u64,
    /// Our own place: any modification (a touch) ends the wait.
    pub(crate) own: bool,
}

impl Watched {
    fn of(e: &KvEntry, own: bool) -> Self {
        Watched {
            key: e.key.clone(),
            created: e.create_index,
            modified: e.modify_index.max(1),
            session: e.holder_session().unwrap_or_default().to_owned(),
            flags: e.flags,
            own,
        }
    }

    pub(crate) fn same(&self, e: Option<&KvEntry>) -> bool {
        e.is_some_and(|e| {
            e.create_index == self.created
                && e.flags == self.flags
                && (!self.own || e.modify_index == self.modified)
                && e.holder_session() == Some(self.session.as_str())
        })
    }
}

/// What a contender in line does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nobody ahead blocks us: take the lock (a reader checks the key's marker, a writer locks the key).
    Mine,
    /// Wait on the nearest place ahead that blocks us: a reader's nearest writer, a writer's
    /// predecessor when that is a writer.
    Behind(Watched),
    /// A writer right behind readers: wait on our own place, which the last of them touches as it
    /// leaves (a reader's departure wakes nobody until the last one leaves).
    BehindReaders(Watched),
    /// Our place is gone (our session was invalidated): take a new one.
    Missing,
}

/// Decide from a listing of the line of `lock_key` what the contender `sid` in `mode` does.
pub(crate) fn turn(lock_key: &str, sid: &str, mode: Mode, entries: &[KvEntry]) -> Turn {
    let Some((me, ahead)) = queue::ahead(&line(lock_key), sid, entries) else { return Turn::Missing };
    match mode {
        Mode::Read => match ahead.iter().rev().find(|e| Mode::of(e) == Mode::Write) {
            Some(w) => Turn::Behind(Watched::of(w, false)),
            None => Turn::Mine,
        },
        Mode::Write => match ahead.last() {
            None => Turn::Mine,
            Some(p) if Mode::of(p) == Mode::Read => Turn::BehindReaders(Watched::of(me, true)),
            Some(p) => Turn::Behind(Watched::of(p, false)),
        },
    }
}

/// After a reader's place created at `left` left the line, listed in `entries`: the writer to wake,
/// if it waited on its own place behind us and no reader stands before it any more.
pub(crate) fn to_wake<'a>(lock_key: &str, left: u64, entries: &'a [KvEntry]) -> Option<&'a KvEntry> {
    let all = queue::places(&line(lock_key), entries);
    let next = all.iter().find(|e| e.create_index > left).filter(|e| Mode::of(e) == Mode::Write)?;
    let before = all.iter().rev().find(|e| e.create_index < left);
    match before {
        Some(b) if Mode::of(b) == Mode::Read => None,
        _ => Some(next),
    }
}

/// The state of the lock's key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// No key: readers create the marker, a writer takes it if absent.
    Absent,
    /// The marker (our flags, no session) at this `ModifyIndex`: readers may hold.
    Marker(u64),
    /// Held by a session (a writer), at this `ModifyIndex`.
    Held { session: String, index: u64 },
    /// Another primitive's key, or plain data: never ours to take.
    Foreign(u64),
}

impl KeyState {
    pub(crate) fn of(entry: Option<&KvEntry>) -> KeyState {
        let Some(e) = entry else { return KeyState::Absent };
        if e.flags != RWLOCK_FLAGS {
            return KeyState::Foreign(e.flags);
        }
        match e.holder_session() {
            Some(s) => KeyState::Held { session: s.to_owned(), index: e.modify_index },
            None => KeyState::Marker(e.modify_index),
        }
    }
}

/// Who holds and who waits, from the key and a listing of its line.
#[derive(Debug, Default)]
pub(crate) struct Roles<'a> {
    /// The writer's place, when the first in line is a writer holding the key.
    pub(crate) writer: Option<&'a KvEntry>,
    /// The readers at the head of the line (before any writer).
    pub(crate) readers: Vec<&'a KvEntry>,
    /// Everyone else, in arrival order.
    pub(crate) waiting: Vec<&'a KvEntry>,
}

pub(crate) fn roles<'a>(lock_key: &str, key: Option<&KvEntry>, entries: &'a [KvEntry]) -> Roles<'a> {
    let all = queue::places(&line(lock_key), entries);
    let mut roles = Roles::default();
    let writer_holds = |p: &KvEntry| key.and_then(KvEntry::holder_session) == p.holder_session();
    let mut rest = all.into_iter().peekable();
    match rest.peek() {
        Some(p) if Mode::of(p) == Mode::Write && writer_holds(p) => roles.writer = rest.next(),
        _ => {
            while let Some(p) = rest.next_if(|p| Mode::of(p) == Mode::Read) {
                roles.readers.push(p);
            }
        }
    }
    roles.waiting = rest.collect();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(sid: &str, created: u64, mode: Mode) -> KvEntry {
        KvEntry {
            key: format!("k/.consul-lock-rw/.consul-lock-queue/{sid}"),
            create_index: created,
            modify_index: created,
            session: Some(sid.into()),
            lock_index: 1,
            flags: mode.flags(),
            value: None,
        }
    }

    use Mode::{Read as R, Write as W};

    #[test]
    fn a_line_of_its_own() {
        assert_eq!(line_prefix("k"), "k/.consul-lock-rw/.consul-lock-queue/");
        assert_eq!(line_prefix("dir/"), "dir/.consul-lock-rw/.consul-lock-queue/");
    }

    #[test]
    fn readers_wait_for_writers_only_writers_for_everyone() {
        let line = [place("w1", 1, W), place("r1", 2, R), place("r2", 3, R), place("w2", 4, W), place("r3", 5, R)];
        assert_eq!(turn("k", "w1", W, &line), Turn::Mine);
        // Both readers behind w1 wait on w1: its release wakes exactly them.
        assert_eq!(turn("k", "r1", R, &line), Turn::Behind(Watched::of(&line[0], false)));
        assert_eq!(turn("k", "r2", R, &line), Turn::Behind(Watched::of(&line[0], false)));
        // w2 is right behind readers: it waits on its own place.
        assert_eq!(turn("k", "w2", W, &line), Turn::BehindReaders(Watched::of(&line[3], true)));
        // A reader behind a waiting writer waits for that writer.
        assert_eq!(turn("k", "r3", R, &line), Turn::Behind(Watched::of(&line[3], false)));
        assert_eq!(turn("k", "zz", R, &line), Turn::Missing);
        let readers = [place("r1", 2, R), place("r2", 3, R), place("r3", 9, R)];
        assert_eq!(turn("k", "r3", R, &readers), Turn::Mine, "readers share");
        let writers = [place("w1", 1, W), place("w2", 2, W)];
        assert_eq!(turn("k", "w2", W, &writers), Turn::Behind(Watched::of(&writers[0], false)));
    }

    #[test]
    fn only_the_last_reader_before_a_writer_wakes_it() {
        let w2 = place("w2", 4, W);
        // r1 left; r2 still reads before w2: nobody is woken.
        let woken = |left, line: &[KvEntry]| to_wake("k", left, line).map(|e| e.create_index);
        assert_eq!(woken(2, &[place("r2", 3, R), w2.clone()]), None);
        // r2 left last: w2 is woken.
        assert_eq!(woken(3, std::slice::from_ref(&w2)), Some(4));
        // A waiting reader between a writer and w2 gave up: w2 must now wait on w1.
        assert_eq!(to_wake("k", 3, &[place("w1", 1, W), w2.clone()]).map(|e| e.create_index), Some(4));
        // Nobody behind, or a reader behind: nothing to wake.
        assert_eq!(woken(3, &[place("r4", 5, R)]), None);
        assert_eq!(woken(3, &[]), None);
    }

    #[test]
    fn watched_ends_on_any_change() {
        let e = place("w1", 1, W);
        let (theirs, own) = (Watched::of(&e, false), Watched::of(&e, true));
        assert!(theirs.same(Some(&e)) && own.same(Some(&e)));
        assert!(!theirs.same(None));
        let touched = KvEntry { modify_index: 7, ..e.clone() };
        assert!(theirs.same(Some(&touched)) && !own.same(Some(&touched)), "a touch wakes only the owner");
        let downgraded = KvEntry { flags: R.flags(), ..touched };
        assert!(!theirs.same(Some(&downgraded)), "a downgrade wakes those behind");
        assert!(!theirs.same(Some(&KvEntry { create_index: 8, modify_index: 8, ..e.clone() })), "a new place");
    }

    #[test]
    fn key_states_and_roles() {
        let key = |flags, session: Option<&str>| KvEntry {
            key: "k".into(),
            create_index: 1,
            modify_index: 5,
            session: session.map(Into::into),
            lock_index: 1,
            flags,
            value: None,
        };
        assert_eq!(KeyState::of(None), KeyState::Absent);
        assert_eq!(KeyState::of(Some(&key(RWLOCK_FLAGS, None))), KeyState::Marker(5));
        assert_eq!(KeyState::of(Some(&key(RWLOCK_FLAGS, Some("w")))), KeyState::Held { session: "w".into(), index: 5 });
        let lock = crate::consul::flags::LOCK_FLAGS;
        assert_eq!(KeyState::of(Some(&key(lock, Some("x")))), KeyState::Foreign(lock));
        assert_eq!(KeyState::of(Some(&key(0, None))), KeyState::Foreign(0));

        let line = [place("w1", 1, W), place("r1", 2, R), place("w2", 4, W)];
        let r = roles("k", Some(&key(RWLOCK_FLAGS, Some("w1"))), &line);
        assert_eq!(r.writer.map(|e| e.create_index), Some(1));
        assert!(r.readers.is_empty());
        assert_eq!(r.waiting.len(), 2);
        let line = [place("r1", 2, R), place("r2", 3, R), place("w2", 4, W), place("r3", 5, R)];
        let r = roles("k", Some(&key(RWLOCK_FLAGS, None)), &line);
        assert!(r.writer.is_none());
        assert_eq!((r.readers.len(), r.waiting.len()), (2, 2));
    }
}
