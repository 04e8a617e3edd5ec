//! The native lock, semaphore, election and session: each keeps its settings, makes the crate's
//! value for every attempt, and hands a held one over as a [`Held`].

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use consul_lock::{EphemeralLock, Error, LeaderWatch};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::bridge;
use crate::client::Client;
use crate::errors::{self, IntoPy};
use crate::held::{bytes, Held, Inner};
use crate::runtime::{self, check_pid};

/// Where a primitive's session comes from: its own (with these settings) or a shared `Session`.
enum Source {
    Own { client: Py<Client>, ttl: Option<Duration>, lock_delay: Option<Duration>, session_name: Option<String> },
    Shared(Py<Session>),
}

fn opt_secs(what: &str, v: Option<f64>) -> PyResult<Option<Duration>> {
    v.map(|s| runtime::seconds(what, s)).transpose()
}

/// Outcome of an attempt: held, or not before the deadline (`None` unless failing hard).
fn outcome<G>(r: consul_lock::Result<G>, fail_hard: bool) -> consul_lock::Result<Option<G>> {
    match r {
        Ok(g) => Ok(Some(g)),
        Err(e @ Error::NotAcquired { .. }) if fail_hard => Err(e),
        Err(Error::NotAcquired { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn held_or_none(py: Python<'_>, h: Option<Inner>) -> PyResult<Py<PyAny>> {
    match h {
        Some(i) => Ok(Py::new(py, Held::new(i))?.into_any()),
        None => Ok(py.None()),
    }
}

impl Source {
    fn new(
        py: Python<'_>,
        client: Option<Py<Client>>,
        session: Option<Py<Session>>,
        ttl: Option<f64>,
        lock_delay: Option<f64>,
        session_name: Option<String>,
    ) -> PyResult<Source> {
        if let Some(s) = session {
            if ttl.is_some() || lock_delay.is_some() || session_name.is_some() {
                return Err(errors::invalid_config(
                    "ttl, lock_delay and session_name belong to the shared Session; set them there",
                ));
            }
            if client.is_some() {
                return Err(errors::invalid_config("pass either a client or a session (which has its client)"));
            }
            return Ok(Source::Shared(s));
        }
        let client = match client {
            Some(c) => c,
            None => Py::new(py, Client::from_env_settings()?)?,
        };
        Ok(Source::Own {
            client,
            ttl: opt_secs("ttl", ttl)?,
            lock_delay: opt_secs("lock_delay", lock_delay)?,
            session_name,
        })
    }

    fn client(&self, py: Python<'_>) -> PyResult<consul_lock::Client> {
        match self {
            Source::Own { client, .. } => client.get().get(),
            Source::Shared(s) => s.bind(py).get().client.get().get(),
        }
    }

    fn lock(&self, py: Python<'_>, key: &str) -> PyResult<EphemeralLock> {
        Ok(match self {
            Source::Own { client, ttl, lock_delay, session_name } => {
                let mut l = EphemeralLock::new(key).client(client.get().get()?);
                if let Some(t) = ttl {
                    l = l.ttl(*t);
                }
                if let Some(d) = lock_delay {
                    l = l.lock_delay(*d);
                }
                if let Some(n) = session_name {
                    l = l.session_name(n.clone());
                }
                l
            }
            Source::Shared(s) => s.bind(py).get().shared()?.lock(key),
        })
    }
}

/// A lock's settings; `acquire` makes a fresh crate lock per attempt.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Lock {
    key: String,
    source: Source,
    max_hold: Option<Duration>,
    value: Option<Vec<u8>>,
    fair: bool,
}

impl Lock {
    fn make(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<EphemeralLock> {
        let mut l =
            self.source.lock(py, &self.key)?.acquire_timeout(runtime::duration("timeout", timeout)?).fair(self.fair);
        if let Some(m) = self.max_hold {
            l = l.max_hold(m);
        }
        if let Some(v) = &self.value {
            l = l.value(v.clone());
        }
        Ok(l)
    }
}

#[pymethods]
impl Lock {
    #[new]
    #[pyo3(signature = (key, *, client=None, session=None, ttl=None, lock_delay=None, max_hold=None, value=None,
        fair=false, session_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        key: String,
        client: Option<Py<Client>>,
        session: Option<Py<Session>>,
        ttl: Option<f64>,
        lock_delay: Option<f64>,
        max_hold: Option<f64>,
        value: Option<Vec<u8>>,
        fair: bool,
        session_name: Option<String>,
    ) -> PyResult<Lock> {
        let max_hold = opt_secs("max_hold", max_hold)?;
        if max_hold.is_some_and(|m| m.is_zero()) {
            return Err(errors::invalid_config("max_hold must be greater than zero"));
        }
        Ok(Lock {
            key,
            source: Source::new(py, client, session, ttl, lock_delay, session_name)?,
            max_hold,
            value,
            fair,
        })
    }

    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    /// Take the lock within `timeout` seconds (`None`: as long as it takes; `0`: one attempt).
    /// A `Held`, or `None` when someone else held it until the deadline (`NotAcquired` when
    /// `fail_hard`).
    #[pyo3(signature = (timeout, fail_hard=false))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>, fail_hard: bool) -> PyResult<Option<Held>> {
        let lock = self.make(py, timeout)?;
        let got = runtime::wait(py, async move { outcome(lock.hold().await, fail_hard) })?.py_err()?;
        Ok(got.map(|g| Held::new(Inner::Lock(g))))
    }

    #[pyo3(signature = (timeout, fail_hard=false))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        fail_hard: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lock = self.make(py, timeout)?;
        bridge::spawn(py, true, async move { outcome(lock.hold().await, fail_hard) }, |py, r, cancelled| {
            if cancelled {
                return Ok(py.None()); // dropping `r` releases a lock taken meanwhile
            }
            held_or_none(py, r.py_err()?.map(Inner::Lock))
        })
    }

    /// Who holds the key now (a dict), or `None`.
    fn holder<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, pyo3::types::PyDict>>> {
        crate::client::holder(py, self.source.client(py)?, self.key.clone())
    }

    fn holder_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::client::holder_async(py, self.source.client(py)?, self.key.clone())
    }
}

