//! The few Consul HTTP endpoints the primitives need, each one request, each answer classified
//! (Consul's words through [`classify`]). No retries and no policy here: callers decide (see
//! `retry`); blocking queries are built in `watch`.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::consul::budget::Lane;
use crate::consul::client::{Client, Reply};
use crate::consul::key;
use crate::consul::ops;
use crate::error::{classify, Error, Result, Said};
use crate::holder::{Holder, KvEntry};

/// What `PUT /v1/session/create` is sent.
#[derive(Debug, Clone)]
pub(crate) struct SessionSpec {
    pub name: String,
    pub ttl: Duration,
    pub lock_delay: Duration,
    /// `false`: `"Checks": [], "NodeChecks": []` — the session lives only by its TTL renewals.
    pub node_checks: bool,
}

impl SessionSpec {
    fn body(&self) -> Vec<u8> {
        let mut v = json!({
            "Name": self.name,
            "TTL": format!("{}s", self.ttl.as_secs()),
            "Behavior": "delete",
            // Milliseconds, as a string: bare numbers under 1000 would be read as seconds.
            "LockDelay": if self.lock_delay.is_zero() { "0s".to_owned() } else { format!("{}ms", self.lock_delay.as_millis()) },
        });
        if !self.node_checks {
            v["Checks"] = json!([]);
            v["NodeChecks"] = json!([]);
        }
        v.to_string().into_bytes()
    }
}

/// Outcome of a lock attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LockAttempt {
    /// We hold the key; the acquire write's ModifyIndex (the fencing token).
    Acquired { modify_index: u64 },
    /// Another session holds the key.
    Held,
    /// The key is free but in its lock-delay after a holder's session was invalidated.
    LockDelay,
    /// The key was not as expected (it exists, or changed since read): read it and decide.
    NotAsExpected,
    /// Our session no longer exists: Consul's answer, as it said it.
    InvalidSession { status: u16, message: String },
}

/// Outcome of the owner-checked delete.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// Deleted; `waiting`: the key's queue had waiters of other sessions (when it was listed).
    Deleted { waiting: bool },
    /// The key was gone or held by another session: nothing of ours to delete.
    NotOurs,
}

/// Outcome of a renewal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// Renewed; the server's TTL for the session when it sent one.
    Ok { ttl: Option<Duration> },
    /// 404: the session is gone.
    Gone,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply<T> {
    #[serde(default = "Option::default")]
    results: Option<Vec<TxnResult<T>>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
struct TxnResult<T> {
    #[serde(rename = "KV")]
    kv: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    #[serde(default)]
    what: String,
    #[serde(default)]
    op_index: usize,
}

/// The answer to a `/v1/txn` request.
pub(crate) enum Txn<T> {
    /// HTTP 200: the KV results, in operation order.
    Committed(Vec<T>),
    /// HTTP 409: rolled back; Consul's reasons, joined. Never a permission error (that is
    /// [`Error::PermissionDenied`]).
    RolledBack(String),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvOp<'a> {
    verb: &'a str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
}

/// One KV operation of a `/v1/txn` request (Consul's verbs: `lock`, `unlock`, `cas`, `check-*`, …).
#[derive(Serialize)]
pub(crate) struct TxnOp<'a> {
    #[serde(rename = "KV")]
    kv: KvOp<'a>,
}

impl<'a> TxnOp<'a> {
    pub(crate) fn kv(verb: &'a str, key: &'a str, value: Option<&[u8]>, session: Option<&'a str>) -> Self {
        let value = value.map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        TxnOp { kv: KvOp { verb, key, value, session, flags: None, index: None } }
    }

    pub(crate) fn flags(mut self, flags: u64) -> Self {
        self.kv.flags = Some(flags);
        self
    }

    pub(crate) fn index(mut self, index: u64) -> Self {
        self.kv.index = Some(index);
        self
    }
}

pub(crate) fn txn_body(ops: &[TxnOp<'_>]) -> Vec<u8> {
    // Serialising strings cannot fail.
    serde_json::to_vec(ops).unwrap_or_default()
}

/// What a lock attempt requires of the key, so that a lock never takes another primitive's key:
/// the `lock` op runs only if the key is still as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The key does not exist (the common case: released keys are deleted).
    Absent,
    /// The key exists, free, with a lock's flags, at this `ModifyIndex` (released by Go's
    /// `api.Lock`, which keeps the key).
    Unchanged(u64),
}

