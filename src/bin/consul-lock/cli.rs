//! The command line: subcommands, flags, their help, and the parsers of their values.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  # cron on many hosts: run the job on one of them at a time, skip if it is already running
  consul-lock run -n jobs/nightly-report -- /usr/local/bin/nightly-report.sh

  # wait up to 5 minutes for the lock, exit 3 if it is still taken
  consul-lock run -w 300 -E 3 deploy/web -- ./deploy.sh --env prod

  # who holds it? (exit 0 free, 1 held, 2 error)
  consul-lock status deploy/web --json

  # a holder is stuck: destroy its session
  consul-lock break deploy/web --yes

  # leader election: run the service only on the leader, and show who leads
  consul-lock run --value 10.0.0.7:8080 service/billing/leader -- ./billing-server
  consul-lock leader service/billing/leader --watch

  # an agent listening on a unix socket; shell completions
  CONSUL_HTTP_ADDR=unix:///run/consul/http.sock consul-lock status deploy/web
  consul-lock completions bash > /etc/bash_completion.d/consul-lock

Connection settings come from the consul CLI's environment variables (CONSUL_HTTP_ADDR,
CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT, CONSUL_HTTP_SSL, ...); flags override them.
Exit codes of `run`: the command's own code; 1 (or -E N) lock taken; 75 lock lost while the command
ran; 125 consul-lock failed; 126/127 command not executable/not found; 128+N command killed by signal N.
See `consul-lock man` and https://github.com/consul-lock/consul-lock/blob/main/docs/CLI.md";

/// Command-line arguments of `consul-lock`.
#[derive(Debug, Parser)]
#[command(
    name = "consul-lock",
    version,
    about = "flock for a fleet: run a command under a Consul lock, inspect and break locks",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,

    /// Log what the library does to stderr (-v debug, -vv trace; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where Consul is and how to authenticate. Each flag overrides its environment variable.
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// Consul agent address: host:port, http(s)://host:port or unix:///path/to/http.sock [env: CONSUL_HTTP_ADDR; default 127.0.0.1:8500]
    #[arg(long, value_name = "ADDR", global = true)]
    pub(crate) http_addr: Option<String>,

    /// ACL token (visible in `ps`: prefer --token-file or CONSUL_HTTP_TOKEN) [env: CONSUL_HTTP_TOKEN]
    #[arg(long, value_name = "TOKEN", global = true, hide_default_value = true)]
    pub(crate) token: Option<String>,

    /// File holding the ACL token [env: CONSUL_HTTP_TOKEN_FILE]
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) token_file: Option<String>,

    /// PEM CA certificate(s) to verify the agent's TLS certificate [env: CONSUL_CACERT]
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) ca_file: Option<String>,

    /// Datacenter to query (default: the agent's own)
    #[arg(long, value_name = "DC", global = true)]
    pub(crate) datacenter: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Acquire KEY, run CMD, release KEY when CMD exits (exit code: CMD's)
    Run(RunArgs),
    /// Show whether KEY is held and by whom (exit 0 free, 1 held, 2 error)
    Status(StatusArgs),
    /// Destroy the session holding KEY, freeing it (for a stuck holder; needs --yes)
    Break(BreakArgs),
    /// Show the leader of an election on KEY (exit 0 leader, 1 none, 2 error); --watch follows it
    Leader(LeaderArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write all of them with --out-dir
    Man(ManArgs),
}

/// `consul-lock run`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock run -n jobs/backup -- /usr/local/bin/backup.sh
  consul-lock run -w 60 --ttl 30s migrations/users -- ./migrate up

  consul-lock run --limit 3 jobs/encoder -- ./encode.sh   # at most 3 at once in the fleet
  consul-lock run accounts/17 --also accounts/42 -- ./transfer   # both keys, atomically

The command sees CONSUL_LOCK_KEY, CONSUL_LOCK_SESSION, CONSUL_LOCK_FENCING_TOKEN and
CONSUL_LOCK_HELD=true. With --limit N, KEY is a semaphore prefix shared with `consul lock -n N`
(CONSUL_LOCK_KEY is then our contender key PREFIX/<session>). With --also, every key is taken
in one Consul transaction or none (CONSUL_LOCK_KEY: the sorted keys, one per line).
SIGINT, SIGTERM and SIGHUP are forwarded to it; the lock is released once it has exited.
If the lock is lost while it runs, it gets SIGTERM, then SIGKILL after --kill-after, and
consul-lock exits 75.")]
pub(crate) struct RunArgs {
    /// Give up after SECS seconds if the lock is still taken (fractions allowed; default: wait forever)
    #[arg(short = 'w', long = "timeout", value_name = "SECS", value_parser = parse_secs, conflicts_with = "no_wait")]
    pub(crate) timeout: Option<Duration>,

    /// Make one attempt: if the lock is taken, exit at once with the conflict code (same as -w 0)
    #[arg(short = 'n', long = "no-wait")]
    pub(crate) no_wait: bool,

    /// Exit code when the lock is taken (after -n, or when -w runs out)
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8))]
    pub(crate) conflict_exit_code: u8,

    /// Session TTL, 10s..=24h: a holder that cannot renew for this long loses the lock
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub(crate) ttl: Duration,

    /// After a holder's session is invalidated (crash, break, lost), nobody gets the key for this long (0..=60s)
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub(crate) lock_delay: Duration,

    /// After the lock is lost: time between the SIGTERM and the SIGKILL sent to the command
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) kill_after: Duration,

    /// Value stored in the key while held (default: JSON with hostname, pid, start time)
    #[arg(long, value_name = "STRING")]
    pub(crate) value: Option<String>,

    /// Consul session name (default "consul-lock: KEY")
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// No progress or conflict messages on stderr (errors are still printed)
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Run under one of N slots of a semaphore on the prefix KEY (Consul's semaphore recipe, as
    /// `consul lock -n N KEY`); every contender of KEY must use the same N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) limit: Option<u32>,

    /// Lock this key too (repeatable): every key, KEY included, is taken in one Consul transaction
    /// or none is, so overlapping sets never deadlock (at most 32 keys). The command sees
    /// CONSUL_LOCK_KEY as the sorted keys, one per line
    #[arg(long = "also", value_name = "KEY2", conflicts_with = "limit")]
    pub(crate) also: Vec<String>,

    /// The Consul KV key to lock, e.g. jobs/nightly-report (with --limit: the semaphore's prefix)
    #[arg(value_name = "KEY")]
    pub(crate) key: String,

    /// The command to run and its arguments (put `--` before it)
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true)]
    pub(crate) command: Vec<String>,
}

