//! `Client`: where Consul is and how to talk to it. It keeps its settings and builds the crate's
//! client once per process, so a client made before `os.fork()` also works in the child (with its
//! own connections).

use std::mem::ManuallyDrop;
use std::sync::Mutex;
use std::time::Duration;

use consul_lock::ClientBuilder;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::IntoPy;
use crate::held::bytes;
use crate::runtime;

#[derive(Clone, Default)]
struct Settings {
    from_env: bool,
    address: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    datacenter: Option<String>,
    namespace: Option<String>,
    https: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<(String, String)>,
    tls_server_name: Option<String>,
    verify: bool,
    request_timeout: Option<Duration>,
}

impl Settings {
    fn build(&self) -> consul_lock::Result<consul_lock::Client> {
        let mut b = if self.from_env { ClientBuilder::from_env()? } else { consul_lock::Client::builder() };
        if let Some(a) = &self.address {
            b = b.address(a.clone());
        }
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        }
        if let Some(t) = &self.token_file {
            b = b.token_file(t.clone());
        }
        if let Some(d) = &self.datacenter {
            b = b.datacenter(d.clone());
        }
        if let Some(n) = &self.namespace {
            b = b.namespace(n.clone());
        }
        if let Some(h) = self.https {
            b = b.https(h);
        }
        if let Some(c) = &self.ca_file {
            b = b.ca_file(c.clone());
        }
        if let Some((c, k)) = &self.client_cert {
            b = b.client_cert(c.clone(), k.clone());
        }
        if let Some(n) = &self.tls_server_name {
            b = b.tls_server_name(n.clone());
        }
        if !self.verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(t) = self.request_timeout {
            b = b.request_timeout(t);
        }
        b.build()
    }
}

/// A Consul client (address, ACL token, TLS, datacenter). Cheap to share between locks and threads.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Client {
    settings: Settings,
    address: String,
    /// The crate's client of the process that built it. In a forked child the parent's is forgotten
    /// (never dropped: its connections are the parent's) and a new one is built.
    built: Mutex<ManuallyDrop<(u32, consul_lock::Client)>>,
}

impl Client {
    fn with(settings: Settings) -> PyResult<Client> {
        let built = settings.build().py_err()?;
        Ok(Client {
            address: built.address().to_owned(),
            built: Mutex::new(ManuallyDrop::new((std::process::id(), built))),
            settings,
        })
    }

    /// The crate's client for this process.
    pub(crate) fn get(&self) -> PyResult<consul_lock::Client> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if built.0 != pid {
            // The parent's client stays as it is (ManuallyDrop): replaced, never dropped.
            *built = ManuallyDrop::new((pid, self.settings.build().py_err()?));
        }
        Ok(built.1.clone())
    }
}

impl Client {
    pub(crate) fn from_env_settings() -> PyResult<Client> {
        Client::with(Settings { from_env: true, verify: true, ..Settings::default() })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let built = self.built.get_mut().unwrap_or_else(|p| p.into_inner());
        if built.0 == std::process::id() {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(built) }
        }
    }
}

fn holder_dict<'py>(py: Python<'py>, h: &consul_lock::Holder) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("session_id", &h.session_id)?;
    d.set_item("lock_index", h.lock_index)?;
    d.set_item("modify_index", h.modify_index)?;
    d.set_item("value", bytes(py, &h.value))?;
    match &h.info {
        Some(i) => {
            let info = PyDict::new(py);
            info.set_item("hostname", &i.hostname)?;
            info.set_item("pid", i.pid)?;
            info.set_item("acquired_at_unix_ms", i.acquired_at_unix_ms)?;
            info.set_item("session_name", &i.session_name)?;
            info.set_item("crate_version", &i.crate_version)?;
            d.set_item("info", info)?;
        }
        None => d.set_item("info", py.None())?,
    }
    Ok(d)
}

/// Who holds `key` now.
pub(crate) fn holder<'py>(
    py: Python<'py>,
    client: consul_lock::Client,
    key: String,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let h = runtime::wait(py, async move { client.holder(&key).await })?.py_err()?;
    h.map(|h| holder_dict(py, &h)).transpose()
}

pub(crate) fn holder_async<'py>(
    py: Python<'py>,
    client: consul_lock::Client,
    key: String,
) -> PyResult<Bound<'py, PyAny>> {
    crate::bridge::spawn(py, true, async move { client.holder(&key).await }, |py, h, _| match h.py_err()? {
        Some(h) => Ok(holder_dict(py, &h)?.into_any().unbind()),
        None => Ok(py.None()),
    })
}

#[pymethods]
impl Client {
    /// `Client()` reads Consul's environment variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, …);
    /// with `address`, only the arguments given count.
    #[new]
    #[pyo3(signature = (address=None, *, token=None, token_file=None, datacenter=None, namespace=None,
        https=None, ca_file=None, client_cert=None, client_key=None, tls_server_name=None, verify=true,
        request_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        address: Option<String>,
        token: Option<String>,
        token_file: Option<String>,
        datacenter: Option<String>,
        namespace: Option<String>,
        https: Option<bool>,
        ca_file: Option<String>,
        client_cert: Option<String>,
        client_key: Option<String>,
        tls_server_name: Option<String>,
        verify: bool,
        request_timeout: Option<f64>,
    ) -> PyResult<Client> {
        let client_cert = match (client_cert, client_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(crate::errors::invalid_config("client_cert and client_key go together")),
        };
        let request_timeout = match request_timeout {
            Some(t) => Some(runtime::seconds("request_timeout", t)?),
            None => None,
        };
        Client::with(Settings {
            from_env: address.is_none(),
            address,
            token,
            token_file,
            datacenter,
            namespace,
            https,
            ca_file,
            client_cert,
            tls_server_name,
            verify,
            request_timeout,
        })
    }

    /// A client from Consul's environment variables.
    #[staticmethod]
    fn from_env() -> PyResult<Client> {
        Client::from_env_settings()
    }

    /// The agent's HTTP address, as used.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Who holds `key` now, as a dict, or `None` when it is free.
    fn holder<'py>(&self, py: Python<'py>, key: String) -> PyResult<Option<Bound<'py, PyDict>>> {
        holder(py, self.get()?, key)
    }

    fn holder_async<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        holder_async(py, self.get()?, key)
    }

    fn __repr__(&self) -> String {
        // Never the token.
        format!("Client(address={:?})", self.address)
    }
}