/// The exact body of the lock transaction (its size is checked before any request): the guard of
/// `expect`, then `lock` with our value and [`LOCK_FLAGS`](crate::LOCK_FLAGS).
pub(crate) fn lock_txn_body(key: &str, value: &[u8], session: &str, expect: Expect) -> Vec<u8> {
    txn_body(&lock_ops(key, value, session, expect))
}

/// The two operations that take one key: the guard of `expect`, then `lock` with our value and
/// [`LOCK_FLAGS`](crate::LOCK_FLAGS).
fn lock_ops<'a>(key: &'a str, value: &[u8], session: &'a str, expect: Expect) -> [TxnOp<'a>; 2] {
    [expect.guard(key), TxnOp::kv("lock", key, Some(value), Some(session)).flags(crate::consul::flags::LOCK_FLAGS)]
}

/// Operations one key of a multi-key lock takes in its acquire transaction (the guard and the
/// `lock`): a set of at most [`MAX_TXN_OPS`](crate::MAX_TXN_OPS) / 2 keys fits one transaction.
pub(crate) const OPS_PER_LOCKED_KEY: usize = 2;

/// The exact body of a multi-key lock transaction: every key of `keys` taken as by
/// [`lock_txn_body`], all in one transaction — all or none.
pub(crate) fn multi_lock_txn_body(keys: &[(&str, Expect)], value: &[u8], session: &str) -> Vec<u8> {
    txn_body(&keys.iter().flat_map(|(k, e)| lock_ops(k, value, session, *e)).collect::<Vec<_>>())
}

/// The exact body of a guarded write (its size is checked before any request): `check-session`
/// on each of `held` for `session`, then `ops` in order. Consul runs it all or nothing.
pub(crate) fn guarded_txn_body(held: &[&str], session: &str, ops: &[ops::KvOp]) -> Vec<u8> {
    let checks = held.iter().map(|k| TxnOp::kv("check-session", k, None, Some(session)));
    let writes = ops.iter().map(|op| match op {
        ops::KvOp::Put { key, value } => TxnOp::kv("set", key, Some(value), None),
        ops::KvOp::Delete { key } => TxnOp::kv("delete", key, None, None),
    });
    txn_body(&checks.chain(writes).collect::<Vec<_>>())
}

/// Outcome of a guarded write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// Committed: every check passed and every operation was applied.
    Written,
    /// Rolled back: a held key is gone or another session's. Nothing was written.
    NotOurs,
}

impl Expect {
    /// The `check-not-exists` or `check-index` operation on `key` that requires it.
    pub(crate) fn guard(self, key: &str) -> TxnOp<'_> {
        match self {
            Expect::Absent => TxnOp::kv("check-not-exists", key, None, None),
            Expect::Unchanged(index) => TxnOp::kv("check-index", key, None, None).index(index),
        }
    }
}

/// Decode a `GET /v1/kv/<key>` answer: `None` for 404 (no such key).
pub(crate) fn decode_kv_entry(client: &Client, reply: Reply) -> Result<Option<KvEntry>> {
    Ok(decode_kv_entries(client, reply)?.pop())
}

/// Decode a `GET /v1/kv/<prefix>?recurse` answer: empty for 404 (no key under the prefix).
pub(crate) fn decode_kv_entries(client: &Client, reply: Reply) -> Result<Vec<KvEntry>> {
    if reply.status == 404 {
        return Ok(Vec::new());
    }
    let reply = client.check(reply)?;
    client.decode(&reply.body)
}

/// Decode a `GET /v1/session/info/<id>` answer (`null` or `[]` when the session does not exist).
pub(crate) fn decode_sessions(client: &Client, reply: Reply) -> Result<Vec<SessionEntry>> {
    let reply = client.check(reply)?;
    let infos: Option<Vec<SessionEntry>> = client.decode(&reply.body)?;
    Ok(infos.unwrap_or_default())
}

/// The outcome of queueing in fair mode.
pub(crate) enum Enqueued {
    /// Our entry is held by our session; the queue's entries, ours included.
    Listed(Vec<KvEntry>),
    /// Consul says our session is invalid.
    InvalidSession,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionId {
    #[serde(rename = "ID")]
    id: String,
}

/// A session as `/v1/session/info` and `/v1/session/renew` return it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionEntry {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default, rename = "TTL")]
    pub ttl: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub node: String,
    /// Nanoseconds as a number (Consul 1.8 and later); a duration string is accepted too.
    #[serde(default)]
    pub lock_delay: Option<serde_json::Value>,
    #[serde(default)]
    pub create_index: u64,
}

