//! The one error type of the crate, and how Consul's answers map onto it.
//!
//! Every message says what happened and, where it helps, what to do next. Errors carry keys and
//! addresses, never ACL tokens.

use std::time::Duration;

use crate::holder::Holder;

/// `Result<T, consul_lock::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when taking, holding or releasing a lock.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm. The predicates
/// ([`is_not_acquired`](Error::is_not_acquired), [`is_retryable`](Error::is_retryable),
/// [`is_lost`](Error::is_lost)) answer the usual questions without a match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Someone else held the key for the whole acquire timeout.
    #[error("lock {key:?} not acquired within {waited:?}: {}", describe_holder(.holder.as_deref()))]
    NotAcquired {
        /// The key that was wanted.
        key: String,
        /// How long the call waited.
        waited: Duration,
        /// Who held the key when the wait ended, when known.
        holder: Option<Box<Holder>>,
    },

    /// The lock was held but is known lost: its session was destroyed or expired, the key was taken
    /// or deleted behind our back, or `max_hold` ran out.
    #[error("lock {key:?} was lost while held (session expired or destroyed, key taken, or max_hold reached)")]
    LockLost {
        /// The key whose lock was lost.
        key: String,
    },

    /// The key belongs to another kind of primitive: for a lock, its `Flags` are neither 0 nor a
    /// lock's ([`LOCK_FLAGS`](crate::LOCK_FLAGS)) — a semaphore's or a read-write lock's key, say;
    /// for a read-write lock, anything but [`RWLOCK_FLAGS`](crate::RWLOCK_FLAGS). The counterpart
    /// of Go's `api.ErrLockConflict`. Never retried: nothing of the key was touched.
    // The values are LOCK_FLAGS and RWLOCK_FLAGS, written out so that this leaf imports nothing
    // from the Consul layer (a test in `consul/flags.rs` keeps them equal).
    #[error("key {key:?} belongs to another kind of primitive (its Flags are {flags:#x}; a lock's are 0 or 0x2ddccbc058a50c18, a read-write lock's 0x4b1d57a7e5c09e3a): is it a semaphore, a lock or another primitive's key?")]
    Conflict {
        /// The key.
        key: String,
        /// The `Flags` it carries.
        flags: u64,
    },

    /// The semaphore's coordination key stores another limit than this contender's: every
    /// contender of a prefix must use the same limit (Go's "semaphore limit conflict").
    #[error("semaphore limit conflict on {prefix:?}: this contender's limit is {limit}, the stored limit is {stored}; every contender of a prefix must use the same limit")]
    LimitConflict {
        /// The semaphore's prefix.
        prefix: String,
        /// Our limit.
        limit: u32,
        /// The limit stored in `PREFIX/.lock`.
        stored: i64,
    },

    /// `acquire` was called on a lock that already holds its key. Locks are not re-entrant.
    #[error("this lock already holds its key; locks are not re-entrant (release it before acquiring again)")]
    AlreadyHeld,

    /// The configuration or an argument is invalid. Returned before any request is sent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Consul's ACLs refused the request (HTTP 403, or "Permission denied" inside a transaction).
    /// Never retried.
    #[error("permission denied by Consul at {address}: {message} (check the ACL token: CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE, and its key_prefix / session_prefix rules)")]
    PermissionDenied {
        /// The agent address that answered.
        address: String,
        /// Consul's own words.
        message: String,
    },

    /// Consul answered with an error this crate does not map to a more specific variant.
    #[error("Consul at {address} answered HTTP {status}: {message}")]
    Consul {
        /// The agent address that answered.
        address: String,
        /// HTTP status code.
        status: u16,
        /// Consul's own words (the response body, trimmed).
        message: String,
    },

    /// Consul could not be reached, or did not answer in time (connect, TLS, timeout).
    #[error(transparent)]
    Transport(Box<TransportError>),

    /// The operation was stopped before it finished: the task that drives it was cancelled, or the
    /// runtime it runs on (a tokio runtime shutting down, or the `blocking` API's
    /// thread) is gone or could not start. Whatever it had taken is cleaned up in the background or
    /// expires with its session's TTL.
    #[error("stopped before it finished: {0}")]
    Cancelled(String),

    /// Consul answered something this crate could not understand.
    #[error("unexpected answer from Consul at {address}: {message}")]
    Decode {
        /// The agent address that answered.
        address: String,
        /// What was wrong with the answer.
        message: String,
    },
}

/// Details of an [`Error::Transport`]: the address tried, what failed, and the underlying cause.
#[derive(Debug)]
pub struct TransportError {
    pub(crate) address: String,
    pub(crate) message: String,
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
    pub(crate) timeout: bool,
}