/// `consul-lock status`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock status jobs/backup            # exit 0 free, 1 held, 2 error
  consul-lock status jobs/backup --json | jq -r .hostname   # who holds it?
  CONSUL_HTTP_ADDR=unix:///run/consul/http.sock consul-lock status jobs/backup")]
pub(crate) struct StatusArgs {
    /// The Consul KV key of the lock, or a semaphore's prefix (told apart by PREFIX/.lock's flags)
    #[arg(value_name = "KEY")]
    pub(crate) key: String,

    /// Print one JSON object (stable field names, listed in the CLI reference)
    #[arg(long)]
    pub(crate) json: bool,
}

/// `consul-lock break`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock break jobs/backup         # show the session that would be destroyed
  consul-lock break jobs/backup --yes   # destroy it: the key is free after the lock-delay

The holder's command is not stopped by this: if it is a consul-lock run, it sees the lock lost,
sends its command SIGTERM and exits 75.")]
pub(crate) struct BreakArgs {
    /// The Consul KV key of the lock
    #[arg(value_name = "KEY")]
    pub(crate) key: String,

    /// Really destroy the holder's session (without it, only shows what would be broken)
    #[arg(long)]
    pub(crate) yes: bool,
}

/// `consul-lock leader`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock leader service/billing/leader                 # exit 0 leader, 1 none, 2 error
  consul-lock leader service/billing/leader --json | jq -r .value
  consul-lock leader service/billing/leader --watch --json  # one line per change, until Ctrl-C

The leader is the holder of KEY: an Election::campaign in the library, or a `consul-lock run
--value VALUE KEY -- CMD` (CMD runs only on the leader).")]
pub(crate) struct LeaderArgs {
    /// The Consul KV key of the election
    #[arg(value_name = "KEY")]
    pub(crate) key: String,

    /// Print JSON (one object; with --watch one per line; stable field names, see docs/CLI.md)
    #[arg(long)]
    pub(crate) json: bool,

    /// Keep printing one line per change (new leader, new value, no leader) until SIGINT/SIGTERM (exit 0)
    #[arg(long)]
    pub(crate) watch: bool,
}

/// `consul-lock completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock completions bash > /etc/bash_completion.d/consul-lock
  consul-lock completions zsh > \"${fpath[1]}/_consul-lock\"
  consul-lock completions fish > ~/.config/fish/completions/consul-lock.fish")]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL", value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// `consul-lock man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  consul-lock man | man -l -
  consul-lock man --out-dir /usr/local/share/man/man1   # consul-lock.1 and consul-lock-SUBCOMMAND.1")]
pub(crate) struct ManArgs {
    /// Write consul-lock.1 and one page per subcommand into DIR instead of printing consul-lock.1
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<String>,
}

/// flock's `-w`: seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a number of seconds ≥ 0"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too large"))
}

/// A duration: a number of seconds, or a number with a unit (ms, s, m, h), e.g. `1500ms`, `30s`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 15, 15s, 1500ms, 2m)"))?;
    let factor = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(n * factor).map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "x", "5d", "-1", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_secs("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_secs("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_secs("-1").is_err() && parse_secs("inf").is_err() && parse_secs("nan").is_err());
    }

    #[test]
    fn run_takes_the_command_after_dashes_or_directly() {
        let cli = Cli::try_parse_from(["consul-lock", "run", "-n", "k", "--", "sh", "-c", "exit 3"]).unwrap();
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert!(r.no_wait);
        assert_eq!(r.command, ["sh", "-c", "exit 3"]);
        let cli = Cli::try_parse_from(["consul-lock", "run", "k", "ls", "-l"]).unwrap();
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.command, ["ls", "-l"]);
        assert!(Cli::try_parse_from(["consul-lock", "run", "k"]).is_err(), "a command is required");
        assert!(Cli::try_parse_from(["consul-lock", "run", "-n", "-w", "3", "k", "true"]).is_err());
    }
}
