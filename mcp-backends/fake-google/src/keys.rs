//! The RSA key that signs the fake's ID tokens (RS256), and its JWKS.
//! The built-in key is a test key committed to the repository: it protects nothing.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The built-in signing key (PKCS#8 PEM, 2048 bits). Not a secret.
pub const TEST_SIGNING_KEY_PEM: &str = include_str!("../keys/test-signing-key.pem");

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM document")]
    Pem,
    #[error("not an RSA PKCS#8 private key: {0}")]
    Rsa(String),
    #[error("signing failed")]
    Sign,
}

pub struct SigningKey {
    pair: RsaKeyPair,
    pub kid: String,
    rng: SystemRandom,
}

/// Decodes the first PEM block of `pem` into DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let mut inside = false;
    let mut b64 = String::new();
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
            continue;
        }
        if line.starts_with("-----END ") {
            break;
        }
        if inside {
            b64.push_str(line);
        }
    }
    if b64.is_empty() {
        return Err(KeyError::Pem);
    }
    STANDARD.decode(b64).map_err(|_| KeyError::Pem)
}

impl SigningKey {
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let der = pem_to_der(pem)?;
        let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| KeyError::Rsa(e.to_string()))?;
        let kid = {
            let digest = Sha256::digest(pair.public_key().as_ref());
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(SigningKey {
            pair,
            kid,
            rng: SystemRandom::new(),
        })
    }

    /// Signs `claims` as a compact RS256 JWS with this key's `kid`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, KeyError> {
        let header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The public key as a JWK Set.
    pub fn jwks(&self) -> Value {
        let c: ring::rsa::PublicKeyComponents<Vec<u8>> = self.pair.public().into();
        let strip = |v: &[u8]| -> Vec<u8> {
            let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
            v[start..].to_vec()
        };
        let (n, e) = (strip(&c.n), strip(&c.e));
        json!({"keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(n),
            "e": URL_SAFE_NO_PAD.encode(e),
        }]})
    }
}

/// Decodes the claims of a compact JWS without checking its signature (the fake
/// accepts any well-formed assertion). Returns (header, claims).
pub fn decode_unverified(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || s.is_empty() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    if !header.is_object() || !claims.is_object() {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()?;
    Some((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_verifiable_token() {
        let key = SigningKey::from_pem(TEST_SIGNING_KEY_PEM).unwrap();
        let jwt = key.sign_jwt(&json!({"sub": "1"})).unwrap();
        let (header, claims) = decode_unverified(&jwt).unwrap();
        assert_eq!(header["kid"], key.kid.as_str());
        assert_eq!(claims["sub"], "1");
        // Verify with the public key from the JWKS.
        let jwks = key.jwks();
        let n = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["n"].as_str().unwrap())
            .unwrap();
        let e = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["e"].as_str().unwrap())
            .unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &sig,
            )
            .unwrap();
    }

    #[test]
    fn rejects_malformed_jwts() {
        assert!(decode_unverified("a.b").is_none());
        assert!(decode_unverified("a.b.c.d").is_none());
        assert!(decode_unverified("!!.!!.!!").is_none());
    }
}
