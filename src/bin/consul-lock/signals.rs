//! SIGINT, SIGTERM and SIGHUP for `run`: caught by a handler that only writes the signal number (and
//! whether the kernel sent it, e.g. a terminal's Ctrl-C) into a pipe; a thread turns the pipe into a
//! channel the async code selects on. Handlers reset to the default in the child on exec.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::sync::mpsc;

/// The signals `run` catches (and forwards to the command).
pub(crate) const CAUGHT: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// One caught signal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caught {
    pub(crate) signo: i32,
    /// Sent by the kernel rather than by `kill`: a terminal's Ctrl-C / hang-up, which the kernel sends
    /// to the whole foreground process group, so the command (in our group) received it too.
    pub(crate) from_kernel: bool,
}

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only async-signal-safe calls here: read siginfo, write(2), and keep errno as it was.
    let saved = errno::get();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: the kernel passes a valid siginfo_t for handlers installed with SA_SIGINFO.
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let from_kernel = {
        let _ = info;
        false
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&signo.to_ne_bytes());
    msg[4..].copy_from_slice(&i32::from(from_kernel).to_ne_bytes());
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: writing 8 bytes from a live stack buffer to a non-blocking pipe; atomic (< PIPE_BUF).
        unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
    }
    errno::set(saved);
}

/// Install the handlers (once per process) and return the channel of caught signals.
pub(crate) fn install() -> io::Result<mpsc::UnboundedReceiver<Caught>> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    for fd in fds {
        // SAFETY: plain fcntl calls on descriptors we own; keep them out of the command (CLOEXEC).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: as above; the handler must never block on a full pipe.
    unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::fcntl(write_fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    PIPE_WRITE.store(write_fd, Ordering::SeqCst);

    for sig in CAUGHT {
        // SAFETY: a zeroed sigaction is valid; we set the handler, an empty mask and SA_SIGINFO.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }

    let (tx, rx) = mpsc::unbounded_channel();
    // SAFETY: `read_fd` is a fresh descriptor owned by nothing else; the File takes it over.
    let mut pipe = unsafe { File::from_raw_fd(read_fd) };
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut buf = [0u8; 8];
        while pipe.read_exact(&mut buf).is_ok() {
            let signo = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let from_kernel = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) != 0;
            if tx.send(Caught { signo, from_kernel }).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}

/// Send `signo` to process `pid`.
pub(crate) fn kill(pid: u32, signo: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) with a positive pid of our own, not yet reaped, child.
    if unsafe { libc::kill(pid, signo) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal's name, for messages (`SIGTERM`).
pub(crate) fn name(signo: i32) -> String {
    match signo {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", target_os = "ios", target_os = "freebsd"))]
mod errno {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn location() -> *mut libc::c_int {
        // SAFETY: returns the calling thread's errno slot.
        unsafe { libc::__errno_location() }
    }

    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    fn location() -> *mut libc::c_int {
        // SAFETY: returns the calling thread's errno slot.
        unsafe { libc::__error() }
    }

    pub(super) fn get() -> libc::c_int {
        // SAFETY: the pointer is the thread's valid errno slot.
        unsafe { *location() }
    }

    pub(super) fn set(v: libc::c_int) {
        // SAFETY: as above.
        unsafe { *location() = v }
    }
}

/// Elsewhere errno is not reachable portably; the handler then does not preserve it.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
)))]
mod errno {
    pub(super) fn get() -> libc::c_int {
        0
    }

    pub(super) fn set(_: libc::c_int) {}
}
