//! Stopping without losing a request, the gateway's way (docs/operations.md, "Stopping
//! without losing a request"): on SIGTERM or SIGINT `/readyz` answers 503 for
//! `server.stop_delay_s` while the listener still accepts, so a health-checking front
//! stops sending first; then accepting stops and, for at most `server.drain_s`, the
//! connections already open keep being served. A request read in that window (in flight,
//! or arriving on a connection parked between two requests) is answered with
//! `Connection: close`, and hyper closes the connection right after that response: a
//! connection is never closed under a request the client may be sending. Idle
//! connections are not closed early (hyper's `graceful_shutdown()` would close a parked
//! connection without reading it, the race this avoids); they end when their client
//! closes them, at `server.header_timeout_s`, or when the window ends.

use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{HeaderValue, CONNECTION};

use crate::http::Resp;

/// Where a stopping process is.
#[derive(Debug, Default)]
pub struct Drain {
    /// SIGTERM/SIGINT received: `/readyz` fails.
    stopping: AtomicBool,
    /// Accepting stopped: every response closes its connection.
    closing: AtomicBool,
}

impl Drain {
    /// The stop signal arrived: readiness fails from now on.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The listener is closed: responses from now on close their connection.
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Marks `resp` `Connection: close` once accepting has stopped.
    pub fn mark(&self, resp: &mut Resp) {
        if self.closing() {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }
}
