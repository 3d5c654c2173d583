//! 2026-07-28 over stdio: the same validation as HTTP without the headers
//! (`_meta`, version, method), `subscriptions/listen` notifications on stdout
//! (ended by `notifications/cancelled`), and requests run on the process session
//! so that `notifications/cancelled` reaches them.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::listen::Filter;
use super::{check_method, check_version, read_meta, Method};
use crate::mock::handler::{meta_traceparent, progress_token, spawn_ctx, RequestCtx};
use crate::mock::jsonrpc;
use crate::mock::server::MockServer;
use crate::mock::session::{OutMsg, Session};

/// Starts a modern request; returns an immediate error response, if any.
pub fn request(
    server: &Arc<MockServer>,
    session: &Arc<Session>,
    out: &mpsc::UnboundedSender<OutMsg>,
    id: Value,
    method: String,
    params: Value,
) -> Option<Value> {
    let mode = server.config.protocol;
    // The method first: a legacy client's `initialize` (no `_meta`) learns which
    // versions this server speaks.
    let checked = check_method(mode, &method).and_then(|kind| {
        let (version, meta) = read_meta(&params)?;
        check_version(mode, &version)?;
        Ok((kind, meta))
    });
    let (kind, meta) = match checked {
        Ok(v) => v,
        Err(refusal) => return Some(jsonrpc::error_response(&id, &refusal.error)),
    };
    if kind == Method::Listen {
        return listen(server, session, out, id, &params);
    }
    let ctx = RequestCtx {
        progress_token: progress_token(&params),
        meta_traceparent: meta_traceparent(&params),
        modern: Some(meta),
        server: Arc::clone(server),
        session: Arc::clone(session),
        request_id: id,
        headers: Arc::default(),
        out: out.clone(),
        related_as_unsolicited: true,
    };
    spawn_ctx(ctx, method, params);
    None
}

fn listen(
    server: &Arc<MockServer>,
    session: &Arc<Session>,
    out: &mpsc::UnboundedSender<OutMsg>,
    id: Value,
    params: &Value,
) -> Option<Value> {
    let filter = match Filter::parse(params) {
        Ok(f) => f,
        Err(e) => return Some(jsonrpc::error_response(&id, &e)),
    };
    let cancelled = session.register_running(&id);
    let (server, session) = (Arc::clone(server), Arc::clone(session));
    let out = out.clone();
    tokio::spawn(async move {
        if !server.config.listen_delay.is_zero() {
            tokio::time::sleep(server.config.listen_delay).await;
        }
        let mut rx = server.listeners.open(id.clone(), filter);
        loop {
            tokio::select! {
                _ = cancelled.cancelled() => break,
                m = rx.recv() => match m {
                    Some(v) => {
                        if out.send(OutMsg::Related(v)).is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        session.unregister_running(&id);
    });
    None
}
