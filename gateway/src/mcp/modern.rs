//! The modern era downstream (2026-07-28): stateless requests on `/mcp`.
//!
//! A modern request carries its revision, the client's capabilities and identity in
//! `params._meta` and mirrors its method and target into `Mcp-Method` / `Mcp-Name`. It is
//! checked in the order the transport chapter gives (header present, `_meta` complete,
//! header = body, revision spoken, method known), then served by the same verbs as a
//! legacy session's requests, on a per-request "session" that lives nowhere
//! ([`StatelessClaims`]); its answer is shaped for the era ([`super::shape`]).
//!
//! Not here: `subscriptions/listen` ([`super::listen`]); the legacy path
//! ([`super::lifecycle`]).

use std::sync::Arc;

use dashmap::DashMap;
use http::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::exchange::{Caller, Info, Request, Response};
use super::handler::Gateway;
use super::jsonrpc::{self, Message, Method};
use super::session::{now_secs, SessionClaims};
use super::shape::Shape;
use crate::config::AuthMode;
use crate::upstream::UpstreamError;
use crate::wire::caps::{self, Caps};
use crate::wire::meta::{self, RequestMeta};
use crate::wire::request::{ModernRequest, RawMeta};
use crate::wire::version;

/// A modern request refused before it is served: HTTP status, JSON-RPC code, message,
/// and the error's `data` when the schema gives it one.
fn refuse(id: &Value, status: u16, code: i64, message: String, data: Option<Value>) -> Response {
    let body = match data {
        Some(d) => jsonrpc::error_with_data(id, code, message, d),
        None => jsonrpc::error(id, code, message),
    };
    Response::json(status, &body)
}

/// Whether a POST without a session is a modern request: its `MCP-Protocol-Version`
/// header names a revision that is not a legacy one, or its `_meta` names a revision.
pub(super) fn is_modern_request(headers: &HeaderMap, params: Option<&Value>) -> bool {
    match headers
        .get(meta::MCP_PROTOCOL_VERSION)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) => !version::is_supported(v),
        None => RequestMeta::present(params),
    }
}

/// A modern request that passed its checks, with its per-request session.
struct Checked {
    id: Value,
    method: Method,
    params: Option<Value>,
    claims: Arc<SessionClaims>,
    /// The request set a log level.
    log: bool,
    /// The call's name as its head resolved it ([`super::early::Head::route`]).
    route: Option<(usize, String)>,
}

/// A refusal of [`check`], recorded: the labels taken from the head
/// ([`super::early`]) are not trusted now.
fn refused((resp, code): Refusal, info: &mut Info) -> Response {
    info.rpc_error = Some(code);
    info.backend = None;
    info.target = None;
    resp
}

impl Gateway {
    /// Serves one modern message.
    pub(super) async fn modern(
        self: &Arc<Self>,
        req: &Request,
        msg: Message,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let (id, method, mut params) = match msg {
            Message::Request { id, method, params } => (id, method, params),
            // No client notification is defined on Streamable HTTP in this revision
            // (cancelling is closing the stream): accepted and dropped.
            Message::Notification { method, .. } => {
                info.rpc_method = Some(method);
                return Response::accepted();
            }
            Message::Response { id, .. } => {
                info.rpc_error = Some(jsonrpc::INVALID_REQUEST);
                return refuse(
                    &id,
                    400,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: clients send no JSON-RPC responses in protocol 2026-07-28 (answers to input requests go in inputResponses of a retried request)".into(),
                    None,
                );
            }
        };
        info.rpc_method = Some(method.clone());
        let meta = match check(req, &id, &method, params.as_mut()) {
            Ok(m) => m,
            Err(r) => return refused(r, info),
        };
        let log = meta.log_level.is_some();
        let claims = self.stateless.claims(&caller.sub, meta);
        let checked = Checked {
            id,
            method,
            params,
            claims,
            log,
            route: None,
        };
        self.serve_modern(&req.headers, checked, caller, info).await
    }

