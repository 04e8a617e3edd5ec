//! Who holds a key: the KV entry as Consul returns it, and the default holder value we write.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The current holder of a lock key, as returned by [`Client::holder`](crate::Client::holder) and
/// carried by [`Error::NotAcquired`](crate::Error::NotAcquired).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The Consul session that holds the key.
    pub session_id: String,
    /// Consul's `LockIndex` for the key. Under delete-on-release it is almost always 1: it is *not*
    /// a fencing token (use [`modify_index`](Holder::modify_index)).
    pub lock_index: u64,
    /// The key's `ModifyIndex`: the holder's fencing token when it acquired with this crate.
    pub modify_index: u64,
    /// The raw value stored in the key.
    pub value: Vec<u8>,
    /// The value parsed as this crate's default holder JSON, when it is one.
    pub info: Option<HolderInfo>,
}

/// The JSON this crate writes into a lock key by default, so that anyone can see who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct HolderInfo {
    /// Host name of the holding process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Process id of the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the lock was acquired, in milliseconds since the Unix epoch (holder's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at_unix_ms: Option<u64>,
    /// The session name the holder chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Version of the crate that wrote the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crate_version: Option<String>,
}

impl HolderInfo {
    /// Info about this process, as written by default when acquiring.
    pub fn current(session_name: Option<&str>) -> Self {
        HolderInfo {
            hostname: hostname(),
            pid: Some(std::process::id()),
            acquired_at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis() as u64),
            session_name: session_name.map(str::to_owned),
            crate_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A KV entry as Consul's API returns it (`GET /v1/kv/<key>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvEntry {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub lock_index: u64,
    #[serde(default)]
    pub flags: u64,
    #[serde(default)]
    pub modify_index: u64,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
}

impl KvEntry {
    /// The session holding the key, if any (Consul omits the field or leaves it empty when free).
    pub(crate) fn holder_session(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }

    /// The value as stored (decoded from base64); `None` when absent or not valid base64.
    pub(crate) fn raw_value(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(self.value.as_deref()?).ok()
    }

    /// Turn a held entry into a [`Holder`]; `None` when no session holds it.
    pub(crate) fn into_holder(self) -> Result<Option<Holder>, String> {
        let Some(session_id) = self.holder_session().map(str::to_owned) else {
            return Ok(None);
        };
        let value = match &self.value {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| format!("KV value is not valid base64: {e}"))?,
            None => Vec::new(),
        };
        let info =
            serde_json::from_slice::<HolderInfo>(&value).ok().filter(|i| i.pid.is_some() || i.hostname.is_some());
        Ok(Some(Holder { session_id, lock_index: self.lock_index, modify_index: self.modify_index, value, info }))
    }
}

/// Read once per process: every acquire writes it, and a file read per lock cycle is measurable.
fn hostname() -> Option<String> {
    static HOSTNAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HOSTNAME
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .or_else(|| std::env::var("COMPUTERNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_held_entry_and_info() {
        let info = HolderInfo::current(Some("n"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(info.to_json());
        let e: KvEntry = serde_json::from_str(&format!(
            r#"{{"LockIndex":1,"Key":"k","Flags":0,"Value":"{b64}","Session":"s1","CreateIndex":3,"ModifyIndex":7}}"#
        ))
        .unwrap();
        let h = e.into_holder().unwrap().unwrap();
        assert_eq!(h.session_id, "s1");
        assert_eq!(h.modify_index, 7);
        assert_eq!(h.info.unwrap().pid, Some(std::process::id()));
    }

    #[test]
    fn free_entry_and_foreign_values() {
        let e: KvEntry = serde_json::from_str(r#"{"Key":"k","Session":""}"#).unwrap();
        assert!(e.into_holder().unwrap().is_none());
        let e: KvEntry = serde_json::from_str(r#"{"Key":"k","Session":"s","Value":"aGk="}"#).unwrap();
        let h = e.into_holder().unwrap().unwrap();
        assert_eq!(h.value, b"hi");
        assert!(h.info.is_none());
        let e: KvEntry = serde_json::from_str(r#"{"Key":"k","Session":"s","Value":"!!"}"#).unwrap();
        assert!(e.into_holder().is_err());
    }
}
