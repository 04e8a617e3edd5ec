//! `consul-lock status KEY [--json]`: who holds a lock — or, when KEY is a semaphore's prefix (its
//! `KEY/.lock` carries the semaphore flags), its limit and holders; when KEY is a read-write lock
//! (its flags say so), the writer or the readers and who waits — for humans or scripts.

use serde::Serialize;

use consul_lock::{Client, Error, Holder, SessionInfo};

use crate::exit::{self, Failure};
use crate::timefmt;

/// Everything known about a key's holder. Also the `--json` schema (field names are stable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    pub(crate) key: String,
    pub(crate) held: bool,
    pub(crate) session: Option<String>,
    pub(crate) session_name: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) pid: Option<u32>,
    /// RFC 3339, UTC, from the holder's clock.
    pub(crate) since: Option<String>,
    pub(crate) since_unix_ms: Option<u64>,
    pub(crate) fencing_token: Option<u64>,
    pub(crate) lock_delay_ms: Option<u64>,
    /// The key's value, when it is UTF-8 text other than consul-lock's own holder JSON (`run --value`).
    pub(crate) value: Option<String>,
}

impl Report {
    /// Read the holder of `key` and, when held, its session.
    pub(crate) async fn read(client: &Client, key: &str, code: i32) -> Result<Report, Failure> {
        let fail = |e: consul_lock::Error| Failure::from_lib(code, &e, client.address());
        let holder = client.holder(key).await.map_err(fail)?;
        let session = match &holder {
            Some(h) => client.session_info(&h.session_id).await.map_err(fail)?,
            None => None,
        };
        Ok(Report::new(key, holder.as_ref(), session.as_ref()))
    }

    pub(crate) fn new(key: &str, holder: Option<&Holder>, session: Option<&SessionInfo>) -> Report {
        let info = holder.and_then(|h| h.info.as_ref());
        let since_unix_ms = info.and_then(|i| i.acquired_at_unix_ms);
        Report {
            key: key.to_owned(),
            held: holder.is_some(),
            session: holder.map(|h| h.session_id.clone()),
            session_name: session.map(|s| s.name.clone()).filter(|n| !n.is_empty()),
            node: session.map(|s| s.node.clone()).filter(|n| !n.is_empty()),
            hostname: info.and_then(|i| i.hostname.clone()),
            pid: info.and_then(|i| i.pid),
            since: since_unix_ms.map(timefmt::rfc3339_ms),
            since_unix_ms,
            fencing_token: holder.map(|h| h.modify_index),
            lock_delay_ms: session.map(|s| s.lock_delay.as_millis() as u64),
            value: holder.filter(|h| h.info.is_none()).and_then(|h| String::from_utf8(h.value.clone()).ok()),
        }
    }

    /// "session 1a2b… on node n1 (host web-3, pid 4242), since 2026-…Z (3m12s ago), fencing token 77"
    pub(crate) fn holder_line(&self) -> String {
        let mut s = format!("session {}", self.session.as_deref().unwrap_or("?"));
        if let Some(n) = &self.node {
            s += &format!(" on node {n}");
        }
        match (&self.hostname, self.pid) {
            (Some(h), Some(p)) => s += &format!(" (host {h}, pid {p})"),
            (Some(h), None) => s += &format!(" (host {h})"),
            (None, Some(p)) => s += &format!(" (pid {p})"),
            (None, None) => {}
        }
        if let (Some(since), Some(ms)) = (&self.since, self.since_unix_ms) {
            s += &format!(", since {since} ({} ago)", timefmt::short(timefmt::ago(ms)));
        }
        if let Some(t) = self.fencing_token {
            s += &format!(", fencing token {t}");
        }
        s
    }

    /// "web-3 pid 4242 for 3m12s (session 1a2b3c4d)": fits a terminal line.
    pub(crate) fn holder_short(&self) -> String {
        let mut s = match (&self.hostname, self.pid) {
            (Some(h), Some(p)) => format!("{h} pid {p}"),
            (Some(h), None) => h.clone(),
            (None, Some(p)) => format!("pid {p}"),
            (None, None) => "another process".to_owned(),
        };
        if let Some(ms) = self.since_unix_ms {
            s += &format!(" for {}", timefmt::short(timefmt::ago(ms)));
        }
        let session = self.session.as_deref().unwrap_or("?");
        s += &format!(" (session {})", session.get(..8).unwrap_or(session));
        s
    }

    fn print_human(&self) {
        if !self.held {
            say!("{}: free", self.key);
            return;
        }
        say!("{}: held", self.key);
        let row = |name: &str, v: Option<String>| say!("  {name:<14} {}", v.unwrap_or_else(|| "-".into()));
        row("session", self.session.clone());
        row("session name", self.session_name.clone());
        row("node", self.node.clone());
        row("hostname", self.hostname.clone());
        row("pid", self.pid.map(|p| p.to_string()));
        row(
            "since",
            self.since
                .as_ref()
                .zip(self.since_unix_ms)
                .map(|(s, ms)| format!("{s} ({} ago)", timefmt::short(timefmt::ago(ms)))),
        );
        row("fencing token", self.fencing_token.map(|t| t.to_string()));
    }
}

