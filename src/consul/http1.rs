//! Plain-HTTP (`http://`) connections to the agent, kept by this crate so that a `Client`'s
//! budget is a hard cap on its connections.
//!
//! A general-purpose pool (reqwest's, hyper's) puts an answered connection back asynchronously,
//! a moment after the caller has read the body: a request that starts in that moment finds no idle
//! connection, opens another, and the pool then keeps both. Here the caller holds a budget permit
//! for the whole exchange, an answered connection goes back on the idle list *before* that permit
//! is released, and a connection is opened only when the idle list is empty. So a pool never has
//! more connections than permits were held at once.
//!
//! One request per connection at a time (HTTP/1.1, no pipelining). A connection that breaks, times
//! out or is cancelled mid-request is closed at once (its task is aborted): it never lingers
//! uncounted while the agent finishes a blocking query nobody reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::mutex::lock;

/// How long an idle connection waits to be ready for the next request before it is given up.
const READY_WITHIN: Duration = Duration::from_secs(1);
/// How long a request waits for one of the pool's connections while the agent refuses new ones,
/// before it tries a new one anyway (waits rotate every 500 ms, so one is back by then, unless
/// they are all long waits).
const REUSE_WAIT: Duration = Duration::from_secs(1);

/// The connections of one pool (the client's shared one, or the holder connection's own).
pub(crate) struct Pool {
    /// `host:port`: where to connect, and the `Host` header.
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    /// Idle connections older than this are closed (`None`: kept as long as the agent keeps them).
    idle_timeout: Option<Duration>,
    idle: Mutex<Vec<Conn>>,
    /// Open connections, and a wake-up each time one goes back on the idle list or closes.
    live: Arc<Live>,
}

#[derive(Default)]
struct Live {
    open: AtomicUsize,
    changed: Notify,
}

/// One open connection: the request half, and the task that drives the socket.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    task: AbortHandle,
    used: Instant,
    live: Arc<Live>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Close the socket now, whatever the agent is still doing on it.
        self.task.abort();
        self.live.open.fetch_sub(1, Ordering::SeqCst);
        self.live.changed.notify_one();
    }
}

/// One request as the client layer hands it over.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: reqwest::Method,
    /// Origin form: `/v1/...?...`.
    pub(crate) target: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) body: Option<Vec<u8>>,
    /// Close the connection after the answer (and say so to the agent).
    pub(crate) close: bool,
    /// Larger answers are refused.
    pub(crate) max_bytes: usize,
    /// Open no connection while the pool has one: wait for it (the agent refuses new ones).
    pub(crate) reuse_only: bool,
}

/// An answer, read whole.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) index: Option<u64>,
    pub(crate) body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be opened.
    Connect(std::io::Error),
    /// The connection broke (closed, reset) or the answer could not be read; `fresh`: on a
    /// connection opened for this request (what an agent past its connection cap does: it closes
    /// new connections at once), not on a kept one.
    Http { error: hyper::Error, fresh: bool },
    /// The answer was larger than allowed.
    TooLarge,
    /// A bad request (a header value the token or target cannot be): never sent.
    Invalid(String),
    /// No answer within the request's timeout (the caller's bound).
    TimedOut,
}

impl Failure {
    /// The same failure, on a fresh connection or not.
    fn on(self, fresh: bool) -> Failure {
        match self {
            Failure::Http { error, .. } => Failure::Http { error, fresh },
            other => other,
        }
    }
}

impl Pool {
    pub(crate) fn new(
        authority: &str,
        connect_timeout: Duration,
        idle_timeout: Option<Duration>,
    ) -> Result<Pool, String> {
        let host = HeaderValue::from_str(authority).map_err(|_| format!("{authority:?} is not a valid host"))?;
        Ok(Pool {
            authority: authority.to_owned(),
            host,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
            live: Arc::default(),
        })
    }

    /// Send `out` and read its answer. The caller holds a budget permit throughout (and bounds the
    /// whole call with its timeout: a cancelled call closes the connection it used).
    pub(crate) async fn send(&self, out: Outgoing<'_>) -> Result<Answer, Failure> {
        let mut request = self.request(&out)?;
        // A kept connection the agent closed while idle is found out when the request comes back
        // unsent: then (and only then) one more try, on a new connection.
        let mut fresh = false;
        loop {
            let idle = match (fresh, out.reuse_only) {
                (true, _) => None,
                (false, false) => self.take_idle().await,
                (false, true) => self.wait_idle().await,
            };
            let (mut conn, reused) = match idle {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let broke = |error| Failure::Http { error, fresh: !reused };
            match conn.sender.try_send_request(request).await {
                Ok(resp) => {
                    let answer = read(resp, out.max_bytes).await.map_err(|e| e.on(!reused))?;
                    if !out.close {
                        self.put_back(conn);
                    }
                    return Ok(answer);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        fresh = true;
                    }
                    _ => return Err(broke(e.into_error())),
                },
            }
        }
    }