impl TransportError {
    /// The Consul HTTP address that could not be reached.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `true` when the failure was a timeout rather than a refused or broken connection.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.starts_with(TLS_FAILED) {
            return write!(
                f,
                "cannot reach Consul at {}: {}; check CONSUL_CACERT (the CA that signed the agent's \
                 certificate), CONSUL_TLS_SERVER_NAME, and CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY when the agent \
                 verifies clients",
                self.address, self.message
            );
        }
        if self.timeout {
            // A running agent cut off from its servers (a partition, no leader) answers this way too.
            return write!(
                f,
                "no answer from Consul at {} in time: {}; the agent may be overloaded or cut off from its servers \
                 (network partition, no cluster leader), or nothing answers there (CONSUL_HTTP_ADDR)",
                self.address, self.message
            );
        }
        write!(
            f,
            "cannot reach Consul at {}: {}; is Consul running at {}? (set CONSUL_HTTP_ADDR to point elsewhere)",
            self.address, self.message, self.address
        )
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl Error {
    #[cfg(test)]
    pub(crate) fn transport(address: &str, message: impl Into<String>, timeout: bool) -> Self {
        Error::Transport(Box::new(TransportError {
            address: address.to_owned(),
            message: message.into(),
            source: None,
            timeout,
        }))
    }

    /// A request through reqwest failed. `first_tls`: an `https://` client that has had no answer
    /// yet: over TLS 1.3 an agent that refuses our certificate (or its absence) aborts the
    /// handshake only after the client thinks it complete, so the first request sees the
    /// connection close, not the alert.
    pub(crate) fn from_reqwest(address: &str, err: reqwest::Error, first_tls: bool) -> Self {
        let timeout = err.is_timeout();
        let cause = root_cause(&err).to_ascii_lowercase();
        let closed_at_once = ["broken pipe", "reset by peer", "connection closed"].iter().any(|w| cause.contains(w));
        let message = if timeout {
            "request timed out".to_owned()
        } else if is_tls_failure(&root_cause(&err)) {
            format!("{TLS_FAILED} ({})", root_cause(&err))
        } else if first_tls && closed_at_once {
            format!(
                "{TLS_FAILED} (the agent closed the connection as soon as it was set up: it may require a client \
                 certificate, or refuse this one; {})",
                root_cause(&err)
            )
        } else if err.is_connect() && address.starts_with("unix://") {
            unix_connect_failure(&err)
        } else if err.is_connect() {
            format!("connection failed ({})", root_cause(&err))
        } else {
            root_cause(&err)
        };
        Error::Transport(Box::new(TransportError {
            address: address.to_owned(),
            message,
            source: Some(Box::new(err.without_url())),
            timeout,
        }))
    }

    /// A request on this crate's own `http://` connections got no answer.
    pub(crate) fn from_plain(address: &str, failure: crate::consul::http1::Failure) -> Self {
        use crate::consul::http1::Failure;
        let (message, timeout, source): (String, bool, Option<Box<dyn std::error::Error + Send + Sync>>) = match failure
        {
            Failure::TimedOut => ("request timed out".to_owned(), true, None),
            Failure::Connect(e) => {
                let timeout = e.kind() == std::io::ErrorKind::TimedOut;
                (format!("connection failed ({e})"), timeout, Some(Box::new(e)))
            }
            Failure::Http { error, .. } => (root_cause(&error), false, Some(Box::new(error))),
            Failure::TooLarge => ("answer too large".to_owned(), false, None),
            Failure::Invalid(m) => (m, false, None),
        };
        Error::Transport(Box::new(TransportError { address: address.to_owned(), message, source, timeout }))
    }

    /// `NotAcquired` with nothing known of the wait: what a `hold` reports if its procedure ever
    /// answered "not taken" despite failing hard (a typed error rather than a panic).
    pub(crate) fn not_acquired(key: &str) -> Self {
        Error::NotAcquired { key: key.to_owned(), waited: Duration::ZERO, holder: None }
    }

    pub(crate) fn decode(address: &str, message: impl Into<String>) -> Self {
        Error::Decode { address: address.to_owned(), message: message.into() }
    }

    /// `true` for [`Error::NotAcquired`]: the key was held by someone else until the timeout.
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::NotAcquired { .. })
    }

    /// `true` for [`Error::Cancelled`]: the operation was stopped (runtime shut down, task cancelled).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled(_))
    }

    /// `true` for [`Error::LockLost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// `true` when trying the same call again later may succeed: transport failures, HTTP 429 and
    /// transient 5xx answers. Permission errors, bad input and Consul's permanent errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Consul { status, message, .. } => {
                *status == 429 || (*status >= 500 && !is_permanent_server_error(message))
            }
            _ => false,
        }
    }
}

/// What is said, once per client, when the agent closes new connections before answering.
pub(crate) fn connection_cap_message(address: &str) -> String {
    format!(
        "Consul at {address} closes new connections before answering: the agent limits HTTP connections per \
         client address (limits.http_max_conns_per_client, 200 by default), and every process of this host \
         that talks to it counts; waiting and retrying with backoff until the deadline"
    )
}