/// A Consul session, as returned by [`Client::session_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session ID.
    pub id: String,
    /// The session's name (this crate's default is `consul-lock: <key>`).
    pub name: String,
    /// The Consul node the session was created on (the agent the holder talked to).
    pub node: String,
    /// The session TTL, when it has one.
    pub ttl: Option<Duration>,
    /// The lock-delay imposed on its keys if the session is invalidated while holding them.
    pub lock_delay: Duration,
    /// The Raft index at which the session was created.
    pub create_index: u64,
}

impl SessionEntry {
    fn into_info(self) -> SessionInfo {
        let lock_delay = match &self.lock_delay {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_nanos),
            Some(serde_json::Value::String(s)) => parse_go_duration(s),
            _ => None,
        };
        SessionInfo {
            ttl: self.ttl.as_deref().and_then(parse_go_duration),
            lock_delay: lock_delay.unwrap_or_default(),
            id: self.id,
            name: self.name,
            node: self.node,
            create_index: self.create_index,
        }
    }
}

/// A session ID as a URL path segment; rejected before any request when it cannot be one.
fn session_path(id: &str) -> Result<String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(Error::InvalidConfig(format!("invalid session ID {id:?}")));
    }
    let mut out = String::with_capacity(id.len());
    crate::consul::key::encode_component(id, &mut out);
    Ok(out)
}

/// Parse Consul's duration strings as seen on sessions ("15s", "1m30s", "10000ms").
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(n * secs).ok()?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

impl Client {
    pub(crate) async fn session_create(&self, spec: &SessionSpec) -> Result<String> {
        let lane = self.session_lane(false);
        let reply =
            self.call_in(lane, Method::PUT, "session/create", &[], Some(spec.body()), self.request_timeout()).await?;
        let reply = self.check(reply)?;
        let s: SessionId = self.decode(&reply.body)?;
        if s.id.is_empty() || s.id.len() > 128 {
            return Err(Error::decode(self.address(), "session create returned no usable ID"));
        }
        Ok(s.id)
    }

    /// Renew a session (`holding`: it holds something now); on the lane of
    /// [`Client::session_lane`].
    pub(crate) async fn session_renew(&self, id: &str, timeout: Duration, holding: bool) -> Result<Renewed> {
        let lane = self.session_lane(holding);
        let reply = self.call_in(lane, Method::PUT, &format!("session/renew/{id}"), &[], None, timeout).await?;
        if reply.status == 404 {
            return Ok(Renewed::Gone);
        }
        let reply = self.check(reply)?;
        let infos: Vec<SessionEntry> = self.decode(&reply.body)?;
        match infos.first() {
            None => Ok(Renewed::Gone),
            Some(i) => Ok(Renewed::Ok { ttl: i.ttl.as_deref().and_then(parse_go_duration) }),
        }
    }

    pub(crate) async fn session_destroy(&self, id: &str) -> Result<()> {
        let path = format!("session/destroy/{id}");
        let reply = self.call_in(Lane::Holder, Method::PUT, &path, &[], None, self.request_timeout()).await?;
        self.check(reply).map(|_| ())
    }