    /// Serves a modern request read in one pass ([`ModernRequest`]): the same checks
    /// after the metadata (complete, by construction), the claims found by its text.
    /// `route`: the name its head resolved ([`super::early::Head::route`]), used once the
    /// body is found to say what the head said.
    pub(super) async fn modern_read(
        self: &Arc<Self>,
        req: &Request,
        r: ModernRequest<'_>,
        route: Option<(usize, String)>,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let ModernRequest {
            id,
            method,
            params,
            meta,
        } = r;
        info.rpc_method = Some(method.clone());
        // The head, when read before the body, holds the version header already.
        let hv = match &req.head {
            Some(head) => Ok(head.mirrored.version),
            None => header_version(&req.headers, &id),
        };
        let checked =
            hv.and_then(|hv| check_after_meta(req, hv, &id, &method, meta.version, Some(&params)));
        if let Err(r) = checked {
            return refused(r, info);
        }
        let checked = Checked {
            claims: self.stateless.claims_of_text(&caller.sub, &meta),
            log: meta.log_level.is_some(),
            id,
            method,
            params: Some(params),
            route,
        };
        self.serve_modern(&req.headers, checked, caller, info).await
    }

    /// Serves a checked modern request by its method; its answer shaped for the era.
    async fn serve_modern(
        self: &Arc<Self>,
        headers: &HeaderMap,
        checked: Checked,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let Checked {
            id,
            method,
            params,
            claims,
            log,
            route,
        } = checked;
        info.param_headers = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
            .filter_map(|(k, v)| Some((k.clone(), v.to_str().ok()?.to_string())))
            .collect();
        let shape = Shape {
            log,
            private: self.config.auth.mode != AuthMode::None,
        };
        match method {
            Method::ServerDiscover => self.discover(&claims, caller, &id).await,
            Method::SubscriptionsListen => self.listen(claims, caller, id, params).await,
            // Lists are shaped where they are merged.
            m if super::fanout::ListKind::of(&m).is_some() => {
                let resp = self.request(&claims, caller, id, m, params, info).await;
                super::handler::note_error(&resp, info);
                resp
            }
            _ => {
                // A call or prompt whose head resolved its name is routed by that.
                let route =
                    route.filter(|_| matches!(method, Method::ToolsCall | Method::PromptsGet));
                let resp = match route {
                    Some(route) => {
                        let call = super::forward::Routed {
                            id: id.clone(),
                            method: method.clone(),
                            params: params.unwrap_or_else(|| serde_json::json!({})),
                        };
                        self.call_by_name(&claims, caller, call, Some(route), info)
                            .await
                    }
                    None => {
                        self.request(&claims, caller, id.clone(), method.clone(), params, info)
                            .await
                    }
                };
                super::handler::note_error(&resp, info);
                shape.finish(resp, &id, &method).await
            }
        }
    }

    /// `server/discover`: the revisions spoken statelessly, the capabilities of the
    /// backends this person may use (asked of each now, so unknown ones are learnt), and
    /// who answers.
    async fn discover(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: &Value,
    ) -> Response {
        let allowed = self.backends.iter().filter(|b| self.may_use(b, caller));
        let learnt = futures::future::join_all(allowed.map(|b| async move {
            tokio::time::timeout(b.config.timeout, self.upstream(claims, b.index))
                .await
                .unwrap_or(Err(UpstreamError::Timeout(b.config.timeout)))
                .map(|s| s.caps)
                .unwrap_or_else(|_| {
                    Caps(self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed))
                })
        }))
        .await;
        let bits = learnt.into_iter().fold(Caps::default(), |a, c| a | c);
        let result = json!({
            "resultType": "complete",
            "supportedVersions": version::MODERN,
            "capabilities": caps::to_json(bits),
            "instructions": format!(
                "This MCP gateway aggregates {} servers; tool and prompt names are prefixed with the server name and \"__\".",
                self.backends.len()
            ),
            "ttlMs": 0,
            "cacheScope": if self.config.auth.mode == AuthMode::None { "public" } else { "private" },
            "_meta": {meta::SERVER_INFO: server_info()},
        });
        Response::json(200, &jsonrpc::result(id, result))
    }
}

