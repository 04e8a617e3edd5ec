//! `consul-lock leader KEY [--json] [--watch]`: who leads an election (the holder of its key), once
//! or as one line per change until SIGINT/SIGTERM.

use base64::Engine as _;
use serde::Serialize;

use consul_lock::{Client, Election, Leader};

use crate::exit::{self, Failure};
use crate::signals;

/// One state of the election. Also the `--json` schema (field names are stable, see docs/CLI.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LeaderReport {
    pub(crate) key: String,
    pub(crate) leader: bool,
    pub(crate) session: Option<String>,
    pub(crate) term: Option<u64>,
    /// The leader's value as UTF-8 text; `null` when it is not UTF-8 (see `value_base64`).
    pub(crate) value: Option<String>,
    pub(crate) value_base64: Option<String>,
}

impl LeaderReport {
    fn new(key: &str, leader: Option<&Leader>) -> Self {
        LeaderReport {
            key: key.to_owned(),
            leader: leader.is_some(),
            session: leader.map(|l| l.session_id.clone()),
            term: leader.map(|l| l.term),
            value: leader.and_then(|l| String::from_utf8(l.value.clone()).ok()),
            value_base64: leader.map(|l| base64::engine::general_purpose::STANDARD.encode(&l.value)),
        }
    }

    fn print(&self, json: bool) -> Result<(), Failure> {
        if json {
            let out = serde_json::to_string(self).map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
            say!("{out}");
        } else if let (Some(s), Some(t)) = (&self.session, self.term) {
            let value = self
                .value
                .clone()
                .unwrap_or_else(|| format!("(binary) {}", self.value_base64.as_deref().unwrap_or("")));
            say!("{}: leader {value} (session {s}, term {t})", self.key);
        } else {
            say!("{}: no leader", self.key);
        }
        Ok(())
    }
}

/// Exit 0 when there is a leader, 1 when there is none, 2 on error; `--watch`: 0 when interrupted.
pub(crate) async fn leader(client: &Client, key: &str, json: bool, watch: bool) -> Result<i32, Failure> {
    let election = Election::new(key).client(client.clone());
    let fail = |e: consul_lock::Error| Failure::from_lib(exit::ERROR, &e, client.address());
    if !watch {
        let leader = election.leader().await.map_err(fail)?;
        LeaderReport::new(key, leader.as_ref()).print(json)?;
        return Ok(if leader.is_some() { 0 } else { 1 });
    }
    let mut signals =
        signals::install().map_err(|e| Failure::new(exit::ERROR, format!("cannot install signal handlers: {e}")))?;
    let mut states = election.observe();
    let mut first = true;
    loop {
        tokio::select! {
            caught = signals.recv() => {
                if caught.is_some_and(|c| c.signo == libc::SIGHUP) {
                    continue;
                }
                return Ok(0);
            }
            state = states.next() => match state {
                Ok(leader) => LeaderReport::new(key, leader.as_ref()).print(json)?,
                // Before the first answer an error is final (a bad key, no agent); later ones pass.
                Err(e) if first => return Err(fail(e)),
                Err(e) => say_err!("consul-lock: {}; still watching", e),
            },
        }
        first = false;
    }
}
