//! Unreachable, slow and broken servers: every failure is a typed `Error` within a bounded time,
//! never a panic; Consul's permanent 500s are not retried; nothing keeps sending afterwards.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{EphemeralLock, Error, Session};
use support::proxy::{http_response, Bad, BadServer};
use support::*;
use tokio::time::{sleep, timeout, Instant};

/// Generous bound for one operation against a broken server (request timeout is 2 s, acquire 1 s).
const BOUND: Duration = Duration::from_secs(8);

/// Run the three entry points (holder, hold, Session::new) against `server`, check each error.
async fn all_fail(server: &BadServer, what: &str, check: impl Fn(&Error) -> bool) {
    let c = server.client();
    let t0 = Instant::now();
    let e = timeout(BOUND, c.holder("k/1")).await.unwrap_or_else(|_| panic!("{what}: holder unbounded")).unwrap_err();
    assert!(check(&e), "{what}: holder gave {e:?}");
    let e = timeout(BOUND, EphemeralLock::new("k/1").client(c.clone()).acquire_timeout(Duration::from_secs(1)).hold())
        .await
        .unwrap_or_else(|_| panic!("{what}: hold unbounded"))
        .unwrap_err();
    assert!(check(&e), "{what}: hold gave {e:?}");
    let e = timeout(BOUND, Session::new(c.clone(), Duration::from_secs(10)))
        .await
        .unwrap_or_else(|_| panic!("{what}: Session::new unbounded"))
        .unwrap_err();
    assert!(check(&e), "{what}: Session::new gave {e:?}");
    // The message names the address and is printable (Display never panics).
    assert!(e.to_string().contains(server.addr()), "{what}: {e}");
    eprintln!("{what}: 3 calls failed as expected in {:?}", t0.elapsed());
    // Nothing left running that keeps talking to the server.
    let before = server.requests();
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.requests(), before, "{what}: requests kept coming after the calls returned");
}

fn transport(e: &Error) -> bool {
    matches!(e, Error::Transport(_))
}

fn decode(e: &Error) -> bool {
    matches!(e, Error::Decode { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_transport_error_naming_the_address() {
    let c = closed_port_client();
    let t0 = Instant::now();
    let e = c.holder("k").await.unwrap_err();
    match &e {
        Error::Transport(t) => assert!(!t.is_timeout(), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("CONSUL_HTTP_ADDR"), "{e}");
    let e = EphemeralLock::new("k").client(c.clone()).hold().await.unwrap_err();
    assert!(transport(&e), "{e:?}");
    assert!(t0.elapsed() < BOUND, "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    let s = BadServer::start(Bad::Silent).await;
    all_fail(&s, "silent", |e| matches!(e, Error::Transport(t) if t.is_timeout())).await;
    // Regression (found by the partition run): a timeout used to ask "is Consul running at …?",
    // although a running client agent cut off from its servers times out the same way.
    let e = s.client().holder("k/1").await.unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains("is Consul running"), "{msg}");
    assert!(msg.contains("cut off from its servers") && msg.contains(s.addr()), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_an_error() {
    let s = BadServer::start(Bad::Raw(b"SSH-2.0-OpenSSH_9.0\r\n\x00\xff garbage\r\n\r\n".to_vec())).await;
    all_fail(&s, "garbage", transport).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json_is_decode_error() {
    let s = BadServer::answering(200, r#"[{"LockIndex":1,"Key":"k/1","Sess"#).await;
    all_fail(&s, "truncated JSON", decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_shorter_than_content_length_is_an_error() {
    let s = BadServer::start(Bad::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nConnection: close\r\n\r\n[{\"Key\":".to_vec(),
    ))
    .await;
    all_fail(&s, "short body", |e| transport(e) || decode(e)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_decode_errors() {
    let s = BadServer::answering(200, r#"{"ID": 42, "Key": [], "Session": {"x": 1}}"#).await;
    all_fail(&s, "wrong types", decode).await;
    let s = BadServer::answering(200, r#"[{"Key": 5, "Session": 7, "Value": 3, "ModifyIndex": "x"}]"#).await;
    let e = s.client().holder("k/1").await.unwrap_err();
    assert!(decode(&e), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_is_refused() {
    let body = format!("[{}]", " ".repeat(6 * 1024 * 1024));
    let s = BadServer::answering(200, &body).await;
    all_fail(&s, "huge body", |e| matches!(e, Error::Decode { message, .. } if message.contains("larger"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_500_and_429_are_consul_errors_after_bounded_retries() {
    for (status, body) in [(500, "rpc error making call: No cluster leader"), (429, "Your IP is issuing too many")] {
        let s = BadServer::answering(status, body).await;
        all_fail(&s, &format!("HTTP {status}"), |e| {
            matches!(e, Error::Consul { status: st, .. } if *st == status) && e.is_retryable()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_500s_are_not_retried() {
    let serf = BadServer::answering(500, "Check 'serfHealth' is in critical state").await;
    let t0 = Instant::now();
    let e = EphemeralLock::new("k").client(serf.client()).acquire_timeout(Duration::from_secs(30)).hold().await;
    let e = e.unwrap_err();
    assert!(matches!(e, Error::Consul { status: 500, .. }) && !e.is_retryable(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(serf.requests(), 1, "serfHealth on session create is permanent: one request only");

    let ok_session = http_response(200, "OK", br#"{"ID":"adf4238a-882b-9ddc-4a9d-5b6758e4159e"}"#);
    let invalid = http_response(500, "X", b"invalid session \"adf4238a-882b-9ddc-4a9d-5b6758e4159e\"");
    let s = BadServer::start(Bad::ByPath(vec![
        ("/v1/session/create", ok_session),
        ("/v1/session/destroy", http_response(200, "OK", b"true")),
        ("/v1/txn", invalid.clone()),
        ("", invalid),
    ]))
    .await;
    let t0 = Instant::now();
    let r = timeout(
        Duration::from_secs(20),
        EphemeralLock::new("k").client(s.client()).acquire_timeout(Duration::from_secs(10)).hold(),
    )
    .await
    .expect("bounded");
    let e = r.unwrap_err();
    eprintln!("invalid session on every lock attempt: {e} after {:?}, {} requests", t0.elapsed(), s.requests());
    assert!(!e.is_retryable() || matches!(e, Error::LockLost { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "kept trying for {:?}", t0.elapsed());
    assert!(s.requests() <= 20, "{} requests: retried a permanent error", s.requests());
}
