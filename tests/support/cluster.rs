//! Non-dev Consul agents on loopback (persistent `-data-dir`): a 3-server cluster whose leader can
//! be killed, a single server restarted under a held lock, or (inside a private network namespace)
//! servers and client agents each on its own 127.0.0.x address with Consul's default ports. Each
//! agent is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use consul_lock::testing::find_binary;
use consul_lock::Client;
use tokio::time::Instant;

pub struct Server {
    pub name: String,
    /// The loopback address every port of this agent binds.
    pub ip: String,
    /// HTTP, serf LAN, serf WAN, server RPC.
    pub ports: [u16; 4],
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

fn free_ports<const N: usize>() -> [u16; N] {
    let l: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| l[i].local_addr().unwrap().port())
}

impl Server {
    /// Configure (not start) a server; `join` are the serf LAN ports of the others.
    pub fn new(name: &str, ports: [u16; 4], bootstrap_expect: usize, join: &[u16]) -> Server {
        let join: Vec<String> = join.iter().map(|j| format!("127.0.0.1:{j}")).collect();
        Server::configure(name, "127.0.0.1", ports, Some(bootstrap_expect), &join)
    }

    /// Configure (not start) an agent on its own address `ip` with Consul's default ports: a server
    /// when `bootstrap_expect` is given, else a client agent. `join` are the others' addresses.
    pub fn on_address(name: &str, ip: &str, bootstrap_expect: Option<usize>, join: &[String]) -> Server {
        Server::configure(name, ip, [8500, 8301, 8302, 8300], bootstrap_expect, join)
    }

    fn configure(name: &str, ip: &str, ports: [u16; 4], bootstrap_expect: Option<usize>, join: &[String]) -> Server {
        let dir = std::env::temp_dir().join(format!("consul-lock-srv-{}-{name}-{}", std::process::id(), ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "agent",
            "-bind",
            ip,
            "-client",
            ip,
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-log-level",
            "warn",
            "-disable-host-node-id",
            "-hcl",
            "performance { raft_multiplier = 1 }",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = |i: usize| ports[i].to_string();
        args.extend(["-node".into(), name.into(), "-data-dir".into(), dir.join("data").display().to_string()]);
        args.extend(["-http-port".into(), p(0), "-serf-lan-port".into(), p(1), "-serf-wan-port".into(), p(2)]);
        args.extend(["-server-port".into(), p(3)]);
        if let Some(n) = bootstrap_expect {
            args.extend(["-server".into(), "-bootstrap-expect".into(), n.to_string()]);
        }
        for j in join {
            args.extend(["-retry-join".into(), j.clone()]);
        }
        Server { name: name.into(), ip: ip.into(), ports, dir, args, child: None }
    }

    pub fn start(&mut self) {
        let bin = find_binary().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("consul.log")).unwrap();
        let child = super::netns::die_with_parent(&mut Command::new(bin))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start consul server {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.ip, self.ports[0])
    }

    /// `<ip>:<server RPC port>`, as `/v1/status/leader` names the leader.
    pub fn rpc_addr(&self) -> String {
        format!("{}:{}", self.ip, self.ports[3])
    }

    pub fn client(&self) -> Client {
        Client::builder().address(self.http_addr()).request_timeout(Duration::from_secs(3)).build().unwrap()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("consul.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The leader's RPC address as this server sees it (None while there is none).
    pub async fn leader(&self) -> Option<String> {
        let r = reqwest::Client::new()
            .get(format!("http://{}/v1/status/leader", self.http_addr()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let s: String = r.json().await.ok()?;
        (!s.is_empty()).then_some(s)
    }

    /// Wait until this server knows a leader and can create (and destroy) a session.
    pub async fn wait_ready(&self, limit: Duration) {
        let end = Instant::now() + limit;
        let http = reqwest::Client::new();
        loop {
            if self.leader().await.is_some() {
                let r = http
                    .put(format!("http://{}/v1/session/create", self.http_addr()))
                    .body(r#"{"TTL":"10s"}"#)
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status().is_success() {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["ID"].as_str() {
                            let url = format!("http://{}/v1/session/destroy/{id}", self.http_addr());
                            let _ = http.put(url).send().await;
                            return;
                        }
                    }
                }
            }
            assert!(Instant::now() < end, "server {} not ready within {limit:?}:\n{}", self.name, self.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three servers that find each other on loopback; started and ready (a leader elected).
pub async fn three_servers() -> Vec<Server> {
    let ports: Vec<[u16; 4]> = (0..3).map(|_| free_ports::<4>()).collect();
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            let join: Vec<u16> = (0..3).filter(|j| *j != i).map(|j| ports[j][1]).collect();
            Server::new(&format!("srv{i}"), ports[i], 3, &join)
        })
        .collect();
    for s in &mut servers {
        s.start();
    }
    for s in &servers {
        s.wait_ready(Duration::from_secs(60)).await;
    }
    servers
}

/// One persistent server (bootstrap-expect 1), started and ready.
pub async fn single_server() -> Server {
    let mut s = Server::new("solo", free_ports::<4>(), 1, &[]);
    s.start();
    s.wait_ready(Duration::from_secs(60)).await;
    s
}
