//! Bad-input fuzzing with proptest over keys, values, durations, addresses, tokens and Consul's
//! environment variables: never a panic; invalid input is `Error::InvalidConfig` before any request
//! (a client at a closed port, `request_count() == 0`); valid keys and values round-trip through a
//! real Consul agent.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{Client, EphemeralLock, Error, MAX_TXN_BODY_BYTES};
use proptest::prelude::*;
use support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The documented key rules (src/consul/key.rs; README, "Keys and values"), written independently of the library.
fn key_is_valid(key: &str) -> bool {
    if key.is_empty() || key.starts_with('/') || key.chars().any(char::is_control) {
        return false;
    }
    let segs: Vec<&str> = key.split('/').collect();
    segs.iter().enumerate().all(|(i, s)| *s != "." && *s != ".." && (!s.is_empty() || i == segs.len() - 1))
}

/// Pieces a valid key may contain that make trouble in URLs and paths: percent signs, query and
/// fragment marks, `+`, spaces, backslashes, non-ASCII.
const TRICKY_ALLOWED: &[&str] = &["%", "%2F", "?", "#", "+", " ", "&=", "\\", "é", "🔒"];

fn one_of(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pieces).prop_map(str::to_owned)
}

/// Keys built from the characters that make trouble: separators, dots, percent signs, query and
/// fragment marks, spaces, controls (C0, DEL, C1), non-ASCII. (Weights: every piece equally likely.)
fn any_key() -> impl Strategy<Value = String> {
    const MORE: &[&str] = &["/", ".", "..", "\u{7f}", "\u{85}", "\t", "\n", "日本"];
    let piece = prop_oneof![
        TRICKY_ALLOWED.len() as u32 => one_of(TRICKY_ALLOWED),
        MORE.len() as u32 => one_of(MORE),
        1 => "[a-zA-Z0-9_~-]{1,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// A valid key suffix (valid by construction, with the tricky characters that are allowed).
fn valid_key_suffix() -> impl Strategy<Value = String> {
    const DOTS: &[&str] = &[".x", "..."];
    let seg = proptest::collection::vec(
        prop_oneof![
            TRICKY_ALLOWED.len() as u32 => one_of(TRICKY_ALLOWED),
            DOTS.len() as u32 => one_of(DOTS),
            1 => "[a-zA-Z0-9_~.-]{1,6}",
        ],
        1..4,
    )
    .prop_map(|v| v.concat())
    .prop_filter("no dot segments", |s| s != "." && s != "..");
    (proptest::collection::vec(seg, 1..4), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut k = segs.join("/");
        if trailing {
            k.push('/');
        }
        k
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any key: invalid ones are InvalidConfig with no request; valid ones get as far as the
    /// network (a transport error from the closed port). `holder` validates the same way.
    #[test]
    fn keys_are_validated_before_any_request(key in any_key()) {
        let rt = runtime();
        let c = closed_port_client();
        let r = rt.block_on(EphemeralLock::new(key.clone()).client(c.clone()).acquire_timeout(Duration::ZERO).hold());
        let h = rt.block_on(c.holder(&key));
        if key_is_valid(&key) {
            prop_assert!(matches!(r, Err(Error::Transport(_))), "valid key {:?}: {:?}", key, r);
            prop_assert!(matches!(h, Err(Error::Transport(_))), "valid key {:?}: {:?}", key, h);
        } else {
            prop_assert!(matches!(r, Err(Error::InvalidConfig(_))), "invalid key {:?}: {:?}", key, r);
            prop_assert!(matches!(h, Err(Error::InvalidConfig(_))), "invalid key {:?}: {:?}", key, h);
            prop_assert_eq!(c.request_count(), 0, "a request was sent for invalid key {:?}", key);
        }
    }

    /// The read-write lock validates its key (and its line's keys) the same way, in every mode.
    #[test]
    fn rwlock_keys_are_validated_before_any_request(key in any_key(), write in any::<bool>()) {
        let rt = runtime();
        let c = closed_port_client();
        let lock = consul_lock::RwLock::new(key.clone()).client(c.clone()).acquire_timeout(Duration::ZERO);
        let r = match write {
            true => rt.block_on(lock.try_write()).map(|g| g.is_some()),
            false => rt.block_on(lock.try_read()).map(|g| g.is_some()),
        };
        let s = rt.block_on(c.rw_lock(&key)).map(|s| s.is_some());
        if key_is_valid(&key) {
            prop_assert!(matches!(r, Err(Error::Transport(_))), "valid key {:?}: {:?}", key, r);
            prop_assert!(matches!(s, Err(Error::Transport(_))), "valid key {:?}: {:?}", key, s);
        } else {
            prop_assert!(matches!(r, Err(Error::InvalidConfig(_))), "invalid key {:?}: {:?}", key, r);
            prop_assert!(matches!(s, Err(Error::InvalidConfig(_))), "invalid key {:?}: {:?}", key, s);
            prop_assert_eq!(c.request_count(), 0, "a request was sent for invalid key {:?}", key);
        }
    }

    /// TTL, lock-delay and max_hold in milliseconds across their limits.
    #[test]
    fn durations_are_validated_before_any_request(
        ttl_ms in prop_oneof![0u64..20_000, 86_390_000u64..86_410_000, any::<u64>()],
        delay_ms in prop_oneof![0u64..70_000, any::<u64>()],
        max_hold_ms in prop_oneof![Just(None), (0u64..3).prop_map(Some), any::<u64>().prop_map(Some)],
        timeout_ms in prop_oneof![Just(0u64), 0u64..50],
    ) {
        let rt = runtime();
        let c = closed_port_client();
        let mut lock = EphemeralLock::new("fuzz/durations")
            .client(c.clone())
            .ttl(Duration::from_millis(ttl_ms))
            .lock_delay(Duration::from_millis(delay_ms))
            .acquire_timeout(Duration::from_millis(timeout_ms));
        if let Some(m) = max_hold_ms {
            lock = lock.max_hold(Duration::from_millis(m));
        }
        let r = rt.block_on(lock.hold());
        let valid = (10_000..=86_400_000).contains(&ttl_ms) && delay_ms <= 60_000 && max_hold_ms != Some(0);
        if valid {
            prop_assert!(matches!(r, Err(Error::Transport(_))), "{:?}", r);
        } else {
            prop_assert!(matches!(r, Err(Error::InvalidConfig(_))), "{:?}", r);
            prop_assert_eq!(c.request_count(), 0);
        }
    }

    /// Addresses, tokens and datacenters given to the builder: Ok or InvalidConfig, never a panic,
    /// never a request at build time, never the token in an error or Debug.
    #[test]
    fn builder_inputs_never_panic(addr in ".{0,40}", secret in "[a-zA-Z0-9]{12}", extra in ".{0,6}", dc in "[a-z0-9-]{0,8}") {
        let token = format!("{secret}{extra}");
        let r = Client::builder().address(addr.clone()).token(token).datacenter(dc).build();
        match r {
            Ok(c) => {
                prop_assert_eq!(c.request_count(), 0);
                let dbg = format!("{:?}", c);
                prop_assert!(!dbg.contains(&secret), "token in Debug: {}", dbg);
            }
            Err(Error::InvalidConfig(m)) => prop_assert!(!m.contains(&secret), "token in error: {}", m),
            Err(e) => prop_assert!(false, "{:?}: unexpected {:?}", addr, e),
        }
    }
}

/// Consul's environment variables with arbitrary values (one test: the environment is process-wide).
#[test]
fn env_values_never_panic_and_never_send() {
    let vars = [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_NAMESPACE",
        "CONSUL_TLS_SERVER_NAME",
    ];
    let value = prop_oneof![
        "[^\u{0}]{0,30}",
        Just("true".to_owned()),
        Just("0".to_owned()),
        Just("127.0.0.1:1".to_owned()),
        Just("https://[::1]:8501".to_owned()),
        Just("unix:///x".to_owned()),
    ];
    let token = proptest::option::of(("[a-zA-Z0-9]{12}", "[^\u{0}]{0,4}"));
    let strategy = (proptest::collection::vec(proptest::option::of(value), vars.len()), token);
    let config = ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |(values, token)| {
        for (name, v) in vars.iter().zip(&values) {
            match v {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
        if let Some((secret, extra)) = &token {
            std::env::set_var("CONSUL_HTTP_TOKEN", format!("{secret}{extra}"));
        }
        let r = Client::from_env();
        for name in vars {
            std::env::remove_var(name);
        }
        let secret = token.map(|(s, _)| s).unwrap_or_else(|| "no-token-set".into());
        match r {
            Ok(c) => {
                prop_assert_eq!(c.request_count(), 0);
                prop_assert!(!format!("{:?}", c).contains(&secret), "token in Debug");
            }
            Err(Error::InvalidConfig(m)) => prop_assert!(!m.contains(&secret), "token in error: {}", m),
            Err(e) => prop_assert!(false, "{:?}: unexpected {:?}", values, e),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Values at and around the transaction limit: what fits is accepted, what does not is rejected
/// before any request.
#[test]
fn value_size_limit_is_checked_before_any_request() {
    let rt = runtime();
    // base64 grows 4/3; the JSON envelope (the key's guard op, then the lock op with key, session
    // ID and flags) takes a little more: about 210 bytes for this key.
    let fits = (MAX_TXN_BODY_BYTES - 256) / 4 * 3;
    for (len, ok) in [(0usize, true), (fits, true), (MAX_TXN_BODY_BYTES / 4 * 3 + 1, false), (600 * 1024, false)] {
        let c = closed_port_client();
        let r = rt.block_on(EphemeralLock::new("fuzz/value").client(c.clone()).value(vec![b'v'; len]).hold());
        if ok {
            assert!(matches!(r, Err(Error::Transport(_))), "{len} bytes: {r:?}");
        } else {
            assert!(matches!(r, Err(Error::InvalidConfig(_))), "{len} bytes: {r:?}");
            assert_eq!(c.request_count(), 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    /// Valid keys and arbitrary values round-trip through the real agent: the key Consul stores is
    /// exactly ours (listed with `?keys`, read raw), the value is ours byte for byte, and release
    /// deletes it.
    #[test]
    fn valid_keys_and_values_round_trip_through_consul(
        suffix in valid_key_suffix(),
        value in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let rt = runtime();
        let prefix = unique("fuzz");
        let key = format!("{prefix}/{suffix}");
        prop_assert!(key_is_valid(&key));
        let c = client();
        rt.block_on(async {
            let g = EphemeralLock::new(key.clone()).client(c.clone()).lock_delay(Duration::ZERO).value(value.clone()).hold().await;
            let g = g.unwrap_or_else(|e| panic!("valid key {key:?}: {e}"));
            let listed = raw_keys(&prefix).await;
            assert_eq!(listed, vec![key.clone()], "Consul stored a different key");
            let h = c.holder(&key).await.unwrap().expect("held");
            assert_eq!(h.session_id, g.session_id());
            assert_eq!(h.value, value);
            g.release().await.unwrap();
            assert!(raw_keys(&prefix).await.is_empty(), "release deleted the key");
        });
    }
}

/// The keys under `prefix` (an ASCII prefix), straight from Consul.
async fn raw_keys(prefix: &str) -> Vec<String> {
    let url = format!("http://{}/v1/kv/{prefix}/?keys", consul().http_addr());
    let r = reqwest::get(url).await.unwrap();
    if r.status() == 404 {
        return Vec::new();
    }
    r.json().await.unwrap()
}
