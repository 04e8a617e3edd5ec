//! Agents whose HTTP API is a unix socket (`addresses { http = "unix://…" }`): a lock cycle through
//! the library, the CLI's `status` and `run` through `CONSUL_HTTP_ADDR` and `--http-addr`, and the
//! errors for a missing socket and for a socket this user may not open.
#![cfg(all(unix, feature = "test-util", feature = "cli"))]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use consul_lock::testing::ConsulDev;
use consul_lock::{Client, EphemeralLock};

/// Exit code of `status` for a held key, and for an error.
const HELD: i32 = 1;
const ERROR: i32 = 2;

fn socket_agent() -> &'static ConsulDev {
    static AGENT: OnceLock<ConsulDev> = OnceLock::new();
    AGENT.get_or_init(|| {
        ConsulDev::start_on_socket(&[]).unwrap_or_else(|e| panic!("cannot start a Consul dev agent on a socket: {e}"))
    })
}

fn key(name: &str) -> String {
    format!("test/unix/{name}/{}", std::process::id())
}

/// The CLI with only `CONSUL_HTTP_ADDR` set among Consul's variables.
fn cli(addr: &str) -> Command {
    cli_from(Path::new(env!("CARGO_BIN_EXE_consul-lock")), addr)
}

fn cli_from(bin: &Path, addr: &str) -> Command {
    let mut c = Command::new(bin);
    for v in ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("CONSUL_HTTP_ADDR", addr).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn output(mut c: Command) -> Output {
    // A freshly copied binary is "busy" (ETXTBSY) while a child forked by another test thread still
    // holds the copy's write descriptor, until that child execs: retry briefly.
    for _ in 0..50 {
        match c.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(100)),
            r => return r.expect("run consul-lock"),
        }
    }
    c.output().expect("run consul-lock")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_lock_cycle_over_the_socket() {
    let agent = socket_agent();
    assert!(agent.http_addr().starts_with("unix://"), "{}", agent.http_addr());
    let client = Client::builder().address(agent.http_addr()).build().unwrap();
    assert_eq!(client.address(), agent.http_addr());
    let k = key("cycle");
    let guard = EphemeralLock::new(&k).client(client.clone()).hold().await.unwrap();
    let holder = client.holder(&k).await.unwrap().expect("held");
    assert_eq!(holder.session_id, guard.session_id());
    let mut other = EphemeralLock::new(&k).client(client.clone()).acquire_timeout(Duration::ZERO);
    assert!(!other.acquire(false).await.unwrap(), "a second holder got the key");
    guard.release().await.unwrap();
    assert!(client.holder(&k).await.unwrap().is_none(), "released key still held");
    assert!(other.acquire(false).await.unwrap(), "free key not acquired");
    other.release().await.unwrap();
}

#[test]
fn cli_status_and_run_over_the_socket() {
    let agent = socket_agent();
    let k = key("cli");
    // run (address from --http-addr; the environment's is wrong) holds the key while its command
    // asks status (address from CONSUL_HTTP_ADDR).
    let mut run = cli("127.0.0.1:1");
    run.args(["--http-addr", agent.http_addr(), "run", "-n", &k, "--", "env"]);
    run.arg(format!("CONSUL_HTTP_ADDR={}", agent.http_addr()));
    run.args([env!("CARGO_BIN_EXE_consul-lock"), "status", &k, "--json"]);
    let out = output(run);
    let stdout = text(&out.stdout);
    // status exits 1 for a held key, and run passes the command's code through.
    assert_eq!(out.status.code(), Some(HELD), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("status --json output");
    assert_eq!(report["held"], true, "{report}");
    // Released: free again.
    let mut status = cli(agent.http_addr());
    status.args(["status", &k]);
    let out = output(status);
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("consul-lock-missing-{}.sock", std::process::id()));
    let mut status = cli(&format!("unix://{}", path.display()));
    status.args(["status", "k"]);
    let out = output(status);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(ERROR), "{stderr}");
    assert!(stderr.contains(&format!("unix://{}", path.display())), "{stderr}");
    assert!(stderr.contains("no socket at this path"), "{stderr}");
}

/// A socket with mode 0000 (set by the agent's own `unix_sockets` setting): its owner may not open it,
/// and neither may anyone else but root, who ignores file modes. So when this runs as root, the
/// CLI runs as user `nobody` (65534), to whom a root-owned socket with mode 0000 is closed.
#[test]
fn a_socket_this_user_may_not_open_is_a_clear_error() {
    let agent = ConsulDev::start_on_socket(&["-hcl", r#"unix_sockets { mode = "0000" }"#])
        .unwrap_or_else(|e| panic!("cannot start a Consul dev agent on a socket: {e}"));
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root: it runs the client as another user");
    // A copy of the binary that user can run whatever the checkout's permissions (e.g. under /root).
    let dir = std::env::temp_dir().join(format!("consul-lock-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("consul-lock");
    std::fs::copy(env!("CARGO_BIN_EXE_consul-lock"), &bin).unwrap();
    for p in [&dir, &bin] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut status = cli_from(&bin, agent.http_addr());
    status.args(["status", "k"]).uid(65534).gid(65534).current_dir("/");
    let out = output(status);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(ERROR), "{stderr}");
    assert!(stderr.contains("permission denied on the socket"), "{stderr}");
    assert!(stderr.contains(agent.http_addr()), "{stderr}");
}
