//! `Client`: where Consul is and how to talk to it (address, ACL token, TLS, datacenter), plus the
//! single function every request goes through (timeouts, token header, error mapping, counting).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;

use crate::error::{classify, Error, Result, Said};
use crate::mutex::lock;

/// How many keys [`Client::note_waiters`] remembers at most.
const MAX_BUSY_KEYS: usize = 4096;
use crate::consul::budget::{Budget, Lane, Pass, DEFAULT_MAX_CONNECTIONS};
use crate::consul::http1;
use crate::consul::key;
use crate::consul::local::{LocalKey, LocalKeys};

const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept in a pool of several (HTTP/1.1).
const IDLE_POOLED: Duration = Duration::from_secs(60);
/// Larger answers are refused: nothing this crate reads is anywhere near this big.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A handle to one Consul agent's HTTP API.
///
/// Cheap to clone: clones share one connection pool (it is an `Arc` inside). `Send + Sync`.
///
/// ```no_run
/// # fn main() -> consul_lock::Result<()> {
/// let client = consul_lock::Client::from_env()?; // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, …
/// let client = consul_lock::Client::builder()
///     .address("127.0.0.1:8500")
///     .token("secret") // sent as X-Consul-Token, never printed
///     .datacenter("dc1")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pool of every request but holder writes when those have a connection of their own.
    http: reqwest::Client,
    /// The holder connection's own pool (see `budget`).
    http_holder: reqwest::Client,
    /// An `http://` agent: this crate's own connections (see `http1`), the shared ones and the
    /// holder connection, in place of `http` and `http_holder`.
    plain: Option<Plain>,
    /// How many connections, and which request gets one first.
    budget: Budget,
    /// Requests whose connection the agent closed or reset before answering.
    resets: AtomicU64,
    /// `scheme://host:port`, no trailing slash: what request URLs start with.
    base: String,
    /// The address as shown in errors and `Debug`: `base`, or `unix://PATH` for a socket.
    shown: String,
    token: Option<Token>,
    datacenter: Option<String>,
    namespace: Option<String>,
    request_timeout: Duration,
    requests: AtomicU64,
    metrics_key_label: bool,
    /// Keys whose queue had waiters when this client last released them (see `note_waiters`).
    busy: Mutex<HashSet<String>>,
    /// The keys this client keeps alive now (see `local`).
    local: LocalKeys,
    /// Locks and permits held through this client now.
    holding: std::sync::atomic::AtomicUsize,
}

/// An ACL token. Its `Debug` and `Display` print `<redacted>`.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.shown)
            .field("token", &self.inner.token)
            .field("datacenter", &self.inner.datacenter)
            .field("namespace", &self.inner.namespace)
            .field("request_timeout", &self.inner.request_timeout)
            .finish()
    }
}

