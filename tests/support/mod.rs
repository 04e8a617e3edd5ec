//! Helpers shared by the integration tests: the shared dev agent, unique keys, and raw reads of
//! Consul's state that do not go through the library under test.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use consul_lock::testing::ConsulDev;
use consul_lock::Client;
use serde_json::Value;

/// The test process's Consul dev agent (started on first use; the test fails if it cannot start).
pub fn consul() -> &'static ConsulDev {
    ConsulDev::shared()
}

pub fn client() -> Client {
    consul().client()
}

/// A key no other test uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("test/{name}/{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A client pointed at a port where nothing listens.
pub fn closed_port_client() -> Client {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Client::builder().address(format!("127.0.0.1:{port}")).build().unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn url(path: &str) -> String {
    format!("http://{}{path}", consul().http_addr())
}

/// Raw `GET /v1/kv/<encoded key>`: `None` when the key does not exist.
pub async fn raw_kv(encoded_key: &str) -> Option<Value> {
    let r = http().get(url(&format!("/v1/kv/{encoded_key}"))).send().await.unwrap();
    if r.status() == 404 {
        return None;
    }
    assert!(r.status().is_success(), "GET kv {encoded_key}: {}", r.status());
    let v: Value = r.json().await.unwrap();
    Some(v[0].clone())
}

/// Raw `GET /v1/kv/<prefix>?keys`: every key under `prefix` (empty when none).
pub async fn raw_keys(prefix: &str) -> Vec<String> {
    let r = http().get(url(&format!("/v1/kv/{prefix}?keys"))).send().await.unwrap();
    if r.status() == 404 {
        return Vec::new();
    }
    r.json().await.unwrap()
}

/// Raw `DELETE /v1/kv/<encoded key>`, as an operator deleting a key from outside.
pub async fn raw_delete(encoded_key: &str) {
    let r = http().delete(url(&format!("/v1/kv/{encoded_key}"))).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE kv {encoded_key}: {}", r.status());
}

/// The session currently holding `encoded_key`, if any.
pub async fn raw_holder(encoded_key: &str) -> Option<String> {
    raw_kv(encoded_key).await.and_then(|e| e["Session"].as_str().map(str::to_owned)).filter(|s| !s.is_empty())
}

/// Whether a session exists.
pub async fn session_exists(id: &str) -> bool {
    let v: Value = http().get(url(&format!("/v1/session/info/{id}"))).send().await.unwrap().json().await.unwrap();
    v.as_array().is_some_and(|a| !a.is_empty())
}

/// IDs of the sessions whose name contains `needle`.
pub async fn sessions_named(needle: &str) -> Vec<String> {
    let v: Value = http().get(url("/v1/session/list")).send().await.unwrap().json().await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Name"].as_str().is_some_and(|n| n.contains(needle)))
        .map(|s| s["ID"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn destroy_session(id: &str) {
    let r = http().put(url(&format!("/v1/session/destroy/{id}"))).send().await.unwrap();
    assert!(r.status().is_success());
}

/// Entries in the queue of `key` (everything under `<key>/.consul-lock-queue/`).
pub async fn queue_entries(key: &str) -> usize {
    raw_keys(&format!("{key}/.consul-lock-queue/")).await.len()
}

/// Candidates waiting in the fair queue of `key` (its queue entries, less the leader's own).
pub async fn queue_len(key: &str) -> usize {
    queue_entries(key).await.saturating_sub(1)
}

/// Poll `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
pub mod child;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod peer;
pub mod proxy;
pub mod register;
pub mod worker;
pub mod workload;

/// What some clients (each with a request count of its own) send from a moment on: the waiters that
/// stay in line through a handoff, whose requests a herd would show.
pub struct Sent<'a> {
    clients: &'a [Client],
    before: Vec<(usize, u64)>,
}

impl<'a> Sent<'a> {
    /// Start counting the requests of `clients[i]` for each `i` of `which`.
    pub fn from_now(clients: &'a [Client], which: impl IntoIterator<Item = usize>) -> Self {
        Sent { clients, before: which.into_iter().map(|i| (i, clients[i].request_count())).collect() }
    }

    /// How many clients are counted.
    pub fn len(&self) -> usize {
        self.before.len()
    }

    /// Their requests since [`from_now`](Self::from_now), summed.
    pub fn total(&self) -> u64 {
        self.before.iter().map(|&(i, b)| self.clients[i].request_count() - b).sum()
    }
}
