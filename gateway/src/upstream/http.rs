//! Streamable HTTP client for one upstream MCP server: pooled connections, JSON or SSE
//! replies, timeouts on every step.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{header, HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::upstreams::peer::HttpPeer;
use serde_json::Value;
use url::Url;

use super::sse;
use super::UpstreamError;

use crate::wire::meta::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

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

/// One HTTP/1.1 connector, and so one keep-alive pool, for every HTTP backend of a
/// gateway: Pingora's own, the one its proxy path uses. A request and its reply are read
/// and written by the task that serves the client, with no connection task to hand
/// them to (a cross-thread wake-up per call, measured at a quarter of the gateway's
/// throughput on two cores).
pub type Connector = pingora::connectors::http::v1::Connector;

/// Idle keep-alive connections kept across all backends.
const POOL_SIZE: usize = 1024;
/// How long an idle pooled connection is kept.
const IDLE: Duration = Duration::from_secs(60);
/// Connection set-up (TCP, and TLS for https) limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a resolved backend address is used before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);

/// The reqwest client for what is not a Streamable HTTP backend (legacy SSE backends,
/// the issuer's keys, Google's token endpoints).
pub fn build_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

pub fn build_connector() -> Arc<Connector> {
    Arc::new(Connector::new(Some(
        pingora::connectors::ConnectorOptions::new(POOL_SIZE),
    )))
}

/// Where requests go: parsed once from the backend's URL.
struct Target {
    host: String,
    port: u16,
    tls: bool,
    /// `Host` header value (with the port when it is not the scheme's default).
    authority: String,
    /// Path and query of every request.
    path: String,
}

pub struct HttpUpstream {
    conn: Arc<Connector>,
    url: Url,
    target: Target,
    /// The peers (one per resolved address, with the TLS settings) and when they were
    /// resolved.
    peers: std::sync::RwLock<Option<(std::time::Instant, Vec<Arc<HttpPeer>>)>>,
    headers: std::sync::RwLock<HeaderMap>,
    timeout: Duration,
    stream_idle: Duration,
}

/// One request to the backend, as `exchange` sends it (again, on a retry).
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a str,
    session: Option<&'a str>,
    version: &'a str,
    accept: &'a str,
    body: Option<&'a Bytes>,
    extra: &'a [(http::HeaderName, String)],
}

/// A request answered: the response header is read, the body is not.
struct Exchange {
    session: ClientSession,
    peer: Arc<HttpPeer>,
    status: u16,
    session_id: Option<String>,
    content_type: Option<String>,
    content_length: Option<usize>,
}

