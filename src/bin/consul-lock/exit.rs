//! Exit codes, and the one-line error (plus a hint) that every failure ends in.

use std::fmt;

/// The lock was lost while the command ran. 75 is `EX_TEMPFAIL` in sysexits.h ("temporary failure,
/// try again later"), which is what it means here; neither flock(1), docker, timeout(1) nor the shells
/// give it a meaning of their own (they use 1, 64-73, 124-127 and 128+N).
pub(crate) const LOCK_LOST: i32 = 75;
/// consul-lock itself failed (Consul unreachable, ACL denied, invalid key, …), as timeout(1), env(1)
/// and docker do for their own failures.
pub(crate) const RUN_FAILED: i32 = 125;
/// The command was found but could not be executed (shells' convention).
pub(crate) const NOT_EXECUTABLE: i32 = 126;
/// The command was not found (shells' convention).
pub(crate) const NOT_FOUND: i32 = 127;
/// `status` / `break`: something went wrong; also every usage error.
pub(crate) const ERROR: i32 = 2;

/// A failure: what happened, one line, and what to try.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), hint: None }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A library error, with the hint that fits it.
    pub(crate) fn from_lib(code: i32, err: &consul_lock::Error, address: &str) -> Self {
        use consul_lock::Error as E;
        let hint = match err {
            E::Transport(_) => {
                format!("pass --http-addr or set CONSUL_HTTP_ADDR (now {address}); `consul members` checks the agent")
            }
            E::PermissionDenied { .. } => "pass an ACL token with --token-file or CONSUL_HTTP_TOKEN; it needs \
                key write on the key and session write on the agent's node"
                .to_owned(),
            E::InvalidConfig(_) => "see `consul-lock --help` (keys: no leading '/', no '..' segments)".to_owned(),
            E::LockLost { .. } => "the session was destroyed or expired; run again".to_owned(),
            _ => "run with -v for details".to_owned(),
        };
        Failure::new(code, one_line(&err.to_string())).hint(hint)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consul-lock: error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// Collapse a message to one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
