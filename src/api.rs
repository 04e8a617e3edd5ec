//! The few Consul HTTP endpoints a lock needs, each one request, each answer classified.
//! No retries and no policy here: callers decide (see `retry`).

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Client;
use crate::error::{Error, Result};

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
    /// Our session no longer exists.
    InvalidSession,
}

/// Outcome of the owner-checked delete.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    Deleted,
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
struct TxnReply {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<TxnKv>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKv {
    #[serde(default)]
    modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    #[serde(default)]
    what: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvOp<'a> {
    verb: &'a str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
}

#[derive(Serialize)]
struct TxnOp<'a> {
    #[serde(rename = "KV")]
    kv: KvOp<'a>,
}

/// The exact body of the lock transaction (its size is checked before any request).
pub(crate) fn lock_txn_body(key: &str, value: &[u8], session: &str) -> Vec<u8> {
    let op = [TxnOp {
        kv: KvOp {
            verb: "lock",
            key,
            value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            session: Some(session),
        },
    }];
    serde_json::to_vec(&op).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionId {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default, rename = "TTL")]
    pub ttl: Option<String>,
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
        let reply = self.call(Method::PUT, "session/create", &[], Some(spec.body()), self.request_timeout()).await?;
        let reply = self.check(reply)?;
        let s: SessionId = self.decode(&reply.body)?;
        if s.id.is_empty() || s.id.len() > 128 {
            return Err(Error::decode(self.address(), "session create returned no usable ID"));
        }
        Ok(s.id)
    }

    pub(crate) async fn session_renew(&self, id: &str, timeout: Duration) -> Result<Renewed> {
        let reply = self.call(Method::PUT, &format!("session/renew/{id}"), &[], None, timeout).await?;
        if reply.status == 404 {
            return Ok(Renewed::Gone);
        }
        let reply = self.check(reply)?;
        let infos: Vec<SessionInfo> = self.decode(&reply.body)?;
        match infos.first() {
            None => Ok(Renewed::Gone),
            Some(i) => Ok(Renewed::Ok { ttl: i.ttl.as_deref().and_then(parse_go_duration) }),
        }
    }

    pub(crate) async fn session_destroy(&self, id: &str) -> Result<()> {
        let reply = self.call(Method::PUT, &format!("session/destroy/{id}"), &[], None, self.request_timeout()).await?;
        self.check(reply).map(|_| ())
    }

    /// `GET /v1/session/info/<id>` (blocking when `block` is set): index and whether it exists.
    pub(crate) async fn session_exists(&self, id: &str, block: Option<(u64, Duration)>) -> Result<(u64, bool)> {
        let reply = self.get_maybe_blocking(&format!("session/info/{id}"), block).await?;
        let index = reply.index.unwrap_or(1).max(1);
        let reply = self.check(reply)?;
        let infos: Option<Vec<SessionInfo>> = self.decode(&reply.body)?;
        Ok((index, infos.is_some_and(|v| v.iter().any(|i| i.id == id))))
    }

    /// Try to take `key` for `session` with a `lock` transaction, which returns the fencing token.
    pub(crate) async fn txn_lock(&self, body: Vec<u8>) -> Result<LockAttempt> {
        let reply = self.call(Method::PUT, "txn", &[], Some(body), self.request_timeout()).await?;
        match reply.status {
            200 => {
                let r: TxnReply = self.decode(&reply.body)?;
                let idx = r
                    .results
                    .as_deref()
                    .and_then(|r| r.first())
                    .and_then(|r| r.kv.as_ref())
                    .map(|kv| kv.modify_index)
                    .filter(|i| *i > 0)
                    .ok_or_else(|| Error::decode(self.address(), "lock transaction returned no ModifyIndex"))?;
                Ok(LockAttempt::Acquired { modify_index: idx })
            }
            409 => {
                let what = self.txn_errors(&reply.body)?;
                let lower = what.to_ascii_lowercase();
                if lower.contains("permission denied") {
                    Err(Error::PermissionDenied { address: self.address().to_owned(), message: what })
                } else if lower.contains("lock delay") {
                    Ok(LockAttempt::LockDelay)
                } else if lower.contains("invalid session") {
                    Ok(LockAttempt::InvalidSession)
                } else if lower.contains("already held") {
                    Ok(LockAttempt::Held)
                } else {
                    Err(Error::Consul { address: self.address().to_owned(), status: 409, message: what })
                }
            }
            _ => {
                // Consul 1.8 reports some of these as HTTP 500 on other paths; be liberal.
                if reply.text().to_ascii_lowercase().contains("invalid session") {
                    return Ok(LockAttempt::InvalidSession);
                }
                Err(self.check(reply).err().unwrap_or_else(|| Error::decode(self.address(), "unexpected status")))
            }
        }
    }

    /// Owner-checked delete: `check-session` + `delete` in one transaction, so a holder whose
    /// session expired can never delete the next holder's key.
    pub(crate) async fn txn_release(&self, key: &str, session: &str) -> Result<Released> {
        let ops = [
            TxnOp { kv: KvOp { verb: "check-session", key, value: None, session: Some(session) } },
            TxnOp { kv: KvOp { verb: "delete", key, value: None, session: None } },
        ];
        let body = serde_json::to_vec(&ops).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let reply = self.call(Method::PUT, "txn", &[], Some(body), self.request_timeout()).await?;
        match reply.status {
            200 => Ok(Released::Deleted),
            409 => {
                let what = self.txn_errors(&reply.body)?;
                if what.to_ascii_lowercase().contains("permission denied") {
                    Err(Error::PermissionDenied { address: self.address().to_owned(), message: what })
                } else if what.contains("failed session check") || what.contains("doesn't exist") {
                    Ok(Released::NotOurs)
                } else {
                    Err(Error::Consul { address: self.address().to_owned(), status: 409, message: what })
                }
            }
            _ => Err(self.check(reply).err().unwrap_or_else(|| Error::decode(self.address(), "unexpected status"))),
        }
    }

    fn txn_errors(&self, body: &[u8]) -> Result<String> {
        let r: TxnReply = self.decode(body)?;
        let errs = r.errors.unwrap_or_default();
        if errs.is_empty() {
            return Err(Error::decode(self.address(), "transaction failed without an error message"));
        }
        Ok(errs.into_iter().map(|e| e.what).collect::<Vec<_>>().join("; "))
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
