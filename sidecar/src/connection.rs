//! One connection's two deadlines, kept apart.
//!
//! - **A request head** must be complete within `server.header_timeout_s` of its first
//!   byte (of the connection being accepted, for the first request): a slow or silent
//!   client does not hold one of the `max_connections` slots for long.
//! - **An idle kept-alive connection** (a response sent, no next byte yet) stays open
//!   for `server.keepalive_timeout_s`, which a deployment sets above its load balancer's
//!   idle timeout: the balancer retires a connection before the sidecar would close it
//!   under a request it is sending.
//!
//! hyper has one timer for both (`header_read_timeout` starts when a connection is idle
//! and stops when a head is complete), so hyper's is set to the idle timeout and the
//! head deadline is this module's: [`Watched`] notes when the first byte of a head
//! arrives, [`HeadClock::request_started`] / [`HeadClock::request_ended`] when hyper
//! hands a request to the service and gets its response, and [`watchdog`] completes
//! when a head is late (the caller then drops the connection).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No head under way.
const NONE: u64 = u64::MAX;

/// When the head under way (if any) started, shared by the connection's IO, its
/// service and its watchdog.
#[derive(Debug)]
pub struct HeadClock {
    epoch: Instant,
    /// Milliseconds since `epoch` of the current head's first byte, or [`NONE`].
    started: AtomicU64,
    in_request: AtomicBool,
    changed: Notify,
}

impl HeadClock {
    /// A clock for a connection just accepted: its first head is under way from now.
    pub fn new() -> Arc<HeadClock> {
        Arc::new(HeadClock {
            epoch: Instant::now(),
            started: AtomicU64::new(0),
            in_request: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: if the connection was idle, a head starts now.
    fn bytes_read(&self) {
        if self.in_request.load(Ordering::Acquire) {
            return;
        }
        let now = self.now_ms();
        if self
            .started
            .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// hyper handed a request to the service: its head is complete.
    pub fn request_started(&self) {
        self.in_request.store(true, Ordering::Release);
        self.started.store(NONE, Ordering::Release);
        self.changed.notify_one();
    }

    /// The service answered: bytes that come next belong to the next head.
    pub fn request_ended(&self) {
        self.in_request.store(false, Ordering::Release);
    }

    fn started(&self) -> Option<u64> {
        match self.started.load(Ordering::Acquire) {
            NONE => None,
            ms => Some(ms),
        }
    }
}

/// Completes when a request head has taken longer than `limit`.
pub async fn watchdog(clock: Arc<HeadClock>, limit: Duration) {
    loop {
        let notified = clock.changed.notified();
        match clock.started() {
            None => notified.await,
            Some(ms) => {
                let deadline = clock.epoch + Duration::from_millis(ms) + limit;
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        if clock.started() == Some(ms) {
                            return;
                        }
                    }
                    _ = notified => {}
                }
            }
        }
    }
}

/// A connection's IO, noting on its [`HeadClock`] when bytes arrive.
pub struct Watched<T> {
    io: T,
    clock: Arc<HeadClock>,
}

impl<T> Watched<T> {
    pub fn new(io: T, clock: Arc<HeadClock>) -> Watched<T> {
        Watched { io, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_late_head_trips_the_watchdog_an_idle_connection_does_not() {
        let clock = HeadClock::new();
        let limit = Duration::from_secs(2);
        // The first head starts at accept: silent past the limit, the watchdog fires.
        let dog = tokio::spawn(watchdog(clock.clone(), limit));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(dog.is_finished(), "a silent new connection is not closed");

        // A request served, then idle far past the limit: nothing fires.
        let clock = HeadClock::new();
        let dog = tokio::spawn(watchdog(clock.clone(), limit));
        clock.request_started();
        clock.request_ended();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!dog.is_finished(), "an idle kept-alive connection was cut");
        // The next head's first byte starts its clock.
        clock.bytes_read();
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(!dog.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(dog.is_finished(), "a late head is not noticed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_being_read_is_not_a_head() {
        let clock = HeadClock::new();
        let dog = tokio::spawn(watchdog(clock.clone(), Duration::from_secs(1)));
        clock.request_started();
        clock.bytes_read(); // body bytes, in the request
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!dog.is_finished());
    }
}
