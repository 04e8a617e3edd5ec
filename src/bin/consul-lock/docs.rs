//! `consul-lock completions SHELL` and `consul-lock man`: shell completion scripts and man pages,
//! generated from the clap definition in cli.rs (so they never drift from the real flags).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{self, Failure};

/// Print the completion script for `args.shell` to stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<i32, Failure> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "consul-lock", &mut out);
    write_stdout(&out)
}

/// Print the main man page to stdout, or write every page (one per subcommand too) to `--out-dir`.
pub(crate) fn man(args: &ManArgs) -> Result<i32, Failure> {
    let pages = man_pages().map_err(|e| Failure::new(exit::ERROR, format!("cannot render the man page: {e}")))?;
    let Some(dir) = &args.out_dir else {
        return write_stdout(&pages[0].1);
    };
    for (name, page) in &pages {
        let path = Path::new(dir).join(name);
        std::fs::write(&path, page)
            .map_err(|e| Failure::new(exit::ERROR, format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(0)
}

/// (file name, roff) of `consul-lock.1`, then `consul-lock-SUBCOMMAND.1` for each subcommand.
pub(crate) fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    cmd.build(); // propagates the global flags and the version into the subcommands
    let mut pages = vec![("consul-lock.1".to_owned(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("consul-lock-{}", sub.get_name());
        let page = render(sub.clone().name(name.clone()).display_name(name.clone()))?;
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}

fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

fn write_stdout(bytes: &[u8]) -> Result<i32, Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot write to stdout: {e}")))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages checked in under man/ are the ones the current clap definition renders.
    #[test]
    fn checked_in_man_pages_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let pages = man_pages().unwrap();
        let mut stale = Vec::new();
        for (name, page) in &pages {
            if std::fs::read(dir.join(name)).ok().as_ref() != Some(page) {
                stale.push(name.as_str());
            }
        }
        let expected: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        present.retain(|n| n.ends_with(".1") && !expected.contains(&n.as_str()));
        assert!(
            stale.is_empty() && present.is_empty(),
            "man pages out of date (stale or missing: {stale:?}; not generated: {present:?}); regenerate with \
             `cargo run -- man --out-dir man`"
        );
    }

    #[test]
    fn completion_scripts_name_the_subcommands() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "consul-lock", &mut out);
            let script = String::from_utf8(out).unwrap();
            for word in ["run", "status", "break", "http-addr", "no-wait"] {
                assert!(script.contains(word), "{shell} completions lack {word}");
            }
        }
    }
}
