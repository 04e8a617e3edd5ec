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

    pub(crate) fn from_reqwest(address: &str, err: reqwest::Error) -> Self {
        let timeout = err.is_timeout();
        let message = if timeout {
            "request timed out".to_owned()
        } else if is_tls_failure(&root_cause(&err)) {
            format!("{TLS_FAILED} ({})", root_cause(&err))
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

    pub(crate) fn decode(address: &str, message: impl Into<String>) -> Self {
        Error::Decode { address: address.to_owned(), message: message.into() }
    }

    /// `true` for [`Error::NotAcquired`]: the key was held by someone else until the timeout.
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::NotAcquired { .. })
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

/// Consul 1.8 answers some permanent failures with HTTP 500; retrying them only burns the deadline.
pub(crate) fn is_permanent_server_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["invalid session", "serfhealth", "no path to datacenter", "permission denied", "acl not found", "must be between"]
        .iter()
        .any(|p| m.contains(p))
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

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
