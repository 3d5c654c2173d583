//! `/readyz`: the public status and the detailed document of the admin listener. The
//! probes that keep backend states fresh are [`crate::services::probes`].

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::drain::Drain;
use crate::mcp::handler::Gateway;
use crate::upstream::Health;

/// The `/readyz` document and its HTTP status: 503 only when every backend is down.
pub fn readiness(gw: &Gateway, auth: Option<&crate::auth::bearer::Authenticator>) -> (u16, Value) {
    let backends: Vec<Value> = gw
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name(),
                "state": b.health().as_str(),
                "since_s": b.state_age().as_secs(),
                "last_error": b.last_error(),
                "requests": b.requests.load(Ordering::Relaxed),
                "failures": b.failures.load(Ordering::Relaxed),
                "omitted_from_lists": b.omitted.load(Ordering::Relaxed),
                "transport": b.transport_status(),
            })
        })
        .collect();
    let all_down =
        !gw.backends.is_empty() && gw.backends.iter().all(|b| b.health() == Health::Down);
    let status = if all_down { 503 } else { 200 };
    let mut doc = json!({"ready": !all_down, "backends": backends});
    if let Some(a) = auth.filter(|a| a.mode() != crate::config::AuthMode::None) {
        doc["auth"] = json!({
            "cache_hits": a.hits.load(Ordering::Relaxed),
            "cache_misses": a.misses.load(Ordering::Relaxed),
        });
    }
    (status, doc)
}

/// The public `/readyz`: the status alone. Backend names and their last errors tell a
/// stranger what runs behind the gateway and how it fails; they are served on the
/// metrics/admin listener ([`crate::admin`]). 503 with `"draining": true` from SIGTERM
/// on ([`crate::drain`]), while the listener still accepts, so that a health-checking
/// front stops sending here before accepting stops.
pub fn public_readiness(gw: &Gateway, drain: &Drain) -> (u16, Value) {
    if drain.is_draining() {
        return (503, json!({"ready": false, "draining": true}));
    }
    let all_down =
        !gw.backends.is_empty() && gw.backends.iter().all(|b| b.health() == Health::Down);
    (
        if all_down { 503 } else { 200 },
        json!({"ready": !all_down}),
    )
}