/// A semaphore's settings (Consul's semaphore recipe, shared with `consul lock -n`).
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Semaphore {
    prefix: String,
    limit: u32,
    source: Source,
    value: Option<Vec<u8>>,
}

impl Semaphore {
    fn make(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<consul_lock::Semaphore> {
        let mut s = match &self.source {
            Source::Own { client, ttl, lock_delay, session_name } => {
                let mut s = consul_lock::Semaphore::new(self.prefix.clone(), self.limit).client(client.get().get()?);
                if let Some(t) = ttl {
                    s = s.ttl(*t);
                }
                if let Some(d) = lock_delay {
                    s = s.lock_delay(*d);
                }
                if let Some(n) = session_name {
                    s = s.session_name(n.clone());
                }
                s
            }
            Source::Shared(sess) => sess.bind(py).get().shared()?.semaphore(self.prefix.clone(), self.limit),
        };
        s = s.acquire_timeout(runtime::duration("timeout", timeout)?);
        if let Some(v) = &self.value {
            s = s.value(v.clone());
        }
        Ok(s)
    }
}

#[pymethods]
impl Semaphore {
    #[new]
    #[pyo3(signature = (prefix, limit, *, client=None, session=None, ttl=None, lock_delay=None, value=None,
        session_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        prefix: String,
        limit: u32,
        client: Option<Py<Client>>,
        session: Option<Py<Session>>,
        ttl: Option<f64>,
        lock_delay: Option<f64>,
        value: Option<Vec<u8>>,
        session_name: Option<String>,
    ) -> PyResult<Semaphore> {
        if limit == 0 {
            return Err(errors::invalid_config("a semaphore's limit must be at least 1"));
        }
        Ok(Semaphore { prefix, limit, source: Source::new(py, client, session, ttl, lock_delay, session_name)?, value })
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.prefix
    }

    #[getter]
    fn limit(&self) -> u32 {
        self.limit
    }

    #[pyo3(signature = (timeout, fail_hard=false))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>, fail_hard: bool) -> PyResult<Option<Held>> {
        let sem = self.make(py, timeout)?;
        let got = runtime::wait(py, async move { outcome(sem.hold().await, fail_hard) })?.py_err()?;
        Ok(got.map(|p| Held::new(Inner::Permit(p))))
    }

    #[pyo3(signature = (timeout, fail_hard=false))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        fail_hard: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sem = self.make(py, timeout)?;
        bridge::spawn(py, true, async move { outcome(sem.hold().await, fail_hard) }, |py, r, cancelled| {
            if cancelled {
                return Ok(py.None());
            }
            held_or_none(py, r.py_err()?.map(Inner::Permit))
        })
    }
}

