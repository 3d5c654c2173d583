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
//!
//! This module is the append side ([`Spool`]); the on-disk layout's helpers (locks,
//! segment names, the checkpoint) are in [`files`], the read side ([`Replayer`]:
//! adopting orphans, batches, commits) in [`replay`]. Neither talks to PostgreSQL.

mod files;
mod replay;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::config::FsyncPolicy;
use super::event::AuditEvent;

use files::{lock_exclusive, segment_path, sync_dir};

pub(crate) use replay::Replayer;

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
