//! The metrics/admin listener (`[metrics] listen`): Prometheus text at `/metrics` and the
//! detailed readiness document at `/readyz` (backend names, states, last errors).
//!
//! Why a listener of its own: what a backend is called and why it last failed is for
//! operators, not for whoever can reach the public port. The public `/readyz` answers
//! the status alone ([`crate::health::public_readiness`]). Bind this listener to an
//! address only the operators' network reaches.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use pingora_prometheus::PrometheusHttpApp;

use crate::auth::bearer::Authenticator;
use crate::health;
use crate::mcp::handler::Gateway;

/// Serves `/readyz` in detail and everything else as Prometheus metrics.
pub struct AdminApp {
    gateway: Arc<Gateway>,
    auth: Arc<Authenticator>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if session.req_header().uri.path() != "/readyz" {
            return PrometheusHttpApp.response(session).await;
        }
        let (status, doc) = health::readiness(&self.gateway, Some(&self.auth));
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// The admin service, listening on `addr`.
pub fn service(
    gateway: Arc<Gateway>,
    auth: Arc<Authenticator>,
    addr: std::net::SocketAddr,
) -> Service<HttpServer<AdminApp>> {
    let mut s = Service::new(
        "metrics and admin".to_string(),
        HttpServer::new_app(AdminApp { gateway, auth }),
    );
    s.add_tcp(&addr.to_string());
    s
}
