//! Replaying the spool: adopts the directories of processes that are gone, reads
//! batches in order, advances the checkpoint only after a commit, and compacts.
//!
//! Why apart: the read side is owned by the writer alone and has its own ordering and
//! crash-safety rules. This module does not append events (see [`super::Spool`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::event::AuditEvent;

use super::files::{
    count_lines_from, list_segments, lock_exclusive, read_checkpoint, remove_spool_dir,
    segment_path, write_checkpoint,
};
use super::{Cursor, Spool};

/// Where a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Adopted(usize),
    Own,
}

/// Events read from the spool, to be committed once written.
pub(crate) struct Batch {
    pub events: Vec<AuditEvent>,
    source: Source,
    end: Cursor,
}

struct Adopted {
    dir: PathBuf,
    _lock: File,
    cursor: Cursor,
}

/// The read side, owned by the writer: replays adopted directories, then its own.
pub(crate) struct Replayer {
    spool: Arc<Spool>,
    adopted: Vec<Adopted>,
    own: Cursor,
}

struct SegmentRead {
    events: Vec<AuditEvent>,
    end: u64,
    skipped: u64,
    at_eof: bool,
}

impl Replayer {
    pub(crate) fn new(spool: Arc<Spool>) -> Replayer {
        Replayer {
            spool,
            adopted: Vec::new(),
            own: Cursor::default(),
        }
    }

