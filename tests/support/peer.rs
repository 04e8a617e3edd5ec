//! HashiCorp's Go client as a peer: `consul lock` processes (the `consul` binary the dev agent runs
//! is the Go client too), and `consul-lock` processes beside them, each in its own process group so
//! that a SIGKILL reaches its command too.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::consul;

/// Spawn `c` in its own process group, pointed at the dev agent, stderr piped.
pub fn spawn_peer(mut c: Command) -> Child {
    for v in ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("CONSUL_HTTP_ADDR", consul().http_addr()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c.process_group(0);
    c.spawn().unwrap_or_else(|e| panic!("cannot start a peer process: {e}"))
}

/// `consul lock -n N PREFIX SCRIPT` (Go runs SCRIPT with a shell).
pub fn go_lock(n: u32, prefix: &str, script: &str) -> Child {
    let mut c = Command::new(consul().binary());
    c.args(["lock", &format!("-n={n}"), prefix, script]);
    spawn_peer(c)
}

/// `consul-lock run --limit N PREFIX -- sh -c SCRIPT`.
pub fn our_run(bin: &Path, n: u32, prefix: &str, script: &str) -> Child {
    let mut c = Command::new(bin);
    c.args(["run", "--limit", &n.to_string(), "--lock-delay", "0s", prefix, "--", "sh", "-c", script]);
    spawn_peer(c)
}

/// SIGKILL a peer's whole process group (the client and its command).
pub fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group of a child we spawned in its own group.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

/// A peer's stderr, once it has exited.
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// The sh snippet that records `enter ID NS` / `exit ID NS` lines into `log` around a pause.
pub fn section_script(log: &Path, id: &str, pause_s: &str) -> String {
    let log = log.display();
    format!(
        "echo \"enter {id}-$$ $(date +%s%N)\" >> {log}; sleep {pause_s}; echo \"exit {id}-$$ $(date +%s%N)\" >> {log}"
    )
}

/// The (enter, exit) pairs of a log written by [`section_script`] (and library holders).
pub fn sections(log: &Path) -> Vec<(String, u128, u128)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, id, ns] = f[..] else { panic!("bad log line {line:?}") };
        let ns: u128 = ns.parse().unwrap();
        match what {
            "enter" => {
                open.insert(id.to_owned(), ns);
            }
            "exit" => {
                let enter = open.remove(id).unwrap_or_else(|| panic!("exit without enter: {line}"));
                out.push((id.to_owned(), enter, ns));
            }
            _ => panic!("bad log line {line:?}"),
        }
    }
    assert!(open.is_empty(), "sections entered and never left: {open:?}");
    out
}
