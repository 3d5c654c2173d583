//! ES256 signing keys and the JWKS.
//!
//! The key comes from `[tokens] signing_key` (PEM, usually `${env:…}` or `${file:…}`),
//! or is generated on first start and kept in Postgres, so a restart loses nothing.
//! Changing the configured key, or `--rotate-key` for a generated one, retires the
//! old key; it stays in the JWKS until the tokens it signed have expired.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The key that signs new tokens.
pub struct Signer {
    pub kid: String,
    key: EncodingKey,
}

impl Signer {
    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// Current signer plus the published key set, refreshed from Postgres.
pub struct KeyRing {
    store: Store,
    configured_pem: Option<String>,
    grace_s: f64,
    current: RwLock<Arc<Signer>>,
    jwks: RwLock<Value>,
}

fn secret_from_pem(pem: &str) -> Result<p256::SecretKey, KeyError> {
    p256::SecretKey::from_pkcs8_pem(pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
        .map_err(|_| {
            KeyError::Invalid("expected a P-256 private key in PKCS#8 (or SEC1) PEM".into())
        })
}

/// The public JWK of `secret` and its RFC 7638 thumbprint (the `kid`).
pub fn public_jwk(secret: &p256::SecretKey) -> Result<(String, Value), KeyError> {
    let point = secret.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(KeyError::Invalid("public key is the identity".into()));
    };
    let x = URL_SAFE_NO_PAD.encode(x);
    let y = URL_SAFE_NO_PAD.encode(y);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"});
    Ok((kid, jwk))
}

/// A new P-256 key: (kid, PKCS#8 PEM, public JWK).
pub fn generate() -> Result<(String, String, Value), String> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?
        .to_string();
    let (kid, jwk) = public_jwk(&secret).map_err(|e| e.to_string())?;
    Ok((kid, pem, jwk))
}

fn signer_from_pem(kid: &str, pem: &str) -> Result<Signer, KeyError> {
    let secret = secret_from_pem(pem)?;
    let pkcs8 = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
    let key =
        EncodingKey::from_ec_pem(pkcs8.as_bytes()).map_err(|e| KeyError::Invalid(e.to_string()))?;
    Ok(Signer {
        kid: kid.to_string(),
        key,
    })
}

impl KeyRing {
    /// Loads (or creates) the current key. `grace_s`: how long a retired key stays
    /// published (the access-token lifetime plus a margin).
    pub async fn load(
        store: Store,
        configured_pem: Option<String>,
        grace_s: f64,
    ) -> Result<KeyRing, KeyError> {
        let signer = Self::current_signer(&store, configured_pem.as_deref()).await?;
        let ring = KeyRing {
            store,
            configured_pem,
            grace_s,
            current: RwLock::new(Arc::new(signer)),
            jwks: RwLock::new(json!({"keys": []})),
        };
        ring.refresh().await?;
        Ok(ring)
    }

    async fn current_signer(store: &Store, configured: Option<&str>) -> Result<Signer, KeyError> {
        match configured {
            Some(pem) => {
                let secret = secret_from_pem(pem)?;
                let (kid, jwk) = public_jwk(&secret)?;
                store.adopt_configured_key(&kid, &jwk).await?;
                signer_from_pem(&kid, pem)
            }
            None => {
                let rec = store.current_generated_key(false, generate).await?;
                let pem = rec
                    .private_pem
                    .ok_or_else(|| KeyError::Invalid("stored key has no private part".into()))?;
                signer_from_pem(&rec.kid, &pem)
            }
        }
    }

    /// Re-reads the published keys and, for generated keys, the current one (picks up
    /// a rotation made by another process).
    pub async fn refresh(&self) -> Result<(), KeyError> {
        if self.configured_pem.is_none() {
            let rec = self.store.current_generated_key(false, generate).await?;
            let changed = self
                .current
                .read()
                .map(|c| c.kid != rec.kid)
                .unwrap_or(true);
            if changed {
                if let Some(pem) = rec.private_pem {
                    let signer = signer_from_pem(&rec.kid, &pem)?;
                    if let Ok(mut c) = self.current.write() {
                        tracing::info!(kid = %signer.kid, "signing key changed");
                        *c = Arc::new(signer);
                    }
                }
            }
        }
        let keys = self.store.published_keys(self.grace_s).await?;
        let set: Vec<Value> = keys.into_iter().map(|k| k.public_jwk).collect();
        if let Ok(mut j) = self.jwks.write() {
            *j = json!({ "keys": set });
        }
        Ok(())
    }

    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.current.read().ok().map(|c| c.clone())
    }

    pub fn jwks(&self) -> Value {
        self.jwks
            .read()
            .map(|j| j.clone())
            .unwrap_or_else(|_| json!({"keys": []}))
    }

    /// Generates a new key and retires the current one (generated keys only).
    pub async fn rotate(store: &Store) -> Result<String, KeyError> {
        let rec = store.current_generated_key(true, generate).await?;
        Ok(rec.kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_verifiable_tokens() {
        let (kid, pem, jwk) = generate().unwrap();
        let signer = signer_from_pem(&kid, &pem).unwrap();
        let token = signer
            .sign(&json!({"sub": "u", "exp": 4_000_000_000u64}))
            .unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.claims["sub"], "u");
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let (kid, pem, _) = generate().unwrap();
        let secret = secret_from_pem(&pem).unwrap();
        assert_eq!(public_jwk(&secret).unwrap().0, kid);
        assert_eq!(kid.len(), 43);
    }

    #[test]
    fn garbage_pem_is_refused() {
        assert!(
            secret_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }
}
