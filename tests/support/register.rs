//! The fenced register the partition workload protects: one small file per key holding
//! (highest token seen, value, write sequence number), shared by processes through `flock`.
//! A read or write carrying a token lower than the highest seen is rejected; an accepted read or
//! write raises the highest token seen, so a stale holder can neither write after a newer holder
//! has read, nor read after it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The stored state of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    pub max_token: u64,
    pub value: u64,
    /// Accepted writes so far; the sequence number of the latest one.
    pub seq: u64,
}

/// A register directory (one file per key).
#[derive(Debug, Clone)]
pub struct Register {
    dir: PathBuf,
}

/// What the register said: `Ok` with the value read or the write's sequence number, `Err` with
/// the highest token it had seen (the caller's token was lower).
pub type Fenced = Result<u64, u64>;

impl Register {
    pub fn new(dir: &Path) -> Register {
        std::fs::create_dir_all(dir).expect("register dir");
        Register { dir: dir.to_owned() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key.replace('/', "_"))
    }

    /// Read `key`'s value with `token`.
    pub fn read(&self, key: &str, token: u64) -> Fenced {
        self.update(key, |c| {
            if token < c.max_token {
                return Err(c.max_token);
            }
            c.max_token = token;
            Ok(c.value)
        })
    }

    /// Write `value` with `token`; `Ok(seq)` when accepted.
    pub fn write(&self, key: &str, token: u64, value: u64) -> Fenced {
        self.update(key, |c| {
            if token < c.max_token {
                return Err(c.max_token);
            }
            c.max_token = token;
            c.value = value;
            c.seq += 1;
            Ok(c.seq)
        })
    }

    /// The current state of `key` (zero when never written).
    pub fn cell(&self, key: &str) -> Cell {
        self.update(key, |c| Ok::<Cell, u64>(*c)).expect("infallible")
    }

    fn update<T>(&self, key: &str, f: impl FnOnce(&mut Cell) -> Result<T, u64>) -> Result<T, u64> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path(key))
            .expect("register file");
        let _lock = Flock::take(&file);
        let mut cell = parse(&mut file);
        let before = cell;
        let r = f(&mut cell);
        if cell != before {
            file.set_len(0).expect("truncate register");
            file.seek(SeekFrom::Start(0)).expect("seek register");
            write!(file, "{} {} {}", cell.max_token, cell.value, cell.seq).expect("write register");
            file.sync_data().expect("sync register");
        }
        r
    }
}

fn parse(file: &mut File) -> Cell {
    let mut s = String::new();
    file.read_to_string(&mut s).expect("read register");
    let f: Vec<u64> = s.split_whitespace().map(|x| x.parse().expect("register file holds numbers")).collect();
    match f[..] {
        [] => Cell::default(),
        [max_token, value, seq] => Cell { max_token, value, seq },
        _ => panic!("register file holds {s:?}"),
    }
}

/// An exclusive `flock` on a file descriptor, released on drop (declared after the file, so
/// dropped before it).
struct Flock(std::os::fd::RawFd);

impl Flock {
    fn take(file: &File) -> Flock {
        // SAFETY: flock(2) on an open file descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        Flock(file.as_raw_fd())
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is still open (the file outlives this guard).
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}