/// Builds a [`Client`]. Every setter takes and returns `Self`; each says its default.
#[derive(Clone, Default)]
pub struct ClientBuilder {
    address: Option<String>,
    https: bool,
    token: Option<Token>,
    token_file: Option<String>,
    datacenter: Option<String>,
    namespace: Option<String>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    tls_server_name: Option<String>,
    insecure: bool,
    request_timeout: Option<Duration>,
    metrics_key_label: bool,
    max_connections: Option<usize>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("datacenter", &self.datacenter)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Agent address: `host:port`, `http://host:port`, `https://host:port`, or `unix:///path/to/http.sock`
    /// for an agent listening on a unix socket (`addresses { http = "unix://…" }`; plain HTTP over the
    /// socket, unix platforms only). Default `http://127.0.0.1:8500`.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// ACL token, sent as `X-Consul-Token`; never printed. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token(token.into()));
        self
    }

    /// Read the ACL token from this file at `build()` (trailing whitespace trimmed). Default: none.
    pub fn token_file(mut self, path: impl Into<String>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Datacenter to send requests to (`?dc=`). Default: the agent's own.
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.datacenter = Some(dc.into());
        self
    }

    /// Namespace (`?ns=`, Consul Enterprise; open-source Consul ignores it). Default: none.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Use HTTPS when the address has no scheme. Default `false`.
    pub fn https(mut self, yes: bool) -> Self {
        self.https = yes;
        self
    }

    /// PEM file of the CA that signed the agent's certificate. Default: the built-in web roots.
    pub fn ca_file(mut self, path: impl Into<String>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// PEM client certificate and key for mutual TLS (`verify_incoming`). Default: none.
    pub fn client_cert(mut self, cert_file: impl Into<String>, key_file: impl Into<String>) -> Self {
        self.client_cert = Some(cert_file.into());
        self.client_key = Some(key_file.into());
        self
    }

    /// Name to verify the agent's certificate against (and send as SNI) instead of the address's
    /// host. Default: the host of the address.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Accept any server certificate. Dangerous: only for tests. Logs a warning. Default `false`.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.insecure = yes;
        self
    }

    /// Timeout of each ordinary request (blocking queries get their wait time on top).
    /// Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The most connections this client (and its clones) has to the agent at once, whatever the
    /// number of tasks waiting through it. An agent allows `limits.http_max_conns_per_client`
    /// (200 by default) per client address, and the processes of a host usually share one
    /// address: keep the sum of the budgets of a host's clients under it.
    ///
    /// Over `http://` this is a hard cap: the client keeps its own HTTP/1.1 connections, opens one
    /// only when none is idle, and closes one at once when its request is cancelled. A request in
    /// flight needs a connection of its own, so with a budget of 2 or more one connection is kept
    /// for holders (renewals, releases; and, from a budget of 3, every session's renewals), and
    /// blocking queries use at most the budget minus 2 (at least 1): a quarter of those wait their
    /// full time, the others 500 ms at a time, in turns. Waiters on one key in one process need one
    /// blocking query in all (the rest wait for each other in-process). With a budget of 1,
    /// everything shares one connection: blocking queries then wait at most 2.5 s each, so a
    /// renewal gets its turn well within the TTL. An `https://` agent that speaks HTTP/2 carries
    /// every request on one connection whatever the budget; over a unix socket (no per-address
    /// cap there) the budget bounds requests in flight. Must be at least 1. Default 32.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// With feature `metrics`: add a `key` label (the lock's key) to the acquire-wait and hold-time
    /// histograms of this client's locks. Opt-in because every key is then a time series of its
    /// own. Without the feature it has no effect. Default `false`.
    pub fn metrics_key_label(mut self, yes: bool) -> Self {
        self.metrics_key_label = yes;
        self
    }

    /// A builder preset from Consul's own environment variables: `CONSUL_HTTP_ADDR`,
    /// `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`, `CONSUL_HTTP_SSL_VERIFY`,
    /// `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`,
    /// `CONSUL_NAMESPACE`. Unset or empty variables keep the defaults.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a boolean variable is not a boolean.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut b = ClientBuilder::default();
        if let Some(addr) = get("CONSUL_HTTP_ADDR") {
            b.address = Some(addr.trim().to_owned());
        }
        if let Some(t) = get("CONSUL_HTTP_TOKEN") {
            b.token = Some(Token(t.trim().to_owned()));
        }
        b.token_file = get("CONSUL_HTTP_TOKEN_FILE");
        if let Some(v) = get("CONSUL_HTTP_SSL") {
            b.https = parse_bool("CONSUL_HTTP_SSL", &v)?;
        }
        if let Some(v) = get("CONSUL_HTTP_SSL_VERIFY") {
            b.insecure = !parse_bool("CONSUL_HTTP_SSL_VERIFY", &v)?;
        }
        b.ca_file = get("CONSUL_CACERT");
        b.client_cert = get("CONSUL_CLIENT_CERT");
        b.client_key = get("CONSUL_CLIENT_KEY");
        b.tls_server_name = get("CONSUL_TLS_SERVER_NAME");
        b.namespace = get("CONSUL_NAMESPACE");
        Ok(b)
    }

    /// Build the client. Reads the token, CA and client-certificate files named.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed address, an unreadable file or an invalid PEM.
    pub fn build(self) -> Result<Client> {
        let invalid = |m: String| Error::InvalidConfig(m);
        let endpoint = parse_address(self.address.as_deref().unwrap_or(DEFAULT_ADDRESS), self.https)?;

        let mut token = self.token;
        if token.is_none() {
            if let Some(path) = &self.token_file {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| invalid(format!("cannot read the ACL token file {path:?}: {e}")))?;
                token = Some(Token(t.trim().to_owned()));
            }
        }
        if let Some(Token(t)) = &token {
            if t.is_empty() || t.chars().any(|c| c.is_control()) {
                return Err(invalid("the ACL token is empty or contains control characters".into()));
            }
        }

        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(invalid("request_timeout must be greater than zero".into()));
        }

        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid("max_connections must be at least 1".into()));
        }
        let mut roots = Vec::new();
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read CA file {path:?}: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("CA file {path:?} is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(invalid(format!("CA file {path:?} holds no certificate")));
            }
            roots = certs;
        }
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert)
                    .map_err(|e| invalid(format!("cannot read client certificate {cert:?}: {e}")))?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| invalid(format!("cannot read client key {key:?}: {e}")))?);
                Some(
                    reqwest::Identity::from_pem(&pem).map_err(|e| {
                        invalid(format!("client certificate/key {cert:?}/{key:?} are not valid PEM: {e}"))
                    })?,
                )
            }
            (None, None) => None,
            _ => {
                return Err(invalid("a client certificate needs both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY".into()))
            }
        };
        if self.insecure {
            tracing::warn!("TLS certificate verification is disabled (CONSUL_HTTP_SSL_VERIFY=false)");
        }
        let https = matches!(&endpoint, Endpoint::Tcp { scheme: "https", .. });
        // Pooled connections are kept as long as the agent keeps them (Consul 1.8 never closes an
        // idle one) where a held lock may need them: the holder connection, the one connection of
        // a budget of 1, the one HTTP/2 connection. A larger HTTP/1.1 pool lets idle connections
        // go after a minute, so a burst does not keep the host's share of the agent's cap.
        let keep = max_connections == 1 || https;
        let http_client = |idle: Option<Duration>| -> Result<(reqwest::Client, String, String)> {
            let mut http = reqwest::Client::builder()
                .connect_timeout(request_timeout.min(Duration::from_secs(5)))
                .pool_idle_timeout(idle)
                .tcp_nodelay(true)
                .user_agent(concat!("consul-lock/", env!("CARGO_PKG_VERSION")))
                // Consul never redirects an API call; following one could turn a PUT into a GET.
                .redirect(reqwest::redirect::Policy::none());
            for c in &roots {
                http = http.add_root_certificate(c.clone());
            }
            if let Some(id) = &identity {
                http = http.identity(id.clone());
            }
            if self.insecure {
                http = http.danger_accept_invalid_certs(true);
            }
            let (http, base, shown) = match &endpoint {
                Endpoint::Unix(path) => (unix_socket(http, path)?, UNIX_BASE.to_owned(), unix_shown(path)),
                Endpoint::Tcp { scheme, authority } => {
                    let (http, base) = tls_server_name(http, scheme, authority, self.tls_server_name.as_deref())?;
                    (http, base.clone(), base)
                }
            };
            let http = http.build().map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
            Ok((http, base, shown))
        };
        let (http, base, shown) = http_client((!keep).then_some(IDLE_POOLED))?;
        let (http_holder, _, _) = http_client(None)?;
        let plain = match &endpoint {
            Endpoint::Tcp { scheme: "http", authority } => {
                let connect = request_timeout.min(Duration::from_secs(5));
                let pool = |idle| http1::Pool::new(authority, connect, idle).map_err(invalid);
                Some(Plain { shared: pool((!keep).then_some(IDLE_POOLED))?, holder: pool(None)? })
            }
            _ => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                http_holder,
                plain,
                budget: Budget::new(max_connections, https),
                resets: AtomicU64::new(0),
                base,
                shown,
                token,
                datacenter: self.datacenter.filter(|d| !d.is_empty()),
                namespace: self.namespace.filter(|n| !n.is_empty()),
                request_timeout,
                requests: AtomicU64::new(0),
                metrics_key_label: self.metrics_key_label,
                busy: Mutex::new(HashSet::new()),
                local: LocalKeys::default(),
                holding: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }
}