    /// Who holds `key` now: `None` when it is free (missing, or present with no session).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid key (before any request); transport and Consul
    /// errors otherwise.
    ///
    /// # Cancel safety
    /// A read: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let client = consul_lock::Client::from_env()?;
    /// match client.holder("deploy/web").await? {
    ///     Some(h) => println!("held by session {} (token {})", h.session_id, h.modify_index),
    ///     None => println!("free"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn holder(&self, key: &str) -> Result<Option<Holder>> {
        key::validate(key)?;
        let entry = self.kv_get(key).await?;
        match entry {
            None => Ok(None),
            Some(e) => e.into_holder().map_err(|m| Error::decode(self.address(), m)),
        }
    }

    /// `GET /v1/kv/<key>` (a plain read): the entry, `None` when the key does not exist.
    pub(crate) async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>> {
        let reply =
            self.call(Method::GET, &format!("kv/{}", key::encode_path(key)), &[], None, self.request_timeout()).await?;
        decode_kv_entry(self, reply)
    }

    /// Who a session is: `GET /v1/session/info/<id>`; `None` when it does not exist (any more).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty ID or one with control characters (before any
    /// request); transport and Consul errors otherwise.
    ///
    /// # Cancel safety
    /// A read: dropping the future changes nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let client = consul_lock::Client::from_env()?;
    /// if let Some(h) = client.holder("deploy/web").await? {
    ///     if let Some(s) = client.session_info(&h.session_id).await? {
    ///         println!("held from node {} (session {:?})", s.node, s.name);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>> {
        let path = format!("session/info/{}", session_path(id)?);
        let reply = self.call(Method::GET, &path, &[], None, self.request_timeout()).await?;
        Ok(decode_sessions(self, reply)?.into_iter().find(|i| i.id == id).map(SessionEntry::into_info))
    }

    /// Destroy a session (`PUT /v1/session/destroy/<id>`), whoever owns it: every key it holds is
    /// released (deleted, for sessions created by this crate) and its lock-delay applies to them.
    /// For administrators breaking a stuck holder; a holder releases its own locks with
    /// [`LockGuard::release`](crate::LockGuard::release). Destroying a session that no longer
    /// exists succeeds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty ID or one with control characters (before any
    /// request); [`Error::PermissionDenied`] without `session:write` on the session's node;
    /// transport and Consul errors otherwise. Not retried.
    ///
    /// # Cancel safety
    /// If the future is dropped after the request was sent, the session may or may not be destroyed.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> consul_lock::Result<()> {
    /// let client = consul_lock::Client::from_env()?;
    /// if let Some(h) = client.holder("deploy/web").await? {
    ///     client.destroy_session(&h.session_id).await?; // break a stuck holder's lock
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn destroy_session(&self, id: &str) -> Result<()> {
        let path = session_path(id)?;
        self.session_destroy(&path).await
    }

    /// Send one `/v1/txn` request. Permission errors — a 403, or "Permission denied" inside a 409 —
    /// are [`Error::PermissionDenied`]; other failures are mapped as for every request.
    pub(crate) async fn txn<T: serde::de::DeserializeOwned>(&self, body: Vec<u8>) -> Result<Txn<T>> {
        self.txn_in(Lane::Request, body).await
    }

    /// [`txn`](Self::txn) on `lane` ([`Lane::Holder`] for a holder's writes).
    pub(crate) async fn txn_in<T: serde::de::DeserializeOwned>(&self, lane: Lane, body: Vec<u8>) -> Result<Txn<T>> {
        let reply = self.call_in(lane, Method::PUT, "txn", &[], Some(body), self.request_timeout()).await?;
        match reply.status {
            200 => {
                let r: TxnReply<T> = self.decode(&reply.body)?;
                Ok(Txn::Committed(r.results.unwrap_or_default().into_iter().filter_map(|r| r.kv).collect()))
            }
            409 => {
                let r: TxnReply<serde::de::IgnoredAny> = self.decode(&reply.body)?;
                let errs = r.errors.unwrap_or_default();
                if errs.is_empty() {
                    return Err(Error::decode(self.address(), "transaction failed without an error message"));
                }
                let what = errs.into_iter().map(|e| e.what).collect::<Vec<_>>().join("; ");
                if classify(&what) == Said::PermissionDenied {
                    return Err(Error::PermissionDenied { address: self.address().to_owned(), message: what });
                }
                Ok(Txn::RolledBack(what))
            }
            _ => Err(self.check(reply).err().unwrap_or_else(|| Error::decode(self.address(), "unexpected status"))),
        }
    }

    /// Try to take `keys` for a session with one lock transaction ([`lock_txn_body`] or
    /// [`multi_lock_txn_body`]), which returns the fencing token: the index of the transaction's
    /// write, which every `lock` result carries (a `check-index` guard returns the key as it was
    /// before, with an older index). Every key must carry it.
    /// `turn`: a queued waiter's attempt in its turn, sent on the holder connection while that is
    /// not open (see [`Client::holder_lane_if_cold`]).
    pub(crate) async fn txn_lock(&self, body: Vec<u8>, keys: &[&str], turn: bool) -> Result<LockAttempt> {
        let lane = if turn { self.holder_lane_if_cold() } else { Lane::Request };
        let attempt = self.lock_attempt(lane, body, keys).await;
        if lane == Lane::Turn && !matches!(attempt, Ok(LockAttempt::Acquired { .. })) {
            self.holder_connection_unused();
        }
        attempt
    }

    async fn lock_attempt(&self, lane: Lane, body: Vec<u8>, keys: &[&str]) -> Result<LockAttempt> {
        match self.txn_in::<KvEntry>(lane, body).await {
            Ok(Txn::Committed(kvs)) => {
                let token = kvs.iter().map(|kv| kv.modify_index).max().filter(|i| *i > 0);
                let every = |t: u64| keys.iter().all(|k| kvs.iter().any(|kv| kv.key == *k && kv.modify_index == t));
                match token {
                    Some(t) if every(t) => Ok(LockAttempt::Acquired { modify_index: t }),
                    Some(_) => Err(Error::decode(self.address(), "lock transaction: the keys carry different indexes")),
                    None => Err(Error::decode(self.address(), "lock transaction returned no ModifyIndex")),
                }
            }
            Ok(Txn::RolledBack(what)) => match classify(&what) {
                Said::LockDelay => Ok(LockAttempt::LockDelay),
                Said::Held => Ok(LockAttempt::Held),
                Said::InvalidSession => Ok(LockAttempt::InvalidSession { status: 409, message: what }),
                Said::Changed | Said::NotOurs => Ok(LockAttempt::NotAsExpected),
                _ => Err(self.rolled_back(what)),
            },
            Err(e) => match invalid_session(e) {
                Ok((status, message)) => Ok(LockAttempt::InvalidSession { status, message }),
                Err(e) => Err(e),
            },
        }
    }

    /// Hold our queue entry `entry` with `session` (carrying `mark`'s flags and value, if any) and
    /// list the queue under `queue`, in one transaction.
    pub(crate) async fn txn_enqueue(
        &self,
        entry: &str,
        session: &str,
        queue: &str,
        mark: Option<(u64, &[u8])>,
    ) -> Result<Enqueued> {
        let place = match mark {
            None => TxnOp::kv("lock", entry, None, Some(session)),
            Some((flags, value)) => TxnOp::kv("lock", entry, Some(value), Some(session)).flags(flags),
        };
        let body = txn_body(&[place, TxnOp::kv("get-tree", queue, None, None)]);
        match self.txn::<KvEntry>(body).await {
            Ok(Txn::Committed(entries)) => Ok(Enqueued::Listed(entries)),
            Ok(Txn::RolledBack(what)) if classify(&what) == Said::InvalidSession => Ok(Enqueued::InvalidSession),
            Ok(Txn::RolledBack(what)) => Err(self.rolled_back(what)),
            Err(e) => invalid_session(e).map(|_| Enqueued::InvalidSession),
        }
    }

    /// Hold our entries `entries` in several queues with `session` and list those queues (`queues`,
    /// in the same order), in one transaction: a multi-key lock's place in each of its keys' queues,
    /// all with the same `CreateIndex`.
    pub(crate) async fn txn_enqueue_all(
        &self,
        entries: &[String],
        session: &str,
        queues: &[String],
    ) -> Result<Enqueued> {
        let locks = entries.iter().map(|e| TxnOp::kv("lock", e, None, Some(session)));
        let lists = queues.iter().map(|q| TxnOp::kv("get-tree", q, None, None));
        let body = txn_body(&locks.chain(lists).collect::<Vec<_>>());
        match self.txn::<KvEntry>(body).await {
            Ok(Txn::Committed(entries)) => Ok(Enqueued::Listed(entries)),
            Ok(Txn::RolledBack(what)) if classify(&what) == Said::InvalidSession => Ok(Enqueued::InvalidSession),
            Ok(Txn::RolledBack(what)) => Err(self.rolled_back(what)),
            Err(e) => invalid_session(e).map(|_| Enqueued::InvalidSession),
        }
    }

    /// Read several keys in one read-only transaction (no Raft write): `None` for a key that does
    /// not exist. Consul rolls back a read naming a missing key (listing every missing one), so
    /// those are left out and the rest read again.
    pub(crate) async fn kv_get_many(&self, keys: &[&str]) -> Result<Vec<Option<KvEntry>>> {
        let mut missing = vec![false; keys.len()];
        for _ in 0..=keys.len() {
            let ask: Vec<usize> = (0..keys.len()).filter(|&i| !missing[i]).collect();
            if ask.is_empty() {
                break;
            }
            let body = txn_body(&ask.iter().map(|&i| TxnOp::kv("get", keys[i], None, None)).collect::<Vec<_>>());
            let reply = self.call(Method::PUT, "txn", &[], Some(body), self.request_timeout()).await?;
            if reply.status == 200 {
                let r: TxnReply<KvEntry> = self.decode(&reply.body)?;
                let found: Vec<KvEntry> = r.results.unwrap_or_default().into_iter().filter_map(|r| r.kv).collect();
                return Ok(keys.iter().map(|k| found.iter().find(|e| e.key == *k).cloned()).collect());
            }
            if reply.status != 409 {
                return Err(self
                    .check(reply)
                    .err()
                    .unwrap_or_else(|| Error::decode(self.address(), "unexpected status")));
            }
            let r: TxnReply<serde::de::IgnoredAny> = self.decode(&reply.body)?;
            for e in r.errors.unwrap_or_default() {
                match (classify(&e.what), ask.get(e.op_index)) {
                    (Said::NotOurs, Some(&i)) => missing[i] = true,
                    (Said::PermissionDenied, _) => {
                        return Err(Error::PermissionDenied { address: self.address().to_owned(), message: e.what })
                    }
                    _ => return Err(self.rolled_back(e.what)),
                }
            }
        }
        Ok(vec![None; keys.len()]) // every key was missing at some read: none is there to take
    }

    /// Release a multi-key lock in one transaction: delete every key only if it still carries
    /// `token` (`delete-cas`: nobody took it since, as its index is the acquire's), and our queue
    /// entries `also_delete`; with `queues`, list them too (a read: no extra write), to tell whether
    /// others wait. [`Released::NotOurs`] when some key changed: nothing was deleted.
    pub(crate) async fn txn_release_set(
        &self,
        keys: &[&str],
        token: u64,
        session: &str,
        also_delete: &[String],
        queues: &[String],
    ) -> Result<Released> {
        let deletes = keys.iter().map(|k| TxnOp::kv("delete-cas", k, None, None).index(token));
        let entries = also_delete.iter().map(|e| TxnOp::kv("delete", e, None, None));
        let lists = queues.iter().map(|q| TxnOp::kv("get-tree", q, None, None));
        let body = txn_body(&deletes.chain(entries).chain(lists).collect::<Vec<_>>());
        match self.txn_in::<KvEntry>(Lane::Holder, body).await? {
            Txn::Committed(listed) => {
                let waiting = listed.iter().any(|e| {
                    queues.iter().any(|q| e.key.starts_with(q.as_str()))
                        && e.holder_session().is_some_and(|h| h != session)
                });
                Ok(Released::Deleted { waiting })
            }
            Txn::RolledBack(what) if matches!(classify(&what), Said::Stale | Said::NotOurs) => Ok(Released::NotOurs),
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    /// Election: replace the value of `key` only while `session` holds it (`check-session` + `set`
    /// in one transaction, keeping `flags`). `Ok(Some(modify_index))` when written; `Ok(None)` when
    /// the key is gone or another session holds it.
    pub(crate) async fn txn_proclaim(&self, key: &str, session: &str, value: &[u8], flags: u64) -> Result<Option<u64>> {
        let ops = [
            TxnOp::kv("check-session", key, None, Some(session)),
            TxnOp::kv("set", key, Some(value), None).flags(flags),
        ];
        match self.txn_in::<KvEntry>(Lane::Holder, txn_body(&ops)).await? {
            Txn::Committed(kvs) => kvs
                .last()
                .map(|kv| Some(kv.modify_index))
                .ok_or_else(|| Error::decode(self.address(), "proclaim transaction returned no KV result")),
            Txn::RolledBack(what) if classify(&what) == Said::NotOurs => Ok(None),
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    /// Send a guarded write built by [`guarded_txn_body`]: committed only while every checked key
    /// is still held by the session.
    pub(crate) async fn txn_guarded(&self, body: Vec<u8>) -> Result<Guarded> {
        match self.txn_in::<serde::de::IgnoredAny>(Lane::Holder, body).await? {
            Txn::Committed(_) => Ok(Guarded::Written),
            Txn::RolledBack(what) if classify(&what) == Said::NotOurs => Ok(Guarded::NotOurs),
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }

    pub(crate) fn rolled_back(&self, what: String) -> Error {
        Error::Consul { address: self.address().to_owned(), status: 409, message: what }
    }

    /// Owner-checked delete: `check-session` + `delete` in one transaction, so a holder whose
    /// session expired can never delete the next holder's key. `also_delete` (a fair-mode queue
    /// entry) is deleted in the same write; when the key is no longer ours it is deleted on its own.
    /// With `queue`, the same transaction lists the key's queue (a read: no extra write), to tell
    /// whether others wait.
    pub(crate) async fn txn_release(
        &self,
        key: &str,
        session: &str,
        also_delete: Option<&str>,
        queue: Option<&str>,
    ) -> Result<Released> {
        let mut ops = vec![TxnOp::kv("check-session", key, None, Some(session)), TxnOp::kv("delete", key, None, None)];
        if let Some(extra) = also_delete {
            ops.push(TxnOp::kv("delete", extra, None, None));
        }
        if let Some(queue) = queue {
            ops.push(TxnOp::kv("get-tree", queue, None, None));
        }
        match self.txn_in::<KvEntry>(Lane::Holder, txn_body(&ops)).await? {
            Txn::Committed(entries) => {
                let waiting = queue.is_some_and(|q| {
                    entries.iter().any(|e| e.key.starts_with(q) && e.holder_session().is_some_and(|h| h != session))
                });
                Ok(Released::Deleted { waiting })
            }
            Txn::RolledBack(what) if classify(&what) == Said::NotOurs => {
                if let Some(extra) = also_delete {
                    Box::pin(self.txn_release(extra, session, None, None)).await?;
                }
                Ok(Released::NotOurs)
            }
            Txn::RolledBack(what) => Err(self.rolled_back(what)),
        }
    }
}

/// Outcome of taking a semaphore slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Our contender key is held and we are in `Holders`; the write's ModifyIndex (the token).
    Admitted { token: u64 },
    /// The coordination key changed since it was read (or our contender key is another's): read again.
    Stale,
    /// Our contender key is in its lock-delay.
    LockDelay,
    /// Our session no longer exists: Consul's answer, as it said it.
    InvalidSession { status: u16, message: String },
}

/// Outcome of leaving a semaphore's holders.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// Written (and the contender key deleted, when asked).
    Done,
    /// The coordination key changed since it was read: read again.
    Stale,
    /// The contender key is no longer held by our session.
    NotOurs,
}

/// What a semaphore writes: the contender key and the coordination key, with the same flags.
pub(crate) struct SemaphoreWrite<'a> {
    pub(crate) flags: u64,
    pub(crate) lock_key: &'a str,
    pub(crate) slots: &'a [u8],
    /// The coordination key's ModifyIndex the write checks (0: it must not exist).
    pub(crate) index: u64,
    pub(crate) session: &'a str,
    pub(crate) contender: &'a str,
    /// Our queue entry, deleted by the admission that ends our wait in line.
    pub(crate) dequeue: Option<&'a str>,
}

impl Client {
    /// Take a slot in one transaction: hold our contender key (with its value) and check-and-set the
    /// coordination key with us among the holders (and leave the queue, if we waited in it). Rolled
    /// back as a whole if either fails.
    pub(crate) async fn txn_admit(&self, w: &SemaphoreWrite<'_>, value: &[u8]) -> Result<Admission> {
        let mut ops = vec![
            TxnOp::kv("lock", w.contender, Some(value), Some(w.session)).flags(w.flags),
            TxnOp::kv("cas", w.lock_key, Some(w.slots), None).flags(w.flags).index(w.index),
        ];
        if let Some(entry) = w.dequeue {
            ops.push(TxnOp::kv("delete", entry, None, None));
        }
        // The admission opens the holder connection, as a lock's attempt does (see `txn_lock`).
        let lane = self.holder_lane_if_cold();
        let admitted = self.admission(lane, txn_body(&ops)).await;
        if lane == Lane::Turn && !matches!(admitted, Ok(Admission::Admitted { .. })) {
            self.holder_connection_unused();
        }
        admitted
    }

    async fn admission(&self, lane: Lane, body: Vec<u8>) -> Result<Admission> {
        match self.txn_in::<KvEntry>(lane, body).await {
            Ok(Txn::Committed(kvs)) => kvs
                .get(1)
                .map(|kv| kv.modify_index)
                .filter(|i| *i > 0)
                .map(|token| Admission::Admitted { token })
                .ok_or_else(|| Error::decode(self.address(), "semaphore transaction returned no ModifyIndex")),
            Ok(Txn::RolledBack(what)) => match classify(&what) {
                Said::InvalidSession => Ok(Admission::InvalidSession { status: 409, message: what }),
                Said::LockDelay => Ok(Admission::LockDelay),
                Said::Stale | Said::Held => Ok(Admission::Stale),
                _ => Err(self.rolled_back(what)),
            },
            Err(e) => match invalid_session(e) {
                Ok((status, message)) => Ok(Admission::InvalidSession { status, message }),
                Err(e) => Err(e),
            },
        }
    }

    /// Leave a semaphore in one transaction: check-and-set the coordination key without us and,
    /// when `delete_contender`, delete our contender key only if our session still holds it.
    pub(crate) async fn txn_leave(&self, w: &SemaphoreWrite<'_>, delete_contender: bool) -> Result<Left> {
        let mut ops = vec![TxnOp::kv("cas", w.lock_key, Some(w.slots), None).flags(w.flags).index(w.index)];
        if delete_contender {
            ops.push(TxnOp::kv("check-session", w.contender, None, Some(w.session)));
            ops.push(TxnOp::kv("delete", w.contender, None, None));
        }
        match self.txn_in::<serde::de::IgnoredAny>(Lane::Holder, txn_body(&ops)).await? {
            Txn::Committed(_) => Ok(Left::Done),
            Txn::RolledBack(what) => match classify(&what) {
                Said::NotOurs if delete_contender => Ok(Left::NotOurs),
                Said::Stale => Ok(Left::Stale),
                _ => Err(self.rolled_back(what)),
            },
        }
    }

    /// `GET /v1/kv/<prefix>?recurse` (a plain read): every entry under `prefix`.
    pub(crate) async fn kv_list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let path = format!("kv/{}", key::encode_path(prefix));
        let reply = self.call(Method::GET, &path, &[("recurse", "")], None, self.request_timeout()).await?;
        decode_kv_entries(self, reply)
    }
}

