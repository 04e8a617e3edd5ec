//! Test support (feature `test-util`): a throwaway `consul agent -dev` on free loopback ports.
//!
//! ```no_run
//! # async fn demo() {
//! let consul = consul_lock::testing::ConsulDev::start().expect("consul dev agent");
//! let guard = consul_lock::EphemeralLock::new("k").client(consul.client()).hold().await.unwrap();
//! guard.release().await.unwrap();
//! # }
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::consul::client::Client;

const START_TIMEOUT: Duration = Duration::from_secs(45);

/// A `consul agent -dev` child process, killed on drop — and with the process that started it,
/// however that process ends (a panic, `exit`, SIGKILL), even when the value is never dropped (kept
/// in a `static`, leaked, forgotten).
///
/// Each agent has a watchdog: a small `sh` whose standard input is a pipe whose only writer is the
/// starting process. When that process ends, the kernel closes the pipe; the watchdog reads
/// end-of-file, stops the agent (SIGTERM, then SIGKILL after 2 s) and removes its directory. It
/// first checks that the process id is still this agent's (its command line names the agent's
/// unique node name), so a recycled process id is never signalled.
///
/// The binary is taken from `CONSUL_BIN`, then `PATH`, then `.consul/bin/consul` in this crate's
/// directory (where `scripts/install-consul.sh` installs it).
#[derive(Debug)]
pub struct ConsulDev {
    child: Child,
    /// The watchdog; its stdin (held here) is the pipe whose end-of-file stops the agent.
    watchdog: Child,
    http_addr: String,
    dir: PathBuf,
    binary: PathBuf,
}

impl ConsulDev {
    /// Start an agent and wait until it has a leader and can create sessions (a fresh dev agent
    /// briefly answers "Missing node registration").
    ///
    /// # Errors
    /// An error with an actionable message when no binary is found or the agent does not come up
    /// (its log's tail included).
    pub fn start() -> std::io::Result<ConsulDev> {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with extra agent arguments (for example `-hcl` snippets).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_args(extra: &[&str]) -> std::io::Result<ConsulDev> {
        Self::start_with_token(extra, None)
    }

    /// Like [`start_with_args`](Self::start_with_args) for an agent with ACLs enabled: its readiness
    /// probe sends `probe_token` (for example the `master` token set in the `-hcl` ACL config).
    /// The token is used for the probe only; [`client`](Self::client) still sends none.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_token(extra: &[&str], probe_token: Option<&str>) -> std::io::Result<ConsulDev> {
        Self::start_listening(extra, probe_token, false)
    }