/// The per-request sessions of modern requests: never sealed, never sent. A session's
/// id is stable per person and client, so a legacy backend's upstream session opened
/// for one request serves the next ([`Gateway::upstream`] keeps it). A client sends the
/// same capabilities and identity with every request: its claims (and their SHA-256 id)
/// are made once and kept here, by a keyed hash of person and client (bounded: emptied
/// when full; a hit is checked field by field, so a collision only makes them again).
pub(crate) struct StatelessClaims {
    /// foldhash, seeded per process: hashed on every modern request, and a collision
    /// costs only the claims made again (a hit is checked).
    keys: foldhash::fast::RandomState,
    made: DashMap<u64, Arc<SessionClaims>, foldhash::fast::RandomState>,
    /// The same claims by the metadata's text as sent ([`ModernRequest`]): capabilities
    /// and identity, NUL between them (JSON text never holds one).
    by_text: DashMap<u64, (Box<str>, Arc<SessionClaims>), foldhash::fast::RandomState>,
}

impl StatelessClaims {
    const MAX: usize = 10_000;

    pub(crate) fn new() -> StatelessClaims {
        StatelessClaims {
            keys: Default::default(),
            made: DashMap::default(),
            by_text: DashMap::default(),
        }
    }

    /// The claims of `sub`'s request that carried `meta`.
    pub(super) fn claims(&self, sub: &str, meta: RequestMeta) -> Arc<SessionClaims> {
        let key = self.key(sub, &meta.caps, &meta.info);
        let same = |c: &SessionClaims| c.sub == sub && c.caps == meta.caps && c.info == meta.info;
        // The map's guard is dropped before anything is inserted (same shard).
        let made = self.made.get(&key).filter(|c| same(c)).map(|c| c.clone());
        if let Some(c) = made {
            return c;
        }
        let c = Arc::new(SessionClaims {
            sid: stateless_sid(sub, &meta.caps, &meta.info),
            sub: sub.to_string(),
            iat: now_secs(),
            v: version::MODERN_LATEST.to_string(),
            caps: meta.caps,
            info: meta.info,
            up: Default::default(),
            stamped: Default::default(),
        });
        if self.made.len() >= Self::MAX {
            self.made.clear();
        }
        self.made.insert(key, c.clone());
        c
    }

    /// The claims of `sub`'s request whose metadata was read as text: found by that
    /// text, made from its values the first time (the same claims, and id, as
    /// [`StatelessClaims::claims`] makes of them).
    pub(super) fn claims_of_text(&self, sub: &str, meta: &RawMeta<'_>) -> Arc<SessionClaims> {
        use std::hash::{BuildHasher, Hasher};
        let caps = meta.caps.get();
        let info = meta.info.map_or("", |i| i.get());
        let mut h = self.keys.build_hasher();
        h.write(sub.as_bytes());
        h.write_u8(0);
        h.write(caps.as_bytes());
        h.write_u8(0);
        h.write(info.as_bytes());
        let key = h.finish();
        let found = self
            .by_text
            .get(&key)
            .filter(|e| e.1.sub == sub && e.0.split_once('\0') == Some((caps, info)))
            .map(|e| e.1.clone());
        if let Some(c) = found {
            return c;
        }
        // Text the parser accepted is JSON: read again, it cannot fail.
        let value = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
        let c = self.claims(
            sub,
            RequestMeta {
                version: meta.version.to_string(),
                caps: value(caps),
                info: if info.is_empty() {
                    Value::Null
                } else {
                    value(info)
                },
                log_level: meta.log_level,
            },
        );
        if self.by_text.len() >= Self::MAX {
            self.by_text.clear();
        }
        self.by_text
            .insert(key, (format!("{caps}\0{info}").into(), c.clone()));
        c
    }