    fn request(&self, out: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, Failure> {
        let mut b = Request::builder()
            .method(out.method.clone())
            .uri(out.target)
            .header(HOST, self.host.clone())
            .header(USER_AGENT, HeaderValue::from_static(concat!("consul-lock/", env!("CARGO_PKG_VERSION"))));
        if let Some(t) = out.token {
            let mut v =
                HeaderValue::from_str(t).map_err(|_| Failure::Invalid("the ACL token is not a valid header".into()))?;
            v.set_sensitive(true);
            b = b.header("X-Consul-Token", v);
        }
        if out.body.is_some() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if out.close {
            b = b.header(CONNECTION, HeaderValue::from_static("close"));
        }
        let body = Full::new(Bytes::from(out.body.clone().unwrap_or_default()));
        b.body(body).map_err(|e| Failure::Invalid(format!("cannot build the request: {e}")))
    }

    /// The most recently used idle connection that is still open and ready.
    async fn take_idle(&self) -> Option<Conn> {
        loop {
            let mut conn = lock(&self.idle).pop()?;
            if conn.sender.is_closed() || self.expired(&conn) {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, conn.sender.ready()).await {
                return Some(conn);
            }
        }
    }

    /// An idle connection of this pool, waiting (at most [`REUSE_WAIT`]) for one to come back
    /// while others are open; `None` once none is open or the wait is over (then the caller opens
    /// one: a connection busy with a 15 s blocking query must not stall a renewal).
    async fn wait_idle(&self) -> Option<Conn> {
        tokio::time::timeout(REUSE_WAIT, self.wait_idle_unbounded()).await.ok().flatten()
    }

    async fn wait_idle_unbounded(&self) -> Option<Conn> {
        loop {
            let changed = self.live.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(c) = self.take_idle().await {
                return Some(c);
            }
            if self.live.open.load(Ordering::SeqCst) == 0 {
                return None;
            }
            changed.await;
        }
    }

    /// Close every idle connection.
    pub(crate) fn close_idle(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        drop(idle);
    }

    fn expired(&self, conn: &Conn) -> bool {
        self.idle_timeout.is_some_and(|t| conn.used.elapsed() >= t)
    }

    fn put_back(&self, mut conn: Conn) {
        conn.used = Instant::now();
        {
            let mut idle = lock(&self.idle);
            idle.retain(|c| !c.sender.is_closed() && !self.expired(c));
            idle.push(conn);
        }
        self.live.changed.notify_one();
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let stream = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| Failure::Connect(timed_out()))?
            .map_err(Failure::Connect)?;
        // Small requests: send them at once.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| Failure::Http { error, fresh: true })?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "agent connection ended");
            }
        });
        self.live.open.fetch_add(1, Ordering::SeqCst);
        Ok(Conn { sender, task: task.abort_handle(), used: Instant::now(), live: self.live.clone() })
    }

    /// How many idle connections the pool keeps now.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }
}

/// Read status, index and the whole body (at most `max` bytes).
async fn read(resp: hyper::Response<hyper::body::Incoming>, max: usize) -> Result<Answer, Failure> {
    let status = resp.status().as_u16();
    let index = resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut incoming = resp.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|error| Failure::Http { error, fresh: false })?;
        if let Some(chunk) = frame.data_ref() {
            if body.len() + chunk.len() > max {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(chunk);
        }
    }
    Ok(Answer { status, index, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny HTTP/1.1 server on loopback that answers every request with `200 ok` after `delay`,
    /// counting the connections it accepted.
    async fn server(delay: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            tokio::time::sleep(delay).await;
                            let reply = b"HTTP/1.1 200 OK\r\nX-Consul-Index: 7\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(target: &str) -> Outgoing<'_> {
        Outgoing {
            method: reqwest::Method::GET,
            target,
            token: None,
            body: None,
            close: false,
            max_bytes: 1024,
            reuse_only: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_never_outnumber_the_permits_held_at_once() {
        let (addr, accepted) = server(Duration::from_millis(1)).await;
        let pool = std::sync::Arc::new(Pool::new(&addr, Duration::from_secs(1), None).unwrap());
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (pool, permits) = (pool.clone(), permits.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..40 {
                    let _p = permits.acquire().await.unwrap();
                    let a = pool.send(get("/v1/x")).await.unwrap();
                    assert_eq!((a.status, a.index, a.body.as_slice()), (200, Some(7), &b"ok"[..]));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(opened <= 3, "480 requests through 3 permits opened {opened} connections");
        assert!(pool.idle_count() <= 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reuse_only_waits_for_an_open_connection_instead_of_opening_one() {
        let (addr, accepted) = server(Duration::from_millis(20)).await;
        let pool = std::sync::Arc::new(Pool::new(&addr, Duration::from_secs(1), None).unwrap());
        pool.send(get("/v1/x")).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = get("/v1/x");
                out.reuse_only = true;
                pool.send(out).await.map(|a| a.status)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 200);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "five requests shared the one connection");
        let empty = Pool::new(&addr, Duration::from_secs(1), None).unwrap();
        let mut out = get("/v1/x");
        out.reuse_only = true;
        assert_eq!(empty.send(out).await.unwrap().status, 200, "a pool with no connection opens one");
    }

    #[tokio::test]
    async fn a_closing_request_keeps_no_connection_and_a_large_answer_is_refused() {
        let (addr, accepted) = server(Duration::ZERO).await;
        let pool = Pool::new(&addr, Duration::from_secs(1), None).unwrap();
        let mut out = get("/v1/x");
        out.close = true;
        pool.send(out).await.unwrap();
        assert_eq!(pool.idle_count(), 0);
        let mut small = get("/v1/x");
        small.max_bytes = 1;
        assert!(matches!(pool.send(small).await, Err(Failure::TooLarge)));
        assert_eq!(pool.idle_count(), 0, "a refused answer's connection is not kept");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_agent_closed_is_replaced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Answer one request per connection, then close it without saying so.
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                });
            }
        });
        let pool = Pool::new(&addr, Duration::from_secs(1), None).unwrap();
        for _ in 0..3 {
            let a = pool.send(get("/v1/x")).await.unwrap();
            assert_eq!(a.body, b"ok");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(&addr, Duration::from_secs(1), None).unwrap();
        assert!(matches!(pool.send(get("/v1/x")).await, Err(Failure::Connect(_))));
    }
}
