//! A fault-injecting TCP proxy in front of the real agent (the pattern of Consul's own
//! `TestAPI_LockMonitorRetry`), and small broken "servers" that answer garbage. Loopback only.
//!
//! The proxy forwards bytes untouched while healthy. A fault applies to new connections and breaks
//! every live one (pooled keep-alive connections and long blocking queries included), so the
//! client really sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consul_lock::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close the listening port: new connections are refused (ECONNREFUSED); live ones are cut.
    Refuse,
    /// Accept, read the request, close without an answer (the client sees a closed connection).
    Drop,
    /// Accept and never answer.
    Blackhole,
    /// Answer every request with HTTP 500 and this body (e.g. `rpc error: No cluster leader`).
    Http500(String),
    /// Forward, after this delay per new connection.
    Latency(Duration),
}

impl Fault {
    fn breaks_live_connections(&self) -> bool {
        !matches!(self, Fault::None | Fault::Latency(_))
    }
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: String,
    fault: Arc<watch::Sender<Fault>>,
    connections: Arc<AtomicU64>,
    renews_refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Start a proxy on a free loopback port forwarding to `upstream` (`127.0.0.1:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(watch::Sender::new(Fault::None));
        let connections = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let renews_refused = Arc::new(AtomicU64::new(0));
        let (f, n, r) = (fault.clone(), connections.clone(), renews_refused.clone());
        let bind_addr = addr.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut mode = f.subscribe();
            loop {
                if *mode.borrow_and_update() == Fault::Refuse {
                    listener = None; // the port is closed: connections are refused
                    let _ = mode.wait_for(|f| *f != Fault::Refuse).await;
                    continue;
                }
                let Some(l) = &listener else {
                    match TcpListener::bind(&bind_addr).await {
                        Ok(l) => listener = Some(l),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    continue;
                };
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((conn, _)) = accepted else { continue };
                        n.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(serve(conn, upstream.clone(), f.subscribe(), r.clone()));
                    }
                    _ = mode.changed() => {}
                }
            }
        });
        FaultProxy { addr, fault, connections, renews_refused, task }
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A client talking to the agent through the proxy, with a short request timeout.
    pub fn client(&self) -> Client {
        Client::builder().address(self.addr.clone()).request_timeout(Duration::from_secs(2)).build().unwrap()
    }

    /// Switch the fault (takes effect at once, for live connections too).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Session renewals refused by a fault (500 or dropped) so far.
    pub fn renews_refused(&self) -> u64 {
        self.renews_refused.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.fault.send_replace(Fault::Drop);
    }
}

async fn serve(mut conn: TcpStream, upstream: String, mut rx: watch::Receiver<Fault>, renews: Arc<AtomicU64>) {
    let fault = rx.borrow_and_update().clone();
    match fault {
        Fault::Refuse => {}
        Fault::Drop => {
            // Read the request, then close without an answer.
            let head = read_request_head(&mut conn).await;
            if head.windows(18).any(|w| w == b"/v1/session/renew/") {
                renews.fetch_add(1, Ordering::Relaxed);
            }
        }
        Fault::Blackhole => {
            let _ = rx.wait_for(|f| *f != Fault::Blackhole).await;
        }
        Fault::Http500(body) => {
            let head = read_request_head(&mut conn).await;
            if head.windows(18).any(|w| w == b"/v1/session/renew/") {
                renews.fetch_add(1, Ordering::Relaxed);
            }
            let _ = conn.write_all(http_response(500, "Internal Server Error", body.as_bytes()).as_slice()).await;
            let _ = conn.shutdown().await;
        }
        Fault::None | Fault::Latency(_) => {
            if let Fault::Latency(d) = fault {
                tokio::time::sleep(d).await;
            }
            let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                _ = rx.wait_for(Fault::breaks_live_connections) => {}
            }
        }
    }
}

/// Read up to the end of the request head (bounded).
async fn read_request_head(conn: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while buf.len() < 1 << 20 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    buf
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn http_response(status: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// What a [`BadServer`] does with each connection.
#[derive(Debug, Clone)]
pub enum Bad {
    /// Accept, read the request, never answer.
    Silent,
    /// Read the request head, write these exact bytes, close.
    Raw(Vec<u8>),
    /// Like `Raw`, choosing the answer by the first path fragment found in the request line
    /// (the last entry is the default).
    ByPath(Vec<(&'static str, Vec<u8>)>),
}

/// A TCP server on loopback that is not a working Consul: it stands for a broken or hostile server.
pub struct BadServer {
    addr: String,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BadServer {
    pub async fn start(bad: Bad) -> BadServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let n = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { continue };
                let (bad, n) = (bad.clone(), n.clone());
                tokio::spawn(async move {
                    // One request per connection (every answer says Connection: close).
                    let head = read_request_head(&mut conn).await;
                    if !head.is_empty() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    match bad {
                        Bad::Silent => tokio::time::sleep(Duration::from_secs(600)).await,
                        Bad::Raw(bytes) => {
                            let _ = conn.write_all(&bytes).await;
                            let _ = conn.shutdown().await;
                        }
                        Bad::ByPath(table) => {
                            let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
                            let line = String::from_utf8_lossy(line);
                            let answer = table.iter().find(|(p, _)| line.contains(p)).or(table.last());
                            if let Some((_, bytes)) = answer {
                                let _ = conn.write_all(bytes).await;
                            }
                            let _ = conn.shutdown().await;
                        }
                    }
                });
            }
        });
        BadServer { addr, requests, task }
    }

    /// Shorthand: a complete response with this status and body.
    pub async fn answering(status: u16, body: &str) -> BadServer {
        BadServer::start(Bad::Raw(http_response(status, "X", body.as_bytes()))).await
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests received (request heads read).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A client for this server with a short request timeout.
    pub fn client(&self) -> Client {
        Client::builder().address(self.addr.clone()).request_timeout(Duration::from_secs(2)).build().unwrap()
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
