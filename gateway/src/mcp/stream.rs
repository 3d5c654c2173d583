//! `GET /mcp`: the session's server-to-client stream, merging every backend's stream
//! with keep-alives, ending when the session is deleted or the process shuts down.
//!
//! Not here: the streams of single calls ([`super::forward`]).

use super::exchange::{Caller, Info, Request, Response};
use super::handler::Gateway;
use super::relay;
use super::session::SessionClaims;
use crate::upstream::sse::format_event;
use crate::upstream::{to_bytes, UpstreamError};
use crate::wire::version;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How often an idle stream gets a comment line, so that proxies keep it open.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);
use crate::mcp::guards::check_stream_accept;

impl Gateway {
    /// GET: one downstream stream fed by each backend's server stream, re-opened with
    /// backoff while the client stays connected.
    pub(super) async fn get(
        self: &Arc<Self>,
        req: Request,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        if let Err(r) = check_stream_accept(&req.headers) {
            return r.into();
        }
        // Listening before the session is checked: a DELETE in between is not missed.
        let ended = self.session_ended.subscribe();
        let claims = match self.open_session(&req.headers, caller) {
            Ok(c) => c,
            Err(r) => return r,
        };
        info.session = Some(claims.sid.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Value>(256);
        for b in self
            .backends
            .iter()
            .filter(|b| self.may_use(b, caller))
            .map(|b| b.index)
        {
            let (gw, claims, tx) = (self.clone(), claims.clone(), tx.clone());
            tokio::spawn(async move {
                gw.pump_server_stream(claims, b, tx, Wanted::Session, None)
                    .await
            });
        }
        drop(tx);
        let keepalive =
            tokio_stream_interval(KEEPALIVE).map(|_| Bytes::from_static(b": keepalive\n\n"));
        let messages = tokio_stream_receiver(rx).map(|msg| format_event(&to_bytes(&msg)));
        let events = futures::stream::select(messages, keepalive);
        // Send a comment first so the client sees the stream open at once.
        // The stream ends with the session (DELETE); the pumps stop when it is dropped.
        let stream = futures::stream::once(async { Bytes::from_static(b": stream open\n\n") })
            .chain(events)
            .take_until(self.clone().session_end(claims.sid.clone(), ended));
        Response::Sse {
            headers: Vec::new(),
            stream: stream.boxed(),
        }
    }

    /// Relays backend `b`'s change notifications to `tx` until it closes, opening the
    /// backend's stream again (with backoff) when it ends; for a modern backend, with the
    /// resource URIs `wanted`, listened for again as they change. `ready` is told when
    /// the first try to open it is over (the backend listens, or it failed).
    pub(super) async fn pump_server_stream(
        self: Arc<Self>,
        claims: Arc<SessionClaims>,
        b: usize,
        tx: tokio::sync::mpsc::Sender<Value>,
        wanted: Wanted,
        mut ready: Option<oneshot::Sender<()>>,
    ) {
        let backend = self.backends[b].clone();
        let mut backoff = Duration::from_millis(500);
        let mut watched: Option<watch::Receiver<Vec<String>>> = None;
        loop {
            // An ended session's stream stops; and it never re-creates an upstream
            // session (that would start a per-session process nobody will use).
            if self.ended.contains_key(&claims.sid) {
                return;
            }
            let open = async {
                let s = self.upstream(&claims, b).await?;
                let uris = match &wanted {
                    Wanted::Fixed(uris) => uris.clone(),
                    Wanted::Session if version::is_modern(&s.version) => watched
                        .get_or_insert_with(|| self.subscriptions.watch(&claims.sid, b))
                        .borrow_and_update()
                        .clone(),
                    Wanted::Session => Vec::new(),
                };
                backend.open_stream(&claims.sid, &s, &uris).await
            };
            let opened = tokio::select! {
                r = open => r,
                _ = tx.closed() => return,
            };
            // The first try is over: the stream listens now, or it will not for a while.
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            match opened {
                Ok(Some(mut stream)) => {
                    backoff = Duration::from_millis(500);
                    let mut resubscribe = false;
                    loop {
                        let item = tokio::select! {
                            i = stream.next() => i,
                            _ = tx.closed() => return,
                            Ok(()) = changed(&mut watched) => {
                                resubscribe = true;
                                break;
                            }
                        };
                        match item {
                            Some(Ok(mut msg)) => {
                                relay::rewrite_server_request(backend.name(), &mut msg);
                                if tx.send(msg).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::debug!(backend = backend.name(), error = %e, "server stream broke");
                                break;
                            }
                            None => break,
                        }
                    }
                    if resubscribe {
                        continue; // listened for again at once, with the new URIs
                    }
                }
                Ok(None) => return, // the backend has no server stream
                // Retried with backoff: a later request may re-create the upstream
                // session (then overrides have it).
                Err(UpstreamError::SessionExpired) => {}
                Err(e) => {
                    tracing::debug!(backend = backend.name(), error = %e, "cannot open server stream")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

pub(super) fn tokio_stream_interval(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        |mut iv| async move {
            iv.tick().await;
            Some(((), iv))
        },
    )
}

pub(super) fn tokio_stream_receiver<T>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// A call's stream with a comment every `every` while it waits: for a modern client,
/// closing the stream is cancelling the call, and the gateway learns of a closed
/// connection only when it writes. Ends when `s` ends.
pub(super) fn with_keepalive(
    s: futures::stream::BoxStream<'static, Bytes>,
    every: Duration,
) -> futures::stream::BoxStream<'static, Bytes> {
    let iv = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    futures::stream::unfold((s, iv), |(mut s, mut iv)| async move {
        tokio::select! {
            c = s.next() => c.map(|c| (c, (s, iv))),
            _ = iv.tick() => Some((Bytes::from_static(b": keepalive\n\n"), (s, iv))),
        }
    })
    .boxed()
}

/// The resource URIs a backend's change stream is opened with.
pub(super) enum Wanted {
    /// A 2026-07-28 client's `resourceSubscriptions` (theirs at this backend).
    Fixed(Vec<String>),
    /// A 2025 session's `GET` stream: what it subscribed to at a modern backend
    /// ([`super::subscriptions`]), as it changes.
    Session,
}

/// Resolves when the watched URIs change; never without a watch (or once its sender
/// is gone: the select's `Ok(())` pattern then disables the branch).
async fn changed(
    watched: &mut Option<watch::Receiver<Vec<String>>>,
) -> Result<(), watch::error::RecvError> {
    match watched {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