impl HttpUpstream {
    pub fn new(
        conn: Arc<Connector>,
        url: Url,
        extra: &[(http::HeaderName, HeaderValue)],
        timeout: Duration,
        stream_idle: Duration,
    ) -> HttpUpstream {
        let mut headers = HeaderMap::new();
        for (k, v) in extra {
            headers.insert(k.clone(), v.clone());
        }
        let tls = url.scheme() == "https";
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        HttpUpstream {
            conn,
            target: Target {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                tls,
                authority,
                path,
            },
            url,
            peers: std::sync::RwLock::new(None),
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

    /// The backend's peers, one per address its name resolves to (the one that last
    /// answered first); looked up again every `DNS_TTL`, and after no address answered.
    async fn peers(&self) -> Result<Vec<Arc<HttpPeer>>, UpstreamError> {
        if let Ok(g) = self.peers.read() {
            if let Some((at, p)) = g.as_ref() {
                if at.elapsed() < DNS_TTL {
                    return Ok(p.clone());
                }
            }
        }
        let t = &self.target;
        let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| UpstreamError::Connect(format!("looking up {} timed out", t.host)))?
        .map_err(|e| UpstreamError::Connect(format!("cannot resolve {}: {e}", t.host)))?
        .collect();
        if addrs.is_empty() {
            return Err(UpstreamError::Connect(format!("{} has no address", t.host)));
        }
        let peers: Vec<Arc<HttpPeer>> = addrs
            .into_iter()
            .map(|addr| {
                let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
                peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
                peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
                peer.options.idle_timeout = Some(IDLE);
                Arc::new(peer)
            })
            .collect();
        if let Ok(mut g) = self.peers.write() {
            *g = Some((std::time::Instant::now(), peers.clone()));
        }
        Ok(peers)
    }

    /// A connection to the first address that takes one (pooled when possible).
    async fn connect(&self) -> Result<(ClientSession, bool, Arc<HttpPeer>), UpstreamError> {
        let peers = self.peers().await?;
        let mut last = String::new();
        for (i, peer) in peers.iter().enumerate() {
            match self.conn.get_http_session(&**peer).await {
                Ok((s, reused)) => {
                    if i > 0 {
                        // Try this address first from now on.
                        if let Ok(mut g) = self.peers.write() {
                            if let Some((_, p)) = g.as_mut() {
                                if i < p.len() {
                                    p.swap(0, i);
                                }
                            }
                        }
                    }
                    return Ok((s, reused, peer.clone()));
                }
                Err(e) => last = describe(&e),
            }
        }
        if let Ok(mut g) = self.peers.write() {
            *g = None;
        }
        Err(UpstreamError::Connect(last))
    }

    fn request_header(&self, call: &Call<'_>) -> Result<Box<RequestHeader>, UpstreamError> {
        let Call {
            method,
            session,
            version,
            accept,
            body,
            extra,
        } = *call;
        let bad = |e: Box<pingora::Error>| UpstreamError::Protocol(format!("request header: {e}"));
        let mut h =
            RequestHeader::build(method, self.target.path.as_bytes(), Some(8 + extra.len()))
                .map_err(bad)?;
        // Names as constants: a name given as text is parsed again on every call.
        h.insert_header(header::HOST, self.target.authority.as_str())
            .map_err(bad)?;
        h.insert_header(header::ACCEPT, accept).map_err(bad)?;
        if let Some(b) = body {
            h.insert_header(header::CONTENT_TYPE, "application/json")
                .map_err(bad)?;
            h.insert_header(header::CONTENT_LENGTH, b.len().to_string())
                .map_err(bad)?;
        }
        h.insert_header(MCP_PROTOCOL_VERSION, version)
            .map_err(bad)?;
        if let Some(s) = session {
            h.insert_header(MCP_SESSION_ID, s).map_err(bad)?;
        }
        if let Ok(configured) = self.headers.read() {
            for (k, v) in configured.iter() {
                h.append_header(k.clone(), v.clone()).map_err(bad)?;
            }
        }
        for (k, v) in extra {
            h.insert_header(k.clone(), v.as_str()).map_err(bad)?;
        }
        Ok(Box::new(h))
    }

    /// Sends one request and reads the response header, all within the backend's
    /// timeout (retry included).
    async fn exchange(&self, call: Call<'_>) -> Result<Exchange, UpstreamError> {
        tokio::time::timeout(self.timeout, self.exchange_untimed(call))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    /// `exchange` without the timeout. A pooled connection that fails before answering
    /// (the backend closed it while idle) is retried once on another, as Pingora's
    /// proxy does.
    async fn exchange_untimed(&self, call: Call<'_>) -> Result<Exchange, UpstreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut s, reused, peer) = self.connect().await?;
            let header = self.request_header(&call)?;
            let sent = async {
                s.write_request_header(header).await?;
                if let Some(b) = call.body {
                    s.write_body(b).await?;
                }
                s.finish_body().await?;
                s.read_response().await
            }
            .await;
            match sent {
                Ok(_) => {}
                Err(_) if reused && attempt == 1 => continue,
                Err(e) => return Err(UpstreamError::Connect(describe(&e))),
            }
            let Some(h) = s.resp_header() else {
                return Err(UpstreamError::Protocol("no response header".into()));
            };
            let text = |name: &str| {
                h.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (status, session_id, content_type) = (
                h.status.as_u16(),
                text("mcp-session-id"),
                text("content-type"),
            );
            let content_length = text("content-length").and_then(|v| v.parse().ok());
            return Ok(Exchange {
                session: s,
                peer,
                status,
                session_id,
                content_type,
                content_length,
            });
        }
    }

    /// Reads the whole body (at most `cap` bytes), then returns the connection to the pool.
    async fn read_body(&self, mut x: Exchange, cap: usize) -> Result<Bytes, UpstreamError> {
        let too_large = || UpstreamError::Protocol(format!("reply larger than {cap} bytes"));
        if x.content_length.is_some_and(|l| l > cap) {
            return Err(too_large());
        }
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = x
            .session
            .read_body_ref()
            .await
            .map_err(|e| UpstreamError::Protocol(describe(&e)))?
        {
            if out.len() + chunk.len() > cap {
                return Err(too_large());
            }
            out.extend_from_slice(chunk);
        }
        self.conn
            .release_http_session(x.session, &*x.peer, Some(IDLE))
            .await;
        Ok(out.freeze())
    }

    async fn status_error(&self, x: Exchange) -> UpstreamError {
        let status = x.status;
        let body = self.read_body(x, 64 * 1024).await.unwrap_or_default();
        if (400..500).contains(&status) {
            // A modern server refuses with a JSON-RPC error: relayed as it is.
            if let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) {
                if answer.pointer("/error/code").is_some_and(|c| c.is_i64()) {
                    return UpstreamError::Refused { status, answer };
                }
            }
        }
        let mut text = String::from_utf8_lossy(&body).into_owned();
        text.truncate(300);
        UpstreamError::Status { status, body: text }
    }

    /// POSTs one JSON-RPC message (already serialized).
    pub async fn post(
        &self,
        session: Option<&str>,
        version: &str,
        body: Bytes,
        extra: &[(http::HeaderName, String)],
    ) -> Result<Opened, UpstreamError> {
        let x = self
            .exchange(Call {
                method: "POST",
                session,
                version,
                accept: "application/json, text/event-stream",
                body: Some(&body),
                extra,
            })
            .await?;
        let session_id = x.session_id.clone();
        if x.status == 202 {
            // Nothing to read (or a body to ignore): the connection goes back to the pool.
            let _ = tokio::time::timeout(self.timeout, self.read_body(x, 64 * 1024)).await;
            return Ok(Opened {
                session_id,
                reply: Reply::Accepted,
            });
        }
        if x.status == 404 && session.is_some() {
            return Err(UpstreamError::SessionExpired);
        }
        if !(200..300).contains(&x.status) {
            return Err(self.status_error(x).await);
        }
        if is_event_stream(&x) {
            return Ok(Opened {
                session_id,
                reply: Reply::Stream(self.message_stream(x, self.stream_idle)),
            });
        }
        let body = tokio::time::timeout(self.timeout, self.read_body(x, MAX_MESSAGE))
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
        let x = self
            .exchange(Call {
                method: "GET",
                session,
                version,
                accept: "text/event-stream",
                body: None,
                extra: &[],
            })
            .await?;
        if x.status == 405 {
            return Ok(None);
        }
        if x.status == 404 && session.is_some() {
            return Err(UpstreamError::SessionExpired);
        }
        if !(200..300).contains(&x.status) {
            return Err(self.status_error(x).await);
        }
        // The server stream may idle for long: no idle limit, the caller keeps it alive.
        Ok(Some(self.message_stream(x, Duration::from_secs(24 * 3600))))
    }

    /// Ends an upstream session (best effort).
    pub async fn delete(&self, session: &str, version: &str) -> Result<(), UpstreamError> {
        let x = self
            .exchange(Call {
                method: "DELETE",
                session: Some(session),
                version,
                accept: "*/*",
                body: None,
                extra: &[],
            })
            .await?;
        let s = x.status;
        if (200..300).contains(&s) || s == 404 || s == 405 {
            let _ = tokio::time::timeout(self.timeout, self.read_body(x, 64 * 1024)).await;
            Ok(())
        } else {
            Err(self.status_error(x).await)
        }
    }

    /// Turns an SSE response into a stream of JSON-RPC messages. Each wait for the next
    /// chunk is bounded by `idle`; the stream ends when the backend ends the body, and the
    /// connection then goes back to the pool.
    fn message_stream(&self, x: Exchange, idle: Duration) -> MessageStream {
        struct State {
            x: Option<Exchange>,
            conn: Arc<Connector>,
            parser: sse::Parser,
        }
        let state = State {
            x: Some(x),
            conn: self.conn.clone(),
            parser: sse::Parser::new(MAX_MESSAGE),
        };
        Box::pin(futures::stream::unfold(state, move |mut st| async move {
            loop {
                match st.parser.next_event() {
                    Err(sse::SseError::TooLarge(n)) => {
                        st.x = None;
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
                let x = st.x.as_mut()?;
                match tokio::time::timeout(idle, x.session.read_body_ref()).await {
                    Err(_) => {
                        st.x = None;
                        return Some((Err(UpstreamError::Timeout(idle)), st));
                    }
                    Ok(Err(e)) => {
                        st.x = None;
                        return Some((Err(UpstreamError::Protocol(describe(&e))), st));
                    }
                    Ok(Ok(Some(chunk))) => st.parser.push(chunk),
                    Ok(Ok(None)) => {
                        if let Some(x) = st.x.take() {
                            st.conn
                                .release_http_session(x.session, &*x.peer, Some(IDLE))
                                .await;
                        }
                        return None;
                    }
                }
            }
        }))
    }
}

/// A backend's answer relayed as it came: the pass-through route's view of a backend.
pub struct Relayed {
    pub status: u16,
    pub content_type: Option<String>,
    /// The backend's own `Mcp-Session-Id` (the caller seals it before a client sees it).
    pub session_id: Option<String>,
    /// The body, chunk by chunk; each wait for a chunk is bounded by the stream idle
    /// limit (or none for a GET stream), and the connection goes back to the pool at
    /// the end.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
}

/// A request for [`HttpUpstream::relay`]: the client's method, session and headers.
pub struct RelayRequest<'a> {
    pub method: &'a str,
    pub session: Option<&'a str>,
    pub version: &'a str,
    pub accept: &'a str,
    pub body: Option<&'a Bytes>,
    pub extra: &'a [(http::HeaderName, String)],
}

impl HttpUpstream {
    /// Sends a client's request to the backend as it is and hands back the answer as
    /// it comes, without reading its messages (the pass-through route). The guards
    /// (policy, body size, session binding) ran before; the reply is the backend's.
    pub async fn relay(&self, r: RelayRequest<'_>) -> Result<Relayed, UpstreamError> {
        let x = self
            .exchange(Call {
                method: r.method,
                session: r.session,
                version: r.version,
                accept: r.accept,
                body: r.body,
                extra: r.extra,
            })
            .await?;
        let idle = if r.method == "GET" {
            Duration::from_secs(24 * 3600)
        } else {
            self.stream_idle
        };
        Ok(Relayed {
            status: x.status,
            content_type: x.content_type.clone(),
            session_id: x.session_id.clone(),
            body: self.chunk_stream(x, idle),
        })
    }

    /// The body of an answered request, chunk by chunk, each wait bounded by `idle`.
    fn chunk_stream(
        &self,
        x: Exchange,
        idle: Duration,
    ) -> futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>> {
        let conn = self.conn.clone();
        Box::pin(futures::stream::unfold(Some(x), move |st| {
            let conn = conn.clone();
            async move {
                let mut x = st?;
                match tokio::time::timeout(idle, x.session.read_body_bytes()).await {
                    Err(_) => Some((Err(UpstreamError::Timeout(idle)), None)),
                    Ok(Err(e)) => Some((Err(UpstreamError::Protocol(describe(&e))), None)),
                    Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(x))),
                    Ok(Ok(None)) => {
                        conn.release_http_session(x.session, &*x.peer, Some(IDLE))
                            .await;
                        None
                    }
                }
            }
        }))
    }
}

fn is_event_stream(x: &Exchange) -> bool {
    x.content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// A Pingora error in words: its kind and what it was doing, with the cause.
fn describe(e: &pingora::Error) -> String {
    e.to_string()
}
