//! The JSON Lines sink, used when no database is configured: one event per line,
//! appended (`O_APPEND`), flushed per the `fsync` policy. A file moved away (log
//! rotation) is noticed within a second and a new one is started at the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::FsyncPolicy;
use super::event::AuditEvent;

struct Open {
    file: Arc<File>,
    ino: (u64, u64),
    checked: Instant,
}

pub(crate) struct FileSink {
    path: PathBuf,
    fsync: FsyncPolicy,
    state: Mutex<Open>,
    dirty: AtomicBool,
}

fn open(path: &Path) -> io::Result<Open> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let m = file.metadata()?;
    Ok(Open {
        file: Arc::new(file),
        ino: (m.dev(), m.ino()),
        checked: Instant::now(),
    })
}

impl FileSink {
    pub(crate) fn open(path: &Path, fsync: FsyncPolicy) -> io::Result<FileSink> {
        Ok(FileSink {
            path: path.to_path_buf(),
            fsync,
            state: Mutex::new(open(path)?),
            dirty: AtomicBool::new(false),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the events as JSON lines in one `write(2)`.
    pub(crate) fn append(&self, events: &[AuditEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        for e in events {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        self.append_lines(&buf)
    }

    /// Appends JSON lines already encoded (whole lines) in one `write(2)`.
    pub(crate) fn append_lines(&self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let file = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.checked.elapsed() >= Duration::from_secs(1) {
                st.checked = Instant::now();
                let moved = match std::fs::metadata(&self.path) {
                    Ok(m) => (m.dev(), m.ino()) != st.ino,
                    Err(_) => true,
                };
                if moved {
                    let _ = st.file.sync_data();
                    *st = open(&self.path)?;
                }
            }
            (&*st.file).write_all(buf)?;
            st.file.clone()
        };
        match self.fsync {
            FsyncPolicy::Always => file.sync_data()?,
            FsyncPolicy::Interval => self.dirty.store(true, Ordering::Release),
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    pub(crate) fn sync_if_dirty(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file
            .clone();
        if let Err(e) = file.sync_data() {
            tracing::error!(error = %e, path = %self.path.display(), "audit: cannot fsync the audit file");
        }
    }
}