/// An election's settings.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Election {
    key: String,
    source: Source,
}

impl Election {
    fn make(&self, py: Python<'_>) -> PyResult<consul_lock::Election> {
        Ok(match &self.source {
            Source::Own { client, ttl, lock_delay, session_name } => {
                let mut e = consul_lock::Election::new(self.key.clone()).client(client.get().get()?);
                if let Some(t) = ttl {
                    e = e.ttl(*t);
                }
                if let Some(d) = lock_delay {
                    e = e.lock_delay(*d);
                }
                if let Some(n) = session_name {
                    e = e.session_name(n.clone());
                }
                e
            }
            Source::Shared(sess) => sess.bind(py).get().shared()?.election(self.key.clone()),
        })
    }
}

fn leader_tuple(py: Python<'_>, l: Option<consul_lock::Leader>) -> PyResult<Py<PyAny>> {
    match l {
        Some(l) => Ok(PyTuple::new(
            py,
            [
                l.session_id.into_pyobject(py)?.into_any().unbind(),
                bytes(py, &l.value),
                l.term.into_pyobject(py)?.into_any().unbind(),
            ],
        )?
        .into_any()
        .unbind()),
        None => Ok(py.None()),
    }
}

#[pymethods]
impl Election {
    #[new]
    #[pyo3(signature = (key, *, client=None, session=None, ttl=None, lock_delay=None, session_name=None))]
    fn py_new(
        py: Python<'_>,
        key: String,
        client: Option<Py<Client>>,
        session: Option<Py<Session>>,
        ttl: Option<f64>,
        lock_delay: Option<f64>,
        session_name: Option<String>,
    ) -> PyResult<Election> {
        Ok(Election { key, source: Source::new(py, client, session, ttl, lock_delay, session_name)? })
    }

    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    #[pyo3(signature = (value, timeout, fail_hard=false))]
    fn campaign(
        &self,
        py: Python<'_>,
        value: Vec<u8>,
        timeout: Option<f64>,
        fail_hard: bool,
    ) -> PyResult<Option<Held>> {
        let e = self.make(py)?.acquire_timeout(runtime::duration("timeout", timeout)?);
        let got = runtime::wait(py, async move { outcome(e.campaign(value).await, fail_hard) })?.py_err()?;
        Ok(got.map(|l| Held::new(Inner::Leader(l))))
    }

    #[pyo3(signature = (value, timeout, fail_hard=false))]
    fn campaign_async<'py>(
        &self,
        py: Python<'py>,
        value: Vec<u8>,
        timeout: Option<f64>,
        fail_hard: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let e = self.make(py)?.acquire_timeout(runtime::duration("timeout", timeout)?);
        bridge::spawn(py, true, async move { outcome(e.campaign(value).await, fail_hard) }, |py, r, cancelled| {
            if cancelled {
                return Ok(py.None());
            }
            held_or_none(py, r.py_err()?.map(Inner::Leader))
        })
    }

    /// `(session_id, value, term)` of the leader, or `None`.
    fn leader(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let e = self.make(py)?;
        let l = runtime::wait(py, async move { e.leader().await })?.py_err()?;
        leader_tuple(py, l)
    }

    fn leader_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let e = self.make(py)?;
        bridge::spawn(py, true, async move { e.leader().await }, |py, l, _| leader_tuple(py, l.py_err()?))
    }

    fn observe(&self, py: Python<'_>) -> PyResult<Observer> {
        let watch = self.make(py)?.observe();
        Ok(Observer { watch: ManuallyDrop::new(Arc::new(tokio::sync::Mutex::new(watch))), pid: std::process::id() })
    }
}

/// The states of an election's leadership, one `next` at a time.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Observer {
    watch: ManuallyDrop<Arc<tokio::sync::Mutex<LeaderWatch>>>,
    pid: u32,
}

impl Drop for Observer {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.watch) }
        }
    }
}

async fn next_state(watch: Arc<tokio::sync::Mutex<LeaderWatch>>) -> consul_lock::Result<Option<consul_lock::Leader>> {
    watch.lock().await.next().await
}

#[pymethods]
impl Observer {
    /// The next state: the current one first, then each change. `None`: nobody leads.
    fn next(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        check_pid(self.pid, "election observer")?;
        let w = Arc::clone(&self.watch);
        let l = runtime::wait(py, next_state(w))?.py_err()?;
        leader_tuple(py, l)
    }