/// The base URL of a TCP agent; with `https` and a `name`, connect to `authority` but verify (and
/// send SNI for) `name`.
fn tls_server_name(
    mut http: reqwest::ClientBuilder,
    scheme: &str,
    authority: &str,
    name: Option<&str>,
) -> Result<(reqwest::ClientBuilder, String)> {
    let Some(name) = name.filter(|_| scheme == "https") else {
        return Ok((http, format!("{scheme}://{authority}")));
    };
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| Error::InvalidConfig(format!("cannot resolve {authority:?}: {e}")))?
        .collect();
    let port = addrs.first().map(|a| a.port()).unwrap_or(443);
    http = http.resolve_to_addrs(name, &addrs);
    Ok((http, format!("https://{name}:{port}")))
}

/// Request URLs of a unix-socket client: the host is never resolved (the Consul CLI uses the same).
const UNIX_BASE: &str = "http://localhost";

fn unix_shown(path: &std::path::Path) -> String {
    format!("unix://{}", path.display())
}

/// Every connection of this client goes to the socket at `path`.
#[cfg(unix)]
fn unix_socket(http: reqwest::ClientBuilder, path: &std::path::Path) -> Result<reqwest::ClientBuilder> {
    Ok(http.unix_socket(path))
}

#[cfg(not(unix))]
fn unix_socket(_: reqwest::ClientBuilder, path: &std::path::Path) -> Result<reqwest::ClientBuilder> {
    Err(Error::InvalidConfig(format!("{}: unix sockets are only supported on unix platforms", unix_shown(path))))
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidConfig(format!("{name}={v:?} is not a boolean (use true or false)"))),
    }
}

