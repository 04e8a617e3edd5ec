//! Shared pieces of the bench: the configuration read from the environment, the statistics helpers
//! (percentiles, medians), raw access to the agent for the measurements (`Ctl`: Raft applied index,
//! session counts, clean-up), the library client constructor, and the raw-request floors (`Raw`: the
//! library's own requests on one keep-alive reqwest client).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consul_lock::Client;
use serde_json::{json, Value};

pub(crate) const TTL: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------------
// configuration and small helpers
// ------------------------------------------------------------------------------------------------

pub(crate) struct Config {
    pub(crate) addr: String,
    pub(crate) n: usize,
    pub(crate) rounds: usize,
    pub(crate) handoffs: u64,
    pub(crate) slow_handoffs: u64,
    pub(crate) runs: String,
    pub(crate) scale_keys: usize,
    pub(crate) scale_concurrency: usize,
    pub(crate) idle_secs: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    pub(crate) fn from_env(addr: String) -> Config {
        Config {
            addr,
            n: env_or("LOCKBENCH_N", 200),
            rounds: env_or("LOCKBENCH_ROUNDS", 5),
            handoffs: env_or("LOCKBENCH_HANDOFFS", 200),
            slow_handoffs: env_or("LOCKBENCH_SLOW_HANDOFFS", 40),
            runs: std::env::var("LOCKBENCH_RUNS").unwrap_or_else(|_| {
                "t2f,T2f,t4f,T4f,t8f,T8f,t32f,T32f,t8,T8,e4f,E4f,p4f,P4f,p8f,P8f,t4f@100,T4f@100,p4f@100,P4f@100".into()
            }),
            scale_keys: env_or("LOCKBENCH_SCALE_KEYS", 10_000),
            scale_concurrency: env_or("LOCKBENCH_SCALE_CONCURRENCY", 64),
            idle_secs: env_or("LOCKBENCH_IDLE_SECS", 10),
        }
    }
}

/// Wall-clock nanoseconds: comparable across the processes of one machine.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Raw access to the agent for the measurements themselves (never counted against the library).
#[derive(Clone)]
pub(crate) struct Ctl {
    http: reqwest::Client,
    base: String,
}

impl Ctl {
    pub(crate) fn new(addr: &str) -> Ctl {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        Ctl { http, base: format!("http://{addr}") }
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET to the agent");
        r.json().await.expect("JSON from the agent")
    }

    /// `Stats.raft.applied_index` of `/v1/agent/self`: one step per Raft write.
    pub(crate) async fn applied_index(&self) -> u64 {
        let v = self.get("/v1/agent/self").await;
        let idx = &v["Stats"]["raft"]["applied_index"];
        idx.as_str().and_then(|s| s.parse().ok()).or_else(|| idx.as_u64()).expect("Stats.raft.applied_index")
    }

    async fn session_count(&self) -> usize {
        self.get("/v1/session/list").await.as_array().map(Vec::len).unwrap_or(0)
    }

    /// Wait (bounded) until the agent has `n` sessions: background destroys have landed.
    pub(crate) async fn settle(&self, n: usize) {
        for _ in 0..200 {
            if self.session_count().await <= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pub(crate) async fn destroy_all_sessions(&self) {
        let v = self.get("/v1/session/list").await;
        for s in v.as_array().into_iter().flatten() {
            if let Some(id) = s["ID"].as_str() {
                let _ = self.http.put(format!("{}/v1/session/destroy/{id}", self.base)).send().await;
            }
        }
    }

    /// A plain `PUT /v1/kv/<key>` (the peer of a guarded write).
    pub(crate) async fn put(&self, key: &str, value: &'static str) {
        let r = self.http.put(format!("{}/v1/kv/{key}", self.base)).body(value).send().await.expect("PUT kv");
        assert!(r.status().is_success(), "PUT kv {key}: {}", r.status());
    }

    pub(crate) async fn delete_tree(&self, prefix: &str) {
        let _ = self.http.delete(format!("{}/v1/kv/{prefix}?recurse", self.base)).send().await;
    }
}

pub(crate) fn client_for(addr: &str) -> Client {
    Client::builder().address(format!("http://{addr}")).build().expect("client")
}

pub(crate) fn vm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// (1) floors: the library's own requests, raw, on one keep-alive reqwest client
// ------------------------------------------------------------------------------------------------

pub(crate) struct Raw {
    http: reqwest::Client,
    base: String,
}

const VALUE_B64: &str = "eyJob3N0bmFtZSI6ImJlbmNoIiwicGlkIjoxLCJhY3F1aXJlZF9hdF91bml4X21zIjoxNzAwMDAwMDAwMDAwLCJzZXNzaW9uX25hbWUiOiJjb25zdWwtbG9jazogYmVuY2gvZmxvb3IiLCJjcmF0ZV92ZXJzaW9uIjoiMC4xLjAifQ==";

impl Raw {
    pub(crate) fn new(addr: &str) -> Raw {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        Raw { http, base: format!("http://{addr}/v1") }
    }

    async fn put(&self, path: &str, body: String) -> (u16, Vec<u8>) {
        let r = self.http.put(format!("{}{path}", self.base)).body(body).send().await.expect("raw PUT");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("raw body").to_vec())
    }

    pub(crate) async fn create(&self, lock_delay: &str, ttl: &str) -> String {
        let body = json!({"Name": "floor", "TTL": ttl, "Behavior": "delete", "LockDelay": lock_delay,
            "Checks": [], "NodeChecks": []});
        let (s, b) = self.put("/session/create", body.to_string()).await;
        assert_eq!(s, 200, "session create: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).expect("session JSON");
        v["ID"].as_str().expect("session ID").to_owned()
    }

    pub(crate) async fn lock(&self, key: &str, sid: &str) {
        let body = json!([{"KV": {"Verb": "lock", "Key": key, "Value": VALUE_B64, "Session": sid}}]);
        let (s, b) = self.put("/txn", body.to_string()).await;
        assert_eq!(s, 200, "txn lock: {}", String::from_utf8_lossy(&b));
    }

    pub(crate) async fn release(&self, key: &str, sid: &str) {
        let body = json!([{"KV": {"Verb": "check-session", "Key": key, "Session": sid}},
            {"KV": {"Verb": "delete", "Key": key}}]);
        let (s, b) = self.put("/txn", body.to_string()).await;
        assert_eq!(s, 200, "txn release: {}", String::from_utf8_lossy(&b));
    }

    pub(crate) async fn destroy(&self, sid: &str) {
        let (s, b) = self.put(&format!("/session/destroy/{sid}"), String::new()).await;
        assert_eq!(s, 200, "session destroy: {}", String::from_utf8_lossy(&b));
    }
}
