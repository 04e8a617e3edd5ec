//! The one tokio runtime of the process, created on first use and created anew in a forked child;
//! the blocking wait (GIL released, Ctrl-C checked every slice) and the process checks every
//! object makes after `os.fork()`.

use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors;

/// How long a blocking wait runs between two checks for signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

struct Slot {
    pid: u32,
    rt: Runtime,
}

/// The runtime of the process whose PID it records. Swapped (never freed: the parent's runtime in
/// a forked child has no threads, and dropping it would touch them) when the PID changes.
static SLOT: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());

/// When a wait was last given up (Ctrl-C, a cancelled asyncio task), in ms since `EPOCH`: the exit
/// pass lets the library's cleanup of that wait finish.
static LAST_ABORT_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn note_abort() {
    let ms = epoch().elapsed().as_millis() as u64;
    LAST_ABORT_MS.store(ms.max(1), Ordering::Relaxed);
}

/// Time since the last given-up wait, if any.
pub(crate) fn since_last_abort() -> Option<Duration> {
    match LAST_ABORT_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(epoch().elapsed().saturating_sub(Duration::from_millis(ms))),
    }
}

fn build() -> PyResult<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("consul-lock")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| errors::lock_error(&format!("cannot start the consul_lock runtime: {e}")))
}

/// The runtime of this process, built on first use (and in a forked child, on its first use there).
pub(crate) fn rt() -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    loop {
        let cur = SLOT.load(Ordering::Acquire);
        if !cur.is_null() {
            // SAFETY: a pointer stored in SLOT comes from Box::into_raw and is never freed.
            let slot = unsafe { &*cur };
            if slot.pid == pid {
                return Ok(&slot.rt);
            }
        }
        let new = Box::into_raw(Box::new(Slot { pid, rt: build()? }));
        match SLOT.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            // The previous slot (another process's runtime) is left as it is: never freed.
            // SAFETY: `new` was just stored and is never freed.
            Ok(_) => return Ok(unsafe { &(*new).rt }),
            Err(_) => {
                // Another thread installed one first: shut ours down and use theirs.
                // SAFETY: `new` was not published; we own it.
                let mine = unsafe { Box::from_raw(new) };
                mine.rt.shutdown_background();
            }
        }
    }
}

/// This process's runtime if it has been built (no building at exit).
pub(crate) fn existing_rt() -> Option<&'static Runtime> {
    let cur = SLOT.load(Ordering::Acquire);
    if cur.is_null() {
        return None;
    }
    // SAFETY: as in `rt`.
    let slot = unsafe { &*cur };
    (slot.pid == std::process::id()).then_some(&slot.rt)
}

/// Run `fut` on the runtime and wait for it with the GIL released, checking for signals every
/// slice: Ctrl-C raises `KeyboardInterrupt` and drops the future (the library's futures leave
/// nothing behind when dropped).
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let rt = rt()?;
    let mut task = rt.spawn(fut);
    loop {
        let slice = py.detach(|| rt.block_on(async { tokio::time::timeout(SLICE, &mut task).await }));
        match slice {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_panic() => {
                return Err(errors::lock_error(&format!("internal error (a panic in consul_lock): {e}")))
            }
            Ok(Err(_)) => return Err(errors::lock_error("the operation was stopped before it finished")),
            Err(_elapsed) => {
                if let Err(e) = py.check_signals() {
                    task.abort();
                    note_abort();
                    return Err(e);
                }
            }
        }
    }
}

/// `timeout` in seconds from Python: `None` waits forever; negative, NaN or infinite values are
/// refused (the Python layer maps threading's `-1` to `None` first).
pub(crate) fn duration(what: &str, secs: Option<f64>) -> PyResult<Duration> {
    match secs {
        None => Ok(Duration::MAX),
        Some(s) => seconds(what, s),
    }
}

/// A finite, non-negative number of seconds.
pub(crate) fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if !s.is_finite() || s < 0.0 {
        return Err(errors::invalid_config(&format!("{what} must be a finite number of seconds >= 0, got {s}")));
    }
    Duration::try_from_secs_f64(s).map_err(|e| errors::invalid_config(&format!("{what}: {e}")))
}

/// Raise the fork error when an object made in another process is used here.
pub(crate) fn check_pid(pid: u32, what: &str) -> PyResult<()> {
    if pid == std::process::id() {
        Ok(())
    } else {
        Err(errors::forked(what))
    }
}
