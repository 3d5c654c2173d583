//! Client ID Metadata Documents: a `client_id` that is an `https` URL with a path is
//! fetched (no redirects, size- and time-bounded, never to a private, loopback or
//! link-local address unless `[clients] allow_private_cimd`), validated (its
//! `client_id` must equal the URL) and cached in Postgres for the document's
//! `Cache-Control: max-age` (bounded to 1 minute … `[clients] cimd_max_cache_s`,
//! default 1 day; expired rows are deleted by the store's sweep). Every fetch
//! failure gets one answer ([`fetch_failed_message`]), so the fetch cannot be used to
//! probe ports; the cause is audited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => refused_v6_range(v6).is_none(),
        },
    }
}

/// IPv6 ranges never fetched from: (name, prefix, prefix length).
const REFUSED_V6: &[(&str, u128, u32)] = &[
    ("unspecified", 0, 128),
    ("loopback", 1, 128),
    ("IPv4-compatible", 0, 96),
    ("multicast", 0xff00 << 112, 8),
    ("unique local", 0xfc00 << 112, 7),
    ("link-local", 0xfe80 << 112, 10),
    // Deprecated (RFC 3879) but still routed inside some networks.
    ("site-local", 0xfec0 << 112, 10),
    ("documentation", 0x2001_0db8 << 96, 32),
    ("NAT64", 0x0064_ff9b << 96, 32),
    // Transition tunnels embed an IPv4 address that may be a private one.
    ("6to4", 0x2002 << 112, 16),
    ("Teredo", 0x2001_0000 << 96, 32),
];

/// The name of the refused range holding `ip`, if any.
pub fn refused_v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    REFUSED_V6
        .iter()
        .find(|(_, prefix, len)| {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            bits & mask == *prefix
        })
        .map(|(name, _, _)| *name)
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
        .timeout(cfg.cimd_timeout)
        .connect_timeout(cfg.cimd_timeout)
        .no_proxy()
        .user_agent("mcp-oauth-sidecar (client metadata fetch)")
        .dns_resolver(Arc::new(PublicOnlyResolver {
            allow_private: cfg.allow_private_cimd,
        }))
        .build()
}

/// Seconds to trust a document: its `max-age` (`no-store`/`no-cache`: 0), else
/// `default_s`, bounded to `min(60, max_s)` … `max_s`.
fn max_age(headers: &reqwest::header::HeaderMap, default_s: u64, max_s: u64) -> u64 {
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
    from_header.unwrap_or(default_s).clamp(max_s.min(60), max_s)
}

fn is_fresh(c: &ClientRecord) -> bool {
    c.kind == "cimd" && c.expires_at.is_some_and(|e| e > SystemTime::now())
}

/// Whether `client_id`'s document is in the cache and still fresh (no fetch needed).
pub async fn cached(app: &App, client_id: &str) -> bool {
    matches!(app.store.client(client_id).await, Ok(Some(c)) if is_fresh(&c))
}

/// The one answer to every document that could not be fetched (refused address,
/// DNS, connection, TLS, timeout, redirect, non-200 status, too large, cut short):
/// a caller must not learn from it whether a port is open or a host answers. The
/// precise cause goes to the audit log (`client_metadata_refused`) for operators.
pub fn fetch_failed_message(cfg: &ClientsConfig) -> String {
    format!(
        "the client metadata document could not be fetched: it must be served from a \
         public address, answer HTTP 200 without redirecting within {} ms, and be at most \
         {} bytes",
        cfg.cimd_timeout.as_millis(),
        cfg.cimd_max_bytes
    )
}

