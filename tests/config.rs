//! Bad input is rejected before any request; awkward keys round-trip; an unreachable Consul is a
//! clear, bounded `Error::Transport`; secrets stay out of Debug output.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{Client, EphemeralLock, Error, MAX_VALUE_BYTES};
use support::*;
use tokio::time::Instant;

fn assert_invalid(r: consul_lock::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(Error::InvalidConfig(m)) => assert!(!m.is_empty()),
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_is_rejected_before_any_request() {
    let c = closed_port_client();
    let lock = |k: &str| EphemeralLock::new(k).client(c.clone());
    for key in ["", "/abs", "a/../b", "..", "a/./b", "a//b", "tab\there", "nul\0", "del\u{7f}", "c1\u{9b}"] {
        assert_invalid(lock(key).hold().await, &format!("key {key:?}"));
        assert_invalid(lock(key).acquire(false).await, &format!("acquire {key:?}"));
        assert_invalid(c.holder(key).await, &format!("holder {key:?}"));
    }
    assert_invalid(lock("k").ttl(Duration::from_secs(9)).hold().await, "ttl 9 s");
    assert_invalid(lock("k").ttl(Duration::from_millis(9_999)).hold().await, "ttl 9.999 s");
    assert_invalid(lock("k").ttl(Duration::from_secs(86_401)).hold().await, "ttl > 1 day");
    assert_invalid(lock("k").lock_delay(Duration::from_secs(61)).hold().await, "lock_delay 61 s");
    assert_invalid(lock("k").max_hold(Duration::ZERO).hold().await, "max_hold 0");
    assert_invalid(lock("k").value(vec![b'x'; MAX_VALUE_BYTES + 1]).hold().await, "value > 512 KiB");
    // Fits a KV entry but not the 512 KiB transaction once base64-encoded.
    assert_invalid(lock("k").value(vec![b'x'; 400 * 1024]).hold().await, "value over the txn limit");
    assert_invalid(lock("k").session_name("bad\nname".into()).hold().await, "session name");
    assert_eq!(c.request_count(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_up_to_the_transaction_limit_work() {
    let key = unique("big-value");
    let value = vec![b'v'; 380 * 1024];
    let g = EphemeralLock::new(&key).client(client()).value(value.clone()).hold().await.unwrap();
    assert_eq!(client().holder(&key).await.unwrap().unwrap().value, value);
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_round_trip() {
    let base = unique("keys");
    let cases = [
        ("with space", "with%20space"),
        ("q?mark", "q%3Fmark"),
        ("hash#tag", "hash%23tag"),
        ("per%cent", "per%25cent"),
        ("ünïcødé/☃", "%C3%BCn%C3%AFc%C3%B8d%C3%A9/%E2%98%83"),
        ("plus+amp&eq=", "plus%2Bamp%26eq%3D"),
    ];
    for (suffix, encoded) in cases {
        let key = format!("{base}/{suffix}");
        let g = EphemeralLock::new(&key).client(client()).hold().await.unwrap();
        let raw = raw_kv(&format!("{base}/{encoded}")).await.unwrap_or_else(|| panic!("{key:?} not stored as itself"));
        assert_eq!(raw["Key"].as_str(), Some(key.as_str()));
        assert_eq!(client().holder(&key).await.unwrap().unwrap().session_id, g.session_id());
        g.release().await.unwrap();
        assert!(client().holder(&key).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn consul_not_running_is_a_clear_transport_error_within_the_timeout() {
    let c = closed_port_client();
    let addr = c.address().to_owned();
    for fail_hard in [false, true] {
        let t0 = Instant::now();
        let mut lock = EphemeralLock::new("k").client(c.clone()).acquire_timeout(Duration::from_millis(500));
        let e = lock.acquire(fail_hard).await.unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&addr) && msg.contains("CONSUL_HTTP_ADDR"), "{msg}");
        assert!(took < Duration::from_millis(500) + Duration::from_secs(3), "took {took:?}");
        assert!(e.is_retryable());
    }
    let e = EphemeralLock::new("k").client(c.clone()).acquire_timeout(Duration::ZERO).hold().await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_bounded_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let c = Client::builder().address(addr.to_string()).request_timeout(Duration::from_secs(1)).build().unwrap();
    let t0 = Instant::now();
    let e = EphemeralLock::new("k").client(c).acquire_timeout(Duration::from_millis(300)).hold().await.unwrap_err();
    assert!(matches!(&e, Error::Transport(t) if t.is_timeout()), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
}

#[test]
fn the_token_never_appears_in_debug_output() {
    let c = Client::builder().address("127.0.0.1:1").token("tok-3e1b9c").build().unwrap();
    let dbg = format!("{c:?} {:?}", Client::builder().token("tok-3e1b9c"));
    assert!(!dbg.contains("tok-3e1b9c"), "{dbg}");
    assert!(dbg.contains("<redacted>"));
}
