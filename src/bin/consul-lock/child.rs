//! The command run under the lock: spawned with the lock's details in its environment, sent the
//! signals `consul-lock` receives, and stopped (SIGTERM, then SIGKILL) if the lock is lost.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use consul_lock::LockGuard;

use crate::exit::{self, Failure};
use crate::signals::{self, Caught};

/// How the command ended.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    /// The lock was known lost before the command ended (it was sent SIGTERM).
    pub(crate) stopped_for_lost_lock: bool,
}

/// The exit code for a command's status: its own code, or 128+N when killed by signal N.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Run `argv` while `guard` holds the lock, until it exits.
pub(crate) async fn run(
    guard: &LockGuard,
    argv: &[String],
    kill_after: Duration,
    signals: &mut UnboundedReceiver<Caught>,
) -> Result<Ended, Failure> {
    let (program, args) = argv.split_first().ok_or_else(|| Failure::new(exit::ERROR, "no command given"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("CONSUL_LOCK_KEY", guard.key())
        .env("CONSUL_LOCK_SESSION", guard.session_id())
        .env("CONSUL_LOCK_FENCING_TOKEN", guard.fencing_token().to_string())
        .env("CONSUL_LOCK_HELD", "true") // as `consul lock` sets it
        .kill_on_drop(false);
    stop_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { exit::NOT_FOUND } else { exit::NOT_EXECUTABLE };
        Failure::new(code, format!("cannot run {program:?}: {e}")).hint("check the command's path and permissions")
    })?;
    // While `child.wait()` has not returned the child is not reaped, so its pid cannot be reused.
    let pid = child.id().ok_or_else(|| Failure::new(exit::RUN_FAILED, "the command exited before it started"))?;
    tracing::debug!(pid, "command started");

    let lost = guard.lost();
    tokio::pin!(lost);
    let mut lost_seen = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Failure::new(exit::RUN_FAILED, format!("waiting for the command: {e}")))?;
                return Ok(Ended { status, stopped_for_lost_lock: lost_seen });
            }
            _ = &mut lost, if !lost_seen => {
                lost_seen = true;
                say_err!(
                    "consul-lock: the lock on {:?} was lost (session expired or destroyed); stopping the command: \
                     SIGTERM now, SIGKILL in {}",
                    guard.key(),
                    crate::timefmt::short(kill_after)
                );
                send(pid, libc::SIGTERM);
                kill_at = Some(Instant::now() + kill_after);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                say_err!("consul-lock: the command is still running {} after SIGTERM: SIGKILL", crate::timefmt::short(kill_after));
                send(pid, libc::SIGKILL);
                kill_at = None;
            }
            Some(sig) = signals.recv() => {
                // Ctrl-C on a terminal reaches the whole foreground process group, the command included:
                // forwarding it too would deliver it twice.
                if sig.from_kernel && sig.signo == libc::SIGINT {
                    tracing::debug!("SIGINT from the terminal: the command received it directly");
                } else {
                    tracing::debug!(signal = sig.signo, pid, "forwarding");
                    send(pid, sig.signo);
                }
            }
        }
    }
}

fn send(pid: u32, signo: i32) {
    if let Err(e) = signals::kill(pid, signo) {
        tracing::warn!(pid, signal = %signals::name(signo), error = %e, "could not signal the command");
    }
}

/// Linux: if consul-lock dies without a chance to stop the command (SIGKILL, OOM), the kernel sends the
/// command SIGTERM — it must not run on without the lock. (The runtime is single-threaded, so the
/// spawning thread, whose death is what the kernel watches, lives as long as the process.)
#[cfg(any(target_os = "linux", target_os = "android"))]
fn stop_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: only async-signal-safe calls (getpid-family and prctl) between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died between fork and prctl.
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn stop_with_parent(_cmd: &mut tokio::process::Command) {}
