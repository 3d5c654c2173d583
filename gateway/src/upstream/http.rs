//! Streamable HTTP client for one upstream MCP server: pooled connections, JSON or SSE
//! replies, timeouts on every step.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use url::Url;

use super::sse;
use super::UpstreamError;

/// Largest single message accepted from a backend.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;

pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Value, UpstreamError>> + Send>>;

/// What a POST to a backend produced.
pub enum Reply {
    /// 202 Accepted: the backend took a notification or a response.
    Accepted,
    /// A JSON body, left as bytes so that a routed reply can be passed on untouched.
    Json(Bytes),
    /// An SSE stream of JSON-RPC messages.
    Stream(MessageStream),
}

pub struct Opened {
    /// `Mcp-Session-Id` the backend returned, if any.
    pub session_id: Option<String>,
    pub reply: Reply,
}

pub struct HttpUpstream {
    client: reqwest::Client,
    url: Url,
    headers: std::sync::RwLock<HeaderMap>,
    timeout: Duration,
    stream_idle: Duration,
}

/// One client (and so one connection pool) for all backends of a gateway.
pub fn build_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl HttpUpstream {
    pub fn new(
        client: reqwest::Client,
        url: Url,
        extra: &[(http::HeaderName, HeaderValue)],
        timeout: Duration,
        stream_idle: Duration,
    ) -> HttpUpstream {
        let mut headers = HeaderMap::new();
        for (k, v) in extra {
            headers.insert(k.clone(), v.clone());
        }
        HttpUpstream {
            client,
            url,
            headers: std::sync::RwLock::new(headers),
            timeout,
            stream_idle,
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The configured request headers as they are now (secrets may have rotated).
    pub fn headers(&self) -> HeaderMap {
        self.headers.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Replaces the configured request headers (a secret was rotated).
    pub fn set_headers(&self, extra: &[(http::HeaderName, HeaderValue)]) {
        let mut map = HeaderMap::new();
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
        if let Ok(mut h) = self.headers.write() {
            *h = map;
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        session: Option<&str>,
        version: &str,
        extra: &[(http::HeaderName, String)],
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .request(method, self.url.clone())
            .headers(self.headers())
            .header("mcp-protocol-version", version);
        if let Some(s) = session {
            rb = rb.header("mcp-session-id", s);
        }
        for (k, v) in extra {
            rb = rb.header(k.clone(), v);
        }
        rb
    }

    /// POSTs one JSON-RPC message (already serialized).
    pub async fn post(
        &self,
        session: Option<&str>,
        version: &str,
        body: Bytes,
        extra: &[(http::HeaderName, String)],
    ) -> Result<Opened, UpstreamError> {
        let rb = self
            .request(reqwest::Method::POST, session, version, extra)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(connect_error)?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(Opened {
                session_id,
                reply: Reply::Accepted,
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND && session.is_some() {
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(status_error(resp).await);
        }
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse {
            return Ok(Opened {
                session_id,
                reply: Reply::Stream(message_stream(resp, self.stream_idle)),
            });
        }
        let body = tokio::time::timeout(self.timeout, read_capped(resp, MAX_MESSAGE))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))??;
        Ok(Opened {
            session_id,
            reply: if body.is_empty() {
                Reply::Accepted
            } else {
                Reply::Json(body)
            },
        })
    }

    /// Opens the backend's server-to-client stream (GET). `Ok(None)`: the backend offers
    /// none (405).
    pub async fn open_stream(
        &self,
        session: Option<&str>,
        version: &str,
    ) -> Result<Option<MessageStream>, UpstreamError> {
        let rb = self
            .request(reqwest::Method::GET, session, version, &[])
            .header("accept", "text/event-stream");
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(connect_error)?;
        let status = resp.status();
        if status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ok(None);
        }
        if status == reqwest::StatusCode::NOT_FOUND && session.is_some() {
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(status_error(resp).await);
        }
        // The server stream may idle for long: no idle limit, the caller keeps it alive.
        Ok(Some(message_stream(resp, Duration::from_secs(24 * 3600))))
    }

    /// Ends an upstream session (best effort).
    pub async fn delete(&self, session: &str, version: &str) -> Result<(), UpstreamError> {
        let rb = self.request(reqwest::Method::DELETE, Some(session), version, &[]);
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(connect_error)?;
        let s = resp.status();
        if s.is_success() || s == reqwest::StatusCode::NOT_FOUND || s.as_u16() == 405 {
            Ok(())
        } else {
            Err(status_error(resp).await)
        }
    }
}

fn connect_error(e: reqwest::Error) -> UpstreamError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    UpstreamError::Connect(msg)
}

async fn status_error(resp: reqwest::Response) -> UpstreamError {
    let status = resp.status().as_u16();
    let body = read_capped(resp, 4096).await.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&body).into_owned();
    text.truncate(300);
    UpstreamError::Status { status, body: text }
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|l| l as usize > cap) {
        return Err(UpstreamError::Protocol(format!(
            "reply larger than {cap} bytes"
        )));
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        if out.len() + chunk.len() > cap {
            return Err(UpstreamError::Protocol(format!(
                "reply larger than {cap} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Turns an SSE response into a stream of JSON-RPC messages. Each wait for the next
/// chunk is bounded by `idle`; the stream ends when the backend closes it.
fn message_stream(resp: reqwest::Response, idle: Duration) -> MessageStream {
    struct State {
        body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
        parser: sse::Parser,
        done: bool,
    }
    let state = State {
        body: Box::pin(resp.bytes_stream()),
        parser: sse::Parser::new(MAX_MESSAGE),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.parser.next_event() {
                Err(sse::SseError::TooLarge(n)) => {
                    st.done = true;
                    return Some((
                        Err(UpstreamError::Protocol(format!(
                            "SSE event of {n} bytes is too large"
                        ))),
                        st,
                    ));
                }
                Ok(Some(ev)) => {
                    if ev.data.trim().is_empty() {
                        continue;
                    }
                    let item = serde_json::from_str::<Value>(&ev.data).map_err(|e| {
                        UpstreamError::Protocol(format!("SSE event is not JSON: {e}"))
                    });
                    return Some((item, st));
                }
                Ok(None) => {}
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(UpstreamError::Timeout(idle)), st));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(UpstreamError::Protocol(e.to_string())), st));
                }
                Ok(Some(Ok(chunk))) => st.parser.push(&chunk),
            }
        }
    }))
}
