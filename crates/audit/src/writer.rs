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
use tracing::Instrument;

use bytes::BytesMut;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::event::AuditEvent;
use super::file::FileSink;
use super::postgres::{Batch, PgSink, WriteError};
use super::queue::{Queue, Taken};
use super::row;
use super::spool::{Replayer, Spool};
use super::Shared;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const ORPHAN_SCAN: Duration = Duration::from_secs(30);
const MAINTENANCE: Duration = Duration::from_secs(3600);
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most events per spool append: `record` may be waiting on the spool's lock behind it.
const SPOOL_CHUNK: usize = 500;

pub(crate) enum Sink {
    Postgres(Box<PgSink>, Arc<Spool>),
    File(Arc<FileSink>),
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    sink: Sink,
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
                            spare: BytesMut::new(),
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
                        file_loop(shared, file, stop).await;
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

/// Waits `flush_interval` (less when `batch_size` events are waiting, or on stop, wake
/// or `until`), then takes everything queued. One timer per batch: the request threads
/// never wake the writer, except to say that a whole batch is waiting.
async fn collect(
    shared: &Shared,
    queue: &Queue,
    stop: &mut watch::Receiver<bool>,
    until: Instant,
    spare: BytesMut,
) -> Taken {
    let deadline =
        (Instant::now() + Duration::from_millis(shared.cfg.flush_interval_ms)).min(until);
    tokio::select! {
        biased;
        _ = stopped(stop) => {}
        _ = queue.ready() => {}
        _ = shared.wake.notified() => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
    queue.take(spare)
}

/// The tuples of `buf` in slices of at most `max` tuples each (with their count). A
/// malformed tuple (a bug) ends the walk: what precedes it is kept, the rest counted as
/// lost.
fn chunks<'a>(shared: &Shared, buf: &'a [u8], max: usize) -> Vec<(&'a [u8], usize)> {
    let mut out = Vec::new();
    let (mut start, mut at, mut n) = (0, 0, 0);
    for t in row::tuples(buf) {
        match t {
            Ok(t) => {
                at += t.len();
                n += 1;
                if n == max {
                    out.push((&buf[start..at], n));
                    (start, n) = (at, 0);
                }
            }
            Err(e) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit: the queue held a malformed record; the rest of the batch is lost");
                break;
            }
        }
    }
    if at > start {
        out.push((&buf[start..at], n));
    }
    out
}

/// The events of encoded tuples (to spool them or insert them one by one).
fn decode_all(shared: &Shared, tuples: &[u8]) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    for t in row::tuples(tuples) {
        match t.and_then(row::decode) {
            Ok(e) => events.push(e),
            Err(e) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit: the queue held a malformed record; it is lost");
            }
        }
    }
    events
}

