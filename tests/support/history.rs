//! The partition run's history (JSON lines) and its checker. Each line is one event: a critical
//! section (key, kind, fencing token, pid, enter/exit times, `is_held()` at exit, what the fenced
//! register said), an acquire that failed, a nemesis window, or a key's final register state.
//!
//! Checks, per key: holders that still saw `is_held()` true at exit never number more than the
//! key's limit at once (1 for a mutex: no two such intervals overlap); every write the register
//! accepted carries a token larger than every earlier accepted one; no lost update (each accepted
//! write read the value of the one before it and wrote it + 1, and the final value is the number of
//! accepted writes); at most one process per election term. Generic over the key's kind, so a
//! semaphore (limit > 1) or an election (records with a `term`) can be added to the workload.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Section(Section),
    AcquireFailed { key: String, pid: u32, at_ns: u64, error: String },
    Nemesis { kind: String, detail: String, start_ns: u64, end_ns: u64 },
    Final { key: String, value: u64, seq: u64, max_token: u64 },
}

/// One critical section as its process saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub key: String,
    /// `mutex`, `fair`, … (what took the key).
    pub kind: String,
    /// How many holders the key admits at once (1: mutual exclusion).
    pub limit: u32,
    /// Election term, for kinds that elect a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    pub token: u64,
    pub pid: u32,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub held_at_exit: bool,
    /// The value the register returned; `None`: the read was rejected (stale token).
    pub read: Option<u64>,
    /// The value written (read + 1), when the read was accepted.
    pub wrote: Option<u64>,
    /// The register's sequence number of the write, when accepted.
    pub write_seq: Option<u64>,
}

/// A failed check: what, and the offending history lines (1-based line numbers and text).
#[derive(Debug, Clone)]
pub struct Violation {
    pub what: String,
    pub lines: Vec<(usize, String)>,
}

/// Figures of a history.
#[derive(Debug, Default)]
pub struct Report {
    pub sections: usize,
    pub sections_per_key: BTreeMap<String, usize>,
    pub processes: usize,
    /// Consecutive sections of one key by different processes.
    pub handoffs: usize,
    pub accepted_writes: usize,
    /// Sections whose read or write the register rejected (a stale token stopped by fencing).
    pub stale_rejected: usize,
    /// Sections that ended with `is_held()` false (the holder knew it had lost the lock).
    pub lost_at_exit: usize,
    pub acquire_failures: usize,
    /// Nemesis windows by kind.
    pub windows: BTreeMap<String, usize>,
    /// Per nemesis kind: the longest time, in ms, a key was free (its last holder had left) yet
    /// nobody entered it, across one of its windows.
    pub longest_unavailable_ms: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// The figures, one per line.
    pub fn figures(&self) -> String {
        let mut s = format!(
            "sections {} ({:?}) by {} processes; handoffs {}; accepted writes {}; stale reads/writes rejected {}; \
             lost at exit {}; acquire failures {}\n",
            self.sections,
            self.sections_per_key,
            self.processes,
            self.handoffs,
            self.accepted_writes,
            self.stale_rejected,
            self.lost_at_exit,
            self.acquire_failures
        );
        for (k, n) in &self.windows {
            let u = self.longest_unavailable_ms.get(k).copied().unwrap_or(0);
            s.push_str(&format!("nemesis {k}: {n} windows, longest unavailability {u} ms\n"));
        }
        s.push_str(&format!("violations {}\n", self.violations.len()));
        for v in &self.violations {
            s.push_str(&format!("VIOLATION: {}\n", v.what));
            for (n, l) in &v.lines {
                s.push_str(&format!("  line {n}: {l}\n"));
            }
        }
        s
    }
}

/// Parse and check a history text. A line that does not parse is itself a violation.
pub fn check(text: &str) -> Report {
    let mut r = Report::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut sections: Vec<(usize, Section)> = Vec::new();
    let mut windows = Vec::new();
    let mut finals = Vec::new();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Event>(line) {
            Ok(Event::Section(s)) => sections.push((i, s)),
            Ok(Event::AcquireFailed { .. }) => r.acquire_failures += 1,
            Ok(Event::Nemesis { kind, start_ns, end_ns, .. }) => windows.push((kind, start_ns, end_ns)),
            Ok(Event::Final { key, value, seq, .. }) => finals.push((i, key, value, seq)),
            Err(e) => violation(&mut r, &lines, format!("unparsable history line: {e}"), &[i]),
        }
    }
    r.sections = sections.len();
    r.processes = sections.iter().map(|(_, s)| s.pid).collect::<std::collections::HashSet<_>>().len();
    r.stale_rejected =
        sections.iter().filter(|(_, s)| s.read.is_none() || (s.wrote.is_some() && s.write_seq.is_none())).count();
    r.lost_at_exit = sections.iter().filter(|(_, s)| !s.held_at_exit).count();
    let mut by_key: BTreeMap<String, Vec<(usize, Section)>> = BTreeMap::new();
    for (i, s) in sections {
        by_key.entry(s.key.clone()).or_default().push((i, s));
    }
    for (key, mut v) in by_key {
        v.sort_by_key(|(_, s)| s.enter_ns);
        r.sections_per_key.insert(key.clone(), v.len());
        r.handoffs += v.windows(2).filter(|w| w[0].1.pid != w[1].1.pid).count();
        check_limit(&mut r, &lines, &key, &v);
        check_register(&mut r, &lines, &key, &v, &finals);
        check_terms(&mut r, &lines, &key, &v);
        unavailability(&mut r, &v, &windows);
    }
    for (kind, _, _) in &windows {
        *r.windows.entry(kind.clone()).or_default() += 1;
    }
    r
}

