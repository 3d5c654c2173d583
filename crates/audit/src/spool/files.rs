//! The spool's on-disk layout: the instance lock, segment file names, the replay
//! checkpoint, and removing a replayed directory.
//!
//! Why apart: both the append and the replay side must agree on these names and
//! formats. This module holds no state.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Cursor, SEGMENT_EXT};

pub(super) fn lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.{SEGMENT_EXT}"))
}

/// Segment numbers present in `dir`, ascending.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".jsonl") {
            if let Ok(seq) = stem.parse::<u64>() {
                v.push(seq);
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

pub(super) fn read_checkpoint(dir: &Path) -> Cursor {
    let Ok(text) = fs::read_to_string(dir.join("checkpoint")) else {
        return Cursor::default();
    };
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(seq)), Some(Ok(offset))) => Cursor { seq, offset },
        _ => Cursor::default(),
    }
}

pub(super) fn write_checkpoint(dir: &Path, c: Cursor) -> io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    fs::write(&tmp, format!("{} {}\n", c.seq, c.offset))?;
    fs::rename(&tmp, dir.join("checkpoint"))
}

/// Counts complete lines of `dir` from cursor `c` on.
pub(super) fn count_lines_from(dir: &Path, c: Cursor) -> io::Result<u64> {
    let mut n = 0u64;
    for seq in list_segments(dir)? {
        if seq < c.seq {
            continue;
        }
        let mut f = File::open(segment_path(dir, seq))?;
        if seq == c.seq {
            f.seek(SeekFrom::Start(c.offset))?;
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += buf[..k].iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    Ok(n)
}

pub(super) fn remove_spool_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
