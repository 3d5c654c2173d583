//! The writer: one thread with its own current-thread runtime, draining the queue in
//! batches into the sink.
//!
//! PostgreSQL mode has two states. *Live*: batches go from the queue straight to
//! PostgreSQL. *Spooling* (a write failed, or `record` had to spool because the queue
//! was full, or `write_ahead`): everything the queue holds is appended to the spool, and
//! the spool is replayed from its oldest event, batch by batch, as soon as PostgreSQL
//! takes writes again (retries back off from 250 ms to 5 s). When the replay has caught
//! up and the spool is empty, the writer goes live again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::event::AuditEvent;
use super::file::FileSink;
use super::postgres::{Batch, PgSink, WriteError};
use super::spool::{Replayer, Spool};
use super::Shared;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const ORPHAN_SCAN: Duration = Duration::from_secs(30);
const MAINTENANCE: Duration = Duration::from_secs(3600);
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

pub(crate) enum Sink {
    Postgres(Box<PgSink>, Arc<Spool>),
    File(Arc<FileSink>),
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    sink: Sink,
    rx: Option<mpsc::Receiver<AuditEvent>>,
    stop: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
    done: oneshot::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "audit: cannot build the writer runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match sink {
                    Sink::Postgres(pg, spool) => {
                        let replayer = Replayer::new(spool.clone());
                        let w = PgWriter {
                            shared,
                            rx,
                            stop,
                            pg: *pg,
                            spool,
                            replayer,
                            spooling: false,
                            backoff: BACKOFF_MIN,
                            next_try: Instant::now(),
                            next_sync: Instant::now(),
                            next_scan: Instant::now() + ORPHAN_SCAN,
                            next_maintenance: Instant::now() + MAINTENANCE,
                            down_since: None,
                            last_down_log: None,
                        };
                        w.run(ready).await;
                    }
                    Sink::File(file) => {
                        let _ = ready.send(());
                        file_loop(shared, file, rx, stop).await;
                    }
                }
            });
            let _ = done.send(());
        })?;
    Ok(())
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Waits for the first event, then lingers up to `flush_interval` (or until
/// `batch_size`) for more. Returns early (possibly empty) on stop, wake or `until`.
async fn collect(
    shared: &Shared,
    rx: &mut mpsc::Receiver<AuditEvent>,
    stop: &mut watch::Receiver<bool>,
    until: Instant,
) -> Vec<AuditEvent> {
    let max = shared.cfg.batch_size;
    let mut batch = Vec::with_capacity(max.min(4096));
    tokio::select! {
        biased;
        _ = stopped(stop) => return batch,
        n = rx.recv_many(&mut batch, max) => if n == 0 { return batch },
        _ = shared.wake.notified() => return batch,
        _ = tokio::time::sleep_until(until) => return batch,
    }
    if batch.len() >= max {
        return batch;
    }
    // Linger without waiting on the channel: a parked receiver would be woken (a
    // syscall on the request path) by every event; one timer per batch is enough.
    let deadline = Instant::now() + Duration::from_millis(shared.cfg.flush_interval_ms);
    tokio::select! {
        biased;
        _ = stopped(stop) => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
    while batch.len() < max {
        match rx.try_recv() {
            Ok(ev) => batch.push(ev),
            Err(_) => break,
        }
    }
    batch
}

struct PgWriter {
    shared: Arc<Shared>,
    rx: Option<mpsc::Receiver<AuditEvent>>,
    stop: watch::Receiver<bool>,
    pg: PgSink,
    spool: Arc<Spool>,
    replayer: Replayer,
    spooling: bool,
    backoff: Duration,
    next_try: Instant,
    next_sync: Instant,
    next_scan: Instant,
    next_maintenance: Instant,
    down_since: Option<Instant>,
    last_down_log: Option<Instant>,
}

enum Replay {
    Wrote,
    Empty,
    Failed,
}

impl PgWriter {
    async fn run(mut self, ready: oneshot::Sender<()>) {
        match self.replayer.adopt_orphans() {
            Ok(n) if n > 0 => tracing::info!(
                events = n,
                "audit: spool from an earlier run found; it will be replayed first"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit: cannot scan the spool directory"),
        }
        match self.pg.prepare().await {
            Ok(_) => self.set_up(),
            Err(e) => {
                self.set_down(&e);
                self.spooling = true;
                self.next_try = Instant::now() + self.backoff;
            }
        }
        let _ = ready.send(());
        loop {
            if stopping(&self.stop) {
                break;
            }
            self.periodic().await;
            if !self.spooling && (self.spool.pending() > 0 || self.rx.is_none()) {
                self.spooling = true;
                self.next_try = Instant::now();
            }
            if !self.spooling {
                let Some(rx) = self.rx.as_mut() else { continue };
                let until = self
                    .next_sync
                    .min(self.next_scan)
                    .min(self.next_maintenance);
                let batch = collect(&self.shared, rx, &mut self.stop, until).await;
                if !batch.is_empty() {
                    self.write_live(batch).await;
                }
                continue;
            }
            self.drain_to_spool();
            if Instant::now() >= self.next_try {
                match self.replay_one().await {
                    Replay::Wrote => continue,
                    Replay::Empty => {
                        if self.spool.pending() == 0 {
                            // Live again: drop the replayed segment. Write-ahead stays
                            // on the spool; its segment is recycled once it is large.
                            let live = self.rx.is_some();
                            let min_len = if live { 0 } else { 1 << 20 };
                            if let Err(e) = self.replayer.compact(min_len) {
                                tracing::warn!(error = %e, "audit: cannot compact the spool");
                            }
                            if live {
                                self.spooling = false;
                                continue;
                            }
                        }
                    }
                    Replay::Failed => {
                        self.next_try = Instant::now() + self.backoff;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            self.wait_spooling().await;
        }
        self.finish().await;
    }

    /// While spooling: sleeps until an event arrives (it is spooled at once), `record`
    /// spooled one itself, the next retry, a periodic task, or stop.
    async fn wait_spooling(&mut self) {
        let mut until = self
            .next_sync
            .min(self.next_scan)
            .min(self.next_maintenance);
        if self.next_try > Instant::now() {
            until = until.min(self.next_try);
        }
        let max = self.shared.cfg.batch_size;
        let mut buf = Vec::new();
        match self.rx.as_mut() {
            Some(rx) => {
                tokio::select! {
                    biased;
                    _ = stopped(&mut self.stop) => {},
                    _ = rx.recv_many(&mut buf, max) => {},
                    _ = self.shared.wake.notified() => {},
                    _ = tokio::time::sleep_until(until) => {},
                }
            }
            None => {
                tokio::select! {
                    biased;
                    _ = stopped(&mut self.stop) => {},
                    _ = self.shared.wake.notified() => {},
                    _ = tokio::time::sleep_until(until) => {},
                }
            }
        }
        self.to_spool(&buf);
    }

    async fn periodic(&mut self) {
        let now = Instant::now();
        if now >= self.next_sync {
            self.spool.sync_if_dirty();
            self.next_sync = now + Duration::from_millis(self.shared.cfg.fsync_interval_ms);
        }
        if now >= self.next_scan {
            self.next_scan = now + ORPHAN_SCAN;
            if let Err(e) = self.replayer.adopt_orphans() {
                tracing::warn!(error = %e, "audit: cannot scan the spool directory");
            }
        }
        if now >= self.next_maintenance {
            if self.shared.counters.postgres_up.load(Ordering::Relaxed) {
                self.next_maintenance = now + MAINTENANCE;
                if let Err(e) = self.pg.maintain().await {
                    tracing::warn!(error = %e, "audit: partition maintenance failed; retrying in a minute");
                    self.next_maintenance = now + Duration::from_secs(60);
                }
            } else {
                self.next_maintenance = now + Duration::from_secs(60);
            }
        }
    }

    fn to_spool(&self, events: &[AuditEvent]) {
        for chunk in events.chunks(self.shared.cfg.batch_size.max(1)) {
            if let Err(e) = self.spool.append(chunk) {
                let c = &self.shared.counters;
                c.failures.fetch_add(1, Ordering::Relaxed);
                c.dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    events = chunk.len(),
                    dir = %self.spool.root().display(),
                    "audit: cannot write the spool; events lost"
                );
            }
        }
    }

    /// Moves everything queued into the spool (in chunks, so `record` never waits long
    /// on the spool lock).
    fn drain_to_spool(&mut self) {
        let max = self.shared.cfg.batch_size.max(1);
        loop {
            let Some(rx) = self.rx.as_mut() else { return };
            let mut buf = Vec::with_capacity(max.min(4096));
            while buf.len() < max {
                match rx.try_recv() {
                    Ok(e) => buf.push(e),
                    Err(_) => break,
                }
            }
            if buf.is_empty() {
                return;
            }
            self.to_spool(&buf);
        }
    }

    fn set_up(&mut self) {
        let c = &self.shared.counters;
        c.postgres_up.store(true, Ordering::Relaxed);
        if let Some(since) = self.down_since.take() {
            tracing::info!(
                down_s = since.elapsed().as_secs_f64(),
                spooled = self.spool.pending(),
                "audit: PostgreSQL is back; replaying the spool"
            );
        }
        self.last_down_log = None;
        self.backoff = BACKOFF_MIN;
    }

    fn set_down(&mut self, e: &WriteError) {
        let c = &self.shared.counters;
        c.failures.fetch_add(1, Ordering::Relaxed);
        c.postgres_up.store(false, Ordering::Relaxed);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        let now = Instant::now();
        if self.last_down_log.is_none_or(|t| now - t >= DOWN_LOG_EVERY) {
            self.last_down_log = Some(now);
            tracing::warn!(
                error = %e,
                spool = %self.spool.root().display(),
                spooled = self.spool.pending(),
                "audit: cannot write to PostgreSQL; spooling events to disk until it is back"
            );
        }
    }

    /// Writes a batch; rows PostgreSQL refuses as data are isolated (by halving the
    /// batch) and kept in the rejected file. `Err` only when PostgreSQL is unavailable.
    async fn write_resilient(
        &mut self,
        events: &[AuditEvent],
        batch: Batch,
    ) -> Result<(), WriteError> {
        let mut stack: Vec<&[AuditEvent]> = vec![events];
        while let Some(part) = stack.pop() {
            let started = std::time::Instant::now();
            match self.pg.write(part, batch).await {
                Ok(inserted) => {
                    let c = &self.shared.counters;
                    c.written.fetch_add(part.len() as u64, Ordering::Relaxed);
                    c.duplicates.fetch_add(
                        (part.len() as u64).saturating_sub(inserted),
                        Ordering::Relaxed,
                    );
                    c.last_latency_us
                        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                Err(WriteError::Rejected(why)) => {
                    self.shared
                        .counters
                        .failures
                        .fetch_add(1, Ordering::Relaxed);
                    if part.len() == 1 {
                        self.spool.reject_events(part, &why);
                    } else {
                        let (a, b) = part.split_at(part.len() / 2);
                        stack.push(b);
                        stack.push(a);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_live(&mut self, batch: Vec<AuditEvent>) {
        match self.write_resilient(&batch, Batch::Fresh).await {
            Ok(()) => self.set_up(),
            Err(e) => {
                self.set_down(&e);
                self.to_spool(&batch);
                self.spooling = true;
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    async fn replay_one(&mut self) -> Replay {
        let batch = match self.replayer.next_batch(self.shared.cfg.batch_size) {
            Ok(Some(b)) => b,
            Ok(None) => return Replay::Empty,
            Err(e) => {
                self.shared
                    .counters
                    .failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit: cannot read the spool");
                return Replay::Failed;
            }
        };
        match self
            .write_resilient(&batch.events, Batch::MaybeWritten)
            .await
        {
            Ok(()) => {
                self.set_up();
                if let Err(e) = self.replayer.commit(batch) {
                    tracing::warn!(error = %e, "audit: cannot save the spool checkpoint (a restart would replay a batch again, harmlessly)");
                }
                Replay::Wrote
            }
            Err(e) => {
                self.set_down(&e);
                Replay::Failed
            }
        }
    }

    /// Stop: write what is queued while PostgreSQL answers and time remains; the rest
    /// stays in the spool.
    async fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_millis(self.shared.cfg.shutdown_timeout_ms);
        let mut rest = Vec::new();
        if let Some(rx) = self.rx.as_mut() {
            // From now on `record` writes to the spool itself.
            rx.close();
            while let Ok(e) = rx.try_recv() {
                rest.push(e);
            }
        }
        if self.spooling || self.spool.pending() > 0 {
            self.to_spool(&rest);
        } else {
            let max = self.shared.cfg.batch_size.max(1);
            let mut chunks = rest.chunks(max);
            while let Some(chunk) = chunks.next() {
                let ok = matches!(
                    tokio::time::timeout_at(deadline, self.write_resilient(chunk, Batch::Fresh))
                        .await,
                    Ok(Ok(()))
                );
                if !ok {
                    self.to_spool(chunk);
                    for c in chunks.by_ref() {
                        self.to_spool(c);
                    }
                    break;
                }
            }
        }
        while self.spool.pending() > 0 && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.replay_one()).await {
                Ok(Replay::Wrote) => {}
                _ => break,
            }
        }
        self.spool.sync_if_dirty();
        self.replayer.close();
        let left = self.spool.pending();
        if left > 0 {
            tracing::warn!(
                events = left,
                spool = %self.spool.root().display(),
                "audit: stopped with events in the spool; the next start replays them"
            );
        }
    }
}

async fn file_loop(
    shared: Arc<Shared>,
    file: Arc<FileSink>,
    rx: Option<mpsc::Receiver<AuditEvent>>,
    mut stop: watch::Receiver<bool>,
) {
    let sync_every = Duration::from_millis(shared.cfg.fsync_interval_ms);
    let mut next_sync = Instant::now() + sync_every;
    let Some(mut rx) = rx else {
        // write_ahead: `record` writes the file itself; only flush here.
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep_until(next_sync) => {}
            }
            file.sync_if_dirty();
            next_sync = Instant::now() + sync_every;
        }
        file.sync_if_dirty();
        return;
    };
    let write = |batch: &[AuditEvent]| -> bool {
        match file.append(batch) {
            Ok(()) => {
                shared
                    .counters
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = shared.counters.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(error = %e, path = %file.path().display(), "audit: cannot write the audit file; retrying");
                }
                false
            }
        }
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        if stopping(&stop) {
            break;
        }
        if Instant::now() >= next_sync {
            file.sync_if_dirty();
            next_sync = Instant::now() + sync_every;
        }
        let batch = collect(&shared, &mut rx, &mut stop, next_sync).await;
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        while !write(&batch) {
            if stopping(&stop) {
                shared
                    .counters
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                break;
            }
            tokio::select! {
                _ = stopped(&mut stop) => {},
                _ = tokio::time::sleep(backoff) => {},
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        backoff = BACKOFF_MIN;
        shared
            .counters
            .last_latency_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(e) = rx.try_recv() {
        rest.push(e);
    }
    if !rest.is_empty() && !write(&rest) {
        shared
            .counters
            .dropped
            .fetch_add(rest.len() as u64, Ordering::Relaxed);
    }
    file.sync_if_dirty();
}
