//! `consul-lock run [--limit N | --also KEY2… | --shared | --exclusive] KEY -- CMD...`: wait for
//! the lock, a semaphore slot, every key of a set or a read-write lock (showing progress), run the
//! command under it, release it once the command has exited, and exit with the command's code.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use consul_lock::{Client, EphemeralLock, Error, MultiLock, RwLock, Semaphore};

use crate::cli::RunArgs;
use crate::exit::{self, Failure};
use crate::held::Held;
use crate::progress::{self, Progress};
use crate::signals::Caught;
use crate::status::Report;
use crate::{child, signals, timefmt};

pub(crate) async fn run(client: Client, args: RunArgs) -> Result<i32, Failure> {
    let mut signals = signals::install()
        .map_err(|e| Failure::new(exit::RUN_FAILED, format!("cannot install the signal handlers: {e}")))?;

    let timeout = if args.no_wait { Duration::ZERO } else { args.timeout.unwrap_or(Duration::MAX) };

    // 1. One attempt first: bad settings or an unreachable agent are reported at once (a waiting
    //    acquire rides out Consul outages). It reads the key before making a session, so finding
    //    it held costs one read; the uncontended case, that read more.
    let first = take(&client, &args, Duration::ZERO).await;
    let guard = match first {
        Ok(g) => g,
        // Not acquired, or the agent closed our new connection (at its cap of connections per
        // client address): both are waited through until the deadline.
        Err(e) if !timeout.is_zero() && (e.is_not_acquired() || saturated(&client, &e)) => {
            match wait(&client, &args, take(&client, &args, timeout), &mut signals).await? {
                Ok(g) => g,
                Err(code) => return Ok(code),
            }
        }
        Err(e) => return conflict_or_failure(&args, timeout, e),
    };
    tracing::debug!(session = guard.session_id(), token = guard.token(), "acquired");

    // A signal that arrived before the command exists (during the first attempt) cancels the run.
    if let Ok(sig) = signals.try_recv() {
        let released = guard.release().await;
        if let Err(e) = released {
            say_err!("consul-lock: warning: could not release {:?} ({})", args.key, exit::one_line(&e.to_string()));
        }
        if !args.quiet {
            say_err!("consul-lock: interrupted by {} before the command started", signals::name(sig.signo));
        }
        return Ok(128 + sig.signo);
    }

    // 2. Run the command under the lock.
    let ended = child::run(&guard, &args.command, args.kill_after, &mut signals).await;
    let lost = !guard.is_held();

    // 3. Release (a lost lock only cleans up), then report.
    let released = guard.release().await;
    let ended = ended?;
    let code = child::exit_code(ended.status);
    if let Err(e) = released {
        say_err!(
            "consul-lock: warning: could not release {:?} ({}); it is freed when the session's TTL runs out",
            args.key,
            exit::one_line(&e.to_string())
        );
    }
    if ended.stopped_for_lost_lock || lost {
        say_err!(
            "consul-lock: error: the lock on {:?} was lost while the command ran (the command exited with {code}); \
             exiting {}",
            args.key,
            exit::LOCK_LOST
        );
        return Ok(exit::LOCK_LOST);
    }
    Ok(code)
}

/// Take the lock, or a slot with `--limit`, waiting up to `timeout`.
async fn take(client: &Client, args: &RunArgs, timeout: Duration) -> consul_lock::Result<Held> {
    let value = args.value.clone().map(String::into_bytes);
    if let Some(limit) = args.limit {
        let mut sem = Semaphore::new(args.key.clone(), limit)
            .client(client.clone())
            .ttl(args.ttl)
            .lock_delay(args.lock_delay)
            .acquire_timeout(timeout);
        if let Some(v) = value {
            sem = sem.value(v);
        }
        if let Some(n) = &args.name {
            sem = sem.session_name(n.clone());
        }
        return sem.hold().await.map(Held::Slot);
    }
    if !args.also.is_empty() {
        return take_set(client, args, timeout).await;
    }
    if args.shared || args.exclusive {
        let mut lock = RwLock::new(args.key.clone())
            .client(client.clone())
            .ttl(args.ttl)
            .lock_delay(args.lock_delay)
            .acquire_timeout(timeout);
        if let Some(v) = value {
            lock = lock.value(v);
        }
        if let Some(n) = &args.name {
            lock = lock.session_name(n.clone());
        }
        return match args.exclusive {
            true => lock.write().await.map(Held::Write),
            false => lock.read().await.map(Held::Read),
        };
    }
    let mut lock = EphemeralLock::new(args.key.clone())
        .client(client.clone())
        .ttl(args.ttl)
        .lock_delay(args.lock_delay)
        .acquire_timeout(timeout);
    if let Some(v) = value {
        lock = lock.value(v);
    }
    if let Some(n) = &args.name {
        lock = lock.session_name(n.clone());
    }
    lock.hold().await.map(Held::Lock)
}

