//! Counting TCP connections from `/proc`: how many ESTABLISHED connections go to an agent's port,
//! from any process or from one process (its socket inodes under `/proc/<pid>/fd`). Linux only.
#![allow(dead_code)]

use std::collections::HashSet;

/// `(remote port, inode)` of every ESTABLISHED IPv4/IPv6 TCP socket on this host.
fn established() -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue; // 01 = ESTABLISHED
            }
            let port = f[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>()) {
                out.push((port, inode));
            }
        }
    }
    out
}

/// The socket inodes open in process `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// ESTABLISHED connections to `port` on this host (client sides only).
pub fn to_port(port: u16) -> usize {
    established().iter().filter(|(p, _)| *p == port).count()
}

/// ESTABLISHED connections of process `pid` to `port`.
pub fn of_process(pid: u32, port: u16) -> usize {
    let mine = socket_inodes(pid);
    established().iter().filter(|(p, i)| *p == port && mine.contains(i)).count()
}

/// The port of an address like `127.0.0.1:8500` or `http://127.0.0.1:8500`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("an address with a port")
}
