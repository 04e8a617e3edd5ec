//! The partition history checker as a program: reads a history (JSON lines, as written by
//! `examples/partition.rs` and `tests/partition.rs`), prints its figures, and exits 1 with the
//! offending lines when a check fails (see `tests/support/history.rs` for the checks).
//!
//! ```sh
//! cargo run --all-features --example partition_check -- target/partition-long/history.jsonl
//! ```

#[path = "../tests/support/history.rs"]
#[allow(dead_code)]
mod history;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: partition_check <history.jsonl>");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(2)
    });
    let report = history::check(&text);
    println!("{}", report.figures());
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