/// Take KEY and every `--also` key in one transaction, waiting up to `timeout`.
async fn take_set(client: &Client, args: &RunArgs, timeout: Duration) -> consul_lock::Result<Held> {
    let keys = std::iter::once(&args.key).chain(&args.also);
    let mut set =
        MultiLock::new(keys).client(client.clone()).ttl(args.ttl).lock_delay(args.lock_delay).acquire_timeout(timeout);
    if let Some(v) = &args.value {
        set = set.value(v.clone().into_bytes());
    }
    if let Some(n) = &args.name {
        set = set.session_name(n.clone());
    }
    let guard = set.hold().await?;
    let names = guard.keys().join("\n");
    Ok(Held::Set(guard, names))
}

/// The lock was not had: the conflict code (NotAcquired), or consul-lock's own failure.
fn conflict_or_failure(args: &RunArgs, timeout: Duration, e: Error) -> Result<i32, Failure> {
    let Error::NotAcquired { holder, waited, .. } = e else {
        return Err(Failure::from_lib(exit::RUN_FAILED, &e, &address_of(&e)));
    };
    if !args.quiet {
        let who = match (holder.as_deref(), args.limit) {
            (_, Some(n)) => format!("{n} holders (all slots taken)"),
            (Some(h), None) => Report::new(&args.key, Some(h), None).holder_line(),
            (None, None) => "another session".to_owned(),
        };
        let waited = if timeout.is_zero() {
            "not waiting (-n)".to_owned()
        } else {
            format!("gave up after {}", timefmt::short(waited))
        };
        say_err!("consul-lock: {:?} is held by {who}; {waited}", args.key);
    }
    Ok(i32::from(args.conflict_exit_code))
}

/// The agent closed our connection before answering: most likely its per-client connection cap.
fn saturated(client: &Client, e: &Error) -> bool {
    matches!(e, Error::Transport(_)) && client.connection_resets() > 0
}

/// Say once why waiting is slow: the agent refuses new connections.
fn say_cap_once(client: &Client, said: &mut bool, quiet: bool) {
    if !*said && client.connection_resets() > 0 {
        *said = true;
        if !quiet {
            say_err!(
                "consul-lock: Consul at {} closes new connections: the agent limits HTTP connections per client \
                 address (limits.http_max_conns_per_client, 200 by default), shared by every process of this \
                 host; still waiting",
                client.address()
            );
        }
    }
}

fn address_of(e: &Error) -> String {
    match e {
        Error::Transport(t) => t.address().to_owned(),
        _ => "the configured address".to_owned(),
    }
}

/// Wait for the lock, showing progress. `Ok(Err(code))`: interrupted or not acquired; exit with `code`.
async fn wait(
    client: &Client,
    args: &RunArgs,
    take: impl std::future::Future<Output = consul_lock::Result<Held>>,
    signals: &mut UnboundedReceiver<Caught>,
) -> Result<Result<Held, i32>, Failure> {
    let timeout = args.timeout.unwrap_or(Duration::MAX);
    let mut progress = Progress::new(&args.key, args.quiet);
    let (mut seen, poller) = progress::poll_holder(client.clone(), args.key.clone(), args.limit);
    let mut hold = Box::pin(take);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut cap_check = tokio::time::interval(Duration::from_millis(250));
    let mut said_cap = false;
    let waited = loop {
        tokio::select! {
            r = &mut hold => break Waited::Done(r),
            _ = ticker.tick(), if progress.is_tty() => progress.tick(),
            _ = cap_check.tick(), if !said_cap => {
                if client.connection_resets() > 0 {
                    progress.clear();
                    say_cap_once(client, &mut said_cap, args.quiet);
                }
            }
            Ok(()) = seen.changed() => {
                let s = seen.borrow_and_update().clone();
                progress.update(s);
            }
            Some(sig) = signals.recv() => break Waited::Interrupted(sig.signo),
        }
    };
    poller.abort();
    match waited {
        Waited::Done(Ok(g)) => {
            progress.finish(&format!("acquired {:?} (fencing token {})", args.key, g.token()));
            Ok(Ok(g))
        }
        Waited::Interrupted(signo) => {
            // Dropping the acquire makes the library clean up (in the background; main drains it).
            drop(hold);
            progress.clear();
            if !args.quiet {
                say_err!("consul-lock: interrupted by {} while waiting for {:?}", signals::name(signo), args.key);
            }
            Ok(Err(128 + signo))
        }
        Waited::Done(Err(e)) => {
            progress.clear();
            conflict_or_failure(args, timeout, e).map(Err)
        }
    }
}

/// How the wait for the lock ended.
enum Waited {
    Done(consul_lock::Result<Held>),
    Interrupted(i32),
}