    fn key(&self, sub: &str, caps: &Value, info: &Value) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        /// Serialized JSON written straight into the hasher.
        struct Into<'a, H>(&'a mut H);
        impl<H: Hasher> std::io::Write for Into<'_, H> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.write(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = self.keys.build_hasher();
        h.write(sub.as_bytes());
        h.write_u8(0);
        // Writing into a hash cannot fail; a failure would only make another key.
        let _ = serde_json::to_writer(Into(&mut h), caps);
        h.write_u8(0);
        let _ = serde_json::to_writer(Into(&mut h), info);
        h.finish()
    }
}

/// The id of a modern request's per-request session: `m` and 30 hex digits of a
/// SHA-256 over the person and the client's capabilities and identity (serialized into
/// the hash, not into a string first). A strong hash: two people never share an id, so
/// never an upstream session, whatever a client puts in its `_meta`.
fn stateless_sid(sub: &str, caps: &Value, info: &Value) -> String {
    use std::io::Write;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    h.update(sub.as_bytes());
    h.update([0]);
    // Writing into a hash cannot fail; a failure would only make another id.
    let _ = serde_json::to_writer(&mut h, caps);
    let _ = h.write_all(&[0]);
    let _ = serde_json::to_writer(&mut h, info);
    let digest = h.finalize();
    let mut sid = String::with_capacity(31);
    sid.push('m');
    for b in &digest[..15] {
        sid.push(HEX[usize::from(b >> 4)] as char);
        sid.push(HEX[usize::from(b & 15)] as char);
    }
    sid
}

