//! Stopping without losing a request: the drain.
//!
//! Pingora, on SIGTERM or SIGQUIT (after an upgrade's hand-over), stops accepting and
//! then calls the app's `cleanup()`, which makes every keep-alive connection parked
//! between two requests drop **without reading** what its client may just have sent.
//! A client that does not resend a POST (the official MCP SDKs do not) loses that
//! request. The gateway therefore wraps the app ([`crate::connections::ConnectionCap`])
//! and holds that `cleanup()` back for the drain window (`server.drain_s`), or until
//! every connection is closed, whichever comes first. Meanwhile a request arriving on
//! a parked connection is read and answered, with `Connection: close` (Pingora sets it
//! for every request read once shutdown has begun), and the connection closes right
//! after that response. Responses advertise `Keep-Alive: timeout=drain_s`, so a client
//! that honours it retires an idle connection before the window could end under it.
//!
//! The phases, as [`Drain`] records them:
//! - **draining** (SIGTERM only): `/readyz` answers 503 while the listener still
//!   accepts, for `server.stop_delay_s`, so that a health-checking front stops sending
//!   new connections first. An upgrade (SIGQUIT) does not drain: the new process serves
//!   the same socket.
//! - **stopping**: accepting has stopped; event streams end (see [`crate::proxy`]),
//!   connections close after their next response, and the window runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Lifetimes;

/// The process's place in its shutdown, shared by the signal watcher, the connection
/// wrapper, `/readyz` and the response writer.
#[derive(Debug)]
pub struct Drain {
    lifetimes: Lifetimes,
    /// `timeout=N` of the `Keep-Alive` header, made once (every response carries it).
    keep_alive: http::HeaderValue,
    draining: AtomicBool,
    stopping: watch::Sender<bool>,
}

impl Drain {
    pub fn new(lifetimes: Lifetimes) -> Arc<Drain> {
        let n = lifetimes.advertised_s();
        // Digits after `timeout=`: always a valid header value.
        let keep_alive = http::HeaderValue::try_from(format!("timeout={n}"))
            .unwrap_or(http::HeaderValue::from_static("timeout=5"));
        Arc::new(Drain {
            keep_alive,
            lifetimes,
            draining: AtomicBool::new(false),
            stopping: watch::Sender::new(false),
        })
    }

    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// The value of the `Keep-Alive` header responses carry: `timeout=N`, N the
    /// advertised lifetime ([`Lifetimes::advertised_s`]).
    pub fn keep_alive(&self) -> &http::HeaderValue {
        &self.keep_alive
    }

    /// SIGTERM was received: `/readyz` answers 503 from now on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.is_stopping()
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Accepting has stopped: the drain window runs.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once accepting has stopped.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Pingora's signal handling with a pause on SIGTERM: `/readyz` turns 503 at once,
/// accepting stops `server.stop_delay_s` later. SIGQUIT (upgrade) and SIGINT (fast
/// shutdown) are Pingora's, unchanged.
pub struct DrainSignal {
    pub drain: Arc<Drain>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers: SIGINT stops at once");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
        }
        self.drain.begin_draining();
        let delay = self.drain.lifetimes().stop_delay;
        tracing::info!(
            stop_delay_s = delay.as_secs(),
            drain_s = self.drain.lifetimes().drain.as_secs(),
            "SIGTERM: /readyz answers 503; accepting stops after the stop delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Where a relayed event stream stands, so that it can be ended at an event boundary
/// once the process stops: the bytes written so far end an event, and the last `id:`
/// seen (what a client sends back as `Last-Event-ID`).
#[derive(Debug, Default)]
pub struct SseCursor {
    /// The current line, up to its end (only its first bytes: enough for `id:`).
    line: Vec<u8>,
    line_len: usize,
    /// The bytes so far end with an empty line (or nothing was written yet).
    at_boundary: bool,
    saw_id: bool,
}

/// How much of a line is kept to recognise an `id:` field.
const LINE_KEEP: usize = 8;

impl SseCursor {
    pub fn new() -> SseCursor {
        SseCursor {
            at_boundary: true,
            ..SseCursor::default()
        }
    }

    /// Follows the bytes written to the client.
    pub fn advance(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' => {
                    if self.line_len == 0 {
                        self.at_boundary = true;
                    } else if self.line.starts_with(b"id:") || self.line == b"id" {
                        self.saw_id = true;
                    }
                    self.line.clear();
                    self.line_len = 0;
                }
                _ => {
                    self.at_boundary = false;
                    if self.line.len() < LINE_KEEP {
                        self.line.push(b);
                    }
                    self.line_len += 1;
                }
            }
        }
    }

    /// Ending here loses nothing a client could not get back: at an event boundary,
    /// and either the stream has event ids to resume from, or it is a `GET` stream
    /// (which the client reopens; a `POST` answer without ids is left to finish).
    pub fn may_end(&self, is_get: bool) -> bool {
        self.at_boundary && (self.saw_id || is_get)
    }

    pub fn saw_id(&self) -> bool {
        self.saw_id
    }
}

#[cfg(test)]
mod tests {
    use super::SseCursor;

    #[test]
    fn ends_only_at_a_boundary_after_an_id() {
        let mut c = SseCursor::new();
        assert!(c.may_end(true), "nothing written yet");
        assert!(
            !c.may_end(false),
            "a POST answer without ids is left to finish"
        );
        c.advance(b"id: 7\nretry: 10");
        assert!(!c.may_end(false));
        c.advance(b"00\n\r\n");
        assert!(c.may_end(false), "event ended, id seen");
        c.advance(b"data: {\"a\"");
        assert!(!c.may_end(true), "mid-event");
        c.advance(b":1}\n\n");
        assert!(c.may_end(true));
    }

    #[test]
    fn a_data_line_naming_id_is_not_an_id() {
        let mut c = SseCursor::new();
        c.advance(b"data: id: 3\n\n: id:\n\n");
        assert!(!c.saw_id());
        assert!(!c.may_end(false));
    }
}
