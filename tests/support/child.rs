//! Child processes for tests that need several OS processes (contention, kill -9, SIGSTOP): the
//! test binary re-runs itself with `--exact <name> --ignored`, so the child is an `#[ignore]`d test
//! function of the same file, configured through environment variables.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start this test binary's ignored test `name` as a child process, with `env` set. Its stdout is
/// piped (children report with lines starting `@@ `), stderr inherited.
pub fn spawn_self(name: &str, env: &[(String, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's own path");
    Command::new(exe)
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads", "1", "-q"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start a child process of the test binary: {e}"))
}

/// Wait for `child` up to `limit`; kill it (and fail) past that.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on a child") {
            return status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process {} still running after {limit:?}: killed", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send a signal to a child process (SIGKILL, SIGSTOP, SIGCONT).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned; no memory is shared.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
}

/// Read `@@ `-prefixed report lines from a child's stdout on a thread; received in order.
pub fn report_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("child stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(r) = line.strip_prefix("@@ ") {
                if tx.send(r.to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The next report line within `limit`, or a panic naming `what`.
pub fn next_report(rx: &std::sync::mpsc::Receiver<String>, limit: Duration, what: &str) -> String {
    rx.recv_timeout(limit).unwrap_or_else(|e| panic!("no `{what}` report from the child within {limit:?}: {e}"))
}
