//! `Held`: a held lock, semaphore permit or leadership, shared by the Python objects that show it
//! (the guard of `with lock.hold()`, the `Lock` that acquired it). Releasing takes the Rust guard
//! out; waiters for loss wake up and let go of it first.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use consul_lock::{Leadership, LockGuard, SemaphorePermit};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::watch;

use crate::bridge;
use crate::errors::{self, IntoPy};
use crate::runtime::{self, check_pid};

pub(crate) enum Inner {
    Lock(LockGuard),
    Permit(SemaphorePermit),
    Leader(Leadership),
}

impl Inner {
    fn is_held(&self) -> bool {
        match self {
            Inner::Lock(g) => g.is_held(),
            Inner::Permit(p) => p.is_held(),
            Inner::Leader(l) => l.is_leader(),
        }
    }

    async fn lost(&self) {
        match self {
            Inner::Lock(g) => g.lost().await,
            Inner::Permit(p) => p.lost().await,
            Inner::Leader(l) => l.lost().await,
        }
    }

    async fn release(self) -> consul_lock::Result<()> {
        match self {
            Inner::Lock(g) => g.release().await,
            Inner::Permit(p) => p.release().await,
            Inner::Leader(l) => l.resign().await,
        }
    }
}

pub(crate) struct Slot {
    inner: Mutex<Option<Arc<Inner>>>,
    released: watch::Sender<bool>,
    kind: &'static str,
    key: String,
    session_id: String,
    token: u64,
    pid: u32,
}

/// Every slot of this process that may still hold something: released at interpreter exit.
static LIVE: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn current(&self) -> Option<Arc<Inner>> {
        lock(&self.inner).clone()
    }

    fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// Take the guard out (once) and release it.
    async fn release(self: Arc<Self>) -> consul_lock::Result<bool> {
        let Some(mut inner) = lock(&self.inner).take() else { return Ok(false) };
        self.released.send_replace(true);
        // Waiters for loss hold clones for a moment after the signal: wait for them (bounded).
        let mut tries = 0;
        let inner = loop {
            match Arc::try_unwrap(inner) {
                Ok(i) => break Some(i),
                Err(shared) if tries < 500 => {
                    inner = shared;
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Dropping the last clone releases in the background.
                Err(_) => break None,
            }
        };
        match inner {
            Some(i) => i.release().await.map(|()| true),
            None => Ok(true),
        }
    }

    /// Wait until lost (`true`) or released by us (`false`).
    async fn wait_lost(self: Arc<Self>) -> bool {
        let mut released = self.released.subscribe();
        let Some(inner) = self.current() else { return false };
        let lost = tokio::select! {
            () = inner.lost() => true,
            _ = released.wait_for(|r| *r) => false,
        };
        drop(inner);
        lost && !self.is_released()
    }
}

/// Release every live hold of this process, all at once, within `limit`. For the exit pass.
pub(crate) async fn release_all(limit: Duration) {
    let pid = std::process::id();
    let slots: Vec<Arc<Slot>> = lock(&LIVE).drain(..).filter_map(|w| w.upgrade()).filter(|s| s.pid == pid).collect();
    let tasks: Vec<_> = slots.into_iter().map(|s| tokio::spawn(s.release())).collect();
    let _ = tokio::time::timeout(limit, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
}

/// A held lock, permit or leadership (see the Python `Guard`, `Permit` and `Leadership`).
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Held {
    slot: ManuallyDrop<Arc<Slot>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // In a forked child the guard is the parent's: never release, renew or delete from here.
        if self.slot.pid == std::process::id() {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.slot) }
        }
    }
}

impl Held {
    pub(crate) fn new(inner: Inner) -> Held {
        let (kind, key, session_id, token) = match &inner {
            Inner::Lock(g) => ("lock", g.key().to_owned(), g.session_id().to_owned(), g.fencing_token()),
            Inner::Permit(p) => ("semaphore permit", p.prefix().to_owned(), p.session_id().to_owned(), p.token()),
            Inner::Leader(l) => ("leadership", l.key().to_owned(), l.session_id().to_owned(), l.term()),
        };
        let slot = Arc::new(Slot {
            inner: Mutex::new(Some(Arc::new(inner))),
            released: watch::Sender::new(false),
            kind,
            key,
            session_id,
            token,
            pid: std::process::id(),
        });
        let mut live = lock(&LIVE);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&slot));
        drop(live);
        Held { slot: ManuallyDrop::new(slot) }
    }

    fn check(&self) -> PyResult<()> {
        check_pid(self.slot.pid, self.slot.kind)
    }

    fn leadership(&self) -> PyResult<Arc<Inner>> {
        match self.slot.current() {
            Some(i) if matches!(*i, Inner::Leader(_)) => Ok(i),
            Some(_) => Err(errors::lock_error("only a leadership can proclaim")),
            None => Err(errors::not_held("this leadership was resigned")),
        }
    }
}