/// Who answers: the gateway itself.
pub(super) fn server_info() -> Value {
    json!({"name": "mcp-gateway", "title": "MCP Gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// A refused modern request: the answer and its JSON-RPC code (for the request record).
type Refusal = (Response, i64);

fn refusal(id: &Value, status: u16, code: i64, message: String, data: Option<Value>) -> Refusal {
    (refuse(id, status, code, message, data), code)
}

/// Checks a modern request in the transport chapter's order (header present, `_meta`
/// complete, header = body, revision spoken, method known) and takes its metadata out.
fn check(
    req: &Request,
    id: &Value,
    method: &Method,
    mut params: Option<&mut Value>,
) -> Result<RequestMeta, Refusal> {
    let hv = header_version(&req.headers, id)?;
    let meta = RequestMeta::take(params.as_deref_mut()).map_err(|why| {
        refusal(
            id,
            400,
            jsonrpc::INVALID_PARAMS,
            format!("Invalid params: {why}"),
            None,
        )
    })?;
    check_after_meta(req, hv, id, method, &meta.version, params.as_deref())?;
    Ok(meta)
}

/// The `MCP-Protocol-Version` header, which a modern request must carry.
fn header_version<'h>(headers: &'h HeaderMap, id: &Value) -> Result<&'h str, Refusal> {
    match headers.get(meta::MCP_PROTOCOL_VERSION).map(|v| v.to_str()) {
        Some(Ok(v)) => Ok(v),
        _ => Err(refusal(
            id,
            400,
            jsonrpc::HEADER_MISMATCH,
            "Header mismatch: the MCP-Protocol-Version header is missing or not visible ASCII"
                .into(),
            None,
        )),
    }
}

/// The checks after the metadata: header = body, revision spoken, mirrored headers
/// (compared with what the head said, when it was read before the body), method known.
fn check_after_meta(
    req: &Request,
    hv: &str,
    id: &Value,
    method: &Method,
    version: &str,
    params: Option<&Value>,
) -> Result<(), Refusal> {
    if hv != version {
        return Err(refusal(
            id,
            400,
            jsonrpc::HEADER_MISMATCH,
            format!(
                "Header mismatch: MCP-Protocol-Version header value {hv:?} does not match body value {version:?}"
            ),
            None,
        ));
    }
    if !version::is_modern(version) {
        // The same list as server/discover's supportedVersions: the revisions a
        // stateless request may name (the legacy ones start with initialize).
        let supported = version::MODERN;
        return Err(refusal(
            id,
            400,
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            format!(
                "Unsupported protocol version {version:?}: stateless requests speak {}; earlier revisions start with initialize",
                version::MODERN.join(", ")
            ),
            Some(json!({"supported": supported, "requested": version})),
        ));
    }
    let seen = req.head.as_ref().is_some_and(|h| h.matches(method, params));
    if !seen {
        if let Err(why) = mirrored_headers_match(&req.headers, method, params) {
            return Err(refusal(id, 400, jsonrpc::HEADER_MISMATCH, why, None));
        }
    }
    if !served(method) {
        return Err(refusal(
            id,
            404,
            jsonrpc::METHOD_NOT_FOUND,
            format!("Method not found: {method} (not part of protocol {version})"),
            None,
        ));
    }
    Ok(())
}

/// Whether `Mcp-Method` and (for calls, prompts and reads) `Mcp-Name` say what the body
/// says; `Err` is the HeaderMismatch message. Also the pass-through route's check.
pub(crate) fn mirrored_headers_match(
    headers: &HeaderMap,
    method: &Method,
    params: Option<&Value>,
) -> Result<(), String> {
    let header = |name: &http::HeaderName| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    match header(&meta::MCP_METHOD) {
        Some(Ok(m)) if m == method.as_str() => {}
        Some(Ok(m)) => {
            return Err(format!(
                "Header mismatch: Mcp-Method header value {m:?} does not match body value {:?}",
                method.as_str()
            ))
        }
        _ => return Err("Header mismatch: the Mcp-Method header is missing".into()),
    }
    let Some(body) = meta::name_of(method, params) else {
        return Ok(());
    };
    match (
        header(&meta::MCP_NAME)
            .and_then(Result::ok)
            .map(meta::decode_header),
        body,
    ) {
        (Some(Some(h)), Some(b)) if h == b => Ok(()),
        (None, _) => Err(format!(
            "Header mismatch: {method} needs the Mcp-Name header"
        )),
        (Some(h), b) => Err(format!(
            "Header mismatch: Mcp-Name header value {:?} does not match body value {:?}",
            h.unwrap_or_else(|| "(undecodable)".into()),
            b.unwrap_or("(none)")
        )),
    }
}

/// The methods a modern request may name.
fn served(method: &Method) -> bool {
    matches!(
        method,
        Method::ServerDiscover
            | Method::SubscriptionsListen
            | Method::ToolsList
            | Method::ToolsCall
            | Method::PromptsList
            | Method::PromptsGet
            | Method::ResourcesList
            | Method::ResourcesTemplatesList
            | Method::ResourcesRead
            | Method::CompletionComplete
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(caps: Value, info: Value) -> RequestMeta {
        RequestMeta {
            version: version::MODERN_LATEST.to_string(),
            caps,
            info,
            log_level: None,
        }
    }

    #[test]
    fn stateless_claims_are_made_once_per_person_and_client() {
        let made = StatelessClaims::new();
        let client = || meta(json!({"roots": {}}), json!({"name": "c", "version": "1"}));
        let a = made.claims("alice", client());
        let again = made.claims("alice", client());
        assert!(
            Arc::ptr_eq(&a, &again),
            "the same person and client: made once"
        );
        assert_eq!(a.sid, stateless_sid("alice", &a.caps, &a.info));
        assert!(a.sid.starts_with('m') && a.sid.len() == 31);
        assert_eq!(a.v, version::MODERN_LATEST);
        // Another person, other capabilities, another client: other sessions.
        let others = [
            made.claims("bob", client()),
            made.claims(
                "alice",
                meta(json!({}), json!({"name": "c", "version": "1"})),
            ),
            made.claims("alice", meta(json!({"roots": {}}), Value::Null)),
        ];
        for o in &others {
            assert_ne!(o.sid, a.sid);
        }
        assert_eq!(others[0].sub, "bob");
        assert_eq!(made.claims("bob", client()).sid, others[0].sid);
    }
}
