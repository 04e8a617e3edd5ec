//! `consul-lock`: flock for a fleet. Run a command under a Consul lock, inspect and break locks.
//! Built only on the public API of the `consul_lock` library. See docs/CLI.md.

/// `println!` that never panics: a closed stdout (`| head`) must not abort a run holding a lock.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (stderr may be closed, e.g. a cron job's pipe).
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics.
macro_rules! say_err_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod break_lock;
mod child;
mod cli;
mod connect;
mod docs;
mod exit;
mod held;
mod leader;
mod progress;
mod run;
mod signals;
mod status;
mod timefmt;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command};
use exit::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(Failure::new(exit::RUN_FAILED, format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        let out = dispatch(cli).await;
        drain_background_work(Duration::from_secs(2)).await;
        out
    });
    match result {
        Ok(code) => exit_code(code),
        Err(f) => report(f),
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Run(args) => {
            let client = connect::client(&cli.conn, exit::RUN_FAILED)?;
            run::run(client, args).await
        }
        Command::Status(args) => {
            let client = connect::client(&cli.conn, exit::ERROR)?;
            status::status(&client, &args.key, args.json).await
        }
        Command::Break(args) => {
            let client = connect::client(&cli.conn, exit::ERROR)?;
            break_lock::break_lock(&client, &args.key, args.yes).await
        }
        Command::Leader(args) => {
            let client = connect::client(&cli.conn, exit::ERROR)?;
            leader::leader(&client, &args.key, args.json, args.watch).await
        }
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    }
}

/// The library finishes some work in background tasks (destroying a released lock's session):
/// let it complete, for at most `limit`, before the runtime and its tasks are dropped.
async fn drain_background_work(limit: Duration) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let end = tokio::time::Instant::now() + limit;
    while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn report(f: Failure) -> ExitCode {
    say_err!("{f}");
    exit_code(f.code)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(exit::RUN_FAILED as u8))
}

/// clap's errors as one line plus a hint; `--help` and `--version` print as usual and exit 0.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return exit_code(exit::ERROR);
    }
    // The first paragraph of clap's message ("error: …", sometimes followed by the missing arguments).
    let rendered = e.to_string();
    let paragraph: Vec<&str> =
        rendered.lines().map(str::trim).skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
    let joined = paragraph.join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    report(Failure::new(exit::ERROR, message).hint("see `consul-lock --help` (or `consul-lock <COMMAND> --help`)"))
}

fn init_tracing(verbose: u8) {
    if verbose == 0 && std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let default = match verbose {
        0 | 1 => "consul_lock=debug",
        _ => "consul_lock=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Quiet(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A writer that reports success even when stderr is gone: tracing-subscriber reacts to a write error
/// with `eprintln!`, which panics on a closed stderr.
struct Quiet<W>(W);

impl<W: std::io::Write> std::io::Write for Quiet<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}
