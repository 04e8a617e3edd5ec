//! What `run` shows on stderr while it waits for a lock: on a terminal, one line redrawn in place
//! (spinner, elapsed time, current holder); otherwise one line per change of holder.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use consul_lock::Client;

use crate::status::Report;
use crate::timefmt;

/// When the display starts: an uncontended lock is taken well before, and shows nothing.
pub(crate) const QUIET_START: Duration = Duration::from_millis(300);
/// How often the holder is re-read while waiting (a plain read, not a blocking query).
const POLL: Duration = Duration::from_secs(2);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The holder as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Unknown,
    Free,
    Held {
        session: String,
        report: Box<Report>,
    },
    /// A semaphore with every slot taken: how many holders, of how many slots.
    Full {
        holders: usize,
        limit: i64,
    },
    Error(String),
}

impl Seen {
    fn describe(&self, compact: bool) -> String {
        match self {
            Seen::Unknown => "looking up the holder".into(),
            Seen::Free => "the key is free (in its lock-delay, or just released); retrying".into(),
            Seen::Held { report, .. } if compact => format!("held by {}", report.holder_short()),
            Seen::Held { report, .. } => format!("held by {}", report.holder_line()),
            Seen::Full { holders, limit } => format!("{holders} of {limit} slots taken"),
            Seen::Error(e) => format!("cannot read the holder ({e}); still trying"),
        }
    }

    /// Changes worth a line: another holder, freed, failing — not a new "ago".
    fn same_state(&self, other: &Seen) -> bool {
        match (self, other) {
            (Seen::Held { session: a, .. }, Seen::Held { session: b, .. }) => a == b,
            (Seen::Error(_), Seen::Error(_)) => true,
            (a, b) => a == b,
        }
    }
}

/// Re-read the holder of `key` (with `limit`: the semaphore on the prefix `key`) every [`POLL`]
/// until dropped (abort the task).
pub(crate) fn poll_holder(
    client: Client,
    key: String,
    limit: Option<u32>,
) -> (watch::Receiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Seen::Unknown);
    let task = tokio::spawn(async move {
        tokio::time::sleep(QUIET_START).await;
        loop {
            let seen = if limit.is_some() { read_slots(&client, &key).await } else { read_holder(&client, &key).await };
            if tx.send(seen).is_err() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    });
    (rx, task)
}

async fn read_holder(client: &Client, key: &str) -> Seen {
    match client.holder(key).await {
        Ok(None) => Seen::Free,
        Ok(Some(h)) => {
            let report = Box::new(Report::new(key, Some(&h), None));
            Seen::Held { session: h.session_id, report }
        }
        Err(e) => Seen::Error(crate::exit::one_line(&e.to_string())),
    }
}

async fn read_slots(client: &Client, prefix: &str) -> Seen {
    match client.semaphore(prefix).await {
        Ok(None) => Seen::Free,
        Ok(Some(s)) => Seen::Full { holders: s.holders.len(), limit: s.limit },
        Err(e) => Seen::Error(crate::exit::one_line(&e.to_string())),
    }
}

/// The waiting display.
pub(crate) struct Progress {
    key: String,
    enabled: bool,
    tty: bool,
    start: Instant,
    seen: Seen,
    frame: usize,
    /// Something was printed (so the outcome gets a line too).
    shown: bool,
}

impl Progress {
    pub(crate) fn new(key: &str, quiet: bool) -> Self {
        Progress {
            key: key.to_owned(),
            enabled: !quiet,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            seen: Seen::Unknown,
            frame: 0,
            shown: false,
        }
    }

    pub(crate) fn is_tty(&self) -> bool {
        self.tty
    }

    /// A new reading of the holder.
    pub(crate) fn update(&mut self, seen: Seen) {
        let changed = !seen.same_state(&self.seen);
        self.seen = seen;
        if !self.enabled || self.seen == Seen::Unknown {
            return;
        }
        if self.tty {
            self.tick();
        } else if changed {
            self.shown = true;
            say_err!(
                "consul-lock: waiting for {:?} ({}): {}",
                self.key,
                timefmt::short(self.start.elapsed()),
                self.seen.describe(false)
            );
        }
    }

    /// Redraw the terminal line.
    pub(crate) fn tick(&mut self) {
        if !self.enabled || !self.tty || self.start.elapsed() < QUIET_START {
            return;
        }
        self.shown = true;
        self.frame = (self.frame + 1) % SPINNER.len();
        let mut line = format!(
            "{} waiting for {:?} {}: {}",
            SPINNER[self.frame],
            self.key,
            timefmt::short(self.start.elapsed()),
            self.seen.describe(true)
        );
        truncate_chars(&mut line, terminal_width().saturating_sub(1));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// The wait is over: clear the terminal line; say how it ended if anything was shown.
    pub(crate) fn finish(&mut self, outcome: &str) {
        if self.clear() {
            say_err!("consul-lock: {outcome} after {}", timefmt::short(self.start.elapsed()));
        }
    }

    /// Clear the terminal line, if any. `true` when progress was shown.
    pub(crate) fn clear(&mut self) -> bool {
        if !self.enabled || !self.shown {
            return false;
        }
        if self.tty {
            say_err_raw!("\r\x1b[K");
        }
        true
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}