/// Fetches (or takes from the cache) and validates the document at `client_id`.
pub async fn resolve(app: &App, client_id: &str) -> Result<ClientRecord, ClientError> {
    if let Some(c) = app.store.client(client_id).await? {
        if is_fresh(&c) {
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
    let (body, ttl) = match fetch(app, &url).await {
        Ok(x) => x,
        Err(cause) => {
            app.audit.record(
                &AuthEvent::new(AuthEventKind::ClientMetadataRefused)
                    .client_id(client_id)
                    .reason(cause),
            );
            return Err(ClientError::Metadata(fetch_failed_message(cfg)));
        }
    };
    let record = validate_document(cfg, client_id, &body, ttl)?;
    app.store.put_client(&record).await?;
    app.audit.record(
        &AuthEvent::new(AuthEventKind::ClientMetadataFetched)
            .client_id(client_id)
            .client(record.detected_client.clone()),
    );
    Ok(record)
}

/// The document's bytes and how long to trust it; `Err` is the precise cause (for the
/// audit log only, never for the caller).
async fn fetch(app: &App, url: &Url) -> Result<(Vec<u8>, u64), String> {
    let cfg = &app.cfg.clients;
    let literal: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = literal {
        if !cfg.allow_private_cimd && !is_public(ip) {
            return Err(format!("not fetched: non-public address {ip}"));
        }
    }
    let mut resp = app
        .cimd_http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("fetch failed: {}", without_url(&e)))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("fetch returned HTTP {}", resp.status().as_u16()));
    }
    let too_large = || format!("document larger than {} bytes", cfg.cimd_max_bytes);
    if resp
        .content_length()
        .is_some_and(|n| n > cfg.cimd_max_bytes as u64)
    {
        return Err(too_large());
    }
    let ttl = max_age(
        resp.headers(),
        cfg.cimd_cache.as_secs(),
        cfg.cimd_max_cache.as_secs(),
    );
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading failed: {}", without_url(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > cfg.cimd_max_bytes {
            return Err(too_large());
        }
    }
    Ok((body, ttl))
}

/// Checks a document fetched with HTTP 200; these errors may say what is wrong with it.
fn validate_document(
    cfg: &ClientsConfig,
    client_id: &str,
    body: &[u8],
    ttl: u64,
) -> Result<ClientRecord, ClientError> {
    let doc: Value = serde_json::from_slice(body)
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
    Ok(ClientRecord {
        client_id: client_id.to_string(),
        kind: "cimd".into(),
        secret_hash: None,
        client_name: reg.client_name,
        redirect_uris: reg.redirect_uris,
        application_type: reg.application_type,
        token_endpoint_auth_method: "none".into(),
        metadata: Value::Object(reg.metadata),
        detected_client: detected,
        user_agent: None,
        source_ip: None,
        created_at: SystemTime::now(),
        expires_at: Some(SystemTime::now() + Duration::from_secs(ttl)),
    })
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
    fn transition_and_site_local_ranges_are_refused_at_their_edges() {
        let range = |a: &str| refused_v6_range(a.parse().unwrap());
        for (inside, name) in [
            ("2002::", "6to4"),
            ("2002:7f00:1::1", "6to4"),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "6to4"),
            ("2001::", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "Teredo"),
            ("fec0::", "site-local"),
            ("fec0::1", "site-local"),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local"),
        ] {
            assert_eq!(range(inside), Some(name), "{inside}");
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        // Just outside each: public, or refused as the neighbouring range.
        for outside in [
            "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2003::",
            "2001:1::",
        ] {
            assert_eq!(range(outside), None, "{outside}");
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
        assert_eq!(
            range("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("link-local")
        );
        assert_eq!(range("ff00::"), Some("multicast"));
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
        assert_eq!(max_age(&h, 3600, 86_400), 3600);
        assert_eq!(
            max_age(&h, 3600, 1),
            1,
            "cimd_max_cache_s bounds the default"
        );
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=5".parse().unwrap(),
        );
        assert_eq!(max_age(&h, 3600, 86_400), 60);
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "max-age=999999".parse().unwrap(),
        );
        assert_eq!(max_age(&h, 3600, 86_400), 86_400);
        assert_eq!(max_age(&h, 3600, 600), 600);
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
