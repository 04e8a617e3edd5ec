//! `consul_lock._native`: the Rust core of the Python package `consul_lock` (see `python/README.md`
//! and the pure-Python package in `python/pysrc/consul_lock/`, which is the public API).
//!
//! Everything runs on one tokio runtime per process ([`runtime`]); blocking calls wait with the GIL
//! released and check for Ctrl-C every 100 ms; asyncio calls return `asyncio.Future`s ([`bridge`]).
//! Objects remember the process that made them and refuse to work in a forked child, where their
//! drop does nothing (the parent's locks are never touched from the child).

mod bridge;
mod client;
mod errors;
mod held;
mod primitives;
mod runtime;

use std::time::Duration;

use pyo3::prelude::*;

/// The exit pass: release every lock, permit and leadership still held by this process, within
/// `timeout` seconds; then give the cleanup of waits given up shortly before a moment to finish.
#[pyfunction]
#[pyo3(signature = (timeout=2.0))]
fn _at_exit(py: Python<'_>, timeout: f64) -> PyResult<()> {
    let Some(rt) = runtime::existing_rt() else { return Ok(()) };
    let limit = runtime::seconds("timeout", timeout)?;
    py.detach(|| {
        rt.block_on(async move {
            let started = tokio::time::Instant::now();
            held::release_all(limit).await;
            // A wait given up (Ctrl-C, a cancelled task) is cleaned up by the library in the
            // background within a few requests: let that finish, within the bound.
            let settle = Duration::from_millis(300);
            if let Some(ago) = runtime::since_last_abort() {
                if ago < settle {
                    let left = limit.saturating_sub(started.elapsed());
                    tokio::time::sleep((settle - ago).min(left)).await;
                }
            }
        })
    });
    Ok(())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<held::Held>()?;
    m.add_class::<primitives::Lock>()?;
    m.add_class::<primitives::Semaphore>()?;
    m.add_class::<primitives::Election>()?;
    m.add_class::<primitives::Observer>()?;
    m.add_class::<primitives::Session>()?;
    m.add_function(wrap_pyfunction!(_at_exit, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
