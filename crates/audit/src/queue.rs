//! The bounded in-memory queue between the request threads and the writer: encoded
//! records in one growing buffer, not event values in a channel.
//!
//! `push` encodes the event on the request's thread (a binary COPY tuple for
//! PostgreSQL, a JSON line for the file) and appends the bytes under a short lock; the
//! event's strings are freed there, by the thread that allocated them. The writer
//! swaps the whole buffer for its empty spare one. So a request allocates nothing that
//! another thread frees, and the writer moves one buffer per batch, not one value per
//! event (with a cross-thread allocator, those frees are what made auditing costly).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::event::AuditEvent;
use super::row;

/// How records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// One tuple of PostgreSQL's binary COPY format each ([`row`]).
    CopyTuple,
    /// One JSON object and a newline each.
    JsonLine,
}

struct State {
    buf: BytesMut,
    count: usize,
    closed: bool,
}

pub(crate) struct Queue {
    state: Mutex<State>,
    encoding: Encoding,
    capacity: usize,
    /// How many queued records wake the writer (see [`Queue::wake_each`]).
    wake_at: AtomicUsize,
    /// `wake_at` while the writer writes whole batches: `batch_size`, or half the
    /// capacity when that is smaller (so the queue never fills waiting for a batch).
    batch_wake: usize,
    ready: Notify,
    /// The most bytes the queue has held: the room a new buffer is given.
    high_water: AtomicUsize,
}

/// What the writer took: `count` records in `buf`.
pub(crate) struct Taken {
    pub buf: BytesMut,
    pub count: usize,
}

impl Queue {
    pub(crate) fn new(encoding: Encoding, capacity: usize, batch_size: usize) -> Queue {
        let batch_wake = batch_size.min(capacity / 2).max(1);
        Queue {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(64 * 1024),
                count: 0,
                closed: false,
            }),
            encoding,
            capacity,
            wake_at: AtomicUsize::new(batch_wake),
            batch_wake,
            ready: Notify::new(),
            high_water: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes and queues `ev`; false when the queue is full or closed (or, which
    /// `sanitize` makes impossible, the event cannot be encoded).
    pub(crate) fn push(&self, ev: &AuditEvent) -> bool {
        let mut one = BytesMut::with_capacity(512);
        let encoded = match self.encoding {
            Encoding::CopyTuple => row::encode(ev, &mut one).is_ok(),
            Encoding::JsonLine => {
                let mut w = bytes::BufMut::writer(one);
                let ok = serde_json::to_writer(&mut w, ev).is_ok();
                one = w.into_inner();
                one.extend_from_slice(b"\n");
                ok
            }
        };
        if !encoded {
            return false;
        }
        let wake = {
            let mut st = self.lock();
            if st.closed || st.count >= self.capacity {
                return false;
            }
            st.buf.extend_from_slice(&one);
            st.count += 1;
            st.count == self.wake_at.load(Ordering::Relaxed)
        };
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().count
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets how many queued records make [`Queue::ready`] resolve: one while the writer
    /// spools (`each`: so that the queue never fills and `record` never has to append to
    /// the spool itself), a whole batch while it writes to PostgreSQL.
    pub(crate) fn wake_each(&self, each: bool) {
        let n = if each { 1 } else { self.batch_wake };
        self.wake_at.store(n, Ordering::Relaxed);
    }

    /// Resolves when `wake_at` records are waiting (at once if that happened since the
    /// last call).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    /// Takes everything queued; `spare` (cleared) becomes the queue's buffer, so its
    /// capacity is reused.
    pub(crate) fn take(&self, mut spare: BytesMut) -> Taken {
        spare.clear();
        // The buffer grows under the lock, on a request's thread: give it room for as
        // much as the queue ever held, here.
        spare.reserve(self.high_water.load(Ordering::Relaxed));
        let (buf, count) = {
            let mut st = self.lock();
            let buf = std::mem::replace(&mut st.buf, spare);
            (buf, std::mem::take(&mut st.count))
        };
        self.high_water.fetch_max(buf.len(), Ordering::Relaxed);
        Taken { buf, count }
    }

    /// From now on `push` gives every event back.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_taken_whole() {
        let q = Queue::new(Encoding::JsonLine, 3, 2);
        for _ in 0..3 {
            assert!(q.push(&AuditEvent::request()));
        }
        assert!(!q.push(&AuditEvent::request()), "full");
        assert_eq!(q.len(), 3);
        let t = q.take(BytesMut::new());
        assert_eq!(t.count, 3);
        assert_eq!(t.buf.iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(q.len(), 0);
        assert!(q.push(&AuditEvent::request()));
        q.close();
        assert!(!q.push(&AuditEvent::request()), "closed");
        assert_eq!(q.take(t.buf).count, 1);
    }

    #[test]
    fn the_writer_is_woken_at_the_threshold() {
        use futures::FutureExt;
        let q = Queue::new(Encoding::JsonLine, 10, 3);
        q.push(&AuditEvent::request());
        q.push(&AuditEvent::request());
        assert!(q.ready().now_or_never().is_none(), "2 of 3");
        q.push(&AuditEvent::request());
        assert!(q.ready().now_or_never().is_some(), "a whole batch");
        q.take(BytesMut::new());
        q.wake_each(true);
        assert!(q.ready().now_or_never().is_none());
        q.push(&AuditEvent::request());
        assert!(q.ready().now_or_never().is_some(), "spooling: every event");
    }

    #[test]
    fn a_batch_larger_than_the_queue_wakes_the_writer_at_half_of_it() {
        use futures::FutureExt;
        let q = Queue::new(Encoding::JsonLine, 4, 100);
        q.push(&AuditEvent::request());
        assert!(q.ready().now_or_never().is_none());
        q.push(&AuditEvent::request());
        assert!(q.ready().now_or_never().is_some(), "2 of 4 queued");
    }

    #[test]
    fn copy_tuples_read_back() {
        let q = Queue::new(Encoding::CopyTuple, 10, 10);
        let ev = AuditEvent::new("login_ok");
        assert!(q.push(&ev));
        let t = q.take(BytesMut::new());
        let rows: Vec<&[u8]> = row::tuples(&t.buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(row::decode(rows[0]).unwrap().id, ev.id);
    }
}
