//! asyncio: a Rust future run on our runtime behind an `asyncio.Future` of the running loop.
//!
//! The result is delivered on the loop's thread (`call_soon_threadsafe`), where `finish` decides
//! what it becomes: if the asyncio future was cancelled meanwhile, `finish` is told so and drops what
//! it got (an acquired lock is then released in the background), so a cancelled acquire never leaves
//! a lock held. Cancelling the asyncio future aborts the Rust future when `cancellable`; a release
//! is spawned with `cancellable = false`, so cancelling its caller never stops it.

use std::future::Future;
use std::sync::Mutex;

use pyo3::prelude::*;
use tokio::task::AbortHandle;

use crate::runtime;

type Job = Box<dyn FnOnce(Python<'_>, bool) -> PyResult<Py<PyAny>> + Send>;

/// Delivers the result on the loop's thread.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Completer {
    fut: Py<PyAny>,
    job: Mutex<Option<Job>>,
}

#[pymethods]
impl Completer {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(job) = self.job.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let fut = self.fut.bind(py);
        if fut.call_method0("done")?.extract::<bool>()? {
            // Cancelled while the result was on its way: let `finish` undo it.
            let _ = job(py, true);
            return Ok(());
        }
        match job(py, false) {
            Ok(v) => fut.call_method1("set_result", (v,))?,
            Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
        };
        Ok(())
    }
}

/// Aborts the Rust task when the asyncio future is cancelled.
#[pyclass(frozen, module = "consul_lock._native")]
pub(crate) struct Canceller {
    abort: AbortHandle,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.extract::<bool>()? {
            self.abort.abort();
            runtime::note_abort();
        }
        Ok(())
    }
}

/// Run `fut`; return an `asyncio.Future` that gets `finish(py, output, cancelled = false)`.
pub(crate) fn spawn<'py, T, F, C>(py: Python<'py>, cancellable: bool, fut: F, finish: C) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
    C: FnOnce(Python<'_>, T, bool) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_fut = event_loop.call_method0("create_future")?;
    let rt = runtime::rt()?;
    let loop_ref = event_loop.unbind();
    let fut_ref = py_fut.clone().unbind();
    let task = rt.spawn(async move {
        let out = fut.await;
        // Never attach to the interpreter on a runtime worker: deliver from a blocking thread.
        let _ = tokio::task::spawn_blocking(move || {
            Python::try_attach(|py| {
                let job: Job = Box::new(move |py, cancelled| finish(py, out, cancelled));
                let completer = Completer { fut: fut_ref, job: Mutex::new(Some(job)) };
                // A closed loop refuses: the completer (and the output) is dropped here, which
                // releases whatever was acquired in the background.
                let _ = loop_ref.bind(py).call_method1("call_soon_threadsafe", (completer,));
            });
        })
        .await;
    });
    if cancellable {
        py_fut.call_method1("add_done_callback", (Canceller { abort: task.abort_handle() },))?;
    }
    Ok(py_fut)
}
