//! TLS: an agent serving HTTPS only, with certificates made by `consul tls ca create` /
//! `consul tls cert create`. The CA from `CONSUL_CACERT` works; a wrong CA is a clear TLS error;
//! verification off works (with a warning); mutual TLS works with a client certificate when the
//! agent verifies incoming HTTPS connections, and fails clearly without one.

#![cfg(feature = "test-util")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use consul_lock::testing::find_binary;
use consul_lock::{Client, EphemeralLock, Error};
use tokio::time::Instant;

#[path = "support/sockets.rs"]
mod sockets;

#[path = "support/capture.rs"]
mod capture;
use capture::Captured;

/// A `consul agent -dev` with HTTP disabled and HTTPS on a free loopback port; killed on drop.
struct TlsAgent {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn consul(dir: &Path, args: &[&str]) {
    let bin = find_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin).args(args).current_dir(dir).output().expect("run consul");
    assert!(out.status.success(), "consul {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A temp dir with a CA, a server certificate (SANs server.dc1.consul, localhost, 127.0.0.1), a
/// client certificate, and a second, unrelated CA in `other/`.
fn make_certs(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consul-lock-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("other")).unwrap();
    consul(&dir, &["tls", "ca", "create"]);
    consul(&dir, &["tls", "cert", "create", "-server"]);
    consul(&dir, &["tls", "cert", "create", "-client"]);
    consul(&dir.join("other"), &["tls", "ca", "create"]);
    dir
}

fn free_ports(n: usize) -> Vec<u16> {
    let l: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    l.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Start an HTTPS-only agent; ready once `probe` (a correctly configured client) can lock a key.
async fn start_agent(dir: &Path, verify_incoming: bool) -> TlsAgent {
    let p = free_ports(4);
    let hcl = format!(
        r#"ca_file = "{d}/consul-agent-ca.pem"
cert_file = "{d}/dc1-server-consul-0.pem"
key_file = "{d}/dc1-server-consul-0-key.pem"
verify_incoming_https = {verify_incoming}
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("tls.hcl"), hcl).unwrap();
    let log = std::fs::File::create(dir.join("consul.log")).unwrap();
    let child = Command::new(find_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", "-1"])
        .args(["-https-port", &p[0].to_string(), "-serf-lan-port", &p[1].to_string()])
        .args(["-serf-wan-port", &p[2].to_string(), "-server-port", &p[3].to_string()])
        .args(["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn", "-node", &format!("tls-{}", p[0])])
        .arg("-config-file")
        .arg(dir.join("tls.hcl"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start consul");
    let mut agent = TlsAgent { child, port: p[0], dir: dir.to_owned() };
    let probe = builder(&agent, dir)
        .client_cert(cert(dir, "dc1-client-consul-0.pem"), cert(dir, "dc1-client-consul-0-key.pem"));
    let probe = probe.build().unwrap();
    let end = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("consul.log")).unwrap_or_default();
            panic!("the HTTPS consul agent exited ({status}):\n{log}");
        }
        let attempt = EphemeralLock::new("ready").client(probe.clone()).lock_delay(Duration::ZERO).hold().await;
        if let Ok(g) = attempt {
            g.release().await.unwrap();
            return agent;
        }
        if Instant::now() > end {
            let log = std::fs::read_to_string(dir.join("consul.log")).unwrap_or_default();
            panic!("the HTTPS consul agent was not ready within 45 s ({:?}):\n{log}", attempt.err());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cert(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

/// A builder for the agent's HTTPS address with the right CA.
fn builder(agent: &TlsAgent, dir: &Path) -> consul_lock::ClientBuilder {
    Client::builder().address(format!("https://127.0.0.1:{}", agent.port)).ca_file(cert(dir, "consul-agent-ca.pem"))
}

async fn lock_cycle(c: &Client) -> consul_lock::Result<()> {
    let g = EphemeralLock::new("tls/x").client(c.clone()).lock_delay(Duration::ZERO).hold().await?;
    assert!(g.is_held());
    g.release().await
}

fn tls_failure(e: &Error) -> String {
    let Error::Transport(_) = e else { panic!("expected a transport (TLS) error, got {e:?}") };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(" / ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg.to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_agent_with_ca_env_wrong_ca_and_verification_off() {
    let dir = make_certs("server");
    let agent = start_agent(&dir, false).await;

    // CONSUL_CACERT through the environment (only this test of this binary reads the environment).
    std::env::set_var("CONSUL_HTTP_ADDR", format!("https://127.0.0.1:{}", agent.port));
    std::env::set_var("CONSUL_CACERT", cert(&dir, "consul-agent-ca.pem"));
    let from_env = Client::from_env().unwrap();
    std::env::remove_var("CONSUL_CACERT");
    std::env::remove_var("CONSUL_HTTP_ADDR");
    lock_cycle(&from_env).await.unwrap();

    // The built-in web roots do not know this CA; neither does an unrelated CA.
    for wrong in [Client::builder().address(format!("https://127.0.0.1:{}", agent.port)), {
        Client::builder()
            .address(format!("https://127.0.0.1:{}", agent.port))
            .ca_file(cert(&dir.join("other"), "consul-agent-ca.pem"))
    }] {
        let c = wrong.request_timeout(Duration::from_secs(3)).build().unwrap();
        let t0 = Instant::now();
        let e = lock_cycle(&c).await.unwrap_err();
        let msg = tls_failure(&e);
        assert!(msg.contains("certificate"), "not a clear TLS error: {msg}");
        // Regression: the message used to ask "is Consul running at …?" for a certificate failure.
        assert!(e.to_string().contains("TLS handshake failed") && e.to_string().contains("CONSUL_CACERT"), "{e}");
        eprintln!("untrusted server certificate: {e}");
        assert!(msg.contains(&format!("127.0.0.1:{}", agent.port)), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }

    // Verification off: works, and says so in a warning.
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).finish();
    let insecure = tracing::subscriber::with_default(subscriber, || {
        Client::builder()
            .address(format!("https://127.0.0.1:{}", agent.port))
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
    });
    let logs = logs.text();
    assert!(logs.contains("WARN") && logs.contains("verification is disabled"), "no warning: {logs:?}");
    lock_cycle(&insecure).await.unwrap();

    // Plain HTTP to the HTTPS port is an error, not a hang or a panic.
    let plain = Client::builder()
        .address(format!("http://127.0.0.1:{}", agent.port))
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    assert!(lock_cycle(&plain).await.is_err());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let dir = make_certs("mtls");
    let agent = start_agent(&dir, true).await;
    let with_cert = builder(&agent, &dir)
        .client_cert(cert(&dir, "dc1-client-consul-0.pem"), cert(&dir, "dc1-client-consul-0-key.pem"))
        .build()
        .unwrap();
    lock_cycle(&with_cert).await.unwrap();
    let without = builder(&agent, &dir).request_timeout(Duration::from_secs(3)).build().unwrap();
    let t0 = Instant::now();
    let e = lock_cycle(&without).await.unwrap_err();
    let msg = tls_failure(&e);
    assert!(msg.contains("certificate") && msg.contains("tls handshake failed"), "not a clear TLS error: {msg}");
    assert!(e.to_string().contains("CONSUL_CLIENT_CERT"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    eprintln!("mTLS without a client certificate: {e}");
    drop(agent);
}

/// HTTP/2: 100 tasks waiting on a held key, the holder and its renewals all ride one connection
/// (ALPN `h2`), counted from /proc while they wait and as they take their turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_a_hundred_waiters_over_http2() {
    let dir = make_certs("h2");
    let agent = start_agent(&dir, false).await;
    let client = builder(&agent, &dir).build().unwrap();
    let lock = |wait: Duration| {
        EphemeralLock::new("tls/crowd")
            .client(client.clone())
            .ttl(Duration::from_secs(10))
            .lock_delay(Duration::ZERO)
            .acquire_timeout(wait)
    };
    let held = lock(Duration::ZERO).hold().await.unwrap();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let l = lock(Duration::from_secs(120));
        waiters.spawn(async move { l.hold().await?.release().await });
    }
    let me = std::process::id();
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        most = most.max(sockets::of_process(me, agent.port));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.release().await.unwrap();
    let mut done = 0;
    while !waiters.is_empty() {
        most = most.max(sockets::of_process(me, agent.port));
        if let Some(r) = waiters.try_join_next() {
            r.unwrap().unwrap_or_else(|e| panic!("a waiter failed: {e}"));
            done += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(done, 100);
    assert_eq!(most, 1, "100 waiters over HTTP/2 used {most} connections");
    drop(agent);
}
