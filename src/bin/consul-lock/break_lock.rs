//! `consul-lock break KEY --yes`: destroy the session of a stuck holder.

use consul_lock::Client;

use crate::exit::{self, Failure};
use crate::status::Report;
use crate::timefmt;

/// Exit 0 when a holder was broken, 1 when the key was free, 2 on error (or without `--yes`).
pub(crate) async fn break_lock(client: &Client, key: &str, yes: bool) -> Result<i32, Failure> {
    let report = Report::read(client, key, exit::ERROR).await?;
    let Some(session) = report.session.clone() else {
        say!("{key}: free, nothing to break");
        return Ok(1);
    };
    if !yes {
        return Err(Failure::new(
            exit::ERROR,
            format!("refusing to break {key:?} without --yes; held by {}", report.holder_line()),
        )
        .hint("make sure the holder is really stuck (its command may still be running), then add --yes"));
    }
    client.destroy_session(&session).await.map_err(|e| Failure::from_lib(exit::ERROR, &e, client.address()))?;
    say!("broke {key:?}: destroyed {}", report.holder_line());
    if let Some(ms) = report.lock_delay_ms.filter(|ms| *ms > 0) {
        say!(
            "the key can be taken again after the session's lock-delay ({})",
            timefmt::short(std::time::Duration::from_millis(ms))
        );
    }
    Ok(0)
}