struct PgWriter {
    shared: Arc<Shared>,
    /// The buffer handed to the queue at the next take.
    spare: BytesMut,
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
                self.set_spooling(true);
                self.next_try = Instant::now() + self.backoff;
            }
        }
        let _ = ready.send(());
        loop {
            if stopping(&self.stop) {
                break;
            }
            self.periodic().await;
            let shared = self.shared.clone();
            if !self.spooling && (self.spool.pending() > 0 || shared.queue.is_none()) {
                self.set_spooling(true);
                self.next_try = Instant::now();
            }
            if !self.spooling {
                let Some(queue) = shared.queue.as_ref() else {
                    continue;
                };
                let until = self
                    .next_sync
                    .min(self.next_scan)
                    .min(self.next_maintenance);
                let spare = std::mem::take(&mut self.spare);
                let taken = collect(&shared, queue, &mut self.stop, until, spare).await;
                if taken.count > 0 {
                    self.write_live(&taken.buf).await;
                }
                self.spare = taken.buf;
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
                            let live = shared.queue.is_some();
                            let min_len = if live { 0 } else { 1 << 20 };
                            if let Err(e) = self.replayer.compact(min_len) {
                                tracing::warn!(error = %e, "audit: cannot compact the spool");
                            }
                            if live {
                                self.set_spooling(false);
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
        let shared = self.shared.clone();
        let ready = async {
            match shared.queue.as_ref() {
                Some(q) => q.ready().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stopped(&mut self.stop) => {},
            _ = ready => {},
            _ = shared.wake.notified() => {},
            _ = tokio::time::sleep_until(until) => {},
        }
        self.drain_to_spool();
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
        for chunk in events.chunks(SPOOL_CHUNK) {
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

    /// Moves everything queued into the spool (in batches, so `record` never waits long
    /// on the spool lock).
    fn drain_to_spool(&mut self) {
        let Some(queue) = self.shared.queue.as_ref() else {
            return;
        };
        let taken = queue.take(std::mem::take(&mut self.spare));
        if taken.count > 0 {
            self.to_spool(&decode_all(&self.shared, &taken.buf));
        }
        self.spare = taken.buf;
    }

    /// Enters or leaves the spooling state. While spooling, every queued event wakes the
    /// writer (it moves to the spool at once); while live, a whole batch does.
    fn set_spooling(&mut self, on: bool) {
        self.spooling = on;
        if let Some(q) = self.shared.queue.as_ref() {
            q.wake_each(on);
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
    /// batch) and kept in the rejected file. `refused`: PostgreSQL already refused the
    /// whole batch (with this reason), so halving starts at once. `Err` only when
    /// PostgreSQL is unavailable.
    async fn write_resilient(
        &mut self,
        events: &[AuditEvent],
        batch: Batch,
        mut refused: Option<String>,
    ) -> Result<(), WriteError> {
        let mut stack: Vec<&[AuditEvent]> = vec![events];
        while let Some(part) = stack.pop() {
            let started = std::time::Instant::now();
            let res = match refused.take() {
                Some(why) => Err(WriteError::Rejected(why)),
                None => self.pg.write(part, batch).await,
            };
            match res {
                Ok(inserted) => self.wrote(part.len(), inserted, started),
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

    async fn write_live(&mut self, tuples: &[u8]) {
        match self.write_fresh(tuples, None).await {
            Ok(()) => self.set_up(),
            Err(e) => {
                self.set_down(&e);
                self.set_spooling(true);
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Writes encoded fresh events, `batch_size` per COPY, until `deadline`. What is not
    /// written (PostgreSQL unavailable, or the deadline passed) goes to the spool, and
    /// the error is returned.
    async fn write_fresh(
        &mut self,
        tuples: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), WriteError> {
        let shared = self.shared.clone();
        let parts = chunks(&shared, tuples, shared.cfg.batch_size.max(1));
        for (i, &(part, n)) in parts.iter().enumerate() {
            let res = match deadline {
                None => self.write_part(part, n).await,
                Some(d) => tokio::time::timeout_at(d, self.write_part(part, n))
                    .await
                    .unwrap_or_else(|_| {
                        Err(WriteError::Unavailable("the stop deadline passed".into()))
                    }),
            };
            if let Err(e) = res {
                for &(rest, _) in &parts[i..] {
                    self.to_spool(&decode_all(&shared, rest));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// One COPY of `n` encoded events; if PostgreSQL refuses them as data, they are
    /// decoded and the rows it refuses isolated (`write_resilient`).
    async fn write_part(&mut self, part: &[u8], n: usize) -> Result<(), WriteError> {
        // One span per batch (COPY), never per event.
        let span = mcp_telemetry::span!("audit.write_batch", otel.kind = "client");
        mcp_telemetry::attr(&span, "audit.batch.events", n as i64);
        let r = self
            .write_part_inner(part, n)
            .instrument(span.clone())
            .await;
        if let Err(e) = &r {
            mcp_telemetry::fail(&span, e.to_string());
        }
        r
    }

    async fn write_part_inner(&mut self, part: &[u8], n: usize) -> Result<(), WriteError> {
        let started = std::time::Instant::now();
        match self.pg.write_tuples(part).await {
            Ok(inserted) => {
                self.wrote(n, inserted, started);
                Ok(())
            }
            Err(WriteError::Rejected(why)) => {
                let events = decode_all(&self.shared, part);
                self.write_resilient(&events, Batch::Fresh, Some(why)).await
            }
            Err(e) => Err(e),
        }
    }

    /// Counts a successful write of `n` events, `inserted` of them new.
    fn wrote(&self, n: usize, inserted: u64, started: std::time::Instant) {
        let c = &self.shared.counters;
        c.written.fetch_add(n as u64, Ordering::Relaxed);
        c.duplicates
            .fetch_add((n as u64).saturating_sub(inserted), Ordering::Relaxed);
        c.last_latency_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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
            .write_resilient(&batch.events, Batch::MaybeWritten, None)
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
        let shared = self.shared.clone();
        if let Some(queue) = shared.queue.as_ref() {
            // From now on `record` writes to the spool itself.
            queue.close();
            let rest = queue.take(BytesMut::new());
            if rest.count > 0 {
                if self.spooling || self.spool.pending() > 0 {
                    self.to_spool(&decode_all(&shared, &rest.buf));
                } else {
                    // Whatever is not written in time is spooled.
                    let _ = self.write_fresh(&rest.buf, Some(deadline)).await;
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

async fn file_loop(shared: Arc<Shared>, file: Arc<FileSink>, mut stop: watch::Receiver<bool>) {
    let sync_every = Duration::from_millis(shared.cfg.fsync_interval_ms);
    let mut next_sync = Instant::now() + sync_every;
    let Some(queue) = shared.queue.as_ref() else {
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
    // `lines` holds `n` JSON lines.
    let write = |lines: &[u8], n: usize| -> bool {
        match file.append_lines(lines) {
            Ok(()) => {
                shared
                    .counters
                    .written
                    .fetch_add(n as u64, Ordering::Relaxed);
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
    let mut spare = BytesMut::new();
    loop {
        if stopping(&stop) {
            break;
        }
        if Instant::now() >= next_sync {
            file.sync_if_dirty();
            next_sync = Instant::now() + sync_every;
        }
        let taken = collect(&shared, queue, &mut stop, next_sync, spare).await;
        spare = taken.buf;
        if taken.count == 0 {
            continue;
        }
        let started = std::time::Instant::now();
        while !write(&spare, taken.count) {
            if stopping(&stop) {
                shared
                    .counters
                    .dropped
                    .fetch_add(taken.count as u64, Ordering::Relaxed);
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
    queue.close();
    let rest = queue.take(BytesMut::new());
    if rest.count > 0 && !write(&rest.buf, rest.count) {
        shared
            .counters
            .dropped
            .fetch_add(rest.count as u64, Ordering::Relaxed);
    }
    file.sync_if_dirty();
}
