//! Python exceptions for the crate's errors. The classes live in `consul_lock._errors` (pure Python,
//! so they can have several bases: `NotAcquired` is also a `TimeoutError`); they are imported once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use consul_lock::Error;

fn raise(name: &'static str, message: &str, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let ty = import(py, name)?;
            let kwargs = PyDict::new(py);
            for (k, v) in attrs {
                kwargs.set_item(*k, v)?;
            }
            let value = ty.call((message,), Some(&kwargs))?;
            Ok(PyErr::from_value(value))
        })();
        made.unwrap_or_else(|e| e)
    })
}

fn import<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("consul_lock._errors").map(Bound::unbind))?;
    Ok(m.bind(py).getattr(name)?.cast_into()?)
}

fn s(py: Python<'_>, v: &str) -> Py<PyAny> {
    v.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None())
}

pub(crate) fn lock_error(message: &str) -> PyErr {
    raise("LockError", message, &[])
}

pub(crate) fn invalid_config(message: &str) -> PyErr {
    raise("InvalidConfig", message, &[])
}

pub(crate) fn not_held(message: &str) -> PyErr {
    raise("NotHeld", message, &[])
}

pub(crate) fn forked(what: &str) -> PyErr {
    raise(
        "ForkedProcessError",
        &format!(
            "this {what} was created in process {} and cannot be used in this forked child (pid {}): \
             it never renews, releases or deletes the parent's lock from here; create a new one in the \
             child, or start workers with multiprocessing's 'spawn' or 'forkserver' method",
            std::os::unix::process::parent_id(),
            std::process::id()
        ),
        &[],
    )
}

/// The Python exception for a crate error. Messages are the crate's (they never carry tokens).
pub(crate) fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    Python::attach(|py| match &e {
        Error::NotAcquired { key, waited, .. } => {
            let waited = waited.as_secs_f64().into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or(py.None());
            raise("NotAcquired", &message, &[("key", s(py, key)), ("waited", waited)])
        }
        Error::LockLost { key } => raise("LockLost", &message, &[("key", s(py, key))]),
        Error::Conflict { key, .. } => raise("Conflict", &message, &[("key", s(py, key))]),
        Error::LimitConflict { prefix, .. } => raise("Conflict", &message, &[("key", s(py, prefix))]),
        Error::AlreadyHeld => raise("AlreadyHeld", &message, &[]),
        Error::InvalidConfig(_) => raise("InvalidConfig", &message, &[]),
        Error::PermissionDenied { .. } => raise("PermissionDenied", &message, &[]),
        Error::Consul { status, .. } => {
            let status = (*status).into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or(py.None());
            raise("ConsulError", &message, &[("status", status)])
        }
        Error::Transport(_) => raise("TransportError", &message, &[]),
        Error::Decode { .. } => raise("DecodeError", &message, &[]),
        _ => raise("LockError", &message, &[]),
    })
}

/// `Result<T, Error>` → `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
