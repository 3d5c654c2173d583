//! Client ID Metadata Documents: a `client_id` that is an `https` URL with a path is
//! fetched (no redirects, size- and time-bounded, never to a private, loopback or
//! link-local address unless `[clients] allow_private_cimd`), validated (its
//! `client_id` must equal the URL) and cached in Postgres for the document's
//! `Cache-Control: max-age` (bounded to 1 minute … 1 day).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;
use url::Url;

use super::register::validate_metadata;
use super::{detect_client, ClientError};
use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::config::ClientsConfig;
use crate::store::ClientRecord;

/// Whether `client_id` is a metadata-document URL.
pub fn looks_like_cimd(client_id: &str, allow_http: bool) -> bool {
    let Ok(u) = Url::parse(client_id) else {
        return false;
    };
    (u.scheme() == "https" || (allow_http && u.scheme() == "http"))
        && u.host_str().is_some()
        && u.path() != "/"
        && !u.path().is_empty()
}

/// Whether an address is one the open internet could hold (not private, loopback,
/// link-local, CGNAT, multicast, documentation, …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240)
}

/// DNS resolution that drops non-public addresses (so a name cannot point the
/// fetch at an internal service, whatever it resolves to).
struct PublicOnlyResolver {
    allow_private: bool,
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for metadata documents.
pub fn http_client(cfg: &ClientsConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(cfg.cimd_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.cimd_timeout_ms))
        .no_proxy()
        .user_agent("mcp-oauth-sidecar (client metadata fetch)")
        .dns_resolver(Arc::new(PublicOnlyResolver {
            allow_private: cfg.allow_private_cimd,
        }))
        .build()
}

fn max_age(headers: &reqwest::header::HeaderMap, default_s: u64) -> u64 {
    let from_header = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.to_ascii_lowercase();
            if v.contains("no-store") || v.contains("no-cache") {
                return Some(0);
            }
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        });
    from_header.unwrap_or(default_s).clamp(60, 86_400)
}

/// Fetches (or takes from the cache) and validates the document at `client_id`.
pub async fn resolve(app: &App, client_id: &str) -> Result<ClientRecord, ClientError> {
    if let Some(c) = app.store.client(client_id).await? {
        let fresh = c.kind == "cimd" && c.expires_at.is_some_and(|e| e > SystemTime::now());
        if fresh {
            return Ok(c);
        }
    }
    let cfg = &app.cfg.clients;
    let url = Url::parse(client_id).map_err(|_| ClientError::Unknown)?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Metadata(
            "client_id URL must not contain a fragment or credentials".into(),
        ));
    }
    if let Some(host) = url.host() {
        let literal: Option<IpAddr> = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            if !cfg.allow_private_cimd && !is_public(ip) {
                return Err(ClientError::Metadata(format!(
                    "client metadata document at a non-public address ({ip}) is not fetched"
                )));
            }
        }
    }
    let resp = app
        .cimd_http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            ClientError::Metadata(format!(
                "fetching the client metadata document failed: {}",
                without_url(&e)
            ))
        })?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(ClientError::Metadata(format!(
            "fetching the client metadata document returned HTTP {}",
            resp.status().as_u16()
        )));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > cfg.cimd_max_bytes as u64)
    {
        return Err(ClientError::Metadata(format!(
            "client metadata document is larger than {} bytes",
            cfg.cimd_max_bytes
        )));
    }
    let ttl = max_age(resp.headers(), cfg.cimd_cache_s);
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        ClientError::Metadata(format!(
            "reading the client metadata document failed: {}",
            without_url(&e)
        ))
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > cfg.cimd_max_bytes {
            return Err(ClientError::Metadata(format!(
                "client metadata document is larger than {} bytes",
                cfg.cimd_max_bytes
            )));
        }
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|_| ClientError::Metadata("client metadata document is not JSON".into()))?;
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(ClientError::Metadata(
            "client metadata document's client_id does not equal its URL".into(),
        ));
    }
    if doc.get("client_name").and_then(Value::as_str).is_none() {
        return Err(ClientError::Metadata(
            "client metadata document has no client_name".into(),
        ));
    }
    if doc.get("client_secret").is_some() {
        return Err(ClientError::Metadata(
            "client metadata document must not contain a client_secret".into(),
        ));
    }
    let reg = validate_metadata(&doc, &cfg.allowed_redirect_uris)
        .map_err(|(_, d)| ClientError::Metadata(d))?;
    if reg.token_endpoint_auth_method != "none" {
        return Err(ClientError::Metadata(
            "only public clients (token_endpoint_auth_method \"none\") may use a metadata document"
                .into(),
        ));
    }
    let detected = detect_client(
        "",
        reg.client_name.as_deref(),
        reg.metadata.get("software_id").and_then(Value::as_str),
    );
    let record = ClientRecord {
        client_id: client_id.to_string(),
        kind: "cimd".into(),
        secret_hash: None,
        client_name: reg.client_name,
        redirect_uris: reg.redirect_uris,
        application_type: reg.application_type,
        token_endpoint_auth_method: "none".into(),
        metadata: Value::Object(reg.metadata),
        detected_client: detected.clone(),
        user_agent: None,
        source_ip: None,
        created_at: SystemTime::now(),
        expires_at: Some(SystemTime::now() + Duration::from_secs(ttl)),
    };
    app.store.put_client(&record).await?;
    app.audit.record(
        &AuthEvent::new(AuthEventKind::ClientMetadataFetched)
            .client_id(client_id)
            .client(detected),
    );
    Ok(record)
}

/// A reqwest error's text without the URL (already known to the caller).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({})", u.as_str()), "");
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return format!("could not connect ({s})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} must not be public");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a} is public");
        }
    }

    #[test]
    fn cimd_urls_need_https_and_a_path() {
        assert!(looks_like_cimd(
            "https://app.example.com/client.json",
            false
        ));
        assert!(!looks_like_cimd("https://app.example.com/", false));
        assert!(!looks_like_cimd(
            "http://app.example.com/client.json",
            false
        ));
        assert!(looks_like_cimd("http://127.0.0.1:9/client.json", true));
        assert!(!looks_like_cimd("mcp_abc", false));
    }

    #[test]
    fn max_age_is_bounded() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(max_age(&h, 3600), 3600);
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=5".parse().unwrap(),
        );
        assert_eq!(max_age(&h, 3600), 60);
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "max-age=999999".parse().unwrap(),
        );
        assert_eq!(max_age(&h, 3600), 86_400);
    }

    #[tokio::test]
    async fn resolver_drops_loopback_unless_allowed() {
        let strict = PublicOnlyResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(strict.resolve(name).await.is_err());
        let lax = PublicOnlyResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(lax.resolve(name).await.is_ok());
    }
}
