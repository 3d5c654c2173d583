//! Downstream sessions as sealed tokens.
//!
//! The `Mcp-Session-Id` the gateway hands out is an authenticated, encrypted token
//! (XChaCha20-Poly1305) that carries everything needed to serve the session: the user,
//! the negotiated revision, the client's capabilities and the upstream session of every
//! backend. Any gateway replica holding the same key can serve any request, there is no
//! session store, and a token altered by one bit, or sealed under another key, is
//! rejected.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::wire::{caps, UpstreamSession};

const PREFIX: &str = "g1.";
const AAD: &[u8] = b"mcp-gateway session v1";
const AAD_PASSTHROUGH: &[u8] = b"mcp-gateway pass-through session v1";
/// A held call's `requestState` ([`super::bridge`]): its own prefix, so that a backend's
/// opaque state (even another gateway's session-like token) is never taken for one.
pub const HELD_PREFIX: &str = "gh1.";
const AAD_HELD: &[u8] = b"mcp-gateway held call v1";

/// What a session id carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionClaims {
    /// Random id, for logs and for ending the session.
    pub sid: String,
    /// The user the session belongs to.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Negotiated downstream revision.
    pub v: String,
    /// The client's `capabilities` from `initialize`.
    #[serde(default)]
    pub caps: Value,
    /// The client's `clientInfo`.
    #[serde(default)]
    pub info: Value,
    /// Upstream sessions by backend name.
    #[serde(default)]
    pub up: BTreeMap<String, UpstreamSession>,
    /// The `_meta` stamped for a modern backend, written at the first call.
    #[serde(skip)]
    pub stamped: crate::upstream::modern::StampCache,
}

impl SessionClaims {
    pub fn new(sub: String, version: String, caps: Value, info: Value) -> SessionClaims {
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        SessionClaims {
            sid: raw.iter().map(|b| format!("{b:02x}")).collect(),
            sub,
            iat: now_secs(),
            v: version,
            caps,
            info,
            up: BTreeMap::new(),
            stamped: Default::default(),
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seals and opens session tokens under one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A fresh random key, for runs that configured none.
    pub fn random_key() -> [u8; 32] {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        k
    }

    pub fn seal(&self, claims: &SessionClaims) -> String {
        self.seal_bytes(AAD, &serde_json::to_vec(claims).unwrap_or_default())
    }

    /// Opens a token; `None` for anything not sealed by this key.
    pub fn open(&self, token: &str) -> Option<SessionClaims> {
        serde_json::from_slice(&self.open_bytes(AAD, token)?).ok()
    }

    /// Seals a pass-through route's session: the backend's own id, bound to the person
    /// and the backend (another AAD: a `/mcp` session id does not open as one, nor the
    /// other way round).
    pub fn seal_passthrough(&self, s: &PassthroughSession) -> String {
        self.seal_bytes(AAD_PASSTHROUGH, &serde_json::to_vec(s).unwrap_or_default())
    }

    pub fn open_passthrough(&self, token: &str) -> Option<PassthroughSession> {
        serde_json::from_slice(&self.open_bytes(AAD_PASSTHROUGH, token)?).ok()
    }

    /// Seals a held call's state ([`super::bridge`]).
    pub fn seal_held(&self, plain: &[u8]) -> String {
        let token = self.seal_bytes(AAD_HELD, plain);
        format!(
            "{HELD_PREFIX}{}",
            token.strip_prefix(PREFIX).unwrap_or(&token)
        )
    }

    /// Opens a held call's state; `None` for anything not sealed by this key as one.
    pub fn open_held(&self, token: &str) -> Option<Vec<u8>> {
        let body = token.strip_prefix(HELD_PREFIX)?;
        self.open_bytes(AAD_HELD, &format!("{PREFIX}{body}"))
    }

    fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    fn open_bytes(&self, aad: &[u8], token: &str) -> Option<Vec<u8>> {
        let body = token.strip_prefix(PREFIX)?;
        if body.len() > 16 * 1024 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        if raw.len() < 24 + 16 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }
}

/// What a pass-through route's `Mcp-Session-Id` carries: the backend's session, and
/// whose it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PassthroughSession {
    /// The person (`sub`) it was opened for.
    pub sub: String,
    /// The backend's name.
    pub backend: String,
    /// The backend's own `Mcp-Session-Id`.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> SessionClaims {
        let mut c = SessionClaims::new(
            "alice".into(),
            "2025-11-25".into(),
            json!({"sampling": {}}),
            json!({"name": "t"}),
        );
        c.up.insert(
            "a".into(),
            UpstreamSession {
                id: Some("abc".into()),
                version: "2025-06-18".into(),
                caps: caps::Caps::TOOLS,
            },
        );
        c
    }

    #[test]
    fn seal_open_round_trip_and_visible_ascii() {
        let s = Sealer::new(&[7; 32]);
        let c = claims();
        let t = s.seal(&c);
        assert!(t.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(s.open(&t), Some(c));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_rejected() {
        let s = Sealer::new(&[7; 32]);
        let t = s.seal(&claims());
        let mut bytes = t.into_bytes();
        let i = bytes.len() - 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(&String::from_utf8(bytes).unwrap()), None);
        let other = Sealer::new(&[8; 32]);
        assert_eq!(other.open(&s.seal(&claims())), None);
        assert_eq!(s.open("nonsense"), None);
        assert_eq!(s.open("g1."), None);
    }

    #[test]
    fn capability_bits_round_trip() {
        let c = json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}, "logging": {}});
        let bits = caps::from_json(&c);
        let back = caps::to_json(bits);
        assert_eq!(back["tools"]["listChanged"], json!(true));
        assert_eq!(back["resources"]["subscribe"], json!(true));
        assert!(back.get("prompts").is_none());
        assert!(back.get("logging").is_some());
    }
}

#[cfg(test)]
mod proptests;
