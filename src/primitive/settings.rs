//! The settings every primitive's builder takes (the lock, the semaphore, the election, the
//! multi-lock, the read-write lock and their blocking mirrors), kept once: the client, the
//! session's TTL, lock-delay, name and node checks, the acquire timeout and the value, plus the
//! rule that a primitive bound to a shared [`Session`](crate::Session) refuses the session's own
//! settings. Each public builder keeps its own documented setters ([`settings_setters!`]) and
//! forwards them here; validation happens in [`Settings::session_spec`], before any request.

use std::sync::Arc;
use std::time::Duration;

use crate::consul::client::Client;
use crate::consul::endpoints::SessionSpec;
use crate::error::{Error, Result};
use crate::session::lifecycle::{self, SessionCore, DEFAULT_LOCK_DELAY, DEFAULT_TTL, MAX_SESSION_NAME_BYTES};

/// Default time `hold`/`acquire` wait for a held key: 500 ms.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a primitive's builder was told, as set (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    client: Option<Client>,
    ttl: Duration,
    lock_delay: Duration,
    session_name: Option<String>,
    node_checks: bool,
    pub(crate) acquire_timeout: Duration,
    pub(crate) value: Option<Vec<u8>>,
    /// Bound to a shared session (a primitive made by one of `Session`'s methods).
    shared: Option<Arc<SessionCore>>,
    /// The first session setting set on a primitive bound to a shared session.
    session_setting_on_shared: Option<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            client: None,
            ttl: DEFAULT_TTL,
            lock_delay: DEFAULT_LOCK_DELAY,
            session_name: None,
            node_checks: false,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            value: None,
            shared: None,
            session_setting_on_shared: None,
        }
    }
}

impl Settings {
    /// The defaults, bound to a shared session and its client.
    pub(crate) fn bound(session: &Arc<SessionCore>) -> Self {
        Settings { client: Some(session.client.clone()), shared: Some(session.clone()), ..Settings::default() }
    }

    /// The client set (or the shared session's), if any.
    pub(crate) fn chosen_client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    pub(crate) fn set_client(&mut self, client: Client) {
        self.client = Some(client);
    }

    pub(crate) fn set_acquire_timeout(&mut self, timeout: Duration) {
        self.acquire_timeout = timeout;
    }

    pub(crate) fn set_value(&mut self, value: Vec<u8>) {
        self.value = Some(value);
    }

    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
        self.session_setting("ttl");
    }

    pub(crate) fn set_lock_delay(&mut self, delay: Duration) {
        self.lock_delay = delay;
        self.session_setting("lock_delay");
    }

    pub(crate) fn set_session_name(&mut self, name: String) {
        self.session_name = Some(name);
        self.session_setting("session_name");
    }

    pub(crate) fn set_node_checks(&mut self, yes: bool) {
        self.node_checks = yes;
        self.session_setting("node_health_checks");
    }

    fn session_setting(&mut self, name: &'static str) {
        if self.shared.is_some() && self.session_setting_on_shared.is_none() {
            self.session_setting_on_shared = Some(name);
        }
    }

    /// The session to create, validated before any request (on a shared session: the check that
    /// none of its settings was set here). `what` names the primitive in that error ("lock",
    /// "semaphore"); `default_name` is the session's name when none was set — cut to what Consul
    /// accepts, so that a long key never makes a default invalid.
    pub(crate) fn session_spec(&self, what: &str, default_name: String) -> Result<SessionSpec> {
        if let Some(setting) = self.session_setting_on_shared {
            return Err(Error::InvalidConfig(format!(
                "`{setting}` belongs to the shared Session this {what} is bound to; set it on the Session"
            )));
        }
        let name = match &self.session_name {
            Some(name) => name.clone(),
            None => fit_name(default_name),
        };
        let spec = SessionSpec { name, ttl: self.ttl, lock_delay: self.lock_delay, node_checks: self.node_checks };
        lifecycle::validate_spec(&spec)?;
        Ok(spec)
    }

    /// The client set, else one from the environment (built once, then kept).
    pub(crate) fn client(&mut self) -> Result<Client> {
        match &self.client {
            Some(c) => Ok(c.clone()),
            None => {
                let c = Client::from_env()?;
                self.client = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// The shared session this primitive is bound to, if any.
    pub(crate) fn shared(&self) -> Option<Arc<SessionCore>> {
        self.shared.clone()
    }
}

/// The setters of a builder's [`Settings`] (a `settings` field), written once; each builder invokes
/// it with its own docs for each setter, so that they speak of its own primitive:
/// `settings_setters! { /// docs… ttl(Duration) => set_ttl; … }`.
macro_rules! settings_setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty) => $set:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$set(value);
            self
        }
    )*};
}
pub(crate) use settings_setters;

/// A default session name cut to Consul's limit at a character boundary, ending in `…` when cut.
fn fit_name(name: String) -> String {
    if name.len() <= MAX_SESSION_NAME_BYTES {
        return name;
    }
    let ellipsis = '…';
    let mut end = MAX_SESSION_NAME_BYTES - ellipsis.len_utf8();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = name[..end].to_string();
    cut.push(ellipsis);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_default_name_is_cut_at_a_char_boundary() {
        assert_eq!(fit_name("short".into()), "short");
        let exact = "a".repeat(MAX_SESSION_NAME_BYTES);
        assert_eq!(fit_name(exact.clone()), exact);
        for unit in ["a", "é", "漢", "🔒"] {
            let long = format!("consul-lock: {}", unit.repeat(2000));
            let cut = fit_name(long.clone());
            assert!(cut.len() <= MAX_SESSION_NAME_BYTES, "{unit}: {} bytes", cut.len());
            assert!(cut.ends_with('…'));
            assert!(long.starts_with(cut.trim_end_matches('…')));
            assert!(lifecycle::validate_session_name(&cut).is_ok());
        }
    }

    #[test]
    fn a_set_name_is_never_cut_and_a_long_one_is_refused() {
        let mut s = Settings::default();
        s.set_session_name("n".repeat(MAX_SESSION_NAME_BYTES + 1));
        let err = s.session_spec("lock", "x".into()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("session_name: at most 1024 bytes"), "{err}");
    }
}
