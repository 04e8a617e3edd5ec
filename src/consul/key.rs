//! Lock keys: what is accepted, and how a key becomes a URL path.
//!
//! Checked before any request so that a bad key is an [`Error::InvalidConfig`], never a surprising
//! answer from Consul (or from Go's HTTP path cleaning, which rewrites `.`/`..`/`//` segments).

use crate::error::{Error, Result};

/// Largest value Consul accepts in one KV entry (`kv_max_value_size`, 512 KiB by default).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// Largest `/v1/txn` request body Consul accepts (`txn_max_req_len`, 512 KiB by default). The lock
/// is taken with a transaction (it returns the fencing token in the same round trip), so the value,
/// base64-encoded inside the JSON request, must fit this: about 383 KiB of raw value.
pub const MAX_TXN_BODY_BYTES: usize = 512 * 1024;

/// The segment under a lock key where its waiters queue (fair mode, and the default mode's waiters).
const QUEUE_SEGMENT: &str = ".consul-lock-queue/";

/// The prefix under which the waiters of `key` queue (it starts with `key`).
pub(crate) fn queue_prefix(key: &str) -> String {
    if key.ends_with('/') {
        format!("{key}{QUEUE_SEGMENT}")
    } else {
        format!("{key}/{QUEUE_SEGMENT}")
    }
}

/// Check a key against the rules (README: "Keys and values"): non-empty, no leading `/`, no control
/// characters, no `.`, `..` or empty segments.
pub(crate) fn validate(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidConfig(format!("invalid lock key {key:?}: {why}")));
    if key.is_empty() {
        return bad("the key is empty");
    }
    if key.starts_with('/') {
        return bad("the key must not start with '/'");
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return bad(&format!("the key contains the control character U+{:04X}", c as u32));
    }
    let segments: Vec<&str> = key.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            ".." => return bad("'..' segments are not allowed"),
            "." => return bad("'.' segments are not allowed"),
            // A trailing '/' is a legal Consul key ("folder"); an empty segment inside is not
            // (Consul's HTTP server would redirect the request to a cleaned path).
            "" if i != last => return bad("empty segments ('//') are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// Percent-encode each path segment of a (validated) key, keeping the `/` separators.
pub(crate) fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_component(seg, &mut out);
    }
    out
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub(crate) fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_keys() {
        for k in ["", "/a", "a/../b", "..", "a/..", "a/./b", "a//b", "a\nb", "a\u{7f}", "a\u{85}b", "\0"] {
            assert!(matches!(validate(k), Err(Error::InvalidConfig(_))), "{k:?} accepted");
        }
    }

    #[test]
    fn accepts_good_keys() {
        for k in ["a", "a/b", "a/", "jobs/42", "with space", "q?x#y%z", "ünï/☃", "a..b", ".hidden"] {
            validate(k).unwrap_or_else(|e| panic!("{k:?} rejected: {e}"));
        }
    }

    #[test]
    fn encodes_per_segment() {
        assert_eq!(encode_path("a b/c?d#e%f"), "a%20b/c%3Fd%23e%25f");
        assert_eq!(encode_path("ü/"), "%C3%BC/");
    }
}