async fn proclaim(inner: Arc<Inner>, value: Vec<u8>) -> consul_lock::Result<()> {
    match &*inner {
        Inner::Leader(l) => l.proclaim(value).await,
        _ => Ok(()),
    }
}

#[pymethods]
impl Held {
    /// The locked key (the semaphore's prefix for a permit).
    #[getter]
    fn key(&self) -> &str {
        &self.slot.key
    }

    /// The Consul session that holds it.
    #[getter]
    fn session_id(&self) -> &str {
        &self.slot.session_id
    }

    /// The fencing token (a leadership's term).
    #[getter]
    fn token(&self) -> u64 {
        self.slot.token
    }

    /// `True` until released or known lost. No request.
    #[getter]
    fn held(&self) -> PyResult<bool> {
        self.check()?;
        Ok(self.slot.current().is_some_and(|i| i.is_held()))
    }

    /// `True` once known lost while not released by us. No request.
    #[getter]
    fn lost(&self) -> PyResult<bool> {
        self.check()?;
        Ok(self.slot.current().is_some_and(|i| !i.is_held()))
    }

    /// `True` once released by us.
    #[getter]
    fn released(&self) -> bool {
        self.slot.is_released()
    }

    /// Release; `True` if this call released it, `False` if it was released already.
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        self.check()?;
        // Spawned: a Ctrl-C during the release stops our wait, never the release itself.
        let slot = Arc::clone(&self.slot);
        let rt = runtime::rt()?;
        let task = rt.spawn(slot.release());
        runtime::wait(py, task)?.map_err(|e| errors::lock_error(&format!("the release task failed: {e}")))?.py_err()
    }

    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check()?;
        let slot = Arc::clone(&self.slot);
        bridge::spawn(py, false, slot.release(), |py, r, _| {
            Ok(r.py_err()?.into_pyobject(py)?.to_owned().into_any().unbind())
        })
    }

    /// Wait until the lock is known lost (`True`), released (`False`) or `timeout` seconds pass
    /// (`False`); `None` waits as long as it takes. Starts the key watch.
    #[pyo3(signature = (timeout=None))]
    fn wait_lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.check()?;
        let limit = runtime::duration("timeout", timeout)?;
        let slot = Arc::clone(&self.slot);
        runtime::wait(py, async move {
            // Timed out: not lost (as far as we know).
            tokio::time::timeout(limit, slot.wait_lost()).await.unwrap_or(false)
        })
    }

    fn wait_lost_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check()?;
        let slot = Arc::clone(&self.slot);
        bridge::spawn(py, true, slot.wait_lost(), |py, lost, _| {
            Ok(lost.into_pyobject(py)?.to_owned().into_any().unbind())
        })
    }

    /// A leadership only: publish a new value under the election key.
    fn proclaim(&self, py: Python<'_>, value: Vec<u8>) -> PyResult<()> {
        self.check()?;
        let inner = self.leadership()?;
        runtime::wait(py, proclaim(inner, value))?.py_err()
    }

    fn proclaim_async<'py>(&self, py: Python<'py>, value: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        self.check()?;
        let inner = self.leadership()?;
        bridge::spawn(py, true, proclaim(inner, value), |py, r, _| {
            r.py_err()?;
            Ok(py.None())
        })
    }

    fn __repr__(&self) -> String {
        let state = if self.slot.is_released() {
            "released"
        } else if self.slot.pid != std::process::id() {
            "inherited from the parent process"
        } else if self.slot.current().is_some_and(|i| i.is_held()) {
            "held"
        } else {
            "lost"
        };
        format!("<Held {} {:?} token={} {}>", self.slot.kind, self.slot.key, self.slot.token, state)
    }
}

/// Bytes for Python.
pub(crate) fn bytes(py: Python<'_>, v: &[u8]) -> Py<PyAny> {
    PyBytes::new(py, v).into_any().unbind()
}