    fn next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        check_pid(self.pid, "election observer")?;
        let w = Arc::clone(&self.watch);
        bridge::spawn(py, true, next_state(w), |py, l, _| leader_tuple(py, l.py_err()?))
    }
}

/// One Consul session renewed for many locks.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Session {
    pub(crate) client: Py<Client>,
    session: std::sync::Mutex<Option<consul_lock::Session>>,
    id: String,
    pid: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        // In a forked child the session is the parent's: forget it, never destroy it from here.
        if self.pid != std::process::id() {
            if let Some(s) = self.session.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
                std::mem::forget(s);
            }
        }
    }
}

impl Session {
    pub(crate) fn shared(&self) -> PyResult<consul_lock::Session> {
        check_pid(self.pid, "session")?;
        match &*self.session.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(s) => Ok(s.clone()),
            None => Err(errors::not_held("this session was destroyed")),
        }
    }

    fn spec(client: &Client, ttl: f64, lock_delay: f64) -> PyResult<(consul_lock::Client, Duration, Duration)> {
        Ok((client.get()?, runtime::seconds("ttl", ttl)?, runtime::seconds("lock_delay", lock_delay)?))
    }

    fn made(client: Py<Client>, s: consul_lock::Session) -> Session {
        Session { client, id: s.id().to_owned(), session: std::sync::Mutex::new(Some(s)), pid: std::process::id() }
    }
}

#[pymethods]
impl Session {
    /// Create a session and start renewing it.
    #[staticmethod]
    #[pyo3(signature = (client, ttl, lock_delay))]
    fn create(py: Python<'_>, client: Py<Client>, ttl: f64, lock_delay: f64) -> PyResult<Session> {
        let (c, ttl, delay) = Session::spec(client.get(), ttl, lock_delay)?;
        let s =
            runtime::wait(py, async move { consul_lock::Session::with_lock_delay(c, ttl, delay).await })?.py_err()?;
        Ok(Session::made(client, s))
    }

    #[staticmethod]
    #[pyo3(signature = (client, ttl, lock_delay))]
    fn create_async(py: Python<'_>, client: Py<Client>, ttl: f64, lock_delay: f64) -> PyResult<Bound<'_, PyAny>> {
        let (c, ttl, delay) = Session::spec(client.get(), ttl, lock_delay)?;
        bridge::spawn(
            py,
            true,
            async move { consul_lock::Session::with_lock_delay(c, ttl, delay).await },
            move |py, r, cancelled| {
                if cancelled {
                    return Ok(py.None()); // dropping it destroys the session in the background
                }
                Ok(Py::new(py, Session::made(client, r.py_err()?))?.into_any())
            },
        )
    }

    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    #[getter]
    fn client(&self, py: Python<'_>) -> Py<Client> {
        self.client.clone_ref(py)
    }

    /// `False` once destroyed, known lost or past its lease deadline. No request.
    #[getter]
    fn alive(&self) -> PyResult<bool> {
        check_pid(self.pid, "session")?;
        Ok(self.session.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|s| s.is_alive()))
    }

    /// Destroy the session (every lock taken through it is released). Idempotent.
    fn destroy(&self, py: Python<'_>) -> PyResult<()> {
        check_pid(self.pid, "session")?;
        let Some(s) = self.session.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let task = runtime::rt()?.spawn(async move { s.destroy().await });
        runtime::wait(py, task)?
            .map_err(|e| errors::lock_error(&format!("destroying the session failed: {e}")))?
            .py_err()
    }

    fn destroy_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        check_pid(self.pid, "session")?;
        let s = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        bridge::spawn(
            py,
            false,
            async move {
                match s {
                    Some(s) => s.destroy().await,
                    None => Ok(()),
                }
            },
            |py, r, _| {
                r.py_err()?;
                Ok(py.None())
            },
        )
    }

    /// Wait until the session is lost (`True`) or `timeout` passes (`False`).
    #[pyo3(signature = (timeout=None))]
    fn wait_lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let s = self.shared()?;
        let limit = runtime::duration("timeout", timeout)?;
        runtime::wait(py, async move { tokio::time::timeout(limit, s.lost()).await.is_ok() })
    }

    fn __repr__(&self) -> String {
        format!("<Session {}>", self.id)
    }
}
