//! ACLs: an agent with `acl { enabled = true, default_policy = "deny" }`. No token or a token that
//! lacks a permission is `Error::PermissionDenied` at once (403 on KV/session endpoints, 409 inside
//! `/v1/txn`), a token scoped to `jobs/` locks `jobs/x` and nothing else, and a token never appears
//! in logs (tracing output captured at TRACE), errors or `Debug`.

#![cfg(feature = "test-util")]

use std::time::Duration;

use consul_lock::testing::ConsulDev;
use consul_lock::{Client, EphemeralLock, Error, Session};
use tokio::time::Instant;

#[path = "support/capture.rs"]
mod capture;
use capture::Captured;

const MASTER: &str = "root-token-5e1c7d0a";
const ACL_HCL: &str = r#"acl { enabled = true, default_policy = "deny", enable_token_persistence = false, tokens { master = "root-token-5e1c7d0a", agent = "root-token-5e1c7d0a" } }"#;

/// Create a policy with `rules` and a token for it (with the master token); returns its secret.
async fn token_with_rules(addr: &str, name: &str, rules: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .put(format!("http://{addr}/v1/acl/policy"))
        .header("X-Consul-Token", MASTER)
        .json(&serde_json::json!({ "Name": name, "Rules": rules }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create policy: {} {}", r.status(), r.text().await.unwrap_or_default());
    let r = http
        .put(format!("http://{addr}/v1/acl/token"))
        .header("X-Consul-Token", MASTER)
        .json(&serde_json::json!({ "Description": name, "Policies": [{ "Name": name }] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create token: {}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    v["SecretID"].as_str().expect("SecretID").to_owned()
}

fn client_with(addr: &str, token: Option<&str>) -> Client {
    let b = Client::builder().address(addr);
    match token {
        Some(t) => b.token(t).build().unwrap(),
        None => b.build().unwrap(),
    }
}

fn denied(e: &Error) -> bool {
    matches!(e, Error::PermissionDenied { .. }) && !e.is_retryable()
}

/// All ACL checks on one agent (an ACL agent takes seconds to start), each step named in its
/// assertion messages. Current-thread runtime: the tracing capture covers every task.
#[tokio::test]
async fn acl_permissions_and_token_secrecy() {
    let dev = ConsulDev::start_with_token(&["-hcl", ACL_HCL], Some(MASTER))
        .unwrap_or_else(|e| panic!("cannot start a Consul dev agent with ACLs: {e}"));
    let addr = dev.http_addr().to_owned();
    let jobs_writer = token_with_rules(
        &addr,
        "jobs-writer",
        r#"key_prefix "jobs/" { policy = "write" } session_prefix "" { policy = "write" }"#,
    )
    .await;
    let jobs_reader = token_with_rules(
        &addr,
        "jobs-reader",
        r#"key_prefix "jobs/" { policy = "read" } session_prefix "" { policy = "write" }"#,
    )
    .await;

    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_target(true)
        .finish();
    let _capture = tracing::subscriber::set_default(subscriber);
    let mut errors = Vec::new();

    // 1. No token: denied at once, never retried, whatever the acquire timeout.
    let anon = client_with(&addr, None);
    let t0 = Instant::now();
    let e = EphemeralLock::new("jobs/x").client(anon.clone()).acquire_timeout(Duration::from_secs(20)).hold().await;
    let e = e.unwrap_err();
    assert!(denied(&e), "no token: {e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "no token: denied after {:?} (retried?)", t0.elapsed());
    assert_eq!(anon.request_count(), 1, "no token: one session-create request, not retried");
    let e = Session::new(anon.clone(), Duration::from_secs(10)).await.unwrap_err();
    assert!(denied(&e), "no token, Session::new: {e:?}");
    errors.push(e);

    // 2. Token with write on jobs/: locks jobs/x, not other/x.
    let writer = client_with(&addr, Some(&jobs_writer));
    let g = EphemeralLock::new("jobs/x").client(writer.clone()).lock_delay(Duration::ZERO).hold().await;
    let g = g.unwrap_or_else(|e| panic!("jobs-writer must lock jobs/x: {e}"));
    assert!(g.is_held());
    let h = writer.holder("jobs/x").await.unwrap().expect("jobs/x is held");
    assert_eq!(h.session_id, g.session_id());
    g.release().await.unwrap();
    // With a lock-delay the release is the owner-checked delete transaction.
    let g = EphemeralLock::new("jobs/y").client(writer.clone()).lock_delay(Duration::from_secs(1)).hold().await;
    g.unwrap_or_else(|e| panic!("jobs-writer must lock jobs/y: {e}")).release().await.unwrap();
    let t0 = Instant::now();
    let e = EphemeralLock::new("other/x").client(writer.clone()).acquire_timeout(Duration::from_secs(20)).hold().await;
    let e = e.unwrap_err();
    assert!(denied(&e), "jobs-writer on other/x: {e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "other/x: denied after {:?}", t0.elapsed());
    errors.push(e);
    let e = writer.holder("other/x").await;
    // Consul 1.8 answers a denied KV read with 403 (newer versions the same; some answer 404).
    match e {
        Err(e) => {
            assert!(denied(&e), "jobs-writer reading other/x: {e:?}");
            errors.push(e);
        }
        Ok(None) => {}
        Ok(Some(h)) => panic!("other/x is not held, yet {h:?}"),
    }

    // 3. Read-only key token: the lock transaction answers 409 "Permission denied".
    let reader = client_with(&addr, Some(&jobs_reader));
    let t0 = Instant::now();
    let e = EphemeralLock::new("jobs/x").client(reader.clone()).acquire_timeout(Duration::from_secs(20)).hold().await;
    let e = e.unwrap_err();
    assert!(denied(&e), "read-only token: {e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "read-only: denied after {:?}", t0.elapsed());
    assert!(reader.holder("jobs/x").await.unwrap().is_none(), "read-only token can read jobs/");
    errors.push(e);

    // 4. Secrets never printed: logs, errors (Display and Debug), clients' Debug.
    drop(_capture);
    let logs = logs.text();
    assert!(logs.contains("consul_lock"), "the capture saw no consul_lock event; it proves nothing:\n{logs}");
    for secret in [MASTER, jobs_writer.as_str(), jobs_reader.as_str()] {
        assert!(!logs.contains(secret), "a token appears in the logs");
        for e in &errors {
            assert!(!e.to_string().contains(secret) && !format!("{e:?}").contains(secret), "token in error {e:?}");
        }
        for c in [&anon, &writer, &reader] {
            assert!(!format!("{c:?}").contains(secret), "token in Client Debug");
        }
    }
    assert!(format!("{writer:?}").contains("<redacted>"));
    eprintln!("ACL: {} bytes of TRACE logs checked, {} errors checked", logs.len(), errors.len());
}
