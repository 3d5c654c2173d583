//! Answering the requests of one POST: JSON when only responses came (and the
//! mode allows), an SSE stream otherwise.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::respond::{json_response, sse_response, transport_error};
use super::RECONNECT_RETRY_MS;
use crate::mock::config::ReplyMode;
use crate::mock::protocol;
use crate::mock::server::MockServer;
use crate::mock::session::{OutMsg, Session};
use crate::mock::sse::{sse_body, HttpBody, StreamKind};

/// Collects what the request handlers emit and answers with JSON when only
/// responses came (and the mode allows), with an SSE stream otherwise.
pub async fn reply(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<OutMsg>,
    expected: usize,
    mut buffered: Vec<Value>,
    batch: bool,
    version: &str,
) -> Response<HttpBody> {
    let mut done = 0usize;
    if server.config.reply_mode != ReplyMode::Sse {
        while done < expected {
            match rx.recv().await {
                None => break,
                Some(OutMsg::Response(v)) => {
                    buffered.push(v);
                    done += 1;
                }
                Some(OutMsg::NoResponse) => done += 1,
                Some(other) => {
                    return open_sse(
                        server,
                        session,
                        rx,
                        expected,
                        done,
                        buffered,
                        Some(other),
                        version,
                    )
                }
            }
        }
        if !buffered.is_empty() {
            let body = if batch {
                Value::Array(buffered)
            } else {
                buffered.swap_remove(0)
            };
            return json_response(StatusCode::OK, &body);
        }
        // Every request was cancelled: an SSE stream that ends without a response.
    }
    open_sse(server, session, rx, expected, done, buffered, None, version)
}

#[allow(clippy::too_many_arguments)]
fn open_sse(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<OutMsg>,
    expected: usize,
    done: usize,
    buffered: Vec<Value>,
    first: Option<OutMsg>,
    version: &str,
) -> Response<HttpBody> {
    let Some(registry) = session.streams() else {
        return transport_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Value::Null,
            "no stream registry",
        );
    };
    let (sid, conn) = registry.open(StreamKind::Post, protocol::sends_priming_events(version));
    for message in &buffered {
        registry.send(sid, message);
    }
    tokio::spawn(async move {
        let Some(registry) = session.streams() else {
            return;
        };
        let mut done = done;
        let mut next = first;
        loop {
            let message = match next.take() {
                Some(m) => m,
                None if done >= expected => break,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            match message {
                OutMsg::Related(v) => registry.send(sid, &v),
                OutMsg::Response(v) => {
                    registry.send(sid, &v);
                    done += 1;
                }
                OutMsg::NoResponse => done += 1,
                OutMsg::CloseStream => break,
                OutMsg::Disconnect => registry.disconnect(sid, RECONNECT_RETRY_MS),
            }
        }
        registry.finish(sid);
    });
    sse_response(sse_body(conn, Some(server.config.keepalive)))
}