/// Where the agent listens.
#[derive(Debug, PartialEq)]
enum Endpoint {
    /// `scheme` is `http` or `https`; `authority` is `host:port`.
    Tcp { scheme: &'static str, authority: String },
    /// `unix://PATH`.
    Unix(std::path::PathBuf),
}

/// Parse an address into where to connect.
fn parse_address(addr: &str, https: bool) -> Result<Endpoint> {
    let bad = |why: &str| Err(Error::InvalidConfig(format!("invalid Consul address {addr:?}: {why}")));
    let addr = addr.trim();
    let (scheme, rest) = if let Some(r) = addr.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = addr.strip_prefix("https://") {
        ("https", r)
    } else if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() || path.chars().any(|c| c.is_control()) {
            return bad("expected unix:///path/to/http.sock");
        }
        return Ok(Endpoint::Unix(path.into()));
    } else if addr.contains("://") {
        return bad("the scheme must be http, https or unix");
    } else {
        (if https { "https" } else { "http" }, addr)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return bad("no host");
    }
    if rest.contains(['/', '?', '#', '@', ' ']) || rest.chars().any(|c| c.is_control()) {
        return bad("expected host:port with no path, query or user info");
    }
    let has_port = match rest.rfind(':') {
        Some(i) => !rest.ends_with(']') && rest[i + 1..].parse::<u16>().is_ok(),
        None => false,
    };
    if !has_port && rest.rsplit_once(':').is_some_and(|(h, _)| !h.contains(':') || h.ends_with(']')) {
        return bad("the port is not a number from 0 to 65535");
    }
    let port = if has_port {
        ""
    } else if scheme == "https" {
        ":8501"
    } else {
        ":8500"
    };
    Ok(Endpoint::Tcp { scheme, authority: format!("{rest}{port}") })
}

/// One HTTP answer from Consul.
pub(crate) struct Reply {
    pub status: u16,
    /// `X-Consul-Index`, when sent.
    pub index: Option<u64>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().chars().take(500).collect()
    }
}