/// What one of Consul's error texts says, read in one place: HTTP bodies and `/v1/txn` error
/// messages use the same words (Consul 1.8 and later, matched case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// "Permission denied" (a 403 body, or inside a transaction's 409).
    PermissionDenied,
    /// "invalid session": the session no longer exists.
    InvalidSession,
    /// The key is free but in its lock-delay.
    LockDelay,
    /// "already held": another session holds the key.
    Held,
    /// A `check-session` failed or the key does not exist: not ours.
    NotOurs,
    /// A check-and-set found a newer `ModifyIndex` ("index is stale").
    Stale,
    /// A `check-not-exists` found the key, or a `check-index` found it changed.
    Changed,
    /// Another permanent refusal (`serfHealth` critical, unknown datacenter, bad TTL, unknown token).
    Permanent,
    /// Anything else (possibly transient).
    Other,
}

/// Classify Consul's words. The only place in the crate that reads them.
pub(crate) fn classify(message: &str) -> Said {
    // Keys are quoted in Consul's texts (`failed to lock key "k": …`): a key's own name must not
    // be read as the reason.
    let m = unquoted(message).to_ascii_lowercase();
    let has = |p: &str| m.contains(p);
    if has("permission denied") {
        Said::PermissionDenied
    } else if has("invalid session") {
        Said::InvalidSession
    } else if has("lock delay") {
        Said::LockDelay
    } else if has("already held") {
        Said::Held
    } else if has("failed session check") || has("doesn't exist") {
        Said::NotOurs
    } else if has("index is stale") {
        Said::Stale
    } else if has(" exists") || has("failed index check") {
        Said::Changed
    } else if ["serfhealth", "no path to datacenter", "acl not found", "must be between"].iter().any(|p| has(p)) {
        Said::Permanent
    } else {
        Said::Other
    }
}

/// `text` without its double-quoted parts (Go's `%q`, backslash escapes included).
fn unquoted(text: &str) -> String {
    let (mut out, mut quoted, mut escaped) = (String::with_capacity(text.len()), false, false);
    for c in text.chars() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => {
                quoted = !quoted;
                out.push('"');
            }
            (true, false, _) => {}
            (false, _, c) => out.push(c),
        }
    }
    out
}

/// Consul 1.8 answers some permanent failures with HTTP 500; retrying them only burns the deadline.
pub(crate) fn is_permanent_server_error(message: &str) -> bool {
    matches!(classify(message), Said::PermissionDenied | Said::InvalidSession | Said::Permanent)
}

fn describe_holder(holder: Option<&Holder>) -> String {
    match holder {
        None => "held by another session".to_owned(),
        Some(h) => match &h.info {
            Some(i) => format!(
                "held by session {} ({} pid {})",
                h.session_id,
                i.hostname.as_deref().unwrap_or("unknown host"),
                i.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
            None => format!("held by session {}", h.session_id),
        },
    }
}

const TLS_FAILED: &str = "TLS handshake failed";

/// A certificate or handshake failure (rustls' wording), told apart from "nothing listens there".
fn is_tls_failure(cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    ["certificate", "handshake", "alert", "unknownissuer", "tls"].iter().any(|w| c.contains(w))
}

/// Why connecting to a unix socket failed, in terms of what to check.
fn unix_connect_failure(err: &(dyn std::error::Error + 'static)) -> String {
    let cause = root_cause(err);
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::NotFound => format!("no socket at this path ({cause})"),
                std::io::ErrorKind::PermissionDenied => format!(
                    "permission denied on the socket ({cause}): this user may not open it or search a \
                     directory above it; see the agent's unix_sockets {{ user, group, mode }}"
                ),
                std::io::ErrorKind::ConnectionRefused => {
                    format!("nothing listens on the socket, a stale socket file? ({cause})")
                }
                _ => format!("connection failed ({cause})"),
            };
        }
        cur = e.source();
    }
    format!("connection failed ({cause})")
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_words_are_classified_once() {
        let cases = [
            ("Permission denied", Said::PermissionDenied),
            ("rpc error: Permission Denied: token lacks key:write", Said::PermissionDenied),
            ("invalid session \"adf4\"", Said::InvalidSession),
            ("failed to lock key \"k\": lock delay", Said::LockDelay),
            ("failed to lock key \"k\": lock is already held", Said::Held),
            ("failed session check for key \"k\"", Said::NotOurs),
            ("key \"k\" doesn't exist", Said::NotOurs),
            ("failed to set key \"p/.lock\", index is stale", Said::Stale),
            ("Check 'serfHealth' is in critical state", Said::Permanent),
            ("rpc error making call: No cluster leader", Said::Other),
            ("key \"x\" exists", Said::Changed),
            ("failed index check for key \"x\", current modify index 13 != 1", Said::Changed),
            ("failed to check index, key \"x\" doesn't exist", Said::NotOurs),
            // A key's name never counts as the reason.
            ("failed to lock key \"a/lock delay\": lock is already held", Said::Held),
            ("key \"permission denied \\\"x\\\" exists\" exists", Said::Changed),
        ];
        for (text, said) in cases {
            assert_eq!(classify(text), said, "{text}");
        }
        assert!(is_permanent_server_error("invalid session"));
        assert!(!is_permanent_server_error("No cluster leader"));
        assert!(!is_permanent_server_error("lock is already held"));
    }
}