/// Consul 1.8 reports an unknown session as HTTP 500 on some paths: `Ok((status, message))` for
/// that error, the error itself otherwise.
pub(crate) fn invalid_session(e: Error) -> std::result::Result<(u16, String), Error> {
    match e {
        Error::Consul { status, message, .. } if classify(&message) == Said::InvalidSession => Ok((status, message)),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("24h0m0s"), Some(Duration::from_secs(86400)));
        for bad in ["", "s", "10", "10x", "-1s", "1e400s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_info_parses_consul_1_8_shape() {
        let body = r#"[{"ID":"s1","Name":"consul-lock: k","Node":"n1","LockDelay":15000000000,
            "Behavior":"delete","TTL":"15s","CreateIndex":42,"ModifyIndex":42}]"#;
        let e: Vec<SessionEntry> = serde_json::from_str(body).unwrap();
        let i = e.into_iter().next().unwrap().into_info();
        assert_eq!((i.id.as_str(), i.name.as_str(), i.node.as_str()), ("s1", "consul-lock: k", "n1"));
        assert_eq!(i.ttl, Some(Duration::from_secs(15)));
        assert_eq!(i.lock_delay, Duration::from_secs(15));
        assert_eq!(i.create_index, 42);
        let e: SessionEntry = serde_json::from_str(r#"{"ID":"s2","LockDelay":"1.5s"}"#).unwrap();
        let i = e.into_info();
        assert_eq!((i.ttl, i.lock_delay), (None, Duration::from_millis(1500)));
        assert!(session_path("").is_err() && session_path("a\nb").is_err());
        assert_eq!(session_path("a/b").unwrap(), "a%2Fb");
    }

    #[test]
    fn session_body_sends_millis_and_no_checks() {
        let spec = SessionSpec {
            name: "n".into(),
            ttl: Duration::from_secs(15),
            lock_delay: Duration::from_millis(1500),
            node_checks: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&spec.body()).unwrap();
        assert_eq!(v["LockDelay"], "1500ms");
        assert_eq!(v["TTL"], "15s");
        assert_eq!(v["Checks"], json!([]));
        let zero = SessionSpec { lock_delay: Duration::ZERO, node_checks: true, ..spec };
        let v: serde_json::Value = serde_json::from_slice(&zero.body()).unwrap();
        assert_eq!(v["LockDelay"], "0s");
        assert!(v.get("Checks").is_none());
    }
}
