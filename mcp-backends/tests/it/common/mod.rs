//! Helpers for the mcp-mock integration tests: start the built binary, speak
//! HTTP/1.1 with hyper's low-level client, read SSE streams. Every wait has a deadline.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const DEADLINE: Duration = Duration::from_secs(15);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// A running `mcp-mock --http 127.0.0.1:0 …`, killed on drop.
pub struct Mock {
    child: Child,
    pub addr: String,
}

impl Mock {
    pub async fn start(args: &[&str]) -> Mock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-mock"))
            .args(["--http", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcp-mock");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        within(
            "the listening line",
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("read stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let addr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("unexpected url {url:?}"))
            .to_string();
        Mock { child, addr }
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        within("the mock to exit", self.child.wait())
            .await
            .expect("wait")
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response<Incoming> {
        let stream = within("connect", tokio::net::TcpStream::connect(&self.addr))
            .await
            .expect("connect");
        let (mut sender, conn) = within(
            "handshake",
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        within("response headers", sender.send_request(req))
            .await
            .expect("send request")
    }

    /// POST a JSON-RPC message to /mcp with the headers a client must send.
    pub async fn post(&self, session: Option<&str>, message: &Value) -> Response<Incoming> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        self.send(
            "POST",
            "/mcp",
            &headers,
            Some(message.to_string().into_bytes()),
        )
        .await
    }

    /// `initialize` + `notifications/initialized`; returns the session id and result.
    pub async fn initialize(&self, capabilities: Value) -> (String, Value) {
        let resp = self
            .post(
                None,
                &json!({
                    "jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": capabilities,
                        "clientInfo": { "name": "it", "version": "1" },
                    },
                }),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let session = resp
            .headers()
            .get("mcp-session-id")
            .expect("Mcp-Session-Id header")
            .to_str()
            .expect("ascii")
            .to_string();
        let body = if is_sse(&resp) {
            Sse::new(resp)
                .next_message()
                .await
                .expect("initialize response")
        } else {
            json_body(resp).await
        };
        let resp = self
            .post(
                Some(&session),
                &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        (session, body["result"].clone())
    }

    /// Sends a request and returns its response message, whether the reply is JSON or SSE.
    pub async fn request(&self, session: &str, message: &Value) -> Value {
        let resp = self.post(Some(session), message).await;
        assert_eq!(resp.status(), StatusCode::OK, "status for {message}");
        let id = message["id"].clone();
        if is_sse(&resp) {
            let mut sse = Sse::new(resp);
            loop {
                let ev = sse
                    .next_message()
                    .await
                    .expect("stream ended before the response");
                if ev.get("method").is_none() && ev["id"] == id {
                    return ev;
                }
            }
        }
        json_body(resp).await
    }
}

pub fn is_sse(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

pub async fn body_bytes(resp: Response<Incoming>) -> Bytes {
    within("the body", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes()
}

pub async fn json_body(resp: Response<Incoming>) -> Value {
    let bytes = body_bytes(resp).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The text of the first content item of a tools/call response.
pub fn tool_text(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {response}"))
        .to_string()
}

/// One SSE event.
#[derive(Debug, Default, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads an SSE response body event by event.
pub struct Sse {
    body: Incoming,
    buf: String,
}

impl Sse {
    pub fn new(resp: Response<Incoming>) -> Sse {
        assert!(
            is_sse(&resp),
            "expected text/event-stream, got {:?}",
            resp.headers()
        );
        Sse {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` when the stream ends.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Event::default();
                let mut data = Vec::new();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => ev.id = Some(value.to_string()),
                        "event" => ev.event = Some(value.to_string()),
                        "data" => data.push(value.to_string()),
                        _ => {}
                    }
                }
                if !any {
                    continue;
                }
                ev.data = data.join("\n");
                return Some(ev);
            }
            let frame = within("an SSE frame", self.body.frame()).await?;
            let frame = frame.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The next event that carries a JSON-RPC message (priming events skipped).
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            let ev = self.next_event().await?;
            if ev.data.is_empty() {
                continue;
            }
            return Some(serde_json::from_str(&ev.data).expect("SSE data is JSON"));
        }
    }
}
