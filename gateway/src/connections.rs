//! A cap on downstream connections (`server.max_connections`).
//!
//! Why: every open connection costs a file descriptor and a task, and a client can open
//! many and send nothing (or trickle). Pingora has no such cap, so the proxy's
//! [`ServerApp`] is wrapped: a new connection takes a permit or is closed at once, and
//! the permit rides on the connection itself ([`Capped`]) so that it is held across
//! keep-alive requests and freed when the connection is dropped. Closing at once (rather
//! than leaving it in the backlog) tells a load balancer to try another replica.
//!
//! The same wrapper holds Pingora's `cleanup()` back for the drain window
//! ([`crate::drain`]): until then a connection parked between two requests still reads
//! its next request and answers it (with `Connection: close`) instead of being dropped
//! unread. All permits back means every connection is closed, which ends the window
//! early.
//!
//! Not done here: timeouts. The request head has Pingora's read timeout, the body the
//! gateway's total deadline (`server.body_timeout_s`, in [`crate::proxy`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::drain::Drain;

/// Connections refused because the cap was reached (for the metrics).
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Wraps `inner` so that at most `max` connections are served at once, and so that
/// stopping drains them.
pub struct ConnectionCap<A> {
    inner: Arc<A>,
    permits: Arc<Semaphore>,
    max: u32,
    drain: Arc<Drain>,
}

impl<A> ConnectionCap<A> {
    pub fn new(inner: A, max: usize, drain: Arc<Drain>) -> ConnectionCap<A> {
        let max = u32::try_from(max.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        ConnectionCap {
            inner: Arc::new(inner),
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            drain,
        }
    }

    fn open(&self) -> usize {
        (self.max as usize).saturating_sub(self.permits.available_permits())
    }

    /// Waits until every connection is closed or the drain window is over.
    async fn drain(&self) {
        let window = self.drain.lifetimes().drain;
        tracing::info!(
            open = self.open(),
            drain_s = window.as_secs(),
            "accepting stopped: serving open connections, each closed after its next response"
        );
        match tokio::time::timeout(window, self.permits.acquire_many(self.max)).await {
            Ok(_) => tracing::info!("drained: every connection is closed"),
            Err(_) => tracing::info!(
                open = self.open(),
                "drain window over: closing the connections left"
            ),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionCap<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A kept-alive connection comes back already holding its permit.
        let stream = if stream.as_any().is::<Capped>() {
            stream
        } else {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("server.max_connections reached: closing a new connection");
                return None;
            };
            Box::new(Capped {
                inner: stream,
                _permit: permit,
            })
        };
        self.inner.process_new(stream, shutdown).await
    }

    /// Called by Pingora once accepting has stopped; the inner `cleanup()` drops parked
    /// connections, so it waits for the drain.
    async fn cleanup(&self) {
        self.drain.begin_stopping();
        self.drain().await;
        self.inner.cleanup().await
    }
}

/// A connection holding its permit; everything else is the inner stream's.
#[derive(Debug)]
struct Capped {
    inner: Stream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Capped {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Capped {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Capped {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Capped {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Capped {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Capped {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Capped {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