impl Client {
    /// A [`ClientBuilder`] with the defaults (nothing read from the environment).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from Consul's environment variables (see [`ClientBuilder::from_env`]);
    /// with none set, `http://127.0.0.1:8500` and no token.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a variable is invalid or a file it names is unreadable.
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env()?.build()
    }

    /// The agent's address as used in error messages: its base URL (`http://host:port`), or
    /// `unix:///path` for an agent on a unix socket.
    pub fn address(&self) -> &str {
        &self.inner.shown
    }

    /// How many HTTP requests this client and its clones have sent (retries included).
    /// Handy for tests and benchmarks that count the load a lock puts on Consul.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn metrics_key_label(&self) -> bool {
        self.inner.metrics_key_label
    }

    /// Remember whether others were queued for `key` when this process released it. A hint only
    /// (never needed for correctness): an acquire of a busy key queues first instead of trying
    /// the key, so a releaser that comes back at once does not overtake the waiters. Bounded: past
    /// [`MAX_BUSY_KEYS`] keys the memory starts over.
    pub(crate) fn note_waiters(&self, key: &str, waiting: bool) {
        let mut busy = lock(&self.inner.busy);
        if !waiting {
            busy.remove(key);
        } else if !busy.contains(key) {
            if busy.len() >= MAX_BUSY_KEYS {
                busy.clear();
            }
            busy.insert(key.to_owned());
        }
    }

    /// Whether others were queued for `key` at this process's last release of it.
    pub(crate) fn has_waiters(&self, key: &str) -> bool {
        lock(&self.inner.busy).contains(key)
    }

    /// Map a non-success answer to an error.
    pub(crate) fn check(&self, reply: Reply) -> Result<Reply> {
        match reply.status {
            200..=299 => Ok(reply),
            403 => Err(Error::PermissionDenied { address: self.address().to_owned(), message: reply.text() }),
            status => {
                let message = reply.text();
                if classify(&message) == Said::PermissionDenied {
                    return Err(Error::PermissionDenied { address: self.address().to_owned(), message });
                }
                Err(Error::Consul { address: self.address().to_owned(), status, message })
            }
        }
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::decode(self.address(), e.to_string()))
    }

    /// Send one short request on the ordinary lane (see [`Lane`]).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        self.call_in(Lane::Request, method, path, query, body, timeout).await
    }

    /// Send one short request on `lane`: [`Lane::Holder`] for the writes a holder needs.
    pub(crate) async fn call_in(
        &self,
        lane: Lane,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        // Through a budget of 2 or less (a waiting `consul-lock run`), a client that holds nothing
        // opens no holder connection for its waiting sessions' writes (a session replaced, a queue
        // entry left): they go first on the connection it waits with.
        let small_idle = self.inner.budget.max() <= 2 && self.inner.holding.load(Ordering::SeqCst) == 0;
        let lane = if lane == Lane::Holder && small_idle { Lane::Priority } else { lane };
        // Such a client keeps one connection while it waits, and a turn's attempt opens the holder
        // connection: first it closes the shared one and keeps it from reopening until answered.
        let alone = lane == Lane::Turn && small_idle && self.inner.budget.holder_own();
        let _shared_closed = if alone { Some(self.close_shared().await) } else { None };
        let pass = self.inner.budget.admit(lane, false).await;
        self.send(pass, method, path, query, body, timeout).await
    }

    /// The shared pool's permit, its idle connection closed: while it is held, nothing of this
    /// client (through a budget of 2) has a connection but the holder connection.
    async fn close_shared(&self) -> Pass<'_> {
        let pass = self.inner.budget.admit(Lane::Priority, false).await;
        if let Some(plain) = &self.inner.plain {
            plain.shared.close_idle();
        }
        pass
    }

    /// The permits of a blocking query (`holder`: a holder's, which keeps its connection): its
    /// wait is capped at `pass.wait_cap`.
    pub(crate) async fn admit_wait(&self, holder: bool) -> Pass<'_> {
        self.inner.budget.admit(Lane::Wait, holder).await
    }

    /// [`Lane::Turn`] while the holder connection is not open (the request opens it), else
    /// [`Lane::Request`].
    pub(crate) fn holder_lane_if_cold(&self) -> Lane {
        if self.inner.budget.holder_cold() {
            Lane::Turn
        } else {
            Lane::Request
        }
    }

    /// A turn's attempt opened the holder connection and took nothing. Through a budget of 2 or
    /// less (a waiting `consul-lock run` keeps one connection), close it again unless a hold of
    /// this client uses it: the next attempt in turn opens it anew.
    pub(crate) fn holder_connection_unused(&self) {
        if self.inner.budget.max() > 2 || self.inner.holding.load(Ordering::SeqCst) > 0 {
            return;
        }
        if let Some(plain) = &self.inner.plain {
            plain.holder.close_idle();
        }
        self.inner.budget.holder_used(false);
    }

    /// A hold of this client begins (`true`) or ends.
    pub(crate) fn note_holding(&self, yes: bool) {
        if yes {
            self.inner.holding.fetch_add(1, Ordering::SeqCst);
        } else {
            let _ = self.inner.holding.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// The lane of a session's own writes (create, renew). Through a budget of 3 or more they are
    /// holder writes: the holder connection opens with the first session and carries every
    /// renewal, waiting or holding, so that no session's lease depends on getting a new connection
    /// while waiters fill the agent's cap. Through a budget of 1 or 2 (a waiting `consul-lock run`
    /// keeps one connection), a waiting session's writes go first on the shared connection, and a
    /// holding one's on the holder connection.
    pub(crate) fn session_lane(&self, holding: bool) -> Lane {
        if holding || self.inner.budget.max() >= 3 {
            Lane::Holder
        } else {
            Lane::Priority
        }
    }

    /// Open the holder connection, if holder writes have one of their own and it is not open: a
    /// read (`GET /v1/status/leader`) on it in the background, retried quickly (a holder at a
    /// saturated agent competes for the next free connection) for up to a minute.
    pub(crate) fn warm_holder_connection(&self, runtime: &tokio::runtime::Handle) {
        if !self.inner.budget.holder_cold() || self.inner.budget.start_warming() {
            return;
        }
        let client = self.clone();
        runtime.spawn(async move {
            let mut backoff = crate::consul::retry::Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
            let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
            while client.inner.budget.holder_cold() && tokio::time::Instant::now() < give_up {
                let r =
                    client.call_in(Lane::Turn, Method::GET, "status/leader", &[], None, client.request_timeout()).await;
                if r.is_ok() {
                    break;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            client.inner.budget.stop_warming();
        });
    }

    /// Send one request with its permits. Every request of the crate goes through here.
    pub(crate) async fn send(
        &self,
        pass: Pass<'_>,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        let mut target = String::with_capacity(path.len() + 48);
        target.push_str("/v1/");
        target.push_str(path);
        let mut sep = '?';
        let extra = [("dc", self.inner.datacenter.as_deref()), ("ns", self.inner.namespace.as_deref())];
        for (k, v) in query.iter().map(|(k, v)| (*k, Some(*v))).chain(extra) {
            if let Some(v) = v {
                target.push(sep);
                target.push_str(k);
                target.push('=');
                key::encode_component(v, &mut target);
                sep = '&';
            }
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(%method, path, "consul request");
        let sent = match &self.inner.plain {
            Some(plain) => self.send_plain(plain, &pass, method, &target, body, timeout).await,
            None => self.send_reqwest(&pass, method, &target, body, timeout).await,
        };
        crate::metrics::request(path, sent.as_ref().ok().map(|r| r.status));
        let reply = sent?;
        self.inner.budget.answered();
        if pass.holder_pool {
            self.inner.budget.holder_used(true);
        }
        if reply.status == 429 && reply.text().to_ascii_lowercase().contains("too many concurrent connections") {
            self.at_cap(); // newer agents answer 429 before closing a connection past the cap
        }
        Ok(reply)
    }

    /// An `http://` agent: on this crate's own connections.
    async fn send_plain(
        &self,
        plain: &Plain,
        pass: &Pass<'_>,
        method: Method,
        target: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        let pool = if pass.holder_pool { &plain.holder } else { &plain.shared };
        let token = self.inner.token.as_ref().map(|Token(t)| t.as_str());
        let out = http1::Outgoing {
            method,
            target,
            token,
            body,
            close: pass.close,
            max_bytes: MAX_RESPONSE_BYTES,
            reuse_only: pass.reuse_only,
        };
        let addr = self.address();
        match tokio::time::timeout(timeout, pool.send(out)).await {
            Ok(Ok(a)) => Ok(Reply { status: a.status, index: a.index, body: a.body }),
            Err(_) => Err(self.transport_failed(pass, Error::from_plain(addr, http1::Failure::TimedOut), false)),
            Ok(Err(http1::Failure::TooLarge)) => {
                Err(Error::decode(addr, format!("answer larger than {MAX_RESPONSE_BYTES} bytes")))
            }
            Ok(Err(f)) => {
                // Past its cap the agent closes new connections; a kept one that breaks is
                // something else (the agent restarting, say).
                let closed = matches!(&f, http1::Failure::Http { error, fresh: true } if closed_by_agent(error));
                Err(self.transport_failed(pass, Error::from_plain(addr, f), closed))
            }
        }
    }

    /// An `https://` agent or a unix socket: through reqwest.
    async fn send_reqwest(
        &self,
        pass: &Pass<'_>,
        method: Method,
        target: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        let http = if pass.holder_pool { &self.inner.http_holder } else { &self.inner.http };
        let mut req = http.request(method, format!("{}{target}", self.inner.base)).timeout(timeout);
        if let Some(Token(t)) = &self.inner.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        if pass.close {
            req = req.header("Connection", "close");
        }
        let addr = self.address();
        let failed = |e: reqwest::Error| {
            // Before the first answer of an `https://` agent, a closed connection is more likely
            // our certificate refused than the agent's connection cap.
            let first_tls = self.inner.budget.probing();
            let closed = !e.is_timeout() && !first_tls && closed_by_agent(&e);
            self.transport_failed(pass, Error::from_reqwest(addr, e, first_tls), closed)
        };
        let mut resp = req.send().await.map_err(failed)?;
        self.inner.budget.learned(resp.version());
        let status = resp.status().as_u16();
        let index =
            resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::decode(addr, format!("answer larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply { status, index, body })
    }

    /// A request failed in transport (`error`): remember when the agent closed the connection
    /// before answering (`closed`: its per-client connection cap, most likely), and say it once.
    fn transport_failed(&self, pass: &Pass<'_>, error: Error, closed: bool) -> Error {
        if pass.holder_pool {
            self.inner.budget.holder_used(false);
        }
        if closed {
            self.at_cap();
        }
        error
    }

    fn at_cap(&self) {
        self.inner.budget.refused();
        if self.inner.resets.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                address = %self.address(),
                "{}",
                crate::error::connection_cap_message(self.address())
            );
        }
    }

    /// How many requests failed because the agent closed or reset their connection before
    /// answering — what an agent does past its cap of connections per client address
    /// (`limits.http_max_conns_per_client`, 200 by default), shared by every process of a host.
    /// Such failures are retried with backoff until the caller's deadline; the first one is
    /// logged once as a warning.
    pub fn connection_resets(&self) -> u64 {
        self.inner.resets.load(Ordering::Relaxed)
    }

    /// Mark `key` as kept alive by this client (a waiter's queue entry) until the returned value
    /// is dropped.
    pub(crate) fn keep_local(&self, key: &str) -> LocalKey {
        self.inner.local.keep(key)
    }

    /// A signal for `key` if this client keeps it alive now: its `changed()` fails once the key is
    /// let go, or sees `true` once a committed write of ours deleted it.
    pub(crate) fn watch_local(&self, key: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.inner.local.watch(key)
    }

    /// This client's budget of connections (see [`ClientBuilder::max_connections`]).
    pub fn max_connections(&self) -> usize {
        self.inner.budget.max()
    }
}

/// Whether the agent closed or reset the connection before answering (not a refused connect, not
/// a timeout): io errors of those kinds anywhere in the chain, or hyper's "closed before message
/// completed".
fn closed_by_agent(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe) {
                return true;
            }
        }
        let text = c.to_string();
        if text.contains("connection closed before message completed") || text.contains("reset by peer") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The connections of an `http://` client.
struct Plain {
    /// Every request but the holder connection's.
    shared: http1::Pool,
    /// The holder connection (see `budget`).
    holder: http1::Pool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<ClientBuilder> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ClientBuilder::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn env_defaults() {
        let c = from(&[]).unwrap().build().unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:8500");
        assert!(c.inner.token.is_none());
    }

    #[test]
    fn env_address_token_namespace_ssl() {
        let c = from(&[
            ("CONSUL_HTTP_ADDR", "consul.example:8600"),
            ("CONSUL_HTTP_TOKEN", "s3cr3t-token"),
            ("CONSUL_NAMESPACE", "team"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ])
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(c.address(), "https://consul.example:8600");
        assert_eq!(c.inner.namespace.as_deref(), Some("team"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!format!("{:?}", from(&[("CONSUL_HTTP_TOKEN", "s3cr3t")]).unwrap()).contains("s3cr3t"));
    }

    #[test]
    fn env_token_file_and_explicit_token_wins() {
        let dir = std::env::temp_dir().join(format!("consul-lock-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "file-token\n").unwrap();
        let c = from(&[("CONSUL_HTTP_TOKEN_FILE", f.to_str().unwrap())]).unwrap().build().unwrap();
        assert_eq!(c.inner.token.as_ref().unwrap().0, "file-token");
        let c = from(&[("CONSUL_HTTP_TOKEN_FILE", f.to_str().unwrap()), ("CONSUL_HTTP_TOKEN", "env")])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.inner.token.as_ref().unwrap().0, "env");
        let e = from(&[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/tok")]).unwrap().build().unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("/nonexistent/tok")), "{e}");
    }

    #[test]
    fn env_tls_files_are_read() {
        let e = from(&[("CONSUL_CACERT", "/nonexistent/ca.pem")]).unwrap().build().unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("ca.pem")), "{e}");
        let e = from(&[("CONSUL_CLIENT_CERT", "/nonexistent/c.pem")]).unwrap().build().unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("CONSUL_CLIENT_KEY")), "{e}");
        let e = from(&[("CONSUL_CLIENT_CERT", "/x/c.pem"), ("CONSUL_CLIENT_KEY", "/x/k.pem")])
            .unwrap()
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("c.pem")), "{e}");
        let b =
            from(&[("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"), ("CONSUL_HTTP_ADDR", "https://127.0.0.1:8501")])
                .unwrap();
        assert_eq!(b.tls_server_name.as_deref(), Some("server.dc1.consul"));
        assert_eq!(b.clone().build().unwrap().address(), "https://server.dc1.consul:8501");
    }

    #[test]
    fn env_bad_bool_is_invalid_config() {
        let e = from(&[("CONSUL_HTTP_SSL", "maybe")]).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("CONSUL_HTTP_SSL")));
    }

    #[test]
    fn addresses() {
        let ok = |a: &str| Client::builder().address(a).build().map(|c| c.address().to_owned());
        assert_eq!(ok("127.0.0.1:8500").unwrap(), "http://127.0.0.1:8500");
        assert_eq!(ok("http://localhost:1/").unwrap(), "http://localhost:1");
        assert_eq!(ok("https://h").unwrap(), "https://h:8501");
        assert_eq!(ok("localhost").unwrap(), "http://localhost:8500");
        assert_eq!(ok("[::1]:8500").unwrap(), "http://[::1]:8500");
        for bad in ["unix://", "ftp://x", "", "h:99999", "h/path", "http://"] {
            assert!(matches!(ok(bad), Err(Error::InvalidConfig(_))), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn unix_socket_addresses() {
        let c = from(&[("CONSUL_HTTP_ADDR", "unix:///run/consul/http.sock")]).unwrap().build().unwrap();
        assert_eq!(c.address(), "unix:///run/consul/http.sock");
        assert_eq!(c.inner.base, UNIX_BASE);
        assert!(format!("{c:?}").contains("unix:///run/consul/http.sock"));
        let c = Client::builder().address("unix://relative.sock").https(true).build().unwrap();
        assert_eq!(c.address(), "unix://relative.sock");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_missing_socket_is_named_in_the_error() {
        let path = std::env::temp_dir().join(format!("consul-lock-no-such-{}.sock", std::process::id()));
        let c = Client::builder().address(format!("unix://{}", path.display())).build().unwrap();
        let e = c.holder("k").await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        assert!(msg.contains(&format!("unix://{}", path.display())) && msg.contains("no socket at this path"), "{msg}");
    }
}
