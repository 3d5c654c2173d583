//! The hyper server and the router. Requests below the issuer's base path are routed
//! by method and path; the well-known documents are also served with the issuer's
//! path inserted or appended (RFC 8414 §3.1, OIDC Discovery §4).
//!
//! Slow clients are bounded: at most `[server] max_connections` connections are
//! served at once (more wait in the kernel's listen backlog, and are served as soon
//! as one ends, rather than being refused); a request head must be complete within
//! `header_timeout_s` of its first byte (of the accept, for a new connection), while an
//! idle kept-alive connection stays open `keepalive_timeout_s` ([`crate::connection`]);
//! a request body must be complete within `body_timeout_s` of its head, else 408 and
//! the connection is closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::app::App;
use crate::connection::{watchdog, HeadClock, Watched};
use crate::http::{client_ip, json, json_cacheable, text, Req, Resp};
use crate::{authorize, callback, clients, lookups, metadata, token};

/// Serves until `stop` completes (or the listener fails), then drains
/// ([`crate::drain`]): `/readyz` fails for `stop_delay_s` while still accepting, then
/// accepting stops and open connections are served for at most `drain_s`. Also runs
/// key refresh and cleanup.
pub async fn serve(listener: TcpListener, app: Arc<App>, stop: impl Future<Output = ()>) {
    spawn_maintenance(app.clone());
    let max = app.cfg.server.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    tokio::select! {
        _ = accept_loop(&listener, &slots, &app) => return,
        _ = stop => {}
    }
    app.drain.begin_stop();
    let delay = app.cfg.server.stop_delay;
    tracing::info!(
        stop_delay_s = delay.as_secs(),
        "stopping: /readyz answers 503, still accepting"
    );
    tokio::select! {
        _ = accept_loop(&listener, &slots, &app) => return,
        _ = tokio::time::sleep(delay) => {}
    }
    drop(listener);
    app.drain.begin_close();
    let window = app.cfg.server.drain;
    tracing::info!(
        drain_s = window.as_secs(),
        "accepting stopped: serving open connections, each closed after its next response"
    );
    // Every connection holds a slot: all slots back means every connection has closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(window, slots.acquire_many(all)).await;
    match drained {
        Ok(_) => tracing::info!("drained: every connection closed"),
        Err(_) => tracing::info!(
            open = max - slots.available_permits(),
            "drain window over: closing the connections left"
        ),
    }
}

/// Accepts connections while slots are free; returns only if the semaphore is closed.
async fn accept_loop(listener: &TcpListener, slots: &Arc<Semaphore>, app: &Arc<App>) {
    let header_timeout = app.cfg.server.header_timeout;
    let keepalive_timeout = app.cfg.server.keepalive_timeout;
    loop {
        // At the cap, stop accepting: new connections wait in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let clock = HeadClock::new();
            let svc_clock = clock.clone();
            let svc = service_fn(move |req| {
                let app = app.clone();
                let clock = svc_clock.clone();
                clock.request_started();
                async move {
                    let mut resp = handle(&app, req, peer).await;
                    app.drain.mark(&mut resp);
                    clock.request_ended();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            // hyper's header timer runs while a connection is idle: it is the idle
            // timeout; the head deadline is the watchdog's (crate::connection).
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(keepalive_timeout)
                .serve_connection(TokioIo::new(Watched::new(stream, clock.clone())), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = watchdog(clock, header_timeout) => {
                    tracing::debug!(%peer, "request head not complete within server.header_timeout_s: connection closed");
                }
            }
        });
    }
}

fn spawn_maintenance(app: Arc<App>) {
    let keys_app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = keys_app.keys.refresh().await {
                tracing::warn!(error = %e, "refreshing signing keys failed");
            }
        }
    });
    tokio::spawn(async move {
        let every = app.cfg.store.cleanup_interval;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match app.store.cleanup().await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "expired rows deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cleanup failed"),
            }
        }
    });
}

