//! The local spool: append-only JSON Lines segments on disk, replayed in order.
//!
//! Layout under `spool_dir`:
//!
//! ```text
//! spool_dir/
//!   <instance uuid>/          one per running Auditor, created on its first spooled event
//!     lock                    flock(2)ed for the instance's lifetime
//!     0000000000000001.jsonl  segments, appended in order, rotated at 64 MiB
//!     checkpoint              "<segment> <byte offset>": replayed up to here
//!   rejected.jsonl            lines that could not be parsed or written (dead letters)
//! ```
//!
//! An appended event is handed to the kernel with `write(2)` before `append` returns,
//! so it survives the death of the process; `fsync` decides what survives the machine's.
//! A directory whose lock nobody holds belongs to a process that is gone: the next
//! Auditor that scans the spool (at start, then every 30 s) adopts it and replays it
//! before its own events. Replayed segments are deleted; the checkpoint is advanced
//! only after PostgreSQL committed the batch, so a crash in between replays the batch
//! again, which the idempotent insert absorbs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::config::FsyncPolicy;
use super::event::AuditEvent;

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const SEGMENT_EXT: &str = "jsonl";
const REJECTED: &str = "rejected.jsonl";

/// A position in a spool directory: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Cursor {
    pub seq: u64,
    pub offset: u64,
}

struct Active {
    _lock: File,
    seq: u64,
    file: Arc<File>,
    len: u64,
}

struct AppendState {
    active: Option<Active>,
    next_seq: u64,
}

/// The append side, shared by `record` (queue full, write-ahead) and the writer.
pub(crate) struct Spool {
    root: PathBuf,
    own: PathBuf,
    fsync: FsyncPolicy,
    state: Mutex<AppendState>,
    pending: AtomicU64,
    spooled_total: AtomicU64,
    rejected_total: AtomicU64,
    /// Appended since the last flush (`fsync = "interval"`).
    dirty: AtomicBool,
    /// A segment or the instance directory was created since the last flush.
    dir_dirty: AtomicBool,
    /// Segments rotated away, to flush.
    retired: Mutex<Vec<Arc<File>>>,
}

fn lock_exclusive(file: &File) -> io::Result<bool> {
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

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.{SEGMENT_EXT}"))
}

/// Segment numbers present in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
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

fn read_checkpoint(dir: &Path) -> Cursor {
    let Ok(text) = fs::read_to_string(dir.join("checkpoint")) else {
        return Cursor::default();
    };
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(seq)), Some(Ok(offset))) => Cursor { seq, offset },
        _ => Cursor::default(),
    }
}

fn write_checkpoint(dir: &Path, c: Cursor) -> io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    fs::write(&tmp, format!("{} {}\n", c.seq, c.offset))?;
    fs::rename(&tmp, dir.join("checkpoint"))
}

