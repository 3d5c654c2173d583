//! stdio transport: newline-delimited JSON-RPC on stdin/stdout (2025-11-25
//! transports spec). Nothing but MCP messages is ever written to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::config::ProtocolMode;
use super::handler;
use super::jsonrpc::{self, classify, Incoming, RpcError};
use super::modern;
use super::protocol;
use super::server::MockServer;
use super::session::{OutMsg, Session};

/// How long to let running requests finish after stdin closes.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Serves until stdin reaches end of file.
pub async fn serve(
    server: Arc<MockServer>,
    out: mpsc::UnboundedSender<OutMsg>,
) -> anyhow::Result<()> {
    let session = server
        .default_session()
        .ok_or_else(|| anyhow::anyhow!("stdio mode needs its session"))?;
    let headers = Arc::new(http::HeaderMap::new());
    // stdin is read by a thread of its own (tokio's stdin would hand every read to the
    // blocking pool, which costs more than the request itself).
    let (line_tx, mut lines) = mpsc::channel::<String>(1024);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            use std::io::BufRead;
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut buf = String::new();
            loop {
                buf.clear();
                match input.read_line(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line_tx.blocking_send(buf.clone()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                let err = RpcError::parse_error(format!("Parse error: {e}"));
                let _ = out.send(OutMsg::Response(jsonrpc::error_response(
                    &Value::Null,
                    &err,
                )));
                continue;
            }
        };
        match value {
            Value::Array(items) => {
                handle_batch(&server, &session, &headers, &out, items);
            }
            single => {
                if let Some(response) = handle_one(&server, &session, &headers, &out, single) {
                    let _ = out.send(OutMsg::Response(response));
                }
            }
        }
    }
    tracing::info!("stdin closed; finishing running requests");
    let deadline = Instant::now() + DRAIN_LIMIT;
    while session.running_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Handles one message; returns an immediate error response, if any. Requests
/// answer later on `out`.
fn handle_one(
    server: &Arc<MockServer>,
    session: &Arc<Session>,
    headers: &Arc<http::HeaderMap>,
    out: &mpsc::UnboundedSender<OutMsg>,
    value: Value,
) -> Option<Value> {
    match classify(value) {
        Incoming::Request { id, method, params } => {
            let modern = match server.config.protocol {
                ProtocolMode::Legacy => false,
                ProtocolMode::Modern => true,
                ProtocolMode::Mixed => modern::has_modern_meta(&params),
            };
            if modern {
                return modern::stdio::request(server, session, out, id, method, params);
            }
            if method == "initialize" {
                session.note_initialize();
            } else if !handler::is_legacy_method(&method) {
                // Unknown methods (`server/discover`, the modern probe, among them)
                // are -32601 whether or not initialize came first.
                return Some(jsonrpc::error_response(
                    &id,
                    &RpcError::method_not_found(&method),
                ));
            } else if method != "ping" && !session.initialize_seen() {
                let err = RpcError::invalid_request(format!(
                    "mock: received '{method}' before initialize"
                ));
                return Some(jsonrpc::error_response(&id, &err));
            }
            handler::spawn_request(
                Arc::clone(server),
                Arc::clone(session),
                id,
                method,
                params,
                Arc::clone(headers),
                out.clone(),
                true,
            );
            None
        }
        Incoming::Notification { method, params } => {
            handler::handle_notification(session, &method, &params);
            None
        }
        Incoming::Response { id, outcome } => {
            if !session.resolve_server_request(&id, outcome) {
                tracing::warn!(%id, "response to an unknown server request");
            }
            None
        }
        Incoming::Invalid { id, error } => Some(jsonrpc::error_response(&id, &error)),
    }
}

/// A batch (2025-03-26 only): the responses go out together as one array.
fn handle_batch(
    server: &Arc<MockServer>,
    session: &Arc<Session>,
    headers: &Arc<http::HeaderMap>,
    out: &mpsc::UnboundedSender<OutMsg>,
    items: Vec<Value>,
) {
    let version = session.protocol();
    if items.is_empty() || !protocol::allows_batches(&version) {
        let err = RpcError::invalid_request(if items.is_empty() {
            "empty JSON-RPC batch".to_string()
        } else {
            format!("JSON-RPC batches are not supported in protocol version {version}")
        });
        let _ = out.send(OutMsg::Response(jsonrpc::error_response(
            &Value::Null,
            &err,
        )));
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut responses = Vec::new();
    let mut expected = 0usize;
    for item in items {
        let is_request = item.get("method").is_some() && item.get("id").is_some();
        if let Some(immediate) = handle_one(server, session, headers, &tx, item) {
            responses.push(immediate);
        } else if is_request {
            expected += 1;
        }
    }
    drop(tx);
    let out = out.clone();
    tokio::spawn(async move {
        let mut done = 0;
        while done < expected {
            match rx.recv().await {
                Some(OutMsg::Response(v)) => {
                    responses.push(v);
                    done += 1;
                }
                Some(OutMsg::NoResponse) => done += 1,
                Some(_) => {}
                None => break,
            }
        }
        if !responses.is_empty() {
            let _ = out.send(OutMsg::Response(Value::Array(responses)));
        }
    });
}

/// Writes every outgoing message as one line on stdout, in order, from a thread of its
/// own; whatever is queued goes out in one write.
pub fn spawn_writer(mut rx: mpsc::UnboundedReceiver<OutMsg>) {
    let spawned = std::thread::Builder::new()
        .name("stdout-writer".into())
        .spawn(move || {
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
            let line_of = |message: OutMsg| match message {
                OutMsg::Related(v) | OutMsg::Response(v) => {
                    let mut line = v.to_string();
                    line.push('\n');
                    Some(line)
                }
                // No stream to close or disconnect on stdio: the response is simply
                // never sent (close_stream) or was already suppressed (cancel).
                OutMsg::NoResponse | OutMsg::CloseStream | OutMsg::Disconnect => None,
            };
            while let Some(message) = rx.blocking_recv() {
                let mut next = Some(message);
                while let Some(m) = next {
                    if let Some(line) = line_of(m) {
                        if out.write_all(line.as_bytes()).is_err() {
                            tracing::warn!("stdout closed");
                            return;
                        }
                    }
                    next = rx.try_recv().ok();
                }
                if out.flush().is_err() {
                    tracing::warn!("stdout closed");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the stdout writer: {e}");
    }
}