/// A semaphore's state. Also the `--json` schema for semaphores (field names are stable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SemaphoreReport {
    pub(crate) key: String,
    pub(crate) semaphore: bool,
    pub(crate) limit: i64,
    /// Every slot is taken.
    pub(crate) held: bool,
    /// One entry per live holder, for its contender key `KEY/<session>`.
    pub(crate) holders: Vec<Report>,
}

impl SemaphoreReport {
    /// `None` when `prefix` is not a semaphore's (no `.lock` key, or one with other flags).
    async fn read(client: &Client, prefix: &str) -> Result<Option<SemaphoreReport>, Failure> {
        let fail = |e: Error| Failure::from_lib(exit::ERROR, &e, client.address());
        let state = match client.semaphore(prefix).await {
            Ok(Some(s)) => s,
            Ok(None) | Err(Error::Conflict { .. } | Error::InvalidConfig(_)) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let mut holders = Vec::with_capacity(state.holders.len());
        for h in &state.holders {
            let session = client.session_info(&h.session_id).await.map_err(fail)?;
            holders.push(Report::new(&format!("{prefix}/{}", h.session_id), Some(h), session.as_ref()));
        }
        let held = holders.len() as i64 >= state.limit;
        Ok(Some(SemaphoreReport { key: prefix.to_owned(), semaphore: true, limit: state.limit, held, holders }))
    }

    fn print_human(&self) {
        say!("{}: semaphore, {} of {} slots taken", self.key, self.holders.len(), self.limit);
        for h in &self.holders {
            say!("  {}", h.holder_line());
        }
    }
}

/// A read-write lock's state. Also the `--json` schema for read-write locks (stable field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RwReport {
    pub(crate) key: String,
    pub(crate) rwlock: bool,
    /// A writer or at least one reader holds it.
    pub(crate) held: bool,
    pub(crate) writer: Option<Report>,
    pub(crate) readers: Vec<Report>,
    /// In arrival order.
    pub(crate) waiting: Vec<Waiter>,
}

/// A request waiting for a read-write lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Waiter {
    pub(crate) exclusive: bool,
    #[serde(flatten)]
    pub(crate) report: Report,
}

impl RwReport {
    /// `None` when `key` is not a read-write lock's (another primitive's, or unused).
    async fn read(client: &Client, key: &str) -> Result<Option<RwReport>, Failure> {
        let fail = |e: Error| Failure::from_lib(exit::ERROR, &e, client.address());
        let state = match client.rw_lock(key).await {
            Ok(Some(s)) => s,
            Ok(None) | Err(Error::Conflict { .. } | Error::InvalidConfig(_)) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let writer = match &state.writer {
            Some(w) => Some(holder_report(client, key, w).await?),
            None => None,
        };
        let mut readers = Vec::with_capacity(state.readers.len());
        for r in &state.readers {
            let mut r = holder_report(client, key, r).await?;
            r.fencing_token = None; // a reader's place index is no token
            readers.push(r);
        }
        let mut waiting = Vec::with_capacity(state.waiting.len());
        for (exclusive, w) in &state.waiting {
            let mut report = holder_report(client, key, w).await?;
            (report.held, report.fencing_token) = (false, None);
            waiting.push(Waiter { exclusive: *exclusive, report });
        }
        let held = writer.is_some() || !readers.is_empty();
        Ok(Some(RwReport { key: key.to_owned(), rwlock: true, held, writer, readers, waiting }))
    }

    fn print_human(&self) {
        match (&self.writer, self.readers.len()) {
            (Some(w), _) => say!("{}: read-write lock, held exclusively by {}", self.key, w.holder_line()),
            (None, 0) => say!("{}: read-write lock, free", self.key),
            (None, n) => say!("{}: read-write lock, shared by {n} reader{}", self.key, if n == 1 { "" } else { "s" }),
        }
        for r in &self.readers {
            say!("  reader  {}", r.holder_line());
        }
        for w in &self.waiting {
            say!("  waits   {} {}", if w.exclusive { "exclusive" } else { "shared   " }, w.report.holder_line());
        }
    }
}

/// The report of one holder (or waiter) of `key`, with its session.
async fn holder_report(client: &Client, key: &str, h: &Holder) -> Result<Report, Failure> {
    let session = client.session_info(&h.session_id).await;
    let session = session.map_err(|e| Failure::from_lib(exit::ERROR, &e, client.address()))?;
    Ok(Report::new(key, Some(h), session.as_ref()))
}

/// Exit 0 when free (a semaphore: a slot is free), 1 when held (all slots taken), 2 on error.
pub(crate) async fn status(client: &Client, key: &str, json: bool) -> Result<i32, Failure> {
    if let Some(rw) = RwReport::read(client, key).await? {
        if json {
            let out = serde_json::to_string(&rw).map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
            say!("{out}");
        } else {
            rw.print_human();
        }
        return Ok(if rw.held { 1 } else { 0 });
    }
    if let Some(sem) = SemaphoreReport::read(client, key).await? {
        if json {
            let out = serde_json::to_string(&sem).map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
            say!("{out}");
        } else {
            sem.print_human();
        }
        return Ok(if sem.held { 1 } else { 0 });
    }
    let report = Report::read(client, key, exit::ERROR).await?;
    if json {
        let out = serde_json::to_string(&report).map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
        say!("{out}");
    } else {
        report.print_human();
    }
    Ok(if report.held { 1 } else { 0 })
}