    /// Like [`start_with_args`](Self::start_with_args), with the HTTP API on a unix socket in the
    /// agent's directory instead of a TCP port: [`http_addr`](Self::http_addr) is then
    /// `unix:///…/http.sock`. Pass `-hcl 'unix_sockets { mode = "0600" }'` and the like in `extra`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn start_on_socket(extra: &[&str]) -> std::io::Result<ConsulDev> {
        Self::start_listening(extra, None, true)
    }

    fn start_listening(extra: &[&str], probe_token: Option<&str>, unix: bool) -> std::io::Result<ConsulDev> {
        let binary = find_binary()?;
        let mut last_err = None;
        // A free port can be taken between probing and binding: try a few times.
        for _ in 0..3 {
            match Self::try_start(&binary, extra, probe_token, unix) {
                Ok(dev) => return Ok(dev),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| other("consul agent did not start")))
    }

    fn try_start(binary: &Path, extra: &[&str], token: Option<&str>, unix: bool) -> std::io::Result<ConsulDev> {
        // The directory's name is unique in this process by a counter, not by the HTTP port: an agent
        // on a unix socket never binds that port, so two of them can be given the same one, and then
        // the first to stop removed the other's socket with its directory.
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let ports = free_ports(4)?;
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("consul-lock-dev-{}-{n}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join("consul.log");
        let log = std::fs::File::create(&log_path)?;
        let p = |i: usize| ports[i].to_string();
        let socket = format!("unix://{}", dir.join("http.sock").display());
        let http_addr = if unix { socket.clone() } else { format!("127.0.0.1:{}", ports[0]) };
        let socket_hcl = format!("addresses {{ http = \"{socket}\" }}");
        let listen: &[&str] = if unix { &["-hcl", &socket_hcl] } else { &[] };
        let node = format!("consul-lock-test-{}", ports[0]);
        let mut cmd = Command::new(binary);
        cmd.args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"])
            .args(["-http-port", &p(0), "-serf-lan-port", &p(1), "-serf-wan-port", &p(2), "-server-port", &p(3)])
            .args(["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn"])
            .args(["-node", &node])
            .args(listen)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn().map_err(|e| other(&format!("cannot run {}: {e}", binary.display())))?;
        let watchdog = match watchdog(child.id(), &node, &dir) {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(other(&format!(
                    "cannot start the watchdog that stops the Consul agent with this process: {e}"
                )));
            }
        };
        let mut dev = ConsulDev { child, watchdog, http_addr, dir, binary: binary.to_owned() };
        dev.wait_ready(token).map_err(|e| {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            other(&format!("{e}\n--- consul log tail ---\n{}", tail.join("\n")))
        })?;
        Ok(dev)
    }

    fn wait_ready(&mut self, token: Option<&str>) -> std::io::Result<()> {
        let give_up = Instant::now() + START_TIMEOUT;
        while Instant::now() < give_up {
            if let Some(status) = self.child.try_wait()? {
                return Err(other(&format!("consul agent exited early ({status})")));
            }
            let leader = http(&self.http_addr, "GET", "/v1/status/leader", "", token);
            if matches!(&leader, Ok((200, body)) if body.contains(':')) {
                let create = http(&self.http_addr, "PUT", "/v1/session/create", r#"{"TTL":"10s"}"#, token);
                if let Ok((200, body)) = create {
                    if let Some(id) = body.split('"').nth(3) {
                        let _ = http(&self.http_addr, "PUT", &format!("/v1/session/destroy/{id}"), "", token);
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(other(&format!("consul agent at {} not ready within {START_TIMEOUT:?}", self.http_addr)))
    }

    /// One agent for the whole test process, started on first use. A `static` is never dropped;
    /// the agent's watchdog stops it once this process has exited.
    ///
    /// # Panics
    /// With the actionable message of [`start`](Self::start) when the agent cannot be started:
    /// tests that need Consul fail loudly, they never skip.
    pub fn shared() -> &'static ConsulDev {
        static SHARED: std::sync::OnceLock<ConsulDev> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| ConsulDev::start().unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e}")))
    }

    /// The agent's HTTP address, `127.0.0.1:<port>` (`unix:///…/http.sock` for
    /// [`start_on_socket`](Self::start_on_socket)).
    pub fn http_addr(&self) -> &str {
        &self.http_addr
    }

    /// A client for this agent.
    ///
    /// # Panics
    /// Never for a started agent (the address is always valid).
    pub fn client(&self) -> Client {
        let address =
            if self.http_addr.contains("://") { self.http_addr.clone() } else { format!("http://{}", self.http_addr) };
        Client::builder().address(address).build().expect("a loopback address is a valid Consul address")
    }

    /// The consul binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The agent's process id (to stop or pause it in tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ConsulDev {
    fn drop(&mut self) {
        // The watchdog first, while the agent's process id is still the agent's.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start the watchdog of the agent `pid` (see [`ConsulDev`]): it waits for end-of-file on its
/// standard input, a pipe whose write end only this process holds (Rust opens it close-on-exec, so
/// no other child inherits it), then stops the agent if `pid` still runs with `node` in its command
/// line, and removes `dir`.
fn watchdog(pid: u32, node: &str, dir: &Path) -> std::io::Result<Child> {
    let script = r#"
        read -r _ || true
        ours() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q -- "-node $2 "; }
        if ours "$1" "$2"; then
            kill "$1" 2>/dev/null
            i=0
            while [ "$i" -lt 20 ] && ours "$1" "$2"; do sleep 0.1; i=$((i + 1)); done
            if ours "$1" "$2"; then kill -9 "$1" 2>/dev/null; fi
        fi
        rm -rf "$3"
    "#;
    Command::new("sh")
        .args(["-c", script, "consul-lock-watchdog"])
        .arg(pid.to_string())
        .arg(node)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// `CONSUL_BIN`, then `PATH`, then `<crate>/.consul/bin/consul`.
pub fn find_binary() -> std::io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CONSUL_BIN").filter(|b| !b.is_empty()) {
        let p = PathBuf::from(bin);
        return if p.is_file() { Ok(p) } else { Err(other(&format!("CONSUL_BIN={} is not a file", p.display()))) };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("consul"))
        .find(|p| p.is_file());
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".consul/bin/consul");
    on_path.or_else(|| local.is_file().then_some(local)).ok_or_else(|| {
        other(
            "no consul binary found (tests need a real Consul agent): run scripts/install-consul.sh, \
             or set CONSUL_BIN=/path/to/consul, or put consul on PATH",
        )
    })
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// A tiny HTTP/1.0 client for readiness probes, usable with or without a runtime.
fn http(addr: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = connect(addr)?;
    let token = token.map(|t| format!("X-Consul-Token: {t}\r\n")).unwrap_or_default();
    let host = if addr.starts_with("unix://") { "localhost" } else { addr };
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{token}Content-Length: {}\r\n\r\n{body}", body.len())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A TCP connection to `host:port`, or to the socket of `unix://PATH`, with a read timeout.
fn connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    let timeout = Some(Duration::from_secs(2));
    #[cfg(unix)]
    if let Some(path) = addr.strip_prefix("unix://") {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(timeout)?;
        return Ok(Box::new(s));
    }
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(timeout)?;
    Ok(Box::new(s))
}

fn other(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_owned())
}