async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let full_path = parts.uri.path().to_string();
    let body_timeout = app.cfg.server.body_timeout;
    let limited = Limited::new(body, app.cfg.server.max_body_bytes).collect();
    let body = match tokio::time::timeout(body_timeout, limited).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Err(_) => {
            tracing::debug!(path = %full_path, "request body too slow: 408");
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time; send it again",
            );
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    let ip = client_ip(
        &parts.headers,
        app.cfg.server.client_ip_header.as_deref(),
        peer.ip(),
    );
    let req = Req {
        method: parts.method,
        path: full_path.clone(),
        raw_query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        client_ip: ip,
    };
    let label =
        crate::metrics::route_label(req.path.strip_prefix(&base_path(app)).unwrap_or(&req.path));
    let span = request_span(&req, label);
    let request_id = req
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string);
    let resp = route(app, req).instrument(span.clone()).await;
    let status = resp.status();
    crate::metrics::request(label, status, started.elapsed().as_secs_f64());
    mcp_telemetry::attr(
        &span,
        "http.response.status_code",
        i64::from(status.as_u16()),
    );
    if status.is_server_error() {
        mcp_telemetry::fail(&span, "server error");
    }
    // The query is never logged: it carries codes and state.
    tracing::debug!(request_id, %method, path = %full_path, status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// The span of one request (`Span::none()` when tracing is off), continuing the
/// caller's `traceparent`.
fn request_span(req: &Req, route: &'static str) -> tracing::Span {
    let span = mcp_telemetry::span!("sidecar.request", otel.kind = "server");
    if !span.is_none() {
        let get = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
        mcp_telemetry::propagate::continue_from(&span, get("traceparent"), get("tracestate"));
        mcp_telemetry::rename(&span, format!("{} {route}", req.method));
        mcp_telemetry::attr(&span, "http.route", route);
        mcp_telemetry::attr(&span, "http.request.method", req.method.to_string());
    }
    span
}

fn base_path(app: &App) -> String {
    app.cfg
        .issuer
        .url()
        .path()
        .trim_end_matches('/')
        .to_string()
}

async fn route(app: &App, mut req: Req) -> Resp {
    let base = base_path(app);
    let path = req.path.clone();
    let as_meta = format!("/.well-known/oauth-authorization-server{base}");
    let oidc_inserted = format!("/.well-known/openid-configuration{base}");
    let oidc_appended = format!("{base}/.well-known/openid-configuration");
    if req.method == Method::GET {
        if path == as_meta {
            return metadata::document(app, &req, false).await;
        }
        if path == oidc_inserted || path == oidc_appended {
            return metadata::document(app, &req, true).await;
        }
    }
    let Some(local) = path.strip_prefix(&base) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let local = if local.is_empty() { "/" } else { local }.to_string();
    req.path = local.clone();
    if let Some(refused) = lookups::check(app, &req).await {
        return refused;
    }
    match (&req.method, local.as_str()) {
        (&Method::GET, "/authorize") => authorize::authorize(app, &req).await,
        (&Method::POST, "/consent") => authorize::consent(app, &req).await,
        (&Method::GET, "/callback") => callback::callback(app, &req).await,
        (&Method::POST, "/token") => token::token(app, &req).await,
        (&Method::POST, "/revoke") => token::revoke(app, &req).await,
        (&Method::POST, "/register") => clients::register::register(app, &req).await,
        (&Method::GET, "/jwks" | "/.well-known/jwks.json") => json_cacheable(&app.keys.jwks(), 300),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") if app.drain.stopping() => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "draining": true}),
        ),
        (&Method::GET, "/readyz") => match app.store.ping().await {
            Ok(()) => json(StatusCode::OK, &json!({"status": "ready"})),
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "error": e.to_string()}),
            ),
        },
        (&Method::OPTIONS, _) => preflight(),
        (
            _,
            "/authorize" | "/consent" | "/callback" | "/token" | "/revoke" | "/register" | "/jwks",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// CORS preflight for browser-based clients (metadata, token, register).
fn preflight() -> Resp {
    let mut r = text(StatusCode::NO_CONTENT, "");
    let h = r.headers_mut();
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        http::HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        http::HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
    );
    r
}
