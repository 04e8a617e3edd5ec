//! Blocking [`Client`] and [`ClientBuilder`]: the async client's configuration, plus the runtime
//! thread its calls run on.

use std::sync::Arc;
use std::time::Duration;

use super::runtime::Runtime;
use crate::consul::endpoints::SessionInfo;
use crate::error::Result;
use crate::holder::Holder;

/// Blocking [`crate::Client`]: the same configuration, plus the runtime thread its calls run on.
/// Cheap to clone; clones share the connection pool and the thread.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let client = consul_lock::blocking::Client::builder()
///     .address("http://127.0.0.1:8500")
///     .token("secret")
///     .build()?;
/// println!("{:?}", client.holder("jobs/42")?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: crate::Client,
    pub(crate) rt: Arc<Runtime>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Client {
    /// A [`ClientBuilder`] with the defaults (nothing read from the environment), as
    /// [`crate::Client::builder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder { inner: crate::Client::builder() }
    }

    /// A blocking client from Consul's environment variables (see [`crate::Client::from_env`]).
    ///
    /// # Errors
    /// As [`crate::Client::from_env`].
    pub fn from_env() -> Result<Client> {
        Client::new(crate::Client::from_env()?)
    }

    /// Wrap an async [`crate::Client`] (built with [`crate::Client::builder`]).
    ///
    /// # Errors
    /// [`Error::Cancelled`](crate::Error::Cancelled) if the runtime thread cannot be started.
    pub fn new(client: crate::Client) -> Result<Client> {
        Ok(Client { inner: client, rt: Arc::new(Runtime::start()?) })
    }

    /// The async client inside.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// The agent's base URL (see [`crate::Client::address`]).
    pub fn address(&self) -> &str {
        self.inner.address()
    }

    /// How many HTTP requests this client and its clones have sent (see
    /// [`crate::Client::request_count`]).
    pub fn request_count(&self) -> u64 {
        self.inner.request_count()
    }

    /// Who holds `key` now (see [`crate::Client::holder`]).
    ///
    /// # Errors
    /// As [`crate::Client::holder`].
    pub fn holder(&self, key: &str) -> Result<Option<Holder>> {
        let (c, key) = (self.inner.clone(), key.to_owned());
        self.rt.block_on(async move { c.holder(&key).await })?
    }

    /// Who a session is (see [`crate::Client::session_info`]).
    ///
    /// # Errors
    /// As [`crate::Client::session_info`].
    pub fn session_info(&self, id: &str) -> Result<Option<SessionInfo>> {
        let (c, id) = (self.inner.clone(), id.to_owned());
        self.rt.block_on(async move { c.session_info(&id).await })?
    }

    /// Destroy a session, whoever owns it (see [`crate::Client::destroy_session`]).
    ///
    /// # Errors
    /// As [`crate::Client::destroy_session`].
    pub fn destroy_session(&self, id: &str) -> Result<()> {
        let (c, id) = (self.inner.clone(), id.to_owned());
        self.rt.block_on(async move { c.destroy_session(&id).await })?
    }
}

/// Builds a blocking [`Client`]: every setter of [`crate::ClientBuilder`], same names, same
/// defaults. Needs no runtime.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        pub fn $name(self, $($arg: $ty),*) -> Self {
            ClientBuilder { inner: self.inner.$name($($arg),*) }
        }
    )*};
}

impl ClientBuilder {
    forward! {
        /// See [`crate::ClientBuilder::address`]. Default `http://127.0.0.1:8500`.
        address(address: impl Into<String>);
        /// See [`crate::ClientBuilder::token`]. Default: none.
        token(token: impl Into<String>);
        /// See [`crate::ClientBuilder::token_file`]. Default: none.
        token_file(path: impl Into<String>);
        /// See [`crate::ClientBuilder::datacenter`]. Default: the agent's own.
        datacenter(dc: impl Into<String>);
        /// See [`crate::ClientBuilder::namespace`]. Default: none.
        namespace(ns: impl Into<String>);
        /// See [`crate::ClientBuilder::https`]. Default `false`.
        https(yes: bool);
        /// See [`crate::ClientBuilder::ca_file`]. Default: the built-in web roots.
        ca_file(path: impl Into<String>);
        /// See [`crate::ClientBuilder::client_cert`]. Default: none.
        client_cert(cert_file: impl Into<String>, key_file: impl Into<String>);
        /// See [`crate::ClientBuilder::tls_server_name`]. Default: the host of the address.
        tls_server_name(name: impl Into<String>);
        /// See [`crate::ClientBuilder::danger_accept_invalid_certs`]. Default `false`.
        danger_accept_invalid_certs(yes: bool);
        /// See [`crate::ClientBuilder::request_timeout`]. Default 10 s.
        request_timeout(timeout: Duration);
    }

    /// A builder preset from Consul's environment variables (see
    /// [`crate::ClientBuilder::from_env`]).
    ///
    /// # Errors
    /// As [`crate::ClientBuilder::from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(ClientBuilder { inner: crate::ClientBuilder::from_env()? })
    }

    /// Build the client and start its runtime thread.
    ///
    /// # Errors
    /// As [`crate::ClientBuilder::build`]; [`Error::Cancelled`](crate::Error::Cancelled) if the
    /// runtime thread cannot be started.
    pub fn build(self) -> Result<Client> {
        Client::new(self.inner.build()?)
    }
}
