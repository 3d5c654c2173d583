//! The HTTP server: one hyper service, one router, one handler per endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::{User, UserConfig};
use crate::http::{json, parse_pairs, text, Req, Resp};
use crate::state::State;
use crate::{directory, oidc, workload};

const MAX_BODY: usize = 1 << 20;

/// Serves `state` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, req, peer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>, _peer: SocketAddr) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts
            .uri
            .query()
            .map(|q| parse_pairs(q.as_bytes()))
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    tracing::debug!(method = %req.method, path = %req.path, "request");
    route(&state, &req)
}

fn route(st: &State, req: &Req) -> Resp {
    let m = &req.method;
    match (m, req.path.as_str()) {
        (&Method::GET, "/.well-known/openid-configuration") => oidc::discovery(st),
        (&Method::GET, "/authorize" | "/o/oauth2/v2/auth") => oidc::authorize_get(st, req),
        (&Method::POST, "/authorize" | "/o/oauth2/v2/auth") => oidc::authorize_post(st, req),
        (&Method::POST, "/token") => oidc::token(st, req),
        (&Method::GET, "/jwks" | "/oauth2/v3/certs") => oidc::jwks(st),
        (&Method::GET, "/userinfo" | "/v1/userinfo" | "/oauth2/v3/userinfo") => {
            oidc::userinfo(st, req)
        }
        (&Method::GET | &Method::POST, "/tokeninfo" | "/oauth2/v3/tokeninfo") => {
            oidc::tokeninfo(st, req)
        }
        (&Method::POST, "/revoke") => oidc::revoke(st),
        (&Method::GET, "/admin/directory/v1/groups") => directory::groups(st, req),
        (&Method::GET, p) if p.starts_with("/admin/directory/v1/users/") => {
            let key = decode(&p["/admin/directory/v1/users/".len()..]);
            directory::user_get(st, req, &key)
        }
        (&Method::POST, "/v1/token") => workload::sts_token(st, req),
        (&Method::POST, p) if p.starts_with("/v1/projects/") => match workload::parse_iam_path(p) {
            Some((sa, verb)) => workload::iam(st, req, &sa, &verb),
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
        (&Method::GET, "/healthz") => json(StatusCode::OK, &json!({"status": "ok"})),
        (_, p) if p.starts_with("/admin/") => admin(st, req),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Test controls:
/// - `GET /admin/users`: every user.
/// - `POST /admin/users` (JSON, the `[[user]]` shape): add or replace a user.
/// - `POST /admin/users/{email}/groups` (JSON `{"groups": [...]}`): set a user's groups.
/// - `POST /admin/users/{email}/status` (JSON `{"suspended": bool, "archived": bool}`,
///   either optional): what Directory `users.get` answers for the user.
/// - `DELETE /admin/users/{email}`: delete a user.
/// - `GET /admin/stats`: request counters per endpoint.
fn admin(st: &State, req: &Req) -> Resp {
    let rest = req.path.trim_start_matches("/admin/");
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    match (&req.method, rest) {
        (&Method::GET, "stats") => {
            let c = st.counters.lock().map(|c| c.clone()).unwrap_or_default();
            json(StatusCode::OK, &json!(c))
        }
        (&Method::GET, "users") => json(StatusCode::OK, &json!(st.all_users())),
        (&Method::POST, "users") => {
            let cfg: UserConfig = match serde_json::from_value(body) {
                Ok(c) => c,
                Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match User::from_config(&cfg) {
                Ok(u) => {
                    if let Ok(mut users) = st.users.lock() {
                        users.insert(u.email.clone(), u.clone());
                    }
                    json(StatusCode::OK, &json!(u))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (method, path) if path.starts_with("users/") => {
            let tail = &path["users/".len()..];
            let (email, what) = match tail.split_once('/') {
                Some((e, w)) => (e, w),
                None => (tail, ""),
            };
            let email = decode(email).to_ascii_lowercase();
            let Ok(mut users) = st.users.lock() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned");
            };
            match (method, what) {
                (&Method::POST, "groups") => {
                    let Some(groups) = body["groups"].as_array() else {
                        return text(StatusCode::BAD_REQUEST, "expected {\"groups\": [...]}");
                    };
                    let Some(u) = users.get_mut(&email) else {
                        return text(StatusCode::NOT_FOUND, "no such user");
                    };
                    u.groups = groups
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .collect();
                    json(StatusCode::OK, &json!(u))
                }
                (&Method::POST, "status") => {
                    let Some(u) = users.get_mut(&email) else {
                        return text(StatusCode::NOT_FOUND, "no such user");
                    };
                    if let Some(s) = body["suspended"].as_bool() {
                        u.suspended = s;
                    }
                    if let Some(a) = body["archived"].as_bool() {
                        u.archived = a;
                    }
                    json(StatusCode::OK, &json!(u))
                }
                (&Method::DELETE, "") => match users.remove(&email) {
                    Some(u) => json(StatusCode::OK, &json!(u)),
                    None => text(StatusCode::NOT_FOUND, "no such user"),
                },
                _ => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A percent-encoded path segment, decoded.
fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