fn violation(r: &mut Report, lines: &[&str], what: String, at: &[usize]) {
    let lines = at.iter().map(|&i| (i + 1, lines[i].to_owned())).collect();
    r.violations.push(Violation { what, lines });
}

/// Among holders that still saw `is_held()` at exit, never more than `limit` at once.
fn check_limit(r: &mut Report, lines: &[&str], key: &str, v: &[(usize, Section)]) {
    let mut open: Vec<&(usize, Section)> = Vec::new();
    for e in v.iter().filter(|(_, s)| s.held_at_exit) {
        open.retain(|(_, o)| o.exit_ns >= e.1.enter_ns);
        open.push(e);
        let limit = e.1.limit.max(1) as usize;
        if open.len() > limit {
            let at: Vec<usize> = open.iter().map(|(i, _)| *i).collect();
            let what = format!("{key}: {} holders at once that all saw is_held() at exit (limit {limit})", open.len());
            violation(r, lines, what, &at);
        }
    }
}

/// Accepted writes in the register's order: tokens strictly increase, each read the previous
/// value and wrote it + 1, and the final value counts them.
fn check_register(
    r: &mut Report,
    lines: &[&str],
    key: &str,
    v: &[(usize, Section)],
    finals: &[(usize, String, u64, u64)],
) {
    let mut w: Vec<&(usize, Section)> = v.iter().filter(|(_, s)| s.write_seq.is_some()).collect();
    w.sort_by_key(|(_, s)| s.write_seq);
    r.accepted_writes += w.len();
    let mut prev: Option<&(usize, Section)> = None;
    let mut best: Option<&(usize, Section)> = None;
    for e in w {
        let s = &e.1;
        if let Some(b) = best.filter(|b| s.token <= b.1.token) {
            let what = format!(
                "{key}: accepted write with token {} after an accepted write with token {}",
                s.token, b.1.token
            );
            violation(r, lines, what, &[b.0, e.0]);
        }
        let expected = prev.and_then(|p| p.1.wrote).unwrap_or(0);
        if s.read != Some(expected) || s.wrote != s.read.map(|x| x + 1) {
            let what = format!(
                "{key}: lost update: read {:?}, wrote {:?}, the previous accepted write left {expected}",
                s.read, s.wrote
            );
            let at: Vec<usize> = prev.iter().map(|p| p.0).chain([e.0]).collect();
            violation(r, lines, what, &at);
        }
        if best.is_none_or(|b| s.token > b.1.token) {
            best = Some(e);
        }
        prev = Some(e);
    }
    let last = prev.and_then(|p| p.1.wrote).unwrap_or(0);
    let count = v.iter().filter(|(_, s)| s.write_seq.is_some()).count() as u64;
    for (i, _, value, seq) in finals.iter().filter(|f| f.1 == key) {
        if *value != last || *seq != count || *value != count {
            let what = format!(
                "{key}: register ends at value {value} (seq {seq}), {count} accepted writes ending at {last} recorded"
            );
            violation(r, lines, what, &[*i]);
        }
    }
}

/// At most one process per election term.
fn check_terms(r: &mut Report, lines: &[&str], key: &str, v: &[(usize, Section)]) {
    let mut first: HashMap<u64, &(usize, Section)> = HashMap::new();
    for e in v {
        let Some(term) = e.1.term else { continue };
        match first.get(&term) {
            Some(f) if f.1.pid != e.1.pid => {
                let what = format!("{key}: two leaders in term {term} (pids {} and {})", f.1.pid, e.1.pid);
                violation(r, lines, what, &[f.0, e.0]);
            }
            Some(_) => {}
            None => {
                first.insert(term, e);
            }
        }
    }
}

/// For each nemesis window, the longest time this key was free yet nobody entered it (from one
/// section's exit to the next one's entry) that overlaps the window.
fn unavailability(r: &mut Report, v: &[(usize, Section)], windows: &[(String, u64, u64)]) {
    for (kind, start, end) in windows {
        let longest = v
            .windows(2)
            .map(|w| (w[0].1.exit_ns.min(w[1].1.enter_ns), w[1].1.enter_ns))
            .filter(|(a, b)| a < end && b > start)
            .map(|(a, b)| (b - a) / 1_000_000)
            .max()
            .unwrap_or((end - start) / 1_000_000);
        let e = r.longest_unavailable_ms.entry(kind.clone()).or_default();
        *e = (*e).max(longest);
    }
}