/// Counts complete lines of `dir` from cursor `c` on.
fn count_lines_from(dir: &Path, c: Cursor) -> io::Result<u64> {
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

impl Spool {
    /// Prepares `root` (creating it) for an instance; nothing is written until the
    /// first append.
    pub(crate) fn open(root: &Path, fsync: FsyncPolicy) -> io::Result<Arc<Spool>> {
        fs::create_dir_all(root)?;
        // Fail now, not at the first outage, if the directory is not writable.
        let probe = root.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"")?;
        fs::remove_file(&probe)?;
        let own = root.join(uuid::Uuid::now_v7().to_string());
        Ok(Arc::new(Spool {
            root: root.to_path_buf(),
            own,
            fsync,
            state: Mutex::new(AppendState {
                active: None,
                next_seq: 1,
            }),
            pending: AtomicU64::new(0),
            spooled_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            retired: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn lock_state(&self) -> MutexGuard<'_, AppendState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events in the spool not yet replayed (all directories this instance owns or adopted).
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn spooled_total(&self) -> u64 {
        self.spooled_total.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected_total.load(Ordering::Relaxed)
    }

    fn new_segment(&self, st: &mut AppendState) -> io::Result<Active> {
        let lock = match st.active.take() {
            Some(a) => a._lock,
            None => {
                fs::create_dir_all(&self.own)?;
                let lock = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.own.join("lock"))?;
                if !lock_exclusive(&lock)? {
                    return Err(io::Error::other(format!(
                        "spool directory {} is locked by another process",
                        self.own.display()
                    )));
                }
                lock
            }
        };
        let seq = st.next_seq;
        st.next_seq += 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.own, seq))?;
        // The directory entries are flushed outside the lock (see `append`) or by the
        // writer's periodic flush: never while `record` may be waiting on the lock.
        self.dir_dirty.store(true, Ordering::Release);
        Ok(Active {
            _lock: lock,
            seq,
            file: Arc::new(file),
            len: 0,
        })
    }

    /// Appends events (one JSON line each) to the current segment. When it returns Ok,
    /// every event is in the kernel (and on disk with `fsync = "always"`).
    pub(crate) fn append(&self, events: &[AuditEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        for e in events {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let file = {
            let mut st = self.lock_state();
            let rotate = match &st.active {
                None => true,
                Some(a) => a.len > 0 && a.len + buf.len() as u64 > SEGMENT_BYTES,
            };
            if rotate {
                let old = st.active.as_ref().map(|a| a.file.clone());
                let a = self.new_segment(&mut st)?;
                st.active = Some(a);
                if let Some(old) = old {
                    // Flushed by the writer (interval) or already (always).
                    self.retired
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(old);
                }
            }
            let Some(a) = st.active.as_mut() else {
                return Err(io::Error::other("no active spool segment"));
            };
            if let Err(e) = (&*a.file).write_all(&buf) {
                // Never leave half a line for the next append to run into.
                if a.file.set_len(a.len).is_err() {
                    // Force a rotation on the next append; the reader will reject
                    // the torn tail once the segment is no longer active.
                    a.len = SEGMENT_BYTES;
                }
                return Err(e);
            }
            a.len += buf.len() as u64;
            self.pending
                .fetch_add(events.len() as u64, Ordering::AcqRel);
            self.spooled_total
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            a.file.clone()
        };
        match self.fsync {
            FsyncPolicy::Always => {
                file.sync_data()?;
                self.sync_dirs();
            }
            FsyncPolicy::Interval => self.dirty.store(true, Ordering::Release),
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    fn sync_dirs(&self) {
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            sync_dir(&self.own);
            sync_dir(&self.root);
        }
    }

    /// Flushes to disk what was appended since the last call (the current segment, the
    /// segments rotated away, new directory entries). Called by the writer, never under
    /// the append lock.
    pub(crate) fn sync_if_dirty(&self) {
        if self.fsync == FsyncPolicy::Never {
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            return;
        }
        let retired = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        for f in retired {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, "audit: cannot fsync the spool");
            }
        }
        if self.dirty.swap(false, Ordering::AcqRel) {
            let file = self.lock_state().active.as_ref().map(|a| a.file.clone());
            if let Some(f) = file {
                if let Err(e) = f.sync_data() {
                    tracing::error!(error = %e, "audit: cannot fsync the spool");
                }
            }
        }
        self.sync_dirs();
    }

    /// (segment, length) of the segment being appended to, if any.
    fn active_extent(&self) -> Option<Cursor> {
        self.lock_state().active.as_ref().map(|a| Cursor {
            seq: a.seq,
            offset: a.len,
        })
    }

    /// Keeps a line that cannot be replayed, so that nothing disappears silently.
    fn reject(&self, line: &[u8], why: &str) {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            reason = why,
            file = %self.root.join(REJECTED).display(),
            "audit: a spooled event cannot be replayed; kept in the rejected file"
        );
        let res = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(REJECTED))
            .and_then(|mut f| {
                let mut l = line.to_vec();
                if l.last() != Some(&b'\n') {
                    l.push(b'\n');
                }
                f.write_all(&l)
            });
        if let Err(e) = res {
            tracing::error!(error = %e, "audit: cannot write the rejected file");
        }
    }

    /// Writes events PostgreSQL refused (data errors) to the rejected file.
    pub(crate) fn reject_events(&self, events: &[AuditEvent], why: &str) {
        for e in events {
            match serde_json::to_vec(e) {
                Ok(line) => self.reject(&line, why),
                Err(_) => {
                    self.rejected_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

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

fn remove_spool_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

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