    /// Adopts the directories of processes that are gone (their lock is free).
    /// Returns how many events they hold.
    pub(crate) fn adopt_orphans(&mut self) -> io::Result<u64> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&self.spool.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let path = entry.path();
            if path == self.spool.own || self.adopted.iter().any(|a| a.dir == path) {
                continue;
            }
            dirs.push(path);
        }
        dirs.sort();
        let mut total = 0;
        for dir in dirs {
            let lock = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "audit: cannot open a spool lock");
                    continue;
                }
            };
            if !lock_exclusive(&lock)? {
                continue; // a live process owns it
            }
            let cursor = read_checkpoint(&dir);
            let n = count_lines_from(&dir, cursor)?;
            self.spool.pending.fetch_add(n, Ordering::AcqRel);
            total += n;
            if n > 0 {
                tracing::info!(dir = %dir.display(), events = n, "audit: replaying a spool left by a previous process");
            }
            self.adopted.push(Adopted {
                dir,
                _lock: lock,
                cursor,
            });
        }
        Ok(total)
    }

    /// Reads up to `max` events from the oldest unreplayed position. `None`: nothing
    /// left to replay right now.
    pub(crate) fn next_batch(&mut self, max: usize) -> io::Result<Option<Batch>> {
        while !self.adopted.is_empty() {
            let dir = self.adopted[0].dir.clone();
            let mut cursor = self.adopted[0].cursor;
            let got = self.read_dir(&dir, &mut cursor, max, None);
            self.adopted[0].cursor = cursor;
            match got? {
                Some((events, end)) => {
                    return Ok(Some(Batch {
                        events,
                        source: Source::Adopted(0),
                        end,
                    }))
                }
                None => {
                    let a = self.adopted.remove(0);
                    remove_spool_dir(&a.dir);
                }
            }
        }
        let own = self.spool.own.clone();
        let mut cursor = self.own;
        let active = self.spool.active_extent();
        let got = self.read_dir(&own, &mut cursor, max, active);
        self.own = cursor;
        Ok(got?.map(|(events, end)| Batch {
            events,
            source: Source::Own,
            end,
        }))
    }

    /// Reads from `dir` at `cursor`, moving past finished segments (deleting them) and
    /// rejected lines. `active`: the segment being appended to and its length.
    fn read_dir(
        &self,
        dir: &Path,
        cursor: &mut Cursor,
        max: usize,
        active: Option<Cursor>,
    ) -> io::Result<Option<(Vec<AuditEvent>, Cursor)>> {
        loop {
            let segs = list_segments(dir)?;
            let Some(&seq) = segs.iter().find(|s| **s >= cursor.seq) else {
                return Ok(None);
            };
            if seq != cursor.seq {
                *cursor = Cursor { seq, offset: 0 };
            }
            let limit = active.filter(|a| a.seq == seq).map(|a| a.offset);
            let r = self.read_segment(&segment_path(dir, seq), cursor.offset, max, limit)?;
            if r.skipped > 0 {
                self.spool
                    .pending
                    .fetch_sub(r.skipped.min(self.spool.pending()), Ordering::AcqRel);
            }
            if !r.events.is_empty() {
                return Ok(Some((r.events, Cursor { seq, offset: r.end })));
            }
            if r.end != cursor.offset {
                // Only rejected lines: step over them for good.
                cursor.offset = r.end;
                write_checkpoint(dir, *cursor)?;
                continue;
            }
            if limit.is_some() || !r.at_eof {
                return Ok(None);
            }
            // A finished segment, every line replayed.
            fs::remove_file(segment_path(dir, seq))?;
            *cursor = Cursor {
                seq: seq + 1,
                offset: 0,
            };
            write_checkpoint(dir, *cursor)?;
        }
    }

    fn read_segment(
        &self,
        path: &Path,
        offset: u64,
        max: usize,
        limit: Option<u64>,
    ) -> io::Result<SegmentRead> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let budget = limit.map(|l| l.saturating_sub(offset)).unwrap_or(u64::MAX);
        let mut r = BufReader::with_capacity(256 * 1024, f.take(budget));
        let mut out = SegmentRead {
            events: Vec::new(),
            end: offset,
            skipped: 0,
            at_eof: false,
        };
        let mut line = Vec::with_capacity(1024);
        while out.events.len() < max {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 {
                out.at_eof = true;
                break;
            }
            if line.last() != Some(&b'\n') {
                if limit.is_some() {
                    // Cannot happen (appends are whole lines under the lock); wait.
                    out.at_eof = true;
                    break;
                }
                // A line torn by a crash in the middle of its write: it was never
                // acknowledged, but keep it for inspection.
                // (Not counted in `pending`: only complete lines are.)
                self.spool
                    .reject(&line, "torn line at the end of a segment");
                out.end += n as u64;
                out.at_eof = true;
                break;
            }
            out.end += n as u64;
            match serde_json::from_slice::<AuditEvent>(&line) {
                Ok(e) => out.events.push(e),
                Err(e) => {
                    self.spool.reject(&line, &format!("unparsable line: {e}"));
                    out.skipped += 1;
                }
            }
        }
        Ok(out)
    }

    /// Marks a batch as written: advances and persists the checkpoint.
    pub(crate) fn commit(&mut self, batch: Batch) -> io::Result<()> {
        let n = batch.events.len() as u64;
        let dir = match batch.source {
            Source::Adopted(i) => {
                let Some(a) = self.adopted.get_mut(i) else {
                    return Ok(());
                };
                a.cursor = batch.end;
                a.dir.clone()
            }
            Source::Own => {
                self.own = batch.end;
                self.spool.own.clone()
            }
        };
        self.spool
            .pending
            .fetch_sub(n.min(self.spool.pending()), Ordering::AcqRel);
        write_checkpoint(&dir, batch.end)
    }

    /// Once everything is replayed: starts a fresh segment and deletes the old one, so
    /// the spool does not keep replayed data.
    /// Only when the segment holds at least `min_len` bytes.
    pub(crate) fn compact(&mut self, min_len: u64) -> io::Result<()> {
        if !self.adopted.is_empty() {
            return Ok(());
        }
        let mut st = self.spool.lock_state();
        let Some(a) = st.active.as_ref() else {
            return Ok(());
        };
        if a.seq != self.own.seq || a.len != self.own.offset {
            return Ok(());
        }
        if a.len > 0 && a.len >= min_len {
            let old = a.seq;
            let next = self.spool.new_segment(&mut st)?;
            self.own = Cursor {
                seq: next.seq,
                offset: 0,
            };
            st.active = Some(next);
            drop(st);
            let _ = fs::remove_file(segment_path(&self.spool.own, old));
            write_checkpoint(&self.spool.own, self.own)?;
        }
        Ok(())
    }

    /// At shutdown: removes this instance's directory if nothing is left in it.
    pub(crate) fn close(&mut self) {
        let mut st = self.spool.lock_state();
        if self.spool.pending() == 0 && self.adopted.is_empty() {
            if let Some(a) = st.active.take() {
                let _ = a.file.sync_data();
                remove_spool_dir(&self.spool.own);
                // The lock is released when `a` drops, after the directory is gone.
            }
        } else if let Some(a) = st.active.as_ref() {
            let _ = a.file.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FsyncPolicy;
    use std::io::Write;

    fn events(n: usize) -> Vec<AuditEvent> {
        (0..n).map(|_| AuditEvent::request()).collect()
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("audit-spool-unit-{}", uuid::Uuid::now_v7()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn append_read_commit_in_order() {
        let root = tmp();
        let spool = Spool::open(&root, FsyncPolicy::Never).unwrap();
        let ev = events(25);
        spool.append(&ev[..10]).unwrap();
        spool.append(&ev[10..]).unwrap();
        assert_eq!(spool.pending(), 25);
        let mut r = Replayer::new(spool.clone());
        let mut got = Vec::new();
        while let Some(b) = r.next_batch(7).unwrap() {
            got.extend(b.events.iter().map(|e| e.id));
            r.commit(b).unwrap();
        }
        assert_eq!(got, ev.iter().map(|e| e.id).collect::<Vec<_>>());
        assert_eq!(spool.pending(), 0);
        r.compact(0).unwrap();
        r.close();
        assert!(fs::read_dir(&root).unwrap().next().is_none());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn adopts_an_orphan_and_skips_a_torn_line() {
        let root = tmp();
        let ev = events(5);
        {
            let dead = Spool::open(&root, FsyncPolicy::Never).unwrap();
            dead.append(&ev).unwrap();
            // Dropping releases the lock: as if the process had died.
        }
        let dir = fs::read_dir(&root).unwrap().next().unwrap().unwrap().path();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, 1))
            .unwrap();
        f.write_all(b"{\"id\":\"01").unwrap();
        let spool = Spool::open(&root, FsyncPolicy::Never).unwrap();
        let mut r = Replayer::new(spool.clone());
        assert_eq!(r.adopt_orphans().unwrap(), 5);
        let b = r.next_batch(100).unwrap().unwrap();
        assert_eq!(b.events.len(), 5);
        r.commit(b).unwrap();
        assert!(r.next_batch(100).unwrap().is_none());
        assert_eq!(spool.rejected_total(), 1);
        assert!(!dir.exists());
        fs::remove_dir_all(root).unwrap();
    }
}
